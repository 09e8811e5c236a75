/*
 * Runs one task with qrmid_run_task() and prints what it saw, for the tests:
 *
 *   qrmid_run_probe ADDRESS RESOURCE [REQUEST_ID]
 *
 * The task is a Pulser payload of 5 runs (what a noop resource takes). Prints
 * "state ID STATE" for each state passed to the callback (flushed at once),
 * then "ended STATE REASON" and, for a completed task, "result CONTENT_TYPE
 * SIZE DATA"; or "error CODE MESSAGE" and exits 1.
 */
#include <stdio.h>

#include "qrmid/v1/quantum_resources.qrmid-c.h"
#include "qrmid_run.h"

static const char *state_name(int state)
{
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&qrmid__v1__task_state__descriptor, state);
  return v != NULL ? v->name : "?";
}

static void print_state(const Qrmid__V1__Task *task, void *arg)
{
  int *count = arg;
  (*count)++;
  printf("state %s %s\n", task->id, state_name((int)task->state));
  fflush(stdout);
}

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: %s ADDRESS RESOURCE [REQUEST_ID]\n", argv[0]);
    return 2;
  }
  qrmid_error err = QRMID_ERROR_INIT;
  qrmid_client *client = NULL;
  if (qrmid_client_new(argv[1], NULL, &client, &err) != GRPC_STATUS_OK) {
    printf("error %s %s\n", qrmid_status_name(err.code), err.message);
    qrmid_error_clear(&err);
    return 1;
  }
  Qrmid__V1__PulserSequence sequence = QRMID__V1__PULSER_SEQUENCE__INIT;
  sequence.sequence = "{\"version\": \"1\"}";
  sequence.job_runs = 5;
  Qrmid__V1__Payload payload = QRMID__V1__PAYLOAD__INIT;
  payload.kind_case = QRMID__V1__PAYLOAD__KIND_PULSER_SEQUENCE;
  payload.pulser_sequence = &sequence;
  Qrmid__V1__StartTaskRequest request = QRMID__V1__START_TASK_REQUEST__INIT;
  request.resource = argv[2];
  request.payload = &payload;
  if (argc > 3)
    request.client_request_id = argv[3];

  int states = 0;
  qrmid_run_result run = QRMID_RUN_RESULT_INIT;
  int rc = 0;
  if (qrmid_run_task(client, &request, print_state, &states, 120000, &run, &err) != GRPC_STATUS_OK) {
    printf("error %s %s\n", qrmid_status_name(err.code), err.message);
    rc = 1;
  } else {
    printf("ended %s %s\n", state_name((int)run.task->state), run.task->reason);
    if (run.data != NULL)
      printf("result %s %zu %s\n", run.content_type, run.size, (const char *)run.data);
  }
  qrmid_run_result_clear(&run);
  qrmid_error_clear(&err);
  qrmid_client_free(client);
  return rc;
}
