/*
 * qrmid C client: running a task in one call.
 *
 * qrmid_run_task() starts a task and follows it to its end over one RunTask
 * stream (the generated qrmid_v1_quantum_resources_run_task_* wrappers): each
 * state as it comes, then a completed task's result, gathered. It is what
 * StartTask, WatchTask and GetTaskResult do in three calls.
 *
 * Calling convention as in qrmid_c.h: a grpc_status_code, `error` filled on
 * failure, timeout_ms for the whole run (QRMID_C_NO_DEADLINE: none).
 */
#ifndef QRMID_RUN_H
#define QRMID_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "qrmid/v1/quantum_resources.qrmid-c.h"
#include "qrmid_c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What qrmid_run_task() brings back. Start it as QRMID_RUN_RESULT_INIT; free
 * it with qrmid_run_result_clear(). */
typedef struct qrmid_run_result {
  /* The task's last state: terminal (COMPLETED, FAILED or CANCELLED, its
   * `reason` saying why) after a run that returned GRPC_STATUS_OK; the latest
   * state seen, or NULL, after one that failed. */
  Qrmid__V1__Task *task;
  /* A COMPLETED task's result: its media type (e.g. "application/json"), its
   * bytes, NUL-terminated for convenience, and its size; NULL and 0 for a
   * task that did not complete. */
  char *content_type;
  uint8_t *data;
  size_t size;
} qrmid_run_result;

#define QRMID_RUN_RESULT_INIT { NULL, NULL, NULL, 0 }

/* Frees what a run brought back and resets the struct to QRMID_RUN_RESULT_INIT. */
void qrmid_run_result_clear(qrmid_run_result *result);

/* Called with each state of the task as it streams in: first the task as
 * it was queued (its id known from then on), then each later state. The
 * task is valid only during the call. */
typedef void (*qrmid_task_callback)(const Qrmid__V1__Task *task, void *arg);

/* Runs `request` (StartTask's request: resource, payload, lease token,
 * priority, client_request_id) to its end in one RunTask call.
 * GRPC_STATUS_OK once the task has ended, whether it completed or not: check
 * result->task->state. Otherwise the request was refused (StartTask's codes:
 * INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, PERMISSION_DENIED, ...)
 * or no member could be reached.
 *
 * A request without a client_request_id is sent with a fresh random one, the
 * same on every attempt: when the member streaming the task goes away
 * (UNAVAILABLE), the call is made again on the next member, which finds the
 * task the first one made (each member at most once without progress); no
 * state is passed to `on_state` twice. Giving up (the deadline, or the
 * process ending) leaves the task running. `on_state` may be NULL. */
grpc_status_code qrmid_run_task(qrmid_client *client, const Qrmid__V1__StartTaskRequest *request,
                                qrmid_task_callback on_state, void *arg, int64_t timeout_ms,
                                qrmid_run_result *result, qrmid_error *error);

#ifdef __cplusplus
}
#endif

#endif /* QRMID_RUN_H */
