/* Headers every response of `pagoda serve` carries beyond its own: X-Request-Id (the client's,
 * echoed, or one made for the request) and, where --allowed-origins is set, CORS: the
 * Access-Control-* headers on answers to allowed origins and the full answer to a preflight
 * (OPTIONS with Access-Control-Request-Method). Without --allowed-origins no CORS header is sent,
 * so browsers keep pages of other origins from reading the API. HTTP threads only. */
#ifndef PG_SERVE_RESPONSE_HEADERS_H
#define PG_SERVE_RESPONSE_HEADERS_H

#include <microhttpd.h>

#include "serve/request.h"

#define RH_MAX_REQUEST_ID 128 /* longer ids, or ids with bytes outside '!'..'~', are replaced */

/* At the request's head: takes its X-Request-Id, or makes one (unique across restarts; the
 * completion's "id" is then "chatcmpl-" / "cmpl-" and the same digits). */
void rh_request_begin(http_req *hr);
/* Adds the headers to r before it is queued (send.c). A preflight answer (OPTIONS) lists the
 * methods of its Allow header. */
void rh_add(http_req *hr, struct MHD_Response *r);

#endif
