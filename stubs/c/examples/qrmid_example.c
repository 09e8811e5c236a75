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
 * Steps: list resources, acquire a lease on local-qiskit, run a Sampler task
 * under the lease in one RunTask call (qrmid_run_task: its states as they
 * come, then its result), print it, release the lease. Exits 1 with the gRPC
 * status and message on any error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qrmid/v1/quantum_resources.qrmid-c.h"
#include "qrmid_run.h"

#define RESOURCE "local-qiskit"
#define CALL_TIMEOUT_MS 30000     /* each unary call */
#define TASK_TIMEOUT_MS 600000    /* the whole run of the task, result included */

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

/* Prints each state of the task as it streams in. */
static void print_state(const Qrmid__V1__Task *task, void *arg)
{
  (void)arg;
  printf("task %s: %s\n", task->id, enum_name(&qrmid__v1__task_state__descriptor, (int)task->state));
}

/* Runs the task to its end in one RunTask call and prints its result; returns 0 when it COMPLETED. */
static int run_task(qrmid_client *client, const Qrmid__V1__StartTaskRequest *start, qrmid_error *err)
{
  qrmid_run_result run = QRMID_RUN_RESULT_INIT;
  int rc = -1;
  if (qrmid_run_task(client, start, print_state, NULL, TASK_TIMEOUT_MS, &run, err) != GRPC_STATUS_OK) {
    report("RunTask", err);
  } else if (run.task->state != QRMID__V1__TASK_STATE__TASK_STATE_COMPLETED) {
    fprintf(stderr, "qrmid_example: task %s ended %s: %s\n", run.task->id,
            enum_name(&qrmid__v1__task_state__descriptor, (int)run.task->state), run.task->reason);
  } else {
    printf("result of task %s (%s, %zu bytes in one RunTask call):\n%s\n", run.task->id,
           run.content_type != NULL ? run.content_type : "unknown type", run.size,
           run.data != NULL ? (const char *)run.data : "");
    rc = 0;
  }
  qrmid_run_result_clear(&run);
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
  if (run_task(client, &start, &err) != 0)
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
  qrmid_error_clear(&err);
  qrmid_client_free(client);
  return rc;
}
