/* `pagoda synth`: writes a GGUF with random weights in the shape of a real model, for benchmarks
 * and tests without downloads. Follows llama.cpp's GGUF naming (keys, tensor names, ne order),
 * so llama.cpp can load the files too. Tensors are generated, converted and written one at a
 * time, so a multi-GB file never sits in memory. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "core/dtype.h"
#include "core/fp16.h"
#include "format/gguf.h"
#include "kernels/kernels.h"
#include "core/clock.h"

typedef enum { ARCH_LLAMA, ARCH_STARCODER } synth_arch;

typedef struct {
    const char *name;
    synth_arch arch;
    const char *desc;
    int64_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    float rope_theta; /* llama only */
    float norm_eps;
} synth_shape;

static const synth_shape k_shapes[] = {
    {"tiny-llama", ARCH_LLAMA, "test-sized llama with GQA", 256, 2, 4, 2, 768, 1024, 512, 10000.0f, 1e-5f},
    {"tiny-starcoder", ARCH_STARCODER, "test-sized gpt_bigcode, multi-query", 256, 2, 4, 1, 1024, 1024, 512, 0.0f, 1e-5f},
    {"tiny-llama-32k", ARCH_LLAMA, "test-sized llama, 32000-token vocab (Llama 2's), n_ff not a multiple of 256",
     256, 2, 4, 2, 672, 32000, 512, 10000.0f, 1e-5f},
    {"tiny-llama-deep", ARCH_LLAMA, "test-sized llama, 10 layers, 4:1 GQA (layer-dependent quantization mixtures)", 256,
     10, 8, 2, 512, 1024, 512, 10000.0f, 1e-5f},
    {"tinyllama-1.1b", ARCH_LLAMA, "TinyLlama 1.1B", 2048, 22, 32, 4, 5632, 32000, 2048, 10000.0f, 1e-5f},
    {"llama-2-7b", ARCH_LLAMA, "Llama 2 7B", 4096, 32, 32, 32, 11008, 32000, 4096, 10000.0f, 1e-5f},
    {"llama-2-13b", ARCH_LLAMA, "Llama 2 13B", 5120, 40, 40, 40, 13824, 32000, 4096, 10000.0f, 1e-5f},
    {"starcoder-15b", ARCH_STARCODER, "StarCoder 15.5B", 6144, 40, 48, 1, 24576, 49152, 8192, 0.0f, 1e-5f},
};
#define N_SHAPES (sizeof k_shapes / sizeof k_shapes[0])

/* Weight types this command writes, with llama.cpp's general.file_type for an all-one-type file. */
static const struct {
    int dtype;
    uint32_t ftype;
} k_types[] = {
    {PAGODA_DTYPE_F32, 0},   {PAGODA_DTYPE_F16, 1},   {PAGODA_DTYPE_BF16, 32}, {PAGODA_DTYPE_Q8_0, 7},
    {PAGODA_DTYPE_Q4_0, 2},  {PAGODA_DTYPE_Q4_1, 3},  {PAGODA_DTYPE_Q5_0, 8},  {PAGODA_DTYPE_Q5_1, 9},
    {PAGODA_DTYPE_Q4_K, 14}, {PAGODA_DTYPE_Q5_K, 16}, {PAGODA_DTYPE_Q6_K, 18},
};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

typedef enum { INIT_WEIGHT, INIT_NORM, INIT_BIAS } init_kind;

typedef struct {
    char name[64];
    int n_dims;
    int64_t ne[2]; /* ne[0]: the contiguous (input) dimension */
    init_kind init;
    int dtype;
    size_t size;
} synth_tensor;

typedef struct {
    synth_tensor *t;
    int n, cap;
} tensor_list;

static void usage(FILE *f) {
    fprintf(f,
            "usage: pagoda synth --shape NAME -o OUT.gguf [--type T] [--seed N] [--threads N]\n"
            "                    [--vocab-from VOCAB.gguf]\n"
            "  writes a GGUF with random weights (~N(0, 0.02); norm weights ~N(1, 0.02)) of a real\n"
            "  model's shape; 2-D weights in type T, norms and biases f32.\n"
            "  --shape NAME   model shape (--list shows them); --tiny is --shape tiny-llama\n"
            "  --type T       f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k (default f16)\n"
            "  --seed N       random seed (default 1)\n"
            "  --threads N    OpenMP threads for generation and quantization (default all)\n"
            "  --vocab-from F copy every tokenizer.* key (vocabulary, merges, special ids, chat\n"
            "                 template...) from the GGUF F, e.g. a vocab-only file, so the model can\n"
            "                 take text; its token count must equal the shape's vocab (--list).\n"
            "                 Without it the file has no tokenizer (tokenizer.ggml.model = none)\n"
            "  --list         list the shapes\n");
}

static void list_shapes(void) {
    printf("%-16s %-10s %6s %6s %5s %5s %6s %6s %5s  %s\n", "shape", "arch", "embd", "layer", "head",
           "kv", "ff", "vocab", "ctx", "");
    for (size_t i = 0; i < N_SHAPES; i++) {
        const synth_shape *s = &k_shapes[i];
        printf("%-16s %-10s %6lld %6lld %5lld %5lld %6lld %6lld %5lld  %s\n", s->name,
               s->arch == ARCH_LLAMA ? "llama" : "starcoder", (long long)s->n_embd, (long long)s->n_layer,
               (long long)s->n_head, (long long)s->n_head_kv, (long long)s->n_ff, (long long)s->n_vocab,
               (long long)s->n_ctx, s->desc);
    }
}

static bool add_tensor(tensor_list *l, init_kind init, int dtype, int64_t ne0, int64_t ne1, const char *fmt,
                       int layer) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        synth_tensor *t = realloc(l->t, (size_t)cap * sizeof *t);
        if (!t) return false;
        l->t = t;
        l->cap = cap;
    }
    synth_tensor *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, fmt, layer);
    t->n_dims = ne1 > 0 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 > 0 ? ne1 : 1;
    t->init = init;
    t->dtype = init == INIT_WEIGHT ? dtype : PAGODA_DTYPE_F32;
    return true;
}

/* The tensor list in llama.cpp's names and order (ggml ne: ne[0] = input dim). */
static bool build_tensors(const synth_shape *s, int wt, tensor_list *l) {
    const int64_t E = s->n_embd, F = s->n_ff, V = s->n_vocab;
    const int64_t E_kv = s->n_embd / s->n_head * s->n_head_kv;
    bool ok = add_tensor(l, INIT_WEIGHT, wt, E, V, "token_embd.weight", 0);
    if (s->arch == ARCH_STARCODER) ok = ok && add_tensor(l, INIT_WEIGHT, wt, E, s->n_ctx, "position_embd.weight", 0);
    for (int i = 0; i < s->n_layer && ok; i++) {
        if (s->arch == ARCH_LLAMA) {
            ok = add_tensor(l, INIT_NORM, wt, E, 0, "blk.%d.attn_norm.weight", i) &&
                 add_tensor(l, INIT_WEIGHT, wt, E, E, "blk.%d.attn_q.weight", i) &&
                 add_tensor(l, INIT_WEIGHT, wt, E, E_kv, "blk.%d.attn_k.weight", i) &&
                 add_tensor(l, INIT_WEIGHT, wt, E, E_kv, "blk.%d.attn_v.weight", i) &&
                 add_tensor(l, INIT_WEIGHT, wt, E, E, "blk.%d.attn_output.weight", i) &&
                 add_tensor(l, INIT_NORM, wt, E, 0, "blk.%d.ffn_norm.weight", i) &&
                 add_tensor(l, INIT_WEIGHT, wt, E, F, "blk.%d.ffn_gate.weight", i) &&
                 add_tensor(l, INIT_WEIGHT, wt, F, E, "blk.%d.ffn_down.weight", i) &&
                 add_tensor(l, INIT_WEIGHT, wt, E, F, "blk.%d.ffn_up.weight", i);
        } else { /* gpt_bigcode: LayerNorm with bias, fused QKV (q, then one k and one v head) */
            ok = add_tensor(l, INIT_NORM, wt, E, 0, "blk.%d.attn_norm.weight", i) &&
                 add_tensor(l, INIT_BIAS, wt, E, 0, "blk.%d.attn_norm.bias", i) &&
                 add_tensor(l, INIT_WEIGHT, wt, E, E + 2 * E_kv, "blk.%d.attn_qkv.weight", i) &&
                 add_tensor(l, INIT_BIAS, wt, E + 2 * E_kv, 0, "blk.%d.attn_qkv.bias", i) &&
                 add_tensor(l, INIT_WEIGHT, wt, E, E, "blk.%d.attn_output.weight", i) &&
                 add_tensor(l, INIT_BIAS, wt, E, 0, "blk.%d.attn_output.bias", i) &&
                 add_tensor(l, INIT_NORM, wt, E, 0, "blk.%d.ffn_norm.weight", i) &&
                 add_tensor(l, INIT_BIAS, wt, E, 0, "blk.%d.ffn_norm.bias", i) &&
                 add_tensor(l, INIT_WEIGHT, wt, E, F, "blk.%d.ffn_up.weight", i) &&
                 add_tensor(l, INIT_BIAS, wt, F, 0, "blk.%d.ffn_up.bias", i) &&
                 add_tensor(l, INIT_WEIGHT, wt, F, E, "blk.%d.ffn_down.weight", i) &&
                 add_tensor(l, INIT_BIAS, wt, E, 0, "blk.%d.ffn_down.bias", i);
        }
    }
    ok = ok && add_tensor(l, INIT_NORM, wt, E, 0, "output_norm.weight", 0);
    if (s->arch == ARCH_STARCODER) ok = ok && add_tensor(l, INIT_BIAS, wt, E, 0, "output_norm.bias", 0);
    ok = ok && add_tensor(l, INIT_WEIGHT, wt, E, V, "output.weight", 0);
    return ok;
}

/* ---- random numbers: one independent stream per (seed, tensor, row), so threads agree ---- */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Approximately normal values: a sum of four 16-bit uniforms (Irwin-Hall), scaled to unit
 * variance. Exact mean and std, tails cut at 3.46 sd; ~10x cheaper than Box-Muller, which
 * matters for billions of weights. */
static void gen_row(uint64_t seed, int tensor, int64_t row, init_kind init, float *x, int64_t n) {
    uint64_t st = mix64(seed ^ mix64(((uint64_t)tensor << 40) ^ (uint64_t)row ^ 0x5851f42d4c957f2dULL));
    const float mean = init == INIT_NORM ? 1.0f : 0.0f;
    /* sum of 4 U(0,1) has mean 2 and variance 1/3; uniforms are (k + 0.5) / 65536 */
    const float scale = 0.02f * 1.7320508f / 65536.0f, offset = 4 * 0.5f - 2.0f * 65536.0f;
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = mix64(st += 0x9e3779b97f4a7c15ULL);
        float sum = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) +
                    (float)(r >> 48);
        x[i] = mean + (sum + offset) * scale;
    }
}

/* Generates tensor ti into out (t->size bytes), rows in parallel. */
static bool fill_tensor(const synth_tensor *t, int ti, uint64_t seed, const k_type_traits *tr, uint8_t *out) {
    const int64_t n = t->ne[0], rows = t->ne[1];
    const size_t row_bytes = t->size / (size_t)rows;
    bool ok = true;
#pragma omp parallel
    {
        float *x = malloc((size_t)n * sizeof *x);
        if (!x) {
#pragma omp atomic write
            ok = false;
        }
#pragma omp for schedule(dynamic, 16)
        for (int64_t r = 0; r < rows; r++) {
            if (!x) continue;
            uint8_t *dst = out + (size_t)r * row_bytes;
            gen_row(seed, ti, r, t->init, x, n);
            switch (t->dtype) {
            case PAGODA_DTYPE_F32: memcpy(dst, x, (size_t)n * sizeof *x); break;
            case PAGODA_DTYPE_F16:
                for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = pg_fp32_to_fp16(x[i]);
                break;
            case PAGODA_DTYPE_BF16:
                for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = pg_fp32_to_bf16(x[i]);
                break;
            default: tr->from_float(x, dst, n); break;
            }
        }
        free(x);
    }
    return ok;
}

/* "--opt value" or "--opt=value"; NULL (and an error line) if the value is missing. */
static const char *opt_value(int argc, char **argv, int *i, const char *opt, bool *matched) {
    size_t len = strlen(opt);
    *matched = false;
    if (strncmp(argv[*i], opt, len) != 0) return NULL;
    if (argv[*i][len] == '=') {
        *matched = true;
        return argv[*i] + len + 1;
    }
    if (argv[*i][len] != '\0') return NULL;
    *matched = true;
    if (*i + 1 >= argc) {
        fprintf(stderr, "pagoda synth: %s needs a value\n", opt);
        return NULL;
    }
    return argv[++*i];
}

/* Checks that vocab (from --vocab-from) has a tokenizer with exactly the shape's vocabulary size;
 * prints the error and returns false otherwise. */
static bool check_vocab(const gguf_file *vocab, const char *path, const synth_shape *s) {
    const gguf_kv *tokens = gguf_find_kv(vocab, "tokenizer.ggml.tokens");
    if (!tokens || tokens->type != GGUF_TYPE_ARRAY || tokens->arr_type != GGUF_TYPE_STRING) {
        fprintf(stderr, "pagoda synth: --vocab-from %s: no tokenizer.ggml.tokens string array\n", path);
        return false;
    }
    if (tokens->arr_n != (uint64_t)s->n_vocab) {
        fprintf(stderr,
                "pagoda synth: --vocab-from %s has %llu tokens, but shape %s has a vocabulary of %lld; "
                "they must be equal\n",
                path, (unsigned long long)tokens->arr_n, s->name, (long long)s->n_vocab);
        return false;
    }
    return true;
}

/* vocab: NULL, or the --vocab-from file whose tokenizer.* keys are copied as they are */
static pagoda_status write_metadata(gguf_writer *w, const synth_shape *s, uint32_t ftype, bool quantized,
                                    const gguf_file *vocab) {
    const char *a = s->arch == ARCH_LLAMA ? "llama" : "starcoder";
    char key[128], name[128];
    pagoda_status st = PAGODA_OK;
#define KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, a), key)
#define TRY(call)                                                                                  \
    do {                                                                                           \
        if ((st = (call)) != PAGODA_OK) return st;                                                 \
    } while (0)
    snprintf(name, sizeof name, "synthetic %s", s->name);
    TRY(gguf_writer_set_str(w, "general.architecture", a));
    TRY(gguf_writer_set_str(w, "general.name", name));
    TRY(gguf_writer_set_u32(w, "general.file_type", ftype));
    if (quantized) TRY(gguf_writer_set_u32(w, "general.quantization_version", 2));
    TRY(gguf_writer_set_u32(w, KEY("vocab_size"), (uint32_t)s->n_vocab));
    TRY(gguf_writer_set_u32(w, KEY("context_length"), (uint32_t)s->n_ctx));
    TRY(gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)s->n_embd));
    TRY(gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)s->n_layer));
    TRY(gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)s->n_ff));
    TRY(gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)s->n_head));
    TRY(gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)s->n_head_kv));
    if (s->arch == ARCH_LLAMA) {
        TRY(gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), s->norm_eps));
        TRY(gguf_writer_set_f32(w, KEY("rope.freq_base"), s->rope_theta));
        TRY(gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)(s->n_embd / s->n_head)));
    } else {
        TRY(gguf_writer_set_f32(w, KEY("attention.layer_norm_epsilon"), s->norm_eps));
    }
    if (!vocab) {
        TRY(gguf_writer_set_str(w, "tokenizer.ggml.model", "none"));
    } else {
        for (int64_t i = 0; i < gguf_n_kv(vocab); i++) {
            const gguf_kv *kv = gguf_kv_at(vocab, i);
            if (!strncmp(kv->key, "tokenizer.", strlen("tokenizer."))) TRY(gguf_writer_set_kv(w, kv));
        }
    }
#undef KEY
#undef TRY
    return st;
}

int cmd_synth(int argc, char **argv) {
    const char *out = NULL, *shape_name = NULL, *type_name = "f16", *vocab_path = NULL;
    uint64_t seed = 1;
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        bool m;
        const char *v;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--list")) {
            list_shapes();
            return 0;
        } else if (!strcmp(argv[i], "--tiny")) {
            shape_name = "tiny-llama";
        } else if (!strcmp(argv[i], "-o")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pagoda synth: -o needs a file name\n");
                return 2;
            }
            out = argv[++i];
        } else if ((v = opt_value(argc, argv, &i, "--output", &m)) || m) {
            if (!v) return 2;
            out = v;
        } else if ((v = opt_value(argc, argv, &i, "--shape", &m)) || m) {
            if (!v) return 2;
            shape_name = v;
        } else if ((v = opt_value(argc, argv, &i, "--type", &m)) || m) {
            if (!v) return 2;
            type_name = v;
        } else if ((v = opt_value(argc, argv, &i, "--vocab-from", &m)) || m) {
            if (!v) return 2;
            vocab_path = v;
        } else if ((v = opt_value(argc, argv, &i, "--seed", &m)) || m) {
            if (!v) return 2;
            char *end;
            errno = 0;
            unsigned long long x = strtoull(v, &end, 0);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "pagoda synth: --seed '%s' is not a non-negative integer\n", v);
                return 2;
            }
            seed = x;
        } else if ((v = opt_value(argc, argv, &i, "--threads", &m)) || m) {
            if (!v) return 2;
            char *end;
            long x = strtol(v, &end, 10);
            if (end == v || *end || x < 0 || x > 4096) {
                fprintf(stderr, "pagoda synth: --threads '%s' is not a thread count\n", v);
                return 2;
            }
            threads = (int)x;
        } else {
            fprintf(stderr, "pagoda synth: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!shape_name) {
        fprintf(stderr, "pagoda synth: --shape is required (--list shows the shapes)\n");
        return 2;
    }
    if (!out) {
        fprintf(stderr, "pagoda synth: -o OUT.gguf is required\n");
        return 2;
    }
    const synth_shape *shape = NULL;
    for (size_t i = 0; i < N_SHAPES; i++)
        if (!strcmp(k_shapes[i].name, shape_name)) shape = &k_shapes[i];
    if (!shape) {
        fprintf(stderr, "pagoda synth: unknown shape '%s'; known:", shape_name);
        for (size_t i = 0; i < N_SHAPES; i++) fprintf(stderr, " %s", k_shapes[i].name);
        fputc('\n', stderr);
        return 2;
    }
    int wt = dtype_from_name(type_name);
    uint32_t ftype = 0;
    bool type_ok = false;
    for (size_t i = 0; i < N_TYPES; i++)
        if (k_types[i].dtype == wt) {
            ftype = k_types[i].ftype;
            type_ok = true;
        }
    if (!type_ok) {
        fprintf(stderr, "pagoda synth: unsupported --type '%s'; use one of:", type_name);
        for (size_t i = 0; i < N_TYPES; i++) fprintf(stderr, " %s", dtype_name(k_types[i].dtype));
        fputc('\n', stderr);
        return 2;
    }
    bool quantized = wt != PAGODA_DTYPE_F32 && wt != PAGODA_DTYPE_F16 && wt != PAGODA_DTYPE_BF16;
    const k_type_traits *tr = quantized ? kref_traits(wt) : NULL;
    if (quantized && (!tr || !tr->from_float)) {
        fprintf(stderr, "pagoda synth: no quantizer for type %s in this build\n", dtype_name(wt));
        return 1;
    }
    if (vocab_path && !strcmp(vocab_path, out)) {
        fprintf(stderr, "pagoda synth: --vocab-from and -o are the same file (%s)\n", out);
        return 2;
    }
    gguf_file *vocab = NULL;
    if (vocab_path) {
        if (gguf_open(vocab_path, &vocab) != PAGODA_OK) {
            fprintf(stderr, "pagoda synth: --vocab-from %s: %s\n", vocab_path, pagoda_last_error());
            return 1;
        }
        if (!check_vocab(vocab, vocab_path, shape)) {
            gguf_close(vocab);
            return 1;
        }
    }
    if (threads > 0) omp_set_num_threads(threads);

    int rc = 1;
    tensor_list tl = {0};
    gguf_writer *w = NULL;
    uint8_t *buf = NULL;
    bool begun = false, tty_progress = false;
    pagoda_status st;
    if (!build_tensors(shape, wt, &tl)) {
        fprintf(stderr, "pagoda synth: out of memory\n");
        goto done;
    }
    size_t total = 0, max_size = 0;
    for (int i = 0; i < tl.n; i++) {
        synth_tensor *t = &tl.t[i];
        size_t row;
        if (!dtype_row_size(t->dtype, t->ne[0], &row) || !pg_mul_size(row, (size_t)t->ne[1], &t->size)) {
            fprintf(stderr, "pagoda synth: tensor %s: row of %lld is not a whole number of %s blocks\n", t->name,
                    (long long)t->ne[0], dtype_name(t->dtype));
            goto done;
        }
        total += t->size;
        if (t->size > max_size) max_size = t->size;
    }
    if (!(buf = malloc(max_size)) || !(w = gguf_writer_create())) {
        fprintf(stderr, "pagoda synth: out of memory (%.1f MB for the largest tensor)\n", (double)max_size / 1e6);
        goto done;
    }
    st = write_metadata(w, shape, ftype, quantized, vocab);
    gguf_close(vocab); /* the writer holds copies; closed before the output is opened */
    vocab = NULL;
    if (st != PAGODA_OK) goto gguf_fail;
    for (int i = 0; i < tl.n; i++)
        if ((st = gguf_writer_add_tensor(w, tl.t[i].name, tl.t[i].dtype, tl.t[i].n_dims, tl.t[i].ne)) != PAGODA_OK)
            goto gguf_fail;
    begun = true; /* from here a failure removes the partial file */
    if ((st = gguf_writer_begin(w, out)) != PAGODA_OK) goto gguf_fail;

    fprintf(stderr, "synth: %s (%s), %d tensors, weights %s, %.1f MB -> %s\n", shape->name, shape->desc, tl.n,
            dtype_name(wt), (double)total / 1e6, out);
    tty_progress = isatty(STDERR_FILENO);
    const bool tty = tty_progress;
    double t0 = pg_now_s();
    size_t written = 0;
    int last_pct = -1;
    for (int i = 0; i < tl.n; i++) {
        const synth_tensor *t = &tl.t[i];
        if (!fill_tensor(t, i, seed, tr, buf)) {
            fprintf(stderr, "\npagoda synth: out of memory generating %s\n", t->name);
            goto done;
        }
        if ((st = gguf_writer_write_tensor(w, buf, t->size)) != PAGODA_OK) goto gguf_fail;
        written += t->size;
        int pct = (int)(100.0 * (double)written / (double)total);
        if (tty) {
            fprintf(stderr, "\r[%4d/%d] %-28s %9.1f / %.1f MB (%3d%%)", i + 1, tl.n, t->name, (double)written / 1e6,
                    (double)total / 1e6, pct);
        } else if (pct / 10 != last_pct / 10 || i + 1 == tl.n) { /* logs: a line per 10% */
            fprintf(stderr, "[%4d/%d] %-28s %9.1f / %.1f MB (%3d%%)\n", i + 1, tl.n, t->name,
                    (double)written / 1e6, (double)total / 1e6, pct);
        }
        last_pct = pct;
    }
    if ((st = gguf_writer_end(w)) != PAGODA_OK) goto gguf_fail;
    begun = false;
    double dt = pg_now_s() - t0;
    fprintf(stderr, "%swrote %s: %.1f MB in %.1f s (%.0f MB/s)\n", tty ? "\n" : "", out, (double)written / 1e6, dt,
            (double)written / 1e6 / (dt > 0 ? dt : 1e-9));
    rc = 0;
    goto done;

gguf_fail:
    fprintf(stderr, "%spagoda synth: %s\n", begun && tty_progress ? "\n" : "", pagoda_last_error());
done:
    gguf_close(vocab);
    gguf_writer_destroy(w);
    if (rc != 0 && begun) unlink(out); /* no half-written model left behind */
    free(buf);
    free(tl.t);
    return rc;
}
