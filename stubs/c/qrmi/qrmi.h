/*
 * qrmi.h: QRMI's C API, served by the qrmid daemon (libqrmid-qrmi).
 *
 * The declarations follow QRMI's published C API as of qrmi 0.26: the same
 * function names, argument and return types, enum names and values, struct
 * layouts and ownership rules, so a program written for QRMI's qrmi.h builds
 * unchanged and links with `pkg-config --libs qrmid-qrmi` instead of -lqrmi.
 * (Derived from QRMI's src/cext.rs and cbindgen.toml, from which QRMI
 * generates its qrmi.h: the functions marked up to @version 0.25.0, the usage
 * functions, and, so that programs written against neighbouring revisions
 * build too, the BUSY status code with qrmi_resource_status_is_accessible(),
 * qrmi_resource_describe() and the OQTOPUS payload, each marked below.)
 *
 * What differs, because every call goes to qrmid instead of a vendor:
 *  - The daemon: $QRMID_ADDRESS (one gRPC target or cluster members separated
 *    by commas), else unix:/run/qrmid/qrmid.sock for root, else the caller's
 *    own daemon under $XDG_RUNTIME_DIR (or /tmp/qrmid-UID); authentication from
 *    $QRMID_AUTH (none, munge, token) as every qrmid client. No vendor
 *    credential is read: qrmid holds them. A key QRMID_ADDRESS in a config
 *    map (qrmi_resource_new_from_config) or in a resource's "environment" in
 *    qrmi_config.json picks the daemon for that handle; other keys are ignored.
 *  - Leases are real: qrmi_resource_acquire() takes a qrmid lease (bound to
 *    $QRMI_JOB_ID when set) and returns its token; the handle's tasks run
 *    under it until qrmi_resource_release(). Without one, tasks run under the
 *    job's lease ($<resource>_QRMI_JOB_ACQUISITION_TOKEN, else
 *    $QRMI_JOB_ACQUISITION_TOKEN, as the Slurm plugin exports them), else none.
 *  - qrmi_resource_task_stop() cancels an unfinished task; the task's status,
 *    result (if any) and logs stay readable afterwards.
 *  - The resource type given to qrmi_resource_new() is reported back as given;
 *    the daemon knows what the resource is. Two extra types name qrmid's local
 *    simulators (QRMI_RESOURCE_TYPE_LOCAL_QISKIT, QRMI_RESOURCE_TYPE_LOCAL_PULSER).
 *  - Payloads: QISKIT_PRIMITIVE and PASQAL_CLOUD run; ALICE_BOB_FELIS,
 *    IQM_SERVER and OQTOPUS return QRMI_RETURN_CODE_UNSUPPORTED_PAYLOAD_ERROR.
 *  - Providers (qrmi_provider_*) list the daemon's resources of the given type
 *    instead of querying a vendor; usage functions return
 *    QRMI_RETURN_CODE_UNSUPPORTED_FUNCTION_ERROR (qrmid's charges are read with
 *    `qrmid usage`).
 *  - Thread safety: a QrmiQuantumResource handle may be shared by the threads
 *    of a process (OpenMP, MPI+threads): every qrmi_resource_* call on it may
 *    run at the same time as any other except qrmi_resource_free(). The last
 *    error (qrmi_get_last_error, _kind) is kept per thread, as in QRMI.
 *
 * Ownership is QRMI's: each char * handed out is freed with qrmi_string_free(),
 * each string array with qrmi_string_array_free(), each object with its own
 * *_free(); qrmi_config_resource_type_to_str() and
 * qrmi_resource_status_code_to_string() are the exceptions noted below.
 * A failing call returns a QrmiReturnCode other than SUCCESS (or NULL) and
 * records a message saying what failed and why (qrmi_get_last_error()).
 */
#ifndef QRMI_H
#define QRMI_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define QRMI_VERSION_MAJOR 0
#define QRMI_VERSION_MINOR 26
#define QRMI_VERSION_PATCH 0

#define QRMI_VERSION_NUMERIC(M, m, p) ((M) << 16 | (m) << 8 | (p))
#define QRMI_VERSION (QRMI_VERSION_MAJOR << 16 | QRMI_VERSION_MINOR << 8 | QRMI_VERSION_PATCH)

/* This header is qrmid's implementation of the API. */
#define QRMID_QRMI 1

#ifdef __cplusplus
extern "C" {
#endif

/* Outcome of a call. */
typedef enum QrmiReturnCode {
  QRMI_RETURN_CODE_SUCCESS = 0,
  /* Any failure without a more specific code (e.g. the daemon cannot be reached). */
  QRMI_RETURN_CODE_ERROR = 100,
  QRMI_RETURN_CODE_NULL_POINTER_ERROR = 101,
  QRMI_RETURN_CODE_ENV_VAR_NOT_SET_ERROR = 102,
  QRMI_RETURN_CODE_PARSE_ERROR = 103,
  QRMI_RETURN_CODE_UNSUPPORTED_RESOURCE_TYPE_ERROR = 104,
  QRMI_RETURN_CODE_UNSUPPORTED_FUNCTION_ERROR = 105,
  QRMI_RETURN_CODE_UNSUPPORTED_PAYLOAD_ERROR = 106,
  /* The task is not in a state that allows the call (a result before it completed). */
  QRMI_RETURN_CODE_TASK_NOT_READY_ERROR = 107,
  QRMI_RETURN_CODE_MISSING_CONFIG_KEY_ERROR = 108,
  /* The daemon refused a value (a payload that does not validate, a limit). */
  QRMI_RETURN_CODE_INVALID_INPUT_ERROR = 109,
  QRMI_RETURN_CODE_RESOURCE_NOT_FOUND_ERROR = 111,
  QRMI_RETURN_CODE_TASK_NOT_FOUND_ERROR = 112,
  /* The daemon refused the caller, or the lease named. */
  QRMI_RETURN_CODE_AUTHENTICATION_FAILED_ERROR = 113,
  QRMI_RETURN_CODE_INVALID_CONFIG_ERROR = 114,
} QrmiReturnCode;

/* Resource types, with their qrmi_config.json names. */
typedef enum QrmiResourceType {
  QRMI_RESOURCE_TYPE_IBM_QUANTUM_SYSTEM = 0,          /* "ibm-quantum-system" */
  QRMI_RESOURCE_TYPE_QISKIT_RUNTIME_SERVICE = 1,      /* "qiskit-runtime-service" */
  QRMI_RESOURCE_TYPE_IBM_QUANTUM_COMPUTE_SERVICE = 2, /* "ibm-quantum-compute-service" */
  QRMI_RESOURCE_TYPE_PASQAL_CLOUD = 3,                /* "pasqal-cloud" */
  QRMI_RESOURCE_TYPE_PASQAL_LOCAL = 4,                /* "pasqal-local" */
  QRMI_RESOURCE_TYPE_ALICE_BOB_FELIS = 5,             /* "alice-bob-felis" */
  QRMI_RESOURCE_TYPE_IQM_SERVER = 6,                  /* "iqm-server" */
  QRMI_RESOURCE_TYPE_OQTOPUS = 7,                     /* "oqtopus" */
  /* qrmid only: its local simulators. */
  QRMI_RESOURCE_TYPE_LOCAL_QISKIT = 100, /* "local-qiskit" */
  QRMI_RESOURCE_TYPE_LOCAL_PULSER = 101, /* "local-pulser" */
} QrmiResourceType;

/* A resource's state: ONLINE takes tasks; PAUSED is up but not running tasks.
 * BUSY comes from the QRMI revision where busy was a status code (before
 * qrmi_resource_status_busy()); it is declared so programs written for
 * that revision build, and qrmid never reports it. */
typedef enum QrmiResourceStatusCode {
  QRMI_RESOURCE_STATUS_CODE_ONLINE = 0,
  QRMI_RESOURCE_STATUS_CODE_OFFLINE = 1,
  QRMI_RESOURCE_STATUS_CODE_PAUSED = 2,
  QRMI_RESOURCE_STATUS_CODE_BUSY = 3,
} QrmiResourceStatusCode;

/* A task's state; COMPLETED, FAILED and CANCELLED are final. */
typedef enum QrmiTaskStatus {
  QRMI_TASK_STATUS_QUEUED = 0,
  QRMI_TASK_STATUS_RUNNING = 1,
  QRMI_TASK_STATUS_COMPLETED = 2,
  QRMI_TASK_STATUS_FAILED = 3,
  QRMI_TASK_STATUS_CANCELLED = 4,
} QrmiTaskStatus;

/* A loaded qrmi_config.json. */
typedef struct QrmiConfig QrmiConfig;

/* A handle on one resource of the daemon. */
typedef struct QrmiQuantumResource QrmiQuantumResource;

/* A resource provider: the daemon's resources of one type. */
typedef struct QrmiResourceProvider QrmiResourceProvider;

/* A snapshot of a resource's metadata (string keys and values). */
typedef struct QrmiResourceMetadata QrmiResourceMetadata;

/* A snapshot of a resource's status. */
typedef struct QrmiResourceStatus QrmiResourceStatus;

/* A description of a resource (qrmi_resource_describe()). */
typedef struct QrmiQuantumResourceInfo QrmiQuantumResourceInfo;

/* Receives log records when set with qrmi_log_callback_set(). */
typedef void (*QrmiLogCallback)(const char *level, const char *target, const char *message);

/* Task inputs, tagged by kind. */
typedef enum QrmiPayload_Tag {
  QRMI_PAYLOAD_QISKIT_PRIMITIVE,
  QRMI_PAYLOAD_PASQAL_CLOUD,
  QRMI_PAYLOAD_ALICE_BOB_FELIS,
  QRMI_PAYLOAD_IQM_SERVER,
  QRMI_PAYLOAD_OQTOPUS,
} QrmiPayload_Tag;

typedef struct QrmiPayload_QiskitPrimitive_Body {
  char *input;      /* the primitive's input (PUBs etc.) as JSON text */
  char *program_id; /* "sampler" or "estimator" */
} QrmiPayload_QiskitPrimitive_Body;

typedef struct QrmiPayload_PasqalCloud_Body {
  char *sequence;   /* a Pulser sequence, serialised as JSON (abstract representation) */
  int32_t job_runs; /* shots */
} QrmiPayload_PasqalCloud_Body;

typedef struct QrmiPayload_AliceBobFelis_Body {
  char *human_qir;
  char *input_params;
} QrmiPayload_AliceBobFelis_Body;

typedef struct QrmiPayload_IQMServer_Body {
  char *iqmjson;
  char *job_type;
  int use_timeslot;
  char *tag;
} QrmiPayload_IQMServer_Body;

/* From QRMI's newest revision (its examples/qrmi/c/oqtopus program): the
 * fields as that program sets them. */
typedef struct QrmiPayload_Oqtopus_Body {
  char *job_type; /* "sampling", "estimation", "multi_manual" or "sse" */
  char *program;
  int32_t shots;
  char *name;
  char *description;
  char *transpiler_info; /* JSON text, or NULL */
  char *simulator_info;  /* JSON text, or NULL */
  char *mitigation_info; /* JSON text, or NULL */
} QrmiPayload_Oqtopus_Body;

typedef struct QrmiPayload {
  QrmiPayload_Tag tag;
#if defined(__GNUC__) || defined(__clang__)
  __extension__
#endif
  union {
    QrmiPayload_QiskitPrimitive_Body QISKIT_PRIMITIVE;
    QrmiPayload_PasqalCloud_Body PASQAL_CLOUD;
    QrmiPayload_AliceBobFelis_Body ALICE_BOB_FELIS;
    QrmiPayload_IQMServer_Body IQM_SERVER;
    QrmiPayload_Oqtopus_Body OQTOPUS;
  };
} QrmiPayload;

typedef struct QrmiKeyValue {
  char *key;
  char *value;
} QrmiKeyValue;

typedef struct QrmiEnvironmentVariables {
  QrmiKeyValue *variables;
  size_t length;
} QrmiEnvironmentVariables;

/* Settings for qrmi_resource_new_from_config(); built as QrmiEnvironmentVariables. */
typedef QrmiEnvironmentVariables QrmiConfigMap;

/* One entry of qrmi_config.json. */
typedef struct QrmiResourceDef {
  char *name;
  QrmiResourceType type;
  bool is_dynamic;
  QrmiEnvironmentVariables environments;
} QrmiResourceDef;

/* Task slots of a resource. */
typedef struct QrmiResourceCapacity {
  uint64_t available_slots;
  uint64_t max_slots;
} QrmiResourceCapacity;

/* A list of resource handles, owned by the list (free it with the matching
 * *_resources_free(), never the handles one by one). */
typedef struct QrmiQuantumResources {
  QrmiQuantumResource **resources;
  size_t length;
} QrmiQuantumResources;

/* --- Common -------------------------------------------------------------- */

/* Routes the library's log records (warnings about skipped resources, failed
 * calls) to `callback` instead of stderr; NULL restores stderr. The level
 * threshold is $QRMI_LOG_LEVEL (error, warn, info, debug; default warn). */
QrmiReturnCode qrmi_log_callback_set(QrmiLogCallback callback);

/* Frees a string this library returned. NULL: NULL_POINTER_ERROR. */
QrmiReturnCode qrmi_string_free(char *ptr);

/* Frees an array of `size` strings this library returned, and the array. */
QrmiReturnCode qrmi_string_array_free(size_t size, char **array);

/* The message of this thread's last failed call (a new string, free it with
 * qrmi_string_free()), or NULL when none failed since the last read: reading
 * clears it. */
char *qrmi_get_last_error(void);

/* The code of this thread's last failed call; QRMI_RETURN_CODE_ERROR when
 * none failed. Not cleared by reading. */
QrmiReturnCode qrmi_get_last_error_kind(void);

/* --- Configuration file -------------------------------------------------- */

/* Loads a qrmi_config.json ({"resources": [{"name", "type", "environment"}]}).
 * NULL when it cannot be read or parsed (the last error says where). Free
 * with qrmi_config_free(). */
QrmiConfig *qrmi_config_load(const char *filename);

QrmiReturnCode qrmi_config_free(QrmiConfig *ptr);

/* The definition of resource `resource_id`, or NULL when the file has none.
 * Free with qrmi_config_resource_def_free(). */
QrmiResourceDef *qrmi_config_resource_def_get(QrmiConfig *config, const char *resource_id);

/* The qrmi_config.json name of `type`, e.g. "pasqal-cloud". The string is
 * static in this library: do not free it (QRMI's is allocated and never
 * freed by its callers either); NULL for an unknown type. */
const char *qrmi_config_resource_type_to_str(QrmiResourceType type);

QrmiReturnCode qrmi_config_resource_def_free(QrmiResourceDef *ptr);

/* The names of the file's resources. Free with qrmi_string_array_free(). */
QrmiReturnCode qrmi_config_resource_names_get(QrmiConfig *config, size_t *num_names, char ***names);

/* --- Quantum resource ---------------------------------------------------- */

/* A handle on the daemon's resource `resource_id`. Nothing is called yet:
 * NULL only for a NULL or empty id. Free with qrmi_resource_free(). */
QrmiQuantumResource *qrmi_resource_new(const char *resource_id, QrmiResourceType resource_type);

/* As qrmi_resource_new(); `config` may hold QRMID_ADDRESS (the daemon to
 * call); vendor keys are not used (the daemon has the credentials). */
QrmiQuantumResource *qrmi_resource_new_from_config(const char *resource_id, QrmiResourceType resource_type,
                                                   const QrmiConfigMap *config);

/* Frees the handle; its lease, if any, is left to qrmi_resource_release() or
 * to expire. */
QrmiReturnCode qrmi_resource_free(QrmiQuantumResource *ptr);

/* Whether the daemon has the resource and it is online. A resource the
 * daemon does not have is false with SUCCESS; an unreachable daemon fails. */
QrmiReturnCode qrmi_resource_is_accessible(QrmiQuantumResource *qrmi, bool *outp);

/* The resource's status now. Free with qrmi_resource_status_free(). */
QrmiReturnCode qrmi_resource_status(QrmiQuantumResource *qrmi, QrmiResourceStatus **outp);

QrmiReturnCode qrmi_resource_status_free(QrmiResourceStatus *ptr);

QrmiReturnCode qrmi_resource_status_code(QrmiResourceStatus *status, QrmiResourceStatusCode *outp);

/* Whether a task can be submitted now (ONLINE); from the same earlier
 * revision as QRMI_RESOURCE_STATUS_CODE_BUSY. */
QrmiReturnCode qrmi_resource_status_is_accessible(QrmiResourceStatus *status, bool *outp);

/* "online", "offline", "paused" or "busy"; static, do not free. */
const char *qrmi_resource_status_code_to_string(QrmiResourceStatusCode code);

/* Why the resource is not online (e.g. the failed status check), or NULL when
 * there is no reason. Free with qrmi_string_free(). */
char *qrmi_resource_status_reason(QrmiResourceStatus *status);

/* qrmid does not report health: UNSUPPORTED_FUNCTION_ERROR. */
QrmiReturnCode qrmi_resource_status_healthy(QrmiResourceStatus *status, bool *outp);

/* Busy: no free slot, or tasks waiting in the daemon's queue. */
QrmiReturnCode qrmi_resource_status_busy(QrmiResourceStatus *status, bool *outp);

/* Tasks waiting in the daemon's queue for the resource. */
QrmiReturnCode qrmi_resource_status_pending_job_count(QrmiResourceStatus *status, uint64_t *outp);

/* Free and total task slots. Free with qrmi_resource_capacity_free(). */
QrmiReturnCode qrmi_resource_status_capacity(QrmiResourceStatus *status, QrmiResourceCapacity **outp);

QrmiReturnCode qrmi_resource_capacity_free(QrmiResourceCapacity *ptr);

/* The resource's name, as given. Free with qrmi_string_free(). */
QrmiReturnCode qrmi_resource_id(QrmiQuantumResource *qrmi, char **outp);

/* The type given when the handle was made. */
QrmiReturnCode qrmi_resource_type(QrmiQuantumResource *qrmi, QrmiResourceType *outp);

/* Takes a lease on the resource (bound to $QRMI_JOB_ID when set) and returns
 * its token (free with qrmi_string_free()). The handle's later tasks run under
 * it until it is released. */
QrmiReturnCode qrmi_resource_acquire(QrmiQuantumResource *qrmi, char **acquisition_token);

/* Ends the lease with this token; the daemon cancels its unfinished tasks
 * when configured to. */
QrmiReturnCode qrmi_resource_release(QrmiQuantumResource *qrmi, const char *acquisition_token);

/* Starts a task; its id in *task_id (free with qrmi_string_free()). The
 * payload is validated by the daemon before it is queued: a bad one is
 * INVALID_INPUT_ERROR with the reason, and nothing is queued. */
QrmiReturnCode qrmi_resource_task_start(QrmiQuantumResource *qrmi, const QrmiPayload *payload, char **task_id);

/* Cancels the task if it has not finished; its status, result and logs stay readable. */
QrmiReturnCode qrmi_resource_task_stop(QrmiQuantumResource *qrmi, const char *task_id);

QrmiReturnCode qrmi_resource_task_status(QrmiQuantumResource *qrmi, const char *task_id, QrmiTaskStatus *status);

/* qrmid reports usage through `qrmid usage`: UNSUPPORTED_FUNCTION_ERROR. */
QrmiReturnCode qrmi_resource_task_usage(QrmiQuantumResource *qrmi, const char *task_id, char **usage_json_out);

/* The completed task's result, the vendor's JSON text (free with
 * qrmi_string_free()); TASK_NOT_READY_ERROR with the reason otherwise. */
QrmiReturnCode qrmi_resource_task_result(QrmiQuantumResource *qrmi, const char *task_id, char **outp);

/* The task's log lines. Free with qrmi_string_free(). */
QrmiReturnCode qrmi_resource_task_logs(QrmiQuantumResource *qrmi, const char *task_id, char **outp);

/* The device description as JSON text. Free with qrmi_string_free(). */
QrmiReturnCode qrmi_resource_target(QrmiQuantumResource *qrmi, char **outp);

/* The resource's metadata. Free with qrmi_resource_metadata_free(). */
QrmiReturnCode qrmi_resource_metadata(QrmiQuantumResource *qrmi, QrmiResourceMetadata **outp);

QrmiReturnCode qrmi_resource_metadata_free(QrmiResourceMetadata *ptr);

/* The value of `key` (free with qrmi_string_free()), or NULL when absent. */
char *qrmi_resource_metadata_value(QrmiResourceMetadata *metadata, const char *key);

/* The keys. Free with qrmi_string_array_free(). */
QrmiReturnCode qrmi_resource_metadata_keys(QrmiResourceMetadata *metadata, size_t *num_keys, char ***key_names);

/* A description of the resource, from the daemon's view of it and its
 * target. Free with qrmi_quantum_resource_info_free(). From QRMI's newest
 * revision (its examples/qrmi/c/ibm_quantum_system program), with the two
 * accessors that program uses. */
QrmiReturnCode qrmi_resource_describe(QrmiQuantumResource *qrmi, QrmiQuantumResourceInfo **outp);

QrmiReturnCode qrmi_quantum_resource_info_free(QrmiQuantumResourceInfo *ptr);

/* The backend's name as the daemon reports it (metadata "backend_name", else
 * the resource's name). Free with qrmi_string_free(). */
char *qrmi_quantum_resource_info_backend_display_name(QrmiQuantumResourceInfo *info);

/* The device's qubits (or atoms for a Pulser device), from its target;
 * UNSUPPORTED_FUNCTION_ERROR when the target does not say. */
QrmiReturnCode qrmi_quantum_resource_info_num_qubits(QrmiQuantumResourceInfo *info, uint32_t *outp);

/* --- Resource providers -------------------------------------------------- */

/* The daemon's resources of `resource_type`; `environments` may hold
 * QRMID_ADDRESS. Free with qrmi_provider_free(). */
QrmiResourceProvider *qrmi_provider_new(QrmiResourceType resource_type, const QrmiEnvironmentVariables *environments);

QrmiReturnCode qrmi_provider_free(QrmiResourceProvider *ptr);

/* The provider's online resources, the least busy first (fewest queued tasks,
 * then most free slots). `filters`: NULL, or key=value terms joined by '&'
 * matched against each resource's metadata. *resources_out must be zeroed;
 * free it with qrmi_provider_resources_free(). */
QrmiReturnCode qrmi_provider_resources(QrmiResourceProvider *provider, const char *filters,
                                       QrmiQuantumResources *resources_out);

QrmiReturnCode qrmi_provider_resources_free(QrmiQuantumResources *resources);

/* The first of qrmi_provider_resources(), or NULL with SUCCESS when none
 * matches. Free with qrmi_resource_free(). */
QrmiReturnCode qrmi_provider_least_busy(QrmiResourceProvider *provider, const char *filters,
                                        QrmiQuantumResource **resource_out);

/* UNSUPPORTED_FUNCTION_ERROR (see qrmi_resource_task_usage). */
QrmiReturnCode qrmi_provider_account_usage(QrmiResourceProvider *provider, char **usage_json_out);

/* --- The job's resources ------------------------------------------------- */

/* The job's accessible resources: the names in $QRMI_JOB_QPU_RESOURCES and
 * types in $QRMI_JOB_QPU_TYPES (or SLURM_JOB_QPU_*; separated by
 * $QRMI_LIST_DELIMITER, default ','), as the Slurm plugin exports them.
 * ENV_VAR_NOT_SET_ERROR when they are missing, INVALID_CONFIG_ERROR when
 * their lengths differ; an unknown type or an inaccessible resource is
 * skipped with a warning. Free with qrmi_service_resources_free(). */
QrmiReturnCode qrmi_service_resources(QrmiQuantumResources *resources_out);

QrmiReturnCode qrmi_service_resources_free(QrmiQuantumResources *resources);

#ifdef __cplusplus
}
#endif

#endif /* QRMI_H */
