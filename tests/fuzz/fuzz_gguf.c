/* libFuzzer target: GGUF parser. Every accepted kv and tensor is touched so ASan sees any
 * pointer the parser hands out that reaches past the input. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "format/gguf.h"

static volatile uint64_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *f = NULL;
    if (gguf_open_memory(data, size, &f) != PAGODA_OK) return 0;
    uint64_t acc = gguf_version(f) + gguf_alignment(f) + gguf_data_offset(f) + gguf_file_size(f);
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        acc += strlen(kv->key) + (uint64_t)kv->i64 + kv->u64;
        if (gguf_find_kv(f, kv->key) != kv) __builtin_trap();
        if (kv->type == GGUF_TYPE_STRING && kv->str_len) acc += (uint8_t)kv->str[kv->str_len - 1];
        if (kv->type == GGUF_TYPE_ARRAY) {
            if (kv->arr_type == GGUF_TYPE_STRING) {
                for (uint64_t j = 0; j < kv->arr_n; j++)
                    if (kv->arr_str_len[j]) acc += (uint8_t)kv->arr_str[j][kv->arr_str_len[j] - 1];
            } else if (kv->arr_n) {
                static const size_t esz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
                acc += ((const uint8_t *)kv->arr_data)[kv->arr_n * esz[kv->arr_type] - 1];
            }
        }
        int64_t v;
        uint32_t u;
        float fl;
        bool b;
        acc += gguf_get_i64(f, kv->key, &v) + gguf_get_u32(f, kv->key, &u) + gguf_get_f32(f, kv->key, &fl) +
               gguf_get_bool(f, kv->key, &b) + (gguf_get_str(f, kv->key) != NULL);
    }
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (gguf_find_tensor(f, t->name) != t) __builtin_trap();
        const uint8_t *p = t->data;
        if (t->size) acc += p[0] + p[t->size - 1];
    }
    g_sink = acc;
    gguf_close(f);
    return 0;
}
