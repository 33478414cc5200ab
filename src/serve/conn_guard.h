/* The connection guard of `pagoda serve`: limits on connections that libmicrohttpd 0.9.75 does
 * not enforce well enough against hostile clients.
 *
 *  - Deadlines. MHD's connection timeout restarts on every byte received, so a client that sends
 *    one header byte every few seconds holds its connection forever (slowloris). The guard gives
 *    each request a head deadline (from the connection's start, or from the end of the previous
 *    request on a kept-alive connection, until the access handler's first call) and a body
 *    deadline (from there until the body has been received), whatever trickles in meanwhile. A
 *    reaper thread shuts down (shutdown(2)) the socket of a connection past its deadline, and MHD
 *    then closes it as a connection the client ended. While a response is being produced or sent
 *    no deadline applies (a generation may take long; MHD's idle timeout still does).
 *  - Limits. At its connection limit MHD stops accepting and new connections wait in the listen
 *    backlog until the idle timeout frees a slot; the guard instead refuses (MHD closes at once)
 *    a connection beyond max_connections (MHD's own limit is set a little higher so it never
 *    binds), and one beyond max_per_ip from the same address. Loopback clients (127.0.0.0/8,
 *    ::1) are exempt from the per-address limit unless per_ip_loopback is set: a benchmark or a
 *    reverse proxy on the same host legitimately opens hundreds of connections.
 *
 * Hooks: conn_guard_accept is MHD's accept-policy callback, conn_guard_notify its
 * MHD_OPTION_NOTIFY_CONNECTION callback (both take the guard as cls); the access handler calls
 * conn_guard_phase on its first call (head received) and when the request is fully received or
 * answered, and the completion callback when a request ends. Thread-safe (one mutex). */
#ifndef PG_SERVE_CONN_GUARD_H
#define PG_SERVE_CONN_GUARD_H

#include <microhttpd.h>
#include <sys/socket.h>

typedef struct {
    int max_connections;   /* > 0 */
    int max_per_ip;        /* 0: no per-address limit */
    int per_ip_loopback;   /* 1: the per-address limit applies to loopback clients too */
    double head_timeout_s; /* > 0 */
    double body_timeout_s; /* > 0 */
} conn_guard_config;

typedef struct conn_guard conn_guard;

/* Starts the reaper thread. Returns NULL when out of memory or threads. */
conn_guard *conn_guard_create(const conn_guard_config *c);
/* Stop the MHD daemon first (its close notifications call into the guard). NULL is a no-op. */
void conn_guard_destroy(conn_guard *g);

enum MHD_Result conn_guard_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen);
void conn_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode code);

typedef enum {
    GUARD_HEAD = 0, /* waiting for a request head: head deadline */
    GUARD_BODY,     /* head received, body still coming: body deadline */
    GUARD_ANSWER,   /* request received (or answered early): no deadline */
} conn_guard_phase_t;
/* Moves the connection's request to a phase; GUARD_HEAD starts the next request's head deadline
 * (call it when a request completes on a connection that stays open). */
void conn_guard_phase(conn_guard *g, struct MHD_Connection *conn, conn_guard_phase_t phase);

typedef struct {
    long long n_open;           /* connections open now */
    long long n_reaped_head;    /* closed at the head deadline, since start */
    long long n_reaped_body;    /* closed at the body deadline */
    long long n_refused_total;  /* refused at max_connections */
    long long n_refused_per_ip; /* refused at max_per_ip */
} conn_guard_stats;
void conn_guard_get_stats(conn_guard *g, conn_guard_stats *out);

#endif
