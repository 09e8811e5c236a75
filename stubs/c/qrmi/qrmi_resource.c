/*
 * Resource handles and their tasks: each function is one call (or one
 * stream) to the daemon through the generated qrmid C stubs.
 */
#include <stdio.h>
#include <string.h>

#include "qrmi_internal.h"

QrmiQuantumResource *qrmi_handle_new(const char *id, QrmiResourceType type, const char *address)
{
  if (id == NULL || id[0] == '\0') {
    qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_new: the resource id is %s",
              id == NULL ? "NULL" : "empty");
    return NULL;
  }
  QrmiQuantumResource *qrmi = calloc(1, sizeof *qrmi);
  if (qrmi == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
    return NULL;
  }
  qrmi->type = type;
  pthread_mutex_init(&qrmi->lock, NULL);
  if ((qrmi->id = qrmi_strdup(id)) == NULL || (qrmi->address = qrmi_daemon_address(address)) == NULL) {
    qrmi_resource_free(qrmi);
    return NULL;
  }
  qrmid_error err = QRMID_ERROR_INIT;
  if (qrmid_client_new(qrmi->address, NULL, &qrmi->client, &err) != GRPC_STATUS_OK ||
      qrmid_client_auth_from_env(qrmi->client, &err) != GRPC_STATUS_OK) {
    qrmi_fail(err.code == GRPC_STATUS_INVALID_ARGUMENT ? QRMI_RETURN_CODE_INVALID_CONFIG_ERROR
                                                       : QRMI_RETURN_CODE_ERROR,
              "qrmi_resource_new(%s): cannot use qrmid at %s: %s: %s", id, qrmi->address, qrmid_status_name(err.code),
              err.message != NULL ? err.message : "");
    qrmid_error_clear(&err);
    qrmi_resource_free(qrmi);
    return NULL;
  }
  return qrmi;
}

QrmiQuantumResource *qrmi_resource_new(const char *resource_id, QrmiResourceType resource_type)
{
  return qrmi_handle_new(resource_id, resource_type, NULL);
}

QrmiQuantumResource *qrmi_resource_new_from_config(const char *resource_id, QrmiResourceType resource_type,
                                                   const QrmiConfigMap *config)
{
  if (config == NULL) {
    qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_new_from_config: config is NULL");
    return NULL;
  }
  return qrmi_handle_new(resource_id, resource_type, qrmi_env_lookup(config, "QRMID_ADDRESS"));
}

QrmiReturnCode qrmi_resource_free(QrmiQuantumResource *ptr)
{
  if (ptr == NULL)
    return QRMI_RETURN_CODE_NULL_POINTER_ERROR;
  qrmid_client_free(ptr->client);
  pthread_mutex_destroy(&ptr->lock);
  free(ptr->lease);
  free(ptr->address);
  free(ptr->id);
  free(ptr);
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_id(QrmiQuantumResource *qrmi, char **outp)
{
  if (qrmi == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_id: a NULL argument");
  return (*outp = qrmi_strdup(qrmi->id)) != NULL ? QRMI_RETURN_CODE_SUCCESS : QRMI_RETURN_CODE_ERROR;
}

QrmiReturnCode qrmi_resource_type(QrmiQuantumResource *qrmi, QrmiResourceType *outp)
{
  if (qrmi == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_type: a NULL argument");
  *outp = qrmi->type;
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_acquire(QrmiQuantumResource *qrmi, char **acquisition_token)
{
  if (qrmi == NULL || acquisition_token == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_acquire: a NULL argument");
  Qrmid__V1__AcquireRequest req = QRMID__V1__ACQUIRE_REQUEST__INIT;
  req.resource = qrmi->id;
  const char *job = getenv("QRMI_JOB_ID");
  req.slurm_job_id = (char *)(job != NULL ? job : "");
  Qrmid__V1__Lease *lease = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  char what[512];
  snprintf(what, sizeof what, "acquire(%s)", qrmi->id);
  if (qrmid_v1_quantum_resources_acquire(qrmi->client, &req, &lease, QRMI_CALL_TIMEOUT_MS, &err) != GRPC_STATUS_OK) {
    QrmiReturnCode code = qrmi_fail_call(qrmi, what, &err, QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR);
    qrmid_error_clear(&err);
    return code;
  }
  char *token = qrmi_strdup(lease->token);
  char *kept = qrmi_strdup(lease->token);
  qrmid__v1__lease__free_unpacked(lease, NULL);
  if (token == NULL || kept == NULL) {
    free(token);
    free(kept);
    return QRMI_RETURN_CODE_ERROR;
  }
  pthread_mutex_lock(&qrmi->lock);
  free(qrmi->lease);
  qrmi->lease = kept;
  pthread_mutex_unlock(&qrmi->lock);
  *acquisition_token = token;
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_release(QrmiQuantumResource *qrmi, const char *acquisition_token)
{
  if (qrmi == NULL || acquisition_token == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_release: a NULL argument");
  Qrmid__V1__ReleaseRequest req = QRMID__V1__RELEASE_REQUEST__INIT;
  req.token = (char *)acquisition_token;
  Qrmid__V1__ReleaseResponse *resp = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  char what[512];
  snprintf(what, sizeof what, "release(%s)", qrmi->id);
  if (qrmid_v1_quantum_resources_release(qrmi->client, &req, &resp, QRMI_CALL_TIMEOUT_MS, &err) != GRPC_STATUS_OK) {
    QrmiReturnCode code = qrmi_fail_call(qrmi, what, &err, QRMI_RETURN_CODE_INVALID_INPUT_ERROR);
    qrmid_error_clear(&err);
    return code;
  }
  qrmid__v1__release_response__free_unpacked(resp, NULL);
  pthread_mutex_lock(&qrmi->lock);
  if (qrmi->lease != NULL && strcmp(qrmi->lease, acquisition_token) == 0) {
    free(qrmi->lease);
    qrmi->lease = NULL;
  }
  pthread_mutex_unlock(&qrmi->lock);
  return QRMI_RETURN_CODE_SUCCESS;
}

/* The lease a new task runs under: the handle's, else the job's for this
 * resource, else the job's, else none. Malloc'd (NULL: out of memory). */
static char *task_lease(QrmiQuantumResource *qrmi)
{
  pthread_mutex_lock(&qrmi->lock);
  char *token = qrmi->lease != NULL ? strdup(qrmi->lease) : NULL;
  int had = qrmi->lease != NULL;
  pthread_mutex_unlock(&qrmi->lock);
  if (had)
    return token != NULL ? token : qrmi_strdup("");
  char name[1024];
  snprintf(name, sizeof name, "%s_QRMI_JOB_ACQUISITION_TOKEN", qrmi->id);
  const char *job = getenv(name);
  if (job == NULL || job[0] == '\0')
    job = getenv("QRMI_JOB_ACQUISITION_TOKEN");
  return qrmi_strdup(job != NULL ? job : "");
}

/* Fills `out` from a QRMI payload; SUCCESS, or a failure with the last error set. */
static QrmiReturnCode payload_message(const QrmiPayload *payload, Qrmid__V1__Payload *out,
                                      Qrmid__V1__QiskitPrimitive *qiskit, Qrmid__V1__PulserSequence *pulser)
{
  switch (payload->tag) {
  case QRMI_PAYLOAD_QISKIT_PRIMITIVE:
    if (payload->QISKIT_PRIMITIVE.input == NULL || payload->QISKIT_PRIMITIVE.program_id == NULL)
      return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR,
                       "task_start: QISKIT_PRIMITIVE needs both input and program_id (\"sampler\" or \"estimator\")");
    qiskit->program_id = payload->QISKIT_PRIMITIVE.program_id;
    qiskit->input = payload->QISKIT_PRIMITIVE.input;
    out->kind_case = QRMID__V1__PAYLOAD__KIND_QISKIT_PRIMITIVE;
    out->qiskit_primitive = qiskit;
    return QRMI_RETURN_CODE_SUCCESS;
  case QRMI_PAYLOAD_PASQAL_CLOUD:
    if (payload->PASQAL_CLOUD.sequence == NULL)
      return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "task_start: PASQAL_CLOUD needs a sequence");
    pulser->sequence = payload->PASQAL_CLOUD.sequence;
    pulser->job_runs = payload->PASQAL_CLOUD.job_runs;
    out->kind_case = QRMID__V1__PAYLOAD__KIND_PULSER_SEQUENCE;
    out->pulser_sequence = pulser;
    return QRMI_RETURN_CODE_SUCCESS;
  case QRMI_PAYLOAD_ALICE_BOB_FELIS:
  case QRMI_PAYLOAD_IQM_SERVER:
  case QRMI_PAYLOAD_OQTOPUS:
    return qrmi_fail(QRMI_RETURN_CODE_UNSUPPORTED_PAYLOAD_ERROR,
                     "task_start: qrmid runs QISKIT_PRIMITIVE and PASQAL_CLOUD payloads, not %s",
                     payload->tag == QRMI_PAYLOAD_IQM_SERVER   ? "IQM_SERVER"
                     : payload->tag == QRMI_PAYLOAD_OQTOPUS ? "OQTOPUS"
                                                              : "ALICE_BOB_FELIS");
  }
  return qrmi_fail(QRMI_RETURN_CODE_INVALID_INPUT_ERROR, "task_start: unknown payload tag %d", (int)payload->tag);
}

QrmiReturnCode qrmi_resource_task_start(QrmiQuantumResource *qrmi, const QrmiPayload *payload, char **task_id)
{
  if (qrmi == NULL || payload == NULL || task_id == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_task_start: a NULL argument");
  Qrmid__V1__QiskitPrimitive qiskit = QRMID__V1__QISKIT_PRIMITIVE__INIT;
  Qrmid__V1__PulserSequence pulser = QRMID__V1__PULSER_SEQUENCE__INIT;
  Qrmid__V1__Payload message = QRMID__V1__PAYLOAD__INIT;
  QrmiReturnCode code = payload_message(payload, &message, &qiskit, &pulser);
  if (code != QRMI_RETURN_CODE_SUCCESS)
    return code;
  char *lease = task_lease(qrmi);
  if (lease == NULL)
    return QRMI_RETURN_CODE_ERROR;
  Qrmid__V1__StartTaskRequest req = QRMID__V1__START_TASK_REQUEST__INIT;
  req.resource = qrmi->id;
  req.payload = &message;
  req.lease_token = lease;
  Qrmid__V1__Task *task = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  grpc_status_code status =
      qrmid_v1_quantum_resources_start_task(qrmi->client, &req, &task, QRMI_CALL_TIMEOUT_MS, &err);
  free(lease);
  if (status != GRPC_STATUS_OK) {
    char what[512];
    snprintf(what, sizeof what, "task_start(%s)", qrmi->id);
    code = qrmi_fail_call(qrmi, what, &err, QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR);
    qrmid_error_clear(&err);
    return code;
  }
  *task_id = qrmi_strdup(task->id);
  qrmid__v1__task__free_unpacked(task, NULL);
  return *task_id != NULL ? QRMI_RETURN_CODE_SUCCESS : QRMI_RETURN_CODE_ERROR;
}

/* Records a failed call on task `task_id`; returns its code. */
static QrmiReturnCode task_call_failed(QrmiQuantumResource *qrmi, const char *call, const char *task_id,
                                       qrmid_error *err)
{
  char what[512];
  snprintf(what, sizeof what, "%s(%s, task %s)", call, qrmi->id, task_id);
  QrmiReturnCode code = qrmi_fail_call(qrmi, what, err, QRMI_RETURN_CODE_TASK_NOT_FOUND_ERROR);
  qrmid_error_clear(err);
  return code;
}

QrmiReturnCode qrmi_resource_task_stop(QrmiQuantumResource *qrmi, const char *task_id)
{
  if (qrmi == NULL || task_id == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_task_stop: a NULL argument");
  Qrmid__V1__StopTaskRequest req = QRMID__V1__STOP_TASK_REQUEST__INIT;
  req.task_id = (char *)task_id;
  Qrmid__V1__Task *task = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  if (qrmid_v1_quantum_resources_stop_task(qrmi->client, &req, &task, QRMI_CALL_TIMEOUT_MS, &err) != GRPC_STATUS_OK)
    return task_call_failed(qrmi, "task_stop", task_id, &err);
  qrmid__v1__task__free_unpacked(task, NULL);
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_task_status(QrmiQuantumResource *qrmi, const char *task_id, QrmiTaskStatus *status)
{
  if (qrmi == NULL || task_id == NULL || status == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_task_status: a NULL argument");
  Qrmid__V1__GetTaskRequest req = QRMID__V1__GET_TASK_REQUEST__INIT;
  req.task_id = (char *)task_id;
  Qrmid__V1__Task *task = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  if (qrmid_v1_quantum_resources_get_task(qrmi->client, &req, &task, QRMI_CALL_TIMEOUT_MS, &err) != GRPC_STATUS_OK)
    return task_call_failed(qrmi, "task_status", task_id, &err);
  Qrmid__V1__TaskState state = task->state;
  qrmid__v1__task__free_unpacked(task, NULL);
  switch (state) {
  case QRMID__V1__TASK_STATE__TASK_STATE_QUEUED:
    *status = QRMI_TASK_STATUS_QUEUED;
    return QRMI_RETURN_CODE_SUCCESS;
  case QRMID__V1__TASK_STATE__TASK_STATE_RUNNING:
    *status = QRMI_TASK_STATUS_RUNNING;
    return QRMI_RETURN_CODE_SUCCESS;
  case QRMID__V1__TASK_STATE__TASK_STATE_COMPLETED:
    *status = QRMI_TASK_STATUS_COMPLETED;
    return QRMI_RETURN_CODE_SUCCESS;
  case QRMID__V1__TASK_STATE__TASK_STATE_FAILED:
    *status = QRMI_TASK_STATUS_FAILED;
    return QRMI_RETURN_CODE_SUCCESS;
  case QRMID__V1__TASK_STATE__TASK_STATE_CANCELLED:
    *status = QRMI_TASK_STATUS_CANCELLED;
    return QRMI_RETURN_CODE_SUCCESS;
  default:
    return qrmi_fail(QRMI_RETURN_CODE_ERROR, "task_status(%s, task %s): the daemon answered an unknown state %d",
                     qrmi->id, task_id, (int)state);
  }
}

QrmiReturnCode qrmi_resource_task_usage(QrmiQuantumResource *qrmi, const char *task_id, char **usage_json_out)
{
  if (qrmi == NULL || task_id == NULL || usage_json_out == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_task_usage: a NULL argument");
  *usage_json_out = NULL;
  return qrmi_fail(QRMI_RETURN_CODE_UNSUPPORTED_FUNCTION_ERROR,
                   "task_usage(%s, task %s): qrmid reports usage with `qrmid usage`, not per task through QRMI",
                   qrmi->id, task_id);
}

QrmiReturnCode qrmi_resource_task_result(QrmiQuantumResource *qrmi, const char *task_id, char **outp)
{
  if (qrmi == NULL || task_id == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_task_result: a NULL argument");
  Qrmid__V1__GetTaskResultRequest req = QRMID__V1__GET_TASK_RESULT_REQUEST__INIT;
  req.task_id = (char *)task_id;
  qrmid_stream *stream = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  if (qrmid_v1_quantum_resources_get_task_result_open(qrmi->client, &req, QRMI_CALL_TIMEOUT_MS, &stream, &err) !=
      GRPC_STATUS_OK)
    return task_call_failed(qrmi, "task_result", task_id, &err);
  char *data = NULL;
  size_t size = 0;
  Qrmid__V1__ResultChunk *chunk = NULL;
  grpc_status_code status;
  while ((status = qrmid_v1_quantum_resources_get_task_result_next(stream, &chunk, &err)) == GRPC_STATUS_OK &&
         chunk != NULL) {
    char *grown = realloc(data, size + chunk->data.len + 1);
    if (grown == NULL) {
      qrmid__v1__result_chunk__free_unpacked(chunk, NULL);
      qrmid_v1_quantum_resources_get_task_result_close(stream);
      free(data);
      return qrmi_fail(QRMI_RETURN_CODE_ERROR, "task_result(%s, task %s): out of memory", qrmi->id, task_id);
    }
    data = grown;
    if (chunk->data.len > 0)
      memcpy(data + size, chunk->data.data, chunk->data.len);
    size += chunk->data.len;
    qrmid__v1__result_chunk__free_unpacked(chunk, NULL);
  }
  qrmid_v1_quantum_resources_get_task_result_close(stream);
  if (status != GRPC_STATUS_OK) {
    free(data);
    return task_call_failed(qrmi, "task_result", task_id, &err);
  }
  if (data == NULL && (data = malloc(1)) == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
  data[size] = '\0';
  *outp = data;
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_resource_task_logs(QrmiQuantumResource *qrmi, const char *task_id, char **outp)
{
  if (qrmi == NULL || task_id == NULL || outp == NULL)
    return qrmi_fail(QRMI_RETURN_CODE_NULL_POINTER_ERROR, "qrmi_resource_task_logs: a NULL argument");
  Qrmid__V1__GetTaskLogsRequest req = QRMID__V1__GET_TASK_LOGS_REQUEST__INIT;
  req.task_id = (char *)task_id;
  Qrmid__V1__TaskLogs *logs = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  if (qrmid_v1_quantum_resources_get_task_logs(qrmi->client, &req, &logs, QRMI_CALL_TIMEOUT_MS, &err) !=
      GRPC_STATUS_OK)
    return task_call_failed(qrmi, "task_logs", task_id, &err);
  *outp = qrmi_strdup(logs->text);
  qrmid__v1__task_logs__free_unpacked(logs, NULL);
  return *outp != NULL ? QRMI_RETURN_CODE_SUCCESS : QRMI_RETURN_CODE_ERROR;
}
