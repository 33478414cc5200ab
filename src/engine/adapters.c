/* The engine's LoRA adapter table: loads and unloads (any thread, under the engine's lock) change
 * a table of slots; the stepping thread takes it between steps (engine_adapters_sync), hands it to
 * the runner and fails requests whose adapter was unloaded. A request holds a key = (the slot's
 * load count << 8) | id, so a reused id never runs an old request with a new adapter, and the
 * prefix cache (salted by the key) never shares blocks between two adapters loaded under one id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "engine/engine_internal.h"
#include "engine/model_api.h"
#include "model/lora.h"

#define KEY(gen, id) ((int32_t)((((gen) & 0x7fffffu) << 8) | (uint32_t)(id)))

pagoda_status engine_adapters_create(pagoda_engine *e) {
    int32_t n = e->c.max_adapters + 1;
    e->ad = calloc((size_t)n, sizeof *e->ad);
    e->ad_gen = calloc((size_t)n, sizeof *e->ad_gen);
    e->ad_active = calloc((size_t)n, sizeof *e->ad_active);
    e->ad_active_key = calloc((size_t)n, sizeof *e->ad_active_key);
    if (!e->ad || !e->ad_gen || !e->ad_active || !e->ad_active_key) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    return PAGODA_OK;
}

void engine_adapters_destroy(pagoda_engine *e) {
    for (int32_t i = 0; e->ad && i <= e->c.max_adapters; i++) lora_free(e->ad[i]);
    for (int32_t i = 0; i < e->n_trash; i++) lora_free(e->ad_trash[i]);
    free(e->ad), free(e->ad_gen), free(e->ad_active), free(e->ad_active_key), free(e->ad_trash);
}

void engine_adapters_sync(pagoda_engine *e) {
    if (!e->ad_dirty) return;
    int32_t n = e->c.max_adapters + 1;
    for (int32_t i = 1; i < n; i++) {
        e->ad_active[i] = e->ad[i];
        e->ad_active_key[i] = e->ad[i] ? KEY(e->ad_gen[i], i) : 0;
    }
    /* a runner without adapters was refused at load; a failure here leaves the old table, whose
     * adapters are all still alive (unloaded ones wait in the trash) */
    if (e->runner->set_adapters && e->runner->set_adapters(e->runner, (const struct pg_lora *const *)e->ad_active, n)) {
        pg_log(PAGODA_LOG_WARN, "adapters: %s", pagoda_last_error());
        return;
    }
    for (int32_t i = 0; i < e->n_trash; i++) lora_free(e->ad_trash[i]);
    e->n_trash = 0;
    e->ad_dirty = 0;
}

pagoda_status engine_adapter_key(const pagoda_engine *e, int32_t id, int32_t *key) {
    *key = 0;
    if (id == 0) return PAGODA_OK;
    if (id < 0 || id > e->c.max_adapters || !e->ad[id])
        return pg_fail(PAGODA_ERR_INVALID, "adapter %d is not loaded", id);
    *key = KEY(e->ad_gen[id], id);
    return PAGODA_OK;
}

int engine_adapter_live(const pagoda_engine *e, int32_t key) {
    if (key == 0) return 1;
    int32_t id = key & 0xff;
    return id <= e->c.max_adapters && e->ad_active_key[id] == key;
}

pagoda_status pagoda_engine_adapter_load(pagoda_engine *e, const char *path, float scale, int32_t *id_out) {
    if (id_out) *id_out = 0;
    if (!e || !path || !id_out) return pg_fail(PAGODA_ERR_INVALID, "adapter load: engine, path and id_out are required");
    if (!e->pm || !e->pm->m) return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter load: this engine has no model weights");
    if (!e->runner->set_adapters || !e->runner->info.adapters)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "adapter load: LoRA adapters run on the CPU only, and this engine runs on %s "
                       "(start it without GPU layers to use adapters)", e->runner->info.name ? e->runner->info.name : "?");
    pg_lora *a = NULL;
    pagoda_status st = lora_load(e->pm->m, path, scale, &a); /* outside the lock: steps go on meanwhile */
    if (st) return st;
    pthread_mutex_lock(&e->mu);
    int32_t id = 0;
    for (int32_t i = 1; i <= e->c.max_adapters && !id; i++)
        if (!e->ad[i]) id = i;
    if (!id) {
        pthread_mutex_unlock(&e->mu);
        lora_free(a);
        return pg_fail(PAGODA_ERR_NOMEM, "adapter load: %d adapters are loaded (max_adapters); unload one first",
                       e->c.max_adapters);
    }
    e->ad[id] = a;
    e->ad_gen[id]++;
    e->ad_dirty = 1;
    /* an idle engine thread takes the new table at its next step; without a thread the caller's
     * next pagoda_engine_step does */
    pthread_mutex_unlock(&e->mu);
    *id_out = id;
    return PAGODA_OK;
}

pagoda_status pagoda_engine_adapter_unload(pagoda_engine *e, int32_t id) {
    if (!e) return pg_fail(PAGODA_ERR_INVALID, "adapter unload: no engine");
    pthread_mutex_lock(&e->mu);
    pagoda_status st = PAGODA_OK;
    if (id <= 0 || id > e->c.max_adapters || !e->ad[id]) {
        st = pg_fail(PAGODA_ERR_INVALID, "adapter %d is not loaded", id);
    } else {
        if (e->n_trash == e->cap_trash) {
            int32_t cap = e->cap_trash ? 2 * e->cap_trash : 8;
            struct pg_lora **t = realloc(e->ad_trash, sizeof *t * (size_t)cap);
            if (t) e->ad_trash = t, e->cap_trash = cap;
        }
        if (e->n_trash == e->cap_trash) {
            st = pg_fail(PAGODA_ERR_NOMEM, "adapter unload: out of memory");
        } else {
            e->ad_trash[e->n_trash++] = e->ad[id];
            e->ad[id] = NULL;
            e->ad_dirty = 1;
            pthread_cond_signal(&e->cv); /* the engine thread fails the requests that used it */
        }
    }
    pthread_mutex_unlock(&e->mu);
    return st;
}

pagoda_status pagoda_engine_adapter_info(pagoda_engine *e, int32_t id, pagoda_adapter_info *out) {
    if (!e || !out) return pg_fail(PAGODA_ERR_INVALID, "adapter info: engine and out are required");
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&e->mu);
    const pg_lora *a = id > 0 && id <= e->c.max_adapters ? e->ad[id] : NULL;
    if (a) {
        out->id = id, out->rank = a->max_rank, out->bytes = a->bytes;
        snprintf(out->source, sizeof out->source, "%s", a->source);
        for (int32_t l = 0; l < a->n_layer; l++) {
            int any = 0;
            for (int t = 0; t < LORA_N_TARGETS; t++) any |= lora_mat(a, l, (pg_lora_target)t)->rank > 0;
            out->n_layers += any;
        }
        size_t len = 0;
        for (int t = 0; t < LORA_N_TARGETS; t++)
            if (a->targets & (1u << t))
                len += (size_t)snprintf(out->targets + len, sizeof out->targets - len, "%s%s", len ? "," : "",
                                        lora_target_name((pg_lora_target)t));
    }
    pthread_mutex_unlock(&e->mu);
    return a ? PAGODA_OK : pg_fail(PAGODA_ERR_INVALID, "adapter %d is not loaded", id);
}
