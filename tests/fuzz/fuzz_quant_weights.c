/* libFuzzer target: a quantized checkpoint's quantization_config and the tensors of one linear
 * module (GPTQ / AWQ / compressed-tensors) through quant_config_parse and qweight_load.
 * Input: two shape bytes b0 b1, config JSON, a NUL byte, then a safetensors file; the module is
 * "m" with n_in = 8 * (1 + b0 % 64), n_out = 8 * (1 + b1 % 64). Every
 * loaded code row, scale, zero point and permutation entry is read so ASan sees stray pointers. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "format/quant_config.h"
#include "format/safetensors.h"
#include "model/qweights.h"

static volatile uint64_t g_sink;

typedef struct {
    void *p[64];
    int n;
} owned;

static void *fz_alloc(void *ctx, size_t bytes) {
    owned *o = ctx;
    if (o->n == 64 || bytes > (64u << 20)) return NULL;
    void *p = malloc(bytes);
    if (p) o->p[o->n++] = p;
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    int64_t n_in = 8 * (1 + data[0] % 64), n_out = 8 * (1 + data[1] % 64);
    data += 2, size -= 2;
    const uint8_t *nul = memchr(data, 0, size);
    if (!nul) return 0;
    size_t n_cfg = (size_t)(nul - data);
    pg_quant_config *qc = malloc(sizeof *qc);
    if (!qc) return 0;
    if (quant_config_parse((const char *)data, n_cfg, n_cfg > 0 && (data[n_cfg - 1] & 1), qc) == PAGODA_OK) {
        const qc_scheme *s = quant_config_scheme_for(qc, "m");
        const qc_scheme *s2 = quant_config_scheme_for(qc, "model.layers.3.mlp.down_proj");
        st_model *st = NULL;
        if (s && st_open_memory(nul + 1, size - n_cfg - 1, &st) == PAGODA_OK) {
            owned o = {0};
            qw_owner own = {fz_alloc, &o};
            pg_tensor w;
            bool found = false;
            uint64_t acc = s2 ? (uint64_t)s2->bits : 0;
            if (qweight_load(st, qc, s, "m", n_in, n_out, &own, &w, &found) == PAGODA_OK && found) {
                size_t row = w.qkind == 1 ? (size_t)n_in / 2 : (size_t)n_in;
                int64_t n_group = (n_in + w.group_size - 1) / w.group_size;
                const uint8_t *c = w.data;
                for (int64_t r = 0; r < n_out; r++) acc += c[r * row] + c[r * row + row - 1];
                const float *sc = w.scales.data;
                for (int64_t i = 0; i < n_out * n_group; i++) acc += (uint64_t)(sc[i] != 0);
                if (w.zeros.data)
                    for (int64_t i = 0; i < n_out * n_group; i++) acc += ((const uint8_t *)w.zeros.data)[i];
                if (w.perm.data) {
                    const int32_t *p = w.perm.data;
                    for (int64_t i = 0; i < n_in; i++) {
                        if (p[i] < 0 || p[i] >= n_in) __builtin_trap();
                        acc += (uint64_t)p[i];
                    }
                }
                acc += qweight_bytes(&w);
            }
            g_sink = acc;
            for (int i = 0; i < o.n; i++) free(o.p[i]);
            st_close(st);
        }
    }
    free(qc);
    return 0;
}
