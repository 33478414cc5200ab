/* Memory read-bandwidth probe: the ceiling for memory-bound decode (every weight byte read once
 * per token), so `pagoda bench` can report decode speed as a fraction of it. */
#ifndef PG_CORE_MEMBW_H
#define PG_CORE_MEMBW_H

#include <stddef.h>

/* Streams a buffer of `bytes` (e.g. 1 GiB; much larger than the caches) with n_threads OpenMP
 * threads (<= 0: all), each reading its own part (first-touched by that thread, so NUMA pages
 * are local), repeating for about `seconds` (at least 3 passes). Returns the best pass in GB/s
 * (1e9 bytes/s), or 0 if the buffer cannot be allocated. Uses AVX2 loads where the CPU has them. */
double pg_membw_read_gbs(size_t bytes, int n_threads, double seconds);

#endif
