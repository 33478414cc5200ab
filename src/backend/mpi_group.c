/* A tensor/pipeline-parallel group over MPI (MPI_COMM_WORLD, and a communicator per pipeline
 * stage for the all-reduce): the only file that includes mpi.h. Built only
 * when CMake finds MPI (mpi_none.c stands in otherwise). */
#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <time.h>

#include "backend/backend.h"
#include "core/log.h"
#include "pagoda.h"

int be_mpi_built(void) { return 1; }

typedef struct {
    pagoda_tp_group g; /* first: the public handle points here */
    int initialized;   /* 1: this group called MPI_Init, so destroy finalises */
    MPI_Comm stage;    /* the ranks of this rank's pipeline stage (the all-reduce's), or
                          MPI_COMM_WORLD with one stage */
    int counting;      /* 1: the hooks count calls, bytes and seconds into comm */
    pagoda_tp_comm_stats comm;
} mpi_group;

/* --comm-stats: a call's count, bytes and seconds when counting (a test and nothing else when not) */
static double count_start(const mpi_group *m) { return m->counting ? MPI_Wtime() : 0; }
static void count_add(const mpi_group *m, uint64_t *calls, uint64_t *bytes, double *secs, size_t b, double t0) {
    if (!m->counting) return;
    *calls += 1, *bytes += b, *secs += MPI_Wtime() - t0;
}

static pagoda_status mpi_error(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = 0;
    return pg_fail(PAGODA_ERR_IO, "MPI %s: %s", what, len ? msg : "failed");
}

/* A receiving rank's wait for a broadcast: MPI_Test in a loop for the first SPIN seconds (the next
 * step of a busy engine comes within that), then naps between tests (growing to 1 ms), so the
 * ranks of an idle server do not each keep a core busy polling (Open MPI's blocking wait spins). */
static int wait_gently(MPI_Request *rq) {
    const double SPIN = 0.05;
    const double t0 = MPI_Wtime();
    long nap_ns = 20000;
    for (;;) {
        int done = 0, rc = MPI_Test(rq, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS || done) return rc;
        if (MPI_Wtime() - t0 < SPIN) continue;
        struct timespec ts = {0, nap_ns};
        nanosleep(&ts, NULL);
        if (nap_ns < 1000000) nap_ns *= 2;
    }
}

static pagoda_status mpi_bcast(void *user, void *buf, size_t bytes) {
    mpi_group *m = user;
    const double t0 = count_start(m);
    for (size_t off = 0; off < bytes;) { /* MPI counts are ints */
        size_t n = bytes - off < (size_t)INT_MAX ? bytes - off : (size_t)INT_MAX;
        /* non-blocking on every rank (a blocking and a non-blocking collective do not match) */
        MPI_Request rq;
        int rc = MPI_Ibcast((char *)buf + off, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD, &rq);
        if (rc == MPI_SUCCESS) rc = m->g.rank == 0 ? MPI_Wait(&rq, MPI_STATUS_IGNORE) : wait_gently(&rq);
        if (rc != MPI_SUCCESS) return mpi_error(rc, "broadcast");
        off += n;
    }
    count_add(m, &m->comm.n_bcast, &m->comm.bcast_bytes, &m->comm.bcast_s, bytes, t0);
    return PAGODA_OK;
}

static pagoda_status mpi_all_reduce(void *user, float *x, int64_t n) {
    mpi_group *m = user;
    const double t0 = count_start(m);
    for (int64_t off = 0; off < n;) {
        int64_t k = n - off < INT_MAX ? n - off : INT_MAX;
        int rc = MPI_Allreduce(MPI_IN_PLACE, x + off, (int)k, MPI_FLOAT, MPI_SUM, m->stage);
        if (rc != MPI_SUCCESS) return mpi_error(rc, "all-reduce");
        off += k;
    }
    count_add(m, &m->comm.n_all_reduce, &m->comm.all_reduce_bytes, &m->comm.all_reduce_s, sizeof(float) * (size_t)n, t0);
    return PAGODA_OK;
}

static pagoda_status mpi_send(void *user, int32_t peer, const void *buf, size_t bytes) {
    mpi_group *m = user;
    const double t0 = count_start(m);
    for (size_t off = 0; off < bytes;) {
        size_t n = bytes - off < (size_t)INT_MAX ? bytes - off : (size_t)INT_MAX;
        int rc = MPI_Send((const char *)buf + off, (int)n, MPI_BYTE, peer, 0, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_error(rc, "send");
        off += n;
    }
    count_add(m, &m->comm.n_send, &m->comm.send_bytes, &m->comm.send_s, bytes, t0);
    return PAGODA_OK;
}

static pagoda_status mpi_recv(void *user, int32_t peer, void *buf, size_t bytes) {
    mpi_group *m = user;
    const double t0 = count_start(m);
    for (size_t off = 0; off < bytes;) {
        size_t n = bytes - off < (size_t)INT_MAX ? bytes - off : (size_t)INT_MAX;
        int rc = MPI_Recv((char *)buf + off, (int)n, MPI_BYTE, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_error(rc, "receive");
        off += n;
    }
    count_add(m, &m->comm.n_recv, &m->comm.recv_bytes, &m->comm.recv_s, bytes, t0);
    return PAGODA_OK;
}

pagoda_status pagoda_tp_mpi_create(pagoda_tp_group **out) { return pagoda_tp_mpi_create_pp(1, out); }

pagoda_status pagoda_tp_mpi_create_pp(int32_t pp_size, pagoda_tp_group **out) {
    *out = NULL;
    if (pp_size < 1) return pg_fail(PAGODA_ERR_INVALID, "pipeline parallel size %d (at least 1)", pp_size);
    mpi_group *m = calloc(1, sizeof *m);
    if (!m) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    m->g.bcast = mpi_bcast; /* what destroy recognises, on the failure paths below too */
    int inited = 0, rc;
    MPI_Initialized(&inited);
    if (!inited) {
        /* serialized: a server's rank 0 calls MPI from its loader, engine and main threads, one
           at a time (the engine is created, stepped and destroyed in turn) */
        int provided = MPI_THREAD_SINGLE;
        if ((rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided)) != MPI_SUCCESS) {
            free(m);
            return mpi_error(rc, "init");
        }
        m->initialized = 1;
        if (provided < MPI_THREAD_SERIALIZED) {
            pagoda_tp_mpi_destroy(&m->g, 0);
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "MPI: this MPI library does not allow calls from several "
                           "threads one at a time (MPI_THREAD_SERIALIZED)");
        }
    }
    /* errors come back as codes (and become pagoda errors) instead of ending the job */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    m->stage = MPI_COMM_WORLD;
    if (pp_size > 1) { /* stage-major: ranks [s * tp, (s + 1) * tp) are stage s */
        if (size % pp_size) {
            pagoda_tp_mpi_destroy(&m->g, 0);
            return pg_fail(PAGODA_ERR_INVALID, "this MPI job has %d processes, which do not split into %d pipeline "
                           "stages", size, pp_size);
        }
        int tp = size / pp_size;
        if ((rc = MPI_Comm_split(MPI_COMM_WORLD, rank / tp, rank % tp, &m->stage)) != MPI_SUCCESS) {
            m->stage = MPI_COMM_WORLD;
            pagoda_status st = mpi_error(rc, "stage communicator");
            pagoda_tp_mpi_destroy(&m->g, 0);
            return st;
        }
        MPI_Comm_set_errhandler(m->stage, MPI_ERRORS_RETURN);
    }
    /* this process's place among the job's processes on its host (a GPU rank takes the device
       that far past its first) */
    int local_rank = 0;
    MPI_Comm host;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &host) == MPI_SUCCESS) {
        MPI_Comm_rank(host, &local_rank);
        MPI_Comm_free(&host);
    }
    m->g = (pagoda_tp_group){.rank = rank, .size = size, .bcast = mpi_bcast, .all_reduce = mpi_all_reduce, .user = m,
                             .pp_size = pp_size, .send = mpi_send, .recv = mpi_recv, .local_rank = local_rank};
    *out = &m->g;
    return PAGODA_OK;
}

/* the group is this file's (not a group of threads) */
static int is_mpi(const pagoda_tp_group *g) { return g && g->bcast == mpi_bcast; }

void pagoda_tp_mpi_destroy(pagoda_tp_group *g, int failed) {
    if (!is_mpi(g)) return;
    mpi_group *m = (mpi_group *)g;
    if (failed && g->size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    if (m->stage != MPI_COMM_WORLD) MPI_Comm_free(&m->stage);
    if (m->initialized) MPI_Finalize();
    free(m);
}

void pagoda_tp_mpi_count_comm(pagoda_tp_group *g, int on) {
    if (is_mpi(g)) ((mpi_group *)g)->counting = on != 0;
}

void pagoda_tp_mpi_get_comm_stats(const pagoda_tp_group *g, pagoda_tp_comm_stats *out) {
    *out = is_mpi(g) ? ((const mpi_group *)g)->comm : (pagoda_tp_comm_stats){0};
}
