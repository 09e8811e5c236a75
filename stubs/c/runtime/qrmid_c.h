/*
 * qrmid C client runtime.
 *
 * The thin layer under the generated call wrappers (*.qrmid-c.h): a client
 * (one gRPC channel plus metadata sent on every call), the error type, and
 * the generic unary and server-streaming calls on the gRPC core C API with
 * protobuf-c messages. Application code normally includes a generated header
 * such as "qrmid/v1/quantum_resources.qrmid-c.h" and uses only the client,
 * the error and the typed wrappers.
 *
 * Calling convention (every call):
 *  - returns a grpc_status_code: GRPC_STATUS_OK on success, otherwise the
 *    server's status or a local one (INVALID_ARGUMENT for bad arguments,
 *    INTERNAL for a message that cannot be encoded or decoded,
 *    DEADLINE_EXCEEDED, UNAVAILABLE when the daemon cannot be reached);
 *  - fills `error` (when not NULL) with that code and a malloc'd message a
 *    person can act on; on success error->message is NULL. An error struct
 *    must start as QRMID_ERROR_INIT; each call frees the message it held,
 *    so one struct can be reused; qrmid_error_clear() frees the last one;
 *  - timeout_ms > 0 sets a deadline that many milliseconds from now (for a
 *    stream: for the whole stream); QRMID_C_NO_DEADLINE (0) sets none.
 *
 * Thread safety: a client may be used from several threads at once, as long
 * as its metadata and authentication are not changed meanwhile. A stream belongs to one thread.
 */
#ifndef QRMID_C_H
#define QRMID_C_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QRMID_C_VERSION "0.1.0"

/* timeout_ms value meaning "no deadline". */
#define QRMID_C_NO_DEADLINE 0

/* Default cap on one received message when options leave it at 0. */
#define QRMID_C_DEFAULT_MAX_RECEIVE_BYTES (64 * 1024 * 1024)

/* Outcome of a failed call. */
typedef struct qrmid_error {
  grpc_status_code code; /* GRPC_STATUS_OK when there was no error */
  char *message;         /* malloc'd, NUL-terminated; NULL when code is OK */
} qrmid_error;

#define QRMID_ERROR_INIT { GRPC_STATUS_OK, NULL }

/* Frees error->message and resets the struct to QRMID_ERROR_INIT. */
void qrmid_error_clear(qrmid_error *error);

/* The canonical name of a status code, e.g. "NOT_FOUND" (static string). */
const char *qrmid_status_name(grpc_status_code code);

/* How to reach the daemon. Zero-initialise (QRMID_CLIENT_OPTIONS_INIT) and
 * set what you need; a NULL options pointer means all defaults. */
typedef struct qrmid_client_options {
  /* 0: plaintext (unix: sockets, trusted networks); 1: TLS. */
  int use_tls;
  /* PEM roots that sign the server's certificate; NULL: gRPC's defaults. */
  const char *tls_root_certs_pem;
  /* Client key and certificate chain (PEM) for mutual TLS; both or none. */
  const char *tls_client_key_pem;
  const char *tls_client_cert_pem;
  /* Name to check the server certificate against instead of the target's
   * host; NULL for the host. */
  const char *tls_server_name;
  /* Largest message accepted from the server; 0: the default above. */
  int max_receive_bytes;
  /* For a "unix:" target: the user (name or uid) whose daemon the socket
   * must be. NULL: $QRMID_SOCKET_OWNER, else root for
   * /run/qrmid/qrmid.sock, else the calling user (a private daemon). Root
   * is always accepted too. See "Socket owner" below. */
  const char *socket_owner;
} qrmid_client_options;

#define QRMID_CLIENT_OPTIONS_INIT { 0, NULL, NULL, NULL, NULL, 0, NULL }

/* A connection to a daemon, or to the members of a cluster (one gRPC
 * channel each, connected lazily). */
typedef struct qrmid_client qrmid_client;

/* Creates a client for `target`: one member, a gRPC target such as
 * "unix:/run/qrmid/qrmid.sock", an absolute socket path, "unix-abstract:name",
 * "localhost:50051" or "dns:///qrmid.example.org:443", or several members
 * separated by commas in any mix of those forms ("ipv4:" and "ipv6:" targets
 * keep gRPC's own comma-separated address list and are one member). An
 * empty member, and a network address without its port (gRPC would call
 * port 443), are INVALID_ARGUMENT. Initialises gRPC (reference-counted).
 * On success *client must be freed with qrmid_client_free(). An unknown
 * socket owner is INVALID_ARGUMENT.
 *
 * Failover: a call goes to the member that answered last; when it fails
 * UNAVAILABLE (refused socket, connection refused, a daemon draining for
 * shutdown) it is made again on the next member, each member once per call,
 * after a short backoff (50 ms, doubled up to 500 ms), within the call's
 * deadline; when no member answers, UNAVAILABLE names each member's fault.
 * A stream moves on the same way until its first message; after that an
 * UNAVAILABLE ends it and the next stream opened starts at the next member.
 * Inside one member gRPC retries UNAVAILABLE too, and a network target that
 * resolves to several addresses is balanced round-robin over those whose
 * health service answers SERVING. A request with an empty string field
 * client_request_id (StartTask) is sent with a fresh random one, so that a
 * retry on another member finds the task the first attempt may have made.
 *
 * Socket owner: before every call on a "unix:" target, the socket and each
 * directory above it must belong to the expected user or root, and no other
 * user may write those directories (a sticky one such as /tmp is fine above
 * the socket's own); otherwise the call fails with UNAVAILABLE and nothing,
 * neither credential nor request, is sent. Only that user or root can then
 * swap the socket before gRPC connects. "unix-abstract:" names have no
 * owner to check. */
grpc_status_code qrmid_client_new(const char *target,
                                  const qrmid_client_options *options,
                                  qrmid_client **client, qrmid_error *error);

/* How many members the client's target names. */
size_t qrmid_client_member_count(const qrmid_client *client);

/* How many members the client's last unary call was sent to: more than one
 * means an earlier member failed, possibly after it acted on the request
 * (an answer lost with its connection). Meaningful when calls on the client
 * are made one at a time. */
size_t qrmid_client_last_attempts(const qrmid_client *client);

/* Cancels the client's unary calls in flight, from any thread, and every
 * unary call made on it later: they end CANCELLED and no other member is
 * tried. For a caller that must stop waiting on a long call (the Slurm plugin
 * when its job is cancelled while an exclusive Acquire waits in line). */
void qrmid_client_cancel(qrmid_client *client);

/* Closes the channels, frees the client and releases gRPC (grpc_shutdown once
 * the last client is gone). NULL is a no-op. */
void qrmid_client_free(qrmid_client *client);

/* Adds a header sent with every later call of this client, e.g.
 * ("authorization", "Bearer ..."). Keys are lower case; keys ending in "-bin"
 * carry binary values. Both strings are copied. */
grpc_status_code qrmid_client_add_metadata(qrmid_client *client,
                                           const char *key, const char *value,
                                           qrmid_error *error);

/* Removes every header added with qrmid_client_add_metadata(). */
void qrmid_client_clear_metadata(qrmid_client *client);

/* --- Authentication (see docs/security.md) ------------------------------- */

/* Sends a fresh MUNGE credential (metadata "x-qrmid-munge") with every later
 * call, encoded by the munged at `munge_socket` (NULL or "": libmunge's
 * default). The daemon accepts each credential once, so each call gets its
 * own; a call whose credential cannot be made fails with UNAVAILABLE (munged
 * unreachable) or UNAUTHENTICATED, without contacting the daemon. */
grpc_status_code qrmid_client_use_munge(qrmid_client *client, const char *munge_socket, qrmid_error *error);

/* Sends "authorization: Bearer <token>" with every later call (a service
 * token of the daemon's tokens file). The token is copied; error messages
 * never contain it. */
grpc_status_code qrmid_client_set_bearer_token(qrmid_client *client, const char *token, qrmid_error *error);

/* Configures authentication as the Python client does: QRMID_AUTH=none
 * (or unset: nothing), munge (QRMID_MUNGE_SOCKET optional) or token (the
 * first line of the file QRMID_TOKEN_FILE). */
grpc_status_code qrmid_client_auth_from_env(qrmid_client *client, qrmid_error *error);

/* --- Generic calls, used by the generated wrappers ----------------------- */

/* One unary call of `method` ("/package.Service/Method"). On success
 * *response (if response is not NULL) is a new message of response_type, to
 * free with protobuf_c_message_free_unpacked(*response, NULL). */
grpc_status_code qrmid_call_unary(qrmid_client *client, const char *method,
                                  const ProtobufCMessageDescriptor *request_type,
                                  const ProtobufCMessage *request,
                                  const ProtobufCMessageDescriptor *response_type,
                                  ProtobufCMessage **response,
                                  int64_t timeout_ms, qrmid_error *error);

/* A server-streaming call in progress. */
typedef struct qrmid_stream qrmid_stream;

/* Starts a server-streaming call. On success *stream must be passed to
 * qrmid_stream_close(); on failure *stream is NULL. Errors from the server
 * (including "cannot connect") are reported by the first qrmid_stream_next(). */
grpc_status_code qrmid_stream_open(qrmid_client *client, const char *method,
                                   const ProtobufCMessageDescriptor *request_type,
                                   const ProtobufCMessage *request,
                                   const ProtobufCMessageDescriptor *response_type,
                                   int64_t timeout_ms, qrmid_stream **stream,
                                   qrmid_error *error);

/* Waits for the next message. GRPC_STATUS_OK with *message != NULL: a new
 * message (free it with protobuf_c_message_free_unpacked(*message, NULL));
 * GRPC_STATUS_OK with *message == NULL: the stream ended normally; anything
 * else: the call failed. After the end or an error, later calls return the
 * same outcome again. response_type must be the one given to open. */
grpc_status_code qrmid_stream_next(qrmid_stream *stream,
                                   const ProtobufCMessageDescriptor *response_type,
                                   ProtobufCMessage **message,
                                   qrmid_error *error);

/* Cancels the call if it has not ended and frees the stream. NULL is a no-op. */
void qrmid_stream_close(qrmid_stream *stream);

#ifdef __cplusplus
}
#endif

#endif /* QRMID_C_H */
