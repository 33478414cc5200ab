/* Monotonic wall-clock seconds, for timing and deadlines everywhere (engine, server, tools). */
#ifndef PG_CORE_CLOCK_H
#define PG_CORE_CLOCK_H

#include <time.h>

static inline double pg_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
