/* Chat templates: the entry point of a small Jinja interpreter, and its arena and errors.
 * The lexer and parser are in jinja_parse.c; evaluation in jinja_eval.c (values in jinja_value.c,
 * filters, tests and globals in jinja_builtins.c). All memory of one render lives in an arena;
 * errors longjmp back to chat_template_render. */
#include "template/chat_template.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "template/jinja.h"

/* ---- arena and errors ---- */

/* shadow: one byte per data byte, 1 where the byte came from the JSON inputs (user data);
 * allocated the first time a tainted byte lands in the block, NULL means none of it is tainted */
struct jblk { jblk *next; size_t used, cap; unsigned char *shadow; _Alignas(16) char data[]; };

/* keeps c->sorted (every block, by address) for blk_of's binary search */
static void index_block(jctx *c, jblk *b) {
    if (c->n_sorted == c->cap_sorted) {
        size_t cap = c->cap_sorted ? c->cap_sorted * 2 : 16;
        jblk **ns = realloc(c->sorted, cap * sizeof *ns);
        if (!ns) {
            free(b);
            jj_fail(c, PAGODA_ERR_NOMEM, "out of memory");
        }
        c->sorted = ns;
        c->cap_sorted = cap;
    }
    size_t i = c->n_sorted;
    while (i > 0 && (uintptr_t)c->sorted[i - 1] > (uintptr_t)b) {
        c->sorted[i] = c->sorted[i - 1];
        i--;
    }
    c->sorted[i] = b;
    c->n_sorted++;
}

void *jj_alloc(jctx *c, size_t n) {
    void *p = jj_alloc_raw(c, n);
    memset(p, 0, n);
    return p;
}

void *jj_alloc_raw(jctx *c, size_t n) {
    if (n > JJ_MAX_MEM)
        jj_fail(c, PAGODA_ERR_INVALID, "template uses too much memory (limit %u MiB)", JJ_MAX_MEM >> 20);
    n = (n + 15) & ~(size_t)15;
    jblk *b = c->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 60000 ? n : 60000;
        if (n > JJ_MAX_MEM || c->mem + cap > JJ_MAX_MEM)
            jj_fail(c, PAGODA_ERR_INVALID, "template uses too much memory (limit %u MiB)",
                    JJ_MAX_MEM >> 20);
        b = malloc(sizeof *b + cap);
        if (!b) jj_fail(c, PAGODA_ERR_NOMEM, "out of memory");
        c->mem += cap;
        b->cap = cap;
        b->used = 0;
        b->shadow = NULL;
        index_block(c, b);
        b->next = c->blocks;
        c->blocks = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

jstr jj_strdup(jctx *c, const char *p, size_t n) {
    char *d = jj_alloc(c, n + 1);
    if (n) memcpy(d, p, n);
    return (jstr){d, n};
}

/* ---- taint: which bytes came from user data ---- */

/* The arena block holding p, or NULL (template constants, C literals, the stack). */
static jblk *blk_of(jctx *c, const void *p) {
    uintptr_t x = (uintptr_t)p;
    size_t lo = 0, hi = c->n_sorted;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        jblk *b = c->sorted[mid];
        if (x < (uintptr_t)b->data) hi = mid;
        else if (x >= (uintptr_t)b->data + b->cap) lo = mid + 1;
        else return b;
    }
    return NULL;
}

static unsigned char *shadow_of(jctx *c, jblk *b) {
    if (!b->shadow) {
        if (c->mem + b->cap > JJ_MAX_MEM)
            jj_fail(c, PAGODA_ERR_INVALID, "template uses too much memory (limit %u MiB)", JJ_MAX_MEM >> 20);
        if (!(b->shadow = calloc(1, b->cap))) jj_fail(c, PAGODA_ERR_NOMEM, "out of memory");
        c->mem += b->cap;
    }
    return b->shadow;
}

void jj_taint_set(jctx *c, const char *p, size_t n) {
    if (!n) return;
    jblk *b = blk_of(c, p);
    if (!b) jj_fail(c, PAGODA_ERR_INVALID, "internal error: marking bytes outside the arena");
    memset(shadow_of(c, b) + (p - b->data), 1, n);
    c->tainted = true;
}

void jj_taint_copy(jctx *c, const char *dst, const char *src, size_t n) {
    if (!c->tainted || !n) return;
    jblk *sb = blk_of(c, src);
    if (!sb || !sb->shadow) return;
    const unsigned char *m = sb->shadow + (src - sb->data);
    if (!memchr(m, 1, n)) return;
    jblk *db = blk_of(c, dst);
    if (!db) jj_fail(c, PAGODA_ERR_INVALID, "internal error: copying marks outside the arena");
    memcpy(shadow_of(c, db) + (dst - db->data), m, n);
}

bool jj_tainted(jctx *c, const char *p) {
    if (!c->tainted) return false;
    jblk *b = blk_of(c, p);
    return b && b->shadow && b->shadow[p - b->data];
}

jstr jj_strdup_user(jctx *c, const char *p, size_t n) {
    jstr s = jj_strdup(c, p, n);
    jj_taint_set(c, s.p, n);
    return s;
}

_Noreturn void jj_fail(jctx *c, pagoda_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
    c->st = st;
    longjmp(c->jb, 1);
}


/* ---- entry point ---- */

static jval parse_json_arg(jctx *c, const char *text, const char *what) {
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!j) jj_fail(c, PAGODA_ERR_INVALID, "chat template: %s: bad JSON at line %d: %s", what, err.line, err.text);
    jval v = jj_from_json(c, j); /* its strings are marked as user data */
    json_decref(j);
    return v;
}

static void run(jctx *c, const char *tmpl, const chat_template_input *in, char **out, unsigned char **mask) {
    size_t n = strlen(tmpl);
    if (n > JJ_MAX_TEMPLATE)
        jj_fail(c, PAGODA_ERR_INVALID, "chat template too large (%zu bytes, limit %u)", n, JJ_MAX_TEMPLATE);
    /* jinja normalizes newlines and drops one trailing newline (keep_trailing_newline=False) */
    char *src = jj_alloc(c, n + 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (tmpl[i] == '\r') {
            src[m++] = '\n';
            if (i + 1 < n && tmpl[i + 1] == '\n') i++;
        } else {
            src[m++] = tmpl[i];
        }
    }
    if (m && src[m - 1] == '\n') m--;
    jnlist body = jj_parse(c, src, m);

    jframe *root = jj_frame(c, NULL);
    c->root = root;
    /* HF always passes documents (None unless given); extra variables may override it */
    jj_frame_set(c, root, (jstr){"documents", 9}, (jval){.t = V_NONE});
    if (in->extra_json) {
        jval ex = parse_json_arg(c, in->extra_json, "extra variables");
        if (ex.t != V_DICT) jj_fail(c, PAGODA_ERR_INVALID, "chat template: extra variables must be a JSON object");
        for (size_t i = 0; i < ex.u.d->n; i++) jj_frame_set(c, root, ex.u.d->k[i], ex.u.d->v[i]);
    }
    jval msgs = in->messages_json ? parse_json_arg(c, in->messages_json, "messages") : (jval){.t = V_UNDEF};
    if (msgs.t != V_LIST && msgs.t != V_UNDEF)
        jj_fail(c, PAGODA_ERR_INVALID, "chat template: messages must be a JSON array");
    if (msgs.t == V_UNDEF) {
        msgs.t = V_LIST;
        msgs.u.l = jj_alloc(c, sizeof(jlist));
    }
    jj_frame_set(c, root, (jstr){"messages", 8}, msgs);
    jval tools = in->tools_json ? parse_json_arg(c, in->tools_json, "tools") : (jval){.t = V_NONE};
    jj_frame_set(c, root, (jstr){"tools", 5}, tools);
    jj_frame_set(c, root, (jstr){"add_generation_prompt", 21}, (jval){.t = V_BOOL, .u.b = in->add_generation_prompt});
    jval bos = {.t = V_NONE}, eos = {.t = V_NONE};
    if (in->bos_token) bos = (jval){.t = V_STR, .u.s = jj_strdup(c, in->bos_token, strlen(in->bos_token))};
    if (in->eos_token) eos = (jval){.t = V_STR, .u.s = jj_strdup(c, in->eos_token, strlen(in->eos_token))};
    jj_frame_set(c, root, (jstr){"bos_token", 9}, bos);
    jj_frame_set(c, root, (jstr){"eos_token", 9}, eos);

    jbuf ob = {0};
    c->out = &ob;
    c->stmt_depth = 0;
    c->line = 0;
    jj_exec(c, root, &body);
    char *r = malloc(ob.n + 1);
    if (!r) jj_fail(c, PAGODA_ERR_NOMEM, "out of memory");
    if (ob.n) memcpy(r, ob.p, ob.n);
    r[ob.n] = 0;
    if (mask) {
        unsigned char *m = calloc(ob.n + 1, 1);
        if (!m) {
            free(r);
            jj_fail(c, PAGODA_ERR_NOMEM, "out of memory");
        }
        jblk *b = ob.n ? blk_of(c, ob.p) : NULL;
        if (b && b->shadow) memcpy(m, b->shadow + (ob.p - b->data), ob.n);
        *mask = m;
    }
    *out = r;
}

pagoda_status chat_template_render(const char *tmpl, const chat_template_input *in, char **out) {
    return chat_template_render_marked(tmpl, in, out, NULL);
}

pagoda_status chat_template_render_marked(const char *tmpl, const chat_template_input *in, char **out,
                                          unsigned char **user_mask) {
    if (!out) return pg_fail(PAGODA_ERR_INVALID, "chat_template_render: out is NULL");
    *out = NULL;
    if (user_mask) *user_mask = NULL;
    if (!tmpl || !in) return pg_fail(PAGODA_ERR_INVALID, "chat_template_render: NULL argument");
    jctx *c = calloc(1, sizeof *c);
    if (!c) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    pagoda_status st = PAGODA_OK;
    if (setjmp(c->jb) == 0) {
        run(c, tmpl, in, out, user_mask);
    } else {
        st = c->st;
        pg_fail(st, "%s", c->msg);
    }
    while (c->blocks) {
        jblk *b = c->blocks;
        c->blocks = b->next;
        free(b->shadow);
        free(b);
    }
    free(c->sorted);
    free(c);
    return st;
}
