/*
 * Authenticates as $QRMID_AUTH says (qrmid_client_auth_from_env), then makes three calls against the
 * daemon at argv[1]: ListResources twice (each call must carry its own MUNGE credential, as the daemon
 * refuses a replay) and one server stream (GetTaskResult of an unknown task, so its status is NOT_FOUND
 * once authenticated). Prints one "name STATUS message" line per step; exits 0.
 */
#include <stdio.h>

#include "qrmid/v1/quantum_resources.qrmid-c.h"

static void line(const char *name, grpc_status_code code, const qrmid_error *err)
{
  printf("%s %s %s\n", name, qrmid_status_name(code),
         code != GRPC_STATUS_OK && err->message != NULL ? err->message : "");
}

int main(int argc, char **argv)
{
  if (argc != 2) {
    fprintf(stderr, "usage: %s ADDRESS\n", argv[0]);
    return 2;
  }
  qrmid_client *client = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  grpc_status_code code = qrmid_client_new(argv[1], NULL, &client, &err);
  if (code == GRPC_STATUS_OK)
    code = qrmid_client_auth_from_env(client, &err);
  line("auth", code, &err);
  if (code != GRPC_STATUS_OK) {
    qrmid_client_free(client);
    qrmid_error_clear(&err);
    return 0;
  }
  for (int i = 0; i < 2; i++) {
    Qrmid__V1__ListResourcesRequest request = QRMID__V1__LIST_RESOURCES_REQUEST__INIT;
    Qrmid__V1__ListResourcesResponse *response = NULL;
    code = qrmid_v1_quantum_resources_list_resources(client, &request, &response, 10000, &err);
    line("list", code, &err);
    if (response != NULL)
      qrmid__v1__list_resources_response__free_unpacked(response, NULL);
  }
  Qrmid__V1__GetTaskResultRequest request = QRMID__V1__GET_TASK_RESULT_REQUEST__INIT;
  request.task_id = (char *)"no-such-task";
  qrmid_stream *stream = NULL;
  code = qrmid_v1_quantum_resources_get_task_result_open(client, &request, 10000, &stream, &err);
  if (code == GRPC_STATUS_OK) {
    Qrmid__V1__ResultChunk *chunk = NULL;
    code = qrmid_v1_quantum_resources_get_task_result_next(stream, &chunk, &err);
    if (chunk != NULL)
      qrmid__v1__result_chunk__free_unpacked(chunk, NULL);
  }
  line("stream", code, &err);
  qrmid_v1_quantum_resources_get_task_result_close(stream);
  qrmid_client_free(client);
  qrmid_error_clear(&err);
  return 0;
}
