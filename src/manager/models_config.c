/* --models-config FILE: the models of a server in YAML (libyaml), see models_config.h. */
#include "manager/models_config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>

#include "core/log.h"

static const char *scalar(yaml_node_t *n) { return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL; }

static int bad(char *err, size_t cap, const yaml_node_t *n, const char *fmt, const char *a, const char *b) {
    char msg[256];
    snprintf(msg, sizeof msg, fmt, a ? a : "", b ? b : "");
    snprintf(err, cap, "line %lu: %s", n ? (unsigned long)n->start_mark.line + 1 : 0ul, msg);
    return -1;
}

/* "512M", "2G", "1048576" -> bytes */
static int parse_size(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0)) return -1;
    double mul = 1;
    if (*end) {
        switch (*end == 'i' ? 0 : *end) {
        case 'k': case 'K': mul = 1024.0; break;
        case 'm': case 'M': mul = 1048576.0; break;
        case 'g': case 'G': mul = 1073741824.0; break;
        default: return -1;
        }
        end++;
        if (*end == 'i') end++;
        if (*end == 'B' || *end == 'b') end++;
        if (*end) return -1;
    }
    if (v * mul > 1.8e19) return -1;
    *out = (uint64_t)(v * mul);
    return 0;
}

static int parse_bool(const char *s, int *out) {
    if (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on") || !strcmp(s, "1")) return *out = 1, 0;
    if (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off") || !strcmp(s, "0")) return *out = 0, 0;
    return -1;
}

char *mgr_read_chat_template(const char *arg, char *err, size_t cap) {
    struct stat sb;
    if (!arg || !*arg) return snprintf(err, cap, "chat template: empty"), NULL;
    if (stat(arg, &sb) == 0 && S_ISREG(sb.st_mode)) {
        if (sb.st_size > (1 << 20)) return snprintf(err, cap, "chat template %s: over 1 MiB", arg), NULL;
        FILE *f = fopen(arg, "rb");
        char *text = f ? malloc((size_t)sb.st_size + 1) : NULL;
        size_t n = text ? fread(text, 1, (size_t)sb.st_size, f) : 0;
        if (f) fclose(f);
        if (!text || n != (size_t)sb.st_size) {
            free(text);
            return snprintf(err, cap, "chat template %s: %s", arg, f ? "cannot be read" : strerror(errno)), NULL;
        }
        text[n] = 0;
        if (strlen(text) != n) return free(text), snprintf(err, cap, "chat template %s: holds a NUL byte", arg), NULL;
        return text;
    }
    if (!strstr(arg, "{{") && !strstr(arg, "{%"))
        return snprintf(err, cap, "chat template '%.200s': no such file, and not a Jinja template", arg), NULL;
    char *text = strdup(arg);
    if (!text) snprintf(err, cap, "out of memory");
    return text;
}

/* One model's mapping into *s (strings point into the document; chat_template from malloc). */
static int read_model(yaml_document_t *d, yaml_node_t *map, const char *key_name, mgr_model_spec *s, char *err,
                      size_t cap) {
    memset(s, 0, sizeof *s);
    s->keep_alive_s = -1;
    s->name = key_name;
    if (map->type != YAML_MAPPING_NODE) return bad(err, cap, map, "a model must be a mapping (name, path, ...)", 0, 0);
    int n_alias = 0;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(d, p->key), *vn = yaml_document_get_node(d, p->value);
        const char *k = scalar(kn), *v = scalar(vn);
        if (!k) return bad(err, cap, kn, "keys must be plain names", 0, 0);
        if (!strcmp(k, "aliases") || !strcmp(k, "served_names") || !strcmp(k, "served_model_name")) {
            if (v) {
                if (n_alias < 8) s->aliases[n_alias++] = v;
                continue;
            }
            if (!vn || vn->type != YAML_SEQUENCE_NODE) return bad(err, cap, vn, "'%s': a name or a list of names", k, 0);
            for (yaml_node_item_t *it = vn->data.sequence.items.start; it < vn->data.sequence.items.top; it++) {
                const char *a = scalar(yaml_document_get_node(d, *it));
                if (!a) return bad(err, cap, vn, "'%s': a list of names", k, 0);
                if (n_alias == 8) return bad(err, cap, vn, "'%s': at most 8 names", k, 0);
                s->aliases[n_alias++] = a;
            }
            continue;
        }
        if (!v) return bad(err, cap, vn, "'%s' needs a plain value", k, 0);
        char *end = NULL;
        if (!strcmp(k, "name")) s->name = v;
        else if (!strcmp(k, "path") || !strcmp(k, "model")) s->path = v;
        else if (!strcmp(k, "pinned")) {
            if (parse_bool(v, &s->pinned)) return bad(err, cap, vn, "'pinned': true or false, got '%s'", v, 0);
        } else if (!strcmp(k, "keep_alive")) {
            s->keep_alive_s = strtod(v, &end);
            if (*end || end == v || !(s->keep_alive_s >= 0) || !isfinite(s->keep_alive_s))
                return bad(err, cap, vn, "'keep_alive': seconds (0: never unload when idle), got '%s'", v, 0);
        } else if (!strcmp(k, "n_ctx") || !strcmp(k, "max_model_len") || !strcmp(k, "context_length")) {
            long x = strtol(v, &end, 10);
            if (*end || end == v || x < 1 || x > (1 << 24)) return bad(err, cap, vn, "'%s': a token count, got '%s'", k, v);
            s->max_model_len = (int32_t)x;
        } else if (!strcmp(k, "kv_mem") || !strcmp(k, "kv_memory")) {
            if (parse_size(v, &s->kv_mem_bytes)) return bad(err, cap, vn, "'%s': a size such as 512M or 2G, got '%s'", k, v);
        } else if (!strcmp(k, "task")) {
            if (!strcmp(v, "generate")) s->task = MGR_TASK_GENERATE;
            else if (!strcmp(v, "embed")) s->task = MGR_TASK_EMBED;
            else if (!strcmp(v, "auto")) s->task = MGR_TASK_AUTO;
            else return bad(err, cap, vn, "'task': generate, embed or auto, got '%s'", v, 0);
        } else if (!strcmp(k, "chat_template")) {
            char why[400];
            free((char *)s->chat_template);
            if (!(s->chat_template = mgr_read_chat_template(v, why, sizeof why))) return bad(err, cap, vn, "%s", why, 0);
        } else if (!strcmp(k, "device")) {
            return bad(err, cap, kn, "'%s' is not supported yet in --models-config", k, 0);
        } else
            return bad(err, cap, kn, "unknown key '%s' (name, path, aliases, n_ctx, kv_mem, keep_alive, pinned, task, "
                       "chat_template)", k, 0);
    }
    if (!s->name || !*s->name) return bad(err, cap, map, "a model needs a 'name'", 0, 0);
    if (!s->path || !*s->path) return bad(err, cap, map, "model '%s' needs a 'path'", s->name, 0);
    return 0;
}

pagoda_status mgr_read_config(mgr *m, const char *path, char *err, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, cap, "%s", strerror(errno));
        return PAGODA_ERR_IO;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        snprintf(err, cap, "out of memory");
        return PAGODA_ERR_NOMEM;
    }
    yaml_parser_set_input_file(&parser, f);
    pagoda_status st = PAGODA_OK;
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, cap, "line %lu: %s", (unsigned long)parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "not valid YAML");
        yaml_parser_delete(&parser);
        fclose(f);
        return PAGODA_ERR_INVALID;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    yaml_node_t *models = NULL;
    if (root && root->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
            const char *k = scalar(yaml_document_get_node(&doc, p->key));
            if (k && !strcmp(k, "models")) models = yaml_document_get_node(&doc, p->value);
            else {
                bad(err, cap, yaml_document_get_node(&doc, p->key), "unknown top-level key '%s' (expected 'models')", k, 0);
                st = PAGODA_ERR_INVALID;
                goto out;
            }
        }
    } else if (root && root->type == YAML_SEQUENCE_NODE)
        models = root;
    if (!models || (models->type != YAML_SEQUENCE_NODE && models->type != YAML_MAPPING_NODE)) {
        snprintf(err, cap, "expected 'models:' with a list of models (name, path, ...) or a mapping of names to models");
        st = PAGODA_ERR_INVALID;
        goto out;
    }
    mgr_model_spec s;
    if (models->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = models->data.sequence.items.start; it < models->data.sequence.items.top && !st; it++) {
            if (read_model(&doc, yaml_document_get_node(&doc, *it), NULL, &s, err, cap)) st = PAGODA_ERR_INVALID;
            else if ((st = mgr_add(m, &s))) snprintf(err, cap, "%s", pagoda_last_error());
            free((char *)s.chat_template);
        }
    } else {
        for (yaml_node_pair_t *p = models->data.mapping.pairs.start; p < models->data.mapping.pairs.top && !st; p++) {
            const char *name = scalar(yaml_document_get_node(&doc, p->key));
            if (read_model(&doc, yaml_document_get_node(&doc, p->value), name, &s, err, cap)) st = PAGODA_ERR_INVALID;
            else if ((st = mgr_add(m, &s))) snprintf(err, cap, "%s", pagoda_last_error());
            free((char *)s.chat_template);
        }
    }
out:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return st;
}
