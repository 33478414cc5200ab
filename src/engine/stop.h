/* Stop strings in a text stream: text that could still become a stop string is held back, so a
 * stop string that spans tokens never leaks into the output, and nothing after it is emitted. */
#ifndef PG_ENGINE_STOP_H
#define PG_ENGINE_STOP_H

#include <stddef.h>

#include "pagoda.h"

typedef struct {
    char **stops;   /* [n] owned copies */
    size_t *lens;   /* [n] */
    int n;
    char *held;     /* text not emitted yet (could start a stop string) */
    size_t n_held, cap_held;
    char *out;      /* what the last call emits */
    size_t cap_out;
    int matched;    /* 1 + the index of the stop string that ended the stream; 0: none */
} stop_matcher;

pagoda_status stop_init(stop_matcher *s, const char *const *stops, int n);
void stop_free(stop_matcher *s);
/* Adds text. *emit (valid until the next call) gets what can be shown now. Returns 1 when a
 * stop string completed: *emit is the text before it and the stream is over. -1: out of memory. */
int stop_push(stop_matcher *s, const char *text, size_t len, const char **emit, size_t *n_emit);
/* End of stream without a stop string: everything still held. */
void stop_flush(stop_matcher *s, const char **emit, size_t *n_emit);

#endif
