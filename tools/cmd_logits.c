/* pagoda logits -m MODEL -i IDS.safetensors -o OUT.safetensors
 * Reads input_ids (int32 [B,T]) and writes logits (f32 [B,T,V]); every row of the batch is an
 * independent sequence from position 0, and all rows run together in one packed batch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "format/safetensors.h"
#include "kernels/kernels.h"

static void usage(void) {
    fprintf(stderr, "usage: pagoda logits -m MODEL -i IDS.safetensors -o OUT.safetensors [-t THREADS]\n"
                    "  IDS.safetensors holds input_ids (int32 [B,T]); OUT gets logits (f32 [B,T,V]).\n");
}

int cmd_logits(int argc, char **argv) {
    const char *model = NULL, *in = NULL, *out = NULL;
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!v) break;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v, i++;
        else if (!strcmp(a, "-i")) in = v, i++;
        else if (!strcmp(a, "-o")) out = v, i++;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (cli_int(a, v, 0, 1024, &threads)) return 2; i++; }
        else { fprintf(stderr, "pagoda logits: unknown option '%s'\n", a); return usage(), 2; }
    }
    if (!model || !in || !out) return usage(), 2;
    kcpu_set_threads((int)threads);

    st_model *ids_file = NULL;
    if (st_open(in, &ids_file)) return cli_error(in);
    const st_tensor *ids = st_find(ids_file, "input_ids");
    if (!ids || ids->dtype != PAGODA_DTYPE_I32 || ids->n_dims != 2 || ids->shape[0] <= 0 || ids->shape[1] <= 0 ||
        ids->shape[0] * ids->shape[1] > (1 << 20)) {
        fprintf(stderr, "pagoda: %s: needs tensor input_ids of type I32 and shape [B,T] (B*T <= 1M)\n", in);
        st_close(ids_file);
        return 1;
    }
    int32_t B = (int32_t)ids->shape[0], T = (int32_t)ids->shape[1];
    int rc = 1;
    pg_model *m = NULL;
    pg_forward *fwd = NULL;
    pg_kv *kv = NULL;
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)B * T), *seq_start = malloc(sizeof(int32_t) * (B + 1));
    int32_t *pos0 = calloc((size_t)B, sizeof(int32_t)), *nblk = malloc(sizeof(int32_t) * B);
    int32_t *blocks = NULL;
    const int32_t **tables = malloc(sizeof(int32_t *) * B);
    float *logits = NULL;
    if (!tokens || !seq_start || !pos0 || !nblk || !tables) goto done;
    memcpy(tokens, ids->data, sizeof(int32_t) * (size_t)B * T);
    if (model_load(model, &m)) { cli_error(""); goto done; }
    const int32_t V = m->cfg.n_vocab, bpr = (T + CLI_BLOCK_SIZE - 1) / CLI_BLOCK_SIZE;
    blocks = malloc(sizeof(int32_t) * (size_t)B * bpr);
    logits = malloc(sizeof(float) * (size_t)B * T * V);
    if (!blocks || !logits) { fprintf(stderr, "pagoda: out of memory\n"); goto done; }
    for (int32_t b = 0; b < B; b++) {
        seq_start[b] = b * T;
        nblk[b] = bpr;
        tables[b] = blocks + (size_t)b * bpr;
        for (int32_t j = 0; j < bpr; j++) blocks[(size_t)b * bpr + j] = b * bpr + j;
    }
    seq_start[B] = B * T;
    if (forward_create(m, B * T, &fwd) ||
        forward_kv_create(fwd, B * bpr, CLI_BLOCK_SIZE, PAGODA_DTYPE_F32, &kv)) {
        cli_error("");
        goto done;
    }
    uint8_t *mask = malloc((size_t)B * T);
    if (!mask) goto done;
    memset(mask, 1, (size_t)B * T);
    pg_batch batch = {.n_tok = B * T, .tokens = tokens, .n_seq = B, .seq_start = seq_start, .seq_pos0 = pos0,
                      .block_tables = tables, .n_blocks = nblk, .logits_mask = mask};
    pagoda_status st = forward_run(fwd, &batch, kv, logits);
    free(mask);
    if (st) { cli_error("forward"); goto done; }
    int64_t shape[3] = {B, T, V};
    st_write_tensor t = {.name = "logits", .dtype = PAGODA_DTYPE_F32, .n_dims = 3, .shape = shape, .data = logits};
    if (st_write(out, &t, 1)) { cli_error(out); goto done; }
    rc = 0;
done:
    free(tokens), free(seq_start), free(pos0), free(nblk), free(tables), free(blocks), free(logits);
    forward_kv_destroy(kv);
    forward_destroy(fwd);
    model_free(m);
    st_close(ids_file);
    return rc;
}
