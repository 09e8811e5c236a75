/*
 * qrmi_resource_describe(): a resource's description, read from the daemon's
 * metadata and the device's target (parsed with jansson).
 */
#include <string.h>

#include <jansson.h>

#include "qrmi_internal.h"

struct QrmiQuantumResourceInfo {
  char *display_name;
  bool has_qubits;
  uint32_t qubits;
};

/* The qubit count a target states: an IBM-form configuration's n_qubits (or a
 * top-level num_qubits), or a Pulser device's max_atom_num (its "specs" an
 * object or, as Pasqal Cloud lists devices, JSON text); -1 when absent. */
static long long target_qubits(const char *text)
{
  json_t *root = json_loads(text, 0, NULL);
  if (root == NULL)
    return -1;
  json_t *device = json_is_array(root) ? json_array_get(root, 0) : root;
  json_t *specs = json_object_get(device, "specs");
  json_t *parsed = json_is_string(specs) ? json_loads(json_string_value(specs), 0, NULL) : NULL;
  json_t *candidates[] = {
      json_object_get(json_object_get(device, "configuration"), "n_qubits"),
      json_object_get(device, "num_qubits"),
      json_object_get(parsed != NULL ? parsed : specs, "max_atom_num"),
      json_object_get(device, "max_atom_num"),
  };
  long long qubits = -1;
  for (size_t i = 0; i < sizeof candidates / sizeof candidates[0] && qubits < 0; i++)
    if (json_is_integer(candidates[i]) && json_integer_value(candidates[i]) >= 0)
      qubits = json_integer_value(candidates[i]);
  json_decref(parsed);
  json_decref(root);
  return qubits;
}

QrmiReturnCode qrmi_resource_describe(QrmiQuantumResource *qrmi, QrmiQuantumResourceInfo **outp)
{
  if (qrmi == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_describe: a NULL argument");
  QrmiResourceMetadata *metadata = NULL;
  QrmiReturnCode code = qrmi_resource_metadata(qrmi, &metadata);
  if (code != QRMI_RETURN_CODE_SUCCESS)
    return code;
  char *name = qrmi_resource_metadata_value(metadata, "backend_name");
  qrmi_resource_metadata_free(metadata);
  char *target = NULL;
  if ((code = qrmi_resource_target(qrmi, &target)) != QRMI_RETURN_CODE_SUCCESS) {
    free(name);
    return code;
  }
  long long qubits = target_qubits(target);
  free(target);
  QrmiQuantumResourceInfo *info = calloc(1, sizeof *info);
  if (info == NULL || (name == NULL && (name = qrmi_strdup(qrmi->id)) == NULL)) {
    free(info);
    free(name);
    return qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
  }
  info->display_name = name;
  info->has_qubits = qubits >= 0 && qubits <= UINT32_MAX;
  info->qubits = info->has_qubits ? (uint32_t)qubits : 0;
  *outp = info;
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_quantum_resource_info_free(QrmiQuantumResourceInfo *ptr)
{
  if (ptr == NULL)
    return QRMI_RETURN_CODE_NULL_POINTER_ERROR;
  free(ptr->display_name);
  free(ptr);
  return QRMI_RETURN_CODE_SUCCESS;
}

char *qrmi_quantum_resource_info_backend_display_name(QrmiQuantumResourceInfo *info)
{
  return info != NULL ? qrmi_strdup(info->display_name) : NULL;
}

QrmiReturnCode qrmi_quantum_resource_info_num_qubits(QrmiQuantumResourceInfo *info, uint32_t *outp)
{
  if (info == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_quantum_resource_info_num_qubits: a NULL argument");
  if (!info->has_qubits)
    return qrmi_fail(QRMI_RETURN_CODE_UNSUPPORTED_FUNCTION_ERROR, "the resource's target states no qubit count");
  *outp = info->qubits;
  return QRMI_RETURN_CODE_SUCCESS;
}
