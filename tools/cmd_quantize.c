/* `pagoda quantize`: rewrites a GGUF with its weights in another type, byte for byte what
 * llama-quantize writes (same metadata order, tensor order, tensor types, quantizers and padding):
 * without --pure, llama.cpp's mixture for the named type (quantize_mix.c: which tensors get more
 * bits), with --pure every quantizable weight in the one type.
 *
 * What llama-quantize does, found by running it and diffing files:
 *  - metadata: every input key in order; general.quantization_version (u32 2) and
 *    general.file_type (u32, llama.cpp's LLAMA_FTYPE) are removed where present and appended, in
 *    that order; split.no, split.count and split.tensors.count are dropped.
 *  - tensors in its loader's order: by the layer number of "blk.N." (names without one first), then
 *    by name; data padded with zeros to general.alignment (default 32), each tensor included.
 *  - quantized: names ending in "weight" with 2+ dimensions (trailing 1s do not count), except
 *    norms, MoE gates, positional/token-type embeddings and a few small SSM/RWKV/T5 matrices
 *    (k_keep_substr / k_keep_exact). Everything else is copied as it is.
 *  - each quantized tensor's type: without --pure and for a quantized TYPE, the mixture's choice
 *    (quantize_mix.c; F16/BF16/F32 have none); then --token-embedding-type / --output-tensor-type
 *    by name; then the row-length fallback below. The mixture sees the tensors in the order above
 *    (its attn_v / ffn_down counters follow it). general.file_type is the mixture's LLAMA_FTYPE
 *    (Q4_K_S 14, Q4_K_M 15, ...), the same with --pure.
 *  - a K-quant tensor whose rows are not a multiple of 256 takes llama-quantize's fallback
 *    (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16 if the row is not a multiple of 32
 *    either); with --pure llama-quantize aborts there instead, pagoda takes the fallback and says so.
 *    A row that fits no 32-block of a legacy type is an error, as in llama-quantize.
 *  - mixtures whose tensors need a type pagoda cannot write (Q2_K, Q3_K_*, IQ*, TQ*) are refused
 *    with the type named; --pure does not change that.
 *  - --imatrix (imatrix_file.h reads both of llama.cpp's formats): each converted tensor looks up
 *    its entry by name; it must hold ne[0] * ne[2] weights (else an error, except token_embd.weight,
 *    which is then quantized without); a tensor without an entry is quantized without weights.
 *    The weights go to kref_quantize_row_weighted (ggml's quantize_row_*_impl); the mixture's
 *    Q4_0/Q5_0 ffn_down rule needs them; the keys quantize.imatrix.file (the path as given, 127
 *    bytes at most), .dataset (if the file names one), .entries_count and .chunks_count (if > 0)
 *    come last, the counts as i32. Compared with llama-quantize c392e50, which reads only the
 *    legacy format; the GGUF format is read as llama.cpp's later llama-quantize does.
 *  - IN may be a Hugging Face model folder (config.json, F32/F16/BF16 safetensors, tokenizer.json):
 *    quantize_hf.c first writes the F32 GGUF llama.cpp's convert_hf_to_gguf.py --outtype f32 would
 *    (architecture keys, tensor names and layouts, byte-level BPE tokenizer keys) to a temporary file
 *    beside OUT, which is opened and unlinked at once, then quantized as any input: the tensors are
 *    those of convert_hf_to_gguf.py followed by llama-quantize (tests/python/test_quantize_hf.py).
 *    Quantized checkpoints (quantization_config), SentencePiece-style tokenizers and pre-tokenizers
 *    that match no pagoda family are refused. */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "core/clock.h"
#include "core/dtype.h"
#include "core/thread_pool.h"
#include "format/gguf.h"
#include "imatrix_file.h"
#include "kernels/kernels.h"
#include "quantize_hf.h"
#include "quantize_mix.h"

/* Tensors llama-quantize never quantizes (besides the shape rule). */
static const char *const k_keep_substr[] = {
    "_norm.weight",          "ffn_gate_inp.weight",   "ssm_conv1d.weight",          "time_mix_first.weight",
    "time_mix_w1.weight",    "time_mix_w2.weight",    "time_mix_decay_w1.weight",   "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight",
};
static const char *const k_keep_exact[] = {"position_embd.weight", "token_types.weight"};
static const char *const k_split_keys[] = {"split.no", "split.count", "split.tensors.count"};

typedef struct {
    const gguf_tensor *in;
    int layer;      /* N of "blk.N.", -1 if none */
    int n_dims;     /* ggml_n_dims: trailing dimensions of 1 dropped */
    int dtype;      /* output type */
    size_t size;    /* output bytes */
    bool convert;   /* false: the input bytes are copied */
    const float *qw; /* importance weights: ne[0] per expert (ne[2]), NULL without */
} q_tensor;

typedef struct {
    const char *in, *out;
    const quant_target *target;
    const char *imatrix_path;
    imatrix *im; /* --imatrix, loaded */
    int out_type, embd_type, threads;
    bool allow_requantize, leave_output, pure;
} q_options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: pagoda quantize [--pure] [--allow-requantize] [--leave-output-tensor]\n"
            "                       [--output-tensor-type T] [--token-embedding-type T] [--imatrix FILE]\n"
            "                       IN.gguf|HF_DIR OUT.gguf TYPE [THREADS] [-t THREADS]\n"
            "  writes IN's weights in TYPE, byte-identical to llama-quantize (with or without --imatrix).\n"
            "  HF_DIR: a Hugging Face model folder (config.json, F32/F16/BF16 *.safetensors, sharded or not,\n"
            "    tokenizer.json, tokenizer_config.json) of llama, mistral, qwen2, qwen3, starcoder2 or\n"
            "    gpt_bigcode: converted first as llama.cpp's convert_hf_to_gguf.py --outtype f32 does (its\n"
            "    keys, tensor names and layouts; byte-level BPE tokenizer), then quantized, so the tensors\n"
            "    are those of convert_hf_to_gguf.py + llama-quantize. The F32 GGUF is a temporary file\n"
            "    beside OUT. Quantized checkpoints, SentencePiece-style tokenizers and tokenizer.json\n"
            "    pre-tokenizers no tokenizer.ggml.pre family matches are refused.\n"
            "  TYPE: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K_S Q4_K_M (Q4_K) Q5_K_S Q5_K_M (Q5_K) Q6_K,\n"
            "  or llama-quantize's number for one of them. Without --pure a quantized TYPE is llama.cpp's\n"
            "  mixture: output.weight (token_embd.weight if tied) Q6_K (Q8_0 stays Q8_0); for Q4_K_M/Q5_K_M\n"
            "  Q6_K on some layers' attn_v/ffn_down, for Q4_K_S Q5_K on the first ones.\n"
            "  --pure: every quantizable weight (names ending in 'weight', 2-D or more, not norms) gets TYPE.\n"
            "  K-quant rows that are not a multiple of 256 fall back to Q5_0/Q5_1/Q8_0 (F16 if not a\n"
            "  multiple of 32).\n"
            "  --output-tensor-type T, --token-embedding-type T: type of output.weight / token_embd.weight\n"
            "  --leave-output-tensor: copy output.weight as it is\n"
            "  --allow-requantize: accept quantized input tensors (dequantized, then quantized)\n"
            "  --imatrix FILE: importance matrix from llama-imatrix or pagoda imatrix, legacy .dat or GGUF: per-column\n"
            "    weights for the Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K quantizers (Q8_0 and float types ignore\n"
            "    them); tensors without an entry are quantized without. With Q4_0 / Q5_0 the mixture gives\n"
            "    the first eighth of the ffn_down layers Q4_1 / Q5_1. The file's name, dataset, entry and\n"
            "    chunk counts are recorded under quantize.imatrix.*, as llama-quantize does.\n"
            "  -t, --threads N: threads (default: all CPUs); the output does not depend on it\n");
}

/* ggml type for --output-tensor-type / --token-embedding-type: a ggml type name like "q8_0" */
static int parse_tensor_type(const char *s) {
    int d = dtype_from_name(s);
    const k_type_traits *tr = d >= 0 ? kref_traits(d) : NULL;
    return tr && tr->from_float && tr->vec_dot ? d : -1; /* the types kref_quantize_row writes */
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

static bool quantizable(const q_tensor *t, const q_options *o) {
    const char *name = t->in->name;
    if (!ends_with(name, "weight") || t->n_dims < 2) return false;
    if (o->leave_output && !strcmp(name, "output.weight")) return false;
    for (size_t i = 0; i < sizeof k_keep_substr / sizeof *k_keep_substr; i++)
        if (strstr(name, k_keep_substr[i])) return false;
    for (size_t i = 0; i < sizeof k_keep_exact / sizeof *k_keep_exact; i++)
        if (!strcmp(name, k_keep_exact[i])) return false;
    return true;
}

/* llama-quantize's type for a row length that the chosen type's blocks do not divide; -1: none */
static int fallback_type(int dtype, int64_t ne0) {
    int fb;
    switch (dtype) {
    case PAGODA_DTYPE_Q4_K: fb = PAGODA_DTYPE_Q5_0; break;
    case PAGODA_DTYPE_Q5_K: fb = PAGODA_DTYPE_Q5_1; break;
    case PAGODA_DTYPE_Q6_K: fb = PAGODA_DTYPE_Q8_0; break;
    default: return -1;
    }
    return ne0 % dtype_info(fb)->block_size ? PAGODA_DTYPE_F16 : fb;
}

/* llama.cpp's loader order: layer of "blk.N." first (-1 without), then the name */
static int cmp_tensor(const void *pa, const void *pb) {
    const q_tensor *a = pa, *b = pb;
    if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
    return strcmp(a->in->name, b->in->name);
}

/* ---- one tensor, rows spread over the threads ---- */

typedef struct {
    const q_tensor *t;
    const k_type_traits *src; /* input type's traits (to_float) */
    uint8_t *out;
    float **scratch;          /* [nth][ne0] */
    int64_t rows, ne0;
    size_t in_row, out_row;
    _Atomic long long next;
} q_job;

static void quantize_rows(void *ctx, int ith, int nth) {
    q_job *j = ctx;
    float *x = j->scratch[ith];
    long long b, e;
    while (pg_guided_next(&j->next, j->rows, nth, 16, &b, &e)) {
        for (long long r = b; r < e; r++) {
            const uint8_t *src = (const uint8_t *)j->t->in->data + (size_t)r * j->in_row;
            if (j->t->in->dtype == PAGODA_DTYPE_F32)
                memcpy(x, src, (size_t)j->ne0 * sizeof *x);
            else
                j->src->to_float(src, x, j->ne0);
            const float *qw = NULL;
            if (j->t->qw) /* expert (ne[2]) of row r: each expert has its own ne0 weights */
                qw = j->t->qw + ((r / j->t->in->ne[1]) % j->t->in->ne[2]) * j->ne0;
            kref_quantize_row_weighted(j->t->dtype, x, j->out + (size_t)r * j->out_row, j->ne0, qw);
        }
    }
}

static double mib(size_t n) { return (double)n / (1024.0 * 1024.0); }

/* llama-quantize's use of the imatrix for a tensor it converts: the entry of that name, which must
 * hold ne[0] * ne[2] weights (one row's worth per expert); a missing entry quantizes without
 * weights, a wrong size is an error except for token_embd.weight (then quantized without). */
static bool attach_imatrix(q_tensor *t, const q_options *o) {
    t->qw = NULL;
    if (!o->im) return true;
    const char *name = t->in->name;
    const imatrix_entry *e = imatrix_find(o->im, name);
    if (!e) {
        fprintf(stderr, "%s: no imatrix entry, quantized without importance weights\n", name);
        return true;
    }
    const int64_t want = t->in->ne[0] * t->in->ne[2];
    if (e->n != want) {
        if (!strcmp(name, "token_embd.weight")) {
            fprintf(stderr, "%s: imatrix has %lld weights, the tensor %lld columns: quantized without\n", name,
                    (long long)e->n, (long long)want);
            return true;
        }
        fprintf(stderr,
                "pagoda quantize: imatrix %s: entry %s has %lld weights, the tensor needs %lld (ne[0] %lld x %lld "
                "experts): the imatrix was made for another model\n",
                o->imatrix_path, name, (long long)e->n, (long long)want, (long long)t->in->ne[0],
                (long long)t->in->ne[2]);
        return false;
    }
    t->qw = e->values;
    return true;
}

/* Decides each tensor's output type; prints the error and returns false on a tensor it cannot
 * write. n_fallback counts the fallbacks taken. */
static bool plan_tensors(q_tensor *ts, int64_t n, const q_options *o, const gguf_file *f, int *n_fallback) {
    quant_mix mix;
    quant_mix_init(&mix, f, o->target, o->out_type);
    mix.has_imatrix = o->im != NULL;
    const bool use_mix = !o->pure && dtype_info(o->target->dtype)->block_size > 1; /* quantized base type */
    for (int64_t i = 0; i < n; i++) {
        q_tensor *t = &ts[i];
        const gguf_tensor *in = t->in;
        t->dtype = in->dtype;
        t->convert = false;
        if (quantizable(t, o)) {
            int want = use_mix ? quant_mix_type(&mix, in->name, in->ne[0]) : o->target->dtype;
            if (o->embd_type >= 0 && !strcmp(in->name, "token_embd.weight")) want = o->embd_type;
            if (o->out_type >= 0 && !strcmp(in->name, "output.weight")) want = o->out_type;
            if (in->ne[0] % dtype_info(want)->block_size) {
                int fb = fallback_type(want, in->ne[0]);
                if (fb < 0) {
                    fprintf(stderr, "pagoda quantize: %s: rows of %lld are not a multiple of %d, needed by %s\n",
                            in->name, (long long)in->ne[0], dtype_info(want)->block_size, dtype_name(want));
                    return false;
                }
                fprintf(stderr, "%s: rows of %lld are not a multiple of %d, needed by %s: using fallback %s\n",
                        in->name, (long long)in->ne[0], dtype_info(want)->block_size, dtype_name(want),
                        dtype_name(fb));
                want = fb;
                ++*n_fallback;
            }
            if (want != in->dtype) {
                const k_type_traits *tr = kref_traits(in->dtype);
                bool plain = in->dtype == PAGODA_DTYPE_F32 || in->dtype == PAGODA_DTYPE_F16 ||
                             in->dtype == PAGODA_DTYPE_BF16;
                if (!plain && !o->allow_requantize) {
                    fprintf(stderr,
                            "pagoda quantize: %s is already %s; requantizing to %s loses quality and is off "
                            "(--allow-requantize turns it on)\n",
                            in->name, dtype_name(in->dtype), dtype_name(want));
                    return false;
                }
                if (!tr || !tr->to_float) {
                    fprintf(stderr, "pagoda quantize: %s: cannot read type %s\n", in->name, dtype_name(in->dtype));
                    return false;
                }
                t->dtype = want;
                t->convert = true;
                if (!attach_imatrix(t, o)) return false;
            }
        }
        int64_t nel = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) nel *= in->ne[d];
        size_t row;
        if (!t->convert) {
            t->size = in->size;
        } else if (!dtype_row_size(t->dtype, in->ne[0], &row) || !pg_mul_size(row, (size_t)(nel / in->ne[0]), &t->size)) {
            fprintf(stderr, "pagoda quantize: %s: size overflows\n", in->name);
            return false;
        }
    }
    return true;
}

/* Copies the input's keys, then sets the quantization keys the way llama-quantize does (its
 * --imatrix keys last, strings cut to 127 bytes). */
static pagoda_status write_metadata(gguf_writer *w, const gguf_file *f, uint32_t ftype, const q_options *o) {
    pagoda_status st = PAGODA_OK;
    for (int64_t i = 0; i < gguf_n_kv(f) && !st; i++) st = gguf_writer_set_kv(w, gguf_kv_at(f, i));
    if (st) return st;
    gguf_writer_remove_key(w, "general.quantization_version");
    if ((st = gguf_writer_set_u32(w, "general.quantization_version", 2))) return st;
    gguf_writer_remove_key(w, "general.file_type");
    if ((st = gguf_writer_set_u32(w, "general.file_type", ftype))) return st;
    for (size_t i = 0; i < sizeof k_split_keys / sizeof *k_split_keys; i++) gguf_writer_remove_key(w, k_split_keys[i]);
    if (!o->im) return PAGODA_OK;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", o->imatrix_path);
    gguf_writer_remove_key(w, "quantize.imatrix.file");
    if ((st = gguf_writer_set_str(w, "quantize.imatrix.file", buf))) return st;
    if (o->im->has_dataset) {
        snprintf(buf, sizeof buf, "%s", o->im->dataset);
        gguf_writer_remove_key(w, "quantize.imatrix.dataset");
        if ((st = gguf_writer_set_str(w, "quantize.imatrix.dataset", buf))) return st;
    }
    gguf_writer_remove_key(w, "quantize.imatrix.entries_count");
    if ((st = gguf_writer_set_i32(w, "quantize.imatrix.entries_count", (int32_t)o->im->n_entries))) return st;
    if (o->im->chunks > 0) {
        gguf_writer_remove_key(w, "quantize.imatrix.chunks_count");
        if ((st = gguf_writer_set_i32(w, "quantize.imatrix.chunks_count", o->im->chunks))) return st;
    }
    return PAGODA_OK;
}

static int parse_args(int argc, char **argv, q_options *o) {
    const char *pos[4];
    int n_pos = 0;
    *o = (q_options){.out_type = -1, .embd_type = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--pure")) {
            o->pure = true;
        } else if (!strcmp(a, "--allow-requantize")) {
            o->allow_requantize = true;
        } else if (!strcmp(a, "--leave-output-tensor")) {
            o->leave_output = true;
        } else if (!strcmp(a, "--imatrix")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pagoda quantize: %s needs a value\n", a);
                return 2;
            }
            o->imatrix_path = argv[++i];
        } else if (!strcmp(a, "--output-tensor-type") || !strcmp(a, "--token-embedding-type") || !strcmp(a, "-t") ||
                   !strcmp(a, "--threads")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pagoda quantize: %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (a[1] == 't' || !strcmp(a, "--threads")) {
                char *end;
                long x = strtol(v, &end, 10);
                if (end == v || *end || x < 1 || x > 4096) {
                    fprintf(stderr, "pagoda quantize: %s '%s' is not a thread count\n", a, v);
                    return 2;
                }
                o->threads = (int)x;
                continue;
            }
            int d = parse_tensor_type(v);
            if (d < 0) {
                fprintf(stderr, "pagoda quantize: %s: unknown or unsupported type '%s'\n", a, v);
                return 2;
            }
            if (a[2] == 'o') o->out_type = d;
            else o->embd_type = d;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "pagoda quantize: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (n_pos < 4) {
            pos[n_pos++] = a;
        } else {
            fprintf(stderr, "pagoda quantize: too many arguments (see --help)\n");
            return 2;
        }
    }
    if (n_pos < 3) {
        usage(stderr);
        return 2;
    }
    o->in = pos[0];
    o->out = pos[1];
    if (!(o->target = quant_target_find(pos[2]))) return 2;
    if (n_pos == 4) { /* llama-quantize's positional thread count */
        char *end;
        long x = strtol(pos[3], &end, 10);
        if (end == pos[3] || *end || x < 1 || x > 4096) {
            fprintf(stderr, "pagoda quantize: '%s' is not a thread count\n", pos[3]);
            return 2;
        }
        o->threads = (int)x;
    }
    if (o->threads <= 0) o->threads = pg_cpu_count();
    return -1;
}

int cmd_quantize(int argc, char **argv) {
    q_options o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    rc = 1;
    if (o.imatrix_path) {
        char why[512];
        if (!(o.im = imatrix_load(o.imatrix_path, why, sizeof why))) {
            fprintf(stderr, "pagoda quantize: %s\n", why);
            return 1;
        }
        fprintf(stderr, "quantize: imatrix %s (%s): %lld entries, %d chunks%s%s\n", o.imatrix_path,
                o.im->gguf ? "GGUF" : "legacy .dat", (long long)o.im->n_entries, o.im->chunks,
                o.im->has_dataset ? ", dataset " : "", o.im->has_dataset ? o.im->dataset : "");
    }
    gguf_file *f = NULL;
    gguf_writer *w = NULL;
    q_tensor *ts = NULL;
    uint8_t *buf = NULL;
    float **scratch = NULL;
    char *tmp = NULL;
    int64_t n = 0;
    pagoda_status st;
    const char *in_gguf = o.in;
    char hf_tmp[4096];
    if (quantize_hf_is_dir(o.in)) { /* a Hugging Face folder: its F32 GGUF first (quantize_hf.c) */
        snprintf(hf_tmp, sizeof hf_tmp, "%s.hf-f32-%ld.gguf", o.out, (long)getpid());
        if (quantize_hf_convert(o.in, hf_tmp)) {
            unlink(hf_tmp);
            imatrix_free(o.im);
            return 1;
        }
        in_gguf = hf_tmp;
    }
    st = gguf_open(in_gguf, &f);
    if (in_gguf != o.in) unlink(hf_tmp); /* the mapping stays readable; the file goes at exit */
    if (st != PAGODA_OK) {
        fprintf(stderr, "pagoda quantize: %s\n", pagoda_last_error());
        imatrix_free(o.im);
        return 1;
    }
    n = gguf_n_tensors(f);
    if (!(ts = calloc((size_t)(n ? n : 1), sizeof *ts))) goto nomem;
    int64_t max_ne0 = 1;
    for (int64_t i = 0; i < n; i++) {
        q_tensor *t = &ts[i];
        t->in = gguf_tensor_at(f, i);
        t->layer = -1;
        sscanf(t->in->name, "blk.%d.", &t->layer);
        t->n_dims = 1;
        for (int d = 1; d < GGUF_MAX_DIMS; d++)
            if (t->in->ne[d] > 1) t->n_dims = d + 1;
        if (t->in->ne[0] > max_ne0) max_ne0 = t->in->ne[0];
    }
    qsort(ts, (size_t)n, sizeof *ts, cmp_tensor);
    int n_fallback = 0;
    if (!plan_tensors(ts, n, &o, f, &n_fallback)) goto done;

    size_t max_out = 1;
    for (int64_t i = 0; i < n; i++)
        if (ts[i].convert && ts[i].size > max_out) max_out = ts[i].size;
    if (!(buf = malloc(max_out)) || !(scratch = calloc((size_t)o.threads, sizeof *scratch))) goto nomem;
    for (int i = 0; i < o.threads; i++)
        if (!(scratch[i] = malloc((size_t)max_ne0 * sizeof(float)))) goto nomem;
    if (!(w = gguf_writer_create())) goto nomem;
    if ((st = write_metadata(w, f, o.target->ftype, &o))) goto gguf_fail;
    for (int64_t i = 0; i < n; i++)
        if ((st = gguf_writer_add_tensor(w, ts[i].in->name, ts[i].dtype, ts[i].n_dims, ts[i].in->ne))) goto gguf_fail;
    size_t tmp_len = strlen(o.out) + 32;
    if (!(tmp = malloc(tmp_len))) goto nomem;
    snprintf(tmp, tmp_len, "%s.tmp-%ld", o.out, (long)getpid());
    if ((st = gguf_writer_begin(w, tmp))) goto gguf_fail;

    fprintf(stderr, "quantize: %s -> %s as %s, %lld tensors, %d threads\n", o.in, o.out, o.target->name,
            (long long)n, o.threads);
    double t0 = pg_now_s();
    size_t total_in = 0, total_out = 0;
    for (int64_t i = 0; i < n; i++) {
        const q_tensor *t = &ts[i];
        const void *data = t->in->data;
        if (t->convert) {
            q_job job = {.t = t, .src = kref_traits(t->in->dtype), .out = buf, .scratch = scratch, .ne0 = t->in->ne[0]};
            job.rows = t->in->ne[1] * t->in->ne[2] * t->in->ne[3];
            job.in_row = t->in->size / (size_t)(job.rows ? job.rows : 1);
            job.out_row = t->size / (size_t)(job.rows ? job.rows : 1);
            atomic_init(&job.next, 0);
            pg_parallel(o.threads, quantize_rows, &job);
            data = buf;
        }
        if ((st = gguf_writer_write_tensor(w, data, t->size))) goto gguf_fail;
        total_in += t->in->size;
        total_out += t->size;
        char shape[96];
        int k = snprintf(shape, sizeof shape, "[%lld", (long long)t->in->ne[0]);
        for (int d = 1; d < t->n_dims; d++)
            k += snprintf(shape + k, sizeof shape - (size_t)k, ", %lld", (long long)t->in->ne[d]);
        snprintf(shape + k, sizeof shape - (size_t)k, "]");
        fprintf(stderr, "[%4lld/%4lld] %-32s %-5s -> %-5s %-14s %8.2f MiB -> %8.2f MiB\n", (long long)i + 1,
                (long long)n, t->in->name, dtype_name(t->in->dtype), dtype_name(t->dtype), shape, mib(t->in->size),
                mib(t->size));
    }
    if ((st = gguf_writer_end(w))) goto gguf_fail;
    if (rename(tmp, o.out) != 0) {
        fprintf(stderr, "pagoda quantize: cannot rename %s to %s: %s\n", tmp, o.out, strerror(errno));
        unlink(tmp);
        goto done;
    }
    fprintf(stderr, "quantize: %.2f MiB -> %.2f MiB (%d fallback%s) in %.2f s, wrote %s\n", mib(total_in),
            mib(total_out), n_fallback, n_fallback == 1 ? "" : "s", pg_now_s() - t0, o.out);
    rc = 0;
    goto done;
nomem:
    fprintf(stderr, "pagoda quantize: out of memory\n");
    goto done;
gguf_fail:
    fprintf(stderr, "pagoda quantize: %s\n", pagoda_last_error());
done:
    gguf_writer_destroy(w); /* an unfinished temp file is removed here */
    if (scratch)
        for (int i = 0; i < o.threads; i++) free(scratch[i]);
    free(scratch);
    free(buf);
    free(tmp);
    free(ts);
    gguf_close(f);
    imatrix_free(o.im);
    return rc;
}
