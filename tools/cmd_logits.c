/* pagoda logits -m MODEL -i IDS.safetensors -o OUT.safetensors
 * Reads input_ids (int32 [B,T]) and writes logits (f32 [B,T,V]); every row of the batch is an
 * independent sequence from position 0. Through the engine: one scoring request per row (raw
 * logits of every prompt position, no prefix-cache reuse), the engine sized so that one step
 * takes every row, i.e. all rows run together in one packed batch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "tensor_file.h"

static const char k_usage[] =
            "usage: pagoda logits -m MODEL -i IDS.safetensors -o OUT.safetensors [-t THREADS] [--kv-type T]\n"
                    "  -m, --model PATH  -i IDS  -o OUT  -t, --threads N\n"
                    "  --kv-type f32|f16|int8|fp8  KV cache element type (default f32)\n"
                    "  --quant-activations checkpoint|float|int8|fp8|int16  (GPTQ/AWQ/compressed-tensors weights)\n"
                    "  --tensor-parallel-size N  split the model over N ranks: the processes of an MPI job (under\n"
                    "                       mpirun -np N) or N threads of this process; CPU, or GPUs with --device\n"
                    "                       cuda (one per rank, sums through NCCL); N must divide the heads, KV\n"
                    "                       heads and FFN width\n"
                    CLI_PP_HELP
                    CLI_COMM_STATS_HELP
                    "  --device cpu|cuda, --gpu-layers N, --cuda-device N, --cuda-graphs on|off, --cuda-nccl on|off:\n"
                    "                       where the model runs (see pagoda run --help; the KV cache stays f32)\n"
                    "  IDS.safetensors holds input_ids (int32 [B,T]); OUT gets logits (f32 [B,T,V]).\n";

static void usage(void) { fputs(k_usage, stderr); }

typedef struct {
    float *out;        /* [T][V] of this row */
    int32_t T, V;
    int done, failed;
    char error[256];
} row_state;

static void on_logits(const pagoda_logits_event *ev, void *user) {
    row_state *r = user;
    if (ev->pos >= 0 && ev->pos < r->T && ev->n_vocab == r->V)
        memcpy(r->out + (size_t)ev->pos * (size_t)r->V, ev->logits, sizeof(float) * (size_t)r->V);
}

static void on_event(const pagoda_event *ev, void *user) {
    row_state *r = user;
    if (ev->finish == PAGODA_FINISH_ERROR || ev->finish == PAGODA_FINISH_CANCELLED) {
        r->failed = 1;
        snprintf(r->error, sizeof r->error, "%s", ev->error ? ev->error : "cancelled");
    }
    if (ev->request_done) r->done = 1;
}

int cmd_logits(int argc, char **argv) {
    const char *model = NULL, *in = NULL, *out = NULL;
    long threads = 0, tp_size = 1, pp_size = 1, pp_micro = 0;
    int kv_type = PAGODA_DTYPE_F32;
    int quant_act = 0, comm_stats = 0;
    cli_device dev;
    cli_device_default(&dev);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!strcmp(a, "--comm-stats")) { comm_stats = 1; continue; }
        if (!v) return cli_unknown_option("pagoda logits", a, k_usage);
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v, i++;
        else if (!strcmp(a, "-i")) in = v, i++;
        else if (!strcmp(a, "-o")) out = v, i++;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (cli_int(a, v, 0, 1024, &threads)) return 2; i++; }
        else if (!strcmp(a, "--tensor-parallel-size")) { if (cli_int(a, v, 1, 64, &tp_size)) return 2; i++; }
        else if (!strcmp(a, "--pipeline-parallel-size") || !strcmp(a, "-pp")) {
            if (cli_int(a, v, 1, 64, &pp_size)) return 2;
            i++;
        } else if (!strcmp(a, "--pp-micro-batches")) {
            if (cli_int(a, v, 1, 64, &pp_micro)) return 2;
            i++;
        }
        else if (!strcmp(a, "--kv-type")) { if (cli_kv_type(a, v, &kv_type)) return 2; i++; }
        else if (!strcmp(a, "--quant-activations")) { if (cli_quant_act(a, v, &quant_act)) return 2; i++; }
        else {
            int bad = 0;
            if (!cli_device_option(a, v, &dev, &bad)) return cli_unknown_option("pagoda logits", a, k_usage);
            if (bad) return 2;
            i++;
        }
    }
    if (!model || !in || !out) return usage(), 2;

    int32_t *tokens = NULL;
    int64_t rows, cols;
    if (tensor_file_read_i32_2d(in, "input_ids", 1 << 20, &tokens, &rows, &cols)) return 1;
    const int32_t B = (int32_t)rows, T = (int32_t)cols;
    int rc = 1;
    pagoda_tp_group *tp = NULL;
    pagoda_model *m = NULL;
    pagoda_engine *e = NULL;
    float *logits = NULL;
    row_state *rs = calloc((size_t)B, sizeof *rs);
    if (!rs) goto done;
    if (cli_parallel_begin(tp_size, pp_size, &tp)) goto done;
    if (comm_stats) cli_comm_stats_begin(tp);
    if (pagoda_model_load(model, &m)) { cli_error(""); goto done; }
    pagoda_model_info info;
    pagoda_model_get_info(m, &info);
    const int32_t V = info.n_vocab;
    if (!(logits = malloc(sizeof(float) * (size_t)B * T * V))) { fprintf(stderr, "pagoda: out of memory\n"); goto done; }

    /* one step for all rows: B sequences, B*T tokens (up to the engine's limits; beyond them the
     * rows run in several steps); nothing shared between rows, nothing generated */
    pagoda_engine_config ec;
    pagoda_engine_config_default(&ec);
    cli_device_apply(&dev, &ec); /* --device cuda ...; the KV type and step size are logits' own */
    ec.n_threads = (int32_t)threads;
    ec.max_batch_tokens = (int64_t)B * T < 65536 ? B * T : 65536;
    ec.max_seqs = B < 4096 ? B : 4096;
    ec.max_model_len = T;
    ec.prefix_caching = 0;
    ec.kv_dtype = (pagoda_dtype)kv_type;
    ec.quant_activations = quant_act;
    ec.tp = tp;
    ec.pp_micro_batches = (int32_t)pp_micro;
    if (cli_tp_spawn(tp, model, &ec)) goto done; /* ranks that are threads (no mpirun) */
    if (tp && tp->rank > 0) { /* the engine runs on rank 0; this rank runs its share of each step */
        rc = cli_tp_worker(m, &ec);
        goto done;
    }
    if (pagoda_engine_create(m, &ec, &e)) { cli_error("engine"); goto done; }
    for (int32_t b = 0; b < B; b++) {
        rs[b] = (row_state){.out = logits + (size_t)b * T * V, .T = T, .V = V};
        pagoda_request rq;
        pagoda_request_default(&rq);
        rq.prompt_tokens = tokens + (size_t)b * T;
        rq.n_prompt_tokens = T;
        rq.score_only = 1;
        rq.on_prompt_logits = on_logits;
        rq.on_event = on_event;
        rq.user = &rs[b];
        if (pagoda_engine_submit(e, &rq, NULL)) {
            char ctx[64];
            snprintf(ctx, sizeof ctx, "input_ids row %d", b);
            cli_error(ctx);
            goto done;
        }
    }
    for (int32_t n_live = 1; n_live > 0;)
        if (pagoda_engine_step(e, &n_live)) { cli_error("engine"); goto done; }
    for (int32_t b = 0; b < B; b++)
        if (rs[b].failed || !rs[b].done) {
            fprintf(stderr, "pagoda: forward: %s\n", rs[b].failed ? rs[b].error : "a row did not finish");
            goto done;
        }
    int64_t shape[3] = {B, T, V};
    if (tensor_file_write_f32(out, "logits", shape, 3, logits)) goto done;
    rc = 0;
done:
    pagoda_engine_destroy(e);
    pagoda_model_free(m);
    if (comm_stats && rc == 0) cli_comm_stats_print(tp);
    cli_tp_end(tp, rc);
    free(tokens), free(logits), free(rs);
    return rc;
}
