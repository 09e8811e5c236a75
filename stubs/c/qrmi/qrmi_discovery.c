/*
 * Finding resources: providers (the daemon's resources of one type, least
 * busy first) and the job's resources from the Slurm plugin's environment.
 */
#include <stdio.h>
#include <string.h>

#include "qrmi_internal.h"

struct QrmiResourceProvider {
  QrmiResourceType type;
  char *address;
  QrmiQuantumResource *daemon; /* a handle used for the listing calls */
};

/* A resource the provider may offer, with what orders it. */
typedef struct {
  const char *name;
  uint32_t queued;
  uint32_t free_slots;
} candidate;

QrmiResourceProvider *qrmi_provider_new(QrmiResourceType resource_type, const QrmiEnvironmentVariables *environments)
{
  if (environments == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_provider_new: environments is NULL");
    return NULL;
  }
  const char *type_name = qrmi_type_name(resource_type);
  if (type_name == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_UNSUPPORTED_RESOURCE_TYPE_ERROR, "qrmi_provider_new: unknown resource type %d",
              (int)resource_type);
    return NULL;
  }
  QrmiResourceProvider *provider = calloc(1, sizeof *provider);
  if (provider == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
    return NULL;
  }
  provider->type = resource_type;
  provider->address = qrmi_daemon_address(qrmi_env_lookup(environments, "QRMID_ADDRESS"));
  if (provider->address == NULL ||
      (provider->daemon = qrmi_handle_new(type_name, resource_type, provider->address)) == NULL) {
    qrmi_provider_free(provider);
    return NULL;
  }
  return provider;
}

QrmiReturnCode qrmi_provider_free(QrmiResourceProvider *ptr)
{
  if (ptr == NULL)
    return QRMI_RETURN_CODE_NULL_POINTER_ERROR;
  if (ptr->daemon != NULL)
    qrmi_resource_free(ptr->daemon);
  free(ptr->address);
  free(ptr);
  return QRMI_RETURN_CODE_SUCCESS;
}

/* Whether every key=value term of `filters` ('&'-separated) holds in the resource's metadata. */
static QrmiReturnCode matches_filters(QrmiQuantumResource *resource, const char *filters, bool *matches)
{
  *matches = true;
  if (filters == NULL || filters[0] == '\0')
    return QRMI_RETURN_CODE_SUCCESS;
  QrmiResourceMetadata *metadata = NULL;
  QrmiReturnCode code = qrmi_resource_metadata(resource, &metadata);
  if (code != QRMI_RETURN_CODE_SUCCESS)
    return code;
  char *terms = qrmi_strdup(filters);
  if (terms == NULL) {
    qrmi_resource_metadata_free(metadata);
    return QRMI_RETURN_CODE_ERROR;
  }
  char *save = NULL;
  for (char *term = strtok_r(terms, "&", &save); term != NULL && *matches; term = strtok_r(NULL, "&", &save)) {
    char *eq = strchr(term, '=');
    if (eq == NULL) {
      code = qrmi_fail(QRMI_RETURN_CODE_INVALID_INPUT_ERROR, "filter term \"%s\" is not key=value (terms are joined "
                       "by '&', e.g. \"num_qubits=2&simulator=true\")", term);
      break;
    }
    *eq = '\0';
    char *value = qrmi_resource_metadata_value(metadata, term);
    *matches = value != NULL && strcmp(value, eq + 1) == 0;
    free(value);
  }
  free(terms);
  qrmi_resource_metadata_free(metadata);
  return code;
}

static int by_least_busy(const void *a, const void *b)
{
  const candidate *x = a, *y = b;
  if (x->queued != y->queued)
    return x->queued < y->queued ? -1 : 1;
  if (x->free_slots != y->free_slots)
    return x->free_slots > y->free_slots ? -1 : 1;
  return strcmp(x->name, y->name);
}

QrmiReturnCode qrmi_provider_resources(QrmiResourceProvider *provider, const char *filters,
                                       QrmiQuantumResources *resources_out)
{
  if (provider == NULL || resources_out == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_provider_resources: a NULL argument");
  Qrmid__V1__ListResourcesRequest req = QRMID__V1__LIST_RESOURCES_REQUEST__INIT;
  Qrmid__V1__ListResourcesResponse *listing = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  if (qrmid_v1_quantum_resources_list_resources(provider->daemon->client, &req, &listing, QRMI_CALL_TIMEOUT_MS,
                                                &err) != GRPC_STATUS_OK) {
    QrmiReturnCode code = qrmi_fail_call(provider->daemon, "provider_resources", &err,
                                         QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR);
    qrmid_error_clear(&err);
    return code;
  }
  const char *type_name = qrmi_type_name(provider->type);
  candidate *found = calloc(listing->n_resources + 1, sizeof *found);
  QrmiQuantumResource **handles = calloc(listing->n_resources + 1, sizeof *handles);
  QrmiReturnCode code = found != NULL && handles != NULL ? QRMI_RETURN_CODE_SUCCESS
                                                         : qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
  size_t n = 0;
  for (size_t i = 0; code == QRMI_RETURN_CODE_SUCCESS && i < listing->n_resources; i++) {
    const Qrmid__V1__Resource *r = listing->resources[i];
    if (strcmp(r->type, type_name) == 0 && r->status == QRMID__V1__RESOURCE_STATUS__RESOURCE_STATUS_ONLINE)
      found[n++] = (candidate){r->name, r->queue_length, r->capacity != NULL ? r->capacity->slots_free : 0};
  }
  qsort(found, n, sizeof *found, by_least_busy);
  size_t kept = 0;
  for (size_t i = 0; code == QRMI_RETURN_CODE_SUCCESS && i < n; i++) {
    QrmiQuantumResource *handle = qrmi_handle_new(found[i].name, provider->type, provider->address);
    bool matches = false;
    if (handle == NULL)
      code = QRMI_RETURN_CODE_ERROR;
    else if ((code = matches_filters(handle, filters, &matches)) == QRMI_RETURN_CODE_SUCCESS && matches)
      handles[kept++] = handle;
    else
      qrmi_resource_free(handle);
  }
  free(found);
  qrmid__v1__list_resources_response__free_unpacked(listing, NULL);
  QrmiQuantumResources list = {handles, kept};
  if (code != QRMI_RETURN_CODE_SUCCESS) {
    if (handles != NULL)
      qrmi_provider_resources_free(&list);
    return code;
  }
  *resources_out = list;
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_provider_resources_free(QrmiQuantumResources *resources)
{
  if (resources == NULL)
    return QRMI_RETURN_CODE_NULL_POINTER_ERROR;
  for (size_t i = 0; resources->resources != NULL && i < resources->length; i++)
    if (resources->resources[i] != NULL)
      qrmi_resource_free(resources->resources[i]);
  free(resources->resources);
  resources->resources = NULL;
  resources->length = 0;
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_provider_least_busy(QrmiResourceProvider *provider, const char *filters,
                                        QrmiQuantumResource **resource_out)
{
  if (provider == NULL || resource_out == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_provider_least_busy: a NULL argument");
  QrmiQuantumResources list = {NULL, 0};
  QrmiReturnCode code = qrmi_provider_resources(provider, filters, &list);
  if (code != QRMI_RETURN_CODE_SUCCESS)
    return code;
  *resource_out = NULL;
  if (list.length > 0) {
    *resource_out = list.resources[0];
    list.resources[0] = NULL;
  }
  qrmi_provider_resources_free(&list);
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_provider_account_usage(QrmiResourceProvider *provider, char **usage_json_out)
{
  if (provider == NULL || usage_json_out == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_provider_account_usage: a NULL argument");
  *usage_json_out = NULL;
  return qrmi_fail(QRMI_RETURN_CODE_UNSUPPORTED_FUNCTION_ERROR,
                   "provider_account_usage: qrmid reports usage with `qrmid usage`, not through QRMI");
}

/* The value of `name`, else of `legacy`; NULL when neither is set. */
static const char *job_variable(const char *name, const char *legacy)
{
  const char *value = getenv(name);
  return value != NULL ? value : getenv(legacy);
}

/* Splits `text` on `delimiter` into a new array of new strings (an empty text
 * gives none); -1 with the last error set when memory runs out. */
static int split_list(const char *text, const char *delimiter, char ***out, size_t *count)
{
  *out = NULL;
  *count = 0;
  size_t capacity = 1;
  for (const char *p = text; (p = strstr(p, delimiter)) != NULL; p += strlen(delimiter))
    capacity++;
  char **items = calloc(capacity + 1, sizeof(char *));
  if (items == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
    return -1;
  }
  size_t n = 0;
  const char *start = text;
  while (text[0] != '\0') {
    const char *end = strstr(start, delimiter);
    size_t len = end != NULL ? (size_t)(end - start) : strlen(start);
    if ((items[n] = strndup(start, len)) == NULL) {
      qrmi_string_array_free(n, items);
      qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
      return -1;
    }
    n++;
    if (end == NULL)
      break;
    start = end + strlen(delimiter);
  }
  *out = items;
  *count = n;
  return 0;
}

QrmiReturnCode qrmi_service_resources(QrmiQuantumResources *resources_out)
{
  if (resources_out == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_service_resources: resources_out is NULL");
  const char *plugin_error = getenv("QRMI_PLUGIN_ERROR");
  if (plugin_error != NULL && plugin_error[0] != '\0')
    return qrmi_fail(QRMI_RETURN_CODE_ERROR, "the Slurm plugin failed: %s", plugin_error);
  const char *names_text = job_variable("QRMI_JOB_QPU_RESOURCES", "SLURM_JOB_QPU_RESOURCES");
  const char *types_text = job_variable("QRMI_JOB_QPU_TYPES", "SLURM_JOB_QPU_TYPES");
  if (names_text == NULL || types_text == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_ENV_VAR_NOT_SET_ERROR,
                     "The environment variable `%s` is not set and as such configuration could not be loaded.",
                     names_text == NULL ? "QRMI_JOB_QPU_RESOURCES" : "QRMI_JOB_QPU_TYPES");
  const char *delimiter = getenv("QRMI_LIST_DELIMITER");
  if (delimiter == NULL || delimiter[0] == '\0')
    delimiter = ",";
  char **names = NULL, **types = NULL;
  size_t n_names = 0, n_types = 0;
  if (split_list(names_text, delimiter, &names, &n_names) != 0)
    return QRMI_RETURN_CODE_ERROR;
  if (split_list(types_text, delimiter, &types, &n_types) != 0) {
    qrmi_string_array_free(n_names, names);
    return QRMI_RETURN_CODE_ERROR;
  }
  QrmiReturnCode code = QRMI_RETURN_CODE_SUCCESS;
  QrmiQuantumResources list = {calloc(n_names + 1, sizeof(QrmiQuantumResource *)), 0};
  if (n_names != n_types)
    code = qrmi_fail(QRMI_RETURN_CODE_INVALID_CONFIG_ERROR,
                     "Inconsistent specifications of QPU resources and types: %zu names (%s) but %zu types (%s)",
                     n_names, names_text, n_types, types_text);
  else if (list.resources == NULL)
    code = qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
  else if (n_names == 0)
    qrmi_log(QRMI_LOG_WARN, "No QPU resources or types specified.");
  for (size_t i = 0; code == QRMI_RETURN_CODE_SUCCESS && i < n_names; i++) {
    QrmiResourceType type;
    if (qrmi_type_from_name(types[i], &type) != 0) {
      qrmi_log(QRMI_LOG_WARN, "skipping resource %s: type \"%s\" has no QRMI resource type", names[i], types[i]);
      continue;
    }
    QrmiQuantumResource *handle = qrmi_handle_new(names[i], type, NULL);
    bool accessible = false;
    if (handle == NULL) {
      code = QRMI_RETURN_CODE_ERROR;
    } else if (qrmi_resource_is_accessible(handle, &accessible) == QRMI_RETURN_CODE_SUCCESS && accessible) {
      list.resources[list.length++] = handle;
    } else {
      char *why = qrmi_get_last_error();
      qrmi_log(QRMI_LOG_WARN, "skipping resource %s: not accessible%s%s", names[i], why != NULL ? ": " : "",
               why != NULL ? why : "");
      free(why);
      qrmi_resource_free(handle);
    }
  }
  qrmi_string_array_free(n_names, names);
  qrmi_string_array_free(n_types, types);
  if (code != QRMI_RETURN_CODE_SUCCESS) {
    qrmi_provider_resources_free(&list);
    return code;
  }
  *resources_out = list;
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_service_resources_free(QrmiQuantumResources *resources)
{
  return qrmi_provider_resources_free(resources);
}
