/* CLI glue shared by subcommands: option parsing helpers, the device options, and loading a
 * model with a progress line. The subcommands that run models drive the public engine API
 * (include/pagoda.h) only. */
#ifndef PG_TOOLS_CLI_COMMON_H
#define PG_TOOLS_CLI_COMMON_H

#include <stdint.h>

#include "pagoda.h"

/* Where the model runs: --device cpu|cuda, --gpu-layers N, --gpu-memory-utilization F. */
typedef struct {
    int cuda;            /* --device cuda */
    long gpu_layers;     /* -1: all (the default with --device cuda) */
    float gpu_mem_util;  /* 0: the engine's default (0.9) */
    int cuda_device;     /* --cuda-device N */
    int no_graphs;       /* --cuda-graphs off */
    int no_repack;       /* --cuda-repack off */
    int nccl_always;     /* --cuda-nccl on */
    int qgemm;           /* --cuda-qgemm half|dequant|mma: 0, 1, 2 */
    int kv_type;         /* --kv-type / --kv-cache-dtype: a pagoda_dtype of the KV cache */
    int kv_type_given;   /* one of them was given (else: f16 on the GPU, f32 on the CPU) */
    int max_batch_given; /* --max-batch-tokens was given (else: 2048 on the GPU) */
    int quant_act;       /* --quant-activations: pagoda_quant_act */
    int spec;            /* --speculative: pagoda_spec_method */
    const char *spec_draft; /* its draft model (borrowed from argv) */
    long spec_k, spec_ngram_min, spec_ngram_max, spec_max_seqs; /* 0: the engine's defaults */
    long spec_ngram_history;
    long spec_draft_vocab; /* --spec-draft-vocab N: the draft's head scores token ids below N (0: all) */
    int spec_no_grammar_drafts; /* --spec-grammar-drafts off */
    int spec_ngram_history_given;
    int spec_fixed_k; /* --spec-k fixed */
} cli_device;
#define CLI_DEVICE_HELP                                                                                 \
    "  --device cpu|cuda    where the model runs (default cpu)\n"                                      \
    "  --gpu-layers N       CPU/GPU hybrid: the first N layers on the GPU, the rest on the CPU; also\n"  \
    "                       llama.cpp's -ngl / --n-gpu-layers (0: the CPU; N > 0 implies --device cuda)\n" \
    "  --gpu-memory-utilization F  share of GPU memory for weights + KV cache (default 0.9)\n"             \
    "  --cuda-device N      the CUDA device (default 0)\n"                                                   \
    "  --cuda-qgemm half|dequant|mma  quantized products over a few tokens: cuBLAS on a half copy (default;\n" \
    "                       2 bytes/weight more), dequantized per product, or the tensor-core kernel\n"       \
    "  --cuda-graphs on|off replay decode steps from CUDA graphs (default on)\n"                              \
    "  --cuda-repack on|off repacked Q4_0/Q8_0 copies for the decode matvec (default on)\n"                    \
    "  --cuda-nccl on|off   on: the layer sums go through NCCL on one GPU too (a group of one: checks the\n"  \
    "                       path --tensor-parallel-size takes on GPUs, which always uses NCCL; default off)\n" \
    "  --quant-activations checkpoint|float|int8|fp8|int16  activations of GPTQ/AWQ/compressed-tensors\n"   \
    "                       products: as the checkpoint declares (default; 16-bit ones as int16 where the\n"  \
    "                       CPU has AVX-512 VNNI), or always float / int8 / fp8 per token / int16 per span\n" \
    CLI_KV_HELP CLI_SPEC_HELP
#define CLI_SPEC_HELP                                                                                   \
    "  --speculative none|ngram|grammar|draft:PATH  speculative decoding: drafts from prompt lookup\n"   \
    "                       (n-gram) or from a draft model with the same tokenizer (also -md /\n"        \
    "                       --model-draft PATH); with any of them, a request's grammar drafts the text\n" \
    "                       it forces (JSON keys of a schema), and `grammar` drafts only that; outputs\n" \
    "                       are the same, decode is faster where drafts are accepted\n"                  \
    "  --num-speculative-tokens N  most drafts per sequence per step (1..16; also --draft-max; default\n" \
    "                       6 for n-gram, 4 for a draft model; fewer where drafts are rejected)\n"        \
    "  --spec-ngram-min N, --spec-ngram-max N  n-gram lookup: matches of at least min tokens, the\n"     \
    "                       longest up to max wins (default 2..4)\n"                                    \
    "  --spec-ngram-history N  n-gram lookup also in the last N tokens of finished requests (default\n" \
    "                       65536; 0: off)\n"                                                           \
    "  --spec-draft-vocab N a draft model scores only token ids below N (its LM head's first rows;\n"   \
    "                       a cheaper draft step; outputs unchanged; default: all)\n"                   \
    "  --spec-grammar-drafts on|off  a structured-output request drafts the text its grammar forces\n" \
    "                       before the proposer is asked (default on)\n"                               \
    "  --spec-k cost|fixed  drafts per step from measured pass costs (default), or always\n"           \
    "                       --num-speculative-tokens for every sequence (no rests)\n"                   \
    "  --spec-max-seqs N    no drafts while more than N sequences run (default: no limit; drafts are\n" \
    "                       verified only where measured pass times say they pay)\n"
#define CLI_KV_HELP                                                                                     \
    "  --kv-type f32|f16|int8|fp8  KV cache element type (default f32, f16 on the GPU). f16 holds twice\n"   \
    "                       the tokens of f32; int8 (also q8) and fp8 (e4m3) a byte per value plus a\n"    \
    "                       scale per token and head, about 3.8x f32's tokens (CPU only)\n"                \
    "  --kv-cache-dtype auto|f16|f32|int8|fp8|fp8_e4m3  vLLM's spelling of --kv-type (fp8: e4m3)\n"
void cli_device_default(cli_device *d);
/* --quant-activations VAL -> pagoda_quant_act; prints the error and returns 1 if VAL is bad. */
int cli_quant_act(const char *opt, const char *val, int *out);
/* 1 if opt is one of the device options (then *bad says whether val was bad), else 0. */
int cli_device_option(const char *opt, const char *val, cli_device *d, int *bad);
/* The engine's n_gpu_layers for these options (0: CPU). */
int32_t cli_device_gpu_layers(const cli_device *d);
/* Puts the device options into an engine config (after the caller's own settings): GPU layers,
 * memory share, and the GPU defaults (f16 KV cache, 2048-token steps) where not given. */
void cli_device_apply(const cli_device *d, pagoda_engine_config *ec);

/* --tensor-parallel-size N: N > 1 joins the MPI job's group, which must have N processes
 * (*out = NULL for N <= 1). Prints the error and returns non-zero on failure. */
#define CLI_TP_HELP                                                                                     \
    "  --tensor-parallel-size N  split the model over N ranks: the processes of an MPI job (under\n"  \
    "                       mpirun -np N), else N threads of this process; N must divide the heads,\n"  \
    "                       KV heads and FFN width\n"
int cli_tp_begin(long size, pagoda_tp_group **out);
/* --tensor-parallel-size TP with --pipeline-parallel-size PP: TP * PP > 1 joins the MPI job's
 * group under an MPI launcher (it must have TP * PP processes), else makes the ranks threads of this
 * process (cli_tp_spawn starts them); stage-major (rank = stage * TP + tp_rank). */
#define CLI_PP_HELP                                                                                     \
    "  --pipeline-parallel-size N, -pp N  cut the layers into N stages, one after the other, over the\n"  \
    "                       ranks (CPU; mpirun -np TP*N or TP*N threads, rank = stage*TP + tp rank)\n"  \
    "  --pp-micro-batches M  a step's sequences in up to M micro-batches so stages overlap (default:\n"    \
    "                       N, each of at least 64 tokens; 1: none)\n"
int cli_parallel_begin(long tp_size, long pp_size, pagoda_tp_group **out);
/* Runs the worker of rank > 0 with the engine config rank 0 uses; returns the exit code. */
int cli_tp_worker(pagoda_model *m, const pagoda_engine_config *ec);
/* Leaves the group: rc != 0 ends the whole job (no rank waits on one that gave up). */
void cli_tp_end(pagoda_tp_group *g, int rc);
/* Not under mpirun, cli_parallel_begin makes the ranks threads of this process: rank 0 (the caller,
 * before it makes its engine) starts the others here, each loading model_path and running its share
 * of every step with ec (its own group handle in it); cli_tp_end joins them. A no-op for an MPI
 * group. Nonzero: a thread could not start (the group is aborted). */
int cli_tp_spawn(pagoda_tp_group *g, const char *model_path, const pagoda_engine_config *ec);
/* --comm-stats: counts the group's MPI traffic from here on (NULL: nothing to count) ... */
#define CLI_COMM_STATS_HELP                                                                              \
    "  --comm-stats            print each rank's MPI traffic at the end (all-reduce, broadcast, send and\n" \
    "                       receive: calls, payload bytes, seconds inside MPI) on stderr\n"
void cli_comm_stats_begin(pagoda_tp_group *g);
/* ... and prints this rank's counts as one line of key=value pairs on stderr. */
void cli_comm_stats_print(const pagoda_tp_group *g);

/* pagoda_model_load + reading every weight page once with a progress line on a terminal and a
 * "loaded" summary on stderr. Prints the error and returns non-zero on failure. */
int cli_model_load(const char *path, pagoda_model **out);

/* "1,2,3" or "1 2 3" -> ids (malloc'd). Returns 0 on success, prints an error otherwise. */
int cli_parse_ids(const char *str, int32_t **ids, int32_t *n);
/* Strict integer / float option parsing; prints an error naming the option on failure. */
int cli_int(const char *opt, const char *val, long lo, long hi, long *out);
int cli_float(const char *opt, const char *val, float *out);
/* A float in [lo, hi]. */
int cli_float_in(const char *opt, const char *val, float lo, float hi, float *out);
/* The sampling options of the benchmarks, with the same ranges: --temperature [0, 2], --top-p (0, 1]. */
int cli_temperature(const char *opt, const char *val, float *out);
int cli_top_p(const char *opt, const char *val, float *out);
/* A byte size: "1048576", "512K", "256M", "2G" (binary units). */
int cli_size(const char *opt, const char *val, uint64_t *out);
/* The KV cache's element type: "f32" | "f16" | "int8" (or "q8") | "fp8" (or "fp8_e4m3") ->
 * PAGODA_DTYPE_F32 / _F16 / _KV_INT8 / _KV_FP8_E4M3. */
int cli_kv_type(const char *opt, const char *val, int *out);
/* vLLM's --kv-cache-dtype: also "auto" (*given stays 0: the default), float16/half/fp16,
 * float32/float/fp32; anything else (bfloat16, fp8_e5m2, ...) is "not available". */
int cli_kv_cache_dtype(const char *opt, const char *val, int *out, int *given);
/* The median of n values (sorts them). */
double cli_median(double *v, long n);
/* Options a subcommand knows are read from its usage text: every "-x" / "--word" token in it
 * (so the help and the parser's typo check cannot drift apart). */
int cli_option_listed(const char *opt, const char *usage_text);
/* "<cmd>: unknown option '--temprature' (did you mean --temperature?)" on stderr, the suggestion
 * being the closest listed option by edit distance (none when nothing is close); for a listed
 * option (one that lacks its value) "<cmd>: option '-m' needs a value". Returns 2. */
int cli_unknown_option(const char *cmd, const char *opt, const char *usage_text);

/* Prints "pagoda: <context>: <pagoda_last_error()>" and returns 1. */
int cli_error(const char *context);

/* `pagoda --version`: the version, then what this build can use (CPU kernels, CUDA devices, MPI, NCCL). */
void cli_print_version(void);

#endif
