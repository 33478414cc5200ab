/* The disconnect watchdog (see watchdog.h). */
#include "serve/watchdog.h"

#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

void watchdog_add(http_req *hr) {
    pg_server *s = hr->srv;
    pthread_mutex_lock(&s->live_mu);
    hr->live_prev = NULL;
    hr->live_next = s->live;
    if (s->live) s->live->live_prev = hr;
    s->live = hr;
    hr->in_live = 1;
    pthread_mutex_unlock(&s->live_mu);
}

void watchdog_remove(http_req *hr) {
    pg_server *s = hr->srv;
    pthread_mutex_lock(&s->live_mu);
    if (hr->in_live) {
        if (hr->live_prev) hr->live_prev->live_next = hr->live_next;
        else s->live = hr->live_next;
        if (hr->live_next) hr->live_next->live_prev = hr->live_prev;
        hr->in_live = 0;
    }
    pthread_mutex_unlock(&s->live_mu);
}

/* 1 if the peer closed or reset the connection (EOF or an error on a non-blocking peek) */
static int peer_gone(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci || ci->connect_fd < 0) return 0;
    char c;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void *watchdog_main(void *arg) {
    pg_server *s = arg;
    enum { BATCH = 64 };
    pthread_mutex_lock(&s->live_mu);
    while (!s->watchdog_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&s->watchdog_cv, &s->live_mu, &ts);
        if (s->watchdog_stop) break;
        uint64_t ids[BATCH];
        int n = 0;
        for (http_req *hr = s->live; hr && n < BATCH; hr = hr->live_next) {
            pthread_mutex_lock(&hr->mu);
            /* a suspended connection is not closed by MHD, so its socket is valid here */
            if (hr->suspended && !hr->http_done && !hr->engine_done && !hr->cancel_sent && peer_gone(hr->conn)) {
                hr->cancel_sent = 1;
                ids[n++] = hr->engine_id;
            }
            pthread_mutex_unlock(&hr->mu);
        }
        pthread_mutex_unlock(&s->live_mu);
        /* outside every lock: the engine may hold its own while it delivers events */
        for (int i = 0; i < n; i++) {
            fprintf(stderr, "pagoda: client went away: cancelling request %llu\n", (unsigned long long)ids[i]);
            pagoda_engine_cancel(s->engine, ids[i]);
        }
        pthread_mutex_lock(&s->live_mu);
    }
    pthread_mutex_unlock(&s->live_mu);
    return NULL;
}

int watchdog_start(pg_server *s) {
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) != 0) return -1;
    s->watchdog_running = 1;
    return 0;
}

void watchdog_stop(pg_server *s) {
    if (!s->watchdog_running) return;
    pthread_mutex_lock(&s->live_mu);
    s->watchdog_stop = 1;
    pthread_cond_signal(&s->watchdog_cv);
    pthread_mutex_unlock(&s->live_mu);
    pthread_join(s->watchdog, NULL);
    s->watchdog_running = 0;
}
