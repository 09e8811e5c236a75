/*
 * One QRMI handle shared by several POSIX threads, as an OpenMP or
 * MPI+threads code shares it: each thread starts tasks and polls their
 * status on the same handle, then reads their results.
 *
 *   qrmi_threads RESOURCE THREADS TASKS_PER_THREAD SAMPLER_INPUT_FILE [acquire]
 *
 * The daemon comes from $QRMID_ADDRESS. With "acquire" the main thread takes
 * a lease on the handle first (the threads' tasks run under it) and releases
 * it at the end; otherwise the tasks run under the job's lease from the
 * environment. Prints "started=N", "completed=N", "distinct_ids=N" and
 * "results=N"; exits 1 if any call failed.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qrmi.h"

typedef struct {
  QrmiQuantumResource *qrmi;
  char *input;
  int tasks;
  char **ids;  /* this thread's task ids */
  int started; /* how many tasks it started */
  int completed;
  int results;
  int errors;
} worker;

static void report(const char *what, QrmiReturnCode rc)
{
  char *message = qrmi_get_last_error();
  fprintf(stderr, "qrmi_threads: %s failed (%d): %s\n", what, (int)rc, message != NULL ? message : "");
  if (message != NULL)
    qrmi_string_free(message);
}

static void *work(void *arg)
{
  worker *w = arg;
  QrmiPayload payload;
  payload.tag = QRMI_PAYLOAD_QISKIT_PRIMITIVE;
  payload.QISKIT_PRIMITIVE.input = w->input;
  payload.QISKIT_PRIMITIVE.program_id = "sampler";
  for (int i = 0; i < w->tasks; i++) {
    QrmiReturnCode rc = qrmi_resource_task_start(w->qrmi, &payload, &w->ids[i]);
    if (rc != QRMI_RETURN_CODE_SUCCESS) {
      report("qrmi_resource_task_start", rc);
      w->errors++;
      continue;
    }
    w->started++;
  }
  for (int i = 0; i < w->tasks; i++) {
    if (w->ids[i] == NULL)
      continue;
    QrmiTaskStatus status;
    QrmiReturnCode rc;
    while ((rc = qrmi_resource_task_status(w->qrmi, w->ids[i], &status)) == QRMI_RETURN_CODE_SUCCESS &&
           (status == QRMI_TASK_STATUS_QUEUED || status == QRMI_TASK_STATUS_RUNNING)) {
      struct timespec pause = {0, 20 * 1000 * 1000};
      nanosleep(&pause, NULL);
    }
    if (rc != QRMI_RETURN_CODE_SUCCESS) {
      report("qrmi_resource_task_status", rc);
      w->errors++;
      continue;
    }
    if (status == QRMI_TASK_STATUS_COMPLETED)
      w->completed++;
    char *result = NULL;
    if ((rc = qrmi_resource_task_result(w->qrmi, w->ids[i], &result)) != QRMI_RETURN_CODE_SUCCESS) {
      report("qrmi_resource_task_result", rc);
      w->errors++;
      continue;
    }
    if (strstr(result, "SamplerPubResult") != NULL)
      w->results++;
    qrmi_string_free(result);
  }
  return NULL;
}

static int compare(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
  if (argc < 5) {
    fprintf(stderr, "usage: %s RESOURCE THREADS TASKS_PER_THREAD SAMPLER_INPUT_FILE [acquire]\n", argv[0]);
    return 2;
  }
  int threads = atoi(argv[2]), tasks = atoi(argv[3]);
  FILE *f = fopen(argv[4], "rb");
  char input[65536];
  size_t n = f != NULL ? fread(input, 1, sizeof input - 1, f) : 0;
  if (f != NULL)
    fclose(f);
  input[n] = '\0';
  if (threads < 1 || tasks < 1 || n == 0) {
    fprintf(stderr, "qrmi_threads: bad arguments\n");
    return 2;
  }
  QrmiQuantumResource *qrmi = qrmi_resource_new(argv[1], QRMI_RESOURCE_TYPE_LOCAL_QISKIT);
  if (qrmi == NULL) {
    report("qrmi_resource_new", QRMI_RETURN_CODE_ERROR);
    return 1;
  }
  char *token = NULL;
  int errors = 0;
  if (argc > 5 && strcmp(argv[5], "acquire") == 0) {
    QrmiReturnCode rc = qrmi_resource_acquire(qrmi, &token);
    if (rc != QRMI_RETURN_CODE_SUCCESS) {
      report("qrmi_resource_acquire", rc);
      qrmi_resource_free(qrmi);
      return 1;
    }
  }
  pthread_t *ids = calloc((size_t)threads, sizeof *ids);
  worker *workers = calloc((size_t)threads, sizeof *workers);
  char **all = calloc((size_t)threads * (size_t)tasks, sizeof *all);
  for (int t = 0; t < threads; t++) {
    workers[t] = (worker){qrmi, input, tasks, all + (size_t)t * (size_t)tasks, 0, 0, 0, 0};
    if (pthread_create(&ids[t], NULL, work, &workers[t]) != 0) {
      fprintf(stderr, "qrmi_threads: pthread_create failed\n");
      return 1;
    }
  }
  int started = 0, completed = 0, results = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(ids[t], NULL);
    started += workers[t].started;
    completed += workers[t].completed;
    results += workers[t].results;
    errors += workers[t].errors;
  }
  size_t total = (size_t)threads * (size_t)tasks, distinct = 0, have = 0;
  for (size_t i = 0; i < total; i++)
    if (all[i] != NULL)
      all[have++] = all[i];
  qsort(all, have, sizeof *all, compare);
  for (size_t i = 0; i < have; i++)
    if (i == 0 || strcmp(all[i], all[i - 1]) != 0)
      distinct++;
  printf("started=%d\ncompleted=%d\ndistinct_ids=%zu\nresults=%d\n", started, completed, distinct, results);
  for (size_t i = 0; i < have; i++)
    qrmi_string_free(all[i]);
  if (token != NULL) {
    QrmiReturnCode rc = qrmi_resource_release(qrmi, token);
    if (rc != QRMI_RETURN_CODE_SUCCESS) {
      report("qrmi_resource_release", rc);
      errors++;
    }
    qrmi_string_free(token);
  }
  free(all);
  free(workers);
  free(ids);
  qrmi_resource_free(qrmi);
  return errors == 0 ? 0 : 1;
}
