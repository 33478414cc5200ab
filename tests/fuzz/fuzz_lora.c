/* libFuzzer target: LoRA adapter parsing (model/lora.c) over a fixed tiny llama base (2 layers,
 * 64 wide, 4 heads of 16, 2 KV heads, 128 FFN: the fixtures' base). First byte: bit 0 selects
 * the format (0: GGUF LoRA = the rest; 1: PEFT = adapter_config.json text, a NUL, then
 * adapter_model.safetensors), bit 1 the base's Q/K row order (interleaved or not). Every loaded
 * matrix is read whole, so ASan catches a size the loader got wrong. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/lora.h"

static volatile float g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    pg_model_config c;
    memset(&c, 0, sizeof c);
    c.n_layer = 2, c.n_embd = 64, c.n_head = 4, c.n_head_kv = 2, c.head_dim = 16, c.n_ff = 128, c.gated_ffn = true;
    bool peft = data[0] & 1, interleaved = data[0] & 2;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    char *cfg = NULL;
    if (peft) {
        const uint8_t *nul = memchr(p, 0, n);
        if (!nul) return 0;
        size_t k = (size_t)(nul - p);
        if (!(cfg = malloc(k + 1))) return 0;
        memcpy(cfg, p, k + 1);
        p += k + 1, n -= k + 1;
    }
    /* the parsers read from a copy of exactly n bytes */
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        free(cfg);
        return 0;
    }
    memcpy(buf, p, n);
    pg_lora *a = NULL;
    if (lora_load_memory(&c, interleaved, cfg, buf, n, !peft, 0, &a) == PAGODA_OK) {
        float acc = 0;
        for (int32_t l = 0; l < a->n_layer; l++)
            for (int t = 0; t < LORA_N_TARGETS; t++) {
                const pg_lora_mat *m = lora_mat(a, l, (pg_lora_target)t);
                if (!m->rank) continue;
                if (m->rank > a->max_rank || m->n_in <= 0 || m->n_out <= 0) __builtin_trap();
                acc += m->A[0] + m->A[m->rank * m->n_in - 1] + m->Bt[0] + m->Bt[m->rank * m->n_out - 1] + m->scale;
            }
        g_sink = acc;
        lora_free(a);
    }
    free(buf);
    free(cfg);
    return 0;
}
