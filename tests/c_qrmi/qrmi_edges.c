/*
 * The rest of QRMI's C API through libqrmid-qrmi, and its failures: NULL
 * arguments, unknown resources and tasks, refused and unsupported payloads,
 * a result asked for too early, a stopped task, an unreachable daemon,
 * qrmi_config.json errors, providers and their filters, the job's resources
 * from the Slurm plugin's variables, the log callback and the last error.
 *
 *   qrmi_edges SCRATCH_DIR SLOW_SAMPLER_INPUT_FILE
 *
 * The daemon ($QRMID_ADDRESS) serves local-qiskit and local-pulser. Prints
 * "ok NAME" or "FAIL NAME: ..." per check; exits 1 if any check failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qrmi.h"

static int failures;

/* Passes when `cond`; otherwise prints the last error too. */
static void check(int cond, const char *name)
{
  if (cond) {
    printf("ok %s\n", name);
    return;
  }
  char *message = qrmi_get_last_error();
  printf("FAIL %s: last error: %s\n", name, message != NULL ? message : "(none)");
  if (message != NULL)
    qrmi_string_free(message);
  failures++;
}

/* Whether the last error's message contains `text` (and consumes it). */
static int last_error_says(const char *text)
{
  char *message = qrmi_get_last_error();
  int found = message != NULL && strstr(message, text) != NULL;
  if (!found)
    printf("  last error was: %s\n", message != NULL ? message : "(none)");
  if (message != NULL)
    qrmi_string_free(message);
  return found;
}

static void write_file(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  if (f != NULL) {
    fputs(text, f);
    fclose(f);
  }
}

static char *read_file(const char *path)
{
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  static char text[1 << 20];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  return strdup(text);
}

static void test_null_arguments(void)
{
  check(qrmi_resource_new(NULL, QRMI_RESOURCE_TYPE_LOCAL_QISKIT) == NULL &&
            qrmi_get_last_error_kind() == QRMI_RETURN_CODE_NULL_POINTER_ERROR,
        "qrmi_resource_new(NULL) is NULL with NULL_POINTER_ERROR");
  check(last_error_says("resource id is NULL"), "its last error says what was NULL");
  check(qrmi_get_last_error() == NULL, "reading the last error clears it");
  check(qrmi_get_last_error_kind() == QRMI_RETURN_CODE_NULL_POINTER_ERROR, "the last error kind is kept");
  check(qrmi_string_free(NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_string_array_free(0, NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_resource_free(NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_config_free(NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_config_resource_def_free(NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_resource_status_free(NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_resource_capacity_free(NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_resource_metadata_free(NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_provider_free(NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_provider_resources_free(NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_service_resources_free(NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR,
        "every free function refuses NULL with NULL_POINTER_ERROR");
  QrmiQuantumResource *qrmi = qrmi_resource_new("local-qiskit", QRMI_RESOURCE_TYPE_LOCAL_QISKIT);
  char *text = NULL;
  check(qrmi_resource_task_start(qrmi, NULL, &text) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_resource_task_status(qrmi, NULL, NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_resource_target(NULL, &text) == QRMI_RETURN_CODE_NULL_POINTER_ERROR,
        "calls with NULL arguments return NULL_POINTER_ERROR");
  QrmiPayload payload;
  payload.tag = QRMI_PAYLOAD_QISKIT_PRIMITIVE;
  payload.QISKIT_PRIMITIVE.input = NULL;
  payload.QISKIT_PRIMITIVE.program_id = "sampler";
  check(qrmi_resource_task_start(qrmi, &payload, &text) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            last_error_says("needs both input and program_id"),
        "a payload without input is NULL_POINTER_ERROR, named");
  qrmi_resource_free(qrmi);
}

static void test_unknown_resource_and_task(void)
{
  QrmiQuantumResource *qrmi = qrmi_resource_new("no-such-qpu", QRMI_RESOURCE_TYPE_IBM_QUANTUM_SYSTEM);
  bool accessible = true;
  check(qrmi != NULL && qrmi_resource_is_accessible(qrmi, &accessible) == QRMI_RETURN_CODE_SUCCESS && !accessible,
        "an unknown resource is not accessible");
  check(qrmi_get_last_error() == NULL, "and that is no error");
  QrmiResourceStatus *status = NULL;
  check(qrmi_resource_status(qrmi, &status) == QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR &&
            last_error_says("no resource named 'no-such-qpu'"),
        "the status of an unknown resource is RESOURCE_NOT_FOUND, with the daemon's message");
  QrmiPayload payload;
  payload.tag = QRMI_PAYLOAD_QISKIT_PRIMITIVE;
  payload.QISKIT_PRIMITIVE.input = "{}";
  payload.QISKIT_PRIMITIVE.program_id = "sampler";
  char *task_id = NULL;
  check(qrmi_resource_task_start(qrmi, &payload, &task_id) == QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR,
        "a task on an unknown resource is RESOURCE_NOT_FOUND");
  QrmiTaskStatus task_status;
  char *text = NULL;
  check(qrmi_resource_task_status(qrmi, "no-such-task", &task_status) == QRMI_RETURN_CODE_TASK_NOT_FOUND_ERROR &&
            qrmi_resource_task_result(qrmi, "no-such-task", &text) == QRMI_RETURN_CODE_TASK_NOT_FOUND_ERROR &&
            qrmi_resource_task_logs(qrmi, "no-such-task", &text) == QRMI_RETURN_CODE_TASK_NOT_FOUND_ERROR &&
            qrmi_resource_task_stop(qrmi, "no-such-task") == QRMI_RETURN_CODE_TASK_NOT_FOUND_ERROR,
        "status, result, logs and stop of an unknown task are TASK_NOT_FOUND");
  check(last_error_says("no task with id 'no-such-task'"), "the message names the task");
  check(qrmi_resource_release(qrmi, "not-a-lease") == QRMI_RETURN_CODE_INVALID_INPUT_ERROR &&
            last_error_says("unknown lease token"),
        "releasing an unknown lease is INVALID_INPUT, with the reason");
  qrmi_resource_free(qrmi);
}

static void test_payloads(const char *slow_input)
{
  QrmiQuantumResource *qrmi = qrmi_resource_new("local-qiskit", QRMI_RESOURCE_TYPE_LOCAL_QISKIT);
  QrmiPayload payload;
  char *task_id = NULL;
  char *token = NULL;
  check(qrmi_resource_acquire(qrmi, &token) == QRMI_RETURN_CODE_SUCCESS, "acquire");
  payload.tag = QRMI_PAYLOAD_QISKIT_PRIMITIVE;
  payload.QISKIT_PRIMITIVE.input = "not json";
  payload.QISKIT_PRIMITIVE.program_id = "sampler";
  check(qrmi_resource_task_start(qrmi, &payload, &task_id) == QRMI_RETURN_CODE_INVALID_INPUT_ERROR &&
            last_error_says("input is not valid JSON"),
        "an input that does not parse is INVALID_INPUT, with the daemon's reason");
  payload.tag = QRMI_PAYLOAD_IQM_SERVER;
  payload.IQM_SERVER.iqmjson = "{}";
  payload.IQM_SERVER.job_type = "circuit";
  payload.IQM_SERVER.use_timeslot = 0;
  payload.IQM_SERVER.tag = NULL;
  check(qrmi_resource_task_start(qrmi, &payload, &task_id) == QRMI_RETURN_CODE_UNSUPPORTED_PAYLOAD_ERROR &&
            last_error_says("not IQM_SERVER"),
        "an IQM_SERVER payload is UNSUPPORTED_PAYLOAD");
  payload.tag = QRMI_PAYLOAD_ALICE_BOB_FELIS;
  payload.ALICE_BOB_FELIS.human_qir = "";
  payload.ALICE_BOB_FELIS.input_params = "{}";
  check(qrmi_resource_task_start(qrmi, &payload, &task_id) == QRMI_RETURN_CODE_UNSUPPORTED_PAYLOAD_ERROR,
        "an ALICE_BOB_FELIS payload is UNSUPPORTED_PAYLOAD");
  memset(&payload, 0, sizeof payload);
  payload.tag = QRMI_PAYLOAD_OQTOPUS;
  payload.OQTOPUS.job_type = "sampling";
  payload.OQTOPUS.program = "OPENQASM 3;";
  payload.OQTOPUS.shots = 10;
  check(qrmi_resource_task_start(qrmi, &payload, &task_id) == QRMI_RETURN_CODE_UNSUPPORTED_PAYLOAD_ERROR &&
            last_error_says("not OQTOPUS"),
        "an OQTOPUS payload is UNSUPPORTED_PAYLOAD");

  /* A task that takes a while: its result is not ready, and stopping it keeps its record. */
  payload.tag = QRMI_PAYLOAD_QISKIT_PRIMITIVE;
  payload.QISKIT_PRIMITIVE.input = (char *)slow_input;
  payload.QISKIT_PRIMITIVE.program_id = "sampler";
  if (qrmi_resource_task_start(qrmi, &payload, &task_id) == QRMI_RETURN_CODE_SUCCESS) {
    char *text = NULL;
    check(qrmi_resource_task_result(qrmi, task_id, &text) == QRMI_RETURN_CODE_TASK_NOT_READY_ERROR,
          "the result of an unfinished task is TASK_NOT_READY");
    check(last_error_says(task_id), "the message names the task");
    QrmiTaskStatus status;
    check(qrmi_resource_task_stop(qrmi, task_id) == QRMI_RETURN_CODE_SUCCESS &&
              qrmi_resource_task_status(qrmi, task_id, &status) == QRMI_RETURN_CODE_SUCCESS &&
              status == QRMI_TASK_STATUS_CANCELLED,
          "task_stop cancels the task and its status stays readable");
    check(qrmi_resource_task_logs(qrmi, task_id, &text) == QRMI_RETURN_CODE_SUCCESS, "its logs stay readable");
    qrmi_string_free(text);
    check(qrmi_resource_task_result(qrmi, task_id, &text) == QRMI_RETURN_CODE_TASK_NOT_READY_ERROR,
          "a cancelled task has no result: TASK_NOT_READY");
    char *usage = NULL;
    check(qrmi_resource_task_usage(qrmi, task_id, &usage) == QRMI_RETURN_CODE_UNSUPPORTED_FUNCTION_ERROR &&
              usage == NULL && last_error_says("qrmid usage"),
          "task_usage is UNSUPPORTED_FUNCTION, pointing to qrmid usage");
    qrmi_string_free(task_id);
  } else {
    check(0, "the slow task starts");
  }
  check(qrmi_resource_release(qrmi, token) == QRMI_RETURN_CODE_SUCCESS, "release");
  qrmi_string_free(token);
  qrmi_resource_free(qrmi);
}

static void test_unreachable_daemon(const char *dir)
{
  char address[4200];
  snprintf(address, sizeof address, "unix:%s/nobody-here.sock", dir);
  QrmiKeyValue vars[] = {{"QRMID_ADDRESS", address}, {"QRMI_IBM_QS_IAM_APIKEY", "ignored"}};
  QrmiConfigMap config = {vars, 2};
  QrmiQuantumResource *qrmi = qrmi_resource_new_from_config("local-qiskit", QRMI_RESOURCE_TYPE_LOCAL_QISKIT, &config);
  bool accessible;
  check(qrmi != NULL && qrmi_resource_is_accessible(qrmi, &accessible) == QRMI_RETURN_CODE_ERROR,
        "an unreachable daemon is ERROR");
  check(last_error_says("nobody-here.sock"), "the message names the daemon's address");
  check(qrmi_resource_new_from_config("x", QRMI_RESOURCE_TYPE_LOCAL_QISKIT, NULL) == NULL &&
            qrmi_get_last_error_kind() == QRMI_RETURN_CODE_NULL_POINTER_ERROR,
        "new_from_config without a config map is NULL_POINTER_ERROR");
  qrmi_resource_free(qrmi);
}

static void test_config_files(const char *dir)
{
  char path[4200];
  snprintf(path, sizeof path, "%s/broken.json", dir);
  write_file(path, "{\"resources\": [");
  check(qrmi_config_load(path) == NULL && qrmi_get_last_error_kind() == QRMI_RETURN_CODE_PARSE_ERROR &&
            last_error_says("broken.json: line"),
        "a file that does not parse is PARSE_ERROR, with the line");
  snprintf(path, sizeof path, "%s/unknown-type.json", dir);
  write_file(path, "{\"resources\": [{\"name\": \"q\", \"type\": \"quantum-toaster\", \"environment\": {}}]}");
  check(qrmi_config_load(path) == NULL && qrmi_get_last_error_kind() == QRMI_RETURN_CODE_INVALID_CONFIG_ERROR &&
            last_error_says("unknown type \"quantum-toaster\""),
        "an unknown type is INVALID_CONFIG, named with the known ones");
  snprintf(path, sizeof path, "%s/bad-env.json", dir);
  write_file(path, "{\"resources\": [{\"name\": \"q\", \"type\": \"pasqal-local\", \"environment\": {\"K\": 1}}]}");
  check(qrmi_config_load(path) == NULL && last_error_says("environment \"K\" is not a string"),
        "a non-string environment value is refused, named");
  snprintf(path, sizeof path, "%s/none.json", dir);
  check(qrmi_config_load(path) == NULL && qrmi_get_last_error_kind() == QRMI_RETURN_CODE_PARSE_ERROR,
        "a missing file is PARSE_ERROR");
  snprintf(path, sizeof path, "%s/good.json", dir);
  write_file(path, "{\"resources\": [{\"name\": \"a\", \"type\": \"ibm-quantum-system\", \"environment\": "
                   "{\"QRMI_IBM_QS_ENDPOINT\": \"http://x\"}}, {\"name\": \"b\", \"type\": \"pasqal-cloud\", "
                   "\"is_dynamic\": true, \"environment\": {}}, {\"name\": \"a\", \"type\": \"local-qiskit\", "
                   "\"environment\": {}}]}");
  QrmiConfig *config = qrmi_config_load(path);
  size_t n = 0;
  char **names = NULL;
  check(config != NULL && qrmi_config_resource_names_get(config, &n, &names) == QRMI_RETURN_CODE_SUCCESS &&
            n == 2 && strcmp(names[0], "a") == 0 && strcmp(names[1], "b") == 0,
        "names are listed once each, a later definition replacing an earlier one");
  if (names != NULL)
    qrmi_string_array_free(n, names);
  QrmiResourceDef *a = qrmi_config_resource_def_get(config, "a");
  QrmiResourceDef *b = qrmi_config_resource_def_get(config, "b");
  check(a != NULL && a->type == QRMI_RESOURCE_TYPE_LOCAL_QISKIT && a->environments.length == 0 && !a->is_dynamic,
        "the later definition of a wins");
  check(b != NULL && b->type == QRMI_RESOURCE_TYPE_PASQAL_CLOUD && b->is_dynamic, "is_dynamic is read");
  check(qrmi_config_resource_def_get(config, "c") == NULL &&
            qrmi_get_last_error_kind() == QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR,
        "an unknown name gives NULL");
  qrmi_config_resource_def_free(a);
  qrmi_config_resource_def_free(b);
  qrmi_config_free(config);
  static const char *const TYPES[] = {"ibm-quantum-system", "qiskit-runtime-service", "ibm-quantum-compute-service",
                                      "pasqal-cloud", "pasqal-local", "alice-bob-felis", "iqm-server", "oqtopus"};
  int names_ok = 1;
  for (int t = 0; t < 8; t++)
    names_ok &= strcmp(qrmi_config_resource_type_to_str((QrmiResourceType)t), TYPES[t]) == 0;
  check(names_ok && strcmp(qrmi_config_resource_type_to_str(QRMI_RESOURCE_TYPE_LOCAL_PULSER), "local-pulser") == 0 &&
            qrmi_config_resource_type_to_str((QrmiResourceType)55) == NULL,
        "type names are qrmi_config.json's");
  check(strcmp(qrmi_resource_status_code_to_string(QRMI_RESOURCE_STATUS_CODE_ONLINE), "online") == 0 &&
            strcmp(qrmi_resource_status_code_to_string(QRMI_RESOURCE_STATUS_CODE_OFFLINE), "offline") == 0 &&
            strcmp(qrmi_resource_status_code_to_string(QRMI_RESOURCE_STATUS_CODE_PAUSED), "paused") == 0,
        "status code names");
}

static void test_providers(void)
{
  QrmiKeyValue vars[] = {{"QRMID_ADDRESS", getenv("QRMID_ADDRESS")}};
  QrmiEnvironmentVariables env = {vars, 1};
  QrmiResourceProvider *provider = qrmi_provider_new(QRMI_RESOURCE_TYPE_LOCAL_QISKIT, &env);
  QrmiQuantumResources list = {NULL, 0};
  char *id = NULL;
  check(provider != NULL && qrmi_provider_resources(provider, NULL, &list) == QRMI_RETURN_CODE_SUCCESS &&
            list.length == 1 && qrmi_resource_id(list.resources[0], &id) == QRMI_RETURN_CODE_SUCCESS &&
            strcmp(id, "local-qiskit") == 0,
        "a provider of local-qiskit lists the daemon's one local-qiskit resource");
  qrmi_string_free(id);
  qrmi_provider_resources_free(&list);
  check(list.resources == NULL && list.length == 0, "freeing the list zeroes it");
  check(qrmi_provider_resources(provider, "simulator=qiskit-aer", &list) == QRMI_RETURN_CODE_SUCCESS &&
            list.length == 1,
        "a filter on metadata keeps what matches");
  qrmi_provider_resources_free(&list);
  check(qrmi_provider_resources(provider, "simulator=qiskit-aer&backend_name=other", &list) ==
                QRMI_RETURN_CODE_SUCCESS &&
            list.length == 0,
        "every term must match");
  qrmi_provider_resources_free(&list);
  check(qrmi_provider_resources(provider, "simulator", &list) == QRMI_RETURN_CODE_INVALID_INPUT_ERROR &&
            last_error_says("is not key=value"),
        "a filter term without '=' is INVALID_INPUT");
  QrmiQuantumResource *least = NULL;
  bool accessible = false;
  check(qrmi_provider_least_busy(provider, NULL, &least) == QRMI_RETURN_CODE_SUCCESS && least != NULL &&
            qrmi_resource_is_accessible(least, &accessible) == QRMI_RETURN_CODE_SUCCESS && accessible,
        "least_busy gives a usable handle");
  qrmi_resource_free(least);
  char *usage = NULL;
  check(qrmi_provider_account_usage(provider, &usage) == QRMI_RETURN_CODE_UNSUPPORTED_FUNCTION_ERROR,
        "provider_account_usage is UNSUPPORTED_FUNCTION");
  qrmi_provider_free(provider);
  provider = qrmi_provider_new(QRMI_RESOURCE_TYPE_IQM_SERVER, &env);
  check(provider != NULL && qrmi_provider_least_busy(provider, NULL, &least) == QRMI_RETURN_CODE_SUCCESS &&
            least == NULL,
        "a provider of a type the daemon does not serve has no resource");
  qrmi_provider_free(provider);
  check(qrmi_provider_new((QrmiResourceType)77, &env) == NULL &&
            qrmi_get_last_error_kind() == QRMI_RETURN_CODE_UNSUPPORTED_RESOURCE_TYPE_ERROR,
        "an unknown type is UNSUPPORTED_RESOURCE_TYPE");
}

static int warnings;
static char last_warning[1024];

static void on_log(const char *level, const char *target, const char *message)
{
  if (strcmp(level, "WARN") == 0 && strcmp(target, "qrmi") == 0) {
    warnings++;
    snprintf(last_warning, sizeof last_warning, "%s", message);
  }
}

static void test_job_resources(void)
{
  QrmiQuantumResources list = {NULL, 0};
  unsetenv("QRMI_JOB_QPU_RESOURCES");
  unsetenv("SLURM_JOB_QPU_RESOURCES");
  check(qrmi_service_resources(&list) == QRMI_RETURN_CODE_ENV_VAR_NOT_SET_ERROR &&
            last_error_says("QRMI_JOB_QPU_RESOURCES"),
        "without the job's variables: ENV_VAR_NOT_SET, naming the variable");
  setenv("QRMI_JOB_QPU_RESOURCES", "local-qiskit,local-pulser", 1);
  setenv("QRMI_JOB_QPU_TYPES", "local-qiskit", 1);
  check(qrmi_service_resources(&list) == QRMI_RETURN_CODE_INVALID_CONFIG_ERROR && last_error_says("2 names"),
        "lists of different lengths: INVALID_CONFIG");
  check(qrmi_log_callback_set(on_log) == QRMI_RETURN_CODE_SUCCESS, "log callback set");
  setenv("QRMI_JOB_QPU_RESOURCES", "local-qiskit;gone;toaster;local-pulser", 1);
  setenv("QRMI_JOB_QPU_TYPES", "local-qiskit;ibm-quantum-system;quantum-toaster;local-pulser", 1);
  setenv("QRMI_LIST_DELIMITER", ";", 1);
  check(qrmi_service_resources(&list) == QRMI_RETURN_CODE_SUCCESS && list.length == 2,
        "the job's accessible resources, inaccessible and unknown types skipped");
  check(warnings == 2 && strstr(last_warning, "quantum-toaster") != NULL, "each skip is a warning to the callback");
  qrmi_service_resources_free(&list);
  qrmi_log_callback_set(NULL);
  unsetenv("QRMI_LIST_DELIMITER");
  setenv("QRMI_PLUGIN_ERROR", "no lease: resource busy", 1);
  check(qrmi_service_resources(&list) == QRMI_RETURN_CODE_ERROR && last_error_says("no lease: resource busy"),
        "the Slurm plugin's error is reported");
  unsetenv("QRMI_PLUGIN_ERROR");
}

static void test_status_accessors(void)
{
  QrmiQuantumResource *qrmi = qrmi_resource_new("local-pulser", QRMI_RESOURCE_TYPE_LOCAL_PULSER);
  QrmiResourceStatus *status = NULL;
  bool healthy;
  QrmiResourceCapacity *capacity = NULL;
  bool accessible = false;
  check(qrmi_resource_status(qrmi, &status) == QRMI_RETURN_CODE_SUCCESS &&
            qrmi_resource_status_is_accessible(status, &accessible) == QRMI_RETURN_CODE_SUCCESS && accessible &&
            qrmi_resource_status_healthy(status, &healthy) == QRMI_RETURN_CODE_UNSUPPORTED_FUNCTION_ERROR &&
            qrmi_resource_status_capacity(status, &capacity) == QRMI_RETURN_CODE_SUCCESS &&
            capacity->max_slots == 1 && qrmi_resource_status_reason(status) == NULL,
        "status: accessible, health unsupported, one slot, no reason");
  QrmiQuantumResourceInfo *info = NULL;
  uint32_t qubits = 0;
  char *name = NULL;
  check(qrmi_resource_describe(qrmi, &info) == QRMI_RETURN_CODE_SUCCESS &&
            (name = qrmi_quantum_resource_info_backend_display_name(info)) != NULL &&
            strcmp(name, "local-pulser") == 0 &&
            qrmi_quantum_resource_info_num_qubits(info, &qubits) == QRMI_RETURN_CODE_SUCCESS && qubits > 0,
        "describe: the Pulser device's name and its atoms");
  if (name != NULL)
    qrmi_string_free(name);
  qrmi_quantum_resource_info_free(info);
  check(qrmi_quantum_resource_info_free(NULL) == QRMI_RETURN_CODE_NULL_POINTER_ERROR &&
            qrmi_quantum_resource_info_backend_display_name(NULL) == NULL,
        "describe: NULL handles");
  qrmi_resource_capacity_free(capacity);
  qrmi_resource_status_free(status);
  qrmi_resource_free(qrmi);
}

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: %s SCRATCH_DIR SLOW_SAMPLER_INPUT_FILE\n", argv[0]);
    return 2;
  }
  char *slow = read_file(argv[2]);
  if (slow == NULL) {
    fprintf(stderr, "qrmi_edges: cannot read %s\n", argv[2]);
    return 2;
  }
  test_null_arguments();
  test_unknown_resource_and_task();
  test_payloads(slow);
  test_unreachable_daemon(argv[1]);
  test_config_files(argv[1]);
  test_providers();
  test_job_resources();
  test_status_accessors();
  free(slow);
  printf("failures=%d\n", failures);
  return failures == 0 ? 0 : 1;
}
