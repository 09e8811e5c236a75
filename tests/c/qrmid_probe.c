/*
 * Exercises the C stubs' calling convention against the scripted server in
 * test_c_probe.py: metadata, unary and streaming calls, errors in the middle
 * of a stream, deadlines, undecodable responses, bad arguments, cancelling a
 * stream early, and TLS. Prints one line per check: "name: STATUS[: detail]".
 *
 *   qrmid_probe TARGET [ROOT_CERTS_PEM_FILE [TLS_SERVER_NAME]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qrmid/v1/quantum_resources.qrmid-c.h>

static void line(const char *name, grpc_status_code code, const qrmid_error *err, const char *detail)
{
  printf("%s: %s", name, qrmid_status_name(code));
  if (code != GRPC_STATUS_OK && err->message != NULL)
    printf(": %s", err->message);
  if (detail != NULL)
    printf(" [%s]", detail);
  printf("\n");
}

static char *read_file(const char *path)
{
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  if (buf != NULL) {
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
  }
  fclose(f);
  return buf;
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    fprintf(stderr, "usage: %s TARGET [ROOT_CERTS_PEM_FILE [TLS_SERVER_NAME]]\n", argv[0]);
    return 2;
  }
  qrmid_client_options options = QRMID_CLIENT_OPTIONS_INIT;
  char *roots = NULL;
  if (argc > 2) {
    roots = read_file(argv[2]);
    if (roots == NULL) {
      perror(argv[2]);
      return 2;
    }
    options.use_tls = 1;
    options.tls_root_certs_pem = roots;
    options.tls_server_name = argc > 3 ? argv[3] : NULL;
  }
  qrmid_error err = QRMID_ERROR_INIT;
  qrmid_client *client = NULL;
  grpc_status_code code = qrmid_client_new(argv[1], &options, &client, &err);
  line("client", code, &err, NULL);
  if (code != GRPC_STATUS_OK) {
    free(roots);
    return 1;
  }

  /* Unary, without and then with the metadata the server wants. */
  Qrmid__V1__ListResourcesRequest list_req = QRMID__V1__LIST_RESOURCES_REQUEST__INIT;
  Qrmid__V1__ListResourcesResponse *list = NULL;
  code = qrmid_v1_quantum_resources_list_resources(client, &list_req, &list, 5000, &err);
  line("list-noauth", code, &err, NULL);
  if (list != NULL)
    qrmid__v1__list_resources_response__free_unpacked(list, NULL);

  code = qrmid_client_add_metadata(client, "Bad Key", "x", &err);
  line("bad-metadata", code, &err, NULL);
  code = qrmid_client_add_metadata(client, "authorization", "Bearer s3cret", &err);
  line("add-metadata", code, &err, NULL);

  code = qrmid_v1_quantum_resources_list_resources(client, &list_req, &list, 5000, &err);
  line("list", code, &err, code == GRPC_STATUS_OK && list->n_resources == 1 ? list->resources[0]->name : NULL);
  if (list != NULL)
    qrmid__v1__list_resources_response__free_unpacked(list, NULL);

  /* A whole stream. */
  Qrmid__V1__WatchTaskRequest watch_req = QRMID__V1__WATCH_TASK_REQUEST__INIT;
  watch_req.task_id = "t1";
  qrmid_stream *stream = NULL;
  code = qrmid_v1_quantum_resources_watch_task_open(client, &watch_req, 5000, &stream, &err);
  char states[64] = "";
  Qrmid__V1__Task *task = NULL;
  while (code == GRPC_STATUS_OK &&
         (code = qrmid_v1_quantum_resources_watch_task_next(stream, &task, &err)) == GRPC_STATUS_OK && task != NULL) {
    char one[16];
    snprintf(one, sizeof one, "%s%d", states[0] ? "," : "", (int)task->state);
    strncat(states, one, sizeof states - strlen(states) - 1);
    qrmid__v1__task__free_unpacked(task, NULL);
  }
  line("watch", code, &err, states);
  code = qrmid_v1_quantum_resources_watch_task_next(stream, &task, &err);
  line("watch-after-end", code, &err, task == NULL ? "no message" : "message!");
  qrmid_v1_quantum_resources_watch_task_close(stream);

  /* A stream that fails after one message; the error repeats on next(). */
  Qrmid__V1__GetTaskResultRequest result_req = QRMID__V1__GET_TASK_RESULT_REQUEST__INIT;
  result_req.task_id = "t1";
  code = qrmid_v1_quantum_resources_get_task_result_open(client, &result_req, 5000, &stream, &err);
  Qrmid__V1__ResultChunk *chunk = NULL;
  char data[64] = "";
  while (code == GRPC_STATUS_OK &&
         (code = qrmid_v1_quantum_resources_get_task_result_next(stream, &chunk, &err)) == GRPC_STATUS_OK &&
         chunk != NULL) {
    size_t room = sizeof data - strlen(data) - 1;
    strncat(data, (const char *)chunk->data.data, chunk->data.len < room ? chunk->data.len : room);
    qrmid__v1__result_chunk__free_unpacked(chunk, NULL);
  }
  line("result", code, &err, data);
  code = qrmid_v1_quantum_resources_get_task_result_next(stream, &chunk, &err);
  line("result-again", code, &err, NULL);
  qrmid_v1_quantum_resources_get_task_result_close(stream);

  /* Closing a stream before its end cancels it. */
  code = qrmid_v1_quantum_resources_watch_task_open(client, &watch_req, 5000, &stream, &err);
  if (code == GRPC_STATUS_OK)
    code = qrmid_v1_quantum_resources_watch_task_next(stream, &task, &err);
  line("early-close", code, &err, task != NULL ? "got one" : NULL);
  if (task != NULL)
    qrmid__v1__task__free_unpacked(task, NULL);
  qrmid_v1_quantum_resources_watch_task_close(stream);

  /* Deadline. */
  Qrmid__V1__GetTaskRequest get_req = QRMID__V1__GET_TASK_REQUEST__INIT;
  get_req.task_id = "slow";
  code = qrmid_v1_quantum_resources_get_task(client, &get_req, &task, 300, &err);
  line("deadline", code, &err, NULL);

  /* A response that is not a Task. */
  Qrmid__V1__StopTaskRequest stop_req = QRMID__V1__STOP_TASK_REQUEST__INIT;
  stop_req.task_id = "t1";
  code = qrmid_v1_quantum_resources_stop_task(client, &stop_req, &task, 5000, &err);
  line("undecodable", code, &err, NULL);

  /* Bad arguments are caught before anything is sent. */
  code = qrmid_v1_quantum_resources_get_task(client, (const Qrmid__V1__GetTaskRequest *)&stop_req, &task, 5000, &err);
  line("wrong-type", code, &err, NULL);

  /* A NULL proto3 string is sent as "" (protobuf-c skips it); this server
   * does not implement GetTaskLogs. */
  Qrmid__V1__GetTaskLogsRequest logs_req = QRMID__V1__GET_TASK_LOGS_REQUEST__INIT;
  logs_req.task_id = NULL;
  Qrmid__V1__TaskLogs *logs = NULL;
  code = qrmid_v1_quantum_resources_get_task_logs(client, &logs_req, &logs, 5000, &err);
  line("unimplemented", code, &err, logs == NULL ? "no response" : "response!");

  qrmid_error_clear(&err);
  qrmid_client_free(client);
  free(roots);
  return 0;
}
