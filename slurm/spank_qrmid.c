/*
 * spank_qrmid: Slurm SPANK plugin that leases qrmid quantum resources for a job.
 *
 *   sbatch --qpu=ibm_torino[,FRESNEL] job.sh     srun --qpu=local-qiskit ./prog
 *   sbatch --qpu=ibm_torino:exclusive,FRESNEL:shared:min_slots=1 [--qpu-wait=SECONDS] job.sh
 *
 * For every name in --qpu the plugin, running as root in slurmstepd at job start, asks the node's
 * qrmid daemon for the resource's type (GetResource) and takes a lease on it for the job (Acquire with
 * the Slurm job id, a lifetime from the job's time limit, and the job's uid as on_behalf_of, so the
 * lease and the job's tasks belong to the job's user), shared unless the name says `:exclusive`. An
 * exclusive lease is granted once no other lease's task runs on the resource; the plugin waits for it
 * up to exclusive_wait seconds (or --qpu-wait, when shorter) for all of the job's exclusive leases
 * together, taking them first and in name order. It exports to the job only what QRMI code reads and
 * no vendor secret (those stay in the daemon):
 *
 *   QRMI_JOB_QPU_RESOURCES, QRMI_JOB_QPU_TYPES    names and types of the leased resources, joined
 *   SLURM_JOB_QPU_RESOURCES, SLURM_JOB_QPU_TYPES  with $QRMI_LIST_DELIMITER (default ","), and the
 *                                                 legacy aliases of both
 *   <name>_QRMI_JOB_ACQUISITION_TOKEN             the lease token
 *   <name>_QRMI_JOB_TIMEOUT_SECONDS               the job's time limit in seconds (unlimited jobs:
 *                                                 the lease's lifetime)
 *   <name>_QRMI_JOB_LEASE_MODE, QRMI_JOB_QPU_LEASE_MODES  "shared" or "exclusive": each lease's mode, and
 *                                                 the list of them in the order of QRMI_JOB_QPU_RESOURCES
 *   QRMI_JOB_ID, QRMI_JOB_UID, QRMID_ADDRESS      Slurm job id, job user id, daemon address
 *   QRMID_AUTH, QRMID_MUNGE_SOCKET                with auth=munge: how the job's clients authenticate
 *
 * and ends the leases when the step that took them ends (normally, on failure or on scancel), with
 * AdminService.RevokeLease: the plugin calls as root, an admin of the daemon.
 *
 * With several members, an Acquire whose first member fails after granting the lease (the answer lost with
 * the connection) is made again on the next member; the plugin then lists the job's leases on the resource
 * (AdminService.ListAllLeases) and ends those that were neither there before the call nor the one it got.
 *
 * Hooks (Slurm 22.05 order: init_post_opt [batch, root] -> task_init [batch, user] ->
 * init_post_opt [step, root] -> task_init [step, user] -> exit [step] -> exit [batch]):
 *  - slurm_spank_init: registers --qpu and --qpu-wait (sbatch/salloc, srun, slurmstepd).
 *  - slurm_spank_init_post_opt (slurmstepd, root): acquires in the batch step; in any other step only
 *    when the job environment does not already carry the lists of this job (a plain `srun --qpu=...`
 *    job, or an `srun --qpu=...` in a batch job that did not ask for QPUs). Never fails: an error
 *    is recorded and the task fails later, because a failing init_post_opt drains the node.
 *  - slurm_spank_task_init (each task, job user, before exec): reports the recorded errors on the
 *    task's stderr and returns -1, which kills the task when the plugin is `required`.
 *  - slurm_spank_exit (slurmstepd, root): releases the leases this step acquired; failures are logged.
 *
 * plugstack.conf arguments (all optional; see slurm/README.md):
 *   address=TARGET     the daemon's gRPC target (default unix:/run/qrmid/qrmid.sock), or several
 *                      members of a cluster separated by commas (a call failing UNAVAILABLE moves on to
 *                      the next); also exported to the job as QRMID_ADDRESS
 *   timeout=SECONDS    deadline of each call to the daemon (default 30)
 *   ttl_margin=SECONDS added to the job's time limit to make the lease's lifetime (default 300)
 *   allow_partial      run the job with the resources that could be leased when others could not
 *                      (QRMI's behaviour); by default any failure fails the job
 *   auth=munge         authenticate every call with a fresh MUNGE credential (for a daemon whose
 *                      socket has auth = "munge"); auth=none (default) sends none
 *   munge_socket=PATH  munged's socket when not libmunge's default
 *   exclusive_wait=SECONDS  longest wait for a job's exclusive leases (default 600); a job's --qpu-wait
 *                      may shorten it
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

#include "qrmid/v1/admin.qrmid-c.h"
#include "qrmid/v1/quantum_resources.qrmid-c.h"
#include "qpu_request.h"

SPANK_PLUGIN(spank_qrmid, 1);

#define DEFAULT_ADDRESS "unix:/run/qrmid/qrmid.sock"
#define DEFAULT_TIMEOUT_SECONDS 30
#define DEFAULT_TTL_MARGIN_SECONDS 300
#define DEFAULT_EXCLUSIVE_WAIT_SECONDS 600
#define MAX_EXCLUSIVE_WAIT_SECONDS 86400
#define WATCH_INTERVAL_SECONDS 2 /* how often slurmctld is asked about a job waiting for exclusive leases */
#define DEFAULT_DELIMITER ","
#define LEASE_ENDED "its lease was released: its Slurm job step ended"
#define MAX_DELIMITER 32
#define ENV_VALUE_MAX 8192

/* One lease taken by this step. */
struct lease {
  char *name;    /* resource name as given in --qpu */
  char *type;    /* its QRMI type, from GetResource */
  char *id;      /* public lease id, safe to log */
  char *token;   /* secret bearer token */
  char *timeout; /* <name>_QRMI_JOB_TIMEOUT_SECONDS */
  int exclusive; /* the mode the daemon granted */
  size_t position; /* the resource's place in --qpu */
};

/* Plugin arguments from plugstack.conf. */
struct settings {
  char *address;
  int64_t timeout_ms;
  uint32_t ttl_margin;
  int allow_partial;
  int use_munge;      /* auth=munge */
  char *munge_socket; /* munge_socket=PATH; NULL: libmunge's default */
  uint32_t exclusive_wait; /* exclusive_wait=SECONDS */
};

static char *qpu_option;          /* the --qpu value; NULL when not given */
static char *wait_option;         /* the --qpu-wait value; NULL when not given */
static struct lease *leases;      /* the leases this step took */
static size_t n_leases;
static char **errors;             /* problems found in init_post_opt, reported in task_init */
static size_t n_errors;
static int errors_lost;           /* an error could not be recorded (out of memory) */
static int partial;               /* errors are warnings: allow_partial and some lease was taken */
static struct settings settings;

static int qpu_option_cb(int val, const char *optarg, int remote);

#define QPU_OPTION 0
#define WAIT_OPTION 1

static struct spank_option qpu_options[] = {
    {"qpu", "NAME[:MODE][,NAME...]",
     "Quantum resources (qrmid names) to lease for the job, separated by commas. MODE: shared (default) or "
     "exclusive (only the job's tasks run on it); NAME:shared:min_slots=N keeps N slots free for the job.",
     1, QPU_OPTION, (spank_opt_cb_f)qpu_option_cb},
    {"qpu-wait", "SECONDS",
     "How long the job may wait at its start for its exclusive --qpu leases (at most the site's exclusive_wait).",
     1, WAIT_OPTION, (spank_opt_cb_f)qpu_option_cb},
    SPANK_OPTIONS_TABLE_END};

static char *copy_string(const char *s)
{
  size_t n = strlen(s) + 1;
  char *out = malloc(n);
  if (out != NULL)
    memcpy(out, s, n);
  return out;
}

/* A malloc'd printf; NULL when out of memory. */
__attribute__((format(printf, 1, 0))) static char *vformat(const char *fmt, va_list args)
{
  va_list again;
  va_copy(again, args);
  int n = vsnprintf(NULL, 0, fmt, args);
  char *out = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (out != NULL)
    vsnprintf(out, (size_t)n + 1, fmt, again);
  va_end(again);
  return out;
}

__attribute__((format(printf, 1, 2))) static char *format(const char *fmt, ...)
{
  va_list args;
  va_start(args, fmt);
  char *out = vformat(fmt, args);
  va_end(args);
  return out;
}

/* Records a problem for task_init and logs it to slurmd's log now. */
__attribute__((format(printf, 1, 2))) static void defer_error(const char *fmt, ...)
{
  va_list args;
  va_start(args, fmt);
  char *message = vformat(fmt, args);
  va_end(args);
  char **grown = message != NULL ? realloc(errors, (n_errors + 1) * sizeof(*errors)) : NULL;
  if (grown == NULL) {
    free(message);
    errors_lost = 1;
    slurm_error("%s: out of memory while recording an error", plugin_name);
    return;
  }
  errors = grown;
  errors[n_errors++] = message;
  slurm_error("%s: %s", plugin_name, message);
}

/* Records a failed call to the daemon: what, the status name and the daemon's message. */
static void defer_call_error(const char *what, const char *resource, const qrmid_error *err)
{
  defer_error("%s %s at %s failed: %s: %s", what, resource, settings.address, qrmid_status_name(err->code),
              err->message != NULL ? err->message : "no message");
}

static void free_errors(void)
{
  for (size_t i = 0; i < n_errors; i++)
    free(errors[i]);
  free(errors);
  errors = NULL;
  n_errors = 0;
}

static void free_leases(void)
{
  for (size_t i = 0; i < n_leases; i++) {
    free(leases[i].name);
    free(leases[i].type);
    free(leases[i].id);
    free(leases[i].token);
    free(leases[i].timeout);
  }
  free(leases);
  leases = NULL;
  n_leases = 0;
}

static void free_settings(void)
{
  free(settings.address);
  free(settings.munge_socket);
  memset(&settings, 0, sizeof(settings));
}

static int qpu_option_cb(int val, const char *optarg, int remote)
{
  (void)remote;
  char **option = val == WAIT_OPTION ? &wait_option : &qpu_option;
  free(*option);
  *option = copy_string(optarg != NULL ? optarg : "");
  if (*option == NULL) {
    slurm_error("%s: out of memory copying --%s", plugin_name, qpu_options[val].name);
    return -1;
  }
  return 0;
}

/* Parses "SECONDS" into *out (0 .. max); 0 on success. */
static int parse_seconds(const char *text, uint32_t max, uint32_t *out)
{
  char *end = NULL;
  if (*text < '0' || *text > '9')
    return -1;
  unsigned long long value = strtoull(text, &end, 10);
  if (*end != '\0' || value > max)
    return -1;
  *out = (uint32_t)value;
  return 0;
}

/* Reads the plugstack.conf arguments into settings; records an error and returns -1 on a bad one. */
static int parse_arguments(int argc, char **argv)
{
  free_settings();
  settings.address = copy_string(DEFAULT_ADDRESS);
  settings.timeout_ms = DEFAULT_TIMEOUT_SECONDS * 1000;
  settings.ttl_margin = DEFAULT_TTL_MARGIN_SECONDS;
  settings.exclusive_wait = DEFAULT_EXCLUSIVE_WAIT_SECONDS;
  if (settings.address == NULL) {
    defer_error("out of memory");
    return -1;
  }
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    uint32_t seconds = 0;
    if (strncmp(arg, "address=", 8) == 0 && arg[8] != '\0') {
      free(settings.address);
      settings.address = copy_string(arg + 8);
      if (settings.address == NULL) {
        defer_error("out of memory");
        return -1;
      }
    } else if (strncmp(arg, "timeout=", 8) == 0) {
      if (parse_seconds(arg + 8, 86400, &seconds) != 0 || seconds == 0) {
        defer_error("plugstack.conf: bad argument '%s': timeout must be 1 to 86400 seconds", arg);
        return -1;
      }
      settings.timeout_ms = (int64_t)seconds * 1000;
    } else if (strncmp(arg, "ttl_margin=", 11) == 0) {
      if (parse_seconds(arg + 11, 7 * 86400, &seconds) != 0) {
        defer_error("plugstack.conf: bad argument '%s': ttl_margin must be 0 to 604800 seconds", arg);
        return -1;
      }
      settings.ttl_margin = seconds;
    } else if (strncmp(arg, "exclusive_wait=", 15) == 0) {
      if (parse_seconds(arg + 15, MAX_EXCLUSIVE_WAIT_SECONDS, &seconds) != 0 || seconds == 0) {
        defer_error("plugstack.conf: bad argument '%s': exclusive_wait must be 1 to %d seconds", arg,
                    MAX_EXCLUSIVE_WAIT_SECONDS);
        return -1;
      }
      settings.exclusive_wait = seconds;
    } else if (strcmp(arg, "allow_partial") == 0) {
      settings.allow_partial = 1;
    } else if (strcmp(arg, "auth=munge") == 0 || strcmp(arg, "auth=none") == 0) {
      settings.use_munge = strcmp(arg, "auth=munge") == 0;
    } else if (strncmp(arg, "munge_socket=", 13) == 0 && arg[13] != '\0') {
      free(settings.munge_socket);
      settings.munge_socket = copy_string(arg + 13);
      if (settings.munge_socket == NULL) {
        defer_error("out of memory");
        return -1;
      }
    } else {
      defer_error("plugstack.conf: unknown argument '%s' (known: address=TARGET, timeout=SECONDS, "
                  "ttl_margin=SECONDS, allow_partial, auth=munge|none, munge_socket=PATH, exclusive_wait=SECONDS)",
                  arg);
      return -1;
    }
  }
  return 0;
}

/* Sets a job environment variable; records an error and returns -1 when Slurm refuses. */
static int set_job_env(spank_t sp, const char *name, const char *value)
{
  spank_err_t rc = spank_setenv(sp, name, value, 1);
  if (rc != ESPANK_SUCCESS) {
    defer_error("cannot set %s in the job environment: %s", name, spank_strerror(rc));
    return -1;
  }
  return 0;
}

/* A job environment variable: 1 and its value in buf when set, 0 when not. */
static int get_job_env(spank_t sp, const char *name, char *buf, int size)
{
  spank_err_t rc = spank_getenv(sp, name, buf, size);
  if (rc == ESPANK_NOSPACE) {
    buf[0] = '\0';
    return 1;
  }
  return rc == ESPANK_SUCCESS;
}

/* Appends `item` to the malloc'd list *list, with `delimiter` between items. */
static int append_item(char **list, const char *item, const char *delimiter)
{
  char *joined = *list == NULL ? copy_string(item) : format("%s%s%s", *list, delimiter, item);
  if (joined == NULL)
    return -1;
  free(*list);
  *list = joined;
  return 0;
}

/* Job `job_id` as slurmctld knows it; SLURM_SUCCESS with *info set, or an error code. */
static int load_job(uint32_t job_id, job_info_msg_t **info)
{
  *info = NULL;
#if SLURM_VERSION_NUMBER >= SLURM_VERSION_NUM(26, 5, 0)
  slurm_step_id_t step_id = SLURM_STEP_ID_INITIALIZER;
  step_id.job_id = job_id;
  int rc = slurm_load_job(info, step_id, SHOW_DETAIL);
#else
  int rc = slurm_load_job(info, job_id, SHOW_DETAIL);
#endif
  return rc;
}

/* The job's time limit in minutes (INFINITE when unlimited); -1 when it cannot be read. */
static int64_t job_time_limit(uint32_t job_id)
{
  job_info_msg_t *info = NULL;
  int rc = load_job(job_id, &info);
  if (rc != SLURM_SUCCESS || info == NULL || info->record_count == 0) {
    defer_error("cannot read the time limit of job %" PRIu32 " from slurmctld: %s", job_id,
                slurm_strerror(slurm_get_errno()));
    if (info != NULL)
      slurm_free_job_info_msg(info);
    return -1;
  }
  int64_t minutes = info->job_array[0].time_limit;
  slurm_free_job_info_msg(info);
  return minutes;
}

/* While the plugin waits for exclusive leases, a thread asks slurmctld every WATCH_INTERVAL_SECONDS whether the job
 * still runs, and cancels the waiting call once it does not (scancel, a requeue): slurmd cannot signal a step whose
 * start the plugin holds up, so without it a cancelled job would stay COMPLETING until the wait ran out. */
struct watch {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  int stopping; /* the waits are over */
  uint32_t job_id;
  qrmid_client *client;
};

/* Whether slurmctld still has job `job_id` running; 1 when it cannot be asked (the wait goes on). */
static int job_running(uint32_t job_id)
{
  job_info_msg_t *info = NULL;
  int rc = load_job(job_id, &info);
  int running = 1;
  if (rc == SLURM_SUCCESS && info != NULL && info->record_count > 0) {
    uint32_t state = info->job_array[0].job_state;
    running = (state & JOB_STATE_BASE) == JOB_RUNNING && !(state & JOB_COMPLETING);
  } else if (slurm_get_errno() == ESLURM_INVALID_JOB_ID) {
    running = 0;
  }
  if (info != NULL)
    slurm_free_job_info_msg(info);
  return running;
}

static void *watch_job(void *arg)
{
  struct watch *w = arg;
  pthread_mutex_lock(&w->lock);
  while (!w->stopping) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WATCH_INTERVAL_SECONDS;
    if (pthread_cond_timedwait(&w->wake, &w->lock, &until) != ETIMEDOUT || w->stopping)
      continue;
    pthread_mutex_unlock(&w->lock);
    int running = job_running(w->job_id);
    pthread_mutex_lock(&w->lock);
    if (!running && !w->stopping) {
      qrmid_client_cancel(w->client);
      break;
    }
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

/* Starts watching job `job_id` for `client`'s waits; 0 when the thread could not start (the waits are not cut
 * short then). */
static int watch_start(struct watch *w, uint32_t job_id, qrmid_client *client)
{
  memset(w, 0, sizeof(*w));
  w->job_id = job_id;
  w->client = client;
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->wake, NULL);
  int rc = pthread_create(&w->thread, NULL, watch_job, w);
  if (rc != 0) {
    slurm_error("%s: cannot watch job %" PRIu32 " while it waits: %s; a scancel takes effect when the wait ends",
                plugin_name, job_id, strerror(rc));
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    return 0;
  }
  return 1;
}

/* Stops the thread. */
static void watch_stop(struct watch *w)
{
  pthread_mutex_lock(&w->lock);
  w->stopping = 1;
  pthread_cond_signal(&w->wake);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL);
  pthread_cond_destroy(&w->wake);
  pthread_mutex_destroy(&w->lock);
}

/* A client of the daemon, authenticating as plugstack.conf says. */
static grpc_status_code connect_daemon(qrmid_client **client, qrmid_error *err)
{
  grpc_status_code code = qrmid_client_new(settings.address, NULL, client, err);
  if (code == GRPC_STATUS_OK && settings.use_munge) {
    code = qrmid_client_use_munge(*client, settings.munge_socket, err);
    if (code != GRPC_STATUS_OK) {
      qrmid_client_free(*client);
      *client = NULL;
    }
  }
  return code;
}

/* Ends lease `id` (the plugin is an admin of the daemon; the lease is the job user's). */
static grpc_status_code end_lease(qrmid_client *client, const char *id, uint32_t *cancelled, qrmid_error *err)
{
  Qrmid__V1__RevokeLeaseRequest revoke = QRMID__V1__REVOKE_LEASE_REQUEST__INIT;
  Qrmid__V1__ReleaseResponse *released = NULL;
  revoke.lease_id = (char *)id;
  revoke.reason = (char *)LEASE_ENDED;
  grpc_status_code code = qrmid_v1_admin_service_revoke_lease(client, &revoke, &released, settings.timeout_ms, err);
  if (code == GRPC_STATUS_OK) {
    *cancelled = released->cancelled_tasks;
    qrmid__v1__release_response__free_unpacked(released, NULL);
  }
  return code;
}

/* The ids of job `job_id`'s leases on `name` (malloc'd, *n of them); NULL when they cannot be listed. */
static char **job_leases(qrmid_client *client, const char *name, const char *job_id, size_t *n, qrmid_error *err)
{
  Qrmid__V1__ListAllLeasesRequest request = QRMID__V1__LIST_ALL_LEASES_REQUEST__INIT;
  Qrmid__V1__ListLeasesResponse *response = NULL;
  *n = 0;
  request.resource = (char *)name;
  if (qrmid_v1_admin_service_list_all_leases(client, &request, &response, settings.timeout_ms, err) !=
      GRPC_STATUS_OK)
    return NULL;
  char **ids = calloc(response->n_leases + 1, sizeof(*ids));
  for (size_t i = 0; ids != NULL && i < response->n_leases; i++)
    if (strcmp(response->leases[i]->slurm_job_id, job_id) == 0 && (ids[*n] = copy_string(response->leases[i]->id)))
      (*n)++;
  qrmid__v1__list_leases_response__free_unpacked(response, NULL);
  return ids;
}

static void free_ids(char **ids, size_t n)
{
  for (size_t i = 0; ids != NULL && i < n; i++)
    free(ids[i]);
  free(ids);
}

/* After an Acquire that reached more than one member: an earlier member may have granted a lease whose answer
 * was lost with its connection. Ends the job's leases on `name` that were neither there before the call
 * (`before`) nor the one returned (`kept`). */
static void end_lost_leases(qrmid_client *client, const char *name, const char *job_id, char **before,
                            size_t n_before, const char *kept)
{
  qrmid_error err = QRMID_ERROR_INIT;
  size_t n_after = 0;
  char **after = job_leases(client, name, job_id, &n_after, &err);
  if (after == NULL)
    defer_call_error("listing the leases of this job on", name, &err);
  for (size_t i = 0; i < n_after; i++) {
    int known = strcmp(after[i], kept) == 0;
    for (size_t j = 0; !known && j < n_before; j++)
      known = strcmp(after[i], before[j]) == 0;
    uint32_t cancelled = 0;
    if (known)
      continue;
    if (end_lease(client, after[i], &cancelled, &err) == GRPC_STATUS_OK)
      slurm_info("%s: ended lease %s on %s for job %s: granted to an attempt whose answer was lost", plugin_name,
                 after[i], name, job_id);
    else
      defer_call_error("ending a lease granted to a lost attempt on", name, &err);
  }
  free_ids(after, n_after);
  qrmid_error_clear(&err);
}

/* After an exclusive Acquire cancelled while it waited: the daemon may have granted the lease as the call ended.
 * Ends the job's leases on `name` that were not there before the call, over a new connection (the client that
 * waited is cancelled). */
static void end_granted_too_late(const char *name, const char *job_id, char **before, size_t n_before)
{
  qrmid_client *client = NULL;
  qrmid_error err = QRMID_ERROR_INIT;
  if (before == NULL)
    return;
  if (connect_daemon(&client, &err) == GRPC_STATUS_OK)
    end_lost_leases(client, name, job_id, before, n_before, "");
  else
    defer_call_error("connecting to qrmid to check the leases of this job on", name, &err);
  qrmid_client_free(client);
  qrmid_error_clear(&err);
}

static int64_t monotonic_ms(void)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Takes a lease on `request` for user `uid` and exports its token, timeout and mode; records an error on
 * failure. An exclusive request waits for its grant until `wait_until_ms` (monotonic). Returns 1 when the wait
 * was cancelled because the job no longer runs (nothing more is to be acquired), else 0. */
static int acquire_one(spank_t sp, qrmid_client *client, const struct qpu_request *request, const char *job_id,
                        const char *uid, int64_t minutes, int64_t wait_until_ms)
{
  const char *name = request->name;
  const char *mode = qpu_mode_name(request->exclusive);
  qrmid_error err = QRMID_ERROR_INIT;
  Qrmid__V1__Resource *resource = NULL;
  Qrmid__V1__Lease *lease = NULL;
  char *token_var = NULL, *timeout_var = NULL, *mode_var = NULL;
  struct lease taken = {NULL, NULL, NULL, NULL, NULL, request->exclusive, request->position};
  char **before = NULL;
  size_t n_before = 0;
  int cancelled = 0;

  Qrmid__V1__GetResourceRequest get = QRMID__V1__GET_RESOURCE_REQUEST__INIT;
  get.name = (char *)name;
  if (qrmid_v1_quantum_resources_get_resource(client, &get, &resource, settings.timeout_ms, &err) !=
      GRPC_STATUS_OK) {
    cancelled = err.code == GRPC_STATUS_CANCELLED; /* the job ended while an earlier lease was waited for */
    if (cancelled)
      defer_error("not leasing %s: job %s no longer runs", name, job_id);
    else
      defer_call_error("looking up resource", name, &err);
    goto out;
  }

  int limited = minutes != (int64_t)INFINITE && minutes != (int64_t)NO_VAL;
  uint64_t ttl = limited ? (uint64_t)minutes * 60 + settings.ttl_margin : 0; /* 0: daemon's default */
  Qrmid__V1__AcquireRequest acquire = QRMID__V1__ACQUIRE_REQUEST__INIT;
  acquire.resource = (char *)name;
  acquire.slurm_job_id = (char *)job_id;
  acquire.ttl_seconds = ttl > UINT32_MAX ? UINT32_MAX : (uint32_t)ttl;
  acquire.on_behalf_of = (char *)uid;
  acquire.min_slots = request->min_slots;
  int64_t deadline_ms = settings.timeout_ms;
  if (request->exclusive) {
    /* The daemon answers DEADLINE_EXCEEDED, with the place in line, when wait_seconds pass; the call's own
     * deadline comes a timeout later, so its answer arrives. */
    int64_t left_ms = wait_until_ms - monotonic_ms();
    acquire.mode = QRMID__V1__LEASE_MODE__LEASE_MODE_EXCLUSIVE;
    acquire.wait_seconds = left_ms > 1000 ? (uint32_t)((left_ms + 999) / 1000) : 1;
    deadline_ms += (int64_t)acquire.wait_seconds * 1000;
    slurm_info("%s: waiting up to %" PRIu32 " s for an exclusive lease on %s for job %s", plugin_name,
               acquire.wait_seconds, name, job_id);
  }
  /* The job's leases before the call, to find one granted to an attempt whose answer was lost: with several
   * members, or when the job is cancelled while an exclusive lease is waited for. */
  if (qrmid_client_member_count(client) > 1 || request->exclusive)
    before = job_leases(client, name, job_id, &n_before, &err);
  if (qrmid_v1_quantum_resources_acquire(client, &acquire, &lease, deadline_ms, &err) != GRPC_STATUS_OK) {
    cancelled = request->exclusive && err.code == GRPC_STATUS_CANCELLED;
    if (cancelled) {
      defer_error("stopped waiting for an exclusive lease on %s: job %s no longer runs", name, job_id);
      end_granted_too_late(name, job_id, before, n_before);
    } else if (request->exclusive)
      defer_error("acquiring an exclusive lease on %s at %s failed after waiting up to %" PRIu32 " s: %s: %s", name,
                  settings.address, acquire.wait_seconds, qrmid_status_name(err.code),
                  err.message != NULL ? err.message : "no message");
    else
      defer_call_error("acquiring a lease on", name, &err);
    goto out;
  }
  if (qrmid_client_last_attempts(client) > 1 && before != NULL)
    end_lost_leases(client, name, job_id, before, n_before, lease->id);

  /* The lease exists from here: record it first so that exit releases it whatever happens next. */
  taken.name = copy_string(name);
  taken.type = copy_string(resource->type);
  taken.id = copy_string(lease->id);
  taken.token = copy_string(lease->token);
  taken.exclusive = lease->mode == QRMID__V1__LEASE_MODE__LEASE_MODE_EXCLUSIVE;
  if (limited) {
    taken.timeout = format("%" PRIu64, (uint64_t)minutes * 60);
  } else {
    int64_t lifetime = 0;
    if (lease->expire_time != NULL && lease->create_time != NULL)
      lifetime = lease->expire_time->seconds - lease->create_time->seconds;
    taken.timeout = format("%" PRId64, lifetime > 0 ? lifetime : 0);
  }
  struct lease *grown = realloc(leases, (n_leases + 1) * sizeof(*leases));
  int wrong_mode = taken.exclusive != request->exclusive;
  if (taken.name == NULL || taken.type == NULL || taken.id == NULL || taken.token == NULL ||
      taken.timeout == NULL || grown == NULL || wrong_mode) {
    if (grown != NULL)
      leases = grown;
    if (wrong_mode)
      defer_error("the daemon at %s granted a %s lease on %s where a %s one was asked (does it know lease modes?); "
                  "releasing it", settings.address, qpu_mode_name(taken.exclusive), name, mode);
    else
      defer_error("out of memory after acquiring lease %s on %s; releasing it", lease->id, name);
    uint32_t cancelled = 0;
    if (end_lease(client, lease->id, &cancelled, &err) != GRPC_STATUS_OK)
      defer_call_error("releasing the lease on", name, &err);
    free(taken.name);
    free(taken.type);
    free(taken.id);
    free(taken.token);
    free(taken.timeout);
    goto out;
  }
  leases = grown;
  leases[n_leases++] = taken;
  if (acquire.ttl_seconds > 0)
    slurm_info("%s: lease %s on %s (%s, %s) for job %s, %" PRIu32 " s", plugin_name, taken.id, name, taken.type,
               mode, job_id, acquire.ttl_seconds);
  else
    slurm_info("%s: lease %s on %s (%s, %s) for job %s, the daemon's default lifetime", plugin_name, taken.id, name,
               taken.type, mode, job_id);

  token_var = format("%s_QRMI_JOB_ACQUISITION_TOKEN", name);
  timeout_var = format("%s_QRMI_JOB_TIMEOUT_SECONDS", name);
  mode_var = format("%s_QRMI_JOB_LEASE_MODE", name);
  if (token_var == NULL || timeout_var == NULL || mode_var == NULL) {
    defer_error("out of memory exporting the lease on %s", name);
    goto out;
  }
  if (set_job_env(sp, token_var, taken.token) == 0 && set_job_env(sp, timeout_var, taken.timeout) == 0)
    set_job_env(sp, mode_var, mode);

out:
  free_ids(before, n_before);
  free(token_var);
  free(timeout_var);
  free(mode_var);
  if (lease != NULL)
    qrmid__v1__lease__free_unpacked(lease, NULL);
  if (resource != NULL)
    qrmid__v1__resource__free_unpacked(resource, NULL);
  qrmid_error_clear(&err);
  return cancelled;
}

static int by_position(const void *a, const void *b)
{
  const struct lease *x = a, *y = b;
  return (x->position > y->position) - (x->position < y->position);
}

/* How long the job's exclusive leases may be waited for, in seconds: the site's exclusive_wait, or the job's
 * --qpu-wait when given; 0 (an error recorded) when --qpu-wait is not 1 to exclusive_wait. */
static uint32_t exclusive_wait(void)
{
  uint32_t seconds = settings.exclusive_wait;
  if (wait_option != NULL && (parse_seconds(wait_option, settings.exclusive_wait, &seconds) != 0 || seconds == 0)) {
    defer_error("--qpu-wait=%s: give whole seconds from 1 to %" PRIu32 " (this site's exclusive_wait)", wait_option,
                settings.exclusive_wait);
    return 0;
  }
  return seconds;
}

/* Leases every --qpu resource and exports the lists. Errors are recorded, never returned. */
static void acquire_all(spank_t sp, uint32_t job_id, uid_t uid, const char *delimiter)
{
  char job_id_text[16], uid_text[16];
  snprintf(job_id_text, sizeof(job_id_text), "%" PRIu32, job_id);
  snprintf(uid_text, sizeof(uid_text), "%lu", (unsigned long)uid);
  char *resources_list = NULL, *types_list = NULL, *modes_list = NULL;
  struct qpu_request *requests = NULL;
  size_t n_requests = 0;
  char *bad_spec = NULL;
  qrmid_client *client = NULL;
  qrmid_error err = QRMID_ERROR_INIT;

  /* Readers raise when the lists are missing: they are set (empty) before anything can fail. */
  if (set_job_env(sp, "QRMI_JOB_ID", job_id_text) != 0 || set_job_env(sp, "QRMI_JOB_UID", uid_text) != 0 ||
      set_job_env(sp, "QRMID_ADDRESS", settings.address) != 0 || set_job_env(sp, "QRMI_JOB_QPU_RESOURCES", "") != 0 ||
      set_job_env(sp, "QRMI_JOB_QPU_TYPES", "") != 0 || set_job_env(sp, "QRMI_JOB_QPU_LEASE_MODES", "") != 0 ||
      set_job_env(sp, "SLURM_JOB_QPU_RESOURCES", "") != 0 || set_job_env(sp, "SLURM_JOB_QPU_TYPES", "") != 0)
    goto out;
  /* The job's own qrmid clients authenticate the way this plugin does. */
  if (settings.use_munge && (set_job_env(sp, "QRMID_AUTH", "munge") != 0 ||
                             (settings.munge_socket != NULL &&
                              set_job_env(sp, "QRMID_MUNGE_SOCKET", settings.munge_socket) != 0)))
    goto out;

  /* Names are separated by commas, or by $QRMI_LIST_DELIMITER when the job sets another. */
  char separators[MAX_DELIMITER + 2];
  snprintf(separators, sizeof(separators), ",%s", delimiter);
  if (qpu_requests_parse(qpu_option, separators, &requests, &n_requests, &bad_spec) != 0) {
    defer_error("%s", bad_spec != NULL ? bad_spec : "out of memory");
    goto out;
  }
  if (n_requests == 0) {
    defer_error("--qpu='%s' names no resource", qpu_option);
    goto out;
  }
  uint32_t wait_seconds = exclusive_wait();
  if (wait_seconds == 0)
    goto out;

  int64_t minutes = job_time_limit(job_id);
  if (minutes < 0)
    goto out;

  if (connect_daemon(&client, &err) != GRPC_STATUS_OK) {
    defer_call_error("connecting to qrmid for", qpu_option, &err);
    goto out;
  }

  int64_t wait_until_ms = monotonic_ms() + (int64_t)wait_seconds * 1000;
  qpu_requests_sort_for_acquire(requests, n_requests);
  struct watch watch;
  int watching = requests[0].exclusive && watch_start(&watch, job_id, client); /* exclusive ones come first */
  for (size_t i = 0; i < n_requests; i++) {
    if (acquire_one(sp, client, &requests[i], job_id_text, uid_text, minutes, wait_until_ms))
      break;
    if (watching && (i + 1 == n_requests || !requests[i + 1].exclusive)) {
      watch_stop(&watch);
      watching = 0;
    }
  }
  if (watching)
    watch_stop(&watch);
  if (n_leases > 1)
    qsort(leases, n_leases, sizeof(*leases), by_position);

  for (size_t i = 0; i < n_leases; i++) {
    if (append_item(&resources_list, leases[i].name, delimiter) != 0 ||
        append_item(&types_list, leases[i].type, delimiter) != 0 ||
        append_item(&modes_list, qpu_mode_name(leases[i].exclusive), delimiter) != 0) {
      defer_error("out of memory");
      goto out;
    }
  }
  if (n_leases > 0 && (set_job_env(sp, "QRMI_JOB_QPU_RESOURCES", resources_list) != 0 ||
                       set_job_env(sp, "QRMI_JOB_QPU_TYPES", types_list) != 0 ||
                       set_job_env(sp, "QRMI_JOB_QPU_LEASE_MODES", modes_list) != 0 ||
                       set_job_env(sp, "SLURM_JOB_QPU_RESOURCES", resources_list) != 0 ||
                       set_job_env(sp, "SLURM_JOB_QPU_TYPES", types_list) != 0))
    goto out;
  if (settings.allow_partial && n_leases > 0 && !errors_lost)
    partial = 1;

out:
  qrmid_error_clear(&err);
  qrmid_client_free(client);
  qpu_requests_free(requests, n_requests);
  free(bad_spec);
  free(resources_list);
  free(types_list);
  free(modes_list);
}

int slurm_spank_init(spank_t sp, int argc, char **argv)
{
  (void)argc;
  (void)argv;
  spank_context_t context = spank_context();
  if (context != S_CTX_LOCAL && context != S_CTX_ALLOCATOR && context != S_CTX_REMOTE)
    return 0;
  for (struct spank_option *option = qpu_options; option->name != NULL; option++) {
    spank_err_t rc = spank_option_register(sp, option);
    if (rc == ESPANK_SUCCESS)
      continue;
    if (context == S_CTX_REMOTE) /* never fail in slurmstepd: that drains the node */
      defer_error("cannot register the --%s option: %s", option->name, spank_strerror(rc));
    else
      slurm_error("%s: cannot register the --%s option: %s", plugin_name, option->name, spank_strerror(rc));
  }
  return 0;
}

int slurm_spank_init_post_opt(spank_t sp, int argc, char **argv)
{
  uint32_t job_id = 0, step_id = 0;
  uid_t uid = 0;
  if (!spank_remote(sp) || qpu_option == NULL)
    return 0;
  if (qpu_option[0] == '\0') {
    defer_error("--qpu needs at least one resource name");
    return 0;
  }
  spank_err_t rc;
  if ((rc = spank_get_item(sp, S_JOB_ID, &job_id)) != ESPANK_SUCCESS ||
      (rc = spank_get_item(sp, S_JOB_STEPID, &step_id)) != ESPANK_SUCCESS ||
      (rc = spank_get_item(sp, S_JOB_UID, &uid)) != ESPANK_SUCCESS) {
    defer_error("cannot read the job's id, step or user: %s", spank_strerror(rc));
    return 0;
  }
  if (step_id == SLURM_EXTERN_CONT)
    return 0;

  char delimiter[MAX_DELIMITER + 1];
  if (!get_job_env(sp, "QRMI_LIST_DELIMITER", delimiter, sizeof(delimiter)) || delimiter[0] == '\0')
    snprintf(delimiter, sizeof(delimiter), "%s", DEFAULT_DELIMITER);

  /* A step of a job whose batch step already leased: it uses those leases (and does not release them). */
  if (step_id != SLURM_BATCH_SCRIPT) {
    char owner[32], lists[ENV_VALUE_MAX];
    char job_id_text[16];
    snprintf(job_id_text, sizeof(job_id_text), "%" PRIu32, job_id);
    if (get_job_env(sp, "QRMI_JOB_ID", owner, sizeof(owner)) && strcmp(owner, job_id_text) == 0 &&
        get_job_env(sp, "QRMI_JOB_QPU_RESOURCES", lists, sizeof(lists))) {
      slurm_debug("%s: step %" PRIu32 ".%" PRIu32 " uses the leases of its batch step", plugin_name, job_id,
                  step_id);
      return 0;
    }
  }

  if (parse_arguments(argc, argv) != 0)
    return 0;
  acquire_all(sp, job_id, uid, delimiter);
  return 0;
}

int slurm_spank_task_init(spank_t sp, int argc, char **argv)
{
  (void)argc;
  (void)argv;
  if (!spank_remote(sp) || (n_errors == 0 && !errors_lost))
    return 0;
  for (size_t i = 0; i < n_errors; i++)
    slurm_error("%s: %s%s", plugin_name, partial ? "warning: " : "", errors[i]);
  if (partial) {
    slurm_error("%s: warning: the job runs with the resources that could be leased: %s", plugin_name,
                qpu_option);
    return 0;
  }
  if (errors_lost)
    slurm_error("%s: out of memory while recording errors", plugin_name);
  slurm_error("%s: --qpu=%s: cannot lease the quantum resources; the task is not started", plugin_name,
              qpu_option != NULL ? qpu_option : "");
  return -1;
}

int slurm_spank_exit(spank_t sp, int argc, char **argv)
{
  (void)argc;
  (void)argv;
  if (spank_remote(sp) && n_leases > 0) {
    qrmid_client *client = NULL;
    qrmid_error err = QRMID_ERROR_INIT;
    if (connect_daemon(&client, &err) != GRPC_STATUS_OK) {
      slurm_error("%s: cannot release %zu lease(s): connecting to %s: %s: %s", plugin_name, n_leases,
                  settings.address, qrmid_status_name(err.code), err.message != NULL ? err.message : "");
    } else {
      for (size_t i = 0; i < n_leases; i++) {
        uint32_t cancelled = 0;
        if (end_lease(client, leases[i].id, &cancelled, &err) == GRPC_STATUS_OK) {
          slurm_info("%s: released lease %s on %s (%" PRIu32 " task(s) cancelled)", plugin_name, leases[i].id,
                     leases[i].name, cancelled);
        } else {
          slurm_error("%s: releasing lease %s on %s at %s failed: %s: %s", plugin_name, leases[i].id,
                      leases[i].name, settings.address, qrmid_status_name(err.code),
                      err.message != NULL ? err.message : "");
        }
      }
    }
    qrmid_error_clear(&err);
    qrmid_client_free(client);
  }
  free_leases();
  free_errors();
  free_settings();
  free(qpu_option);
  qpu_option = NULL;
  free(wait_option);
  wait_option = NULL;
  errors_lost = 0;
  partial = 0;
  return 0;
}
