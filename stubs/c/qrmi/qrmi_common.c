/*
 * Strings, the per-thread last error, logging and the daemon's address:
 * what every other module of libqrmid-qrmi uses.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "qrmi_internal.h"

/* This thread's last failure, as QRMI keeps it: per thread, the message read
 * once; the message is a thread-specific value so a thread that ends frees it. */
static pthread_key_t last_error_key;
static pthread_once_t last_error_once = PTHREAD_ONCE_INIT;
static _Thread_local QrmiReturnCode last_error_kind = QRMI_RETURN_CODE_ERROR;

static void last_error_key_create(void)
{
  pthread_key_create(&last_error_key, free);
}

/* Replaces this thread's last error message with `message` (owned), returning the old one. */
static char *swap_last_error(char *message)
{
  pthread_once(&last_error_once, last_error_key_create);
  char *old = pthread_getspecific(last_error_key);
  pthread_setspecific(last_error_key, message);
  return old;
}

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static QrmiLogCallback log_callback; /* guarded by log_lock */

static const char *const LEVEL_NAMES[] = {"ERROR", "WARN", "INFO", "DEBUG"};

/* The threshold: $QRMI_LOG_LEVEL, else $RUST_LOG when it is a plain level, else warn. */
static qrmi_log_level log_threshold(void)
{
  const char *names[] = {getenv("QRMI_LOG_LEVEL"), getenv("RUST_LOG")};
  for (size_t n = 0; n < 2; n++) {
    if (names[n] == NULL)
      continue;
    for (int level = QRMI_LOG_ERROR; level <= QRMI_LOG_DEBUG; level++)
      if (strcasecmp(names[n], LEVEL_NAMES[level]) == 0 ||
          (level == QRMI_LOG_WARN && strcasecmp(names[n], "warning") == 0))
        return (qrmi_log_level)level;
    if (strcasecmp(names[n], "trace") == 0)
      return QRMI_LOG_DEBUG;
    if (strcasecmp(names[n], "off") == 0)
      return (qrmi_log_level)-1;
  }
  return QRMI_LOG_WARN;
}

void qrmi_log(qrmi_log_level level, const char *format, ...)
{
  if ((int)level > (int)log_threshold())
    return;
  char message[2048];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  pthread_mutex_lock(&log_lock);
  QrmiLogCallback callback = log_callback;
  pthread_mutex_unlock(&log_lock);
  if (callback != NULL)
    callback(LEVEL_NAMES[level], "qrmi", message);
  else
    fprintf(stderr, "[qrmi %s] %s\n", LEVEL_NAMES[level], message);
}

QrmiReturnCode qrmi_log_callback_set(QrmiLogCallback callback)
{
  pthread_mutex_lock(&log_lock);
  log_callback = callback;
  pthread_mutex_unlock(&log_lock);
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_fail(QrmiReturnCode code, const char *format, ...)
{
  va_list args;
  va_start(args, format);
  int n = vsnprintf(NULL, 0, format, args);
  va_end(args);
  char *message = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (message != NULL) {
    va_start(args, format);
    vsnprintf(message, (size_t)n + 1, format, args);
    va_end(args);
  }
  free(swap_last_error(message));
  last_error_kind = code;
  qrmi_log(QRMI_LOG_ERROR, "%s", message != NULL ? message : "out of memory");
  return code;
}

QrmiReturnCode qrmi_fail_call(const QrmiQuantumResource *qrmi, const char *what, const qrmid_error *err,
                              QrmiReturnCode not_found)
{
  QrmiReturnCode code;
  switch (err->code) {
  case GRPC_STATUS_NOT_FOUND:
    code = not_found;
    break;
  case GRPC_STATUS_FAILED_PRECONDITION:
    code = QRMI_RETURN_CODE_TASK_NOT_READY_ERROR;
    break;
  case GRPC_STATUS_INVALID_ARGUMENT:
  case GRPC_STATUS_OUT_OF_RANGE:
    code = QRMI_RETURN_CODE_INVALID_INPUT_ERROR;
    break;
  case GRPC_STATUS_PERMISSION_DENIED:
  case GRPC_STATUS_UNAUTHENTICATED:
    code = QRMI_RETURN_CODE_AUTHENTICATION_FAILED_ERROR;
    break;
  case GRPC_STATUS_UNIMPLEMENTED:
    code = QRMI_RETURN_CODE_UNSUPPORTED_FUNCTION_ERROR;
    break;
  default:
    code = QRMI_RETURN_CODE_ERROR;
  }
  const char *message = err->message != NULL ? err->message : "";
  if (err->code == GRPC_STATUS_UNAVAILABLE || err->code == GRPC_STATUS_DEADLINE_EXCEEDED)
    return qrmi_fail(code, "%s: %s: %s (qrmid at %s; set QRMID_ADDRESS to the daemon's address)", what,
                     qrmid_status_name(err->code), message, qrmi->address);
  return qrmi_fail(code, "%s: %s: %s", what, qrmid_status_name(err->code), message);
}

char *qrmi_get_last_error(void)
{
  return swap_last_error(NULL);
}

QrmiReturnCode qrmi_get_last_error_kind(void)
{
  return last_error_kind;
}

char *qrmi_strdup(const char *s)
{
  char *copy = strdup(s);
  if (copy == NULL)
    qrmi_fail(QRMI_RETURN_CODE_ERROR, "out of memory");
  return copy;
}

QrmiReturnCode qrmi_string_free(char *ptr)
{
  if (ptr == NULL)
    return QRMI_RETURN_CODE_NULL_POINTER_ERROR;
  free(ptr);
  return QRMI_RETURN_CODE_SUCCESS;
}

QrmiReturnCode qrmi_string_array_free(size_t size, char **array)
{
  if (array == NULL)
    return QRMI_RETURN_CODE_NULL_POINTER_ERROR;
  for (size_t i = 0; i < size; i++)
    free(array[i]);
  free(array);
  return QRMI_RETURN_CODE_SUCCESS;
}

char *qrmi_daemon_address(const char *configured)
{
  if (configured != NULL && configured[0] != '\0')
    return qrmi_strdup(configured);
  const char *from_env = getenv("QRMID_ADDRESS");
  if (from_env != NULL && from_env[0] != '\0')
    return qrmi_strdup(from_env);
  if (geteuid() == 0)
    return qrmi_strdup("unix:/run/qrmid/qrmid.sock");
  char path[4096];
  const char *runtime = getenv("XDG_RUNTIME_DIR");
  const char *tmp = getenv("TMPDIR");
  if (runtime != NULL && runtime[0] != '\0')
    snprintf(path, sizeof path, "unix:%s/qrmid/qrmid.sock", runtime);
  else
    snprintf(path, sizeof path, "unix:%s/qrmid-%u/qrmid/qrmid.sock", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp",
             (unsigned)getuid());
  return qrmi_strdup(path);
}

const char *qrmi_env_lookup(const QrmiEnvironmentVariables *vars, const char *key)
{
  if (vars == NULL || vars->variables == NULL)
    return NULL;
  for (size_t i = 0; i < vars->length; i++)
    if (vars->variables[i].key != NULL && vars->variables[i].value != NULL &&
        strcmp(vars->variables[i].key, key) == 0)
      return vars->variables[i].value;
  for (size_t i = 0; i < vars->length; i++)
    if (vars->variables[i].key != NULL && vars->variables[i].value != NULL &&
        strcasecmp(vars->variables[i].key, key) == 0)
      return vars->variables[i].value;
  return NULL;
}
