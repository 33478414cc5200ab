/* The memory broker's accounting (the public pagoda_memory_broker): reservations of host KV
 * bytes, GPU KV bytes per device, and kernel threads, taken by engines and given back when they
 * are destroyed. */
#ifndef PG_CORE_MEM_BROKER_H
#define PG_CORE_MEM_BROKER_H

#include <stdint.h>

#include "pagoda.h"

enum { PG_BROKER_MAX_GPUS = 8 };

/* What one engine holds. */
typedef struct {
    uint64_t host_bytes, gpu_bytes;
    int gpu_device;
    int32_t cores;
} pg_broker_grant;

/* Host memory the kernel says is available (MemAvailable; 4 GiB if it cannot be read). */
uint64_t pg_available_memory(void);

/* Bytes of host KV memory still free (the broker's host budget less what engines hold). */
uint64_t broker_host_free(pagoda_memory_broker *b);
uint64_t broker_host_total(pagoda_memory_broker *b);
/* Bytes of KV memory still free on a GPU; UINT64_MAX when the broker sets no GPU limit. */
uint64_t broker_gpu_free(pagoda_memory_broker *b, int device);
/* Cores nobody holds (may be 0). */
int32_t broker_cores_free(pagoda_memory_broker *b);
/* Takes g (all or nothing): PAGODA_ERR_NOMEM naming what is short. */
pagoda_status broker_take(pagoda_memory_broker *b, const pg_broker_grant *g);
void broker_give_back(pagoda_memory_broker *b, const pg_broker_grant *g);

#endif
