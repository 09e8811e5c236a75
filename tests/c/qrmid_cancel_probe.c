/*
 * qrmid_client_cancel from another thread, against a live daemon:
 *
 *   qrmid_cancel_probe ADDRESS RESOURCE
 *
 * takes an exclusive lease on RESOURCE ("held: OK <lease id>"), then, on a second client, an exclusive Acquire
 * that waits in line (60 s) while a thread cancels that client once a line on stdin says so ("go"):
 * "waiting: <status>: <message>". A call made on the cancelled client afterwards: "after: <status>: <message>".
 * At end of input the held lease is released ("released: OK") and the probe exits 0.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <qrmid/v1/quantum_resources.qrmid-c.h>

static void *cancel_on_go(void *client)
{
  char line[16];
  if (fgets(line, sizeof(line), stdin) != NULL && strcmp(line, "go\n") == 0)
    qrmid_client_cancel(client);
  return NULL;
}

static Qrmid__V1__Lease *acquire(qrmid_client *client, const char *resource, uint32_t wait, qrmid_error *err)
{
  Qrmid__V1__AcquireRequest request = QRMID__V1__ACQUIRE_REQUEST__INIT;
  request.resource = (char *)resource;
  request.mode = QRMID__V1__LEASE_MODE__LEASE_MODE_EXCLUSIVE;
  request.wait_seconds = wait;
  Qrmid__V1__Lease *lease = NULL;
  qrmid_v1_quantum_resources_acquire(client, &request, &lease, (int64_t)(wait + 30) * 1000, err);
  return lease;
}

static void print_error(const char *what, const qrmid_error *err)
{
  printf("%s: %s: %s\n", what, qrmid_status_name(err->code), err->message != NULL ? err->message : "");
  fflush(stdout);
}

int main(int argc, char **argv)
{
  if (argc != 3) {
    fprintf(stderr, "usage: %s ADDRESS RESOURCE\n", argv[0]);
    return 2;
  }
  qrmid_error err = QRMID_ERROR_INIT;
  qrmid_client *holder = NULL, *waiter = NULL;
  int rc = 1;
  if (qrmid_client_new(argv[1], NULL, &holder, &err) != GRPC_STATUS_OK ||
      qrmid_client_new(argv[1], NULL, &waiter, &err) != GRPC_STATUS_OK) {
    print_error("connect", &err);
    goto out;
  }
  Qrmid__V1__Lease *held = acquire(holder, argv[2], 5, &err);
  if (held == NULL) {
    print_error("held", &err);
    goto out;
  }
  printf("held: OK %s\n", held->id);
  fflush(stdout);

  pthread_t thread;
  pthread_create(&thread, NULL, cancel_on_go, waiter);
  Qrmid__V1__Lease *late = acquire(waiter, argv[2], 60, &err);
  pthread_join(thread, NULL);
  if (late != NULL) {
    printf("waiting: OK %s\n", late->id);
    qrmid__v1__lease__free_unpacked(late, NULL);
  } else {
    print_error("waiting", &err);
  }
  late = acquire(waiter, argv[2], 60, &err);
  if (late != NULL)
    qrmid__v1__lease__free_unpacked(late, NULL);
  else
    print_error("after", &err);

  char line[16];
  while (fgets(line, sizeof(line), stdin) != NULL) {
  }
  Qrmid__V1__ReleaseRequest release = QRMID__V1__RELEASE_REQUEST__INIT;
  release.token = held->token;
  Qrmid__V1__ReleaseResponse *released = NULL;
  if (qrmid_v1_quantum_resources_release(holder, &release, &released, 30000, &err) == GRPC_STATUS_OK) {
    printf("released: OK\n");
    qrmid__v1__release_response__free_unpacked(released, NULL);
    rc = 0;
  } else {
    print_error("released", &err);
  }
  qrmid__v1__lease__free_unpacked(held, NULL);
out:
  qrmid_error_clear(&err);
  qrmid_client_free(waiter);
  qrmid_client_free(holder);
  return rc;
}
