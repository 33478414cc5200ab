/* The model manager (see registry.h): the entries, leases, the loader thread, LRU eviction under
 * the memory budget and idle unloading. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "manager/registry.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/mem_broker.h"

enum { MAX_ALIASES = 8, MAX_DIRS = 8 };

struct mgr_entry {
    char *name, *path, *aliases[MAX_ALIASES];
    int pinned;
    double keep_alive_s; /* < 0: the manager's */
    mgr_task task;
    uint64_t kv_mem_bytes; /* 0: the manager's */
    int32_t max_model_len;
    char *chat_template; /* NULL: the model's own */
    mgr_state state;
    char error[256];
    int pending;  /* LOADING, not yet taken by the loader */
    int closing;  /* an unload waits for the leases: no new ones */
    pagoda_model *model;
    pagoda_engine *engine;
    pagoda_model_info info;
    void *attached;
    int embed_only;
    int32_t leases;
    int32_t engine_max_len;
    double last_used;  /* unix time */
    double last_mono;  /* monotonic, for LRU and keep-alive */
    uint64_t file_bytes, kv_bytes;
    uint64_t loads, evictions;
    double load_s;
};

/* A LoRA adapter served under its own name on a base model: loaded into the base's engine each
 * time the base loads (id 0 while the base is not loaded or when the adapter failed to load).
 * Never freed before the manager (a lease may name it); a removed one is kept as a tombstone and
 * reused when the name comes back. */
typedef struct {
    char *name, *path;
    mgr_entry *base;
    int32_t id;
    int live;      /* 0: being added at run time, or removed */
    int adding;    /* mgr_load_lora is loading it */
    uint64_t bytes; /* memory it takes in its base's engine once loaded; before, its files' size */
    char error[256];
} mgr_lora;

struct mgr {
    mgr_config cfg;
    mgr_lora **loras;
    int32_t n_loras;
    pthread_mutex_t mu;
    pthread_cond_t changed; /* an entry's state or lease count changed */
    pthread_cond_t work;    /* the loader has something to do */
    pthread_t loader;
    int loader_running, stop;
    mgr_entry **e;
    int32_t n, cap;
    char *dirs[MAX_DIRS];
    int n_dirs;
    pagoda_memory_broker *broker;
    uint64_t budget;
};

const char *mgr_state_name(mgr_state s) {
    static const char *const n[] = {"available", "loading", "loaded", "unloading", "failed"};
    return (unsigned)s < 5 ? n[s] : "unknown";
}

void mgr_config_default(mgr_config *c) {
    memset(c, 0, sizeof *c);
    pagoda_engine_config_default(&c->engine);
}

static double now_unix(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void deadline_ts(double mono_deadline, struct timespec *ts) {
    /* the condition variables use CLOCK_MONOTONIC (see mgr_create) */
    double s = mono_deadline;
    ts->tv_sec = (time_t)s;
    ts->tv_nsec = (long)((s - (double)ts->tv_sec) * 1e9);
}

static int timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, double mono_deadline) {
    struct timespec ts;
    deadline_ts(mono_deadline, &ts);
    return pthread_cond_timedwait(cv, mu, &ts);
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- sizes ---- */

static uint64_t file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* the weights' bytes on disk: the file, or the *.safetensors / *.gguf files of a folder */
static uint64_t model_file_bytes(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return (uint64_t)st.st_size;
    DIR *d = opendir(path);
    if (!d) return 0;
    uint64_t sum = 0;
    struct dirent *de;
    char buf[4096];
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if ((l > 12 && !strcmp(de->d_name + l - 12, ".safetensors")) || (l > 5 && !strcasecmp(de->d_name + l - 5, ".gguf"))) {
            snprintf(buf, sizeof buf, "%s/%s", path, de->d_name);
            sum += file_size(buf);
        }
    }
    closedir(d);
    return sum;
}

static uint64_t entry_kv(const mgr *m, const mgr_entry *e) {
    if (e->kv_mem_bytes) return e->kv_mem_bytes;
    if (m->cfg.kv_mem_bytes) return m->cfg.kv_mem_bytes;
    return m->budget / 4;
}

/* the adapters e serves: their memory in its engine, or their files' size before they load */
static uint64_t lora_bytes_locked(const mgr *m, const mgr_entry *e) {
    uint64_t s = 0;
    for (int32_t i = 0; i < m->n_loras; i++) {
        const mgr_lora *a = m->loras[i];
        if (a->base == e && (a->live || a->adding)) s += a->bytes;
    }
    return s;
}

static uint64_t entry_need(const mgr *m, const mgr_entry *e) {
    return e->file_bytes + entry_kv(m, e) + lora_bytes_locked(m, e);
}

/* bytes held or reserved by loaded, loading (taken by the loader) and unloading models */
static uint64_t in_use_locked(const mgr *m) {
    uint64_t s = 0;
    for (int32_t i = 0; i < m->n; i++) {
        const mgr_entry *e = m->e[i];
        if (e->state == MGR_LOADED || e->state == MGR_UNLOADING || (e->state == MGR_LOADING && !e->pending))
            s += e->file_bytes + lora_bytes_locked(m, e) +
                 (e->state == MGR_LOADED || e->state == MGR_UNLOADING ? e->kv_bytes : entry_kv(m, e));
    }
    return s;
}

static int32_t n_loaded_locked(const mgr *m) {
    int32_t k = 0;
    for (int32_t i = 0; i < m->n; i++)
        k += m->e[i]->state == MGR_LOADED || m->e[i]->state == MGR_UNLOADING ||
             (m->e[i]->state == MGR_LOADING && !m->e[i]->pending);
    return k;
}

/* ---- loading and unloading (m->mu held; dropped around the slow parts) ---- */

static void unload_locked(mgr *m, mgr_entry *e) {
    e->state = MGR_UNLOADING;
    pagoda_engine *eng = e->engine;
    pagoda_model *mod = e->model;
    void *att = e->attached;
    e->engine = NULL, e->model = NULL, e->attached = NULL;
    pthread_mutex_unlock(&m->mu);
    if (att && m->cfg.detach) m->cfg.detach(att, m->cfg.hook_user);
    pagoda_engine_destroy(eng); /* stops its thread; no request is live (no leases) */
    pagoda_model_free(mod);     /* munmap of the weights */
    malloc_trim(0);
    pthread_mutex_lock(&m->mu);
    e->state = MGR_AVAILABLE;
    e->closing = 0;
    e->kv_bytes = 0;
    for (int32_t i = 0; i < m->n_loras; i++)
        if (m->loras[i]->base == e) m->loras[i]->id = 0;
    pthread_cond_broadcast(&m->changed);
}

/* least recently used loaded model that can go now (no leases, not pinned); NULL if none */
static mgr_entry *lru_victim(mgr *m, const mgr_entry *keep, int *busy) {
    mgr_entry *v = NULL;
    *busy = 0;
    for (int32_t i = 0; i < m->n; i++) {
        mgr_entry *e = m->e[i];
        if (e == keep || e->state != MGR_LOADED || e->pinned) continue;
        if (e->leases > 0) {
            (*busy)++;
            continue;
        }
        if (!v || e->last_mono < v->last_mono) v = e;
    }
    return v;
}

static void fail_locked(mgr *m, mgr_entry *e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_locked(mgr *m, mgr_entry *e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->error, sizeof e->error, fmt, ap);
    va_end(ap);
    e->state = MGR_STATE_FAILED;
    e->pending = 0;
    pg_log(PAGODA_LOG_WARN, "model '%s' failed to load: %s", e->name, e->error);
    pthread_cond_broadcast(&m->changed);
}

/* Makes room for e under the budget and the count limit: evicts idle models (LRU) and waits for
 * busy ones, up to 120 s. 0 when there is room. */
static int make_room_locked(mgr *m, mgr_entry *e) {
    const uint64_t need = entry_need(m, e);
    if (need > m->budget) {
        fail_locked(m, e, "it needs %.1f MiB (weights %.1f MiB + KV %.1f MiB), more than the whole memory budget "
                          "(%.1f MiB, --memory-budget)", need / 1048576.0, e->file_bytes / 1048576.0,
                    entry_kv(m, e) / 1048576.0, m->budget / 1048576.0);
        return -1;
    }
    const double deadline = mono() + 120;
    mgr_entry *draining = NULL; /* a busy model closed to new requests to make room */
    for (;;) {
        const uint64_t used = in_use_locked(m);
        const int over_count = m->cfg.models_max > 0 && n_loaded_locked(m) >= m->cfg.models_max;
        if (used + need <= m->budget && !over_count) {
            if (draining && draining->state == MGR_LOADED) { /* room came from elsewhere: it serves again */
                draining->closing = 0;
                pthread_cond_broadcast(&m->changed);
            }
            return 0;
        }
        int busy = 0;
        mgr_entry *v = lru_victim(m, e, &busy);
        if (v) {
            pg_log(PAGODA_LOG_INFO, "evicting '%s' (LRU, %.1f MiB) to load '%s'", v->name,
                   (v->file_bytes + v->kv_bytes) / 1048576.0, e->name);
            fprintf(stderr, "pagoda: evicting '%s' (LRU, %.1f MiB) to load '%s'\n", v->name,
                    (v->file_bytes + v->kv_bytes) / 1048576.0, e->name);
            v->evictions++;
            unload_locked(m, v);
            continue;
        }
        if (busy && !draining) {
            /* every candidate is serving: the least recently used one takes no new requests (they
             * wait for it to load again) so that its in-flight ones finish and it can go */
            mgr_entry *b = NULL;
            for (int32_t i = 0; i < m->n; i++) {
                mgr_entry *c = m->e[i];
                if (c != e && c->state == MGR_LOADED && !c->pinned && (!b || c->last_mono < b->last_mono)) b = c;
            }
            if (b) b->closing = 1, draining = b;
        }
        if (!busy || mono() >= deadline || m->stop) {
            if (draining && draining->state == MGR_LOADED) draining->closing = 0;
            pthread_cond_broadcast(&m->changed);
            fail_locked(m, e, "not enough memory: it needs %.1f MiB, %.1f MiB of the %.1f MiB budget are held by %s",
                        need / 1048576.0, used / 1048576.0, m->budget / 1048576.0,
                        busy ? "models still serving requests" : "pinned or loading models");
            return -1;
        }
        timed_wait(&m->changed, &m->mu, mono() + 1.0);
    }
}

/* one adapter loaded together with its base (load_locked) */
typedef struct {
    mgr_lora *a;
    char *path;  /* a->path when the load started */
    int32_t id;  /* 0: failed (error says why) */
    char error[256];
} lora_load_job;

static void load_locked(mgr *m, mgr_entry *e) {
    e->file_bytes = model_file_bytes(e->path);
    if (make_room_locked(m, e)) return; /* e is not counted while pending */
    e->pending = 0;                      /* from here its bytes are reserved */
    const uint64_t kv = entry_kv(m, e);
    pagoda_engine_config ec = m->cfg.engine;
    ec.kv_mem_bytes = kv;
    ec.broker = m->broker;
    if (e->max_model_len) ec.max_model_len = e->max_model_len;
    if (ec.n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        ec.n_threads = n > 0 ? (int32_t)n : 1;
    }
    const mgr_task task = e->task;
    char *path = strdup(e->path);
    const int has_tmpl = e->chat_template != NULL;
    char *tmpl = has_tmpl ? strdup(e->chat_template) : NULL;
    /* the adapters to load with it, as they are now (the mgr_lora pointers stay valid: adapters
     * are never freed; path and liveness are checked again after the load) */
    int32_t n_ad = 0;
    lora_load_job *ad = m->n_loras ? calloc((size_t)m->n_loras, sizeof *ad) : NULL;
    int ad_oom = m->n_loras && !ad;
    for (int32_t i = 0; ad && i < m->n_loras; i++)
        if (m->loras[i]->base == e && m->loras[i]->live) {
            ad[n_ad] = (lora_load_job){.a = m->loras[i], .path = strdup(m->loras[i]->path)};
            ad_oom |= !ad[n_ad++].path;
        }
    pthread_mutex_unlock(&m->mu);

    const double t0 = mono();
    char err[256] = "";
    pagoda_model *mod = NULL;
    pagoda_engine *eng = NULL;
    void *att = NULL;
    int embed_only = 0;
    uint64_t kv_got = 0;
    if (!path) snprintf(err, sizeof err, "out of memory");
    else if (pagoda_model_load(path, &mod)) snprintf(err, sizeof err, "%s", pagoda_last_error());
    else if (has_tmpl && !tmpl) snprintf(err, sizeof err, "out of memory");
    else if (tmpl && pagoda_model_set_chat_template(mod, tmpl)) snprintf(err, sizeof err, "%s", pagoda_last_error());
    free(tmpl);
    if (!err[0]) {
        pagoda_model_prefault(mod, NULL, NULL);
        pagoda_embedding_info emb;
        pagoda_model_get_embedding_info(mod, &emb);
        embed_only = task == MGR_TASK_EMBED || (task == MGR_TASK_AUTO && emb.is_embedding_model);
        if (!embed_only && !emb.has_lm_head)
            snprintf(err, sizeof err, "it has no LM head (lm_head): it can only embed (task embed)");
    }
    if (!err[0]) {
        pagoda_memory_broker_stats b0, b1;
        pagoda_memory_broker_get_stats(m->broker, &b0);
        if (pagoda_engine_create(mod, &ec, &eng)) snprintf(err, sizeof err, "engine: %s", pagoda_last_error());
        else if (pagoda_engine_start(eng)) snprintf(err, sizeof err, "engine start: %s", pagoda_last_error());
        pagoda_memory_broker_get_stats(m->broker, &b1);
        kv_got = b1.host_used > b0.host_used ? b1.host_used - b0.host_used : kv;
    }
    if (!err[0] && ad_oom) snprintf(err, sizeof err, "out of memory");
    for (int32_t i = 0; !err[0] && i < n_ad; i++)
        if (pagoda_engine_adapter_load(eng, ad[i].path, 0, &ad[i].id)) {
            snprintf(ad[i].error, sizeof ad[i].error, "%s", pagoda_last_error());
            ad[i].id = 0;
        }
    if (!err[0] && m->cfg.attach && !(att = m->cfg.attach(mod, m->cfg.hook_user)))
        snprintf(err, sizeof err, "out of memory (server state)");
    if (err[0]) {
        pagoda_engine_destroy(eng);
        pagoda_model_free(mod);
        malloc_trim(0);
    }
    free(path);
    pthread_mutex_lock(&m->mu);
    for (int32_t i = 0; !err[0] && i < n_ad; i++) {
        mgr_lora *a = ad[i].a;
        if (!a->live || a->base != e || strcmp(a->path, ad[i].path)) { /* removed or replaced meanwhile */
            if (ad[i].id) pagoda_engine_adapter_unload(eng, ad[i].id);
            continue;
        }
        a->id = ad[i].id;
        pagoda_adapter_info ai;
        if (a->id && !pagoda_engine_adapter_info(eng, a->id, &ai)) a->bytes = ai.bytes;
        snprintf(a->error, sizeof a->error, "%s", ad[i].error);
        if (a->id) fprintf(stderr, "pagoda: adapter '%s' loaded on '%s'\n", a->name, e->name);
        else fprintf(stderr, "pagoda: adapter '%s' (%s) failed to load on '%s': %s\n", a->name, a->path, e->name, a->error);
    }
    for (int32_t i = 0; i < n_ad; i++) free(ad[i].path);
    free(ad);
    if (err[0]) {
        fail_locked(m, e, "%s", err);
        return;
    }
    e->model = mod, e->engine = eng, e->attached = att, e->embed_only = embed_only;
    pagoda_model_get_info(mod, &e->info);
    pagoda_engine_stats st;
    pagoda_engine_get_stats(eng, &st);
    e->engine_max_len = st.max_model_len;
    e->kv_bytes = kv_got;
    e->load_s = mono() - t0;
    e->loads++;
    e->error[0] = 0;
    e->state = MGR_LOADED;
    e->last_mono = mono(), e->last_used = now_unix();
    fprintf(stderr, "pagoda: loaded model '%s' (%.1f MiB of weights, %.1f MiB KV) in %.2f s\n", e->name,
            e->file_bytes / 1048576.0, e->kv_bytes / 1048576.0, e->load_s);
    pthread_cond_broadcast(&m->changed);
}

static double entry_keep_alive(const mgr *m, const mgr_entry *e) {
    return e->keep_alive_s >= 0 ? e->keep_alive_s : m->cfg.keep_alive_s;
}

static void *loader_main(void *arg) {
    mgr *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        mgr_entry *todo = NULL;
        for (int32_t i = 0; i < m->n && !todo; i++)
            if (m->e[i]->state == MGR_LOADING && m->e[i]->pending) todo = m->e[i];
        if (todo) {
            load_locked(m, todo);
            continue;
        }
        const double now = mono();
        mgr_entry *idle = NULL;
        for (int32_t i = 0; i < m->n && !idle; i++) {
            mgr_entry *e = m->e[i];
            double ka = entry_keep_alive(m, e);
            if (e->state == MGR_LOADED && !e->pinned && e->leases == 0 && ka > 0 && now - e->last_mono >= ka) idle = e;
        }
        if (idle) {
            fprintf(stderr, "pagoda: unloading '%s' (idle for %.0f s)\n", idle->name, now - idle->last_mono);
            unload_locked(m, idle);
            continue;
        }
        timed_wait(&m->work, &m->mu, mono() + 0.5);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* ---- lifecycle ---- */

pagoda_status mgr_create(const mgr_config *c, mgr **out) {
    *out = NULL;
    mgr *m = calloc(1, sizeof *m);
    if (!m) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    m->cfg = *c;
    m->budget = c->memory_budget ? c->memory_budget : pg_available_memory();
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->changed, &ca);
    pthread_cond_init(&m->work, &ca);
    pthread_condattr_destroy(&ca);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    pagoda_memory_broker_config bc = {.host_bytes = m->budget,
                                      .n_cores = (int32_t)((cores > 0 ? cores : 1) * 256 > 65536 ? 65536 : (cores > 0 ? cores : 1) * 256)};
    pagoda_status st = pagoda_memory_broker_create(&bc, &m->broker);
    if (st) {
        free(m);
        return st;
    }
    if (pthread_create(&m->loader, NULL, loader_main, m)) {
        pagoda_memory_broker_destroy(m->broker);
        free(m);
        return pg_fail(PAGODA_ERR_NOMEM, "cannot start the model loader thread");
    }
    m->loader_running = 1;
    *out = m;
    return PAGODA_OK;
}

void mgr_destroy(mgr *m) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->stop = 1;
    pthread_cond_broadcast(&m->work);
    pthread_cond_broadcast(&m->changed);
    pthread_mutex_unlock(&m->mu);
    if (m->loader_running) pthread_join(m->loader, NULL);
    pthread_mutex_lock(&m->mu);
    for (int32_t i = 0; i < m->n; i++)
        if (m->e[i]->state == MGR_LOADED) unload_locked(m, m->e[i]);
    pthread_mutex_unlock(&m->mu);
    for (int32_t i = 0; i < m->n; i++) {
        mgr_entry *e = m->e[i];
        free(e->name);
        free(e->path);
        free(e->chat_template);
        for (int k = 0; k < MAX_ALIASES; k++) free(e->aliases[k]);
        free(e);
    }
    free(m->e);
    for (int32_t i = 0; i < m->n_loras; i++) free(m->loras[i]->name), free(m->loras[i]->path), free(m->loras[i]);
    free(m->loras);
    for (int i = 0; i < m->n_dirs; i++) free(m->dirs[i]);
    pagoda_memory_broker_destroy(m->broker);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->changed);
    pthread_cond_destroy(&m->work);
    free(m);
}

static int entry_is(const mgr_entry *e, const char *name) {
    if (!strcmp(e->name, name) || !strcmp(e->path, name)) return 1;
    for (int k = 0; k < MAX_ALIASES && e->aliases[k]; k++)
        if (!strcmp(e->aliases[k], name)) return 1;
    return 0;
}

static mgr_entry *find_locked(mgr *m, const char *name) {
    if (!name || !*name) return m->n ? m->e[0] : NULL;
    for (int32_t i = 0; i < m->n; i++)
        if (entry_is(m->e[i], name)) return m->e[i];
    return NULL;
}

static mgr_lora *lora_find_locked(mgr *m, const char *name) {
    for (int32_t i = 0; name && i < m->n_loras; i++)
        if (!strcmp(m->loras[i]->name, name)) return m->loras[i];
    return NULL;
}

/* A new (or reused tombstone) adapter entry, not live yet. NULL with err set. */
static mgr_lora *lora_new_locked(mgr *m, const char *name, const char *path, mgr_entry *b, char *err, size_t cap) {
    mgr_lora *a = lora_find_locked(m, name);
    if ((a && a->live) || find_locked(m, name)) {
        snprintf(err, cap, "the name '%s' is taken (a model or an adapter)", name);
        return NULL;
    }
    if (a && a->adding) { /* being added by another request */
        snprintf(err, cap, "adapter '%s' is being loaded", name);
        return NULL;
    }
    char *p = strdup(path);
    if (!p) return snprintf(err, cap, "out of memory"), NULL;
    if (!a) {
        mgr_lora **arr = realloc(m->loras, (size_t)(m->n_loras + 1) * sizeof *arr);
        if (arr) m->loras = arr;
        a = arr ? calloc(1, sizeof *a) : NULL;
        if (a && !(a->name = strdup(name))) free(a), a = NULL;
        if (!a) return free(p), snprintf(err, cap, "out of memory"), NULL;
        m->loras[m->n_loras++] = a;
    }
    free(a->path);
    a->path = p, a->base = b, a->id = 0, a->live = 0, a->error[0] = 0;
    a->bytes = model_file_bytes(p); /* the estimate until it loads */
    return a;
}

pagoda_status mgr_add_lora(mgr *m, const char *name, const char *path, const char *base) {
    if (!name || !*name || !path || !*path) return pg_fail(PAGODA_ERR_INVALID, "an adapter needs a name and a path");
    char err[300] = "";
    pthread_mutex_lock(&m->mu);
    mgr_entry *b = find_locked(m, base);
    mgr_lora *a = b ? lora_new_locked(m, name, path, b, err, sizeof err) : NULL;
    if (a) a->live = 1;
    pthread_mutex_unlock(&m->mu);
    if (!b) return pg_fail(PAGODA_ERR_INVALID, "adapter '%s': no base model '%s'", name, base ? base : "(default)");
    return a ? PAGODA_OK : pg_fail(PAGODA_ERR_INVALID, "%s", err);
}

mgr_result mgr_load_lora(mgr *m, const char *name, const char *path, const char *base, double wait_s, char *err,
                         size_t cap) {
    if (cap) err[0] = 0;
    pthread_mutex_lock(&m->mu);
    mgr_entry *b = find_locked(m, base);
    mgr_lora *a = b ? lora_new_locked(m, name, path, b, err, cap) : NULL;
    if (a) a->adding = 1;
    char base_name[256];
    snprintf(base_name, sizeof base_name, "%s", b ? b->name : "");
    pthread_mutex_unlock(&m->mu);
    if (!b) return snprintf(err, cap, "no base model '%s'", base ? base : "(default)"), MGR_NOT_FOUND;
    if (!a) return MGR_FAILED;
    /* the base must be loaded to check the adapter against it: hold a lease while loading */
    mgr_lease lease;
    mgr_result r = mgr_acquire(m, base_name, wait_s, MGR_RETRY_FAILED, &lease, err, cap);
    int32_t id = 0;
    if (r == MGR_OK) {
        if (pagoda_engine_adapter_load(lease.engine, path, 0, &id))
            snprintf(err, cap, "adapter '%s' (%s): %s", name, path, pagoda_last_error()), r = MGR_FAILED, id = 0;
    }
    pthread_mutex_lock(&m->mu);
    a->adding = 0;
    if (r == MGR_OK) {
        pagoda_adapter_info ai;
        a->id = id, a->live = 1;
        if (!pagoda_engine_adapter_info(lease.engine, id, &ai)) a->bytes = ai.bytes;
        fprintf(stderr, "pagoda: adapter '%s' loaded on '%s' (%s)\n", name, base_name, path);
    }
    pthread_mutex_unlock(&m->mu);
    if (lease.entry) mgr_release(m, &lease);
    return r;
}

mgr_result mgr_unload_lora(mgr *m, const char *name, char *err, size_t cap) {
    if (cap) err[0] = 0;
    pthread_mutex_lock(&m->mu);
    mgr_lora *a = lora_find_locked(m, name);
    mgr_result r = MGR_OK;
    if (!a || !a->live) {
        snprintf(err, cap, "no adapter '%s' is loaded", name ? name : "");
        r = MGR_NOT_FOUND;
    } else {
        mgr_entry *e = a->base;
        /* the engine stays while the lock is held (unload_locked clears it under the lock) */
        if (a->id && e->state == MGR_LOADED && e->engine) pagoda_engine_adapter_unload(e->engine, a->id);
        a->live = 0, a->id = 0;
        fprintf(stderr, "pagoda: adapter '%s' unloaded\n", a->name);
    }
    pthread_mutex_unlock(&m->mu);
    return r;
}

pagoda_status mgr_list_loras(mgr *m, mgr_lora_status **out, int32_t *n) {
    pthread_mutex_lock(&m->mu);
    *n = 0;
    *out = calloc((size_t)m->n_loras + 1, sizeof **out);
    if (!*out) {
        pthread_mutex_unlock(&m->mu);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    for (int32_t i = 0; i < m->n_loras; i++) {
        const mgr_lora *a = m->loras[i];
        if (!a->live) continue;
        mgr_lora_status *o = &(*out)[(*n)++];
        snprintf(o->name, sizeof o->name, "%s", a->name);
        snprintf(o->base, sizeof o->base, "%s", a->base->name);
        snprintf(o->path, sizeof o->path, "%s", a->path);
        snprintf(o->error, sizeof o->error, "%s", a->error);
        o->loaded = a->id != 0;
        o->base_state = a->base->state;
    }
    pthread_mutex_unlock(&m->mu);
    return PAGODA_OK;
}

pagoda_status mgr_add(mgr *m, const mgr_model_spec *s) {
    if (!s->name || !*s->name || !s->path || !*s->path) return pg_fail(PAGODA_ERR_INVALID, "a model needs a name and a path");
    pthread_mutex_lock(&m->mu);
    pagoda_status st = PAGODA_OK;
    if (find_locked(m, s->name)) {
        st = pg_fail(PAGODA_ERR_INVALID, "the model name '%s' is given twice", s->name);
        goto out;
    }
    if (m->n == m->cap) {
        int32_t cap = m->cap ? m->cap * 2 : 8;
        mgr_entry **p = realloc(m->e, (size_t)cap * sizeof *p);
        if (!p) goto nomem;
        m->e = p, m->cap = cap;
    }
    mgr_entry *e = calloc(1, sizeof *e);
    if (!e) goto nomem;
    e->name = strdup(s->name);
    e->path = strdup(s->path);
    e->chat_template = s->chat_template ? strdup(s->chat_template) : NULL;
    int bad = !e->name || !e->path || (s->chat_template && !e->chat_template);
    for (int k = 0; k < MAX_ALIASES && s->aliases[k]; k++) bad |= !(e->aliases[k] = strdup(s->aliases[k]));
    if (bad) {
        free(e->name), free(e->path), free(e->chat_template);
        for (int k = 0; k < MAX_ALIASES; k++) free(e->aliases[k]);
        free(e);
        goto nomem;
    }
    e->pinned = s->pinned;
    e->keep_alive_s = s->keep_alive_s;
    e->task = s->task;
    e->kv_mem_bytes = s->kv_mem_bytes;
    e->max_model_len = s->max_model_len;
    e->file_bytes = model_file_bytes(s->path);
    e->last_used = 0;
    m->e[m->n++] = e;
out:
    pthread_mutex_unlock(&m->mu);
    return st;
nomem:
    pthread_mutex_unlock(&m->mu);
    return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
}

static int known_path_locked(mgr *m, const char *path) {
    for (int32_t i = 0; i < m->n; i++)
        if (!strcmp(m->e[i]->path, path)) return 1;
    return 0;
}

static int scan_one(mgr *m, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int added = 0;
    struct dirent *de;
    char path[4096], probe[4200], name[256];
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        size_t l = strlen(de->d_name);
        if (S_ISDIR(st.st_mode)) {
            snprintf(probe, sizeof probe, "%s/config.json", path);
            if (access(probe, R_OK) != 0) continue;
        } else if (!S_ISREG(st.st_mode) || l <= 5 || strcasecmp(de->d_name + l - 5, ".gguf"))
            continue;
        mgr_name_of_path(path, name, sizeof name);
        pthread_mutex_lock(&m->mu);
        int known = known_path_locked(m, path) || find_locked(m, name);
        pthread_mutex_unlock(&m->mu);
        if (known) continue;
        mgr_model_spec s = {.name = name, .path = path, .keep_alive_s = -1};
        if (mgr_add(m, &s) == PAGODA_OK) added++;
    }
    closedir(d);
    return added;
}

const char *mgr_name_of_path(const char *path, char *buf, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    size_t len = n - b;
    if (len > 5 && !strncasecmp(path + n - 5, ".gguf", 5)) len -= 5;
    snprintf(buf, cap, "%.*s", (int)len, path + b);
    return buf;
}

int mgr_scan_dir(mgr *m, const char *dir) {
    int r = scan_one(m, dir);
    if (r < 0) return -1;
    pthread_mutex_lock(&m->mu);
    int have = 0;
    for (int i = 0; i < m->n_dirs; i++) have |= !strcmp(m->dirs[i], dir);
    if (!have && m->n_dirs < MAX_DIRS) m->dirs[m->n_dirs] = strdup(dir), m->n_dirs += m->dirs[m->n_dirs] != NULL;
    pthread_mutex_unlock(&m->mu);
    return r;
}

void mgr_rescan(mgr *m) {
    char *dirs[MAX_DIRS];
    pthread_mutex_lock(&m->mu);
    int n = m->n_dirs;
    for (int i = 0; i < n; i++) dirs[i] = strdup(m->dirs[i]);
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < n; i++) {
        if (dirs[i]) scan_one(m, dirs[i]);
        free(dirs[i]);
    }
}

/* ---- leases ---- */

static void fill_lease(mgr_entry *e, mgr_lease *l) {
    l->entry = e;
    l->model = e->model;
    l->engine = e->engine;
    l->info = &e->info;
    l->name = e->name;
    l->attached = e->attached;
    l->embed_only = e->embed_only;
    l->adapter = 0;
}

/* Starts a load of e if it is not loaded or loading (m->mu held). */
static void request_load_locked(mgr *m, mgr_entry *e) {
    if (e->state == MGR_AVAILABLE || e->state == MGR_STATE_FAILED) {
        e->state = MGR_LOADING;
        e->pending = 1;
        pthread_cond_signal(&m->work);
    }
}

mgr_result mgr_acquire(mgr *m, const char *name, double timeout_s, int flags, mgr_lease *lease, char *err,
                       size_t cap) {
    memset(lease, 0, sizeof *lease);
    if (cap) err[0] = 0;
    pthread_mutex_lock(&m->mu);
    mgr_entry *e = find_locked(m, name);
    mgr_lora *lora = e ? NULL : lora_find_locked(m, name);
    if (lora && lora->live) e = lora->base;
    else lora = NULL;
    if (!e) {
        pthread_mutex_unlock(&m->mu);
        return MGR_NOT_FOUND;
    }
    const double deadline = mono() + timeout_s;
    int asked = !(flags & MGR_RETRY_FAILED);
    mgr_result r = MGR_OK;
    for (;;) {
        if (e->state == MGR_LOADED && !e->closing) {
            if (lora && !lora->live) {
                snprintf(err, cap, "adapter '%s' was unloaded", lora->name);
                r = MGR_FAILED;
                break;
            }
            if (lora && !lora->id) {
                snprintf(err, cap, "adapter '%s' failed to load: %s", lora->name, lora->error);
                r = MGR_FAILED;
                break;
            }
            e->leases++;
            e->last_mono = mono(), e->last_used = now_unix();
            fill_lease(e, lease);
            if (lora) lease->adapter = lora->id, lease->name = lora->name;
            break;
        }
        if (e->state == MGR_STATE_FAILED && asked) {
            snprintf(err, cap, "model '%s' failed to load: %s", e->name, e->error);
            r = MGR_FAILED;
            break;
        }
        if ((e->state == MGR_AVAILABLE || e->state == MGR_STATE_FAILED) && !(flags & MGR_NO_LOAD))
            request_load_locked(m, e), asked = 1;
        if (e->state == MGR_LOADING) asked = 1;
        if (m->stop) {
            snprintf(err, cap, "the server is shutting down");
            r = MGR_FAILED;
            break;
        }
        if (mono() >= deadline || timed_wait(&m->changed, &m->mu, deadline) == ETIMEDOUT) {
            if (e->state == MGR_LOADED && !e->closing) continue;
            if (e->state == MGR_STATE_FAILED && asked) continue;
            snprintf(err, cap, "model '%s' is %s; try again shortly", e->name, mgr_state_name(e->state));
            r = MGR_TIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return r;
}

void mgr_release(mgr *m, mgr_lease *lease) {
    if (!lease->entry) return;
    pthread_mutex_lock(&m->mu);
    mgr_entry *e = lease->entry;
    if (e->leases > 0) e->leases--;
    e->last_mono = mono(), e->last_used = now_unix();
    pthread_cond_broadcast(&m->changed);
    pthread_mutex_unlock(&m->mu);
    memset(lease, 0, sizeof *lease);
}

mgr_result mgr_load(mgr *m, const char *name, double wait_s, char *err, size_t cap) {
    if (cap) err[0] = 0;
    pthread_mutex_lock(&m->mu);
    mgr_entry *e = find_locked(m, name);
    if (!e || !name || !*name) {
        pthread_mutex_unlock(&m->mu);
        return MGR_NOT_FOUND;
    }
    request_load_locked(m, e);
    const double deadline = mono() + wait_s;
    while (e->state == MGR_LOADING && wait_s > 0 && mono() < deadline) timed_wait(&m->changed, &m->mu, deadline);
    mgr_result r = MGR_OK;
    if (e->state == MGR_STATE_FAILED) {
        snprintf(err, cap, "model '%s' failed to load: %s", e->name, e->error);
        r = MGR_FAILED;
    }
    pthread_mutex_unlock(&m->mu);
    return r;
}

mgr_result mgr_unload(mgr *m, const char *name, double wait_s, char *err, size_t cap) {
    if (cap) err[0] = 0;
    pthread_mutex_lock(&m->mu);
    mgr_entry *e = find_locked(m, name);
    if (!e || !name || !*name) {
        pthread_mutex_unlock(&m->mu);
        return MGR_NOT_FOUND;
    }
    mgr_result r = MGR_OK;
    const double deadline = mono() + wait_s;
    if (e->pinned) {
        snprintf(err, cap, "model '%s' is pinned: it is never unloaded", e->name);
        r = MGR_FAILED;
        goto out;
    }
    while ((e->state == MGR_LOADING || e->state == MGR_UNLOADING) && mono() < deadline)
        timed_wait(&m->changed, &m->mu, deadline);
    if (e->state != MGR_LOADED) goto out; /* not loaded: nothing to do */
    e->closing = 1;
    while (e->leases > 0 && mono() < deadline) timed_wait(&m->changed, &m->mu, deadline);
    if (e->leases > 0) {
        e->closing = 0;
        pthread_cond_broadcast(&m->changed);
        snprintf(err, cap, "model '%s' still has %d request(s) in flight", e->name, e->leases);
        r = MGR_TIMEOUT;
        goto out;
    }
    unload_locked(m, e);
out:
    pthread_mutex_unlock(&m->mu);
    return r;
}

/* ---- inspection ---- */

pagoda_status mgr_list(mgr *m, mgr_model_status **out, int32_t *n) {
    pthread_mutex_lock(&m->mu);
    mgr_model_status *a = calloc((size_t)(m->n ? m->n : 1), sizeof *a);
    if (!a) {
        pthread_mutex_unlock(&m->mu);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    const double nowm = mono(), nowu = now_unix();
    for (int32_t i = 0; i < m->n; i++) {
        const mgr_entry *e = m->e[i];
        mgr_model_status *s = &a[i];
        snprintf(s->name, sizeof s->name, "%s", e->name);
        snprintf(s->path, sizeof s->path, "%s", e->path);
        s->state = e->state;
        snprintf(s->error, sizeof s->error, "%s", e->state == MGR_STATE_FAILED ? e->error : "");
        s->pinned = e->pinned;
        s->task_embed = e->state == MGR_LOADED ? e->embed_only : e->task == MGR_TASK_EMBED;
        s->keep_alive_s = entry_keep_alive(m, e);
        if (s->keep_alive_s < 0) s->keep_alive_s = 0;
        if (e->state == MGR_LOADED && !e->pinned && s->keep_alive_s > 0)
            s->expires_at = nowu + (e->last_mono + s->keep_alive_s - nowm);
        s->last_used = e->last_used;
        s->file_bytes = e->file_bytes;
        s->adapter_bytes = lora_bytes_locked(m, e);
        s->weight_bytes = e->state == MGR_LOADED ? e->info.weight_bytes : 0;
        s->kv_bytes = e->state == MGR_LOADED ? e->kv_bytes : 0;
        s->in_flight = e->leases;
        s->max_model_len = e->state == MGR_LOADED ? e->engine_max_len : 0;
        s->loads = e->loads;
        s->evictions = e->evictions;
        s->load_seconds = e->load_s;
        s->is_default = i == 0;
    }
    *n = m->n;
    *out = a;
    pthread_mutex_unlock(&m->mu);
    return PAGODA_OK;
}

int mgr_known(mgr *m, const char *name, char *served, size_t cap) {
    pthread_mutex_lock(&m->mu);
    mgr_entry *e = find_locked(m, name);
    if (e && cap) snprintf(served, cap, "%s", e->name);
    pthread_mutex_unlock(&m->mu);
    return e != NULL;
}

uint64_t mgr_budget(const mgr *m) { return m->budget; }

uint64_t mgr_in_use(mgr *m) {
    pthread_mutex_lock(&m->mu);
    uint64_t u = in_use_locked(m);
    pthread_mutex_unlock(&m->mu);
    return u;
}

int32_t mgr_in_flight(mgr *m) {
    pthread_mutex_lock(&m->mu);
    int32_t k = 0;
    for (int32_t i = 0; i < m->n; i++) k += m->e[i]->leases;
    pthread_mutex_unlock(&m->mu);
    return k;
}

void mgr_for_each_engine(mgr *m, void (*fn)(pagoda_engine *e, void *user), void *user) {
    pthread_mutex_lock(&m->mu);
    for (int32_t i = 0; i < m->n; i++)
        if (m->e[i]->engine && m->e[i]->state == MGR_LOADED) fn(m->e[i]->engine, user);
    pthread_mutex_unlock(&m->mu);
}
