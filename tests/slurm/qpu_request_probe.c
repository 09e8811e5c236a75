/* Prints how slurm/qpu_request.c reads a --qpu value: qpu_request_probe SPEC [SEPARATORS]
 *
 * One line per request in the order given, then one per request in acquisition order:
 *   given <position> <name> <mode> <min_slots>
 *   acquire <position> <name> <mode> <min_slots>
 * or, for a bad value, "error <message>" and exit status 1. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "qpu_request.h"

static void print(const char *what, const struct qpu_request *requests, size_t n)
{
  for (size_t i = 0; i < n; i++)
    printf("%s %zu %s %s %" PRIu32 "\n", what, requests[i].position, requests[i].name,
           qpu_mode_name(requests[i].exclusive), requests[i].min_slots);
}

int main(int argc, char **argv)
{
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s SPEC [SEPARATORS]\n", argv[0]);
    return 2;
  }
  struct qpu_request *requests = NULL;
  size_t n = 0;
  char *error = NULL;
  if (qpu_requests_parse(argv[1], argc == 3 ? argv[2] : ",", &requests, &n, &error) != 0) {
    printf("error %s\n", error != NULL ? error : "out of memory");
    free(error);
    return 1;
  }
  print("given", requests, n);
  qpu_requests_sort_for_acquire(requests, n);
  print("acquire", requests, n);
  qpu_requests_free(requests, n);
  return 0;
}
