/*
 * One client over a list of members, calling on demand so a test can stop members between calls. Reads
 * commands from stdin, one a line, and prints one line per command:
 *
 *   list            "list: OK <resource names>" or "list: STATUS: message"
 *   start RESOURCE  queues a Sampler task with the input given as argv[2] and no request id of its own:
 *                   "start: OK <task id> <client_request_id> <members tried>"
 *   watch TASK      "watch: OK <state>..." (every state the stream delivered)
 *
 *   qrmid_failover_probe ADDRESS SAMPLER_INPUT_JSON
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qrmid/v1/quantum_resources.qrmid-c.h>

static void failed(const char *what, grpc_status_code code, const qrmid_error *err)
{
  printf("%s: %s: %s\n", what, qrmid_status_name(code), err->message != NULL ? err->message : "");
}

static void list(qrmid_client *client, qrmid_error *err)
{
  Qrmid__V1__ListResourcesRequest request = QRMID__V1__LIST_RESOURCES_REQUEST__INIT;
  Qrmid__V1__ListResourcesResponse *response = NULL;
  grpc_status_code code = qrmid_v1_quantum_resources_list_resources(client, &request, &response, 30000, err);
  if (code != GRPC_STATUS_OK) {
    failed("list", code, err);
    return;
  }
  printf("list: OK");
  for (size_t i = 0; i < response->n_resources; i++)
    printf(" %s", response->resources[i]->name);
  printf("\n");
  qrmid__v1__list_resources_response__free_unpacked(response, NULL);
}

static void start(qrmid_client *client, const char *resource, const char *input, qrmid_error *err)
{
  Qrmid__V1__QiskitPrimitive primitive = QRMID__V1__QISKIT_PRIMITIVE__INIT;
  primitive.program_id = (char *)"sampler";
  primitive.input = (char *)input;
  Qrmid__V1__Payload payload = QRMID__V1__PAYLOAD__INIT;
  payload.kind_case = QRMID__V1__PAYLOAD__KIND_QISKIT_PRIMITIVE;
  payload.qiskit_primitive = &primitive;
  Qrmid__V1__StartTaskRequest request = QRMID__V1__START_TASK_REQUEST__INIT;
  request.resource = (char *)resource;
  request.payload = &payload;
  Qrmid__V1__Task *task = NULL;
  grpc_status_code code = qrmid_v1_quantum_resources_start_task(client, &request, &task, 30000, err);
  if (code != GRPC_STATUS_OK) {
    failed("start", code, err);
    return;
  }
  printf("start: OK %s %s %zu\n", task->id, task->client_request_id, qrmid_client_last_attempts(client));
  qrmid__v1__task__free_unpacked(task, NULL);
}

static void watch(qrmid_client *client, const char *task_id, qrmid_error *err)
{
  Qrmid__V1__WatchTaskRequest request = QRMID__V1__WATCH_TASK_REQUEST__INIT;
  request.task_id = (char *)task_id;
  qrmid_stream *stream = NULL;
  grpc_status_code code = qrmid_v1_quantum_resources_watch_task_open(client, &request, 60000, &stream, err);
  if (code != GRPC_STATUS_OK) {
    failed("watch", code, err);
    return;
  }
  char states[512] = "";
  for (;;) {
    Qrmid__V1__Task *task = NULL;
    code = qrmid_v1_quantum_resources_watch_task_next(stream, &task, err);
    if (code != GRPC_STATUS_OK || task == NULL)
      break;
    size_t used = strlen(states);
    snprintf(states + used, sizeof states - used, " %d", (int)task->state);
    qrmid__v1__task__free_unpacked(task, NULL);
  }
  qrmid_v1_quantum_resources_watch_task_close(stream);
  if (code != GRPC_STATUS_OK)
    failed("watch", code, err);
  else
    printf("watch: OK%s\n", states);
}

int main(int argc, char **argv)
{
  if (argc != 3) {
    fprintf(stderr, "usage: %s ADDRESS SAMPLER_INPUT_JSON\n", argv[0]);
    return 2;
  }
  qrmid_client *client = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  if (qrmid_client_new(argv[1], NULL, &client, &err) != GRPC_STATUS_OK) {
    failed("new", err.code, &err);
    qrmid_error_clear(&err);
    return 1;
  }
  printf("members: %zu\n", qrmid_client_member_count(client));
  fflush(stdout);
  char command[512];
  while (fgets(command, sizeof command, stdin) != NULL) {
    command[strcspn(command, "\n")] = '\0';
    if (strcmp(command, "list") == 0)
      list(client, &err);
    else if (strncmp(command, "start ", 6) == 0)
      start(client, command + 6, argv[2], &err);
    else if (strncmp(command, "watch ", 6) == 0)
      watch(client, command + 6, &err);
    else
      printf("unknown command: %s\n", command);
    fflush(stdout);
  }
  qrmid_error_clear(&err);
  qrmid_client_free(client);
  return 0;
}
