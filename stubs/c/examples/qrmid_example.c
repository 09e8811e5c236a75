/*
 * qrmid C example: runs a Bell-state Sampler job on the local Qiskit
 * simulator through a qrmid daemon.
 *
 *   qrmid_example ADDRESS [KEY=VALUE ...]
 *
 * ADDRESS is a gRPC target such as unix:/run/qrmid/qrmid.sock; each
 * KEY=VALUE is sent as metadata with every call (e.g. authorization=...).
 * Authentication comes from the environment, as for the Python client:
 * QRMID_AUTH=munge (with QRMID_MUNGE_SOCKET, as a Slurm job with the
 * spank_qrmid plugin's auth=munge gets) or QRMID_AUTH=token with
 * QRMID_TOKEN_FILE; unset or none: no credential.
 *
 * Steps: list resources, acquire a lease on local-qiskit, start a Sampler
 * task under the lease, watch it until it ends, fetch its result (streamed
 * in chunks), print it, release the lease. Exits 1 with the gRPC status and
 * message on any error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qrmid/v1/quantum_resources.qrmid-c.h"

#define RESOURCE "local-qiskit"
#define CALL_TIMEOUT_MS 30000     /* each unary call */
#define TASK_TIMEOUT_MS 600000    /* the whole watch of the task */
#define RESULT_TIMEOUT_MS 120000  /* the whole result download */

static char sampler_input[] =
    "{\"pubs\":[[\"OPENQASM 3.0;\\ninclude \\\"stdgates.inc\\\";\\nbit[2] meas;\\nqubit[2] q;\\n"
    "h q[0];\\ncx q[0], q[1];\\nmeas[0] = measure q[0];\\nmeas[1] = measure q[1];\\n\", null, 256]],"
    "\"version\":2,\"shots\":256}";

/* Name of an enum value as written in the proto, e.g. "TASK_STATE_RUNNING". */
static const char *enum_name(const ProtobufCEnumDescriptor *type, int value)
{
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(type, value);
  return v != NULL ? v->name : "?";
}

static void report(const char *what, const qrmid_error *err)
{
  fprintf(stderr, "qrmid_example: %s failed: %s: %s\n", what, qrmid_status_name(err->code),
          err->message != NULL ? err->message : "");
}

static char *copy_string(const char *s)
{
  size_t n = strlen(s) + 1;
  char *out = malloc(n);
  if (out != NULL)
    memcpy(out, s, n);
  return out;
}

/* Prints every resource. */
static int list_resources(qrmid_client *client, qrmid_error *err)
{
  Qrmid__V1__ListResourcesRequest req = QRMID__V1__LIST_RESOURCES_REQUEST__INIT;
  Qrmid__V1__ListResourcesResponse *resp = NULL;
  if (qrmid_v1_quantum_resources_list_resources(client, &req, &resp, CALL_TIMEOUT_MS, err) != GRPC_STATUS_OK) {
    report("ListResources", err);
    return -1;
  }
  for (size_t i = 0; i < resp->n_resources; i++) {
    const Qrmid__V1__Resource *r = resp->resources[i];
    printf("resource %s (%s): %s, slots %u/%u free, %u queued\n", r->name, r->type,
           enum_name(&qrmid__v1__resource_status__descriptor, (int)r->status),
           r->capacity != NULL ? r->capacity->slots_free : 0,
           r->capacity != NULL ? r->capacity->slots_total : 0, r->queue_length);
  }
  qrmid__v1__list_resources_response__free_unpacked(resp, NULL);
  return 0;
}

/* Follows the task until it is terminal; returns 0 when it COMPLETED. */
static int watch_task(qrmid_client *client, const char *task_id, qrmid_error *err)
{
  Qrmid__V1__WatchTaskRequest req = QRMID__V1__WATCH_TASK_REQUEST__INIT;
  req.task_id = (char *)task_id;
  qrmid_stream *stream = NULL;
  if (qrmid_v1_quantum_resources_watch_task_open(client, &req, TASK_TIMEOUT_MS, &stream, err) != GRPC_STATUS_OK) {
    report("WatchTask", err);
    return -1;
  }
  Qrmid__V1__TaskState last = QRMID__V1__TASK_STATE__TASK_STATE_UNSPECIFIED;
  char *reason = NULL;
  Qrmid__V1__Task *task = NULL;
  grpc_status_code code;
  while ((code = qrmid_v1_quantum_resources_watch_task_next(stream, &task, err)) == GRPC_STATUS_OK &&
         task != NULL) {
    printf("task %s: %s\n", task->id, enum_name(&qrmid__v1__task_state__descriptor, (int)task->state));
    last = task->state;
    free(reason);
    reason = copy_string(task->reason);
    qrmid__v1__task__free_unpacked(task, NULL);
  }
  qrmid_v1_quantum_resources_watch_task_close(stream);
  int rc = 0;
  if (code != GRPC_STATUS_OK) {
    report("WatchTask", err);
    rc = -1;
  } else if (last != QRMID__V1__TASK_STATE__TASK_STATE_COMPLETED) {
    fprintf(stderr, "qrmid_example: task %s ended %s: %s\n", task_id,
            enum_name(&qrmid__v1__task_state__descriptor, (int)last), reason != NULL ? reason : "");
    rc = -1;
  }
  free(reason);
  return rc;
}

/* Downloads the result and prints it. */
static int print_result(qrmid_client *client, const char *task_id, qrmid_error *err)
{
  Qrmid__V1__GetTaskResultRequest req = QRMID__V1__GET_TASK_RESULT_REQUEST__INIT;
  req.task_id = (char *)task_id;
  qrmid_stream *stream = NULL;
  if (qrmid_v1_quantum_resources_get_task_result_open(client, &req, RESULT_TIMEOUT_MS, &stream, err) !=
      GRPC_STATUS_OK) {
    report("GetTaskResult", err);
    return -1;
  }
  unsigned char *data = NULL;
  size_t size = 0;
  size_t chunks = 0;
  char *content_type = NULL;
  int rc = 0;
  Qrmid__V1__ResultChunk *chunk = NULL;
  grpc_status_code code;
  while ((code = qrmid_v1_quantum_resources_get_task_result_next(stream, &chunk, err)) == GRPC_STATUS_OK &&
         chunk != NULL) {
    if (content_type == NULL && chunk->content_type[0] != '\0')
      content_type = copy_string(chunk->content_type);
    unsigned char *grown = realloc(data, size + chunk->data.len + 1);
    if (grown == NULL) {
      fprintf(stderr, "qrmid_example: out of memory\n");
      qrmid__v1__result_chunk__free_unpacked(chunk, NULL);
      rc = -1;
      break;
    }
    data = grown;
    if (chunk->data.len > 0)
      memcpy(data + size, chunk->data.data, chunk->data.len);
    size += chunk->data.len;
    data[size] = '\0';
    chunks++;
    qrmid__v1__result_chunk__free_unpacked(chunk, NULL);
  }
  qrmid_v1_quantum_resources_get_task_result_close(stream);
  if (rc == 0 && code != GRPC_STATUS_OK) {
    report("GetTaskResult", err);
    rc = -1;
  }
  if (rc == 0) {
    printf("result of task %s (%s, %zu bytes in %zu chunks):\n%s\n", task_id,
           content_type != NULL ? content_type : "unknown type", size, chunks,
           data != NULL ? (const char *)data : "");
  }
  free(content_type);
  free(data);
  return rc;
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    fprintf(stderr, "usage: %s ADDRESS [KEY=VALUE ...]\n  e.g. %s unix:/run/qrmid/qrmid.sock\n", argv[0],
            argv[0]);
    return 2;
  }
  int rc = 1;
  qrmid_error err = QRMID_ERROR_INIT;
  qrmid_client *client = NULL;
  Qrmid__V1__Lease *lease = NULL;
  Qrmid__V1__Task *task = NULL;

  if (qrmid_client_new(argv[1], NULL, &client, &err) != GRPC_STATUS_OK) {
    report("connecting", &err);
    goto out;
  }
  if (qrmid_client_auth_from_env(client, &err) != GRPC_STATUS_OK) {
    report("configuring authentication (QRMID_AUTH)", &err);
    goto out;
  }
  for (int i = 2; i < argc; i++) {
    char *eq = strchr(argv[i], '=');
    if (eq == NULL) {
      fprintf(stderr, "qrmid_example: metadata '%s' is not KEY=VALUE\n", argv[i]);
      goto out;
    }
    *eq = '\0';
    if (qrmid_client_add_metadata(client, argv[i], eq + 1, &err) != GRPC_STATUS_OK) {
      report("adding metadata", &err);
      goto out;
    }
  }

  if (list_resources(client, &err) != 0)
    goto out;

  Qrmid__V1__AcquireRequest acquire = QRMID__V1__ACQUIRE_REQUEST__INIT;
  acquire.resource = RESOURCE;
  if (qrmid_v1_quantum_resources_acquire(client, &acquire, &lease, CALL_TIMEOUT_MS, &err) != GRPC_STATUS_OK) {
    report("Acquire", &err);
    goto out;
  }
  printf("lease %s on %s\n", lease->id, lease->resource);

  Qrmid__V1__QiskitPrimitive primitive = QRMID__V1__QISKIT_PRIMITIVE__INIT;
  primitive.program_id = "sampler";
  primitive.input = sampler_input;
  Qrmid__V1__Payload payload = QRMID__V1__PAYLOAD__INIT;
  payload.kind_case = QRMID__V1__PAYLOAD__KIND_QISKIT_PRIMITIVE;
  payload.qiskit_primitive = &primitive;
  Qrmid__V1__StartTaskRequest start = QRMID__V1__START_TASK_REQUEST__INIT;
  start.resource = RESOURCE;
  start.payload = &payload;
  start.lease_token = lease->token;
  if (qrmid_v1_quantum_resources_start_task(client, &start, &task, CALL_TIMEOUT_MS, &err) != GRPC_STATUS_OK) {
    report("StartTask", &err);
    goto out;
  }
  printf("started task %s\n", task->id);

  if (watch_task(client, task->id, &err) != 0)
    goto out;
  if (print_result(client, task->id, &err) != 0)
    goto out;
  rc = 0;

out:
  if (lease != NULL) {
    Qrmid__V1__ReleaseRequest release = QRMID__V1__RELEASE_REQUEST__INIT;
    release.token = lease->token;
    Qrmid__V1__ReleaseResponse *released = NULL;
    if (qrmid_v1_quantum_resources_release(client, &release, &released, CALL_TIMEOUT_MS, &err) != GRPC_STATUS_OK) {
      report("Release", &err);
      rc = 1;
    } else {
      printf("released lease %s (%u task(s) cancelled)\n", lease->id, released->cancelled_tasks);
      qrmid__v1__release_response__free_unpacked(released, NULL);
    }
    qrmid__v1__lease__free_unpacked(lease, NULL);
  }
  if (task != NULL)
    qrmid__v1__task__free_unpacked(task, NULL);
  qrmid_error_clear(&err);
  qrmid_client_free(client);
  return rc;
}
