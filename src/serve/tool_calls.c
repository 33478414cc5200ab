/* Tool calls parsed from generated text (see tool_calls.h).
 *
 * One incremental state machine serves both the streamed and the whole parse: the text fed so far
 * is kept in buf, a cursor (pos) walks it, and what is certain is turned into deltas. tc_parse
 * feeds everything at once and joins the deltas, so the two agree by construction; the only
 * difference is the malformed case, where the whole parse returns the text as it came.
 *
 * Call objects are walked by a small resumable JSON scanner that knows the members of the call
 * object's top level (enough to find "name" and where "arguments" starts and ends, and to stream
 * the arguments' bytes as they come); jansson validates each object once it is complete. */
#include "serve/tool_calls.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_DEPTH 512 /* nesting inside a call object */

static const char HERMES_OPEN[] = "<tool_call>";
static const char HERMES_CLOSE[] = "</tool_call>";
static const char PYTHON_TAG[] = "<|python_tag|>";
static const char MISTRAL_CALLS[] = "[TOOL_CALLS]";
static const char MISTRAL_ARGS[] = "[ARGS]";
static const char MISTRAL_CALL_ID[] = "[CALL_ID]";

/* ---- formats ---- */

static const char *const k_format_names[] = {"none", "hermes", "llama3", "mistral", "json", "auto"};

int tc_format_from_name(const char *name, tc_format *out) {
    for (int i = 0; name && i < (int)(sizeof k_format_names / sizeof *k_format_names); i++)
        if (!strcmp(name, k_format_names[i])) {
            *out = (tc_format)i;
            return 0;
        }
    return -1;
}

const char *tc_format_name(tc_format f) {
    return (unsigned)f < sizeof k_format_names / sizeof *k_format_names ? k_format_names[f] : "?";
}

tc_format tc_format_detect(const char *t) {
    if (!t) return TC_FORMAT_JSON;
    if (strstr(t, HERMES_OPEN)) return TC_FORMAT_HERMES;
    if (strstr(t, MISTRAL_CALLS)) return TC_FORMAT_MISTRAL;
    if (strstr(t, PYTHON_TAG) || strstr(t, "ipython")) return TC_FORMAT_LLAMA3;
    return TC_FORMAT_JSON;
}

int tc_tool_names(const char *tools_json, char ***names_out, size_t *n_out) {
    *names_out = NULL;
    *n_out = 0;
    json_t *tools = json_loads(tools_json ? tools_json : "[]", 0, NULL);
    if (!json_is_array(tools)) {
        json_decref(tools);
        return -1;
    }
    size_t n = 0, bytes = 0, i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const json_t *name = json_object_get(json_object_get(t, "function"), "name");
        if (json_is_string(name)) n++, bytes += json_string_length(name) + 1;
    }
    char **names = malloc(n * sizeof *names + bytes + 1);
    if (!names) {
        json_decref(tools);
        return -1;
    }
    char *w = (char *)(names + n);
    n = 0;
    json_array_foreach(tools, i, t) {
        const json_t *name = json_object_get(json_object_get(t, "function"), "name");
        if (!json_is_string(name)) continue;
        names[n++] = w;
        memcpy(w, json_string_value(name), json_string_length(name) + 1);
        w += json_string_length(name) + 1;
    }
    json_decref(tools);
    *names_out = names;
    *n_out = n;
    return 0;
}

void tc_result_free(tc_result *r) {
    if (!r) return;
    free(r->content);
    for (size_t i = 0; i < r->n_calls; i++) {
        free(r->calls[i].name);
        free(r->calls[i].arguments);
    }
    free(r->calls);
    memset(r, 0, sizeof *r);
}

/* ---- the parser ---- */

typedef enum {
    S_TEXT,         /* content; looking for a call marker */
    S_OPEN,         /* after <tool_call> / <|python_tag|>: white space, then '{' */
    S_OBJ,          /* inside a JSON object (a call, or mistral's arguments) */
    S_HERMES_CLOSE, /* after a hermes call object: white space, then </tool_call> (optional) */
    S_L3_AFTER,     /* after a llama3 call: ';' / white space, then another call or text */
    S_MI_AFTER,     /* after [TOOL_CALLS]: '[', '{' or a name */
    S_MI_NAME,      /* [TOOL_CALLS]name..., until [ARGS] or [CALL_ID] */
    S_MI_CALL_ID,   /* [CALL_ID]id..., until [ARGS] */
    S_MI_ARGS,      /* after [ARGS]: white space, then '{' */
    S_ARR_ITEM,     /* in a [...] of calls: white space, then '{' */
    S_ARR_NEXT,     /* after an item: ',' or ']' */
    S_JSON_HOLD,    /* json format: the whole rest is held until the end */
    S_PASS,         /* malformed: everything is content */
    S_DROP,         /* parallel calls off and one call made: the rest is dropped */
} pstate;

/* where the scanner is inside the top level of the object (depth 1) */
typedef enum { P_KEY, P_KEY_STR, P_COLON, P_VALUE, P_VAL_STR, P_VAL_NEST, P_VAL_SCALAR, P_AFTER } pphase;

typedef enum { M_NONE, M_NAME, M_ARGS } member;

typedef struct {
    tc_delta_kind kind;
    int32_t index;
    size_t id_off, text_off, len;
} rdelta; /* a delta with its strings as offsets into the parser's scratch buffer */

struct tc_parser {
    tc_format fmt;
    char **names; /* one block */
    size_t n_names;
    int parallel;
    uint64_t rng;

    char *buf; /* everything fed */
    size_t len, cap;
    size_t pos;          /* the scan cursor */
    pstate st;
    int finished, final; /* final: no more text will come (partial markers are text) */
    int bad;             /* the output was malformed (S_PASS) */
    int at_start;        /* only white space so far, no call: bare-JSON calls may start here */
    size_t content_from; /* content not yet emitted starts here (S_TEXT, S_PASS) */
    int trim_lead;       /* white space at content_from is dropped (right after a call) */
    size_t call_raw;     /* where the current call's text starts (with the white space before it) */

    /* the object scanner */
    int args_only;       /* the object is the arguments (mistral's [ARGS]{...}) */
    int in_array;        /* the object is an item of a [...] of calls */
    int depth, in_str, esc;
    pphase ph;
    member cur_member;
    size_t obj_s, key_s, key_e, val_s;

    /* the current call */
    int started;          /* its start delta went out */
    char *name;           /* owned once known */
    int args_seen;        /* an arguments member was complete */
    int args_streaming;   /* arguments are an object being streamed from args_sent */
    size_t args_sent, args_s, args_e;
    char *args_text;      /* owned: the arguments when not streamed (decoded string, ...) */

    size_t n_calls;       /* calls whose start went out */

    /* deltas since the last take */
    rdelta *d;
    size_t n_d, cap_d;
    char *scratch;
    size_t n_scratch, cap_scratch;
    tc_delta *out; /* what take hands out */
    size_t cap_out;
    int taken;
};

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) {
        if (c > SIZE_MAX / 4 / elem) return -1;
        c *= 2;
    }
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static int scratch_put(tc_parser *p, const char *s, size_t n, size_t *off) {
    if (grow((void **)&p->scratch, &p->cap_scratch, p->n_scratch + n + 1, 1)) return -1;
    *off = p->n_scratch;
    if (n) memcpy(p->scratch + p->n_scratch, s, n);
    p->n_scratch += n;
    p->scratch[p->n_scratch++] = 0;
    return 0;
}

static void clear_taken(tc_parser *p) {
    if (!p->taken) return;
    p->n_d = p->n_scratch = 0;
    p->taken = 0;
}

/* Appends a delta; consecutive content (or consecutive arguments of one call) are merged. */
static int emit(tc_parser *p, tc_delta_kind kind, int32_t index, const char *id, const char *s, size_t n) {
    if (kind != TC_DELTA_CALL_START && n == 0) return 0;
    rdelta *last = p->n_d ? &p->d[p->n_d - 1] : NULL;
    if (last && kind != TC_DELTA_CALL_START && last->kind == kind && last->index == index &&
        last->text_off + last->len + 1 == p->n_scratch) {
        /* the last text ends the scratch: extend it in place */
        if (grow((void **)&p->scratch, &p->cap_scratch, p->n_scratch + n, 1)) return -1;
        memcpy(p->scratch + p->n_scratch - 1, s, n);
        p->n_scratch += n;
        p->scratch[p->n_scratch - 1] = 0;
        last->len += n;
        return 0;
    }
    if (grow((void **)&p->d, &p->cap_d, p->n_d + 1, sizeof *p->d)) return -1;
    rdelta *r = &p->d[p->n_d];
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->index = index;
    if (id && scratch_put(p, id, strlen(id), &r->id_off)) return -1;
    if (scratch_put(p, s, n, &r->text_off)) return -1;
    r->len = n;
    p->n_d++;
    return 0;
}

/* End of the complete UTF-8 characters in [s, e): an incomplete sequence at e is held back
 * unless the text has ended. */
static size_t utf8_end(const tc_parser *p, size_t s, size_t e) {
    if (p->final || e < s + 1) return e;
    for (size_t k = 1; k <= 3 && e >= s + k; k++) {
        unsigned char c = (unsigned char)p->buf[e - k];
        if ((c & 0xC0) == 0x80) continue; /* continuation byte: look further back */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > k ? e - k : e;
    }
    return e;
}

static int emit_content(tc_parser *p, size_t s, size_t e) {
    return s < e ? emit(p, TC_DELTA_CONTENT, 0, NULL, p->buf + s, e - s) : 0;
}

/* 1: buf[i..] starts with m; 0: it cannot; -1: it is a proper prefix of m and more may come. */
static int match(const tc_parser *p, size_t i, const char *m) {
    size_t n = strlen(m), have = p->len - i;
    if (have >= n) return memcmp(p->buf + i, m, n) == 0;
    if (memcmp(p->buf + i, m, have) != 0) return 0;
    return p->final ? 0 : -1;
}

static void rng_id(tc_parser *p, char id[TC_ID_LEN + 1]) {
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    memcpy(id, "call_", 5);
    for (int i = 5; i < TC_ID_LEN; i++) {
        /* splitmix64 */
        uint64_t z = (p->rng += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        id[i] = alnum[z % 62];
    }
    id[TC_ID_LEN] = 0;
}

static int known_name(const tc_parser *p, const char *name) {
    for (size_t i = 0; i < p->n_names; i++)
        if (!strcmp(p->names[i], name)) return 1;
    return 0;
}

static void reset_call(tc_parser *p) {
    free(p->name);
    free(p->args_text);
    p->name = p->args_text = NULL;
    p->started = p->args_seen = p->args_streaming = 0;
    p->args_sent = p->args_s = p->args_e = 0;
}

/* The output is malformed: whatever of it was held goes out as content, and so does the rest. */
static int go_bad(tc_parser *p) {
    p->bad = 1;
    p->st = S_PASS;
    p->content_from = p->call_raw;
    p->trim_lead = 0;
    reset_call(p);
    return 0;
}

static int start_call(tc_parser *p) {
    if (p->n_calls >= TC_MAX_CALLS) return go_bad(p);
    char id[TC_ID_LEN + 1];
    rng_id(p, id);
    p->started = 1;
    p->n_calls++;
    return emit(p, TC_DELTA_CALL_START, (int32_t)(p->n_calls - 1), id, p->name, strlen(p->name));
}

static int emit_args(tc_parser *p, const char *s, size_t n) {
    return emit(p, TC_DELTA_CALL_ARGS, (int32_t)(p->n_calls - 1), NULL, s, n);
}

/* A call is complete: back to text (or done, when only one call is wanted). */
static void call_done(tc_parser *p, pstate next) {
    reset_call(p);
    p->st = p->parallel ? next : S_DROP;
    p->at_start = 0;
    if (p->st == S_TEXT) {
        p->content_from = p->pos;
        p->trim_lead = 1;
    }
}

/* The length of the JSON number at s[0..n) if the whole text is one (RFC 8259's grammar), else 0. */
static size_t json_number_len(const char *s, size_t n) {
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i < n && s[i] == '0') i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9')
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    else return 0;
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == d) return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == d) return 0;
    }
    return i == n ? n : 0;
}

/* json_loadb for a check of the text's form only (the caller keeps the text as written): every
 * well-formed number outside strings is read as 0, so that an integer past 64 bits or an exponent
 * past a double's range (valid JSON, which jansson refuses as an overflow; a model sampling a
 * schema's unbounded integer writes such) does not turn a well-formed call into text. */
static json_t *load_checked(const char *s, size_t n, size_t flags) {
    if (memchr(s, 0, n)) return NULL; /* (no JSON text holds a NUL byte; arguments go out as C strings) */
    char *c = malloc(n + 1);
    if (!c) return NULL;
    size_t m = 0;
    int in_str = 0, esc = 0;
    for (size_t i = 0; i < n;) {
        char ch = s[i];
        if (in_str) {
            if (esc) esc = 0;
            else if (ch == '\\') esc = 1;
            else if (ch == '"') in_str = 0;
            c[m++] = ch, i++;
        } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
            size_t j = i;
            while (j < n && (strchr("0123456789+-.eE", s[j]) && s[j])) j++;
            if (json_number_len(s + i, j - i)) c[m++] = '0';
            else memcpy(c + m, s + i, j - i), m += j - i;
            i = j;
        } else {
            in_str = ch == '"';
            c[m++] = ch, i++;
        }
    }
    json_t *v = json_loadb(c, m, flags, NULL);
    free(c);
    return v;
}

/* Sets the name from a JSON string value text; 0 ok, -1 not a known tool. */
static int set_name(tc_parser *p, const char *s, size_t n) {
    json_t *v = json_loadb(s, n, JSON_DECODE_ANY, NULL);
    int ok = json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) <= TC_MAX_NAME &&
             strlen(json_string_value(v)) == json_string_length(v) && known_name(p, json_string_value(v));
    if (ok) {
        free(p->name);
        p->name = strdup(json_string_value(v));
        if (!p->name) ok = 0;
    }
    json_decref(v);
    return ok ? 0 : -1;
}

/* Arguments given as a string: it must hold a JSON object; *text = a copy. */
static int args_from_string(const json_t *v, char **text) {
    json_t *o = load_checked(json_string_value(v), json_string_length(v), JSON_REJECT_DUPLICATES);
    int ok = json_is_object(o) && (*text = strdup(json_string_value(v))) != NULL;
    json_decref(o);
    return ok ? 0 : -1;
}

/* Arguments written as a JSON string literal s[0..n) that holds an object. */
static int decode_args_string(const char *s, size_t n, char **text) {
    json_t *v = json_loadb(s, n, JSON_DECODE_ANY, NULL);
    int rc = json_is_string(v) ? args_from_string(v, text) : -1;
    json_decref(v);
    return rc;
}

static int key_is(const tc_parser *p, const char *k) {
    size_t n = strlen(k);
    return p->key_e - p->key_s == n + 2 && !memcmp(p->buf + p->key_s + 1, k, n);
}

/* A top-level member of a call object is complete: value in [val_s, e). */
static int member_done(tc_parser *p, size_t e) {
    if (p->args_only) return 0;
    if (p->cur_member == M_NAME) {
        if (p->name || p->buf[p->val_s] != '"' || set_name(p, p->buf + p->val_s, e - p->val_s)) return go_bad(p);
        /* arguments first, name second: both go out when the object closes */
        if (!p->args_seen) return start_call(p);
    } else if (p->cur_member == M_ARGS) {
        if (p->args_seen) return go_bad(p);
        p->args_seen = 1;
        p->args_s = p->val_s;
        p->args_e = e;
        char c = p->buf[p->val_s];
        if (c == '"') {
            if (decode_args_string(p->buf + p->val_s, e - p->val_s, &p->args_text)) return go_bad(p);
        } else if (c != '{') {
            return go_bad(p);
        }
        if (p->args_streaming) {
            if (emit_args(p, p->buf + p->args_sent, e - p->args_sent)) return -1;
            p->args_sent = e;
        }
    }
    return 0;
}

/* The object [obj_s, pos) is complete. */
static int object_done(tc_parser *p) {
    json_t *o = load_checked(p->buf + p->obj_s, p->pos - p->obj_s, JSON_REJECT_DUPLICATES);
    int ok = json_is_object(o);
    json_decref(o);
    if (!ok) return go_bad(p);
    if (p->args_only) {
        if (emit_args(p, p->buf + p->args_sent, p->pos - p->args_sent)) return -1;
        call_done(p, S_TEXT);
        return 0;
    }
    if (!p->name) return go_bad(p);
    if (!p->started && start_call(p)) return -1;
    if (p->st == S_PASS) return 0;
    if (!p->args_streaming) {
        const char *a = "{}";
        size_t n = 2;
        if (p->args_text) a = p->args_text, n = strlen(a);
        else if (p->args_seen) a = p->buf + p->args_s, n = p->args_e - p->args_s;
        if (emit_args(p, a, n)) return -1;
    }
    if (p->in_array) call_done(p, S_ARR_NEXT);
    else if (p->fmt == TC_FORMAT_HERMES) call_done(p, S_HERMES_CLOSE);
    else if (p->fmt == TC_FORMAT_LLAMA3) call_done(p, S_L3_AFTER);
    else call_done(p, S_TEXT);
    return 0;
}

/* ---- the JSON object scanner ---- */

static void begin_object(tc_parser *p, int args_only) {
    p->st = S_OBJ;
    p->args_only = args_only;
    p->depth = 1;
    p->in_str = p->esc = 0;
    p->ph = P_KEY;
    p->cur_member = M_NONE;
    p->obj_s = p->pos++;
    if (args_only) {
        p->args_streaming = 1;
        p->args_sent = p->obj_s;
    }
}

/* One character inside a JSON string: 1 at its closing quote, -1 for a raw control character. */
static int str_char(tc_parser *p, char c) {
    if (p->esc) return p->esc = 0, 0;
    if (c == '\\') return p->esc = 1, 0;
    if (c == '"') return 1;
    return (unsigned char)c < 0x20 ? -1 : 0;
}

static int is_scalar_char(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '+' ||
           c == '.';
}

/* A top-level value ends at e (its last byte is before e): the scan goes on from e. */
static int value_end(tc_parser *p, size_t e) {
    p->pos = e;
    p->ph = P_AFTER;
    return member_done(p, e);
}

static int scan_object(tc_parser *p) {
    while (p->st == S_OBJ && p->pos < p->len) {
        size_t i = p->pos;
        char c = p->buf[i];
        int r;
        switch (p->ph) {
        case P_KEY:
            if (c == '"') p->key_s = i, p->ph = P_KEY_STR;
            else if (c == '}') goto close;
            else if (!is_ws(c)) return go_bad(p);
            break;
        case P_KEY_STR:
            if ((r = str_char(p, c)) < 0) return go_bad(p);
            if (r) p->key_e = i + 1, p->ph = P_COLON;
            break;
        case P_COLON:
            if (c == ':') {
                p->ph = P_VALUE;
                p->cur_member = p->args_only           ? M_NONE
                                : key_is(p, "name")    ? M_NAME
                                : key_is(p, "arguments") || key_is(p, "parameters") ? M_ARGS
                                                                                    : M_NONE;
            } else if (!is_ws(c)) {
                return go_bad(p);
            }
            break;
        case P_VALUE:
            if (is_ws(c)) break;
            p->val_s = i;
            if (c == '"') {
                p->ph = P_VAL_STR;
            } else if (c == '{' || c == '[') {
                p->ph = P_VAL_NEST;
                p->depth = 2;
                p->in_str = 0;
                /* the name is known: the arguments stream as they come */
                if (p->cur_member == M_ARGS && c == '{' && p->started && !p->args_seen)
                    p->args_streaming = 1, p->args_sent = i;
            } else if (is_scalar_char(c)) {
                p->ph = P_VAL_SCALAR;
            } else {
                return go_bad(p);
            }
            break;
        case P_VAL_STR:
            if ((r = str_char(p, c)) < 0) return go_bad(p);
            if (r) {
                if (value_end(p, i + 1)) return -1;
                continue;
            }
            break;
        case P_VAL_NEST:
            if (p->in_str) {
                if ((r = str_char(p, c)) < 0) return go_bad(p);
                if (r) p->in_str = 0;
            } else if (c == '"') {
                p->in_str = 1;
            } else if (c == '{' || c == '[') {
                if (++p->depth > MAX_DEPTH) return go_bad(p);
            } else if (c == '}' || c == ']') {
                if (--p->depth == 1) {
                    if (value_end(p, i + 1)) return -1;
                    continue;
                }
            }
            break;
        case P_VAL_SCALAR:
            if (is_scalar_char(c)) break;
            if (value_end(p, i)) return -1; /* c is looked at again as what follows the value */
            continue;
        case P_AFTER:
            if (c == ',') p->ph = P_KEY;
            else if (c == '}') goto close;
            else if (!is_ws(c)) return go_bad(p);
            break;
        }
        p->pos = i + 1;
        continue;
    close:
        p->pos = i + 1;
        p->depth = 0;
        return object_done(p);
    }
    /* stream what is certain of the arguments */
    if (p->st == S_OBJ && p->args_streaming && (p->args_only || !p->args_seen)) {
        size_t e = utf8_end(p, p->args_sent, p->pos);
        if (emit_args(p, p->buf + p->args_sent, e - p->args_sent)) return -1;
        p->args_sent = e;
    }
    return 0;
}

/* ---- the states ---- */

static const char *marker_of(tc_format f) {
    switch (f) {
    case TC_FORMAT_HERMES: return HERMES_OPEN;
    case TC_FORMAT_LLAMA3: return PYTHON_TAG;
    case TC_FORMAT_MISTRAL: return MISTRAL_CALLS;
    default: return NULL;
    }
}

/* Calls written bare as the whole output (only white space before): 1 started (state changed),
 * 0 this is text, -1 undecided until more text comes. */
static int start_bare(tc_parser *p) {
    size_t i = p->pos, j;
    char c = p->buf[i];
    switch (p->fmt) {
    case TC_FORMAT_LLAMA3:
        if (c != '{') return 0;
        p->call_raw = p->content_from;
        begin_object(p, 0);
        return 1;
    case TC_FORMAT_MISTRAL:
        if (c != '[') return 0;
        for (j = i + 1; j < p->len && is_ws(p->buf[j]); j++) {}
        if (j == p->len) return p->final ? 0 : -1;
        if (p->buf[j] != '{') return 0;
        p->call_raw = p->content_from;
        p->in_array = 1;
        p->pos = j;
        p->st = S_ARR_ITEM;
        return 1;
    case TC_FORMAT_JSON: {
        if (c == '`') { /* ```json or ``` followed by a JSON object or array */
            int m = match(p, i, "```");
            if (m <= 0) return m;
            j = i + 3;
            if (j < p->len && p->buf[j] == 'j') {
                if ((m = match(p, j, "json")) <= 0) return m;
                j += 4;
            }
            for (; j < p->len && is_ws(p->buf[j]); j++) {}
            if (j == p->len) return p->final ? 0 : -1;
            c = p->buf[j];
        }
        if (c != '{' && c != '[') return 0;
        p->call_raw = p->content_from;
        p->st = S_JSON_HOLD;
        return 1;
    }
    default: return 0;
    }
}

static void to_text(tc_parser *p) {
    p->st = S_TEXT;
    p->content_from = p->pos;
    p->trim_lead = 1;
}

static int step_text(tc_parser *p) {
    if (p->trim_lead) {
        while (p->content_from < p->len && is_ws(p->buf[p->content_from])) p->content_from++;
        if (p->content_from < p->len) p->trim_lead = 0;
    }
    if (p->pos < p->content_from) p->pos = p->content_from;
    const char *marker = marker_of(p->fmt);
    size_t hold = p->len;
    for (; p->pos < p->len; p->pos++) {
        char c = p->buf[p->pos];
        if (p->at_start) {
            if (is_ws(c)) continue;
            int r = start_bare(p);
            if (r > 0) return 1;
            if (r < 0) {
                hold = p->pos;
                break;
            }
            p->at_start = 0;
        }
        if (marker && c == marker[0]) {
            int m = match(p, p->pos, marker);
            if (m > 0) {
                size_t ws = p->pos;
                while (ws > p->content_from && is_ws(p->buf[ws - 1])) ws--;
                if (emit_content(p, p->content_from, ws)) return -1;
                p->call_raw = p->content_from = ws;
                p->pos += strlen(marker);
                p->st = p->fmt == TC_FORMAT_MISTRAL ? S_MI_AFTER : S_OPEN;
                p->in_array = 0;
                return 1;
            }
            if (m < 0) {
                hold = p->pos;
                break;
            }
        }
    }
    size_t e = hold;
    if (!p->final) {
        while (e > p->content_from && is_ws(p->buf[e - 1])) e--; /* trailing white space may precede a call */
        e = utf8_end(p, p->content_from, e);
    }
    if (emit_content(p, p->content_from, e)) return -1;
    p->content_from = e;
    return 0;
}

/* Skips white space (and, for llama3's separators, ';'); 1 if a character is left to look at. */
static int skip_ws(tc_parser *p, int semicolons) {
    while (p->pos < p->len && (is_ws(p->buf[p->pos]) || (semicolons && p->buf[p->pos] == ';'))) p->pos++;
    return p->pos < p->len;
}

static int is_name_char(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-' ||
           c == '.';
}

static int step(tc_parser *p) {
    int m;
    switch (p->st) {
    case S_TEXT: return step_text(p);
    case S_OBJ:
        if (scan_object(p)) return -1;
        return p->st != S_OBJ;
    case S_OPEN:
    case S_MI_ARGS:
        if (!skip_ws(p, 0)) return 0;
        if (p->buf[p->pos] != '{') return go_bad(p), 1;
        begin_object(p, p->st == S_MI_ARGS);
        return 1;
    case S_HERMES_CLOSE:
        if (!skip_ws(p, 0)) return 0;
        if ((m = match(p, p->pos, HERMES_CLOSE)) < 0) return 0;
        if (m > 0) p->pos += strlen(HERMES_CLOSE);
        else if (p->final && !memcmp(p->buf + p->pos, HERMES_CLOSE, p->len - p->pos < 12 ? p->len - p->pos : 12))
            p->pos = p->len; /* a closing tag cut off at the end */
        to_text(p);
        return 1;
    case S_L3_AFTER:
        if (!skip_ws(p, 1)) return 0;
        if (p->buf[p->pos] == '{') {
            p->call_raw = p->pos;
            begin_object(p, 0);
            return 1;
        }
        if ((m = match(p, p->pos, PYTHON_TAG)) < 0) return 0;
        if (m > 0) {
            p->call_raw = p->pos;
            p->pos += strlen(PYTHON_TAG);
            p->st = S_OPEN;
            return 1;
        }
        to_text(p);
        return 1;
    case S_MI_AFTER:
        if (!skip_ws(p, 0)) return 0;
        if (p->buf[p->pos] == '[') {
            p->pos++;
            p->in_array = 1;
            p->st = S_ARR_ITEM;
        } else if (p->buf[p->pos] == '{') {
            begin_object(p, 0);
        } else if (is_name_char(p->buf[p->pos])) {
            p->key_s = p->pos;
            p->st = S_MI_NAME;
        } else {
            go_bad(p);
        }
        return 1;
    case S_MI_NAME:
    case S_MI_CALL_ID:
        while (p->pos < p->len && is_name_char(p->buf[p->pos])) p->pos++;
        if (p->st == S_MI_NAME && p->pos - p->key_s > TC_MAX_NAME) return go_bad(p), 1;
        if (p->pos == p->len) return 0;
        if ((m = match(p, p->pos, MISTRAL_ARGS)) < 0) return 0;
        if (m == 0 && p->st == S_MI_NAME && (m = match(p, p->pos, MISTRAL_CALL_ID)) < 0) return 0;
        if (m == 0) return go_bad(p), 1;
        if (p->st == S_MI_NAME) {
            free(p->name);
            p->name = NULL;
            if (p->pos > p->key_s && (p->name = malloc(p->pos - p->key_s + 1))) {
                memcpy(p->name, p->buf + p->key_s, p->pos - p->key_s);
                p->name[p->pos - p->key_s] = 0;
            }
            if (!p->name || !known_name(p, p->name)) return go_bad(p), 1;
        }
        if (p->buf[p->pos + 1] == 'A') { /* [ARGS] */
            p->pos += strlen(MISTRAL_ARGS);
            p->st = S_MI_ARGS;
            return start_call(p) ? -1 : 1;
        }
        p->pos += strlen(MISTRAL_CALL_ID);
        p->st = S_MI_CALL_ID;
        return 1;
    case S_ARR_ITEM:
        if (!skip_ws(p, 0)) return 0;
        if (p->buf[p->pos] != '{') return go_bad(p), 1;
        begin_object(p, 0);
        return 1;
    case S_ARR_NEXT:
        if (!skip_ws(p, 0)) return 0;
        if (p->buf[p->pos] == ',') {
            p->pos++;
            p->st = S_ARR_ITEM;
        } else if (p->buf[p->pos] == ']') {
            p->pos++;
            p->in_array = 0;
            to_text(p);
        } else {
            go_bad(p);
        }
        return 1;
    case S_PASS: {
        size_t e = utf8_end(p, p->content_from, p->len);
        if (emit_content(p, p->content_from, e)) return -1;
        p->content_from = e;
        p->pos = p->len;
        return 0;
    }
    case S_JSON_HOLD:
    case S_DROP: p->pos = p->len; return 0;
    }
    return 0;
}

static int advance(tc_parser *p) {
    int r;
    while ((r = step(p)) > 0) {}
    return r;
}

/* ---- the json format: the held output as one JSON value ---- */

/* One call item -> name and arguments text (malloc'd). 0 ok, -1 not a call of a known tool. */
/* Raw spans of a JSON text already checked by load_checked (so that arguments go out as written,
 * numbers past 64 bits included): the end of the value starting at s[i] (n: the text's end), 0 when
 * malformed. */
static size_t span_end(const char *s, size_t i, size_t n) {
    int depth = 0, in_str = 0, esc = 0;
    for (size_t j = i; j < n; j++) {
        char c = s[j];
        if (in_str) {
            if (esc) esc = 0;
            else if (c == '\\') esc = 1;
            else if (c == '"' && !(in_str = 0) && !depth) return j + 1;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (!depth && (c == ',' || c == '}' || c == ']' || c == ':' || is_ws(c))) {
            return j > i ? j : 0; /* (the end of a number or literal) */
        } else if ((c == '}' || c == ']') && --depth == 0) {
            return j + 1;
        }
    }
    return !depth && !in_str && n > i ? n : 0;
}

static size_t skip_spaces(const char *s, size_t i, size_t n) {
    while (i < n && is_ws(s[i])) i++;
    return i;
}

/* The span [*vs, *ve) of member key's value in the object s[os..oe) (s[os] == '{'); 0 found. */
static int member_span(const char *s, size_t os, size_t oe, const char *key, size_t *vs, size_t *ve) {
    for (size_t i = skip_spaces(s, os + 1, oe); i < oe && s[i] == '"';) {
        size_t ke = span_end(s, i, oe);
        if (!ke) return -1;
        json_t *k = json_loadb(s + i, ke - i, JSON_DECODE_ANY, NULL);
        int match = json_is_string(k) && json_string_length(k) == strlen(key) && !strcmp(json_string_value(k), key);
        json_decref(k);
        i = skip_spaces(s, ke, oe);
        if (i >= oe || s[i] != ':') return -1;
        i = skip_spaces(s, i + 1, oe);
        size_t e = span_end(s, i, oe);
        if (!e) return -1;
        if (match) {
            *vs = i, *ve = e;
            return 0;
        }
        i = skip_spaces(s, e, oe);
        if (i < oe && s[i] == ',') i = skip_spaces(s, i + 1, oe);
    }
    return -1;
}

/* The span of element k of the array s[as..ae) (s[as] == '['); 0 found. */
static int element_span(const char *s, size_t as, size_t ae, size_t k, size_t *vs, size_t *ve) {
    for (size_t i = skip_spaces(s, as + 1, ae), j = 0; i < ae && s[i] != ']'; j++) {
        size_t e = span_end(s, i, ae);
        if (!e) return -1;
        if (j == k) {
            *vs = i, *ve = e;
            return 0;
        }
        i = skip_spaces(s, e, ae);
        if (i < ae && s[i] == ',') i = skip_spaces(s, i + 1, ae);
    }
    return -1;
}

/* One call of the generic JSON form: it (checked), its text s[is..ie). */
static int json_item(const tc_parser *p, const json_t *it, const char *s, size_t is, size_t ie, char **name,
                     char **args) {
    *name = *args = NULL;
    const json_t *f = json_object_get(it, "function");
    size_t fs, fe, as, ae;
    if (json_is_object(f)) {
        if (member_span(s, is, ie, "function", &fs, &fe)) return -1;
        it = f, is = fs, ie = fe;
    }
    const json_t *n = json_object_get(it, "name");
    if (!json_is_string(n) || strlen(json_string_value(n)) != json_string_length(n) ||
        !known_name(p, json_string_value(n)))
        return -1;
    const char *key = json_object_get(it, "arguments") ? "arguments" : "parameters";
    const json_t *a = json_object_get(it, key);
    if (!a) *args = strdup("{}");
    else if (json_is_object(a)) /* as written */
        *args = member_span(s, is, ie, key, &as, &ae) ? NULL : strndup(s + as, ae - as);
    else if (!json_is_string(a)) return -1;
    else if (args_from_string(a, args)) return -1;
    if (!*args || !(*name = strdup(json_string_value(n)))) {
        free(*args);
        *args = NULL;
        return -1;
    }
    return 0;
}

static int json_resolve(tc_parser *p) {
    size_t s = p->call_raw, e = p->len;
    while (s < e && is_ws(p->buf[s])) s++;
    while (e > s && is_ws(p->buf[e - 1])) e--;
    if (e - s >= 3 && !memcmp(p->buf + s, "```", 3)) {
        s += 3;
        if (e - s >= 4 && !memcmp(p->buf + s, "json", 4)) s += 4;
        if (e - s < 3 || memcmp(p->buf + e - 3, "```", 3)) return go_bad(p);
        e -= 3;
    }
    const char *t = p->buf;
    while (s < e && is_ws(t[s])) s++;
    while (e > s && is_ws(t[e - 1])) e--;
    json_t *v = load_checked(t + s, e - s, JSON_REJECT_DUPLICATES);
    json_t *items = v;
    size_t is = s, ie = e; /* the items' text */
    if (json_is_object(v) && json_is_array(json_object_get(v, "tool_calls"))) {
        items = json_object_get(v, "tool_calls");
        if (member_span(t, s, e, "tool_calls", &is, &ie)) items = NULL;
    }
    size_t n = json_is_array(items) ? json_array_size(items) : json_is_object(items) ? 1 : 0;
    if (n == 0 || n > TC_MAX_CALLS) {
        json_decref(v);
        return go_bad(p);
    }
    char **names = calloc(n, sizeof *names), **args = calloc(n, sizeof *args);
    int ok = names && args, rc = 0;
    for (size_t i = 0; ok && i < n; i++) {
        size_t xs = is, xe = ie;
        ok = (!json_is_array(items) || !element_span(t, is, ie, i, &xs, &xe)) &&
             !json_item(p, json_is_array(items) ? json_array_get(items, i) : items, t, xs, xe, &names[i], &args[i]);
    }
    json_decref(v);
    if (!ok) {
        go_bad(p);
    } else {
        for (size_t i = 0; i < n && (i == 0 || p->parallel); i++) {
            free(p->name);
            p->name = names[i];
            names[i] = NULL;
            if (start_call(p) || emit_args(p, args[i], strlen(args[i]))) rc = -1;
        }
        reset_call(p);
        p->st = S_DROP;
    }
    for (size_t i = 0; i < n && names && args; i++) free(names[i]), free(args[i]);
    free(names);
    free(args);
    return rc;
}

/* ---- the interface ---- */

tc_parser *tc_parser_create(const tc_config *cfg) {
    tc_parser *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    size_t bytes = 0;
    for (size_t i = 0; i < cfg->n_tool_names; i++) bytes += strlen(cfg->tool_names[i]) + 1;
    p->names = malloc(cfg->n_tool_names * sizeof *p->names + bytes + 1);
    if (!p->names) {
        free(p);
        return NULL;
    }
    char *w = (char *)(p->names + cfg->n_tool_names);
    for (size_t i = 0; i < cfg->n_tool_names; i++) {
        p->names[i] = w;
        size_t n = strlen(cfg->tool_names[i]) + 1;
        memcpy(w, cfg->tool_names[i], n);
        w += n;
    }
    p->n_names = cfg->n_tool_names;
    p->fmt = cfg->format == TC_FORMAT_AUTO ? TC_FORMAT_JSON : cfg->format;
    p->parallel = cfg->parallel;
    p->rng = cfg->id_seed;
    p->at_start = 1;
    p->st = p->fmt == TC_FORMAT_NONE ? S_PASS : S_TEXT;
    return p;
}

void tc_parser_destroy(tc_parser *p) {
    if (!p) return;
    reset_call(p);
    free(p->names);
    free(p->buf);
    free(p->d);
    free(p->scratch);
    free(p->out);
    free(p);
}

int tc_parser_feed(tc_parser *p, const char *text, size_t len) {
    if (p->finished) return -1;
    clear_taken(p);
    if (grow((void **)&p->buf, &p->cap, p->len + len + 1, 1)) return -1;
    if (len) memcpy(p->buf + p->len, text, len);
    p->len += len;
    p->buf[p->len] = 0;
    return advance(p);
}

int tc_parser_finish(tc_parser *p) {
    if (p->finished) return -1;
    clear_taken(p);
    p->finished = p->final = 1;
    if (advance(p)) return -1;
    switch (p->st) {
    case S_TEXT:
    case S_HERMES_CLOSE:
    case S_L3_AFTER:
    case S_PASS:
    case S_DROP: break;
    case S_JSON_HOLD:
        if (json_resolve(p)) return -1;
        break;
    default: go_bad(p); break; /* cut off inside a call */
    }
    return advance(p);
}

size_t tc_parser_take(tc_parser *p, const tc_delta **deltas) {
    clear_taken(p);
    *deltas = NULL;
    if (!p->n_d) return 0;
    if (grow((void **)&p->out, &p->cap_out, p->n_d, sizeof *p->out)) return 0;
    for (size_t i = 0; i < p->n_d; i++) {
        const rdelta *r = &p->d[i];
        p->out[i] = (tc_delta){.kind = r->kind,
                               .index = r->index,
                               .id = r->kind == TC_DELTA_CALL_START ? p->scratch + r->id_off : NULL,
                               .text = p->scratch + r->text_off,
                               .len = r->len};
    }
    p->taken = 1;
    *deltas = p->out;
    return p->n_d;
}

size_t tc_parser_n_calls(const tc_parser *p) { return p->n_calls; }

int tc_parser_calls_valid(const tc_parser *p) { return !p->bad; }

static int append(char **s, size_t *n, size_t *cap, const char *t, size_t len) {
    if (grow((void **)s, cap, *n + len + 1, 1)) return -1;
    if (len) memcpy(*s + *n, t, len);
    *n += len;
    (*s)[*n] = 0;
    return 0;
}

int tc_parse(const tc_config *cfg, const char *text, size_t len, tc_result *out) {
    memset(out, 0, sizeof *out);
    tc_parser *p = tc_parser_create(cfg);
    if (!p) return -1;
    int rc = -1;
    const tc_delta *d;
    size_t cap_content = 0, nd;
    size_t *cap_args = NULL, *n_args = NULL;
    if (tc_parser_feed(p, text, len) || tc_parser_finish(p)) goto done;
    nd = tc_parser_take(p, &d);
    if (p->bad) { /* malformed: the text as it came */
        if (append(&out->content, &out->content_len, &cap_content, text, len)) goto done;
        rc = 0;
        goto done;
    }
    if (p->n_calls && (!(out->calls = calloc(p->n_calls, sizeof *out->calls)) ||
                       !(cap_args = calloc(p->n_calls, sizeof *cap_args)) ||
                       !(n_args = calloc(p->n_calls, sizeof *n_args))))
        goto done;
    for (size_t i = 0; i < nd; i++) {
        if (d[i].kind == TC_DELTA_CONTENT) {
            if (append(&out->content, &out->content_len, &cap_content, d[i].text, d[i].len)) goto done;
            continue;
        }
        if (d[i].index < 0 || (size_t)d[i].index >= p->n_calls) goto done; /* not reached */
        tc_call *c = &out->calls[d[i].index];
        if (d[i].kind == TC_DELTA_CALL_START) {
            memcpy(c->id, d[i].id, TC_ID_LEN + 1);
            if (!(c->name = strdup(d[i].text))) goto done;
            out->n_calls = (size_t)d[i].index + 1;
        }
        int32_t k = d[i].index;
        int is_args = d[i].kind == TC_DELTA_CALL_ARGS;
        if (append(&c->arguments, &n_args[k], &cap_args[k], is_args ? d[i].text : "", is_args ? d[i].len : 0))
            goto done;
    }
    if (!out->content && !out->n_calls && append(&out->content, &out->content_len, &cap_content, "", 0)) goto done;
    rc = 0;
done:
    free(cap_args);
    free(n_args);
    tc_parser_destroy(p);
    if (rc) tc_result_free(out);
    return rc;
}
