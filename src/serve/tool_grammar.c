/* The grammar of forced tool calls (see tool_grammar.h). */
#include "serve/tool_grammar.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tg_spec_free(tg_spec *s) {
    if (!s) return;
    free(s->schema);
    memset(s, 0, sizeof *s);
}

/* Local references ("#...") in a tool's parameters were relative to the parameters themselves;
 * once those sit at /$defs/<def>, "#/x" must read "#/$defs/<def>/x". 1 if any was rewritten, -1
 * on no memory. */
static int rebase_refs(json_t *v, const char *def, int depth) {
    if (depth > 256) return 0; /* the schema compiler refuses such depth itself */
    int any = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            if (!strcmp(k, "$ref") && json_is_string(x) && json_string_value(x)[0] == '#') {
                const char *rest = json_string_value(x) + 1;
                size_t n = strlen(def) + strlen(rest) + 16;
                char *nv = malloc(n);
                if (!nv) return -1;
                snprintf(nv, n, "#/$defs/%s%s", def, rest);
                int rc = json_string_set(x, nv);
                free(nv);
                if (rc) return -1;
                any = 1;
            } else {
                int r = rebase_refs(x, def, depth + 1);
                if (r < 0) return -1;
                any |= r;
            }
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            int r = rebase_refs(x, def, depth + 1);
            if (r < 0) return -1;
            any |= r;
        }
    }
    return any;
}

/* One call of one tool: {"name": const, args_key: parameters}, both required, nothing else. */
static json_t *call_schema(const json_t *fn, const char *args_key, size_t index, json_t *defs, char *err, size_t cap) {
    const char *name = json_string_value(json_object_get(fn, "name"));
    const json_t *params = json_object_get(fn, "parameters");
    json_t *args;
    if (!params || json_is_null(params)) {
        args = json_pack("{s:s}", "type", "object");
    } else if (!json_is_object(params)) {
        snprintf(err, cap, "the parameters of tool '%.128s' are not a JSON Schema object", name);
        return NULL;
    } else {
        args = json_deep_copy(params);
        char def[32];
        snprintf(def, sizeof def, "tool%zu", index);
        int r = args ? rebase_refs(args, def, 0) : -1;
        if (r < 0) {
            json_decref(args);
            return NULL;
        }
        if (r > 0) { /* referenced from inside: the parameters move to $defs, the call refers there */
            char ref[48];
            snprintf(ref, sizeof ref, "#/$defs/%s", def);
            if (json_object_set_new(defs, def, args)) return NULL;
            args = json_pack("{s:s}", "$ref", ref);
        } else {
            json_object_del(args, "$schema"); /* a root-only keyword, meaningless once nested */
        }
    }
    if (!args) return NULL;
    return json_pack("{s:s, s:{s:{s:s}, s:o}, s:[s,s], s:b}", "type", "object", "properties", "name", "const", name,
                     args_key, args, "required", "name", args_key, "additionalProperties", 0);
}

int tg_build(tc_format format, const char *tools_json, const char *only, int parallel, tg_spec *out, char *err,
             size_t cap) {
    memset(out, 0, sizeof *out);
    err[0] = 0;
    json_error_t je;
    json_t *tools = json_loads(tools_json ? tools_json : "", 0, &je);
    json_t *alts = json_array(), *defs = json_object(), *root = NULL;
    int rc = -1;
    if (!tools || !json_is_array(tools) || !alts || !defs) {
        snprintf(err, cap, "the tools are not a JSON array");
        goto done;
    }
    const char *args_key = format == TC_FORMAT_LLAMA3 ? "parameters" : "arguments";
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const json_t *fn = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!name || (only && strcmp(name, only))) continue;
        json_t *c = call_schema(fn, args_key, i, defs, err, cap);
        if (!c || json_array_append_new(alts, c)) {
            if (!err[0]) snprintf(err, cap, "out of memory");
            goto done;
        }
    }
    if (!json_array_size(alts)) {
        snprintf(err, cap, only ? "the function '%.128s' is not among the tools" : "no tools%.0s", only ? only : "");
        goto done;
    }
    json_t *call = json_array_size(alts) == 1 ? json_incref(json_array_get(alts, 0)) : json_pack("{s:O}", "anyOf", alts);
    int max = parallel ? TC_MAX_CALLS : 1;
    json_t *list = json_pack("{s:s, s:o, s:i, s:i}", "type", "array", "items", json_incref(call), "minItems", 1, "maxItems", max);
    switch (format) {
    case TC_FORMAT_MISTRAL:
        root = json_incref(list);
        out->prefix = "[TOOL_CALLS]";
        out->triggers[out->n_triggers++] = "[TOOL_CALLS]";
        break;
    case TC_FORMAT_JSON:
        root = parallel ? json_pack("{s:[O,O]}", "anyOf", call, list) : json_incref(call);
        out->triggers[out->n_triggers++] = "{";
        if (parallel) out->triggers[out->n_triggers++] = "[";
        out->trigger_at_start = 1;
        break;
    case TC_FORMAT_HERMES:
        out->triggers[out->n_triggers++] = "<tool_call>";
        out->prefix = "<tool_call>\n";
        out->suffix = "\n</tool_call>";
        out->separator = "\n";
        root = json_incref(call);
        break;
    default: /* llama3 */
        out->triggers[out->n_triggers++] = "{";
        out->trigger_at_start = 1;
        out->separator = ";";
        root = json_incref(call);
        break;
    }
    if (format == TC_FORMAT_HERMES || format == TC_FORMAT_LLAMA3) {
        out->min_repeat = 1;
        out->max_repeat = max;
    }
    json_decref(call);
    json_decref(list);
    if (!root) {
        snprintf(err, cap, "out of memory");
        goto done;
    }
    if (json_object_size(defs) && json_object_set(root, "$defs", defs)) {
        snprintf(err, cap, "out of memory");
        goto done;
    }
    if (!(out->schema = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS))) {
        snprintf(err, cap, "out of memory");
        goto done;
    }
    rc = 0;
done:
    json_decref(root);
    json_decref(tools);
    json_decref(alts);
    json_decref(defs);
    if (rc) tg_spec_free(out);
    return rc;
}
