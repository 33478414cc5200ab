/* Message framing of an HTTP/1.1 request head (RFC 9112 section 6): which of Content-Length and
 * Transfer-Encoding a request may carry. libmicrohttpd 0.9.75 takes the first Content-Length and
 * reads the rest as the next request, prefers Transfer-Encoding over Content-Length without
 * complaint, and waits for the connection to close on a coding other than plain "chunked"; the
 * server checks every request head with this before it does anything else, and answers the
 * status it returns with "Connection: close".
 *
 * Rules (all header names case-insensitive, list elements separated by commas and optional
 * whitespace):
 *   - Content-Length: every value, in every occurrence, must be 1 to 19 decimal digits, and all
 *     must be equal (RFC 9110 8.6 lets a recipient take "5, 5" or two "5" headers as one value;
 *     differing values are an error)                                                       -> 400
 *   - Transfer-Encoding together with Content-Length                                       -> 400
 *   - Transfer-Encoding in an HTTP/1.0 request                                             -> 400
 *   - Transfer-Encoding: the codings of all occurrences, in order, must end with one "chunked"
 *     and contain it once: empty elements, "chunked" not last or twice, or "identity" (not a
 *     transfer coding since RFC 7230)                                                      -> 400
 *     any other coding before it (gzip, deflate, compress, x-foo): not implemented         -> 501
 * Pure function, no I/O: fuzzed by tests/fuzz/fuzz_http_framing.c. */
#ifndef PG_SERVE_HTTP_FRAMING_H
#define PG_SERVE_HTTP_FRAMING_H

#include <stddef.h>

typedef struct {
    const char *name;
    const char *value;
} http_header;

/* Returns 0 when the framing is acceptable, else the HTTP status to answer (400 or 501) with a
 * message in msg (always NUL-terminated when msg_cap > 0). http10: the request line said
 * HTTP/1.0. */
unsigned http_framing_check(const http_header *h, size_t n, int http10, char *msg, size_t msg_cap);

#endif
