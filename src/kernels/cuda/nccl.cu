// pcu.h: NCCL groups for tensor parallelism across GPUs (one device per process; the processes
// of an MPI job, each rank's device joining the group rank 0 made).
//
// libnccl.so.2 is loaded when a group is first needed (dlopen), not linked: a CUDA build of pagoda
// starts and runs on one GPU where NCCL is not installed (the CUDA runtime images ship without it),
// and only --tensor-parallel-size on GPU layers says that NCCL is missing. nccl.h gives the types
// and the signatures the loaded symbols are checked against.
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/pcu_internal.cuh"

extern "C" {
#include "core/log.h"
}

#if defined(__has_include)
#if __has_include(<nccl.h>)
#include <nccl.h>
#define PCU_HAVE_NCCL 1
#endif
#endif

#ifdef PCU_HAVE_NCCL

static_assert(sizeof(ncclUniqueId) == PCU_NCCL_ID_BYTES, "ncclUniqueId is not PCU_NCCL_ID_BYTES bytes");

// The entry points pagoda calls, typed as nccl.h declares them.
static struct {
    int tried, ok;
    char why[512];
    decltype(&ncclGetVersion) get_version;
    decltype(&ncclGetUniqueId) get_unique_id;
    decltype(&ncclCommInitRank) comm_init_rank;
    decltype(&ncclAllReduce) all_reduce;
    decltype(&ncclCommDestroy) comm_destroy;
    decltype(&ncclCommAbort) comm_abort;
    decltype(&ncclGetErrorString) error_string;
    decltype(&ncclGetLastError) last_error;
} lib;
static pthread_mutex_t lib_mu = PTHREAD_MUTEX_INITIALIZER;

// The places libnccl.so.2 is looked for: the loader's path, then the CUDA toolkit pagoda was built
// against (NCCL ships in its lib64 where the toolkit was installed with it).
static void *open_nccl(char *why, size_t why_size) {
    const char *names[] = {"libnccl.so.2", PCU_CUDA_LIB_DIR "/libnccl.so.2", "/usr/local/cuda/lib64/libnccl.so.2"};
    const char *first = NULL;
    for (const char *n : names) {
        void *h = dlopen(n, RTLD_NOW | RTLD_LOCAL);
        if (h) return h;
        if (!first) first = dlerror();
    }
    snprintf(why, why_size, "%s (install NCCL, e.g. Debian's libnccl2 or NVIDIA's, or put libnccl.so.2 on "
             "LD_LIBRARY_PATH)", first ? first : "libnccl.so.2 not found");
    return NULL;
}

template <typename F> static bool sym(void *h, const char *name, F *out, char *why, size_t why_size) {
    *out = (F)dlsym(h, name);
    if (!*out) snprintf(why, why_size, "libnccl.so.2 has no %s", name);
    return *out != NULL;
}

static bool load(void) {
    pthread_mutex_lock(&lib_mu);
    if (!lib.tried) {
        lib.tried = 1;
        void *h = open_nccl(lib.why, sizeof lib.why);
        lib.ok = h && sym(h, "ncclGetVersion", &lib.get_version, lib.why, sizeof lib.why) &&
                 sym(h, "ncclGetUniqueId", &lib.get_unique_id, lib.why, sizeof lib.why) &&
                 sym(h, "ncclCommInitRank", &lib.comm_init_rank, lib.why, sizeof lib.why) &&
                 sym(h, "ncclAllReduce", &lib.all_reduce, lib.why, sizeof lib.why) &&
                 sym(h, "ncclCommDestroy", &lib.comm_destroy, lib.why, sizeof lib.why) &&
                 sym(h, "ncclCommAbort", &lib.comm_abort, lib.why, sizeof lib.why) &&
                 sym(h, "ncclGetErrorString", &lib.error_string, lib.why, sizeof lib.why) &&
                 sym(h, "ncclGetLastError", &lib.last_error, lib.why, sizeof lib.why);
        int v = 0;
        // the group calls pagoda makes are NCCL 2.x's (ncclCommAbort and ncclGetLastError: 2.13+)
        if (lib.ok && (lib.get_version(&v) != ncclSuccess || v < 21300)) {
            snprintf(lib.why, sizeof lib.why, "NCCL %d.%d is older than the 2.13 pagoda needs", v / 10000, v / 100 % 100);
            lib.ok = 0;
        }
    }
    bool ok = lib.ok;
    pthread_mutex_unlock(&lib_mu);
    return ok;
}

static pagoda_status nccl_fail(ncclResult_t r, ncclComm_t comm, const char *what) {
    const char *detail = lib.last_error ? lib.last_error(comm) : NULL;
    return pg_fail(r == ncclSystemError || r == ncclRemoteError ? PAGODA_ERR_IO : PAGODA_ERR_CUDA, "NCCL: %s: %s%s%s",
                   what, lib.error_string(r), detail && *detail ? ": " : "", detail ? detail : "");
}

struct pcu_nccl {
    ncclComm_t comm;
    int rank, size;
};

extern "C" {

int pcu_nccl_version(char *why, size_t why_size) {
    if (!load()) {
        if (why && why_size) snprintf(why, why_size, "%s", lib.why);
        return 0;
    }
    int v = 0;
    return lib.get_version(&v) == ncclSuccess ? v : 0;
}

pagoda_status pcu_nccl_make_id(uint8_t id[PCU_NCCL_ID_BYTES]) {
    if (!load()) return pg_fail(PAGODA_ERR_UNSUPPORTED, "NCCL cannot be loaded: %s", lib.why);
    ncclUniqueId u;
    ncclResult_t r = lib.get_unique_id(&u);
    if (r != ncclSuccess) return nccl_fail(r, NULL, "ncclGetUniqueId");
    memcpy(id, &u, sizeof u);
    return PAGODA_OK;
}

pagoda_status pcu_nccl_init(const uint8_t id[PCU_NCCL_ID_BYTES], int rank, int size, pcu_nccl **out) {
    *out = NULL;
    if (size < 1 || rank < 0 || rank >= size) return pg_fail(PAGODA_ERR_INVALID, "NCCL: rank %d of a group of %d", rank, size);
    if (!load()) return pg_fail(PAGODA_ERR_UNSUPPORTED, "NCCL cannot be loaded: %s", lib.why);
    pcu_nccl *c = (pcu_nccl *)calloc(1, sizeof *c);
    if (!c) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    // collective: returns once every rank of the group has joined (on the device current here)
    ncclResult_t r = lib.comm_init_rank(&c->comm, size, u, rank);
    if (r != ncclSuccess) {
        pagoda_status st = nccl_fail(r, NULL, "ncclCommInitRank");
        free(c);
        return st;
    }
    c->rank = rank, c->size = size;
    *out = c;
    return PAGODA_OK;
}

pagoda_status pcu_nccl_all_reduce(pcu_nccl *c, float *d_x, int64_t n, pcu_stream *s) {
    if (n <= 0) return PAGODA_OK;
    ncclResult_t r = lib.all_reduce(d_x, d_x, (size_t)n, ncclFloat32, ncclSum, c->comm, pcu_cuda_stream(s));
    return r == ncclSuccess ? PAGODA_OK : nccl_fail(r, c->comm, "ncclAllReduce");
}

void pcu_nccl_destroy(pcu_nccl *c, bool failed) {
    if (!c) return;
    // after a failure the other ranks may never join a clean teardown: abort tears down alone
    if (failed) lib.comm_abort(c->comm);
    else lib.comm_destroy(c->comm);
    free(c);
}

} // extern "C"

#else // no nccl.h at build time

struct pcu_nccl {
    int unused;
};

extern "C" {

static const char *no_headers = "pagoda was built without NCCL (nccl.h was not found beside the CUDA toolkit)";

int pcu_nccl_version(char *why, size_t why_size) {
    if (why && why_size) snprintf(why, why_size, "%s", no_headers);
    return 0;
}
pagoda_status pcu_nccl_make_id(uint8_t id[PCU_NCCL_ID_BYTES]) {
    (void)id;
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s", no_headers);
}
pagoda_status pcu_nccl_init(const uint8_t id[PCU_NCCL_ID_BYTES], int rank, int size, pcu_nccl **out) {
    (void)id, (void)rank, (void)size;
    *out = NULL;
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s", no_headers);
}
pagoda_status pcu_nccl_all_reduce(pcu_nccl *c, float *d_x, int64_t n, pcu_stream *s) {
    (void)c, (void)d_x, (void)n, (void)s;
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s", no_headers);
}
void pcu_nccl_destroy(pcu_nccl *c, bool failed) { (void)c, (void)failed; }

} // extern "C"

#endif
