/* Stands in for mpi_group.c when pagoda is built without MPI. */
#include "backend/backend.h"
#include "core/log.h"
#include "pagoda.h"

int be_mpi_built(void) { return 0; }

pagoda_status pagoda_tp_mpi_create(pagoda_tp_group **out) { return pagoda_tp_mpi_create_pp(1, out); }

pagoda_status pagoda_tp_mpi_create_pp(int32_t pp_size, pagoda_tp_group **out) {
    (void)pp_size;
    *out = NULL;
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor and pipeline parallelism across processes need MPI: this pagoda "
                   "was built without it (install libopenmpi-dev and rebuild)");
}

void pagoda_tp_mpi_destroy(pagoda_tp_group *g, int failed) { (void)g, (void)failed; }

void pagoda_tp_mpi_count_comm(pagoda_tp_group *g, int on) { (void)g, (void)on; }

void pagoda_tp_mpi_get_comm_stats(const pagoda_tp_group *g, pagoda_tp_comm_stats *out) {
    (void)g;
    *out = (pagoda_tp_comm_stats){0};
}
