/* The disconnect watchdog (see watchdog.h). */
#include "serve/watchdog.h"

#include <errno.h>
#include <stdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>

#include "core/clock.h"

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

typedef enum { PEER_ALIVE, PEER_EOF, PEER_GONE } peer_state;

/* What a non-blocking peek says about the client: end of file is a half-close or a close, which
 * cannot be told apart without writing; a reset, an error or a closed TCP state means gone. */
static peer_state peer_look(int fd) {
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return PEER_GONE;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && ti.tcpi_state == TCP_CLOSE) return PEER_GONE;
    return n == 0 ? PEER_EOF : PEER_ALIVE;
}

typedef enum { CANCEL_GONE = 1, CANCEL_UNREAD, CANCEL_LATE } cancel_why;

/* hr->mu held. What to do about one suspended or overflowing request. A client that shut only
 * its sending side (some HTTP clients and proxies do, then read the answer) must get its answer:
 * on end of file the watchdog writes something the client ignores (an interim "100 Continue"
 * before a whole answer, an SSE comment in a stream); a client that really closed answers that
 * with a reset, which the next look sees. */
static cancel_why examine(http_req *hr, double now) {
    if (hr->http_done) return 0;
    if (hr->answer_by > 0 && now >= hr->answer_by) {
        /* resumed at every look while suspended: the HTTP side answers once it sees answer_late,
           even if it suspended again just after the first resume (or the engine never reports) */
        if (hr->suspended) {
            hr->suspended = 0;
            MHD_resume_connection(hr->conn);
        }
        if (!hr->answer_late) {
            hr->answer_late = 1;
            if (!hr->engine_done && !hr->cancel_sent) return CANCEL_LATE;
        }
        return 0;
    }
    if (hr->engine_done || hr->cancel_sent) return 0;
    if (hr->overflow) return CANCEL_UNREAD;
    /* a suspended connection is not closed by MHD, so its socket is valid here */
    if (!hr->suspended) return 0;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(hr->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci || ci->connect_fd < 0) return 0;
    peer_state st = peer_look(ci->connect_fd);
    if (st == PEER_GONE) return CANCEL_GONE;
    if (st == PEER_ALIVE || hr->probe_sent) return 0;
    hr->eof_seen = 1;
    if (hr->stream) { /* the stream's own writer sends the comment, through MHD */
        hr->probe_sent = 1;
        hr->ping_wanted = 1;
        hr->suspended = 0;
        MHD_resume_connection(hr->conn);
    } else if (!hr->http10) { /* HTTP/1.0 has no 1xx answers: only a failed write tells */
        static const char probe[] = "HTTP/1.1 100 Continue\r\n\r\n";
        hr->probe_sent = 1;
        if (send(ci->connect_fd, probe, sizeof probe - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN &&
            errno != EWOULDBLOCK)
            return CANCEL_GONE;
    }
    return 0;
}

void watchdog_poke(pg_server *s) { pthread_cond_signal(&s->watchdog_cv); }

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
        http_req *reqs[BATCH];
        uint64_t ids[BATCH];
        cancel_why why[BATCH];
        int n = 0;
        const double now = pg_now_s();
        for (http_req *hr = s->live; hr && n < BATCH; hr = hr->live_next) {
            pthread_mutex_lock(&hr->mu);
            if ((why[n] = examine(hr, now))) {
                hr->cancel_sent = 1;
                req_ref(hr); /* alive until its engine requests are cancelled below */
                ids[n] = hr->engine_id;
                reqs[n++] = hr;
            }
            pthread_mutex_unlock(&hr->mu);
        }
        pthread_mutex_unlock(&s->live_mu);
        /* outside every lock: the engine may hold its own while it delivers events */
        for (int i = 0; i < n; i++) {
            unsigned long long id = (unsigned long long)ids[i];
            if (why[i] == CANCEL_GONE)
                fprintf(stderr, "pagoda: client went away: cancelling request %llu\n", id);
            else if (why[i] == CANCEL_LATE)
                fprintf(stderr, "pagoda: request %llu is past its deadline (%s): cancelling\n", id, reqs[i]->path);
            else
                fprintf(stderr,
                        "pagoda: client is not reading its stream (over %zu bytes unsent): cancelling request %llu\n",
                        s->cfg.max_unsent_bytes, id);
            req_cancel_engine(reqs[i]);
            if (reqs[i]->payload_cancel) reqs[i]->payload_cancel(reqs[i]->payload);
            req_unref(reqs[i]);
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
