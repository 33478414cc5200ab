/* pagoda_tp_threads_create: the collectives of a group whose ranks are threads. Broadcast, the
 * all-reduce within each pipeline stage (every rank ends with the same bits: the sum in rank order),
 * point-to-point in order per pair, and abort waking ranks that wait. */
#include <pthread.h>
#include <string.h>

#include "pagoda.h"
#include "test_util.h"

enum { N = 4, PP = 2, E = 1001, ROUNDS = 50 };

static pagoda_tp_group **g_groups;
static int g_bad[N];

static void *rank_main(void *arg) {
    const int r = (int)(intptr_t)arg;
    pagoda_tp_group *g = g_groups[r];
    const int tp = N / PP, stage = r / tp;
    static float x[N][E];
    for (int round = 0; round < ROUNDS; round++) {
        /* rank 0's bytes to everyone */
        char buf[333];
        memset(buf, r == 0 ? 'a' + round % 26 : 0, sizeof buf);
        if (g->bcast(g->user, buf, sizeof buf) || buf[0] != 'a' + round % 26 || buf[332] != buf[0]) g_bad[r]++;
        /* the sum within the stage: element e of rank j holds j + e + round */
        for (int e = 0; e < E; e++) x[r][e] = (float)(r + e + round) * 0.5f;
        if (g->all_reduce(g->user, x[r], E)) g_bad[r]++;
        for (int e = 0; e < E; e++) {
            float want = 0.0f;
            for (int j = stage * tp; j < stage * tp + tp; j++) want += (float)(j + e + round) * 0.5f;
            if (x[r][e] != want) g_bad[r]++;
        }
        /* a ring: send to the next rank, receive from the previous (odd ranks receive first) */
        int next = (r + 1) % N, prev = (r + N - 1) % N, out = r * 1000 + round, in = -1;
        int st = r % 2 ? g->recv(g->user, prev, &in, sizeof in) || g->send(g->user, next, &out, sizeof out)
                       : g->send(g->user, next, &out, sizeof out) || g->recv(g->user, prev, &in, sizeof in);
        if (st || in != prev * 1000 + round) g_bad[r]++;
    }
    return NULL;
}

/* every rank but the last waits in a broadcast; the last aborts: all return an error */
static int g_abort_rc[N];
static void *abort_main(void *arg) {
    const int r = (int)(intptr_t)arg;
    pagoda_tp_group *g = g_groups[r];
    char b[8] = {0};
    if (r == N - 1) pagoda_tp_threads_abort(g);
    else g_abort_rc[r] = g->bcast(g->user, b, sizeof b);
    return NULL;
}

int main(void) {
    CHECK(pagoda_tp_threads_create(N, 3, &g_groups) == PAGODA_ERR_INVALID, "4 ranks in 3 stages accepted");
    CHECK(pagoda_tp_threads_create(N, PP, &g_groups) == PAGODA_OK, "create: %s", pagoda_last_error());
    for (int r = 0; r < N; r++) {
        CHECK(g_groups[r]->rank == r && g_groups[r]->size == N && g_groups[r]->pp_size == PP &&
              g_groups[r]->local_rank == r && pagoda_tp_threads_is(g_groups[r]), "rank %d's handle", r);
    }
    CHECK(g_groups[N] == NULL, "handles NULL-terminated");
    pthread_t t[N];
    for (int r = 0; r < N; r++) pthread_create(&t[r], NULL, rank_main, (void *)(intptr_t)r);
    for (int r = 0; r < N; r++) pthread_join(t[r], NULL);
    for (int r = 0; r < N; r++) CHECK(g_bad[r] == 0, "rank %d: %d wrong results", r, g_bad[r]);
    CHECK(g_groups[0]->send(g_groups[0]->user, 0, "x", 1) == PAGODA_ERR_INVALID, "send to itself accepted");
    for (int r = 0; r < N; r++) pthread_create(&t[r], NULL, abort_main, (void *)(intptr_t)r);
    for (int r = 0; r < N; r++) pthread_join(t[r], NULL);
    for (int r = 0; r < N - 1; r++) CHECK(g_abort_rc[r] == PAGODA_ERR_IO, "rank %d after abort: %d", r, g_abort_rc[r]);
    pagoda_tp_threads_destroy(g_groups);
    pagoda_tp_threads_destroy(NULL);
    TEST_DONE();
}
