/* Stands in for mpi_group.c when pagoda is built without MPI. */
#include "core/log.h"
#include "pagoda.h"

pagoda_status pagoda_tp_mpi_create(pagoda_tp_group **out) {
    *out = NULL;
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor parallelism across processes needs MPI: this pagoda was built "
                   "without it (install libopenmpi-dev and rebuild)");
}

void pagoda_tp_mpi_destroy(pagoda_tp_group *g, int failed) { (void)g, (void)failed; }
