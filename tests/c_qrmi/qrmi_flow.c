/*
 * A QRMI C program, as its users write them, run against qrmid through
 * libqrmid-qrmi: one task on one resource, every step of QRMI's C API.
 *
 *   qrmi_flow env RESOURCE TYPE PAYLOAD_KIND INPUT_FILE [SHOTS]
 *   qrmi_flow config CONFIG_FILE RESOURCE PAYLOAD_KIND INPUT_FILE [SHOTS]
 *   qrmi_flow service RESOURCE - PAYLOAD_KIND INPUT_FILE [SHOTS]
 *
 * "env": the handle from qrmi_resource_new() (the daemon from $QRMID_ADDRESS);
 * "config": from qrmi_config_load() and qrmi_resource_new_from_config() with
 * the resource's environment; "service": the job's resource of that name
 * from qrmi_service_resources() (the Slurm plugin's variables). TYPE is a qrmi_config.json type name;
 * PAYLOAD_KIND is "sampler", "estimator" or "pulser" (the file holds the
 * primitive input, or the Pulser sequence). Steps: accessibility, status and
 * its accessors, id and type, metadata, description, target, acquire, task_start, polling
 * task_status until final, result, logs, task_stop (the result must stay
 * readable), release, free. Prints "key=value" lines; exits 1 with the last
 * error on a failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qrmi.h"

static int failed(const char *what, QrmiReturnCode rc)
{
  char *message = qrmi_get_last_error();
  fprintf(stderr, "qrmi_flow: %s failed (%d): %s\n", what, (int)rc, message != NULL ? message : "(no message)");
  if (message != NULL)
    qrmi_string_free(message);
  return 1;
}

static char *read_file(const char *path)
{
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *text = malloc((size_t)size + 1);
  if (text != NULL && fread(text, 1, (size_t)size, f) != (size_t)size) {
    free(text);
    text = NULL;
  }
  if (text != NULL)
    text[size] = '\0';
  fclose(f);
  return text;
}

static const char *status_name(QrmiTaskStatus status)
{
  switch (status) {
  case QRMI_TASK_STATUS_QUEUED:
    return "QUEUED";
  case QRMI_TASK_STATUS_RUNNING:
    return "RUNNING";
  case QRMI_TASK_STATUS_COMPLETED:
    return "COMPLETED";
  case QRMI_TASK_STATUS_FAILED:
    return "FAILED";
  case QRMI_TASK_STATUS_CANCELLED:
    return "CANCELLED";
  }
  return "?";
}

/* Prints the resource's status through every accessor. */
static int show_status(QrmiQuantumResource *qrmi)
{
  QrmiResourceStatus *status = NULL;
  QrmiReturnCode rc = qrmi_resource_status(qrmi, &status);
  if (rc != QRMI_RETURN_CODE_SUCCESS)
    return failed("qrmi_resource_status", rc);
  QrmiResourceStatusCode code;
  bool busy = false, healthy = false;
  uint64_t pending = 0;
  QrmiResourceCapacity *capacity = NULL;
  if ((rc = qrmi_resource_status_code(status, &code)) != QRMI_RETURN_CODE_SUCCESS ||
      (rc = qrmi_resource_status_busy(status, &busy)) != QRMI_RETURN_CODE_SUCCESS ||
      (rc = qrmi_resource_status_pending_job_count(status, &pending)) != QRMI_RETURN_CODE_SUCCESS ||
      (rc = qrmi_resource_status_capacity(status, &capacity)) != QRMI_RETURN_CODE_SUCCESS) {
    qrmi_resource_status_free(status);
    return failed("a status accessor", rc);
  }
  printf("status=%s\nbusy=%d\npending=%llu\nslots=%llu/%llu\n", qrmi_resource_status_code_to_string(code), busy,
         (unsigned long long)pending, (unsigned long long)capacity->available_slots,
         (unsigned long long)capacity->max_slots);
  qrmi_resource_capacity_free(capacity);
  char *reason = qrmi_resource_status_reason(status);
  printf("reason=%s\n", reason != NULL ? reason : "");
  if (reason != NULL)
    qrmi_string_free(reason);
  rc = qrmi_resource_status_healthy(status, &healthy);
  printf("healthy_rc=%d\n", (int)rc);
  char *why = qrmi_get_last_error();
  if (why != NULL)
    qrmi_string_free(why);
  qrmi_resource_status_free(status);
  return 0;
}

/* Prints id, type, metadata keys and values, and the target's size. */
static int show_description(QrmiQuantumResource *qrmi)
{
  char *id = NULL;
  QrmiResourceType type;
  QrmiReturnCode rc;
  if ((rc = qrmi_resource_id(qrmi, &id)) != QRMI_RETURN_CODE_SUCCESS)
    return failed("qrmi_resource_id", rc);
  if ((rc = qrmi_resource_type(qrmi, &type)) != QRMI_RETURN_CODE_SUCCESS) {
    qrmi_string_free(id);
    return failed("qrmi_resource_type", rc);
  }
  printf("id=%s\ntype=%s\n", id, qrmi_config_resource_type_to_str(type));
  qrmi_string_free(id);

  QrmiResourceMetadata *metadata = NULL;
  if ((rc = qrmi_resource_metadata(qrmi, &metadata)) != QRMI_RETURN_CODE_SUCCESS)
    return failed("qrmi_resource_metadata", rc);
  size_t num_keys = 0;
  char **keys = NULL;
  if ((rc = qrmi_resource_metadata_keys(metadata, &num_keys, &keys)) != QRMI_RETURN_CODE_SUCCESS) {
    qrmi_resource_metadata_free(metadata);
    return failed("qrmi_resource_metadata_keys", rc);
  }
  for (size_t i = 0; i < num_keys; i++) {
    char *value = qrmi_resource_metadata_value(metadata, keys[i]);
    printf("metadata.%s=%s\n", keys[i], value != NULL ? value : "(null)");
    if (value != NULL)
      qrmi_string_free(value);
  }
  qrmi_string_array_free(num_keys, keys);
  char *missing = qrmi_resource_metadata_value(metadata, "no-such-key");
  printf("metadata_missing=%s\n", missing == NULL ? "null" : missing);
  qrmi_resource_metadata_free(metadata);

  QrmiQuantumResourceInfo *info = NULL;
  if ((rc = qrmi_resource_describe(qrmi, &info)) != QRMI_RETURN_CODE_SUCCESS)
    return failed("qrmi_resource_describe", rc);
  char *display_name = qrmi_quantum_resource_info_backend_display_name(info);
  uint32_t qubits = 0;
  if (qrmi_quantum_resource_info_num_qubits(info, &qubits) == QRMI_RETURN_CODE_SUCCESS)
    printf("describe_qubits=%u\n", (unsigned)qubits);
  printf("describe_name=%s\n", display_name != NULL ? display_name : "(null)");
  if (display_name != NULL)
    qrmi_string_free(display_name);
  qrmi_quantum_resource_info_free(info);

  char *target = NULL;
  if ((rc = qrmi_resource_target(qrmi, &target)) != QRMI_RETURN_CODE_SUCCESS)
    return failed("qrmi_resource_target", rc);
  printf("target_bytes=%zu\ntarget_head=%.1s\n", strlen(target), target);
  qrmi_string_free(target);
  return 0;
}

/* Runs one task under a fresh lease and prints its outcome. */
static int run_task(QrmiQuantumResource *qrmi, const char *kind, char *input, int shots)
{
  char *token = NULL;
  QrmiReturnCode rc = qrmi_resource_acquire(qrmi, &token);
  if (rc != QRMI_RETURN_CODE_SUCCESS)
    return failed("qrmi_resource_acquire", rc);
  printf("lease_acquired=%d\n", token != NULL && token[0] != '\0');

  QrmiPayload payload;
  if (strcmp(kind, "pulser") == 0) {
    payload.tag = QRMI_PAYLOAD_PASQAL_CLOUD;
    payload.PASQAL_CLOUD.sequence = input;
    payload.PASQAL_CLOUD.job_runs = shots;
  } else {
    payload.tag = QRMI_PAYLOAD_QISKIT_PRIMITIVE;
    payload.QISKIT_PRIMITIVE.input = input;
    payload.QISKIT_PRIMITIVE.program_id = (char *)kind;
  }
  char *task_id = NULL;
  int result = 1;
  if ((rc = qrmi_resource_task_start(qrmi, &payload, &task_id)) != QRMI_RETURN_CODE_SUCCESS) {
    failed("qrmi_resource_task_start", rc);
    goto release;
  }
  printf("task_id=%s\n", task_id);
  QrmiTaskStatus status = QRMI_TASK_STATUS_QUEUED;
  int polls = 0;
  for (;;) {
    if ((rc = qrmi_resource_task_status(qrmi, task_id, &status)) != QRMI_RETURN_CODE_SUCCESS) {
      failed("qrmi_resource_task_status", rc);
      goto free_task;
    }
    polls++;
    if (status != QRMI_TASK_STATUS_QUEUED && status != QRMI_TASK_STATUS_RUNNING)
      break;
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  printf("final_status=%s\npolled=%d\n", status_name(status), polls > 0);

  char *text = NULL;
  if ((rc = qrmi_resource_task_result(qrmi, task_id, &text)) != QRMI_RETURN_CODE_SUCCESS) {
    failed("qrmi_resource_task_result", rc);
    goto free_task;
  }
  printf("result=%s\n", text);
  qrmi_string_free(text);

  char *logs = NULL;
  if ((rc = qrmi_resource_task_logs(qrmi, task_id, &logs)) != QRMI_RETURN_CODE_SUCCESS) {
    failed("qrmi_resource_task_logs", rc);
    goto free_task;
  }
  printf("logs_bytes=%zu\n", strlen(logs));
  qrmi_string_free(logs);

  /* Stopping a finished task is harmless in qrmid and keeps its result. */
  if ((rc = qrmi_resource_task_stop(qrmi, task_id)) != QRMI_RETURN_CODE_SUCCESS) {
    failed("qrmi_resource_task_stop", rc);
    goto free_task;
  }
  if ((rc = qrmi_resource_task_status(qrmi, task_id, &status)) != QRMI_RETURN_CODE_SUCCESS ||
      (rc = qrmi_resource_task_result(qrmi, task_id, &text)) != QRMI_RETURN_CODE_SUCCESS) {
    failed("reading the task after qrmi_resource_task_stop", rc);
    goto free_task;
  }
  printf("after_stop_status=%s\nafter_stop_result_bytes=%zu\n", status_name(status), strlen(text));
  qrmi_string_free(text);
  result = 0;
free_task:
  qrmi_string_free(task_id);
release:
  if ((rc = qrmi_resource_release(qrmi, token)) != QRMI_RETURN_CODE_SUCCESS)
    result = failed("qrmi_resource_release", rc);
  else
    printf("released=1\n");
  qrmi_string_free(token);
  return result;
}

/* The handle for RESOURCE from the config file, built as QRMI programs do. */
static QrmiQuantumResource *from_config(const char *path, const char *name)
{
  QrmiConfig *config = qrmi_config_load(path);
  if (config == NULL) {
    failed("qrmi_config_load", QRMI_RETURN_CODE_ERROR);
    return NULL;
  }
  size_t num_names = 0;
  char **names = NULL;
  QrmiReturnCode rc = qrmi_config_resource_names_get(config, &num_names, &names);
  if (rc != QRMI_RETURN_CODE_SUCCESS) {
    qrmi_config_free(config);
    failed("qrmi_config_resource_names_get", rc);
    return NULL;
  }
  for (size_t i = 0; i < num_names; i++)
    printf("config_name=%s\n", names[i]);
  qrmi_string_array_free(num_names, names);
  QrmiResourceDef *def = qrmi_config_resource_def_get(config, name);
  qrmi_config_free(config);
  if (def == NULL) {
    failed("qrmi_config_resource_def_get", QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR);
    return NULL;
  }
  printf("config_type=%s\nconfig_dynamic=%d\nconfig_env=%zu\n", qrmi_config_resource_type_to_str(def->type),
         def->is_dynamic, def->environments.length);
  QrmiQuantumResource *qrmi = qrmi_resource_new_from_config(def->name, def->type, &def->environments);
  qrmi_config_resource_def_free(def);
  if (qrmi == NULL)
    failed("qrmi_resource_new_from_config", QRMI_RETURN_CODE_ERROR);
  return qrmi;
}

int main(int argc, char **argv)
{
  if (argc < 6) {
    fprintf(stderr, "usage: %s env RESOURCE TYPE KIND INPUT [SHOTS] | config FILE RESOURCE KIND INPUT [SHOTS] | "
            "service RESOURCE - KIND INPUT [SHOTS]\n", argv[0]);
    return 2;
  }
  const char *kind = argv[4];
  char *input = read_file(argv[5]);
  int shots = argc > 6 ? atoi(argv[6]) : 100;
  if (input == NULL) {
    fprintf(stderr, "qrmi_flow: cannot read %s\n", argv[5]);
    return 2;
  }
  QrmiQuantumResource *qrmi = NULL;
  QrmiQuantumResources job = {NULL, 0};
  if (strcmp(argv[1], "config") == 0) {
    qrmi = from_config(argv[2], argv[3]);
  } else if (strcmp(argv[1], "service") == 0) {
    QrmiReturnCode code = qrmi_service_resources(&job);
    if (code != QRMI_RETURN_CODE_SUCCESS)
      failed("qrmi_service_resources", code);
    for (size_t i = 0; i < job.length; i++) {
      char *id = NULL;
      if (qrmi_resource_id(job.resources[i], &id) == QRMI_RETURN_CODE_SUCCESS) {
        printf("job_resource=%s\n", id);
        if (strcmp(id, argv[2]) == 0)
          qrmi = job.resources[i];
        qrmi_string_free(id);
      }
    }
  } else {
    QrmiResourceType type = QRMI_RESOURCE_TYPE_LOCAL_QISKIT;
    for (int t = 0; t <= QRMI_RESOURCE_TYPE_LOCAL_PULSER; t++) {
      const char *name = qrmi_config_resource_type_to_str((QrmiResourceType)t);
      if (name != NULL && strcmp(name, argv[3]) == 0)
        type = (QrmiResourceType)t;
    }
    qrmi = qrmi_resource_new(argv[2], type);
    if (qrmi == NULL)
      failed("qrmi_resource_new", QRMI_RETURN_CODE_ERROR);
  }
  int rc = 1;
  if (qrmi != NULL) {
    bool accessible = false;
    QrmiReturnCode code = qrmi_resource_is_accessible(qrmi, &accessible);
    if (code != QRMI_RETURN_CODE_SUCCESS) {
      failed("qrmi_resource_is_accessible", code);
    } else {
      printf("accessible=%d\n", accessible);
      rc = show_status(qrmi) || show_description(qrmi) || run_task(qrmi, kind, input, shots);
    }
  }
  if (job.resources != NULL)
    qrmi_service_resources_free(&job);
  else if (qrmi != NULL)
    qrmi_resource_free(qrmi);
  free(input);
  return rc;
}
