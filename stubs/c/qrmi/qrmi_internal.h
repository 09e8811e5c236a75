/*
 * libqrmid-qrmi internals shared by its modules: the resource handle, the
 * per-thread last error, logging, and the helpers that turn the daemon's
 * gRPC statuses into QRMI return codes.
 */
#ifndef QRMI_INTERNAL_H
#define QRMI_INTERNAL_H

#include <pthread.h>

#include "qrmi.h"
#include "qrmid/v1/quantum_resources.qrmid-c.h"

/* Each call to the daemon must finish within this many milliseconds, as the
 * Python client's default; a task's result download gets the same. */
#define QRMI_CALL_TIMEOUT_MS 60000

/* Internal functions are not exported from the shared library. */
#define QRMI_HIDDEN __attribute__((visibility("hidden")))

struct QrmiQuantumResource {
  char *id;
  QrmiResourceType type;
  char *address; /* the daemon's gRPC target, for messages */
  qrmid_client *client;
  pthread_mutex_t lock; /* guards lease */
  char *lease;          /* token of this handle's latest acquire, or NULL */
};

/* Log levels, most severe first. */
typedef enum { QRMI_LOG_ERROR, QRMI_LOG_WARN, QRMI_LOG_INFO, QRMI_LOG_DEBUG } qrmi_log_level;

/* Logs a record (printf-style) to the callback, else stderr, if the level passes. */
QRMI_HIDDEN void qrmi_log(qrmi_log_level level, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* Records `code` and the formatted message as this thread's last error (and
 * logs it at ERROR); returns `code`. */
QRMI_HIDDEN QrmiReturnCode qrmi_fail(QrmiReturnCode code, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* Records a failed daemon call: `what` (e.g. "task_start(local-qiskit)"), the
 * gRPC status and message, mapped to a QRMI code; NOT_FOUND becomes
 * `not_found`. Returns the code. */
QRMI_HIDDEN QrmiReturnCode qrmi_fail_call(const QrmiQuantumResource *qrmi, const char *what, const qrmid_error *err,
                              QrmiReturnCode not_found);

/* strdup that records an out-of-memory last error and returns NULL on failure. */
QRMI_HIDDEN char *qrmi_strdup(const char *s);

/* The daemon address to use: `configured` if set and not empty, else
 * $QRMID_ADDRESS, else the default socket (as the Python client). Malloc'd. */
QRMI_HIDDEN char *qrmi_daemon_address(const char *configured);

/* A new handle on `id` at `address` (NULL: qrmi_daemon_address(NULL)), or NULL
 * with the last error set. */
QRMI_HIDDEN QrmiQuantumResource *qrmi_handle_new(const char *id, QrmiResourceType type, const char *address);

/* The value of `key` (or its lower-case form) in `vars`, or NULL. */
QRMI_HIDDEN const char *qrmi_env_lookup(const QrmiEnvironmentVariables *vars, const char *key);

/* The qrmi_config.json name of `type` (static), or NULL. */
QRMI_HIDDEN const char *qrmi_type_name(QrmiResourceType type);

/* The type named `name`; 0 with *type set when known, -1 otherwise. */
QRMI_HIDDEN int qrmi_type_from_name(const char *name, QrmiResourceType *type);

/* Fetches the resource as the daemon reports it (GetResource); the caller
 * frees it with qrmid__v1__resource__free_unpacked(). */
QRMI_HIDDEN QrmiReturnCode qrmi_get_resource(QrmiQuantumResource *qrmi, const char *what, Qrmid__V1__Resource **out);

#endif /* QRMI_INTERNAL_H */
