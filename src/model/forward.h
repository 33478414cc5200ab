/* One forward pass over a packed batch of sequences (variable lengths, no padding), reading and
 * writing K/V through per-sequence block tables. The transformer is written once (forward.c) over
 * the backend interface (backend/backend.h); where it runs is a list of stages, each a backend
 * over a range of layers: the CPU alone, a GPU alone, or the CPU/GPU hybrid (the GPU runs the
 * embedding and the first layers, the CPU the rest and the head). */
#ifndef PG_MODEL_FORWARD_H
#define PG_MODEL_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/batch.h"
#include "kv/kv_cache.h"
#include "model/model.h"

typedef struct pg_forward pg_forward;

/* Where and how the forward pass runs. Zero-initialised means: all on the CPU, all cores. */
typedef struct {
    int32_t n_gpu_layers; /* 0: all on the CPU; n: embedding + the first n layers on the GPU (CUDA),
                             the rest on the CPU; >= n_layer: everything, head included, on the GPU */
    int32_t n_threads;    /* CPU kernel threads; <= 0: all cores */
    int cuda_device;      /* CUDA device id */
    int cuda_no_graphs;   /* 1: never record decode steps as CUDA graphs */
    int cuda_no_repack;   /* 1: no repacked Q4_0/Q8_0 copies for the decode matvec */
    int cuda_qgemm;       /* pg_cuda_qgemm: quantized products over a few tokens */
    int quant_act;        /* pagoda_quant_act: activations of GPTQ/AWQ/compressed-tensors products */
    pg_matmul_observer observe; /* optional: the input rows of every product over a model matrix,
                                   with the matrix's name (backend.h); CPU layers only: refused
                                   with GPU layers */
    void *observe_user;
    /* tensor parallelism (Megatron): this process is rank tp_rank of tp_size (0 or 1: alone). It
       holds the Q/K/V rows of its n_head/tp_size heads (and n_head_kv/tp_size KV heads, so the KV
       cache holds only those), the output projection's columns of its heads, the gate/up rows of
       its n_ff/tp_size slice and the down projection's columns of that slice; after each of the
       two column-split products the partial [T][n_embd] sums are added over the group by
       all_reduce (required when tp_size > 1). Embedding, norms and the LM head are whole on every
       rank. CPU only; no LoRA, no fused Q|K|V checkpoints, no weights with scales beside them. */
    int32_t tp_rank, tp_size;
    pagoda_status (*all_reduce)(void *user, float *x, int64_t n);
    void *all_reduce_user;
    /* pipeline parallelism: this process runs layers [pp_l0, pp_l1) only (pp_l1 0: all of them): the
       embedding when pp_l0 is 0, the final norm and LM head when pp_l1 is n_layer, weights and KV
       memory of its layers only. Before its first layer the residual stream [n_tok][n_embd] comes
       from pp_recv (pp_l0 > 0); after its last it goes to pp_send (pp_l1 < n_layer), and then the
       run returns no logits or hidden rows (the last stage computes them). CPU only. */
    int32_t pp_l0, pp_l1;
    pagoda_status (*pp_recv)(void *user, float *x, int64_t n);
    pagoda_status (*pp_send)(void *user, const float *x, int64_t n);
    void *pp_user;
    /* tensor parallelism, vocabulary-parallel LM head (tp_size > 1, the stage with the head): each
       rank computes the logits of its slice of the vocabulary (rows [n_vocab * r / N, n_vocab *
       (r + 1) / N) of the head); the stage's first rank receives the others' slices (vp_recv, from
       the stage's tp rank r) into the logits rows, the others send theirs (vp_send). A rank other
       than the first passes as logits a buffer of [max_tokens][forward_vocab_slice()] floats (any
       non-NULL pointer asks for the head). Without the hooks every rank's head is whole. */
    pagoda_status (*vp_send)(void *user, const float *x, int64_t n);
    pagoda_status (*vp_recv)(void *user, int32_t tp_rank, float *x, int64_t n);
    void *vp_user;
    /* tensor parallelism on GPUs: every layer and the head on this process's GPU (n_gpu_layers >=
       n_layer, one stage, no pipeline), the two sums of each layer through NCCL: nccl_id is the
       group's id (PG_NCCL_ID_BYTES, backend.h; rank 0 made it, every rank got the same), tp_rank /
       tp_size the place in it; all_reduce is then not used. The head is whole (every rank holds
       it; only the caller that wants logits runs it). nccl_always: the sums go through a group of
       one device too (tp_size 1), the check of the NCCL path on one GPU. NULL: CPU collectives. */
    const uint8_t *nccl_id;
    int nccl_always;
    /* tensor parallelism (tp_size > 1), the stage with the embedding: 1: a vocabulary-parallel
       token embedding (rank r holds rows [n_vocab * r / N, n_vocab * (r + 1) / N), other tokens read
       as zeros, and one more all-reduce sums the ranks' rows: the same values). Where the weights
       are copied to a device it saves (N - 1) / N of the embedding there; on the CPU the mapped
       embedding costs only the rows looked up, so the runner asks for it on GPUs only. */
    int vp_embed;
    /* > 0 and below n_vocab: the LM head computes only the logits of token ids [0, head_rows) (a
       draft model's cheaper head: byte-level BPE and SentencePiece vocabularies put their most
       frequent tokens first); the logits rows are head_rows wide. One rank only, plain weights. */
    int32_t head_rows;
} pg_forward_opts;

/* Scratch for batches of up to max_tokens tokens (allocated once; no malloc per step), placed as
 * opts says (NULL: CPU, all cores); GPU weights are uploaded here. */
pagoda_status forward_create_ex(const pg_model *m, int32_t max_tokens, const pg_forward_opts *opts, pg_forward **out);
pagoda_status forward_create(const pg_model *m, int32_t max_tokens, pg_forward **out); /* CPU */
void forward_destroy(pg_forward *f); /* NULL is a no-op */

/* KV memory for this forward pass: each stage's backend holds the K/V of its layers (one set of
 * block ids across all of them). dtype: PAGODA_DTYPE_F32 or F16. */
typedef struct pg_kv pg_kv;
pagoda_status forward_kv_create(pg_forward *f, int32_t n_blocks, int32_t block_size, int dtype, pg_kv **out);
void forward_kv_destroy(pg_kv *kv); /* NULL is a no-op; before the forward pass it came from */
const kv_geom *forward_kv_geom(const pg_kv *kv);
/* Copies block src to block dst in every layer (copy-on-write of a shared partial block), ordered
 * before the next step. An error means dst holds garbage: the caller must not use it. */
pagoda_status forward_kv_copy_block(pg_kv *kv, int32_t src, int32_t dst);
/* KV bytes per block on the host and on the GPU for this placement (per_block_host covers the
 * CPU stage's layers, per_block_dev the GPU's). */
void forward_kv_block_bytes(const pg_forward *f, int32_t block_size, int dtype, size_t *per_block_host,
                            size_t *per_block_dev);

/* Columns of the logits this rank computes under a vocabulary-parallel head (n_vocab when the
 * head is whole or absent). */
int32_t forward_vocab_slice(const pg_forward *f);
/* Width of this forward pass's logits rows: n_vocab, or head_rows (pg_forward_opts). */
int32_t forward_logits_width(const pg_forward *f);

/* The rows a batch wants: n_out logits rows (logits_mask, else each sequence's last token; not
 * the hidden rows) and n_hid hidden-state rows (hidden_mask). */
void forward_out_rows(const pg_batch *b, int32_t *n_out, int32_t *n_hid);

/* Runs the batch. logits: [n_out][n_vocab] for the selected tokens in batch order.
 * The batch is validated (token ids, positions, block tables) before anything is written. */
pagoda_status forward_run(pg_forward *f, const pg_batch *b, pg_kv *kv, float *logits);

/* forward_run that also returns the final hidden state (after the final norm, before the LM head)
 * of the tokens b->hidden_mask selects: hidden [n_hidden][n_embd] in batch order (host memory,
 * e.g. from forward_host_alloc). hidden may be NULL when the batch selects none. Logits rows as
 * forward_run (logits may be NULL when no token wants logits). */
pagoda_status forward_run_hidden(pg_forward *f, const pg_batch *b, pg_kv *kv, float *logits, float *hidden);

/* forward_run that returns each logits row's greedy token (the largest logit, the lowest id among
 * equals) in ids[n_out] instead of the logits: on a GPU only ids cross the bus. Only where the
 * last stage's backend can pick them (forward_has_device_argmax). */
pagoda_status forward_run_argmax(pg_forward *f, const pg_batch *b, pg_kv *kv, int32_t *ids);
bool forward_has_device_argmax(const pg_forward *f);

/* Host memory for results the forward pass writes (logits): page-locked when it runs on a GPU,
 * so the device copies straight into it. Free with forward_host_free on the same forward pass. */
void *forward_host_alloc(const pg_forward *f, size_t bytes);
void forward_host_free(const pg_forward *f, void *p);
/* GPU memory left for KV blocks if pagoda may hold `utilization` of the device's memory, after
 * the weights and scratch already allocated (0 on the CPU). */
uint64_t forward_gpu_kv_budget(const pg_forward *f, float utilization);
/* The LoRA adapters batches may name (pg_batch.seq_adapter): table[id] for 0 < id < n (NULL:
 * not loaded), borrowed until the next call; call between steps. Sizes the adapters' scratch (no
 * allocation while stepping). PAGODA_ERR_UNSUPPORTED when a stage's backend applies no adapters
 * (CUDA today). */
struct pg_lora;
pagoda_status forward_set_adapters(pg_forward *f, const struct pg_lora *const *table, int32_t n);
/* "cpu", "cuda" or "cpu+cuda". */
const char *forward_placement(const pg_forward *f);

#endif
