/* libFuzzer target: safetensors header parser. Every tensor's first and last byte is read so ASan
 * catches offsets the parser let through past the input. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "format/safetensors.h"

static volatile uint64_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_model *m = NULL;
    if (st_open_memory(data, size, &m) != PAGODA_OK) return 0;
    uint64_t acc = 0;
    for (int64_t i = 0; i < st_n_tensors(m); i++) {
        const st_tensor *t = st_tensor_at(m, i);
        if (st_find(m, t->name) != t) __builtin_trap();
        if (t->n_dims < 0 || t->n_dims > ST_MAX_DIMS) __builtin_trap();
        acc += strlen(t->name) + strlen(t->dtype_str) + (uint64_t)t->dtype;
        for (int d = 0; d < t->n_dims; d++) acc += (uint64_t)t->shape[d];
        const uint8_t *p = t->data;
        if (t->size) acc += p[0] + p[t->size - 1];
    }
    const char *fmt = st_metadata(m, "format");
    if (fmt) acc += strlen(fmt);
    g_sink = acc;
    st_close(m);
    return 0;
}
