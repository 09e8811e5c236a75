/*
 * qrmi_config.json: loading it (with jansson), its resource definitions, and
 * the resource type names.
 */
#include <string.h>

#include <jansson.h>

#include "qrmi_internal.h"

struct QrmiConfig {
  size_t length;
  QrmiResourceDef *defs; /* in file order; a later duplicate name replaces an earlier one */
};

static const struct {
  QrmiResourceType type;
  const char *name;
} TYPE_NAMES[] = {
    {QRMI_RESOURCE_TYPE_IBM_QUANTUM_SYSTEM, "ibm-quantum-system"},
    {QRMI_RESOURCE_TYPE_QISKIT_RUNTIME_SERVICE, "qiskit-runtime-service"},
    {QRMI_RESOURCE_TYPE_IBM_QUANTUM_COMPUTE_SERVICE, "ibm-quantum-compute-service"},
    {QRMI_RESOURCE_TYPE_PASQAL_CLOUD, "pasqal-cloud"},
    {QRMI_RESOURCE_TYPE_PASQAL_LOCAL, "pasqal-local"},
    {QRMI_RESOURCE_TYPE_ALICE_BOB_FELIS, "alice-bob-felis"},
    {QRMI_RESOURCE_TYPE_IQM_SERVER, "iqm-server"},
    {QRMI_RESOURCE_TYPE_OQTOPUS, "oqtopus"},
    {QRMI_RESOURCE_TYPE_LOCAL_QISKIT, "local-qiskit"},
    {QRMI_RESOURCE_TYPE_LOCAL_PULSER, "local-pulser"},
};

#define N_TYPES (sizeof TYPE_NAMES / sizeof TYPE_NAMES[0])

const char *qrmi_type_name(QrmiResourceType type)
{
  for (size_t i = 0; i < N_TYPES; i++)
    if (TYPE_NAMES[i].type == type)
      return TYPE_NAMES[i].name;
  return NULL;
}

int qrmi_type_from_name(const char *name, QrmiResourceType *type)
{
  for (size_t i = 0; i < N_TYPES; i++)
    if (strcmp(TYPE_NAMES[i].name, name) == 0) {
      *type = TYPE_NAMES[i].type;
      return 0;
    }
  return -1;
}

const char *qrmi_config_resource_type_to_str(QrmiResourceType type)
{
  return qrmi_type_name(type);
}

/* Frees what a definition holds (not the struct itself). */
static void def_clear(QrmiResourceDef *def)
{
  free(def->name);
  for (size_t i = 0; i < def->environments.length; i++) {
    free(def->environments.variables[i].key);
    free(def->environments.variables[i].value);
  }
  free(def->environments.variables);
  memset(def, 0, sizeof *def);
}

/* A deep copy of `src` into `dst`; -1 (last error set) when memory runs out. */
static int def_copy(QrmiResourceDef *dst, const QrmiResourceDef *src)
{
  memset(dst, 0, sizeof *dst);
  dst->type = src->type;
  dst->is_dynamic = src->is_dynamic;
  dst->name = qrmi_strdup(src->name);
  if (dst->name == NULL)
    return -1;
  size_t n = src->environments.length;
  if (n > 0) {
    dst->environments.variables = calloc(n, sizeof(QrmiKeyValue));
    if (dst->environments.variables == NULL) {
      qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
      return -1;
    }
  }
  for (size_t i = 0; i < n; i++) {
    dst->environments.length = i + 1;
    dst->environments.variables[i].key = qrmi_strdup(src->environments.variables[i].key);
    dst->environments.variables[i].value = qrmi_strdup(src->environments.variables[i].value);
    if (dst->environments.variables[i].key == NULL || dst->environments.variables[i].value == NULL)
      return -1;
  }
  return 0;
}

/* Fills `def` from the JSON object of resource number `index`; -1 with the last error set. */
static int def_parse(QrmiResourceDef *def, json_t *item, size_t index, const char *filename)
{
  memset(def, 0, sizeof *def);
  json_t *name = json_object_get(item, "name");
  json_t *type = json_object_get(item, "type");
  json_t *dynamic = json_object_get(item, "is_dynamic");
  json_t *environment = json_object_get(item, "environment");
  if (!json_is_object(item) || !json_is_string(name) || !json_is_string(type)) {
    qrmi_fail(QRMI_RETURN_CODE_INVALID_CONFIG_ERROR,
              "%s: resources[%zu] needs a string \"name\" and a string \"type\"", filename, index);
    return -1;
  }
  if (qrmi_type_from_name(json_string_value(type), &def->type) != 0) {
    qrmi_fail(QRMI_RETURN_CODE_INVALID_CONFIG_ERROR,
              "%s: resources[%zu] (%s) has the unknown type \"%s\"; known types: ibm-quantum-system, "
              "qiskit-runtime-service, ibm-quantum-compute-service, pasqal-cloud, pasqal-local, alice-bob-felis, "
              "iqm-server, oqtopus, local-qiskit, local-pulser",
              filename, index, json_string_value(name), json_string_value(type));
    return -1;
  }
  if (dynamic != NULL && !json_is_boolean(dynamic)) {
    qrmi_fail(QRMI_RETURN_CODE_INVALID_CONFIG_ERROR, "%s: resources[%zu] (%s): \"is_dynamic\" must be true or false",
              filename, index, json_string_value(name));
    return -1;
  }
  if (environment != NULL && !json_is_object(environment)) {
    qrmi_fail(QRMI_RETURN_CODE_INVALID_CONFIG_ERROR,
              "%s: resources[%zu] (%s): \"environment\" must be an object of strings", filename, index,
              json_string_value(name));
    return -1;
  }
  def->is_dynamic = dynamic != NULL && json_is_true(dynamic);
  def->name = qrmi_strdup(json_string_value(name));
  if (def->name == NULL)
    return -1;
  size_t n = environment != NULL ? json_object_size(environment) : 0;
  if (n > 0 && (def->environments.variables = calloc(n, sizeof(QrmiKeyValue))) == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
    return -1;
  }
  const char *key;
  json_t *value;
  json_object_foreach(environment, key, value) {
    if (!json_is_string(value)) {
      qrmi_fail(QRMI_RETURN_CODE_INVALID_CONFIG_ERROR, "%s: resources[%zu] (%s): environment \"%s\" is not a string",
                filename, index, def->name, key);
      return -1;
    }
    QrmiKeyValue *kv = &def->environments.variables[def->environments.length++];
    kv->key = qrmi_strdup(key);
    kv->value = qrmi_strdup(json_string_value(value));
    if (kv->key == NULL || kv->value == NULL)
      return -1;
  }
  return 0;
}

/* The definition named `name`, or NULL. */
static QrmiResourceDef *config_find(QrmiConfig *config, const char *name)
{
  for (size_t i = 0; i < config->length; i++)
    if (strcmp(config->defs[i].name, name) == 0)
      return &config->defs[i];
  return NULL;
}

QrmiConfig *qrmi_config_load(const char *filename)
{
  if (filename == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_config_load: filename is NULL");
    return NULL;
  }
  json_error_t error;
  json_t *root = json_load_file(filename, JSON_REJECT_DUPLICATES, &error);
  if (root == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_PARSE_ERROR, "cannot load %s: line %d, column %d: %s", filename, error.line,
              error.column, error.text);
    return NULL;
  }
  json_t *resources = json_object_get(root, "resources");
  QrmiConfig *config = calloc(1, sizeof *config);
  if (config == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
    json_decref(root);
    return NULL;
  }
  if (!json_is_array(resources)) {
    qrmi_fail(QRMI_RETURN_CODE_INVALID_CONFIG_ERROR, "%s: needs a \"resources\" array", filename);
    goto fail;
  }
  size_t n = json_array_size(resources);
  if (n > 0 && (config->defs = calloc(n, sizeof(QrmiResourceDef))) == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
    goto fail;
  }
  for (size_t i = 0; i < n; i++) {
    QrmiResourceDef def;
    if (def_parse(&def, json_array_get(resources, i), i, filename) != 0) {
      def_clear(&def);
      goto fail;
    }
    QrmiResourceDef *existing = config_find(config, def.name);
    if (existing != NULL) {
      def_clear(existing);
      *existing = def;
    } else {
      config->defs[config->length++] = def;
    }
  }
  json_decref(root);
  return config;
fail:
  json_decref(root);
  qrmi_config_free(config);
  return NULL;
}

QrmiReturnCode qrmi_config_free(QrmiConfig *ptr)
{
  if (ptr == NULL)
    return QRMI_RETURN_CODE_NULL_POINTER_ERROR;
  for (size_t i = 0; i < ptr->length; i++)
    def_clear(&ptr->defs[i]);
  free(ptr->defs);
  free(ptr);
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiResourceDef *qrmi_config_resource_def_get(QrmiConfig *config, const char *resource_id)
{
  if (config == NULL || resource_id == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_config_resource_def_get: config or resource_id is NULL");
    return NULL;
  }
  const QrmiResourceDef *found = config_find(config, resource_id);
  if (found == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR, "the configuration has no resource named %s", resource_id);
    return NULL;
  }
  QrmiResourceDef *copy = malloc(sizeof *copy);
  if (copy == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
    return NULL;
  }
  if (def_copy(copy, found) != 0) {
    qrmi_config_resource_def_free(copy);
    return NULL;
  }
  return copy;
}

QrmiReturnCode qrmi_config_resource_def_free(QrmiResourceDef *ptr)
{
  if (ptr == NULL)
    return QRMI_RETURN_CODE_NULL_POINTER_ERROR;
  def_clear(ptr);
  free(ptr);
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_config_resource_names_get(QrmiConfig *config, size_t *num_names, char ***names)
{
  if (config == NULL || num_names == NULL || names == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_config_resource_names_get: a NULL argument");
  char **list = calloc(config->length + 1, sizeof(char *));
  if (list == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
  for (size_t i = 0; i < config->length; i++)
    if ((list[i] = qrmi_strdup(config->defs[i].name)) == NULL) {
      qrmi_string_array_free(i, list);
      return QRMI_RETURN_CODE_ERROR;
    }
  *num_names = config->length;
  *names = list;
  return QRMI_RETURN_CODE_SUCCESS;
}
