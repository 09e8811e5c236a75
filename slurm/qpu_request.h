/*
 * The resources a job asks for with --qpu, parsed: NAME[:shared|:exclusive][:min_slots=N], several
 * separated by commas (or the job's list delimiter). No Slurm or gRPC here, so it is checked on its own.
 */
#ifndef QPU_REQUEST_H
#define QPU_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#define QPU_MAX_MIN_SLOTS 1000000 /* the daemon caps min_slots per resource; this only bounds the number */

/* One resource of --qpu. */
struct qpu_request {
  char *name;         /* resource name */
  int exclusive;      /* 1: an exclusive lease; 0: shared (the default) */
  uint32_t min_slots; /* slots kept free for the lease's tasks; 0: none */
  size_t position;    /* index in --qpu, duplicates left out */
};

/* Parses `spec` (the --qpu value) into *out, a malloc'd array of *n requests in the order given; a name given
 * twice with the same attributes counts once. `separators` are the characters between resources (':' never
 * separates: it starts an attribute). Returns 0; on a bad spec -1 with *error a malloc'd message saying what is
 * wrong and how to write it (NULL when out of memory). */
int qpu_requests_parse(const char *spec, const char *separators, struct qpu_request **out, size_t *n, char **error);

/* Puts the requests in the order the plugin acquires them: exclusive ones first, each kind by name. Jobs asking
 * for the same resources exclusively then wait for them in the same order, so none holds one while waiting for
 * another that a job waiting for the first holds; and no shared lease is held while an exclusive one is waited
 * for. `position` keeps the order given. */
void qpu_requests_sort_for_acquire(struct qpu_request *requests, size_t n);

void qpu_requests_free(struct qpu_request *requests, size_t n);

/* "shared" or "exclusive". */
const char *qpu_mode_name(int exclusive);

#endif
