/* Public facts about the machine and the formats, for the tools' reports (`pagoda bench`):
 * the CPU kernels' SIMD level and thread count, a memory-bandwidth probe, dtype names. */

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/thread_pool.h"
#include "core/membw.h"
#include "kernels/kernels.h"
#include "pagoda.h"

const char *pagoda_dtype_name(pagoda_dtype t) { return dtype_name((int)t); }

void pagoda_system_get_info(pagoda_system_info *s) {
    s->cpu_isa = kcpu_isa();
    s->n_cpu_threads = pg_cpu_count(); /* what n_threads = 0 means: every core */
#ifdef PAGODA_CUDA
    s->cuda = 1;
#else
    s->cuda = 0;
#endif
    s->n_cuda_devices = be_cuda_device_count();
    s->mpi = be_mpi_built();
    s->nccl_why[0] = 0;
    s->nccl_version = be_cuda_nccl_version(s->nccl_why, sizeof s->nccl_why);
}

double pagoda_membw_read_gbs(size_t bytes, int32_t n_threads, double seconds) {
    return pg_membw_read_gbs(bytes, n_threads, seconds);
}
