/* pagoda: public C API.
 * Handles are opaque. Every function returns pagoda_status (0 = ok, negative = error);
 * pagoda_last_error() gives a one-line message naming what went wrong (thread-local). */
#ifndef PAGODA_H
#define PAGODA_H

#include <stddef.h>
#include <stdint.h>

/* The version of this header and of the library built with it. CMakeLists.txt reads
 * project(VERSION) from these lines: bump all four together. */
#define PAGODA_VERSION_MAJOR 0
#define PAGODA_VERSION_MINOR 1
#define PAGODA_VERSION_PATCH 0
#define PAGODA_VERSION_STRING "0.1.0"
/* one number for #if comparisons: PAGODA_VERSION >= PAGODA_MAKE_VERSION(0, 2, 0) */
#define PAGODA_MAKE_VERSION(major, minor, patch) ((major) * 10000 + (minor) * 100 + (patch))
#define PAGODA_VERSION PAGODA_MAKE_VERSION(PAGODA_VERSION_MAJOR, PAGODA_VERSION_MINOR, PAGODA_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    PAGODA_OK = 0,
    PAGODA_ERR_NOMEM = -1,
    PAGODA_ERR_FORMAT = -2,      /* malformed or hostile file contents */
    PAGODA_ERR_INVALID = -3,     /* bad argument from the caller */
    PAGODA_ERR_IO = -4,          /* open/read/mmap failed */
    PAGODA_ERR_UNSUPPORTED = -5, /* well-formed but not something pagoda runs (yet) */
    PAGODA_ERR_CUDA = -6,
    PAGODA_ERR_BUSY = -7,        /* queue full; try again later */
} pagoda_status;

/* Element/block types. Values equal GGML's type ids so GGUF files map one to one.
 * Append-only. */
typedef enum {
    PAGODA_DTYPE_F32 = 0,
    PAGODA_DTYPE_F16 = 1,
    PAGODA_DTYPE_Q4_0 = 2,
    PAGODA_DTYPE_Q4_1 = 3,
    PAGODA_DTYPE_Q5_0 = 6,
    PAGODA_DTYPE_Q5_1 = 7,
    PAGODA_DTYPE_Q8_0 = 8,
    PAGODA_DTYPE_Q8_1 = 9,
    PAGODA_DTYPE_Q2_K = 10,
    PAGODA_DTYPE_Q3_K = 11,
    PAGODA_DTYPE_Q4_K = 12,
    PAGODA_DTYPE_Q5_K = 13,
    PAGODA_DTYPE_Q6_K = 14,
    PAGODA_DTYPE_Q8_K = 15,
    PAGODA_DTYPE_I8 = 24,
    PAGODA_DTYPE_I16 = 25,
    PAGODA_DTYPE_I32 = 26,
    PAGODA_DTYPE_I64 = 27,
    PAGODA_DTYPE_F64 = 28,
    PAGODA_DTYPE_BF16 = 30,
    PAGODA_DTYPE_COUNT = 31, /* one past the largest tensor (GGML) id; not a type */
    /* KV-cache-only element types (pagoda_engine_config.kv_dtype), never a tensor's: kept far
     * above GGML's ids (and PAGODA_DTYPE_COUNT, so tables indexed by tensor type ignore them).
     * Both hold one byte per element plus one float scale per (token, KV head), dynamic:
     * scale = max|x| / 127 (int8, symmetric) or max|x| / 448 (fp8 e4m3fn, round to nearest
     * even, saturating) over that head's head_dim values at that token. */
    PAGODA_DTYPE_KV_INT8 = 256,
    PAGODA_DTYPE_KV_FP8_E4M3 = 257,
} pagoda_dtype;

enum { PAGODA_LOG_ERROR = 0, PAGODA_LOG_WARN = 1, PAGODA_LOG_INFO = 2, PAGODA_LOG_DEBUG = 3 };

/* The library never prints: it hands log lines to this callback (default: none). */
typedef void (*pagoda_log_fn)(int level, const char *msg, void *user);
void pagoda_log_set(pagoda_log_fn fn, void *user, int max_level);

/* Message of the last error on this thread ("" if none). */
const char *pagoda_last_error(void);
const char *pagoda_status_name(pagoda_status st);

/* ===== Models: weights + tokenizer + chat template, loaded once, shared by engines ===== */

typedef struct pagoda_model pagoda_model;

/* path: a .gguf file or a Hugging Face model folder (config.json, *.safetensors, tokenizer.json). */
pagoda_status pagoda_model_load(const char *path, pagoda_model **out);
void pagoda_model_free(pagoda_model *m); /* NULL is a no-op; free engines using it first */

typedef struct {
    const char *arch;          /* "llama", "qwen2", ... (owned by the model) */
    const char *path;
    int32_t n_ctx_train;       /* context length the model was trained for */
    int32_t n_vocab;
    int64_t n_params;
    uint64_t weight_bytes;     /* bytes of weights read per token */
    const char *chat_template; /* Jinja source; NULL if the model has none */
    int32_t bos, eos;          /* -1 if none */
    int32_t fim_prefix, fim_suffix, fim_middle; /* fill-in-the-middle tokens; -1 if none */
    int32_t fim_repo, fim_sep; /* repository-level FIM: the repository-name and file-separator
                                  tokens (<repo_name>, <|file_sep|>, ...); -1 if none */
} pagoda_model_info;
void pagoda_model_get_info(const pagoda_model *m, pagoda_model_info *info);

/* The text functions below are thread-safe (no shared mutable state), also while an engine runs.
 * Text -> token ids (*ids from malloc; release with pagoda_free). add_special: BOS as the model
 * wants it; parse_special: "<|im_start|>" and other special-token text become those tokens. */
pagoda_status pagoda_tokenize(const pagoda_model *m, const char *text, size_t len, int add_special,
                              int parse_special, int32_t **ids, size_t *n_ids);
/* Token ids -> text (*text from malloc, NUL-terminated; release with pagoda_free). */
pagoda_status pagoda_detokenize(const pagoda_model *m, const int32_t *ids, size_t n, int skip_special, char **text,
                                size_t *len);
/* The text of one token as generation would print it (special tokens as their text), into buf
 * (NUL-terminated if room). Returns the length (may exceed cap: truncated then). */
size_t pagoda_token_text(const pagoda_model *m, int32_t id, char *buf, size_t cap);
/* True for tokens that end generation (EOS, <|im_end|>, <|eot_id|>, ...). */
int pagoda_token_is_eog(const pagoda_model *m, int32_t id);

/* Renders the model's chat template. messages_json: a JSON array of {"role","content",...}
 * objects as in the OpenAI API; tools_json: JSON array or NULL. *text from malloc (pagoda_free).
 * Fails with PAGODA_ERR_UNSUPPORTED if the model has no template, PAGODA_ERR_INVALID for bad
 * messages (the message says which). */
pagoda_status pagoda_chat_render(const pagoda_model *m, const char *messages_json, const char *tools_json,
                                 int add_generation_prompt, char **text);
/* Replaces the model's chat template (vLLM's --chat-template) by this Jinja source (copied), for
 * pagoda_chat_render / pagoda_chat_tokenize and pagoda_model_get_info. Checked by rendering a
 * short conversation: PAGODA_ERR_INVALID (the message says where) for a template that does not
 * render. Call before the model is shared with other threads. */
pagoda_status pagoda_model_set_chat_template(pagoda_model *m, const char *jinja_source);

/* The chat template rendered and tokenized, as the prompt of a chat request: *ids from malloc
 * (pagoda_free). Text the template writes (its own "<|im_start|>", the BOS/EOS it inserts)
 * becomes special tokens; text that comes from messages_json and tools_json (contents, names,
 * tool definitions and arguments, keys) is tokenized as plain text unless
 * allow_special_in_content is set, so a message cannot forge turns with special-token text.
 * The whole text is tokenized in one pass, so ordinary messages give the ids that rendering and
 * then pagoda_tokenize(parse_special=1) give. The model's BOS is added as pagoda_tokenize's
 * add_special would add it, once (not again after a template that writes it). Errors as
 * pagoda_chat_render. */
pagoda_status pagoda_chat_tokenize(const pagoda_model *m, const char *messages_json, const char *tools_json,
                                   int add_generation_prompt, int allow_special_in_content, int32_t **ids,
                                   size_t *n_ids);

void pagoda_free(void *p);

/* ===== Memory broker: the budgets several engines of one process share ===== */

/* Engines created with the same broker take their KV memory (host RAM and each GPU) and their
 * kernel threads from it, so models served side by side divide the machine instead of each
 * sizing itself from whatever is free when it starts. An engine gives back what it took when it
 * is destroyed. Thread-safe. */
typedef struct pagoda_memory_broker pagoda_memory_broker;
typedef struct {
    uint64_t host_bytes; /* KV memory in host RAM for all engines together; 0: half the available memory */
    uint64_t gpu_bytes;  /* KV memory per GPU for all engines together; 0: no limit beyond each engine's
                            gpu_memory_utilization */
    int32_t n_cores;     /* kernel threads for all engines together; 0: the cores online */
} pagoda_memory_broker_config;
/* c may be NULL (all defaults). */
pagoda_status pagoda_memory_broker_create(const pagoda_memory_broker_config *c, pagoda_memory_broker **out);
/* Engines using it must be destroyed first. NULL is a no-op. */
void pagoda_memory_broker_destroy(pagoda_memory_broker *b);
typedef struct {
    uint64_t host_total, host_used;
    uint64_t gpu_total, gpu_used[8]; /* gpu_total 0: unlimited; used per device id (< 8) */
    int32_t cores_total, cores_used;
    int32_t n_engines;
} pagoda_memory_broker_stats;
void pagoda_memory_broker_get_stats(pagoda_memory_broker *b, pagoda_memory_broker_stats *s);

/* ===== Engine: continuous batching over a paged KV cache with prefix reuse ===== */

typedef struct pagoda_engine pagoda_engine;

/* A group of processes that run one model together: tensor parallelism (each layer split Megatron
 * style over tp ranks), pipeline parallelism (the layers cut into pp_size stages, one after the
 * other), or both (size = tp * pp_size ranks, stage-major: rank = stage * tp + tp_rank). What the
 * engine needs of the transport, as hooks. pagoda_tp_mpi_create(_pp) makes one over MPI. */
typedef struct {
    int32_t rank, size; /* this process's place in the group; size 1: alone */
    /* rank 0's bytes into every rank's buf (collective over all size ranks: every rank calls it
       with the same size) */
    pagoda_status (*bcast)(void *user, void *buf, size_t bytes);
    /* x[0..n) = the sum over this rank's stage (its size / pp_size tensor-parallel ranks) of every
       rank's x, in place (collective over the stage) */
    pagoda_status (*all_reduce)(void *user, float *x, int64_t n);
    void *user;
    /* appended for pipeline parallelism; pp_size 0 or 1: one stage (send and recv unused) */
    int32_t pp_size;
    /* bytes to / from rank `peer` of the group (point to point, blocking, in order per pair) */
    pagoda_status (*send)(void *user, int32_t peer, const void *buf, size_t bytes);
    pagoda_status (*recv)(void *user, int32_t peer, void *buf, size_t bytes);
    /* appended for GPUs: this process's place among the group's processes on its host; with GPU
       layers it runs on device cuda_device + local_rank */
    int32_t local_rank;
} pagoda_tp_group;

typedef struct {
    int32_t n_threads;        /* kernel threads; 0: all cores */
    int32_t kv_block_size;    /* tokens per KV block; default 16 */
    uint64_t kv_mem_bytes;    /* KV memory budget; 0: kv_mem_fraction of available memory */
    float kv_mem_fraction;    /* default 0.25 */
    int32_t max_batch_tokens; /* tokens per engine step (decode + prefill chunks); default 256: on a CPU a
                                 512-token prefill chunk stalls the decodes of that step 2x longer */
    int32_t max_seqs;         /* sequences per step; default 64 */
    int32_t max_model_len;    /* prompt + generation limit; 0: the model's n_ctx_train (capped by
                                 the KV budget) */
    int32_t max_waiting;      /* queued requests beyond which submit returns PAGODA_ERR_BUSY;
                                 0: unlimited */
    int prefix_caching;       /* reuse KV blocks of identical prompt prefixes; default 1 */
    pagoda_dtype kv_dtype;    /* KV cache elements: PAGODA_DTYPE_F32 (default) or PAGODA_DTYPE_F16
                                 (half the memory, so twice the tokens, and half the attention reads;
                                 K/V rounded to half precision), or on the CPU only
                                 PAGODA_DTYPE_KV_INT8 / PAGODA_DTYPE_KV_FP8_E4M3 (a byte per element
                                 and a float scale per token and KV head: (head_dim + 4) / (2 head_dim)
                                 of f16's memory) */
    int32_t n_gpu_layers;     /* 0 (default): CPU only; n > 0: the embedding and the first n layers on
                                 the GPU (CUDA), the rest on the CPU; < 0 or >= n_layer: all on the GPU */
    float gpu_memory_utilization; /* share of the GPU's memory pagoda may hold (weights, scratch and
                                 KV blocks, which take what is left); default 0.9 */
    int32_t cuda_device;      /* CUDA device the GPU layers run on; default 0 */
    int32_t cuda_no_graphs;   /* 1: launch every kernel of every step (no CUDA graph replay) */
    int32_t cuda_no_repack;   /* 1: no repacked Q4_0/Q8_0 copies for the decode matvec */
    int32_t cuda_qgemm;       /* quantized weights x more than a few tokens: 0 (default) cuBLAS on a half
                                 copy of each matrix (fastest; 2 bytes per weight of GPU memory), 1 cuBLAS
                                 after dequantizing per product (no extra memory), 2 the tensor-core kernel
                                 on the packed weights */
    pagoda_memory_broker *broker; /* borrowed, may be NULL. Set: the KV memory (kv_mem_bytes, else
                                 kv_mem_fraction of the broker's host budget; GPU blocks within its
                                 per-GPU budget) and the kernel threads (n_threads, else every core
                                 the broker has not given out, at least one) come from it, and
                                 creation fails with PAGODA_ERR_NOMEM when it cannot grant them */
    int32_t max_adapters;     /* LoRA adapters loaded at once (ids 1..max_adapters); 0: 8; at most 255 */
    int32_t quant_activations; /* pagoda_quant_act: how products over GPTQ/AWQ/compressed-tensors
                                 weights treat activations */
    const pagoda_tp_group *tp; /* borrowed, may be NULL (alone). size > 1: tensor and/or pipeline
                                 parallelism: the engine runs on rank 0 (pagoda_engine_create
                                 there), every other rank calls pagoda_tp_worker_run with the same
                                 model and config. Each stage holds a contiguous range of layers
                                 (split as evenly as possible, earlier stages taking the remainder;
                                 the first stage the embedding, the last the final norm and LM
                                 head) and their KV cache; within a stage each rank holds its share
                                 of the heads and FFN. The head count, KV head count and FFN width
                                 must divide by size / pp_size, pp_size must not exceed the layer
                                 count; no LoRA. GPU layers: tensor parallelism only (no stages),
                                 every layer on the GPU, one device per process
                                 (cuda_device + tp->local_rank), the sums through NCCL (speculation runs: drafts are
                                 proposed on rank 0 and verified in the split pass) */
    /* appended for speculative decoding: each step, running sequences get up to
     * num_speculative_tokens proposed tokens that the step's forward pass verifies; greedy output
     * is the same token for token, sampled output has exactly the model's distribution. */
    int32_t speculative;      /* pagoda_spec_method; default PAGODA_SPEC_NONE */
    int32_t num_speculative_tokens; /* most drafts per sequence per step (1..16); 0: 6 for n-gram, 4 for
                                 a draft model */
    int32_t spec_ngram_min, spec_ngram_max; /* n-gram lookup: matches of at least min tokens, the longest up to max wins; 0: 2, 4 */
    const char *speculative_draft; /* PAGODA_SPEC_DRAFT: path of the draft model (same vocabulary);
                                 borrowed, the engine loads the model and owns it */
    int32_t spec_max_seqs;    /* no drafts in a step while more sequences than this run; 0: no limit
                                 (the engine verifies drafts only where its measured pass times say
                                 they raise tokens per second, which a big batch on a CPU rarely does) */
    /* appended for pipeline parallelism (tp->pp_size > 1): a step's sequences are cut into up to
       this many micro-batches (whole sequences each) that go through the stages one after the
       other, so stage k works on micro-batch m while stage k + 1 works on m - 1. 0 (default): as
       many as stages, each of at least 64 tokens (a smaller step, such as decode only, goes whole:
       every micro-batch reads the stage's weights again); 1: none; n > 1: up to n (1..64) */
    int32_t pp_micro_batches;
    /* appended: n-gram speculation also looks up the last this many tokens of finished sequences
       (agent loops, retries and templated answers repeat earlier requests; only drafts: outputs
       stay the model's, but how fast a request decodes can then depend on other requests' text,
       as with prefix caching); 0: 65536; -1: off (only the sequence itself) */
    int32_t spec_ngram_history;
    /* appended: 1: every decoding sequence is asked for num_speculative_tokens drafts each step
       (no cost model, no rest after low acceptance): a fixed k, as benchmarks and tests want it */
    int32_t spec_fixed_k;
    /* appended: 1: with every layer on the GPU and no group, the layer sums still go through NCCL
       (a group of one device): the check, on one GPU, of the code path tensor parallelism takes on
       several (a group: the sums go through NCCL anyway) */
    int32_t cuda_nccl_always;
    /* appended: a draft model (PAGODA_SPEC_DRAFT) scores only token ids below this, the LM head's
       first rows (byte-level BPE and SentencePiece vocabularies put their frequent tokens first):
       a cheaper draft step, drafts of rarer tokens never proposed; outputs unchanged (the target
       verifies). 0: the whole vocabulary */
    int32_t spec_draft_vocab;
    /* appended: 1: no drafts from the text a request's grammar forces (see PAGODA_SPEC_GRAMMAR);
       0 (default): a constrained sequence drafts that text before asking the proposer */
    int32_t spec_no_grammar_drafts;
} pagoda_engine_config;

/* How drafts are proposed (pagoda_engine_config.speculative). */
typedef enum {
    PAGODA_SPEC_NONE = 0,
    PAGODA_SPEC_NGRAM = 1, /* prompt lookup: the continuation of the last n tokens' earlier occurrence */
    PAGODA_SPEC_DRAFT = 2, /* a smaller model with the same tokenizer, k greedy tokens per step */
    PAGODA_SPEC_GRAMMAR = 3, /* only the text a request's grammar forces (see below): no proposer */
} pagoda_spec_method;
/* With any method, a sequence whose grammar forces the next bytes (a JSON key, the punctuation
 * after it: the only text the grammar allows there) gets that text's tokens as its drafts instead
 * of the proposer's; they are verified like any drafts, so outputs are unchanged. */

/* Activations of products over Hugging Face quantized weights. */
typedef enum {
    PAGODA_QUANT_ACT_CHECKPOINT = 0, /* as the checkpoint declares: 16-bit for weight-only schemes (GPTQ,
                                        AWQ, W4A16: int16 where the CPU has its kernel, AVX-512 VNNI,
                                        else float), int8 / fp8 per token for W8A8 / FP8_DYNAMIC */
    PAGODA_QUANT_ACT_FLOAT = 1,      /* always float (the reference numerics; slower for W8A8) */
    PAGODA_QUANT_ACT_INT8 = 2,       /* always int8 per token (fastest on the CPU, also for int4) */
    PAGODA_QUANT_ACT_FP8 = 3,        /* always fp8 e4m3 per token */
    PAGODA_QUANT_ACT_INT16 = 4,      /* always int16 per span of up to 128 columns (kernels/qmatmul.h):
                                        within 2^-16 of the span's largest value; exact int16 dot
                                        products on CPUs with AVX-512 VNNI (decode up to ~10% faster
                                        than float there), the float kernels elsewhere */
} pagoda_quant_act;
void pagoda_engine_config_default(pagoda_engine_config *c);

/* A worker of a tensor/pipeline-parallel group (c->tp, rank > 0): holds this rank's share of the
 * model, then runs the steps rank 0's engine broadcasts (its share of every forward pass, joining
 * the all-reduces and passing activations between stages) until that engine is destroyed. c must
 * equal rank 0's engine config. */
pagoda_status pagoda_tp_worker_run(pagoda_model *m, const pagoda_engine_config *c);
/* The group of this process's MPI job (MPI_COMM_WORLD; MPI is initialised here and finalised by
 * destroy). PAGODA_ERR_UNSUPPORTED when pagoda was built without MPI. */
pagoda_status pagoda_tp_mpi_create(pagoda_tp_group **out);
/* The same with the job's ranks cut into pp_size pipeline stages of size / pp_size ranks each
 * (stage-major); the all-reduce runs within each stage. pp_size must divide the job's size. */
pagoda_status pagoda_tp_mpi_create_pp(int32_t pp_size, pagoda_tp_group **out);
/* failed != 0: ends the whole job at once (MPI_Abort) so no rank waits for one that gave up.
 * NULL is a no-op. */
void pagoda_tp_mpi_destroy(pagoda_tp_group *g, int failed);
/* A group of size ranks that are threads of this process (one host, no MPI; with GPU layers one
 * device each, cuda_device + rank): (*groups)[r] is rank r's handle (local_rank r), NULL after the
 * last. Rank 0's goes to the engine; the caller starts a thread per other rank, each running
 * pagoda_tp_worker_run with its handle in the engine config. pp_size as pagoda_tp_mpi_create_pp. */
pagoda_status pagoda_tp_threads_create(int32_t size, int32_t pp_size, pagoda_tp_group ***groups);
/* A rank gave up (its model did not load, its engine failed): every collective of the group,
 * waiting or later, fails with PAGODA_ERR_IO, so no rank waits forever. Not a thread group: no-op. */
void pagoda_tp_threads_abort(pagoda_tp_group *g);
/* Once every rank's thread has returned (groups as create gave them; NULL: no-op). */
void pagoda_tp_threads_destroy(pagoda_tp_group **groups);
/* 1 when g is a group of threads (pagoda_tp_threads_create), 0 otherwise. */
int pagoda_tp_threads_is(const pagoda_tp_group *g);
/* What one rank of an MPI group sent and received, counted from pagoda_tp_mpi_count_comm(g, 1) on
 * (off by default: then nothing is counted or timed). Bytes are the payload this rank hands MPI
 * (an all-reduce of n floats counts 4n bytes whatever algorithm MPI runs on the wire); seconds are
 * wall time inside the MPI calls, waiting for the other ranks included. */
typedef struct {
    uint64_t n_all_reduce, all_reduce_bytes; /* the tensor-parallel sums (within this rank's stage) */
    uint64_t n_bcast, bcast_bytes;           /* rank 0's step plans and KV block copies, every rank */
    uint64_t n_send, send_bytes;             /* point to point: activations between pipeline stages, */
    uint64_t n_recv, recv_bytes;             /* and the last stage's logits rows back to rank 0 */
    double all_reduce_s, bcast_s, send_s, recv_s;
} pagoda_tp_comm_stats;
/* on != 0: count from now on (the counts so far are kept); 0: stop counting. NULL: a no-op. */
void pagoda_tp_mpi_count_comm(pagoda_tp_group *g, int on);
/* The counts so far (all zero for NULL, or when pagoda was built without MPI). */
void pagoda_tp_mpi_get_comm_stats(const pagoda_tp_group *g, pagoda_tp_comm_stats *out);

typedef struct {
    float temperature;        /* <= 0: greedy; default 1 */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* >= 1: off */
    float min_p;              /* <= 0: off */
    float repetition_penalty; /* 1: off */
    float presence_penalty;   /* 0: off (OpenAI semantics) */
    float frequency_penalty;  /* 0: off */
    int64_t seed;             /* < 0: random. Same seed -> same tokens, alone or batched */
} pagoda_sampling;

typedef enum {
    PAGODA_FINISH_NONE = 0,  /* still generating */
    PAGODA_FINISH_STOP = 1,  /* end-of-generation token or a stop string/token */
    PAGODA_FINISH_LENGTH = 2, /* max_tokens or the context limit */
    PAGODA_FINISH_CANCELLED = 3,
    PAGODA_FINISH_ERROR = 4,
} pagoda_finish_reason;

/* One event of one choice of a request. Pointers are valid only during the callback. */
typedef struct {
    uint64_t request_id;
    int32_t index;          /* which of the request's n choices */
    const char *text;       /* new text for the stream (may be empty: text that could start a
                               stop string or an incomplete UTF-8 character is held back) */
    size_t text_len;
    int32_t token;          /* the token this event adds; -1 for a finish event without one */
    float logprob;          /* log-probability of token under the model (if logprobs >= 0) */
    int32_t n_top;          /* top alternatives (request's logprobs count) */
    const int32_t *top_tokens;
    const float *top_logprobs;
    pagoda_finish_reason finish; /* != NONE: this choice is over (its last event) */
    const char *error;           /* message when finish == PAGODA_FINISH_ERROR */
    int request_done;            /* 1 on the request's very last event: no callbacks after it */
    /* usage so far (whole request): */
    int32_t n_prompt_tokens;
    int32_t n_cached_tokens;     /* prompt tokens whose KV came from the prefix cache */
    int32_t n_completion_tokens; /* tokens generated for this choice */
    int32_t stop_index;          /* finish == STOP because of a stop string: its index in the
                                    request's stop; -1 otherwise */
} pagoda_event;

typedef void (*pagoda_event_fn)(const pagoda_event *ev, void *user);

/* One entry of a request's logit bias (OpenAI semantics): bias is added to the token's logit
 * before sampling (after the model, before penalties and temperature); -100 in effect bans the
 * token, +100 in effect forces it. bias in [-100, 100]. */
typedef struct {
    int32_t token;
    float bias;
} pagoda_logit_bias;

/* Logits of one prompt position of a request that asked for them (scoring: perplexity, lm-eval,
 * the `logits` tool). The row is the model's raw output (no bias, penalty or temperature) after
 * the prompt's token at `pos`, i.e. the distribution of the token at pos + 1. Pointers are valid
 * only during the callback. */
typedef struct {
    uint64_t request_id;
    int32_t pos;            /* 0 .. n_prompt_tokens - 1 */
    int32_t n_vocab;
    const float *logits;    /* [n_vocab] */
} pagoda_logits_event;
typedef void (*pagoda_logits_fn)(const pagoda_logits_event *ev, void *user);

/* How an embedding request pools the final hidden states of its prompt (after the final norm,
 * before the LM head) into one vector. Values 0..3 equal llama.cpp's pooling_type (GGUF
 * `<arch>.pooling_type`). Append-only. */
typedef enum {
    PAGODA_POOLING_MODEL = -1, /* what the model declares; last-token when it declares none */
    PAGODA_POOLING_NONE = 0,   /* (a model's declaration only: no pooling; requests may not ask for it) */
    PAGODA_POOLING_MEAN = 1,   /* mean over every prompt position */
    PAGODA_POOLING_CLS = 2,    /* the first position */
    PAGODA_POOLING_LAST = 3,   /* the last position */
} pagoda_pooling;

/* The pooled vector of an embedding request. Pointers are valid only during the callback. */
typedef struct {
    uint64_t request_id;
    int32_t n_embd;
    const float *embedding;  /* [n_embd], L2-normalized if the request asked for it */
    int32_t n_prompt_tokens;
} pagoda_embedding_event;
typedef void (*pagoda_embedding_fn)(const pagoda_embedding_event *ev, void *user);

typedef struct {
    const char *prompt;             /* text (tokenized with the model's BOS and special tokens), or */
    size_t prompt_len;              /* 0: strlen(prompt) */
    const int32_t *prompt_tokens;   /* used when prompt == NULL */
    int32_t n_prompt_tokens;
    pagoda_sampling sampling;
    int32_t max_tokens;             /* <= 0: until the context limit */
    const char *const *stop;        /* stop strings (at most 16, each <= 256 bytes); not in the output */
    int32_t n_stop;
    const int32_t *stop_token_ids;  /* extra tokens that end generation (at most 64) */
    int32_t n_stop_token_ids;
    int ignore_eos;                 /* keep going past end-of-generation tokens */
    int skip_special;               /* drop special tokens from the text (default 1) */
    int32_t n;                      /* choices (1..64); choices share the prompt's KV blocks */
    int32_t logprobs;               /* -1: none; k >= 0: each token's logprob and the top k (k <= 20) */
    pagoda_event_fn on_event;       /* called on the engine thread; must not block for long */
    void *user;
    const pagoda_logit_bias *logit_bias; /* at most PAGODA_MAX_LOGIT_BIAS entries, token ids in
                                            [0, n_vocab), bias in [-100, 100]; a repeated token's
                                            biases add up */
    int32_t n_logit_bias;
    pagoda_logits_fn on_prompt_logits; /* non-NULL: called (engine thread, in position order, before
                                          any event of this request) with the logits of every prompt
                                          position; the request then takes no KV from the prefix
                                          cache, so every position goes through the model */
    int score_only;                 /* 1: generate nothing; the request finishes (FINISH_LENGTH, no
                                       token) once its prompt has gone through the model */
    int32_t penalty_last_n;         /* what the sampling penalties count: 0 (default): every generated
                                       token, none of the prompt (OpenAI semantics); n > 0: the last n
                                       tokens of prompt + generation (llama.cpp's repeat-last-n, as
                                       `pagoda run` counts); -1: all of prompt + generation */
    struct pagoda_grammar *grammar; /* constrained decoding (pagoda_grammar_compile, same model):
                                       every choice's text is a sentence of it; the engine holds a
                                       reference until the request is done. NULL: free text */
    /* Lazy grammar (llama.cpp's grammar triggers; with grammar only): each choice's text is free
     * until one of these strings appears in it (trigger_at_start: only as the first text after
     * leading blanks); from the trigger's first byte on, the text follows the grammar, whose
     * sentences start with the trigger. Text that does not fit the grammar from a trigger on
     * leaves the choice free. At most 8 triggers of 1 to 64 bytes. Tool calls with
     * tool_choice "auto": the tool-call format's opening text as trigger. */
    const char *const *grammar_triggers;
    int32_t n_grammar_triggers;
    int grammar_trigger_at_start;
    int32_t min_tokens;             /* 0 (default): off; n > 0: until a choice has generated n
                                       tokens, end-of-generation tokens and stop_token_ids cannot be
                                       drawn (vLLM's min_tokens; stop strings still apply). At most
                                       max_tokens when that is set */
    /* appended for embeddings: */
    pagoda_embedding_fn on_embedding; /* non-NULL: an embedding request. Its prompt goes through the
                                         model like any prompt (chunked, batched with generation), nothing
                                         is sampled or generated; once the prompt is through, this is
                                         called (engine thread) with the pooled vector, then the request
                                         finishes (FINISH_STOP, no token). n must be 1; no grammar, no
                                         prompt logits. Mean and CLS pooling take no KV from the prefix
                                         cache (every pooled position goes through the model) */
    pagoda_pooling pooling;           /* embedding requests: default PAGODA_POOLING_MODEL */
    int32_t normalize;                /* embedding requests: -1 (default) as the model declares
                                         (pagoda_embedding_info.normalize); 0: the raw pooled vector;
                                         1: L2-normalized */
    /* appended for LoRA adapters: */
    int32_t adapter;                  /* 0 (default): the base model; else an id from
                                         pagoda_engine_adapter_load. An id that is not loaded fails
                                         submit with PAGODA_ERR_INVALID */
    /* appended for speculative decoding: */
    int no_speculation;               /* 1: no drafts for this request (the output is the same) */
} pagoda_request;
#define PAGODA_MAX_LOGIT_BIAS 1024
void pagoda_request_default(pagoda_request *r);
void pagoda_sampling_default(pagoda_sampling *s);

/* Borrows m (must outlive the engine). Sizes the KV cache and all step buffers. */
pagoda_status pagoda_engine_create(pagoda_model *m, const pagoda_engine_config *c, pagoda_engine **out);
/* Stops the engine thread if running, finishes every live request with CANCELLED (events are
 * delivered), frees everything. NULL is a no-op. */
void pagoda_engine_destroy(pagoda_engine *e);

/* Validates and queues a request (everything is copied). Errors come back here, not as events:
 * PAGODA_ERR_INVALID (bad field; prompt + max_tokens over the context: the message gives the
 * lengths), PAGODA_ERR_BUSY (queue full). *id identifies the request. Thread-safe. */
pagoda_status pagoda_engine_submit(pagoda_engine *e, const pagoda_request *r, uint64_t *id);
/* ---- LoRA adapters ----
 * Requests name an adapter by id (pagoda_request.adapter); one step mixes sequences with different
 * adapters and none. Adapters apply to q/k/v/o/gate/up/down projections (not the embedding or LM
 * head), on the CPU only (an engine with GPU layers refuses them: PAGODA_ERR_UNSUPPORTED). */
typedef struct {
    int32_t id;
    int32_t rank;        /* largest rank over the adapted matrices */
    int32_t n_layers;    /* layers with at least one adapted matrix */
    char targets[96];    /* adapted projections, comma-separated: "q_proj,k_proj,v_proj,o_proj" */
    uint64_t bytes;      /* memory the adapter's matrices take (f16 where the file stores F16, else f32) */
    char source[8];      /* "peft" or "gguf" */
} pagoda_adapter_info;
/* Loads a LoRA adapter for the engine's model: path = a PEFT folder (adapter_config.json +
 * adapter_model.safetensors) or a GGUF LoRA (.gguf, llama.cpp's convert_lora_to_gguf). scale 0:
 * from the file (lora_alpha / r; alpha / sqrt(r) with use_rslora); > 0: that scale instead.
 * *id_out: the smallest free id (from 1; ids are reused after unload). PAGODA_ERR_NOMEM when
 * max_adapters are loaded; PAGODA_ERR_INVALID / FORMAT / UNSUPPORTED for an adapter that does not
 * fit the model (the message names the tensor and both shapes). Thread-safe; the step in flight
 * finishes first: requests submitted after it returns may use the id. */
pagoda_status pagoda_engine_adapter_load(pagoda_engine *e, const char *path, float scale, int32_t *id_out);
/* Unloads adapter id. Requests that use it and are queued or running finish with
 * PAGODA_FINISH_ERROR ("adapter N was unloaded") at the next step; its memory is freed once no
 * step uses it. PAGODA_ERR_INVALID for an id that is not loaded. Thread-safe. */
pagoda_status pagoda_engine_adapter_unload(pagoda_engine *e, int32_t id);
/* What adapter id holds. PAGODA_ERR_INVALID for an id that is not loaded. Thread-safe. */
pagoda_status pagoda_engine_adapter_info(pagoda_engine *e, int32_t id, pagoda_adapter_info *out);

/* Asks the engine to cancel a request: its choices finish with CANCELLED within one step and
 * their KV blocks are freed. Unknown or finished ids are ignored. Thread-safe. */
void pagoda_engine_cancel(pagoda_engine *e, uint64_t id);
/* Cancels every live request (e.g. at shutdown). Thread-safe. */
void pagoda_engine_cancel_all(pagoda_engine *e);

/* Runs the engine loop on its own thread (steps while there is work, sleeps otherwise). */
pagoda_status pagoda_engine_start(pagoda_engine *e);
/* Without start(): runs one step on the caller's thread (schedule, forward, sample, events).
 * *n_live: requests still unfinished afterwards. */
pagoda_status pagoda_engine_step(pagoda_engine *e, int32_t *n_live);

typedef struct {
    int32_t n_running, n_waiting;    /* sequences scheduled / queued */
    int32_t n_live_requests;
    int32_t kv_blocks_total, kv_blocks_used, kv_blocks_cached; /* used: referenced; cached: free
                                                                  but holding a reusable prefix */
    int32_t kv_block_size;
    int32_t max_model_len;
    uint64_t n_steps;
    uint64_t n_requests_submitted, n_requests_finished;
    uint64_t n_prompt_tokens;        /* prompt tokens of admitted sequences */
    uint64_t n_cached_tokens;        /* of those, served from the prefix cache */
    uint64_t n_computed_tokens;      /* tokens that went through the model (prefill + decode + recompute) */
    uint64_t n_generated_tokens;
    uint64_t n_preemptions;
    int32_t n_running_requests;      /* requests with a sequence in the running batch */
    int32_t n_waiting_requests;      /* live requests with none running (queued or preempted) */
    double step_seconds;             /* wall time in steps that ran a forward pass, */
    double forward_seconds;          /* of which in the forward pass; the rest is host work
                                        (scheduling, sampling, detokenization, events) */
    int32_t n_threads;               /* kernel and sampling threads this engine runs */
    uint64_t kv_bytes;               /* memory of its KV blocks */
    /* speculative decoding (0 without): */
    uint64_t n_spec_drafts;          /* verifications: sequence-steps that carried drafts */
    uint64_t n_spec_proposed;        /* draft tokens verified */
    uint64_t n_spec_accepted;        /* of those, accepted (mean accepted length = 1 + accepted / drafts) */
} pagoda_engine_stats;
void pagoda_engine_get_stats(pagoda_engine *e, pagoda_engine_stats *s); /* thread-safe */

/* ===== Added for the command-line tools (run, bench, logits, tokenize): append-only ===== */

/* Loads only the tokenizer and chat template of path (a .gguf, vocabulary-only ones too, or a
 * Hugging Face folder with tokenizer.json): a model without weights, for the text functions
 * (pagoda_tokenize, pagoda_token_piece, pagoda_chat_render, ...). pagoda_engine_create refuses
 * it; pagoda_model_get_info gives its vocabulary facts (arch NULL, n_params 0). */
pagoda_status pagoda_model_load_vocab(const char *path, pagoda_model **out);

/* Token id's piece as the vocabulary stores it (byte-level BPE's "Ġ", SentencePiece's "▁": not
 * decoded), *len bytes, owned by the model; NULL (and *len 0) if out of range or no tokenizer. */
const char *pagoda_token_piece(const pagoda_model *m, int32_t id, size_t *len);

/* Shape facts of a loaded model, for reports (`pagoda bench`) and tools that run token ids. */
typedef struct {
    int32_t n_layer, n_embd, n_head, n_head_kv, n_ff; /* 0 for a model without weights */
    pagoda_dtype weight_dtype; /* the most common type of the weight matrices (names the quantization) */
    int32_t eos_config;        /* end-of-sequence id from the model's own config (GGUF metadata or
                                  config.json), also for models without a tokenizer; -1 if none */
    int has_tokenizer;
    int has_weights;           /* 0: loaded with pagoda_model_load_vocab */
} pagoda_model_facts;
void pagoda_model_get_facts(const pagoda_model *m, pagoda_model_facts *f);

/* Reads every page of the (mmapped) weights once, so that a first measurement does not pay
 * for page faults. progress (may be NULL) is called as bytes are read, ending with done == total. */
void pagoda_model_prefault(const pagoda_model *m, void (*progress)(uint64_t done, uint64_t total, void *user),
                           void *user);

/* "f32", "q4_0", ... (GGML's names); "?" for an id that is not a type. */
const char *pagoda_dtype_name(pagoda_dtype t);

typedef struct {
    const char *cpu_isa;    /* SIMD level the CPU kernels use: "avx512", "avx2" or "scalar" */
    int32_t n_cpu_threads;  /* kernel threads n_threads = 0 stands for (the cores) */
    /* appended: what this build can use beyond the CPU */
    int32_t cuda;           /* 1: built with the CUDA backend */
    int32_t n_cuda_devices; /* CUDA devices that answer (0: none, or built without CUDA) */
    int32_t mpi;            /* 1: built with MPI (tensor / pipeline parallelism across processes) */
    int32_t nccl_version;   /* NCCL's version code (e.g. 22809) where libnccl.so.2 loads (GPU tensor
                               parallelism; loaded at run time), else 0 and nccl_why says why */
    char nccl_why[192];
} pagoda_system_info;
void pagoda_system_get_info(pagoda_system_info *s);

/* Memory read bandwidth: streams a buffer of `bytes` (much larger than the caches, e.g. 512 MiB)
 * with n_threads threads (<= 0: all) for about `seconds` (at least 3 passes); the best pass in
 * GB/s (1e9 bytes/s), or 0 if the buffer cannot be allocated. The ceiling for memory-bound
 * decoding: every weight byte is read once per token. */
double pagoda_membw_read_gbs(size_t bytes, int32_t n_threads, double seconds);

/* ===== Constrained decoding (structured output): append-only ===== */

/* A grammar compiled for one model's vocabulary, shared (reference-counted, immutable) by every
 * request that uses it. Compile on a thread of your own (it may take milliseconds for a large
 * schema); bounded in time and memory for hostile input. */
typedef struct pagoda_grammar pagoda_grammar;
typedef enum {
    PAGODA_GRAMMAR_JSON_SCHEMA = 1, /* text: a JSON Schema (draft 2020-12 keywords; a keyword that
                                       cannot be honoured is an error naming it) */
    PAGODA_GRAMMAR_JSON_OBJECT = 2, /* any JSON object (OpenAI json_object mode); text ignored */
    PAGODA_GRAMMAR_REGEX = 3,       /* text: a regular expression (ECMAScript subset), whole output */
    PAGODA_GRAMMAR_CHOICE = 4,      /* text: a JSON array of strings, the output is one of them */
    PAGODA_GRAMMAR_GBNF = 5,        /* text: llama.cpp's GBNF (start rule `root`) */
} pagoda_grammar_kind;
typedef struct {
    pagoda_grammar_kind kind;
    const char *text;
    size_t len;               /* 0: strlen(text) */
    int whitespace_flexible;  /* JSON kinds: 0 (default) compact JSON (",", ":" and no other
                                 whitespace); 1: JSON whitespace allowed between tokens */
    const char *prefix;       /* literal text before the grammar's sentence (NULL: none), e.g. a
                                 tool-call opening tag; suffix likewise after it */
    const char *suffix;
    /* the wrapped sentence (prefix, grammar, suffix) repeated: min_repeat..max_repeat times with
       separator (literal text, NULL: none) between; both 0 (default): exactly once; max_repeat
       < 0: unbounded. Parallel tool calls are one block per call. */
    int32_t min_repeat, max_repeat;
    const char *separator;
    int strict;               /* JSON kinds: 1: an object schema that lists `properties` and
                                 has no additionalProperties / patternProperties allows no other
                                 properties but required names it does not list (OpenAI's strict
                                 mode, XGrammar's default; {"type":"object"} alone stays any
                                 object); 0 (default): JSON Schema's rule, it allows any */
} pagoda_grammar_spec;
/* PAGODA_ERR_INVALID with a message naming the problem (unsupported keyword, bad pattern, line and
 * column of a GBNF error, unsatisfiable grammar, limits passed). m needs a tokenizer. */
pagoda_status pagoda_grammar_compile(pagoda_model *m, const pagoda_grammar_spec *s, pagoda_grammar **out);
pagoda_grammar *pagoda_grammar_ref(pagoda_grammar *g); /* one more reference; returns g */
void pagoda_grammar_unref(pagoda_grammar *g);          /* frees at the last one; NULL is a no-op */

/* A matcher walks one output through a grammar (the engine makes its own per choice; this one is
 * for tools, benchmarks and callers that sample themselves). Masks are bitsets over the model's
 * vocabulary: bit t of word t/32 set = token t allowed; mask has (n_vocab + 31) / 32 words. */
typedef struct pagoda_grammar_matcher pagoda_grammar_matcher;
pagoda_status pagoda_grammar_matcher_create(pagoda_grammar *g, pagoda_grammar_matcher **out);
void pagoda_grammar_matcher_destroy(pagoda_grammar_matcher *m);
/* Number of tokens allowed (0: nothing can follow). */
int32_t pagoda_grammar_matcher_mask(pagoda_grammar_matcher *m, uint32_t *mask);
/* PAGODA_ERR_INVALID if the token is not allowed (the matcher is unchanged). */
pagoda_status pagoda_grammar_matcher_accept(pagoda_grammar_matcher *m, int32_t token);
pagoda_status pagoda_grammar_matcher_rollback(pagoda_grammar_matcher *m, int32_t n_tokens);
int pagoda_grammar_matcher_can_end(const pagoda_grammar_matcher *m); /* 1: eos allowed now */
int pagoda_grammar_matcher_is_done(const pagoda_grammar_matcher *m); /* 1: only the end can follow */
/* Why the last mask may be incomplete ("" when exact): work refused on a hostile grammar. */
const char *pagoda_grammar_matcher_error(const pagoda_grammar_matcher *m);
/* Jump-forward: the text the grammar forces next (the only bytes it allows, up to a choice or a
 * possible end), at most cap bytes into buf (not NUL-terminated); the matcher is unchanged. A
 * caller may tokenize it and accept those tokens without sampling. */
size_t pagoda_grammar_matcher_forced(pagoda_grammar_matcher *m, char *buf, size_t cap);

/* ===== Embeddings: append-only ===== */

/* What a model declares for embeddings: GGUF `<arch>.pooling_type`; for a Hugging Face folder
 * packaged by sentence-transformers, modules.json with its Pooling module's config
 * (pooling_mode_lasttoken / mean_tokens / cls_token) and whether a Normalize module follows. */
typedef struct {
    int32_t n_embd;          /* length of the pooled vectors (0: a model without weights) */
    pagoda_pooling pooling;  /* the declared pooling; PAGODA_POOLING_NONE when none is declared */
    int normalize;           /* 1: vectors are L2-normalized (a Normalize module; GGUF embedding models
                                and models that declare nothing: 1, as llama.cpp and OpenAI do) */
    int is_embedding_model;  /* a sentence-transformers package, a GGUF with a pooling type, or a model
                                without an LM head */
    int has_lm_head;         /* 0: the checkpoint has no lm_head (and does not tie it to the embedding):
                                it can only embed; generation requests fail with PAGODA_ERR_INVALID */
} pagoda_embedding_info;
void pagoda_model_get_embedding_info(const pagoda_model *m, pagoda_embedding_info *info);

/* Drops the engine's prefix cache (SGLang's /flush_cache, vLLM's /reset_prefix_cache): no later
 * request reuses a prompt prefix computed before; live requests keep their KV blocks and go on
 * unchanged. Thread-safe: with the engine on its own thread (pagoda_engine_start) the stepping
 * thread does it between two steps and this call waits for it. *n_flushed (may be NULL): how
 * many cached blocks were forgotten. */
pagoda_status pagoda_engine_flush_prefix_cache(pagoda_engine *e, int32_t *n_flushed);

/* ===== Version of the library linked at run time ===== */

/* The version of the library linked at run time ("0.1.0"), which a program built against another
 * header may compare with PAGODA_VERSION_STRING; and the same as one number (PAGODA_VERSION). */
const char *pagoda_version_string(void);
int pagoda_version_number(void);

#ifdef __cplusplus
}
#endif
#endif
