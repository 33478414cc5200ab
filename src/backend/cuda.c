/* The CUDA backend: one device (made current on every entry point), one stream with its cuBLAS
 * handle, weights uploaded once in their file format, scratch and KV memory in device memory.
 * The batch's metadata (tokens, positions, KV slots, block tables) goes up in one pinned buffer
 * (cuda_batch.c packs it); every kernel reads shapes that vary per step from device memory, so
 * decode steps are recorded as CUDA graphs per (padded batch size, context bucket) and replayed.
 * Ops are launched between begin_step and end_step by the thread that began the step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda_batch.h"
#include "core/dtype.h"
#include "core/log.h"

void be_cuda_config_default(pg_cuda_config *c) {
    memset(c, 0, sizeof *c);
    c->max_tokens = 256;
    c->max_ctx = 4096;
    c->graphs = true;
    c->repack = true;
    c->qgemm = PG_CUDA_QGEMM_SHADOW;
}

#ifdef PAGODA_CUDA

#include "core/fp16.h"
#include "kernels/cuda/pcu.h"
#include "kernels/cuda/pcu_kernels.h"
#include "kernels/qmatmul.h"

/* What a matrix keeps beside its file-format copy (pg_bweight.aux). */
typedef struct {
    const void *f16; /* a dequantized half copy for batches over a few tokens (QGEMM_SHADOW), or NULL */
    const void *rep; /* Q4_0/Q8_0: the repacked copy the decode matvec reads (16-byte aligned rows,
                        scales apart), or NULL: the matvec reads data */
} cu_extra;

#define MAX_GRAPHS 64

enum { QUANT_MATVEC_MAX_TOKENS = 3 }; /* quantized weights with a half copy: cuBLAS from 4 tokens */

typedef struct {
    int32_t n_tok, ctx;
    int seen;        /* eager runs so far; recorded on the second */
    pcu_graph *graph;
} graph_slot;

typedef struct {
    pg_backend base;
    pg_cuda_config c;
    pcu_stream *s;
    void **allocs;          /* owned device buffers */
    const void **alloc_src; /* host pointer each buffer was uploaded from (ties share one) */
    int *alloc_refs;        /* weights using each buffer */
    size_t *alloc_bytes;    /* each buffer's size (an upload of the same host data is shared only at
                               the same size: a vocabulary slice of a tied embedding is not the head) */
    int n_allocs, cap_allocs;
    cu_extra **extras;      /* owned host records */
    int n_extras, cap_extras;
    uint64_t weight_bytes, shadow_bytes;
    void *xh;               /* activations as halves: [max_tokens][widest n_in] */
    int64_t xh_cols;
    void *wtmp;             /* one dequantized matrix as halves (when it has no half copy) */
    size_t wtmp_elems;
    void *attn_scratch;
    int32_t *d_meta, *h_meta; /* [GPU_META_N * max_tokens] on the device / pinned host */
    int32_t *d_ids;           /* [max_tokens] greedy tokens of the logits rows */
    int32_t *d_btab, *h_btab; /* [max_tokens][btab_stride] block tables */
    int32_t btab_stride, block_size;
    int32_t ctx;              /* the step's context bound */
    bool use_graphs;
    graph_slot graphs[MAX_GRAPHS];
    int n_graphs;
    graph_slot *recording;    /* the slot being recorded this step */
    pagoda_status err;        /* first launch error of a step */
    pcu_nccl *nccl;           /* tensor parallelism: this device's place in its NCCL group, or NULL */
    int n_dequantized;        /* HF quantized matrices held as f16 (upload_dequantized) */
    int n_as_ggml;            /* HF quantized matrices held exactly as Q4_0 / Q8_0 */
} cuda_be;

#define CU(be) ((cuda_be *)(be))

static const int32_t *meta(const cuda_be *c, int field) { return c->d_meta + field * c->c.max_tokens; }

static void keep_err(cuda_be *c, pagoda_status st) {
    if (st && !c->err) c->err = st;
}

static pagoda_status track(cuda_be *c, void *p, const void *src, size_t bytes) {
    if (c->n_allocs == c->cap_allocs) {
        int cap = c->cap_allocs ? 2 * c->cap_allocs : 64;
        void **a = realloc(c->allocs, sizeof(void *) * (size_t)cap);
        if (!a) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        c->allocs = a;
        const void **b = realloc(c->alloc_src, sizeof(void *) * (size_t)cap);
        if (!b) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        c->alloc_src = b;
        int *r = realloc(c->alloc_refs, sizeof(int) * (size_t)cap);
        if (!r) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        c->alloc_refs = r;
        size_t *z = realloc(c->alloc_bytes, sizeof(size_t) * (size_t)cap);
        if (!z) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        c->alloc_bytes = z, c->cap_allocs = cap;
    }
    c->allocs[c->n_allocs] = p, c->alloc_src[c->n_allocs] = src, c->alloc_refs[c->n_allocs] = 1;
    c->alloc_bytes[c->n_allocs++] = bytes;
    return PAGODA_OK;
}

static pagoda_status dev_alloc(cuda_be *c, void **p, size_t bytes) {
    pagoda_status st = pcu_malloc(p, bytes);
    if (st) return st;
    return track(c, *p, NULL, bytes);
}

static void dev_release(cuda_be *c, void *p) {
    for (int i = 0; i < c->n_allocs; i++)
        if (c->allocs[i] == p) {
            pcu_free(p);
            c->allocs[i] = NULL, c->alloc_src[i] = NULL, c->alloc_refs[i] = 0;
            return;
        }
}

static cu_extra *extra_of(cuda_be *c, pg_bweight *w) {
    if (w->aux) return (cu_extra *)w->aux;
    if (c->n_extras == c->cap_extras) {
        int cap = c->cap_extras ? 2 * c->cap_extras : 64;
        cu_extra **a = realloc(c->extras, sizeof(*a) * (size_t)cap);
        if (!a) return NULL;
        c->extras = a, c->cap_extras = cap;
    }
    cu_extra *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    c->extras[c->n_extras++] = e;
    w->aux = e;
    return e;
}

static const void *half_copy(const pg_bweight *w) { return w->aux ? ((const cu_extra *)w->aux)->f16 : NULL; }
static const void *repacked(const pg_bweight *w) { return w->aux ? ((const cu_extra *)w->aux)->rep : NULL; }

static size_t weight_bytes(int dtype, int64_t n_in, int64_t n_out) {
    size_t rs = 0;
    dtype_row_size(dtype, n_in, &rs); /* validated at load */
    return rs * (size_t)(n_out > 0 ? n_out : 1);
}

static bool plain_type(int dtype) {
    return dtype == PAGODA_DTYPE_F32 || dtype == PAGODA_DTYPE_F16 || dtype == PAGODA_DTYPE_BF16;
}

/* Load-time scratch that grows with the matrices: the halves of the widest input, and room to
 * dequantize the largest quantized matrix (every mode may need it: a half copy can fail to fit). */
static pagoda_status grow_scratch(cuda_be *c, const pg_bweight *w) {
    pagoda_status st;
    if (w->n_in > c->xh_cols) {
        if (c->xh) dev_release(c, c->xh), c->xh = NULL;
        int64_t cols = w->n_in > c->c.n_embd ? w->n_in : c->c.n_embd;
        if ((st = dev_alloc(c, &c->xh, (size_t)c->c.max_tokens * (size_t)cols * 2))) return st;
        c->xh_cols = cols;
    }
    size_t elems = (size_t)w->n_in * (size_t)w->n_out;
    if (!plain_type(w->dtype) && elems > c->wtmp_elems) {
        if (c->wtmp) dev_release(c, c->wtmp), c->wtmp = NULL;
        if ((st = dev_alloc(c, &c->wtmp, elems * 2))) return st;
        c->wtmp_elems = elems;
    }
    return PAGODA_OK;
}

/* A half copy of a quantized matrix (shadow mode); on allocation failure the matrix goes on
 * without one (dequantized per product instead). */
static void make_shadow(cuda_be *c, pg_bweight *w) {
    if (!w->data || half_copy(w) || plain_type(w->dtype)) return;
    size_t bytes = (size_t)w->n_in * (size_t)w->n_out * 2;
    void *p = NULL;
    cu_extra *e = extra_of(c, w);
    if (!e || pcu_malloc(&p, bytes) || track(c, p, NULL, bytes)) {
        pcu_free(p);
        pg_log(PAGODA_LOG_WARN, "cuda: no memory for a half copy of a %lldx%lld matrix; dequantizing it per product",
               (long long)w->n_out, (long long)w->n_in);
        return;
    }
    pcu_dequant_f16(c->s, w->dtype, w->data, w->n_in, w->n_out, p);
    e->f16 = p;
    c->shadow_bytes += bytes;
}

/* Repacks a Q4_0/Q8_0 matrix for the decode matvec; with a half copy for bigger batches the file's
 * copy is no longer needed and is freed (unless another weight shares it, e.g. a tied embedding). */
static void make_repack(cuda_be *c, pg_bweight *w) {
    if (!w->data || repacked(w) || !pcu_repack_supported(w->dtype)) return;
    void *p = NULL;
    cu_extra *e = extra_of(c, w);
    if (!e || pcu_malloc(&p, pcu_repack_bytes(w->dtype, w->n_in, w->n_out)) ||
        track(c, p, NULL, pcu_repack_bytes(w->dtype, w->n_in, w->n_out))) {
        pcu_free(p);
        return; /* the matvec reads the file's copy */
    }
    pcu_repack(c->s, w->dtype, w->data, w->n_in, w->n_out, p);
    e->rep = p;
    if (!e->f16) return;
    for (int i = 0; i < c->n_allocs; i++)
        if (c->allocs[i] == w->data && c->alloc_refs[i] == 1) {
            pcu_sync(c->s); /* the repack above reads it */
            dev_release(c, c->allocs[i]);
            w->data = NULL; /* n_out stays: the weight is present, read through its copies */
            return;
        }
}

static pagoda_status prepare_matrix(cuda_be *c, pg_bweight *w) {
    pagoda_status st = grow_scratch(c, w);
    if (st) return st;
    if (c->c.qgemm == PG_CUDA_QGEMM_SHADOW) make_shadow(c, w);
    if (c->c.repack) make_repack(c, w);
    return PAGODA_OK;
}

/* The same host data uploaded before at the same size (a tied weight): out->data is that copy, now
 * shared. */
static bool uploaded_before(cuda_be *c, const void *src, size_t bytes, pg_bweight *out) {
    for (int i = 0; i < c->n_allocs; i++)
        if (c->alloc_src[i] == src && c->alloc_bytes[i] == bytes) {
            out->data = c->allocs[i];
            c->alloc_refs[i]++;
            return true;
        }
    return false;
}

/* A GPTQ/AWQ/compressed-tensors matrix: no GPU kernel reads these codes, so it is held in a type
 * the GPU kernels read, with the values the CPU multiplies float activations by (kernels/qmatmul.h):
 * exactly as Q4_0 / Q8_0 blocks where those hold them (symmetric, column order, half scales), else
 * dequantized into halves (2 bytes per weight; FP8, zero points, act-order). Activations are float
 * whatever the checkpoint asks. Keyed by the codes' host address like any upload (a tied weight is
 * held once). */
static pagoda_status upload_dequantized(cuda_be *c, const pg_tensor *t, bool matrix, pg_bweight *out) {
    const char *name = t->name ? t->name : "?";
    if (t->qkind < K_QW_INT4 || t->qkind > K_QW_FP8 || !t->scales.data || t->scales.dtype != PAGODA_DTYPE_F32 ||
        t->group_size <= 0 || !matrix)
        return pg_fail(PAGODA_ERR_INVALID, "weight %s: inconsistent quantization metadata", name);
    pagoda_status st;
    if ((st = pcu_set_device(c->c.device))) return st;
    const k_qweight w = {.kind = (k_qw_kind)t->qkind, .codes = t->data, .n_in = t->n_in, .n_out = t->n_out,
                         .group_size = t->group_size, .scales = t->scales.data, .zeros = t->zeros.data,
                         .perm = t->perm.data};
    /* symmetric int4/int8 in column order with half scales (GPTQ sym without act-order, most
       compressed-tensors W4A16/W8A16): the same values as Q4_0 / Q8_0 blocks, which the GPU
       kernels read (4.5 / 8.5 bits per weight); the rest as halves */
    const int gt = kref_qweight_ggml_type(&w);
    size_t bytes = (size_t)t->n_in * (size_t)t->n_out * sizeof(uint16_t);
    if (gt) dtype_row_size(gt, t->n_in, &bytes), bytes *= (size_t)t->n_out;
    *out = (pg_bweight){.dtype = gt ? gt : PAGODA_DTYPE_F16, .n_in = t->n_in, .n_out = t->n_out};
    if (uploaded_before(c, t->data, bytes, out)) return prepare_matrix(c, out);
    void *h = malloc(bytes), *p = NULL;
    if (!h) return pg_fail(PAGODA_ERR_NOMEM, "weight %s: no host memory to convert it for the GPU (%zu bytes)", name, bytes);
    if (gt) {
        kref_qweight_to_ggml(&w, h);
    } else {
        enum { CHUNK = 64 }; /* rows dequantized at a time */
        float *rows = malloc(sizeof(float) * (size_t)t->n_in * CHUNK);
        if (!rows) {
            free(h);
            return pg_fail(PAGODA_ERR_NOMEM, "weight %s: no host memory to dequantize it", name);
        }
        uint16_t *half = h;
        for (int64_t r0 = 0; r0 < t->n_out; r0 += CHUNK) {
            int64_t nr = t->n_out - r0 < CHUNK ? t->n_out - r0 : CHUNK;
            kref_qweight_dequant(&w, r0, nr, rows);
            for (size_t i = 0; i < (size_t)(nr * t->n_in); i++) half[(size_t)r0 * (size_t)t->n_in + i] = pg_fp32_to_fp16(rows[i]);
        }
        free(rows);
    }
    if ((st = pcu_malloc(&p, bytes)) || (st = track(c, p, t->data, bytes))) {
        free(h), pcu_free(p);
        return pg_error_prefix("uploading %s: ", name), st;
    }
    st = pcu_h2d(p, h, bytes, NULL); /* synchronous: h is freed next */
    free(h);
    if (st) return st;
    out->data = p;
    c->weight_bytes += bytes;
    if (!(gt ? c->n_as_ggml++ : c->n_dequantized++))
        pg_log(PAGODA_LOG_INFO, gt ? "cuda: symmetric int4/int8 checkpoint weights held as the same values in Q4_0/Q8_0 "
                                     "blocks (float activations)"
                                   : "cuda: GPTQ/AWQ/compressed-tensors weights are dequantized to f16 at load (2 bytes "
                                     "per weight; no GPU kernels over their codes yet), with float activations");
    return prepare_matrix(c, out);
}

static pagoda_status cu_upload(pg_backend *be, const pg_tensor *t, bool matrix, pg_bweight *out) {
    cuda_be *c = CU(be);
    memset(out, 0, sizeof *out);
    if (!t->data) return PAGODA_OK;
    if (t->qkind) return upload_dequantized(c, t, matrix, out);
    if (pg_tensor_has_qmeta(t))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "CUDA: weight %s is a GPTQ/AWQ/compressed-tensors matrix, which has no GPU "
                       "kernels yet: run it on the CPU (--n-gpu-layers 0) or use a GGUF", t->name ? t->name : "?");
    if (!pcu_weight_supported(t->dtype))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "CUDA: weight %s has type %s, which the GPU kernels do not take",
                       t->name ? t->name : "?", dtype_name(t->dtype));
    pagoda_status st;
    if ((st = pcu_set_device(c->c.device))) return st;
    *out = (pg_bweight){.dtype = t->dtype, .n_in = t->n_in, .n_out = t->n_out};
    size_t bytes = weight_bytes(t->dtype, t->n_in, t->n_out);
    if (uploaded_before(c, t->data, bytes, out)) return matrix ? prepare_matrix(c, out) : PAGODA_OK;
    void *p = NULL;
    if ((st = pcu_malloc(&p, bytes))) return pg_error_prefix("uploading %s: ", t->name ? t->name : "weights"), st;
    if ((st = track(c, p, t->data, bytes))) return pcu_free(p), st;
    if ((st = pcu_h2d(p, t->data, bytes, NULL))) return st;
    out->data = p;
    uint64_t before = c->weight_bytes;
    c->weight_bytes += bytes;
    if (c->weight_bytes >> 30 != before >> 30) /* progress, once a GiB */
        pg_log(PAGODA_LOG_INFO, "cuda: %.1f GiB of weights uploaded", (double)c->weight_bytes / 1073741824.0);
    return matrix ? prepare_matrix(c, out) : PAGODA_OK;
}

static pagoda_status cu_upload_stacked(pg_backend *be, const pg_tensor *const *parts, int n, pg_bweight *out) {
    cuda_be *c = CU(be);
    size_t bytes[4], total = 0;
    int64_t rows = 0;
    if (n < 1 || n > 4) return PAGODA_ERR_UNSUPPORTED;
    for (int i = 0; i < n; i++) {
        const pg_tensor *p = parts[i];
        if (!p->data || p->dtype != parts[0]->dtype || p->n_in != parts[0]->n_in || pg_tensor_has_qmeta(p))
            return PAGODA_ERR_UNSUPPORTED;
        bytes[i] = weight_bytes(p->dtype, p->n_in, p->n_out), total += bytes[i], rows += p->n_out;
    }
    if (!pcu_weight_supported(parts[0]->dtype)) return PAGODA_ERR_UNSUPPORTED;
    pagoda_status st;
    if ((st = pcu_set_device(c->c.device))) return st;
    void *buf = NULL;
    if ((st = pcu_malloc(&buf, total))) return st;
    if ((st = track(c, buf, NULL, total))) return pcu_free(buf), st;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if ((st = pcu_h2d((char *)buf + off, parts[i]->data, bytes[i], NULL))) return st;
        off += bytes[i];
    }
    *out = (pg_bweight){.data = buf, .dtype = parts[0]->dtype, .n_in = parts[0]->n_in, .n_out = rows};
    c->weight_bytes += total;
    return prepare_matrix(c, out);
}

static void *cu_alloc(pg_backend *be, size_t bytes) {
    cuda_be *c = CU(be);
    void *p = NULL;
    if (pcu_set_device(c->c.device) || dev_alloc(c, &p, bytes)) return NULL;
    return p;
}

static void *cu_host_alloc(pg_backend *be, size_t bytes) {
    void *p = NULL;
    if (pcu_set_device(CU(be)->c.device)) return NULL;
    return pcu_host_alloc(&p, bytes) ? NULL : p;
}
static void cu_host_free(pg_backend *be, void *p) { (void)be, pcu_host_free(p); }

static pagoda_status cu_kv_alloc(pg_backend *be, size_t bytes, void **mem) {
    cuda_be *c = CU(be);
    pagoda_status st;
    *mem = NULL;
    if ((st = pcu_set_device(c->c.device)) || (st = pcu_malloc(mem, bytes))) return st;
    if ((st = pcu_memset(*mem, 0, bytes, NULL))) {
        pcu_free(*mem);
        *mem = NULL;
    }
    return st;
}
static void cu_kv_free(pg_backend *be, void *mem) {
    if (pcu_set_device(CU(be)->c.device) == PAGODA_OK) pcu_free(mem);
}

static pagoda_status cu_copy(pg_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_be *c = CU(be);
    pagoda_status st = pcu_set_device(c->c.device);
    return st ? st : pcu_d2d(dst, src, bytes, c->s); /* on the stream: the next step's kernels see it */
}

static uint64_t cu_kv_budget(pg_backend *be, float utilization) {
    pcu_device_info info;
    if (pcu_set_device(CU(be)->c.device) || pcu_get_device_info(&info)) return 0;
    double reserve = (1.0 - (double)utilization) * (double)info.mem_total;
    /* leave room for block tables and graph memory allocated on first use */
    double left = (double)info.mem_free - reserve - 256.0 * 1048576.0;
    return left > 0 ? (uint64_t)left : 0;
}

/* ---- a step ---------------------------------------------------------------------------------- */

static pagoda_status cu_begin_step(pg_backend *be, const pg_batch *b, int32_t block_size, const int32_t *out_rows,
                                   int32_t n_out, bool may_replay, pg_step_plan *plan) {
    cuda_be *c = CU(be);
    pagoda_status st;
    if ((st = pcu_set_device(c->c.device))) return st;
    c->recording = NULL;
    if (!c->d_btab) { /* block tables sized once the block size is known (before any graph) */
        c->block_size = block_size;
        c->btab_stride = (c->c.max_ctx + block_size - 1) / block_size;
        size_t n = (size_t)c->c.max_tokens * (size_t)c->btab_stride * sizeof(int32_t);
        if ((st = dev_alloc(c, (void **)&c->d_btab, n)) || (st = pcu_host_alloc((void **)&c->h_btab, n))) return st;
        memset(c->h_btab, 0, n);
        if ((st = pcu_memset(c->d_btab, 0, n, NULL))) return st;
    }
    if (block_size != c->block_size)
        return pg_fail(PAGODA_ERR_INVALID, "CUDA: KV block size changed from %d to %d", c->block_size, block_size);
    const int32_t MT = c->c.max_tokens;
    gpu_step_shape sh;
    if ((st = gpu_batch_pack(b, block_size, out_rows, n_out, may_replay && c->use_graphs, MT, c->c.max_ctx,
                             c->btab_stride, c->h_meta, c->h_btab, &sh)))
        return st;
    /* one copy for all fields (the rows past each field's n_tok are not read) */
    if ((st = pcu_h2d(c->d_meta, c->h_meta, sizeof(int32_t) * (size_t)(GPU_META_ROW * MT + sh.n_rows), c->s))) return st;
    if ((st = pcu_h2d(c->d_btab, c->h_btab, sizeof(int32_t) * (size_t)b->n_seq * (size_t)c->btab_stride, c->s))) return st;
    c->err = PAGODA_OK;
    c->ctx = sh.ctx;
    const bool decode = sh.replay;
    graph_slot *gs = NULL;
    if (decode) {
        for (int i = 0; i < c->n_graphs; i++)
            if (c->graphs[i].n_tok == sh.n_tok && c->graphs[i].ctx == sh.ctx) gs = &c->graphs[i];
        if (!gs && c->n_graphs < MAX_GRAPHS) {
            gs = &c->graphs[c->n_graphs++];
            *gs = (graph_slot){.n_tok = sh.n_tok, .ctx = sh.ctx};
        }
    }
    *plan = (pg_step_plan){.n_tok = sh.n_tok, .n_out = decode ? sh.n_tok : n_out};
    if (gs && gs->graph) {
        if ((st = pcu_graph_launch(gs->graph, c->s))) return st;
        plan->replayed = true;
    } else if (gs && gs->seen >= 1) { /* second sighting: record, then replay */
        if ((st = pcu_graph_begin(c->s))) return st;
        c->recording = gs;
    } else if (gs) {
        gs->seen++;
    }
    return PAGODA_OK;
}

static pagoda_status cu_end_step(pg_backend *be, bool *again) {
    cuda_be *c = CU(be);
    pagoda_status st;
    *again = false;
    if (c->recording) {
        graph_slot *gs = c->recording;
        c->recording = NULL;
        pcu_graph *graph = NULL;
        st = pcu_graph_end(c->s, &graph);
        if (st || c->err) {
            pcu_graph_destroy(graph);
            pg_log(PAGODA_LOG_WARN, "cuda: graph capture failed for %d tokens; running without graphs", gs->n_tok);
            c->use_graphs = false;
            c->err = PAGODA_OK;
            *again = true;
            return PAGODA_OK;
        }
        gs->graph = graph;
        if ((st = pcu_graph_launch(graph, c->s))) return st;
    }
    if (c->err) return c->err;
    return pcu_check("forward pass");
}

/* ---- ops ------------------------------------------------------------------------------------- */

/* Most tokens a product reads the weights once per token for (the matvec kernels); beyond, the
 * tensor-core path is faster (H100: Q4_0 matvec at 8 tokens ~400 GB/s of weights against ~700
 * equivalent for cuBLAS on the half copy; F16 matvec 1.3 TB/s at 8 tokens, cuBLAS ~2.5). */
static int32_t matvec_max_tokens(const pg_bweight *w) {
    switch (w->dtype) {
    case PAGODA_DTYPE_F32: return PCU_MMV_MAX_TOK;
    case PAGODA_DTYPE_F16:
    case PAGODA_DTYPE_BF16: return 1;
    default: return half_copy(w) ? QUANT_MATVEC_MAX_TOKENS : PCU_MMV_MAX_TOK;
    }
}

static bool cu_wants_half(pg_backend *be, const pg_bweight *w, int32_t T) {
    (void)be;
    return T > matvec_max_tokens(w) && w->dtype != PAGODA_DTYPE_F32 && w->dtype != PAGODA_DTYPE_BF16;
}

static void cu_matmul(pg_backend *be, const pg_bweight *w, const float *x, int32_t T, float *y, int64_t ldy, bool x_half) {
    cuda_be *c = CU(be);
    pcu_stream *s = c->s;
    if (T <= matvec_max_tokens(w)) {
        if (repacked(w)) pcu_matvec_repacked(s, w->dtype, repacked(w), w->n_in, w->n_out, x, T, y, ldy);
        else pcu_matvec(s, w->dtype, w->data, w->n_in, w->n_out, x, T, y, ldy);
        return;
    }
    switch (w->dtype) {
    case PAGODA_DTYPE_F32:
        keep_err(c, pcu_gemm(s, w->dtype, w->data, w->n_in, w->n_out, x, T, y, ldy));
        return;
    case PAGODA_DTYPE_F16:
        if (!x_half) pcu_f32_to_f16(s, x, c->xh, (int64_t)T * w->n_in);
        keep_err(c, pcu_gemm(s, w->dtype, w->data, w->n_in, w->n_out, c->xh, T, y, ldy));
        return;
    case PAGODA_DTYPE_BF16:
        pcu_f32_to_bf16(s, x, c->xh, (int64_t)T * w->n_in);
        keep_err(c, pcu_gemm(s, w->dtype, w->data, w->n_in, w->n_out, c->xh, T, y, ldy));
        return;
    default:
        if (!x_half) pcu_f32_to_f16(s, x, c->xh, (int64_t)T * w->n_in);
        if (half_copy(w)) {
            keep_err(c, pcu_gemm(s, PAGODA_DTYPE_F16, half_copy(w), w->n_in, w->n_out, c->xh, T, y, ldy));
        } else if (c->c.qgemm == PG_CUDA_QGEMM_MMA && pcu_mma_supported(w->dtype)) {
            pcu_matmul_mma(s, w->dtype, w->data, w->n_in, w->n_out, c->xh, T, y, ldy);
        } else {
            pcu_dequant_f16(s, w->dtype, w->data, w->n_in, w->n_out, c->wtmp);
            keep_err(c, pcu_gemm(s, PAGODA_DTYPE_F16, c->wtmp, w->n_in, w->n_out, c->xh, T, y, ldy));
        }
    }
}

static void cu_get_rows(pg_backend *be, const pg_bweight *table, int ids, int32_t T, float *out, bool accumulate) {
    cuda_be *c = CU(be);
    pcu_get_rows(c->s, table->dtype, table->data, table->n_in, meta(c, ids == PG_IDS_TOKENS ? GPU_META_TOK : GPU_META_POSC),
                 T, out, accumulate, table->row0, table->n_out);
}

static void cu_gather_out_rows(pg_backend *be, const float *x, int64_t n, int32_t n_out, float *out) {
    cuda_be *c = CU(be);
    pcu_get_rows(c->s, PAGODA_DTYPE_F32, x, n, meta(c, GPU_META_ROW), n_out, out, false, 0, INT64_MAX);
}

static const void *dptr(const pg_bweight *w) { return w && w->data ? w->data : NULL; }

static void cu_add_norm(pg_backend *be, float *x, const float *delta, const pg_bweight *delta_bias, float *y,
                        const pg_bweight *w, const pg_bweight *b, int64_t n, int32_t rows, float eps, bool layernorm,
                        bool y_half) {
    cuda_be *c = CU(be);
    pcu_add_norm(c->s, x, delta, dptr(delta_bias), y, dptr(w), dptr(b), n, rows, eps, layernorm, y_half ? c->xh : NULL);
}

static void cu_add_bias(pg_backend *be, float *y, const pg_bweight *b, int32_t rows, int64_t n, int64_t ld) {
    if (b && b->data) pcu_add_bias(CU(be)->s, y, b->data, rows, n, ld);
}

static void cu_head_norm(pg_backend *be, float *x, int32_t T, int n_head, int head_dim, int64_t ld, const pg_bweight *w,
                         float eps) {
    pcu_head_rmsnorm(CU(be)->s, x, T, n_head, head_dim, ld, w->data, eps);
}

static void cu_rope(pg_backend *be, float *x, int32_t T, int64_t ld, int n_head, int head_dim, int rope_dim,
                    const pg_bweight *inv_freq, bool neox) {
    cuda_be *c = CU(be);
    pcu_rope(c->s, x, T, ld, n_head, head_dim, rope_dim, meta(c, GPU_META_POS), inv_freq->data, neox);
}

static void cu_kv_store(pg_backend *be, const pg_kv_layer *kv, const float *k, const float *v, int64_t ld, int32_t T) {
    cuda_be *c = CU(be);
    pcu_kv_store(c->s, kv->k, kv->v, kv->dtype == PAGODA_DTYPE_F16, k, v, ld, T, kv->n_head_kv * kv->head_dim, meta(c, GPU_META_SLOT));
}

static void cu_attention(pg_backend *be, const pg_kv_layer *kv, float *out, const float *q, int64_t q_ld, int32_t T,
                         int n_head, float scale, int window) {
    cuda_be *c = CU(be);
    pcu_attn_args a = {.d_k_cache = kv->k, .d_v_cache = kv->v, .f16 = kv->dtype == PAGODA_DTYPE_F16, .block_size = kv->block_size,
                       .n_head = n_head, .n_head_kv = kv->n_head_kv, .head_dim = kv->head_dim, .scale = scale,
                       .window = window, .d_tok_pos = meta(c, GPU_META_POS), .d_tok_seq = meta(c, GPU_META_SEQ),
                       .d_block_tables = c->d_btab, .max_blocks = c->btab_stride};
    pcu_attention(c->s, &a, out, q, q_ld, T, c->ctx, c->attn_scratch);
}

static void cu_silu_mul(pg_backend *be, float *gate, const float *up, int64_t n) { pcu_silu_mul(CU(be)->s, gate, up, n); }

static void cu_swiglu_rows(pg_backend *be, float *out, const float *in, int32_t rows, int64_t n, bool out_half) {
    cuda_be *c = CU(be);
    pcu_swiglu_rows(c->s, out, in, rows, n, out_half ? c->xh : NULL);
}

static void cu_gelu(pg_backend *be, float *x, int64_t n) { pcu_gelu(CU(be)->s, x, n); }

/* The tensor-parallel sum, queued on the stream like the ops around it (a group of one device
 * through NCCL too, when asked: the check of this path on one GPU). */
static pagoda_status cu_all_reduce(pg_backend *be, float *x, int64_t n) {
    cuda_be *c = CU(be);
    if (!c->nccl) return PAGODA_OK;
    pagoda_status st = pcu_nccl_all_reduce(c->nccl, x, n, c->s);
    keep_err(c, st);
    return st;
}

/* ---- results --------------------------------------------------------------------------------- */

static pagoda_status cu_read(pg_backend *be, void *host, const void *src, size_t bytes) {
    cuda_be *c = CU(be);
    pagoda_status st = pcu_set_device(c->c.device);
    return st ? st : pcu_d2h(host, src, bytes, c->s);
}

static pagoda_status cu_write(pg_backend *be, void *dst, const void *host, size_t bytes) {
    cuda_be *c = CU(be);
    pagoda_status st = pcu_set_device(c->c.device);
    return st ? st : pcu_h2d(dst, host, bytes, c->s);
}

static pagoda_status cu_argmax_rows(pg_backend *be, const float *x, int32_t rows, int64_t n, int32_t *ids) {
    cuda_be *c = CU(be);
    pagoda_status st = pcu_set_device(c->c.device);
    if (st || rows <= 0) return st;
    pcu_argmax_rows(c->s, x, rows, n, c->d_ids);
    return pcu_d2h(ids, c->d_ids, sizeof(int32_t) * (size_t)rows, c->s);
}

static pagoda_status cu_sync(pg_backend *be) {
    cuda_be *c = CU(be);
    pagoda_status st = pcu_set_device(c->c.device);
    return st ? st : pcu_sync(c->s);
}

/* ---- lifetime -------------------------------------------------------------------------------- */

static void cu_destroy(pg_backend *be) {
    cuda_be *c = CU(be);
    if (pcu_set_device(c->c.device) == PAGODA_OK) {
        if (c->s) pcu_sync(c->s);
        for (int i = 0; i < c->n_graphs; i++) pcu_graph_destroy(c->graphs[i].graph);
        pcu_nccl_destroy(c->nccl, c->err != PAGODA_OK);
        for (int i = 0; i < c->n_allocs; i++) pcu_free(c->allocs[i]);
        pcu_host_free(c->h_meta);
        pcu_host_free(c->h_btab);
        pcu_stream_destroy(c->s);
    }
    if (c->shadow_bytes || c->weight_bytes)
        pg_log(PAGODA_LOG_DEBUG, "cuda: released %.2f GiB of weights", (double)(c->weight_bytes + c->shadow_bytes) / 1073741824.0);
    for (int i = 0; i < c->n_extras; i++) free(c->extras[i]);
    free(c->extras), free(c->allocs), free(c->alloc_src), free(c->alloc_refs), free(c->alloc_bytes);
    free(c);
}

static const pg_backend_ops cuda_ops = {
    .name = "cuda",
    .host_memory = false,
    .destroy = cu_destroy,
    .upload = cu_upload,
    .upload_stacked = cu_upload_stacked,
    .alloc = cu_alloc,
    .host_alloc = cu_host_alloc,
    .host_free = cu_host_free,
    .kv_alloc = cu_kv_alloc,
    .kv_free = cu_kv_free,
    .copy = cu_copy,
    .kv_budget = cu_kv_budget,
    .begin_step = cu_begin_step,
    .end_step = cu_end_step,
    .get_rows = cu_get_rows,
    .gather_out_rows = cu_gather_out_rows,
    .add_norm = cu_add_norm,
    .matmul = cu_matmul,
    .wants_half = cu_wants_half,
    .add_bias = cu_add_bias,
    .head_norm = cu_head_norm,
    .rope = cu_rope,
    .kv_store = cu_kv_store,
    .attention = cu_attention,
    .silu_mul = cu_silu_mul,
    .swiglu_rows = cu_swiglu_rows,
    .gelu = cu_gelu,
    .all_reduce = cu_all_reduce,
    .read = cu_read,
    .write = cu_write,
    .argmax_rows = cu_argmax_rows,
    .sync = cu_sync,
};

pagoda_status be_cuda_create(const pg_cuda_config *cfg, pg_backend **out) {
    *out = NULL;
    char why[256];
    if (!pcu_available(why, sizeof why)) return pg_fail(PAGODA_ERR_CUDA, "no usable CUDA device: %s", why);
    int n_dev = pcu_device_count();
    if (cfg->device < 0 || cfg->device >= n_dev)
        return pg_fail(PAGODA_ERR_INVALID, "CUDA device %d does not exist (%d found)", cfg->device, n_dev);
    if (cfg->max_tokens <= 0 || cfg->max_ctx <= 0 || cfg->n_embd <= 0 || cfg->n_head <= 0 || cfg->head_dim <= 0)
        return pg_fail(PAGODA_ERR_INVALID, "CUDA backend: bad configuration");
    cuda_be *c = calloc(1, sizeof *c);
    if (!c) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    c->base.ops = &cuda_ops;
    c->c = *cfg;
    c->use_graphs = cfg->graphs;
    const size_t MT = (size_t)cfg->max_tokens;
    pagoda_status st;
    if ((st = pcu_set_device(cfg->device)) || (st = pcu_stream_create(&c->s)) ||
        (st = dev_alloc(c, &c->attn_scratch, pcu_attention_scratch_bytes(cfg->max_tokens, cfg->n_head, cfg->head_dim, cfg->max_ctx))) ||
        (st = dev_alloc(c, (void **)&c->d_meta, GPU_META_N * MT * sizeof(int32_t))) ||
        (st = dev_alloc(c, (void **)&c->d_ids, MT * sizeof(int32_t))) ||
        (st = pcu_host_alloc((void **)&c->h_meta, GPU_META_N * MT * sizeof(int32_t)))) {
        cu_destroy(&c->base);
        return st;
    }
    if (cfg->nccl_size >= 1) {
        /* the group's sums are launched eagerly: a decode step is not recorded as a graph (NCCL
           can be captured, but pagoda has not been measured that way) */
        c->use_graphs = false;
        if ((st = pcu_nccl_init(cfg->nccl_id, cfg->nccl_rank, cfg->nccl_size, &c->nccl))) {
            pg_error_prefix("tensor parallel rank %d of %d on CUDA device %d: ", cfg->nccl_rank, cfg->nccl_size,
                            cfg->device);
            cu_destroy(&c->base);
            return st;
        }
        pg_log(PAGODA_LOG_INFO, "cuda: device %d is rank %d of an NCCL group of %d", cfg->device, cfg->nccl_rank,
               cfg->nccl_size);
    }
    pcu_device_info info;
    if (!pcu_get_device_info(&info))
        pg_log(PAGODA_LOG_INFO, "cuda: device %d, %s, %.1f GiB free", cfg->device, info.name, (double)info.mem_free / 1073741824.0);
    *out = &c->base;
    return PAGODA_OK;
}

pagoda_status be_cuda_nccl_id(uint8_t id[PG_NCCL_ID_BYTES]) {
    _Static_assert(PG_NCCL_ID_BYTES == PCU_NCCL_ID_BYTES, "NCCL id sizes differ");
    return pcu_nccl_make_id(id);
}

int be_cuda_nccl_version(char *why, size_t why_size) { return pcu_nccl_version(why, why_size); }

int be_cuda_device_count(void) {
    char why[128];
    return pcu_available(why, sizeof why) ? pcu_device_count() : 0;
}

#else /* !PAGODA_CUDA */

int be_cuda_nccl_version(char *why, size_t why_size) {
    if (why && why_size) snprintf(why, why_size, "pagoda was built without CUDA");
    return 0;
}

int be_cuda_device_count(void) { return 0; }

pagoda_status be_cuda_nccl_id(uint8_t id[PG_NCCL_ID_BYTES]) {
    (void)id;
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "pagoda was built without CUDA (nvcc was not found at build time)");
}

pagoda_status be_cuda_create(const pg_cuda_config *c, pg_backend **out) {
    (void)c;
    *out = NULL;
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "pagoda was built without CUDA (nvcc was not found at build time)");
}

#endif
