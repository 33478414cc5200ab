#include "core/mem_broker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/log.h"

struct pagoda_memory_broker {
    pthread_mutex_t mu;
    uint64_t host_total, host_used;
    uint64_t gpu_total, gpu_used[PG_BROKER_MAX_GPUS];
    int32_t cores_total, cores_used;
    int32_t n_engines;
};

uint64_t pg_available_memory(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb ? kb * 1024ull : 4ull << 30;
}

pagoda_status pagoda_memory_broker_create(const pagoda_memory_broker_config *c, pagoda_memory_broker **out) {
    *out = NULL;
    pagoda_memory_broker_config d = {0};
    if (c) d = *c;
    if (d.n_cores < 0 || d.n_cores > 65536) return pg_fail(PAGODA_ERR_INVALID, "memory broker: %d cores", d.n_cores);
    pagoda_memory_broker *b = calloc(1, sizeof *b);
    if (!b) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&b->mu, NULL);
    b->host_total = d.host_bytes ? d.host_bytes : pg_available_memory() / 2;
    b->gpu_total = d.gpu_bytes;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    b->cores_total = d.n_cores ? d.n_cores : online > 0 ? (int32_t)online : 1;
    *out = b;
    return PAGODA_OK;
}

void pagoda_memory_broker_destroy(pagoda_memory_broker *b) {
    if (!b) return;
    if (b->n_engines) pg_log(PAGODA_LOG_ERROR, "memory broker destroyed while %d engines still use it", b->n_engines);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

void pagoda_memory_broker_get_stats(pagoda_memory_broker *b, pagoda_memory_broker_stats *s) {
    pthread_mutex_lock(&b->mu);
    *s = (pagoda_memory_broker_stats){.host_total = b->host_total, .host_used = b->host_used, .gpu_total = b->gpu_total,
                                      .cores_total = b->cores_total, .cores_used = b->cores_used,
                                      .n_engines = b->n_engines};
    for (int i = 0; i < PG_BROKER_MAX_GPUS; i++) s->gpu_used[i] = b->gpu_used[i];
    pthread_mutex_unlock(&b->mu);
}

uint64_t broker_host_total(pagoda_memory_broker *b) { return b->host_total; }

uint64_t broker_host_free(pagoda_memory_broker *b) {
    pthread_mutex_lock(&b->mu);
    uint64_t f = b->host_total > b->host_used ? b->host_total - b->host_used : 0;
    pthread_mutex_unlock(&b->mu);
    return f;
}

uint64_t broker_gpu_free(pagoda_memory_broker *b, int device) {
    if (!b->gpu_total) return UINT64_MAX;
    if (device < 0 || device >= PG_BROKER_MAX_GPUS) return 0;
    pthread_mutex_lock(&b->mu);
    uint64_t f = b->gpu_total > b->gpu_used[device] ? b->gpu_total - b->gpu_used[device] : 0;
    pthread_mutex_unlock(&b->mu);
    return f;
}

int32_t broker_cores_free(pagoda_memory_broker *b) {
    pthread_mutex_lock(&b->mu);
    int32_t f = b->cores_total > b->cores_used ? b->cores_total - b->cores_used : 0;
    pthread_mutex_unlock(&b->mu);
    return f;
}

pagoda_status broker_take(pagoda_memory_broker *b, const pg_broker_grant *g) {
    if (g->gpu_bytes && (g->gpu_device < 0 || g->gpu_device >= PG_BROKER_MAX_GPUS))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "memory broker: GPU %d (it keeps accounts for devices 0-%d)", g->gpu_device,
                       PG_BROKER_MAX_GPUS - 1);
    pthread_mutex_lock(&b->mu);
    pagoda_status st = PAGODA_OK;
    if (g->host_bytes > b->host_total - (b->host_used < b->host_total ? b->host_used : b->host_total))
        st = pg_fail(PAGODA_ERR_NOMEM, "memory broker: %.1f MiB of host KV memory asked, %.1f MiB of %.1f MiB free",
                     (double)g->host_bytes / 1048576.0, (double)(b->host_total - b->host_used) / 1048576.0,
                     (double)b->host_total / 1048576.0);
    else if (b->gpu_total && g->gpu_bytes > b->gpu_total - b->gpu_used[g->gpu_device])
        st = pg_fail(PAGODA_ERR_NOMEM, "memory broker: %.1f MiB of KV memory on GPU %d asked, %.1f MiB free",
                     (double)g->gpu_bytes / 1048576.0, g->gpu_device,
                     (double)(b->gpu_total - b->gpu_used[g->gpu_device]) / 1048576.0);
    else if (g->cores > b->cores_total - b->cores_used)
        st = pg_fail(PAGODA_ERR_NOMEM, "memory broker: %d kernel threads asked, %d of %d cores free", g->cores,
                     b->cores_total - b->cores_used, b->cores_total);
    if (!st) {
        b->host_used += g->host_bytes;
        if (g->gpu_bytes) b->gpu_used[g->gpu_device] += g->gpu_bytes;
        b->cores_used += g->cores;
        b->n_engines++;
    }
    pthread_mutex_unlock(&b->mu);
    return st;
}

void broker_give_back(pagoda_memory_broker *b, const pg_broker_grant *g) {
    pthread_mutex_lock(&b->mu);
    b->host_used -= g->host_bytes < b->host_used ? g->host_bytes : b->host_used;
    if (g->gpu_bytes && g->gpu_device >= 0 && g->gpu_device < PG_BROKER_MAX_GPUS)
        b->gpu_used[g->gpu_device] -= g->gpu_bytes < b->gpu_used[g->gpu_device] ? g->gpu_bytes : b->gpu_used[g->gpu_device];
    b->cores_used -= g->cores < b->cores_used ? g->cores : b->cores_used;
    if (b->n_engines > 0) b->n_engines--;
    pthread_mutex_unlock(&b->mu);
}
