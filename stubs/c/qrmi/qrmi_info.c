/*
 * What a resource handle reports about the resource: accessibility, status
 * and capacity, target and metadata.
 */
#include <stdio.h>
#include <string.h>

#include "qrmi_internal.h"

struct QrmiResourceStatus {
  QrmiResourceStatusCode code;
  char *reason; /* NULL when the daemon gave none */
  bool busy;
  uint64_t pending;
  bool has_capacity;
  QrmiResourceCapacity capacity;
};

struct QrmiResourceMetadata {
  size_t length;
  char **keys;
  char **values;
};

QrmiReturnCode qrmi_get_resource(QrmiQuantumResource *qrmi, const char *what, Qrmid__V1__Resource **out)
{
  Qrmid__V1__GetResourceRequest req = QRMID__V1__GET_RESOURCE_REQUEST__INIT;
  req.name = qrmi->id;
  qrmid_error err = QRMID_ERROR_INIT;
  if (qrmid_v1_quantum_resources_get_resource(qrmi->client, &req, out, QRMI_CALL_TIMEOUT_MS, &err) ==
      GRPC_STATUS_OK)
    return QRMI_RETURN_CODE_SUCCESS;
  char call[512];
  snprintf(call, sizeof call, "%s(%s)", what, qrmi->id);
  QrmiReturnCode code = qrmi_fail_call(qrmi, call, &err, QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR);
  qrmid_error_clear(&err);
  return code;
}

QrmiReturnCode qrmi_resource_is_accessible(QrmiQuantumResource *qrmi, bool *outp)
{
  if (qrmi == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_is_accessible: a NULL argument");
  Qrmid__V1__GetResourceRequest req = QRMID__V1__GET_RESOURCE_REQUEST__INIT;
  req.name = qrmi->id;
  Qrmid__V1__Resource *resource = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  grpc_status_code status =
      qrmid_v1_quantum_resources_get_resource(qrmi->client, &req, &resource, QRMI_CALL_TIMEOUT_MS, &err);
  if (status != GRPC_STATUS_OK) {
    /* A resource the daemon does not have is simply not accessible. */
    char what[512];
    snprintf(what, sizeof what, "is_accessible(%s)", qrmi->id);
    QrmiReturnCode code = status == GRPC_STATUS_NOT_FOUND
                              ? QRMI_RETURN_CODE_SUCCESS
                              : qrmi_fail_call(qrmi, what, &err, QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR);
    qrmid_error_clear(&err);
    *outp = false;
    return code;
  }
  *outp = resource->status == QRMID__V1__RESOURCE_STATUS__RESOURCE_STATUS_ONLINE;
  qrmid__v1__resource__free_unpacked(resource, NULL);
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_status(QrmiQuantumResource *qrmi, QrmiResourceStatus **outp)
{
  if (qrmi == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_status: a NULL argument");
  Qrmid__V1__Resource *resource = NULL;
  QrmiReturnCode code = qrmi_get_resource(qrmi, "status", &resource);
  if (code != QRMI_RETURN_CODE_SUCCESS)
    return code;
  QrmiResourceStatus *status = calloc(1, sizeof *status);
  if (status == NULL || (resource->status_reason[0] != '\0' &&
                         (status->reason = qrmi_strdup(resource->status_reason)) == NULL)) {
    free(status);
    qrmid__v1__resource__free_unpacked(resource, NULL);
    return qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
  }
  switch (resource->status) {
  case QRMID__V1__RESOURCE_STATUS__RESOURCE_STATUS_ONLINE:
    status->code = QRMI_RESOURCE_STATUS_CODE_ONLINE;
    break;
  case QRMID__V1__RESOURCE_STATUS__RESOURCE_STATUS_PAUSED:
    status->code = QRMI_RESOURCE_STATUS_CODE_PAUSED;
    break;
  default: /* offline, draining for shutdown, not checked yet */
    status->code = QRMI_RESOURCE_STATUS_CODE_OFFLINE;
  }
  status->pending = resource->queue_length;
  status->has_capacity = resource->capacity != NULL;
  if (resource->capacity != NULL) {
    status->capacity.available_slots = resource->capacity->slots_free;
    status->capacity.max_slots = resource->capacity->slots_total;
  }
  status->busy = resource->queue_length > 0 || (resource->capacity != NULL && resource->capacity->slots_free == 0);
  qrmid__v1__resource__free_unpacked(resource, NULL);
  *outp = status;
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_status_free(QrmiResourceStatus *ptr)
{
  if (ptr == NULL)
    return QRMI_RETURN_CODE_NULL_POINTER_ERROR;
  free(ptr->reason);
  free(ptr);
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_status_code(QrmiResourceStatus *status, QrmiResourceStatusCode *outp)
{
  if (status == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_status_code: a NULL argument");
  *outp = status->code;
  return QRMI_RETURN_CODE_SUCCESS;
}

const char *qrmi_resource_status_code_to_string(QrmiResourceStatusCode code)
{
  switch (code) {
  case QRMI_RESOURCE_STATUS_CODE_ONLINE:
    return "online";
  case QRMI_RESOURCE_STATUS_CODE_OFFLINE:
    return "offline";
  case QRMI_RESOURCE_STATUS_CODE_PAUSED:
    return "paused";
  case QRMI_RESOURCE_STATUS_CODE_BUSY:
    return "busy";
  }
  return "unknown";
}

QrmiReturnCode qrmi_resource_status_is_accessible(QrmiResourceStatus *status, bool *outp)
{
  if (status == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_status_is_accessible: a NULL argument");
  *outp = status->code == QRMI_RESOURCE_STATUS_CODE_ONLINE || status->code == QRMI_RESOURCE_STATUS_CODE_BUSY;
  return QRMI_RETURN_CODE_SUCCESS;
}

char *qrmi_resource_status_reason(QrmiResourceStatus *status)
{
  if (status == NULL || status->reason == NULL)
    return NULL;
  return qrmi_strdup(status->reason);
}

QrmiReturnCode qrmi_resource_status_healthy(QrmiResourceStatus *status, bool *outp)
{
  if (status == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_status_healthy: a NULL argument");
  return qrmi_fail(QRMI_RETURN_CODE_UNSUPPORTED_FUNCTION_ERROR,
                   "qrmid does not report health information: use the status code and reason");
}

QrmiReturnCode qrmi_resource_status_busy(QrmiResourceStatus *status, bool *outp)
{
  if (status == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_status_busy: a NULL argument");
  *outp = status->busy;
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_status_pending_job_count(QrmiResourceStatus *status, uint64_t *outp)
{
  if (status == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_status_pending_job_count: a NULL argument");
  *outp = status->pending;
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_status_capacity(QrmiResourceStatus *status, QrmiResourceCapacity **outp)
{
  if (status == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_status_capacity: a NULL argument");
  if (!status->has_capacity)
    return qrmi_fail(QRMI_RETURN_CODE_UNSUPPORTED_FUNCTION_ERROR, "the daemon reported no capacity for the resource");
  QrmiResourceCapacity *capacity = malloc(sizeof *capacity);
  if (capacity == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
  *capacity = status->capacity;
  *outp = capacity;
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_capacity_free(QrmiResourceCapacity *ptr)
{
  if (ptr == NULL)
    return QRMI_RETURN_CODE_NULL_POINTER_ERROR;
  free(ptr);
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_target(QrmiQuantumResource *qrmi, char **outp)
{
  if (qrmi == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_target: a NULL argument");
  Qrmid__V1__GetTargetRequest req = QRMID__V1__GET_TARGET_REQUEST__INIT;
  req.resource = qrmi->id;
  Qrmid__V1__Target *target = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  if (qrmid_v1_quantum_resources_get_target(qrmi->client, &req, &target, QRMI_CALL_TIMEOUT_MS, &err) !=
      GRPC_STATUS_OK) {
    char what[512];
    snprintf(what, sizeof what, "target(%s)", qrmi->id);
    QrmiReturnCode code = qrmi_fail_call(qrmi, what, &err, QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR);
    qrmid_error_clear(&err);
    return code;
  }
  *outp = qrmi_strdup(target->value);
  qrmid__v1__target__free_unpacked(target, NULL);
  return *outp != NULL ? QRMI_RETURN_CODE_SUCCESS : QRMI_RETURN_CODE_ERROR;
}

QrmiReturnCode qrmi_resource_metadata(QrmiQuantumResource *qrmi, QrmiResourceMetadata **outp)
{
  if (qrmi == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_metadata: a NULL argument");
  Qrmid__V1__GetMetadataRequest req = QRMID__V1__GET_METADATA_REQUEST__INIT;
  req.resource = qrmi->id;
  Qrmid__V1__Metadata *reply = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  if (qrmid_v1_quantum_resources_get_metadata(qrmi->client, &req, &reply, QRMI_CALL_TIMEOUT_MS, &err) !=
      GRPC_STATUS_OK) {
    char what[512];
    snprintf(what, sizeof what, "metadata(%s)", qrmi->id);
    QrmiReturnCode code = qrmi_fail_call(qrmi, what, &err, QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR);
    qrmid_error_clear(&err);
    return code;
  }
  QrmiResourceMetadata *metadata = calloc(1, sizeof *metadata);
  size_t n = reply->n_values;
  if (metadata != NULL) {
    metadata->keys = calloc(n + 1, sizeof(char *));
    metadata->values = calloc(n + 1, sizeof(char *));
  }
  int ok = metadata != NULL && metadata->keys != NULL && metadata->values != NULL;
  for (size_t i = 0; ok && i < n; i++) {
    metadata->length = i + 1;
    metadata->keys[i] = strdup(reply->values[i]->key);
    metadata->values[i] = strdup(reply->values[i]->value);
    ok = metadata->keys[i] != NULL && metadata->values[i] != NULL;
  }
  qrmid__v1__metadata__free_unpacked(reply, NULL);
  if (!ok) {
    if (metadata != NULL)
      qrmi_resource_metadata_free(metadata);
    return qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
  }
  *outp = metadata;
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_metadata_free(QrmiResourceMetadata *ptr)
{
  if (ptr == NULL)
    return QRMI_RETURN_CODE_NULL_POINTER_ERROR;
  for (size_t i = 0; i < ptr->length; i++) {
    free(ptr->keys[i]);
    free(ptr->values[i]);
  }
  free(ptr->keys);
  free(ptr->values);
  free(ptr);
  return QRMI_RETURN_CODE_SUCCESS;
}

char *qrmi_resource_metadata_value(QrmiResourceMetadata *metadata, const char *key)
{
  if (metadata == NULL || key == NULL)
    return NULL;
  for (size_t i = 0; i < metadata->length; i++)
    if (strcmp(metadata->keys[i], key) == 0)
      return qrmi_strdup(metadata->values[i]);
  return NULL;
}

QrmiReturnCode qrmi_resource_metadata_keys(QrmiResourceMetadata *metadata, size_t *num_keys, char ***key_names)
{
  if (metadata == NULL || num_keys == NULL || key_names == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_metadata_keys: a NULL argument");
  char **keys = calloc(metadata->length + 1, sizeof(char *));
  if (keys == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
  for (size_t i = 0; i < metadata->length; i++)
    if ((keys[i] = qrmi_strdup(metadata->keys[i])) == NULL) {
      qrmi_string_array_free(i, keys);
      return QRMI_RETURN_CODE_ERROR;
    }
  *num_keys = metadata->length;
  *key_names = keys;
  return QRMI_RETURN_CODE_SUCCESS;
}
