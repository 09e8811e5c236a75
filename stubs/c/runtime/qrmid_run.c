/*
 * qrmid C client: running a task in one RunTask call (see qrmid_run.h).
 */
#include "qrmid_run.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_ID_HEX 32

void qrmid_run_result_clear(qrmid_run_result *result)
{
  if (result == NULL)
    return;
  if (result->task != NULL)
    qrmid__v1__task__free_unpacked(result->task, NULL);
  free(result->content_type);
  free(result->data);
  *result = (qrmid_run_result)QRMID_RUN_RESULT_INIT;
}

/* Records `code` with a copy of `message`; returns `code`. */
static grpc_status_code fail(qrmid_error *error, grpc_status_code code, const char *message)
{
  if (error != NULL) {
    qrmid_error_clear(error);
    error->code = code;
    error->message = strdup(message);
  }
  return code;
}

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A fresh random request id (32 hex digits) in `id`; 0 on success. */
static int random_id(char id[REQUEST_ID_HEX + 1])
{
  unsigned char random[REQUEST_ID_HEX / 2];
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  ssize_t got = fd >= 0 ? read(fd, random, sizeof random) : -1;
  if (fd >= 0)
    close(fd);
  if (got != (ssize_t)sizeof random)
    return -1;
  for (size_t i = 0; i < sizeof random; i++)
    snprintf(id + 2 * i, 3, "%02x", random[i]);
  return 0;
}

/* Appends a result chunk to `result`; 0 on success, -1 when out of memory. */
static int add_chunk(qrmid_run_result *result, const Qrmid__V1__ResultChunk *chunk)
{
  if (result->content_type == NULL && chunk->content_type[0] != '\0' &&
      (result->content_type = strdup(chunk->content_type)) == NULL)
    return -1;
  uint8_t *grown = realloc(result->data, result->size + chunk->data.len + 1);
  if (grown == NULL)
    return -1;
  result->data = grown;
  if (chunk->data.len > 0)
    memcpy(grown + result->size, chunk->data.data, chunk->data.len);
  result->size += chunk->data.len;
  grown[result->size] = '\0';
  return 0;
}

/* Drops a result gathered from a stream that broke off: the next one sends it from the start. */
static void drop_result(qrmid_run_result *result)
{
  free(result->content_type);
  free(result->data);
  result->content_type = NULL;
  result->data = NULL;
  result->size = 0;
}

/* Takes a streamed task state into `result` unless it was passed on already (a state behind the last one, or
 * the last one again after a resumed stream); calls `on_state` with a new one. */
static void take_state(qrmid_run_result *result, Qrmid__V1__RunTaskResponse *message, int *resumed,
                       qrmid_task_callback on_state, void *arg)
{
  Qrmid__V1__Task *task = message->task;
  if (result->task != NULL &&
      (task->state < result->task->state || (*resumed && task->state == result->task->state)))
    return;
  message->task = NULL; /* the result owns it now: freed apart from the message */
  message->update_case = QRMID__V1__RUN_TASK_RESPONSE__UPDATE__NOT_SET;
  if (result->task != NULL)
    qrmid__v1__task__free_unpacked(result->task, NULL);
  result->task = task;
  *resumed = 0;
  if (on_state != NULL)
    on_state(task, arg);
}

grpc_status_code qrmid_run_task(qrmid_client *client, const Qrmid__V1__StartTaskRequest *request,
                                qrmid_task_callback on_state, void *arg, int64_t timeout_ms,
                                qrmid_run_result *result, qrmid_error *error)
{
  if (client == NULL || request == NULL || result == NULL)
    return fail(error, GRPC_STATUS_INVALID_ARGUMENT, "qrmid_run_task: client, request and result are required");
  qrmid_run_result_clear(result);
  Qrmid__V1__StartTaskRequest sent = *request;
  char id[REQUEST_ID_HEX + 1];
  if (sent.client_request_id == NULL || sent.client_request_id[0] == '\0') {
    if (random_id(id) != 0)
      return fail(error, GRPC_STATUS_INTERNAL, "qrmid_run_task: no randomness for a request id (/dev/urandom)");
    sent.client_request_id = id; /* the same on every attempt: a retry finds the task */
  }
  int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
  size_t faults = 0; /* attempts in a row that brought nothing */
  int resumed = 0;
  for (;;) {
    int64_t left = QRMID_C_NO_DEADLINE;
    if (deadline != 0 && (left = deadline - now_ms()) <= 0)
      return fail(error, GRPC_STATUS_DEADLINE_EXCEEDED, "qrmid_run_task: the task did not end before the deadline");
    qrmid_stream *stream = NULL;
    grpc_status_code code = qrmid_v1_quantum_resources_run_task_open(client, &sent, left, &stream, error);
    if (code != GRPC_STATUS_OK)
      return code;
    Qrmid__V1__RunTaskResponse *message = NULL;
    while ((code = qrmid_v1_quantum_resources_run_task_next(stream, &message, error)) == GRPC_STATUS_OK &&
           message != NULL) {
      faults = 0;
      if (message->update_case == QRMID__V1__RUN_TASK_RESPONSE__UPDATE_TASK && message->task != NULL) {
        take_state(result, message, &resumed, on_state, arg);
      } else if (message->update_case == QRMID__V1__RUN_TASK_RESPONSE__UPDATE_RESULT_CHUNK &&
                 message->result_chunk != NULL && add_chunk(result, message->result_chunk) != 0) {
        qrmid__v1__run_task_response__free_unpacked(message, NULL);
        qrmid_v1_quantum_resources_run_task_close(stream);
        return fail(error, GRPC_STATUS_RESOURCE_EXHAUSTED, "qrmid_run_task: out of memory for the task's result");
      }
      qrmid__v1__run_task_response__free_unpacked(message, NULL);
    }
    qrmid_v1_quantum_resources_run_task_close(stream);
    int ended = result->task != NULL && result->task->state >= QRMID__V1__TASK_STATE__TASK_STATE_COMPLETED;
    if (code == GRPC_STATUS_OK && !ended)
      code = fail(error, GRPC_STATUS_UNAVAILABLE, "qrmid_run_task: the stream ended before the task did");
    if (code != GRPC_STATUS_UNAVAILABLE || result->task == NULL || ++faults > qrmid_client_member_count(client))
      return code; /* done, refused, or no member can go on with the task */
    drop_result(result);
    resumed = 1; /* the next member's stream starts over: skip what was passed on already */
  }
}
