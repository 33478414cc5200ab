/* The disconnect watchdog of `pagoda serve`: MHD does not notice a client that goes away while
 * its connection is suspended (waiting for engine events), so a thread looks at the sockets of
 * the suspended generation requests every 250 ms and cancels the requests whose client has gone,
 * freeing their KV blocks without waiting for the next write. A client that only shut its sending
 * side (half-close) is not gone: it still gets its answer. The same thread cancels streams whose
 * client stopped reading (unsent output over cfg.max_unsent_bytes), and requests past their
 * answer deadline (http_req.answer_by: resumed so the HTTP side answers, whether or not the engine
 * ever reports). */
#ifndef PG_SERVE_WATCHDOG_H
#define PG_SERVE_WATCHDOG_H

#include "serve/request.h"

/* 0 ok, -1 if the thread could not start (the server runs without it). */
int watchdog_start(pg_server *s);
void watchdog_stop(pg_server *s); /* joins the thread; no-op if it never started */

/* A submitted request whose HTTP side is open enters the list; it leaves when MHD completes it. */
void watchdog_add(http_req *hr);
void watchdog_remove(http_req *hr); /* no-op if not in the list */

/* Asks for a look now (any thread, any lock held: it only signals). */
void watchdog_poke(pg_server *s);

#endif
