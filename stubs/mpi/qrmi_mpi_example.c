/*
 * qrmi_mpi_example: the ranks of one MPI job each run Qiskit Sampler tasks on one quantum resource through QRMI's
 * C API (libqrmid-qrmi, served by qrmid), all under one lease, and rank 0 gathers every result.
 *
 *   mpirun -np 4 qrmi_mpi_example RESOURCE TYPE [TASKS_PER_RANK]
 *   srun --qpu=local-qiskit -n 2 qrmi_mpi_example           (RESOURCE and TYPE: the job's first resource)
 *
 * TYPE is the resource's qrmi_config.json type name (e.g. local-qiskit, ibm-quantum-system); in a job started with
 * --qpu, RESOURCE and TYPE default to the first of $QRMI_JOB_QPU_RESOURCES and $QRMI_JOB_QPU_TYPES.
 *
 * The lease: in a job started with --qpu, the Slurm plugin's, which every rank inherits in
 * $<RESOURCE>_QRMI_JOB_ACQUISITION_TOKEN. Otherwise rank 0 acquires one and broadcasts its token; the other ranks
 * put it in that variable before they open the resource, so their tasks run under it too; rank 0 releases it once
 * every rank is done.
 *
 * Rank r starts TASKS_PER_RANK (default 2) Bell-state samplers of 100 * (r + 1) shots, polls their status until
 * they end, reads each result and stops the task. Rank 0 gathers the ranks' reports (MPI_Gather of their lengths and
 * outcomes, MPI_Gatherv of the text) and prints, for each task in rank order, a line `rank R task ID STATE` and a
 * line with the result (the backend's JSON) or the reason it has none.
 * Exit status (every rank): 0 when every task completed, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L

#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qrmi.h"

#define BELL_INPUT                                                                                                  \
  "{\"pubs\": [[\"OPENQASM 3.0;\\ninclude \\\"stdgates.inc\\\";\\nbit[2] meas;\\nqubit[2] q;\\nh q[0];\\n"           \
  "cx q[0], q[1];\\nmeas[0] = measure q[0];\\nmeas[1] = measure q[1];\\n\", null, %d]], \"version\": 2}"

static const QrmiResourceType RESOURCE_TYPES[] = {
    QRMI_RESOURCE_TYPE_IBM_QUANTUM_SYSTEM, QRMI_RESOURCE_TYPE_QISKIT_RUNTIME_SERVICE,
    QRMI_RESOURCE_TYPE_IBM_QUANTUM_COMPUTE_SERVICE, QRMI_RESOURCE_TYPE_PASQAL_CLOUD,
    QRMI_RESOURCE_TYPE_PASQAL_LOCAL, QRMI_RESOURCE_TYPE_ALICE_BOB_FELIS, QRMI_RESOURCE_TYPE_IQM_SERVER,
    QRMI_RESOURCE_TYPE_OQTOPUS, QRMI_RESOURCE_TYPE_LOCAL_QISKIT, QRMI_RESOURCE_TYPE_LOCAL_PULSER,
};

/* A growing text buffer: a rank's report. */
typedef struct {
  char *text;
  size_t length, capacity;
} report;

static void append(report *r, const char *format, ...) {
  va_list args;
  va_start(args, format);
  int n = vsnprintf(NULL, 0, format, args);
  va_end(args);
  if (r->length + (size_t)n + 1 > r->capacity) {
    r->capacity = (r->length + (size_t)n + 1) * 2;
    r->text = realloc(r->text, r->capacity);
    if (r->text == NULL) {
      perror("qrmi_mpi_example");
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }
  va_start(args, format);
  vsnprintf(r->text + r->length, r->capacity - r->length, format, args);
  va_end(args);
  r->length += (size_t)n;
}

/* The library's message for the call that just failed (or a generic one), in a static buffer. */
static const char *last_error(QrmiReturnCode rc) {
  static char message[1024];
  char *text = qrmi_get_last_error();
  if (text != NULL) {
    snprintf(message, sizeof message, "%s", text);
    qrmi_string_free(text);
  } else {
    snprintf(message, sizeof message, "QRMI return code %d", (int)rc);
  }
  return message;
}

/* Item `index` (from 0) of the job list $QRMI_JOB_<suffix> (else $SLURM_JOB_<suffix>), malloc'd; NULL if none. */
static char *job_list_item(const char *suffix, int index) {
  char name[64];
  snprintf(name, sizeof name, "QRMI_JOB_%s", suffix);
  const char *list = getenv(name);
  if (list == NULL || *list == '\0') {
    snprintf(name, sizeof name, "SLURM_JOB_%s", suffix);
    list = getenv(name);
  }
  const char *delimiter = getenv("QRMI_LIST_DELIMITER");
  if (delimiter == NULL || *delimiter == '\0')
    delimiter = ",";
  if (list == NULL || *list == '\0')
    return NULL;
  for (int i = 0; i < index; i++) {
    const char *next = strstr(list, delimiter);
    if (next == NULL)
      return NULL;
    list = next + strlen(delimiter);
  }
  const char *end = strstr(list, delimiter);
  return strndup(list, end == NULL ? strlen(list) : (size_t)(end - list));
}

/* The QrmiResourceType whose qrmi_config.json name is `name`; -1 when none is. */
static int resource_type(const char *name) {
  for (size_t i = 0; i < sizeof RESOURCE_TYPES / sizeof RESOURCE_TYPES[0]; i++) {
    const char *type_name = qrmi_config_resource_type_to_str(RESOURCE_TYPES[i]);
    if (type_name != NULL && strcmp(type_name, name) == 0)
      return (int)RESOURCE_TYPES[i];
  }
  return -1;
}

static const char *status_name(QrmiTaskStatus status) {
  switch (status) {
  case QRMI_TASK_STATUS_QUEUED:
    return "Queued";
  case QRMI_TASK_STATUS_RUNNING:
    return "Running";
  case QRMI_TASK_STATUS_COMPLETED:
    return "Completed";
  case QRMI_TASK_STATUS_FAILED:
    return "Failed";
  case QRMI_TASK_STATUS_CANCELLED:
    return "Cancelled";
  }
  return "Unknown";
}

/* Runs this rank's tasks and writes their report; 1 when every task completed. */
static int run_tasks(QrmiQuantumResource *qrmi, int rank, int tasks, report *out) {
  char **ids = calloc((size_t)tasks, sizeof *ids);
  int ok = ids != NULL;
  char input[sizeof BELL_INPUT + 16];
  snprintf(input, sizeof input, BELL_INPUT, 100 * (rank + 1));
  QrmiPayload payload = {.tag = QRMI_PAYLOAD_QISKIT_PRIMITIVE};
  payload.QISKIT_PRIMITIVE.input = input;
  payload.QISKIT_PRIMITIVE.program_id = "sampler";

  for (int i = 0; ok && i < tasks; i++) {
    QrmiReturnCode rc = qrmi_resource_task_start(qrmi, &payload, &ids[i]);
    if (rc != QRMI_RETURN_CODE_SUCCESS) {
      append(out, "rank %d task - NotStarted\n%s\n", rank, last_error(rc));
      ok = 0;
    }
  }
  const struct timespec pause = {.tv_sec = 0, .tv_nsec = 200 * 1000 * 1000};
  for (int i = 0; ids != NULL && i < tasks && ids[i] != NULL; i++) {
    QrmiTaskStatus status = QRMI_TASK_STATUS_QUEUED;
    QrmiReturnCode rc;
    while ((rc = qrmi_resource_task_status(qrmi, ids[i], &status)) == QRMI_RETURN_CODE_SUCCESS &&
           (status == QRMI_TASK_STATUS_QUEUED || status == QRMI_TASK_STATUS_RUNNING))
      nanosleep(&pause, NULL);
    if (rc != QRMI_RETURN_CODE_SUCCESS) {
      append(out, "rank %d task %s Unknown\n%s\n", rank, ids[i], last_error(rc));
      ok = 0;
    } else if (status != QRMI_TASK_STATUS_COMPLETED) {
      append(out, "rank %d task %s %s\nno result: the task did not complete\n", rank, ids[i], status_name(status));
      ok = 0;
    } else {
      char *result = NULL;
      rc = qrmi_resource_task_result(qrmi, ids[i], &result);
      if (rc == QRMI_RETURN_CODE_SUCCESS) {
        append(out, "rank %d task %s %s\n%s\n", rank, ids[i], status_name(status), result);
        qrmi_string_free(result);
      } else {
        append(out, "rank %d task %s %s\n%s\n", rank, ids[i], status_name(status), last_error(rc));
        ok = 0;
      }
    }
    qrmi_resource_task_stop(qrmi, ids[i]); /* with qrmid, a finished task keeps its result */
    qrmi_string_free(ids[i]);
  }
  free(ids);
  return ok;
}

/* Rank 0 prints every rank's report, in rank order. */
static void gather_reports(int rank, int size, const report *mine, int ok, int *all_ok) {
  int length = (int)mine->length;
  int *lengths = NULL, *oks = NULL, *offsets = NULL;
  char *texts = NULL;
  if (rank == 0) {
    lengths = calloc((size_t)size, sizeof *lengths);
    oks = calloc((size_t)size, sizeof *oks);
    offsets = calloc((size_t)size, sizeof *offsets);
    if (lengths == NULL || oks == NULL || offsets == NULL)
      MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Gather(&length, 1, MPI_INT, lengths, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Gather(&ok, 1, MPI_INT, oks, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    int total = 0;
    for (int r = 0; r < size; r++) {
      offsets[r] = total;
      total += lengths[r];
    }
    texts = malloc((size_t)total + 1);
    if (texts == NULL)
      MPI_Abort(MPI_COMM_WORLD, 1);
    texts[total] = '\0';
  }
  MPI_Gatherv(mine->text, length, MPI_CHAR, texts, lengths, offsets, MPI_CHAR, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    fputs(texts, stdout);
    fflush(stdout);
    for (int r = 0; r < size; r++)
      *all_ok = *all_ok && oks[r];
  }
  free(lengths);
  free(oks);
  free(offsets);
  free(texts);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  char *name = argc > 1 ? strdup(argv[1]) : job_list_item("QPU_RESOURCES", 0);
  char *type_name = argc > 2 ? strdup(argv[2]) : job_list_item("QPU_TYPES", 0);
  int tasks = argc > 3 ? atoi(argv[3]) : 2;
  int type = type_name != NULL ? resource_type(type_name) : -1;
  if (name == NULL || type < 0 || tasks < 1) {
    if (rank == 0)
      fprintf(stderr, "usage: qrmi_mpi_example RESOURCE TYPE [TASKS_PER_RANK] (TYPE a qrmi_config.json type name, "
                      "TASKS_PER_RANK at least 1), or run it in a job started with --qpu\n");
    free(name);
    free(type_name);
    MPI_Finalize();
    return 1;
  }

  /* One lease for every rank: the job's, else rank 0's, whose token goes to the others. */
  char token_variable[512];
  snprintf(token_variable, sizeof token_variable, "%s_QRMI_JOB_ACQUISITION_TOKEN", name);
  QrmiQuantumResource *qrmi = NULL;
  char *acquired = NULL;
  int token_length = 0;
  if (rank == 0) {
    qrmi = qrmi_resource_new(name, (QrmiResourceType)type);
    if (qrmi == NULL) {
      fprintf(stderr, "qrmi_mpi_example: cannot open %s: %s\n", name, last_error(QRMI_RETURN_CODE_ERROR));
      token_length = -1;
    } else if (getenv(token_variable) == NULL) {
      QrmiReturnCode rc = qrmi_resource_acquire(qrmi, &acquired);
      if (rc == QRMI_RETURN_CODE_SUCCESS) {
        token_length = (int)strlen(acquired);
      } else {
        fprintf(stderr, "qrmi_mpi_example: cannot lease %s: %s\n", name, last_error(rc));
        token_length = -1;
      }
    }
  }
  MPI_Bcast(&token_length, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (token_length < 0) {
    qrmi_resource_free(qrmi);
    free(name);
    free(type_name);
    MPI_Finalize();
    return 1;
  }
  if (token_length > 0) {
    char *token = rank == 0 ? acquired : calloc((size_t)token_length + 1, 1);
    if (token == NULL)
      MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Bcast(token, token_length, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (rank != 0) {
      setenv(token_variable, token, 1);
      free(token);
    }
  }

  report mine = {0};
  int ok = 0;
  if (rank != 0)
    qrmi = qrmi_resource_new(name, (QrmiResourceType)type);
  if (qrmi == NULL)
    append(&mine, "rank %d task - NotStarted\ncannot open %s: %s\n", rank, name, last_error(QRMI_RETURN_CODE_ERROR));
  else
    ok = run_tasks(qrmi, rank, tasks, &mine);

  int all_ok = 1;
  gather_reports(rank, size, &mine, ok, &all_ok);
  MPI_Bcast(&all_ok, 1, MPI_INT, 0, MPI_COMM_WORLD);

  if (acquired != NULL) { /* every rank's tasks have ended: the lease is no longer needed */
    QrmiReturnCode rc = qrmi_resource_release(qrmi, acquired);
    if (rc != QRMI_RETURN_CODE_SUCCESS)
      fprintf(stderr, "qrmi_mpi_example: cannot release the lease on %s: %s\n", name, last_error(rc));
    qrmi_string_free(acquired);
  }
  qrmi_resource_free(qrmi);
  free(mine.text);
  free(name);
  free(type_name);
  MPI_Finalize();
  return all_ok ? 0 : 1;
}
