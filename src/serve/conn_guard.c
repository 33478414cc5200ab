/* The connection guard (see conn_guard.h). */
#include "serve/conn_guard.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { IP_BUCKETS = 4096, REAP_PERIOD_MS = 200 };

/* Connections open from one client address. */
typedef struct ip_entry {
    struct ip_entry *next;
    unsigned char addr[16];
    int len; /* 4 or 16 */
    int count;
} ip_entry;

/* One open connection (MHD's socket context). */
typedef struct guard_conn {
    struct guard_conn *prev, *next;
    int fd;
    conn_guard_phase_t phase;
    double deadline; /* monotonic seconds; 0: none */
    int reaped;
    ip_entry *ip;
} guard_conn;

struct conn_guard {
    conn_guard_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int stop;
    guard_conn *conns;
    ip_entry *buckets[IP_BUCKETS];
    conn_guard_stats st;
    long long logged_reaped, logged_refused;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The address as a key: IPv4 (also IPv4-mapped IPv6) as 4 bytes, IPv6 as 16. Returns the length,
 * 0 for another family; *loopback tells 127.0.0.0/8 and ::1. */
static int addr_key(const struct sockaddr *sa, unsigned char key[16], int *loopback) {
    *loopback = 0;
    if (!sa) return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        memcpy(key, &a->sin_addr, 4);
        *loopback = key[0] == 127;
        return 4;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
            memcpy(key, a->sin6_addr.s6_addr + 12, 4);
            *loopback = key[0] == 127;
            return 4;
        }
        memcpy(key, a->sin6_addr.s6_addr, 16);
        *loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
        return 16;
    }
    return 0;
}

static unsigned addr_hash(const unsigned char *key, int len) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < len; i++) h = (h ^ key[i]) * 16777619u;
    return h % IP_BUCKETS;
}

static ip_entry *ip_find(conn_guard *g, const unsigned char *key, int len) {
    for (ip_entry *e = g->buckets[addr_hash(key, len)]; e; e = e->next)
        if (e->len == len && !memcmp(e->addr, key, (size_t)len)) return e;
    return NULL;
}

static void ip_release(conn_guard *g, ip_entry *e) {
    if (--e->count > 0) return;
    ip_entry **p = &g->buckets[addr_hash(e->addr, e->len)];
    while (*p != e) p = &(*p)->next;
    *p = e->next;
    free(e);
}

/* ---- the reaper ---- */

static void *reaper_main(void *arg) {
    conn_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += REAP_PERIOD_MS * 1000L * 1000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        if (g->stop) break;
        double now = now_s();
        /* the mutex is held: a connection's close notification (which precedes MHD's close of
         * the socket) waits for it, so every fd here is still the connection's own */
        for (guard_conn *c = g->conns; c; c = c->next) {
            if (c->reaped || c->deadline <= 0 || now < c->deadline) continue;
            shutdown(c->fd, SHUT_RDWR);
            c->reaped = 1;
            if (c->phase == GUARD_HEAD) g->st.n_reaped_head++;
            else g->st.n_reaped_body++;
        }
        long long reaped = g->st.n_reaped_head + g->st.n_reaped_body;
        long long refused = g->st.n_refused_total + g->st.n_refused_per_ip;
        if (reaped != g->logged_reaped || refused != g->logged_refused) {
            conn_guard_stats st = g->st;
            long long d_reaped = reaped - g->logged_reaped, d_refused = refused - g->logged_refused;
            g->logged_reaped = reaped;
            g->logged_refused = refused;
            double head = g->cfg.head_timeout_s, body = g->cfg.body_timeout_s;
            pthread_mutex_unlock(&g->mu);
            /* one line per pass, not one per connection: a flood must not flood the log */
            if (d_reaped)
                fprintf(stderr,
                        "pagoda: closed %lld connection(s) past the request deadline (head %.0f s, body %.0f s; "
                        "%lld + %lld since start)\n",
                        d_reaped, head, body, st.n_reaped_head, st.n_reaped_body);
            if (d_refused)
                fprintf(stderr,
                        "pagoda: refused %lld connection(s) over the connection limits (%lld total, %lld per "
                        "address since start; %lld open)\n",
                        d_refused, st.n_refused_total, st.n_refused_per_ip, st.n_open);
            pthread_mutex_lock(&g->mu);
        }
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

conn_guard *conn_guard_create(const conn_guard_config *c) {
    conn_guard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->cfg = *c;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&g->mu, NULL);
    if (pthread_create(&g->thread, NULL, reaper_main, g) != 0) {
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    return g;
}

void conn_guard_destroy(conn_guard *g) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stop = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    /* connections the daemon never reported closed (it was not stopped) */
    while (g->conns) {
        guard_conn *c = g->conns;
        g->conns = c->next;
        free(c);
    }
    for (int i = 0; i < IP_BUCKETS; i++)
        while (g->buckets[i]) {
            ip_entry *e = g->buckets[i];
            g->buckets[i] = e->next;
            free(e);
        }
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* ---- MHD hooks ---- */

enum MHD_Result conn_guard_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
    (void)addrlen;
    conn_guard *g = cls;
    unsigned char key[16];
    int loopback = 0, len = addr_key(addr, key, &loopback);
    enum MHD_Result ok = MHD_YES;
    pthread_mutex_lock(&g->mu);
    /* counted when MHD reports the connection started: a few accepted at the same moment on
     * different HTTP threads may overshoot by that many (MHD's own limit leaves room for it) */
    if (g->st.n_open >= g->cfg.max_connections) {
        g->st.n_refused_total++;
        ok = MHD_NO;
    } else if (g->cfg.max_per_ip > 0 && len && (!loopback || g->cfg.per_ip_loopback)) {
        const ip_entry *e = ip_find(g, key, len);
        if (e && e->count >= g->cfg.max_per_ip) {
            g->st.n_refused_per_ip++;
            ok = MHD_NO;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return ok;
}

void conn_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode code) {
    conn_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        *socket_context = NULL;
        const union MHD_ConnectionInfo *fi = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ai = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        guard_conn *c = fi ? calloc(1, sizeof *c) : NULL;
        if (!c) return; /* untracked: MHD's idle timeout still applies */
        unsigned char key[16];
        int loopback = 0, len = addr_key(ai ? ai->client_addr : NULL, key, &loopback);
        c->fd = fi->connect_fd;
        c->phase = GUARD_HEAD;
        c->deadline = now_s() + g->cfg.head_timeout_s;
        pthread_mutex_lock(&g->mu);
        if (len) {
            ip_entry *e = ip_find(g, key, len);
            if (!e && (e = calloc(1, sizeof *e))) {
                memcpy(e->addr, key, (size_t)len);
                e->len = len;
                unsigned b = addr_hash(key, len);
                e->next = g->buckets[b];
                g->buckets[b] = e;
            }
            if (e) {
                e->count++;
                c->ip = e;
            }
        }
        c->next = g->conns;
        if (g->conns) g->conns->prev = c;
        g->conns = c;
        g->st.n_open++;
        pthread_mutex_unlock(&g->mu);
        *socket_context = c;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        guard_conn *c = *socket_context;
        if (!c) return;
        *socket_context = NULL;
        pthread_mutex_lock(&g->mu);
        if (c->prev) c->prev->next = c->next;
        else g->conns = c->next;
        if (c->next) c->next->prev = c->prev;
        if (c->ip) ip_release(g, c->ip);
        g->st.n_open--;
        pthread_mutex_unlock(&g->mu);
        free(c);
    }
}

void conn_guard_phase(conn_guard *g, struct MHD_Connection *conn, conn_guard_phase_t phase) {
    if (!g) return;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    guard_conn *c = ci ? ci->socket_context : NULL;
    if (!c) return;
    double now = now_s();
    pthread_mutex_lock(&g->mu);
    c->phase = phase;
    c->deadline = phase == GUARD_HEAD   ? now + g->cfg.head_timeout_s :
                  phase == GUARD_BODY   ? now + g->cfg.body_timeout_s :
                                          0;
    pthread_mutex_unlock(&g->mu);
}

void conn_guard_get_stats(conn_guard *g, conn_guard_stats *out) {
    pthread_mutex_lock(&g->mu);
    *out = g->st;
    pthread_mutex_unlock(&g->mu);
}
