/*
 * qrmid C client runtime: channel setup, call metadata, and the generic
 * unary and server-streaming calls on the gRPC core C API. Messages are
 * serialised with protobuf-c. See qrmid_c.h for the calling convention.
 *
 * With MUNGE authentication on, each call carries a fresh credential from
 * libmunge (x-qrmid-munge), since the daemon accepts every credential once.
 *
 * Each call owns a private completion queue and runs one batch at a time,
 * waiting for it before the next: that keeps every call synchronous, makes
 * a client usable from several threads, and needs no background thread.
 */
#define _XOPEN_SOURCE 700 /* realpath, S_ISVTX */
#include "qrmid_c.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <munge.h>

#define MUNGE_METADATA_KEY "x-qrmid-munge"
#define SOCKET_OWNER_ENV "QRMID_SOCKET_OWNER"
#define SYSTEM_SOCKET "/run/qrmid/qrmid.sock"

#define FIRST_BACKOFF_MS 50 /* before the second member; doubled for each further one */
#define MAX_BACKOFF_MS 500
/* With several members, how long one has to take a connection before its calls fail UNAVAILABLE and move on (gRPC
 * waits 20 s by default): a stopped member, or a host gone from the network, does not use up a call's deadline. */
#define CONNECT_TIMEOUT_MS 5000
#define REQUEST_ID_FIELD "client_request_id"

/* A unary call in flight, listed on its client so that qrmid_client_cancel can reach it. */
typedef struct in_flight {
  grpc_call *call;
  struct in_flight *next;
} in_flight;

/* Guards every client's `calls` and `cancelled` (held only to link, unlink or cancel a call). */
static pthread_mutex_t calls_lock = PTHREAD_MUTEX_INITIALIZER;

/* One daemon of the address's list. */
typedef struct member {
  char *target;       /* its gRPC target */
  grpc_channel *channel;
  char *socket_path;  /* a unix: target's socket, checked before every call; NULL otherwise */
  uid_t socket_owner; /* the uid it must belong to (root is accepted too) */
} member;

struct qrmid_client {
  member *members;
  size_t member_count;
  size_t current;         /* the member that answered last (read and written atomically) */
  size_t last_attempts;   /* members the last call was sent to */
  char *address;          /* the target as given, for messages */
  grpc_metadata *metadata; /* sent with every call */
  size_t metadata_count;
  int use_munge;       /* add a fresh MUNGE credential to every call */
  char *munge_socket;  /* munged's socket; NULL: libmunge's default */
  in_flight *calls;    /* unary calls in flight (calls_lock) */
  int cancelled;       /* qrmid_client_cancel was called (calls_lock) */
};

/* --- errors ------------------------------------------------------------- */

#if defined(__GNUC__)
#define QRMID_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define QRMID_PRINTF(f, a)
#endif

void qrmid_error_clear(qrmid_error *error)
{
  if (error == NULL)
    return;
  free(error->message);
  error->message = NULL;
  error->code = GRPC_STATUS_OK;
}

static const char *const status_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *qrmid_status_name(grpc_status_code code)
{
  if ((int)code >= 0 && (size_t)code < sizeof status_names / sizeof status_names[0])
    return status_names[code];
  return "UNKNOWN_STATUS";
}

/* Records success: frees any previous message. */
static grpc_status_code set_ok(qrmid_error *error)
{
  qrmid_error_clear(error);
  return GRPC_STATUS_OK;
}

/* Records `code` with a formatted message; returns `code`. */
static grpc_status_code QRMID_PRINTF(3, 4)
    set_error(qrmid_error *error, grpc_status_code code, const char *fmt, ...)
{
  if (error == NULL)
    return code;
  qrmid_error_clear(error);
  error->code = code;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return code;
  error->message = malloc((size_t)n + 1);
  if (error->message != NULL) {
    va_start(ap, fmt);
    vsnprintf(error->message, (size_t)n + 1, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* Records a status received from gRPC. */
static grpc_status_code set_status(qrmid_error *error, grpc_status_code code,
                                   grpc_slice details, const char *debug)
{
  if (code == GRPC_STATUS_OK)
    return set_ok(error);
  size_t len = GRPC_SLICE_LENGTH(details);
  if (len > 0)
    return set_error(error, code, "%.*s", (int)len, (const char *)GRPC_SLICE_START_PTR(details));
  if (debug != NULL && debug[0] != '\0')
    return set_error(error, code, "%s", debug);
  return set_error(error, code, "%s", qrmid_status_name(code));
}

/* --- socket owner --------------------------------------------------------- */

/* "name (uid N)" or "uid N" into buf. */
static void user_label(uid_t uid, char *buf, size_t size)
{
  struct passwd pw, *found = NULL;
  char scratch[1024];
  if (getpwuid_r(uid, &pw, scratch, sizeof scratch, &found) == 0 && found != NULL)
    snprintf(buf, size, "%s (uid %u)", found->pw_name, (unsigned)uid);
  else
    snprintf(buf, size, "uid %u", (unsigned)uid);
}

/* The uid of a user name or numeric uid; -1 when there is no such user. */
static int parse_owner(const char *value, uid_t *uid)
{
  char *end = NULL;
  errno = 0;
  unsigned long n = strtoul(value, &end, 10);
  if (value[0] != '\0' && *end == '\0' && errno == 0 && n <= UINT_MAX) {
    *uid = (uid_t)n;
    return 0;
  }
  struct passwd pw, *found = NULL;
  char scratch[1024];
  if (getpwnam_r(value, &pw, scratch, sizeof scratch, &found) != 0 || found == NULL)
    return -1;
  *uid = found->pw_uid;
  return 0;
}

/* Refuses a call to `socket`: `fmt` says why; nothing has been sent. */
static grpc_status_code QRMID_PRINTF(4, 5)
    refuse(qrmid_error *error, const char *method, const char *socket, const char *fmt, ...)
{
  char why[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  return set_error(error, GRPC_STATUS_UNAVAILABLE, "%s: not connecting to %s: %s; nothing was sent", method, socket,
                   why);
}

static grpc_status_code check_directories(const char *dir, uid_t owner, int holds_socket, const char *method,
                                          const char *socket, qrmid_error *error);

/* Checks one directory on the way to the socket; `last`: the deepest one checked. */
static grpc_status_code check_directory(const char *current, int last, uid_t owner, int holds_socket,
                                        const char *method, const char *socket, qrmid_error *error)
{
  struct stat st;
  if (lstat(current, &st) != 0)
    return refuse(error, method, socket, "%s: %s", current, strerror(errno));
  unsigned mode = (unsigned)(st.st_mode & 07777);
  char who[300];
  if (st.st_uid != 0 && st.st_uid != owner) {
    char expected[300];
    user_label(st.st_uid, who, sizeof who);
    user_label(owner, expected, sizeof expected);
    return refuse(error, method, socket, "%s belongs to %s (mode %04o), not to %s or root, so that user could swap "
                  "the socket; if it runs the daemon you mean, set " SOCKET_OWNER_ENV "=%u", current, who, mode,
                  expected, (unsigned)st.st_uid);
  }
  if (S_ISLNK(st.st_mode)) { /* a trusted link: what it points to must be safe too */
    char *target = realpath(current, NULL);
    if (target == NULL)
      return refuse(error, method, socket, "%s: %s", current, strerror(errno));
    grpc_status_code code = check_directories(target, owner, holds_socket && last, method, socket, error);
    free(target);
    return code;
  }
  int sticky_ok = (st.st_mode & S_ISVTX) && !(holds_socket && last);
  if ((st.st_mode & 022) && !sticky_ok) {
    user_label(st.st_uid, who, sizeof who);
    return refuse(error, method, socket, "%s (owner %s, mode %04o) is writable by group or other users, who could "
                  "swap the socket; run: chmod go-w %s", current, who, mode, current);
  }
  return GRPC_STATUS_OK;
}

/* Checks `dir` and every directory above it (see "Socket owner" in qrmid_c.h). */
static grpc_status_code check_directories(const char *dir, uid_t owner, int holds_socket, const char *method,
                                          const char *socket, qrmid_error *error)
{
  char path[PATH_MAX];
  size_t len = strlen(dir);
  if (dir[0] != '/' || len >= sizeof path)
    return refuse(error, method, socket, "%s is not an absolute path of at most %d bytes", dir, PATH_MAX - 1);
  memcpy(path, dir, len + 1);
  while (len > 1 && path[len - 1] == '/')
    path[--len] = '\0';
  grpc_status_code code = check_directory("/", len == 1, owner, holds_socket, method, socket, error);
  for (size_t end = 2; code == GRPC_STATUS_OK && end <= len; end++) {
    if (end < len && path[end] != '/')
      continue;
    char saved = path[end];
    path[end] = '\0';
    code = check_directory(path, end == len, owner, holds_socket, method, socket, error);
    path[end] = saved;
  }
  return code;
}

/* Checks that a member's Unix socket is the expected owner's before a call sends anything. */
static grpc_status_code check_socket(const char *socket, uid_t owner, const char *method, qrmid_error *error)
{
  if (socket == NULL)
    return GRPC_STATUS_OK;
  char dir[PATH_MAX];
  const char *slash = strrchr(socket, '/');
  if (socket[0] != '/' || slash == NULL || (size_t)(slash - socket) >= sizeof dir)
    return refuse(error, method, socket, "the socket path must be absolute");
  size_t n = slash == socket ? 1 : (size_t)(slash - socket);
  memcpy(dir, socket, n);
  dir[n] = '\0';
  grpc_status_code code = check_directories(dir, owner, 1, method, socket, error);
  if (code != GRPC_STATUS_OK)
    return code;
  struct stat st;
  if (lstat(socket, &st) != 0)
    return set_error(error, GRPC_STATUS_UNAVAILABLE, "%s: no daemon at %s: %s", method, socket, strerror(errno));
  if (st.st_uid != 0 && st.st_uid != owner) {
    char who[300], expected[300];
    user_label(st.st_uid, who, sizeof who);
    user_label(owner, expected, sizeof expected);
    return refuse(error, method, socket, "socket %s belongs to %s, not to %s or root: it is not the daemon expected "
                  "there; if that user runs the daemon you mean, set " SOCKET_OWNER_ENV "=%u", socket, who, expected,
                  (unsigned)st.st_uid);
  }
  if (S_ISLNK(st.st_mode)) {
    char *target = realpath(socket, NULL);
    if (target == NULL)
      return refuse(error, method, socket, "%s: %s", socket, strerror(errno));
    code = check_socket(target, owner, method, error);
    free(target);
    return code;
  }
  if (!S_ISSOCK(st.st_mode))
    return refuse(error, method, socket, "%s is not a Unix socket", socket);
  return GRPC_STATUS_OK;
}

/* Sets a member's socket path and expected owner from a "unix:" target. */
static grpc_status_code set_socket(member *m, const char *owner, qrmid_error *error)
{
  if (strncmp(m->target, "unix:", 5) != 0)
    return GRPC_STATUS_OK;
  const char *path = m->target + 5;
  if (strncmp(path, "//", 2) == 0)
    path += 2;
  m->socket_path = strdup(path);
  if (m->socket_path == NULL)
    return set_error(error, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (owner == NULL || owner[0] == '\0')
    owner = getenv(SOCKET_OWNER_ENV);
  if (owner != NULL && owner[0] != '\0') {
    if (parse_owner(owner, &m->socket_owner) != 0)
      return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "socket owner '%s' is neither a user name nor a uid",
                       owner);
  } else {
    m->socket_owner = strcmp(path, SYSTEM_SOCKET) == 0 ? 0 : geteuid();
  }
  return GRPC_STATUS_OK;
}

/* --- members -------------------------------------------------------------- */

/* A malloc'd copy of member text [start, end) without surrounding blanks, an absolute path as "unix:PATH". */
static char *member_target(const char *start, const char *end)
{
  while (start < end && (*start == ' ' || *start == '\t'))
    start++;
  while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  size_t len = (size_t)(end - start);
  const char *prefix = len > 0 && start[0] == '/' ? "unix:" : "";
  char *target = malloc(strlen(prefix) + len + 1);
  if (target != NULL) {
    strcpy(target, prefix);
    memcpy(target + strlen(prefix), start, len);
    target[strlen(prefix) + len] = '\0';
  }
  return target;
}

/* Whether network target `member` ("host", "dns:///host", "ipv4:addr", ...) leaves out the port, so that gRPC
 * would call port 443, where no qrmid listens; the same rule as the Python client's (qrmid/client_members.py). */
static int lacks_port(const char *member)
{
  if (strncmp(member, "dns:", 4) == 0 || strncmp(member, "ipv4:", 5) == 0 || strncmp(member, "ipv6:", 5) == 0) {
    member = strchr(member, ':') + 1;
    if (strncmp(member, "//", 2) == 0) { /* dns://[authority]/host:port */
      const char *slash = strchr(member + 2, '/');
      member = slash != NULL ? slash + 1 : member + 2;
    }
  } else {
    const char *slash = strchr(member, '/');
    size_t head = slash != NULL ? (size_t)(slash - member) : strlen(member);
    if (member[0] == '/' || (memchr(member, ':', head) != NULL && member[0] != '['))
      return 0; /* a socket path, host:port, or a target of another scheme (unix:, vsock:, ...) */
  }
  if (member[0] == '[') /* [ipv6]:port */
    return strstr(member, "]:") == NULL;
  return strchr(member, ':') == NULL;
}

/* The first address of gRPC's own list `target` ("ipv4:a:p,b:p" or "ipv6:[a]:p,...") that leaves out the port, as
 * a malloc'd "ipv4:a"; NULL when every one has its port (or out of memory). */
static char *listed_without_port(const char *target)
{
  char *found = NULL;
  const char *start = target + 5;
  while (found == NULL) {
    const char *end = strchr(start, ',');
    size_t len = end != NULL ? (size_t)(end - start) : strlen(start);
    char *one = malloc(5 + len + 1);
    if (one == NULL)
      return NULL;
    memcpy(one, target, 5);
    memcpy(one + 5, start, len);
    one[5 + len] = '\0';
    if (lacks_port(one))
      found = one;
    else
      free(one);
    if (end == NULL)
      break;
    start = end + 1;
  }
  return found;
}

/* INVALID_ARGUMENT for a member that leaves out its port, naming it. */
static grpc_status_code refuse_portless(const char *member, qrmid_error *error)
{
  return set_error(error, GRPC_STATUS_INVALID_ARGUMENT,
                   "address '%s' has no port, so gRPC would call port 443, where no qrmid listens: write %s:PORT "
                   "with the port of the daemon's [daemon] tcp setting, or a Unix socket path", member, member);
}

/* Splits `address` into the client's members (see qrmid_client_new); their channels are made later. */
static grpc_status_code split_members(qrmid_client *c, const char *address, qrmid_error *error)
{
  int one = strncmp(address, "ipv4:", 5) == 0 || strncmp(address, "ipv6:", 5) == 0; /* gRPC's own list */
  size_t count = 1;
  for (const char *p = address; !one && *p != '\0'; p++)
    count += *p == ',';
  c->members = calloc(count, sizeof *c->members);
  if (c->members == NULL)
    return set_error(error, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  const char *start = address;
  for (size_t i = 0; i < count; i++) {
    const char *end = one ? start + strlen(start) : strchr(start, ',');
    if (end == NULL)
      end = start + strlen(start);
    c->members[i].target = member_target(start, end);
    c->member_count = i + 1;
    if (c->members[i].target == NULL)
      return set_error(error, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    if (c->members[i].target[0] == '\0')
      return set_error(error, GRPC_STATUS_INVALID_ARGUMENT,
                       "address '%s' has an empty member: list members as MEMBER,MEMBER,... (unix:/path, /path, "
                       "host:port or a gRPC target such as dns:///name:port)", address);
    if (one) {
      char *portless = listed_without_port(c->members[i].target);
      if (portless != NULL) {
        grpc_status_code code = refuse_portless(portless, error);
        free(portless);
        return code;
      }
    } else if (lacks_port(c->members[i].target)) {
      return refuse_portless(c->members[i].target, error);
    }
    start = end + 1;
  }
  return GRPC_STATUS_OK;
}

/* The retry policy (and, for a network target, balancing over its addresses and health checking) gRPC applies
 * inside one member; the same as the Python client's (qrmid/client_members.py). Not for Acquire, which has no
 * request id: only the retry across members makes it again, and qrmid_client_last_attempts() shows it. */
#define RETRY_POLICY                                                                                              \
  "\"methodConfig\":[{\"name\":[{\"service\":\"qrmid.v1.QuantumResources\"},{\"service\":\"qrmid.v1.AdminService\"}," \
  "{\"service\":\"qrmid.v1.MetricsService\"}],\"retryPolicy\":{\"maxAttempts\":3,\"initialBackoff\":\"0.05s\","        \
  "\"maxBackoff\":\"0.5s\",\"backoffMultiplier\":2,\"retryableStatusCodes\":[\"UNAVAILABLE\"]}},"                     \
  "{\"name\":[{\"service\":\"qrmid.v1.QuantumResources\",\"method\":\"Acquire\"}]}]"
static const char unix_service_config[] = "{" RETRY_POLICY "}";
static const char network_service_config[] =
    "{" RETRY_POLICY ",\"loadBalancingConfig\":[{\"round_robin\":{}}],\"healthCheckConfig\":{\"serviceName\":\"\"}}";

static void free_members(qrmid_client *c)
{
  for (size_t i = 0; i < c->member_count; i++) {
    if (c->members[i].channel != NULL)
      grpc_channel_destroy(c->members[i].channel);
    free(c->members[i].target);
    free(c->members[i].socket_path);
  }
  free(c->members);
  c->members = NULL;
  c->member_count = 0;
}

/* An absolute deadline `timeout_ms` from now, or none. */
static gpr_timespec deadline_after(int64_t timeout_ms)
{
  if (timeout_ms <= 0)
    return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

/* Waits before trying the `attempt`-th member (1: the second); 0 when the deadline would pass first. */
static int back_off(size_t attempt, gpr_timespec deadline)
{
  int64_t ms = FIRST_BACKOFF_MS;
  for (size_t i = 1; i < attempt && ms < MAX_BACKOFF_MS; i++)
    ms *= 2;
  if (ms > MAX_BACKOFF_MS)
    ms = MAX_BACKOFF_MS;
  gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
  if (gpr_time_cmp(until, deadline) >= 0)
    return 0;
  gpr_sleep_until(until);
  return 1;
}

/* Appends "target: message" of a failed member to the malloc'd list *faults. */
static void add_fault(char **faults, const char *target, const qrmid_error *error)
{
  const char *why = error != NULL && error->message != NULL ? error->message : "UNAVAILABLE";
  size_t old = *faults != NULL ? strlen(*faults) : 0;
  size_t size = old + strlen(target) + strlen(why) + 5;
  char *grown = realloc(*faults, size);
  if (grown == NULL)
    return;
  snprintf(grown + old, size - old, "%s%s: %s", old > 0 ? "; " : "", target, why);
  *faults = grown;
}

/* Records that no member could answer, naming each one's fault. */
static grpc_status_code no_member(qrmid_client *client, const char *method, char *faults, qrmid_error *error)
{
  grpc_status_code code = set_error(error, GRPC_STATUS_UNAVAILABLE, "%s: no member of %s could answer (%s); check "
                                    "that at least one of them runs, or fix the address", method, client->address,
                                    faults != NULL ? faults : "");
  free(faults);
  return code;
}

/* --- client ------------------------------------------------------------- */

grpc_status_code qrmid_client_new(const char *target,
                                  const qrmid_client_options *options,
                                  qrmid_client **client, qrmid_error *error)
{
  static const qrmid_client_options defaults = QRMID_CLIENT_OPTIONS_INIT;
  if (client == NULL)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "client is NULL");
  *client = NULL;
  if (target == NULL || target[0] == '\0')
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "target is empty");
  if (options == NULL)
    options = &defaults;
  if ((options->tls_client_key_pem == NULL) != (options->tls_client_cert_pem == NULL))
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT,
                     "TLS client key and certificate must be given together");
  if (options->max_receive_bytes < 0)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "max_receive_bytes is negative");

  qrmid_client *c = calloc(1, sizeof *c);
  if (c == NULL || (c->address = strdup(target)) == NULL) {
    free(c);
    return set_error(error, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  grpc_status_code code = split_members(c, target, error);
  for (size_t i = 0; code == GRPC_STATUS_OK && i < c->member_count; i++)
    code = set_socket(&c->members[i], options->socket_owner, error);
  if (code != GRPC_STATUS_OK) {
    free_members(c);
    free(c->address);
    free(c);
    return code;
  }
  grpc_init();

  grpc_channel_credentials *creds;
  if (options->use_tls) {
    grpc_ssl_pem_key_cert_pair pair = {options->tls_client_key_pem, options->tls_client_cert_pem};
    creds = grpc_ssl_credentials_create(options->tls_root_certs_pem,
                                        options->tls_client_key_pem != NULL ? &pair : NULL,
                                        NULL, NULL);
  } else {
    creds = grpc_insecure_credentials_create();
  }
  if (creds == NULL) {
    free_members(c);
    free(c->address);
    free(c);
    grpc_shutdown();
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "cannot create channel credentials");
  }

  grpc_arg args[4];
  size_t nargs = 0;
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[nargs].value.integer =
      options->max_receive_bytes > 0 ? options->max_receive_bytes : QRMID_C_DEFAULT_MAX_RECEIVE_BYTES;
  nargs++;
  if (options->use_tls && options->tls_server_name != NULL) {
    args[nargs].type = GRPC_ARG_STRING;
    args[nargs].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
    args[nargs].value.string = (char *)options->tls_server_name;
    nargs++;
  }
  if (c->member_count > 1) {
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = (char *)GRPC_ARG_MIN_RECONNECT_BACKOFF_MS; /* gRPC's connect timeout */
    args[nargs].value.integer = CONNECT_TIMEOUT_MS;
    nargs++;
  }
  args[nargs].type = GRPC_ARG_STRING;
  args[nargs].key = (char *)GRPC_ARG_SERVICE_CONFIG;
  nargs++;
  grpc_channel_args channel_args = {nargs, args};
  for (size_t i = 0; code == GRPC_STATUS_OK && i < c->member_count; i++) {
    member *m = &c->members[i];
    args[nargs - 1].value.string = (char *)(m->socket_path != NULL ? unix_service_config : network_service_config);
    m->channel = grpc_channel_create(m->target, creds, &channel_args);
    if (m->channel == NULL)
      code = set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "cannot create a channel to '%s'", m->target);
  }
  grpc_channel_credentials_release(creds);
  if (code != GRPC_STATUS_OK) {
    free_members(c);
    free(c->address);
    free(c);
    grpc_shutdown();
    return code;
  }
  *client = c;
  return set_ok(error);
}

size_t qrmid_client_member_count(const qrmid_client *client)
{
  return client != NULL ? client->member_count : 0;
}

size_t qrmid_client_last_attempts(const qrmid_client *client)
{
  return client != NULL ? __atomic_load_n(&client->last_attempts, __ATOMIC_RELAXED) : 0;
}

void qrmid_client_clear_metadata(qrmid_client *client)
{
  if (client == NULL)
    return;
  for (size_t i = 0; i < client->metadata_count; i++) {
    grpc_slice_unref(client->metadata[i].key);
    grpc_slice_unref(client->metadata[i].value);
  }
  free(client->metadata);
  client->metadata = NULL;
  client->metadata_count = 0;
}

void qrmid_client_free(qrmid_client *client)
{
  if (client == NULL)
    return;
  qrmid_client_clear_metadata(client);
  free_members(client);
  free(client->address);
  free(client->munge_socket);
  free(client);
  grpc_shutdown();
}

grpc_status_code qrmid_client_add_metadata(qrmid_client *client,
                                           const char *key, const char *value,
                                           qrmid_error *error)
{
  if (client == NULL || key == NULL || value == NULL)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "client, key and value must not be NULL");
  grpc_slice k = grpc_slice_from_copied_string(key);
  grpc_slice v = grpc_slice_from_copied_string(value);
  const char *bad = NULL;
  if (!grpc_header_key_is_legal(k))
    bad = "metadata key must be non-empty lower-case letters, digits, '-', '_' or '.'";
  else if (!grpc_is_binary_header(k) && !grpc_header_nonbin_value_is_legal(v))
    bad = "metadata value must be printable ASCII (use a key ending in -bin for binary)";
  if (bad == NULL) {
    grpc_metadata *grown = realloc(client->metadata, (client->metadata_count + 1) * sizeof *grown);
    if (grown == NULL) {
      bad = "out of memory";
    } else {
      client->metadata = grown;
      memset(&grown[client->metadata_count], 0, sizeof *grown);
      grown[client->metadata_count].key = k;
      grown[client->metadata_count].value = v;
      client->metadata_count++;
      return set_ok(error);
    }
  }
  grpc_slice_unref(k);
  grpc_slice_unref(v);
  return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "%s: '%s'", bad, key);
}

grpc_status_code qrmid_client_use_munge(qrmid_client *client, const char *munge_socket, qrmid_error *error)
{
  if (client == NULL)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "client is NULL");
  char *copy = NULL;
  if (munge_socket != NULL && munge_socket[0] != '\0') {
    copy = strdup(munge_socket);
    if (copy == NULL)
      return set_error(error, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  free(client->munge_socket);
  client->munge_socket = copy;
  client->use_munge = 1;
  return set_ok(error);
}

grpc_status_code qrmid_client_set_bearer_token(qrmid_client *client, const char *token, qrmid_error *error)
{
  if (client == NULL || token == NULL || token[0] == '\0')
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "client and a non-empty token are required");
  size_t size = strlen("Bearer ") + strlen(token) + 1;
  char *value = malloc(size);
  if (value == NULL)
    return set_error(error, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  snprintf(value, size, "Bearer %s", token);
  grpc_status_code code = qrmid_client_add_metadata(client, "authorization", value, error);
  memset(value, 0, size);
  free(value);
  if (code != GRPC_STATUS_OK) /* the message names the key only, never the token */
    return set_error(error, code, "the bearer token must be printable ASCII");
  return code;
}

/* Reads the first line of a token file into a malloc'd string; NULL with errno-based message on failure. */
static char *read_token(const char *path, qrmid_error *error)
{
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "cannot read the token file %s", path);
    return NULL;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t len = getline(&line, &cap, f);
  fclose(f);
  while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
    line[--len] = '\0';
  if (len <= 0) {
    free(line);
    set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "the token file %s is empty", path);
    return NULL;
  }
  return line;
}

grpc_status_code qrmid_client_auth_from_env(qrmid_client *client, qrmid_error *error)
{
  if (client == NULL)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "client is NULL");
  const char *mode = getenv("QRMID_AUTH");
  if (mode == NULL || mode[0] == '\0' || strcmp(mode, "none") == 0)
    return set_ok(error);
  if (strcmp(mode, "munge") == 0)
    return qrmid_client_use_munge(client, getenv("QRMID_MUNGE_SOCKET"), error);
  if (strcmp(mode, "token") != 0)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "QRMID_AUTH must be none, munge or token, not '%s'", mode);
  const char *path = getenv("QRMID_TOKEN_FILE");
  if (path == NULL || path[0] == '\0')
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "QRMID_AUTH=token needs QRMID_TOKEN_FILE");
  char *token = read_token(path, error);
  if (token == NULL)
    return error != NULL ? error->code : GRPC_STATUS_INVALID_ARGUMENT;
  grpc_status_code code = qrmid_client_set_bearer_token(client, token, error);
  memset(token, 0, strlen(token));
  free(token);
  return code;
}

/* --- call plumbing ------------------------------------------------------ */

/* State of one call, shared by the unary and the streaming paths. */
typedef struct call_state {
  grpc_completion_queue *cq;
  grpc_call *call;
  grpc_metadata *send_metadata; /* the client's, or a private copy plus a MUNGE credential */
  size_t send_metadata_count;
  int owns_send_metadata;
  grpc_metadata_array initial_metadata;
  grpc_metadata_array trailing_metadata;
  grpc_status_code status;
  grpc_slice details;
  const char *debug; /* gRPC's debug string, gpr_malloc'd */
} call_state;

/* The field number of the request's empty client_request_id, with a fresh random id in `id` (32 hex
 * digits); 0 when the request has no such field or the caller set it. */
static size_t request_id_to_add(const ProtobufCMessage *request, char id[40])
{
  const ProtobufCFieldDescriptor *field =
      protobuf_c_message_descriptor_get_field_by_name(request->descriptor, REQUEST_ID_FIELD);
  if (field == NULL || field->type != PROTOBUF_C_TYPE_STRING || field->label == PROTOBUF_C_LABEL_REPEATED)
    return 0;
  const char *value = *(char *const *)((const char *)request + field->offset);
  if (value != NULL && value[0] != '\0')
    return 0;
  unsigned char random[16];
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  ssize_t got = fd >= 0 ? read(fd, random, sizeof random) : -1;
  if (fd >= 0)
    close(fd);
  if (got != (ssize_t)sizeof random)
    return 0; /* no randomness: sent without an id, as the caller wrote it */
  for (size_t i = 0; i < sizeof random; i++)
    snprintf(id + 2 * i, 3, "%02x", random[i]);
  return field->id;
}

/* Bytes of the varint key of length-delimited field `number`. */
static size_t id_field_size(size_t number)
{
  size_t size = 1;
  for (uint64_t key = (uint64_t)number << 3; key >= 0x80; key >>= 7)
    size++;
  return size;
}

/* Writes field `number` = the 32 characters of `id` in protobuf's wire format. */
static void append_request_id(uint8_t *out, size_t number, const char *id)
{
  uint64_t key = ((uint64_t)number << 3) | 2; /* length-delimited */
  while (key >= 0x80) {
    *out++ = (uint8_t)(key | 0x80);
    key >>= 7;
  }
  *out++ = (uint8_t)key;
  *out++ = 32;
  memcpy(out, id, 32);
}

/* Checks the common arguments and encodes the request. */
static grpc_status_code prepare(qrmid_client *client, const char *method,
                                const ProtobufCMessageDescriptor *request_type,
                                const ProtobufCMessage *request,
                                const ProtobufCMessageDescriptor *response_type,
                                int64_t timeout_ms, grpc_byte_buffer **payload,
                                qrmid_error *error)
{
  *payload = NULL;
  if (client == NULL || method == NULL || request_type == NULL || response_type == NULL)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "client, method and types must not be NULL");
  if (request == NULL)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "%s: request is NULL", method);
  if (request->descriptor != request_type)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT,
                     "%s: request is not an initialised %s (use its __INIT macro or __init())",
                     method, request_type->name);
  if (!protobuf_c_message_check(request))
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT,
                     "%s: request %s is malformed (a repeated field with a NULL array?)",
                     method, request_type->name);
  if (timeout_ms < 0)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "%s: timeout_ms is negative", method);

  size_t size = protobuf_c_message_get_packed_size(request);
  char request_id[40];
  size_t id_field = request_id_to_add(request, request_id);
  size_t extra = id_field > 0 ? id_field_size(id_field) + 1 + 32 : 0;
  grpc_slice slice = grpc_slice_malloc(size + extra);
  uint8_t *out = GRPC_SLICE_START_PTR(slice);
  protobuf_c_message_pack(request, out);
  if (id_field > 0) /* a field appended to an encoded message sets it, as if the caller had */
    append_request_id(out + size, id_field, request_id);
  *payload = grpc_raw_byte_buffer_create(&slice, 1);
  grpc_slice_unref(slice);
  return GRPC_STATUS_OK;
}

/* The three ops that open a call: our metadata, the one request message, and the half-close. */
static void set_send_ops(grpc_op *ops, const call_state *st, grpc_byte_buffer *payload) {
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = st->send_metadata_count;
  ops[0].data.send_initial_metadata.metadata = st->send_metadata;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = payload;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
}

static void call_begin(call_state *st, const qrmid_client *client, const member *m, const char *method,
                       gpr_timespec deadline)
{
  memset(st, 0, sizeof *st);
  st->cq = grpc_completion_queue_create_for_next(NULL);
  grpc_slice method_slice = grpc_slice_from_copied_string(method);
  st->call = grpc_channel_create_call(m->channel, NULL, GRPC_PROPAGATE_DEFAULTS, st->cq,
                                      method_slice, NULL, deadline, NULL);
  grpc_slice_unref(method_slice);
  grpc_metadata_array_init(&st->initial_metadata);
  grpc_metadata_array_init(&st->trailing_metadata);
  st->status = GRPC_STATUS_UNKNOWN;
  st->details = grpc_empty_slice();
  st->send_metadata = client->metadata;
  st->send_metadata_count = client->metadata_count;
}

/* Adds a fresh MUNGE credential to the call's metadata when the client uses MUNGE. */
static grpc_status_code add_munge_credential(call_state *st, const qrmid_client *client, const char *method,
                                             qrmid_error *error)
{
  if (!client->use_munge)
    return GRPC_STATUS_OK;
  munge_ctx_t ctx = munge_ctx_create();
  if (ctx == NULL)
    return set_error(error, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  munge_err_t e = EMUNGE_SUCCESS;
  if (client->munge_socket != NULL)
    e = munge_ctx_set(ctx, MUNGE_OPT_SOCKET, client->munge_socket);
  char *credential = NULL;
  if (e == EMUNGE_SUCCESS)
    e = munge_encode(&credential, ctx, NULL, 0);
  if (e != EMUNGE_SUCCESS) {
    const char *why = munge_ctx_strerror(ctx);
    grpc_status_code code = set_error(error, e == EMUNGE_SOCKET ? GRPC_STATUS_UNAVAILABLE : GRPC_STATUS_UNAUTHENTICATED,
                                      "%s: cannot create a MUNGE credential: %s", method,
                                      why != NULL ? why : munge_strerror(e));
    munge_ctx_destroy(ctx);
    return code;
  }
  munge_ctx_destroy(ctx);
  size_t n = client->metadata_count;
  grpc_metadata *md = calloc(n + 1, sizeof *md);
  if (md == NULL) {
    free(credential);
    return set_error(error, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  if (n > 0)
    memcpy(md, client->metadata, n * sizeof *md);
  md[n].key = grpc_slice_from_static_string(MUNGE_METADATA_KEY);
  md[n].value = grpc_slice_from_copied_string(credential);
  free(credential);
  st->send_metadata = md;
  st->send_metadata_count = n + 1;
  st->owns_send_metadata = 1;
  return GRPC_STATUS_OK;
}

/* Runs one batch and waits for it. Returns 1 when it succeeded, 0 when it
 * failed (the status tells why) and -1 when it could not be started. */
static int run_batch(call_state *st, const grpc_op *ops, size_t nops, grpc_call_error *start_error)
{
  void *tag = (void *)ops;
  *start_error = grpc_call_start_batch(st->call, ops, nops, tag, NULL);
  if (*start_error != GRPC_CALL_OK)
    return -1;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(st->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_OP_COMPLETE && ev.tag == tag)
      return ev.success ? 1 : 0;
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      return -1;
  }
}

/* The op that receives the final status into st. */
static grpc_op recv_status_op(call_state *st)
{
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  op.data.recv_status_on_client.trailing_metadata = &st->trailing_metadata;
  op.data.recv_status_on_client.status = &st->status;
  op.data.recv_status_on_client.status_details = &st->details;
  op.data.recv_status_on_client.error_string = &st->debug;
  return op;
}

/* Frees everything the call holds. */
static void call_end(call_state *st)
{
  if (st->call != NULL)
    grpc_call_unref(st->call);
  if (st->owns_send_metadata) {
    grpc_slice_unref(st->send_metadata[st->send_metadata_count - 1].value);
    free(st->send_metadata);
  }
  grpc_metadata_array_destroy(&st->initial_metadata);
  grpc_metadata_array_destroy(&st->trailing_metadata);
  grpc_slice_unref(st->details);
  gpr_free((void *)st->debug);
  if (st->cq != NULL) {
    grpc_completion_queue_shutdown(st->cq);
    while (grpc_completion_queue_next(st->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(st->cq);
  }
  memset(st, 0, sizeof *st);
}

/* Decodes a received message; NULL when it is not a valid `type`. */
static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *type, grpc_byte_buffer *buffer)
{
  grpc_byte_buffer_reader reader;
  if (!grpc_byte_buffer_reader_init(&reader, buffer))
    return NULL;
  grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  ProtobufCMessage *msg =
      protobuf_c_message_unpack(type, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
  grpc_slice_unref(all);
  return msg;
}

/* --- unary -------------------------------------------------------------- */

/* Lists `call` on its client; 0 (the call not to be made) when the client is cancelled. */
static int track_call(qrmid_client *client, in_flight *node, grpc_call *call)
{
  pthread_mutex_lock(&calls_lock);
  int open = !client->cancelled;
  if (open) {
    node->call = call;
    node->next = client->calls;
    client->calls = node;
  }
  pthread_mutex_unlock(&calls_lock);
  return open;
}

static void untrack_call(qrmid_client *client, in_flight *node)
{
  pthread_mutex_lock(&calls_lock);
  for (in_flight **link = &client->calls; *link != NULL; link = &(*link)->next)
    if (*link == node) {
      *link = node->next;
      break;
    }
  pthread_mutex_unlock(&calls_lock);
}

void qrmid_client_cancel(qrmid_client *client)
{
  if (client == NULL)
    return;
  pthread_mutex_lock(&calls_lock);
  client->cancelled = 1;
  for (in_flight *node = client->calls; node != NULL; node = node->next)
    grpc_call_cancel_with_status(node->call, GRPC_STATUS_CANCELLED, "cancelled by the caller", NULL);
  pthread_mutex_unlock(&calls_lock);
}

/* One unary call on member `m`. */
static grpc_status_code call_member(qrmid_client *client, const member *m, const char *method,
                                    grpc_byte_buffer *request, const ProtobufCMessageDescriptor *response_type,
                                    ProtobufCMessage **response, gpr_timespec deadline, qrmid_error *error)
{
  call_state st;
  call_begin(&st, client, m, method, deadline);
  grpc_status_code code = add_munge_credential(&st, client, method, error);
  in_flight node;
  if (code == GRPC_STATUS_OK && !track_call(client, &node, st.call))
    code = set_error(error, GRPC_STATUS_CANCELLED, "%s: cancelled by the caller", method);
  if (code != GRPC_STATUS_OK) {
    call_end(&st);
    return code;
  }
  grpc_byte_buffer *payload = grpc_byte_buffer_copy(request);
  grpc_byte_buffer *received = NULL;
  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  set_send_ops(ops, &st, payload);
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &st.initial_metadata;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &received;
  ops[5] = recv_status_op(&st);

  grpc_call_error start_error;
  int ran = run_batch(&st, ops, 6, &start_error);
  untrack_call(client, &node);
  if (ran < 0) {
    code = set_error(error, GRPC_STATUS_INTERNAL, "%s: cannot start the call: %s", method,
                     grpc_call_error_to_string(start_error));
  } else if (st.status != GRPC_STATUS_OK) {
    code = set_status(error, st.status, st.details, st.debug);
  } else if (received == NULL) {
    code = set_error(error, GRPC_STATUS_INTERNAL, "%s: the server sent no response message", method);
  } else {
    ProtobufCMessage *msg = unpack(response_type, received);
    if (msg == NULL) {
      code = set_error(error, GRPC_STATUS_INTERNAL, "%s: cannot decode the response as %s", method,
                       response_type->name);
    } else {
      if (response != NULL)
        *response = msg;
      else
        protobuf_c_message_free_unpacked(msg, NULL);
      code = set_ok(error);
    }
  }
  if (received != NULL)
    grpc_byte_buffer_destroy(received);
  grpc_byte_buffer_destroy(payload);
  call_end(&st);
  return code;
}

grpc_status_code qrmid_call_unary(qrmid_client *client, const char *method,
                                  const ProtobufCMessageDescriptor *request_type,
                                  const ProtobufCMessage *request,
                                  const ProtobufCMessageDescriptor *response_type,
                                  ProtobufCMessage **response,
                                  int64_t timeout_ms, qrmid_error *error)
{
  if (response != NULL)
    *response = NULL;
  grpc_byte_buffer *payload;
  grpc_status_code code =
      prepare(client, method, request_type, request, response_type, timeout_ms, &payload, error);
  if (code != GRPC_STATUS_OK)
    return code;
  gpr_timespec deadline = deadline_after(timeout_ms);
  size_t first = __atomic_load_n(&client->current, __ATOMIC_RELAXED), sent = 0;
  char *faults = NULL;
  for (size_t attempt = 0; attempt < client->member_count; attempt++) {
    if (attempt > 0 && !back_off(attempt, deadline))
      break;
    size_t index = (first + attempt) % client->member_count;
    const member *m = &client->members[index];
    code = check_socket(m->socket_path, m->socket_owner, method, error);
    if (code == GRPC_STATUS_OK) {
      sent++;
      code = call_member(client, m, method, payload, response_type, response, deadline, error);
    }
    if (code != GRPC_STATUS_UNAVAILABLE || client->member_count == 1) {
      if (code == GRPC_STATUS_OK)
        __atomic_store_n(&client->current, index, __ATOMIC_RELAXED);
      __atomic_store_n(&client->last_attempts, sent, __ATOMIC_RELAXED);
      grpc_byte_buffer_destroy(payload);
      free(faults);
      return code;
    }
    add_fault(&faults, m->target, error);
  }
  __atomic_store_n(&client->last_attempts, sent, __ATOMIC_RELAXED);
  grpc_byte_buffer_destroy(payload);
  return no_member(client, method, faults, error);
}

/* --- server streaming --------------------------------------------------- */

struct qrmid_stream {
  call_state st;
  qrmid_client *client;
  char *method; /* copied, for messages */
  const ProtobufCMessageDescriptor *response_type;
  grpc_byte_buffer *request; /* kept to open the call on another member */
  gpr_timespec deadline;
  size_t member;   /* index of the member the call is on */
  size_t tried;    /* members tried so far, while no message has come */
  int received;    /* a message has come: the call stays on its member */
  char *faults;    /* what the members tried so far answered */
  int send_failed;          /* the request could not be sent */
  int got_initial_metadata; /* RECV_INITIAL_METADATA has been done */
  int finished;             /* the final status has been received */
  grpc_status_code final_code;
  char *final_message; /* kept to repeat the outcome on later next() calls */
};

/* Opens the stream's call on its member, or on the next ones whose Unix socket is refused before anything
 * is sent. UNAVAILABLE when none is left. */
static grpc_status_code stream_start(qrmid_stream *s, qrmid_error *error)
{
  qrmid_client *client = s->client;
  for (;;) {
    const member *m = &client->members[s->member];
    grpc_status_code code = check_socket(m->socket_path, m->socket_owner, s->method, error);
    if (code == GRPC_STATUS_OK) {
      call_begin(&s->st, client, m, s->method, s->deadline);
      code = add_munge_credential(&s->st, client, s->method, error);
      if (code != GRPC_STATUS_OK)
        return code;
      grpc_op ops[3];
      memset(ops, 0, sizeof ops);
      grpc_byte_buffer *payload = grpc_byte_buffer_copy(s->request);
      set_send_ops(ops, &s->st, payload);
      grpc_call_error start_error;
      int rc = run_batch(&s->st, ops, 3, &start_error);
      grpc_byte_buffer_destroy(payload);
      if (rc < 0)
        return set_error(error, GRPC_STATUS_INTERNAL, "%s: cannot start the call: %s", s->method,
                         grpc_call_error_to_string(start_error));
      s->send_failed = rc == 0; /* the real status comes with the first next() */
      return set_ok(error);
    }
    if (code != GRPC_STATUS_UNAVAILABLE || client->member_count == 1)
      return code;
    add_fault(&s->faults, m->target, error);
    if (++s->tried >= client->member_count || !back_off(s->tried, s->deadline)) {
      char *faults = s->faults;
      s->faults = NULL;
      return no_member(client, s->method, faults, error);
    }
    s->member = (s->member + 1) % client->member_count;
  }
}

grpc_status_code qrmid_stream_open(qrmid_client *client, const char *method,
                                   const ProtobufCMessageDescriptor *request_type,
                                   const ProtobufCMessage *request,
                                   const ProtobufCMessageDescriptor *response_type,
                                   int64_t timeout_ms, qrmid_stream **stream,
                                   qrmid_error *error)
{
  if (stream == NULL)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "stream is NULL");
  *stream = NULL;
  grpc_byte_buffer *payload;
  grpc_status_code code =
      prepare(client, method, request_type, request, response_type, timeout_ms, &payload, error);
  if (code != GRPC_STATUS_OK)
    return code;
  qrmid_stream *s = calloc(1, sizeof *s);
  if (s == NULL) {
    grpc_byte_buffer_destroy(payload);
    return set_error(error, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  s->request = payload;
  size_t method_len = strlen(method) + 1;
  s->method = malloc(method_len);
  if (s->method == NULL) {
    qrmid_stream_close(s);
    return set_error(error, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  memcpy(s->method, method, method_len);
  s->client = client;
  s->response_type = response_type;
  s->deadline = deadline_after(timeout_ms);
  s->member = __atomic_load_n(&client->current, __ATOMIC_RELAXED);
  code = stream_start(s, error);
  if (code != GRPC_STATUS_OK) {
    qrmid_stream_close(s);
    return code;
  }
  *stream = s;
  return GRPC_STATUS_OK;
}

/* After the call failed UNAVAILABLE before its first message: opens it on the next member. 1 when it was. */
static int stream_move_on(qrmid_stream *s, qrmid_error *err)
{
  qrmid_client *client = s->client;
  if (s->received || client->member_count == 1)
    return 0;
  add_fault(&s->faults, client->members[s->member].target, err);
  if (++s->tried >= client->member_count || !back_off(s->tried, s->deadline)) {
    char *faults = s->faults;
    s->faults = NULL;
    no_member(client, s->method, faults, err);
    return 0;
  }
  call_end(&s->st);
  s->send_failed = 0;
  s->got_initial_metadata = 0;
  s->member = (s->member + 1) % client->member_count;
  return stream_start(s, err) == GRPC_STATUS_OK;
}

/* Receives the final status and remembers the outcome. */
static grpc_status_code stream_finish(qrmid_stream *s, qrmid_error *error)
{
  grpc_op op = recv_status_op(&s->st);
  grpc_call_error start_error;
  grpc_status_code code;
  if (run_batch(&s->st, &op, 1, &start_error) < 0)
    code = set_error(error, GRPC_STATUS_INTERNAL, "%s: cannot receive the status: %s", s->method,
                     grpc_call_error_to_string(start_error));
  else
    code = set_status(error, s->st.status, s->st.details, s->st.debug);
  return code;
}

/* Ends the stream with `code` and a copy of the message in `error`. */
static grpc_status_code stream_end(qrmid_stream *s, grpc_status_code code, const qrmid_error *error)
{
  s->finished = 1;
  s->final_code = code;
  if (code != GRPC_STATUS_OK && error != NULL && error->message != NULL) {
    size_t n = strlen(error->message) + 1;
    s->final_message = malloc(n);
    if (s->final_message != NULL)
      memcpy(s->final_message, error->message, n);
  }
  return code;
}

grpc_status_code qrmid_stream_next(qrmid_stream *stream,
                                   const ProtobufCMessageDescriptor *response_type,
                                   ProtobufCMessage **message,
                                   qrmid_error *error)
{
  if (message != NULL)
    *message = NULL;
  if (stream == NULL || message == NULL)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "stream and message must not be NULL");
  if (response_type != stream->response_type)
    return set_error(error, GRPC_STATUS_INVALID_ARGUMENT, "%s: next() for a %s stream called with type %s",
                     stream->method, stream->response_type->name,
                     response_type != NULL ? response_type->name : "NULL");
  if (stream->finished) {
    if (stream->final_code == GRPC_STATUS_OK)
      return set_ok(error);
    return set_error(error, stream->final_code, "%s",
                     stream->final_message != NULL ? stream->final_message
                                                   : qrmid_status_name(stream->final_code));
  }

  /* A local error object so the final message can be kept even if the
   * caller passed NULL. */
  qrmid_error local = QRMID_ERROR_INIT;
  qrmid_error *err = error != NULL ? error : &local;
  grpc_status_code code;
  while (stream->send_failed) {
    code = stream_finish(stream, err);
    if (code != GRPC_STATUS_UNAVAILABLE || !stream_move_on(stream, err)) {
      code = stream_end(stream, err->code, err);
      qrmid_error_clear(&local);
      return code;
    }
  }

  grpc_byte_buffer *received = NULL;
  grpc_op ops[2];
  size_t nops = 0;
  memset(ops, 0, sizeof ops);
  if (!stream->got_initial_metadata) {
    ops[nops].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[nops].data.recv_initial_metadata.recv_initial_metadata = &stream->st.initial_metadata;
    nops++;
    stream->got_initial_metadata = 1;
  }
  ops[nops].op = GRPC_OP_RECV_MESSAGE;
  ops[nops].data.recv_message.recv_message = &received;
  nops++;
  grpc_call_error start_error;
  int rc = run_batch(&stream->st, ops, nops, &start_error);
  if (rc < 0) {
    code = set_error(err, GRPC_STATUS_INTERNAL, "%s: cannot receive: %s", stream->method,
                     grpc_call_error_to_string(start_error));
    code = stream_end(stream, code, err);
  } else if (rc == 0 || received == NULL) {
    /* End of stream or failure: the status says which. Before any message, UNAVAILABLE moves on. */
    code = stream_finish(stream, err);
    if (code == GRPC_STATUS_UNAVAILABLE && stream_move_on(stream, err)) {
      qrmid_error_clear(&local);
      return qrmid_stream_next(stream, response_type, message, error);
    }
    if (code == GRPC_STATUS_UNAVAILABLE && stream->received && stream->client->member_count > 1)
      __atomic_store_n(&stream->client->current, (stream->member + 1) % stream->client->member_count,
                       __ATOMIC_RELAXED); /* a stream opened again goes to the next member */
    code = stream_end(stream, err->code, err);
  } else {
    ProtobufCMessage *msg = unpack(stream->response_type, received);
    if (msg == NULL) {
      code = set_error(err, GRPC_STATUS_INTERNAL, "%s: cannot decode a message as %s", stream->method,
                       stream->response_type->name);
      qrmid_error scratch = QRMID_ERROR_INIT;
      grpc_call_cancel(stream->st.call, NULL);
      stream_finish(stream, &scratch);
      qrmid_error_clear(&scratch);
      code = stream_end(stream, code, err);
    } else {
      *message = msg;
      stream->received = 1;
      __atomic_store_n(&stream->client->current, stream->member, __ATOMIC_RELAXED);
      code = set_ok(err);
    }
  }
  if (received != NULL)
    grpc_byte_buffer_destroy(received);
  qrmid_error_clear(&local);
  return code;
}

void qrmid_stream_close(qrmid_stream *stream)
{
  if (stream == NULL)
    return;
  if (!stream->finished && stream->st.call != NULL) {
    /* Cancel, then collect the status so the call ends cleanly. */
    grpc_call_cancel(stream->st.call, NULL);
    grpc_op op = recv_status_op(&stream->st);
    grpc_call_error start_error;
    run_batch(&stream->st, &op, 1, &start_error);
  }
  call_end(&stream->st);
  if (stream->request != NULL)
    grpc_byte_buffer_destroy(stream->request);
  free(stream->faults);
  free(stream->final_message);
  free(stream->method);
  free(stream);
}
