/* Parsing of --qpu=NAME[:shared|:exclusive][:min_slots=N][,NAME...]; see qpu_request.h. */
#include "qpu_request.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ATTRIBUTES "shared, exclusive, min_slots=N"

static char *copy_text(const char *s, size_t n)
{
  char *out = malloc(n + 1);
  if (out != NULL) {
    memcpy(out, s, n);
    out[n] = '\0';
  }
  return out;
}

/* Sets *error to a malloc'd message (NULL when out of memory) and returns -1. */
__attribute__((format(printf, 2, 3))) static int fail(char **error, const char *fmt, ...)
{
  va_list args, again;
  va_start(args, fmt);
  va_copy(again, args);
  int n = vsnprintf(NULL, 0, fmt, args);
  *error = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (*error != NULL)
    vsnprintf(*error, (size_t)n + 1, fmt, again);
  va_end(again);
  va_end(args);
  return -1;
}

const char *qpu_mode_name(int exclusive)
{
  return exclusive ? "exclusive" : "shared";
}

void qpu_requests_free(struct qpu_request *requests, size_t n)
{
  for (size_t i = 0; requests != NULL && i < n; i++)
    free(requests[i].name);
  free(requests);
}

/* Reads the attributes after a name (`item` is "NAME:attr:attr", NUL-terminated) into *request. */
static int parse_attributes(char *item, struct qpu_request *request, char **error)
{
  int mode_given = 0;
  int slots_given = 0;
  char *attribute = strchr(item, ':');
  while (attribute != NULL) {
    *attribute++ = '\0';
    char *next = strchr(attribute, ':');
    if (next != NULL)
      *next = '\0';
    if (strcmp(attribute, "shared") == 0 || strcmp(attribute, "exclusive") == 0) {
      int exclusive = strcmp(attribute, "exclusive") == 0;
      if (mode_given && exclusive != request->exclusive)
        return fail(error, "--qpu: %s is asked both shared and exclusive; give one mode per resource", item);
      mode_given = 1;
      request->exclusive = exclusive;
    } else if (strncmp(attribute, "min_slots=", 10) == 0) {
      const char *digits = attribute + 10;
      char *end = NULL;
      unsigned long long value = *digits >= '0' && *digits <= '9' ? strtoull(digits, &end, 10) : 0;
      if (end == NULL || *end != '\0' || value > QPU_MAX_MIN_SLOTS)
        return fail(error, "--qpu: bad min_slots of %s: '%s' is not a whole number from 0 to %d", item, digits,
                    QPU_MAX_MIN_SLOTS);
      if (slots_given && (uint32_t)value != request->min_slots)
        return fail(error, "--qpu: %s is given two min_slots; give one", item);
      slots_given = 1;
      request->min_slots = (uint32_t)value;
    } else if (*attribute == '\0') {
      return fail(error, "--qpu: %s has an empty attribute (an extra ':'); attributes are " ATTRIBUTES, item);
    } else {
      return fail(error, "--qpu: unknown attribute '%s' of %s (known: " ATTRIBUTES "), e.g. --qpu=%s:exclusive",
                  attribute, item, item);
    }
    attribute = next;
  }
  return 0;
}

int qpu_requests_parse(const char *spec, const char *separators, struct qpu_request **out, size_t *n, char **error)
{
  *out = NULL;
  *n = 0;
  *error = NULL;
  char between[64] = "";
  size_t used = 0;
  for (const char *c = separators; *c != '\0' && used + 1 < sizeof(between); c++)
    if (*c != ':')
      between[used++] = *c;
  between[used] = '\0';
  if (used == 0)
    snprintf(between, sizeof(between), ",");

  struct qpu_request *requests = calloc(strlen(spec) / 2 + 1, sizeof(*requests)); /* at most one per 2 chars */
  if (requests == NULL)
    return -1;
  size_t count = 0;
  const char *cursor = spec;
  while (*cursor != '\0') {
    size_t length = strcspn(cursor, between);
    char *item = copy_text(cursor, length);
    cursor += length;
    cursor += strspn(cursor, between);
    if (item == NULL)
      goto bad; /* out of memory: no message */
    if (length == 0) {
      free(item);
      continue;
    }
    struct qpu_request request = {item, 0, 0, count};
    if (item[0] == ':') {
      fail(error, "--qpu: a resource name is missing before '%s'; write NAME%s", item, item);
      free(item);
      goto bad;
    }
    if (parse_attributes(item, &request, error) != 0) {
      free(item);
      goto bad;
    }
    /* parse_attributes cut the item at its first ':': it is the name now. */
    struct qpu_request *same = NULL;
    for (size_t i = 0; i < count && same == NULL; i++)
      if (strcmp(requests[i].name, item) == 0)
        same = &requests[i];
    if (same != NULL) {
      int differs = same->exclusive != request.exclusive || same->min_slots != request.min_slots;
      if (differs)
        fail(error, "--qpu: %s is given twice, as %s:%s:min_slots=%" PRIu32 " and %s:%s:min_slots=%" PRIu32
             "; give it once", item, item, qpu_mode_name(same->exclusive), same->min_slots, item,
             qpu_mode_name(request.exclusive), request.min_slots);
      free(item);
      if (differs)
        goto bad;
      continue;
    }
    requests[count++] = request;
  }
  *out = requests;
  *n = count;
  return 0;

bad:
  qpu_requests_free(requests, count);
  return -1;
}

/* Exclusive requests first, then by name. */
static int acquire_before(const void *a, const void *b)
{
  const struct qpu_request *x = a, *y = b;
  if (x->exclusive != y->exclusive)
    return y->exclusive - x->exclusive;
  return strcmp(x->name, y->name);
}

void qpu_requests_sort_for_acquire(struct qpu_request *requests, size_t n)
{
  if (n > 1)
    qsort(requests, n, sizeof(*requests), acquire_before);
}
