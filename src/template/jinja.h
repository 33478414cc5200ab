/* Private to the chat template interpreter: values, AST and the render context shared by
 * chat_template.c (entry point, arena), jinja_parse.c (lexer, parser) and the runtime
 * (jinja_eval.c, jinja_value.c, jinja_builtins.c; their shared part is jinja_rt.h). */
#ifndef PG_TEMPLATE_JINJA_H
#define PG_TEMPLATE_JINJA_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"

/* Hard caps so a hostile template cannot hang or exhaust memory. */
#define JJ_MAX_TEMPLATE (1u << 20)   /* template source bytes */
#define JJ_MAX_OUTPUT (8u << 20)     /* bytes of any one string or output buffer */
#define JJ_MAX_MEM (128u << 20)      /* arena bytes for one render */
#define JJ_MAX_NODE_DEPTH 200        /* expression/statement nesting in the AST */
#define JJ_MAX_CALL_DEPTH 10         /* nested macro calls */
#define JJ_MAX_ITERS 1000000u        /* loop iterations over the whole render */
#define JJ_MAX_STEPS 20000000ull     /* evaluated nodes over the whole render */
#define JJ_MAX_RANGE 100000          /* items in one range() */

typedef struct { const char *p; size_t n; } jstr;

typedef enum {
    V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_NS, V_LOOP, V_MACRO,
    V_FUNC, V_METHOD
} jvt;

typedef struct jval jval;
typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jloop jloop;
typedef struct jnode jnode;
typedef struct jframe jframe;
typedef struct jmacro jmacro;

struct jval {
    jvt t;
    union {
        bool b;
        int64_t i;
        double f;
        jstr s;        /* V_STR; V_UNDEF keeps the missing name here for messages */
        jlist *l;
        jdict *d;      /* V_DICT and V_NS */
        jloop *lp;
        jmacro *mac;
        int fn;        /* V_FUNC */
        struct { int fn; jval *self; } m; /* V_METHOD: bound method */
    } u;
};

struct jlist { jval *v; size_t n, cap; bool tuple; /* prints as (a, b) */ };
struct jdict { jstr *k; jval *v; size_t n, cap; };   /* insertion ordered, like Python */
struct jloop { jlist *items; size_t i; };
struct jmacro { jnode *def; jframe *scope; };
struct jframe { jframe *parent; jdict vars; }; /* a scope: its variables and the enclosing one */

typedef enum {
    /* statements */
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_BREAK, N_CONTINUE, N_BLOCK,
    /* expressions */
    E_LIT, E_NAME, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NOT, E_NEG, E_POS,
    E_BIN, E_AND, E_OR, E_COND, E_LIST, E_DICT, E_CONCAT, E_KW
} jnk;

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_EQ, OP_NE, OP_LT, OP_LE,
       OP_GT, OP_GE, OP_IN, OP_NOTIN };

typedef struct { jnode **v; size_t n, cap; } jnlist;

struct jnode {
    jnk k;
    int line;
    int depth;
    int op;         /* E_BIN operator; E_TEST: negated; E_LIST: 1 for a tuple */
    jstr name;      /* text, names, filter/test names, attribute */
    jval lit;       /* E_LIT */
    jnode *a, *b, *c, *d;
    jnlist args;    /* call/filter/test args (E_KW for keywords), list items, dict k/v pairs,
                       for targets, macro params */
    jnlist body, orelse;
};

typedef struct { char *p; size_t n, cap; } jbuf;

typedef struct jblk jblk;

typedef struct {
    jblk *blocks;
    jblk **sorted;          /* the blocks by address (finding the block of a pointer) */
    size_t n_sorted, cap_sorted;
    bool tainted;           /* some byte of the arena came from user data */
    size_t mem;
    jmp_buf jb;
    pagoda_status st;
    int line;
    char msg[512];
    jbuf *out;
    jframe *root;
    unsigned long long steps;
    unsigned long iters;
    int call_depth;
    int stmt_depth;
} jctx;

/* arena and errors (chat_template.c) */
void *jj_alloc(jctx *c, size_t n);      /* zeroed */
void *jj_alloc_raw(jctx *c, size_t n);  /* not zeroed: for string buffers */
_Noreturn void jj_fail(jctx *c, pagoda_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
jstr jj_strdup(jctx *c, const char *p, size_t n);

/* Taint: every byte a render writes remembers whether it came from user data (the strings of
 * the JSON inputs), in a shadow of the arena, so the renderer can say which bytes of its output
 * are user text. Copies through jj_buf_add carry the marks along; code that writes bytes derived
 * from a string in another way copies them with jj_taint_copy. Pointers outside the arena
 * (template constants live in it too, unmarked; C literals, the stack) read as unmarked. */
jstr jj_strdup_user(jctx *c, const char *p, size_t n);          /* a copy, all marked */
void jj_taint_set(jctx *c, const char *p, size_t n);            /* p: arena bytes */
void jj_taint_copy(jctx *c, const char *dst, const char *src, size_t n); /* marks of src onto dst */
bool jj_tainted(jctx *c, const char *p);

/* lexer and parser (jinja_parse.c): the template body of src[0..n) */
jnlist jj_parse(jctx *c, const char *src, size_t n);

/* evaluator (jinja_eval.c) */
void jj_exec(jctx *c, jframe *f, const jnlist *body);
jframe *jj_frame(jctx *c, jframe *parent);
void jj_frame_set(jctx *c, jframe *f, jstr k, jval v);
jval jj_from_json(jctx *c, const void *json);  /* json is a json_t * */

#endif
