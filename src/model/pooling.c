/* Reading a model's declared embedding pooling (see pooling.h). */
#include "model/pooling.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "core/log.h"

pagoda_status pooling_from_gguf(const gguf_file *f, const char *arch, pg_model_config *c) {
    char key[128];
    snprintf(key, sizeof key, "%s.pooling_type", arch);
    int64_t v;
    if (!gguf_find_kv(f, key)) return PAGODA_OK;
    if (!gguf_get_i64(f, key, &v) || v < 0 || v > 4)
        return pg_fail(PAGODA_ERR_FORMAT, "gguf metadata: %s must be an integer 0..4 (none, mean, cls, last, rank)", key);
    c->pooling = (int32_t)v;
    c->embedding_package = v != 0;
    c->pool_normalize = true; /* llama.cpp normalizes (Euclidean) unless told otherwise */
    return PAGODA_OK;
}

static pagoda_status load_json(const char *path, json_t **out) {
    char *buf;
    size_t n;
    *out = NULL;
    pagoda_status st = pg_read_file(path, 1 << 20, &buf, &n);
    if (st) return st;
    json_error_t jerr;
    json_t *j = json_loadb(buf, n, 0, &jerr);
    free(buf);
    if (!j) return pg_fail(PAGODA_ERR_FORMAT, "%s: line %d: %s", path, jerr.line, jerr.text);
    *out = j;
    return PAGODA_OK;
}

/* The Pooling module's config: exactly one mode pagoda computes. */
static pagoda_status read_pooling_config(const char *path, pg_model_config *c) {
    json_t *j;
    pagoda_status st = load_json(path, &j);
    if (st) return st;
    static const struct { const char *key; int32_t mode; } k_modes[] = {
        {"pooling_mode_cls_token", PAGODA_POOLING_CLS}, {"pooling_mode_mean_tokens", PAGODA_POOLING_MEAN},
        {"pooling_mode_lasttoken", PAGODA_POOLING_LAST}, {"pooling_mode_max_tokens", -1},
        {"pooling_mode_mean_sqrt_len_tokens", -1}, {"pooling_mode_weightedmean_tokens", -1},
    };
    int n_on = 0;
    int32_t mode = 0;
    const char *unsupported = NULL;
    if (!json_is_object(j)) {
        st = pg_fail(PAGODA_ERR_FORMAT, "%s: not a JSON object", path);
        goto out;
    }
    for (size_t i = 0; i < sizeof k_modes / sizeof k_modes[0]; i++) {
        json_t *v = json_object_get(j, k_modes[i].key);
        if (v && !json_is_boolean(v)) {
            st = pg_fail(PAGODA_ERR_FORMAT, "%s: %s must be true or false", path, k_modes[i].key);
            goto out;
        }
        if (!json_is_true(v)) continue;
        n_on++;
        if (k_modes[i].mode < 0) unsupported = k_modes[i].key;
        else mode = k_modes[i].mode;
    }
    if (unsupported || n_on > 1) {
        st = pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: pooling %s is not supported (one of pooling_mode_lasttoken, "
                     "pooling_mode_mean_tokens, pooling_mode_cls_token)", path, unsupported ? unsupported : "with several modes");
        goto out;
    }
    json_t *ip = json_object_get(j, "include_prompt");
    if (json_is_false(ip)) {
        st = pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: include_prompt false (an instruction prefix left out of the pooling) "
                     "is not supported", path);
        goto out;
    }
    c->pooling = mode;
out:
    json_decref(j);
    return st;
}

pagoda_status pooling_from_hf(const char *dir, pg_model_config *c) {
    char path[4096];
    snprintf(path, sizeof path, "%s/modules.json", dir);
    if (access(path, F_OK) != 0) return PAGODA_OK;
    json_t *j;
    pagoda_status st = load_json(path, &j);
    if (st) return st;
    const char *pool_path = NULL;
    bool normalize = false;
    if (!json_is_array(j)) {
        st = pg_fail(PAGODA_ERR_FORMAT, "%s: not a JSON array of modules", path);
        goto out;
    }
    size_t i;
    json_t *mod;
    json_array_foreach(j, i, mod) {
        const char *type = json_string_value(json_object_get(mod, "type"));
        const char *p = json_string_value(json_object_get(mod, "path"));
        if (!type || !p) {
            st = pg_fail(PAGODA_ERR_FORMAT, "%s: module %zu needs string fields type and path", path, i);
            goto out;
        }
        const char *dot = strrchr(type, '.');
        const char *name = dot ? dot + 1 : type;
        if (!strcmp(name, "Pooling")) {
            if (strstr(p, "..") || p[0] == '/') {
                st = pg_fail(PAGODA_ERR_FORMAT, "%s: module path '%s' leaves the model folder", path, p);
                goto out;
            }
            pool_path = p;
        } else if (!strcmp(name, "Normalize")) {
            normalize = true;
        }
    }
    c->embedding_package = true;
    c->pool_normalize = normalize;
    if (pool_path) {
        char cfg_path[4096];
        snprintf(cfg_path, sizeof cfg_path, "%s/%s/config.json", dir, pool_path);
        st = read_pooling_config(cfg_path, c);
    }
out:
    json_decref(j);
    return st;
}
