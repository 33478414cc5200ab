/* libFuzzer: arbitrary bytes through tok_encode (parse_special off and on), and the same bytes read
 * as token ids through tok_decode and the streaming detokenizer. The vocabulary is the gpt-2 test
 * vocab from $PAGODA_SHARED (or ../shared), loaded once; if absent, a tiny tokenizer.json is written
 * to a temporary folder (all are fuzzed that load), with a tokenizer.json using every pre-tokenizer
 * step kind. Links pagoda_tokenizer. */
#define _POSIX_C_SOURCE 200809L
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/gguf.h"
#include "tokenizer/tokenizer.h"

static pg_tokenizer *g_tok[3];
static bool g_lossless[3]; /* every byte has a token: decode(encode(x)) == x */
static int g_n_tok;

static const char k_tiny_json[] =
    "{\"added_tokens\":[{\"id\":6,\"content\":\"<|end|>\",\"special\":true}],"
    "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\\u0120\":3,\"\\u0120a\":4,\"c\":5},"
    "\"merges\":[\"a b\",[\"\\u0120\",\"a\"]]}}";

/* every pre-tokenizer step kind: split behaviors, invert, empty matches, ByteLevel mid-sequence */
static const char k_steps_json[] =
    "{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
    "{\"type\":\"Punctuation\",\"behavior\":\"Contiguous\"},"
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?=\\\\p{N})\"},\"behavior\":\"MergedWithNext\"},"
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s\"},\"behavior\":\"MergedWithPrevious\",\"invert\":true},"
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true},"
    "{\"type\":\"Digits\",\"individual_digits\":true},"
    "{\"type\":\"Split\",\"pattern\":{\"String\":\"ab\"},\"behavior\":\"Removed\"}]},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\\u0120\":3,\"\\u0120a\":4,\"1\":5},"
    "\"merges\":[\"a b\",\"\\u0120 a\"]}}";

static void load_once(void) {
    if (g_n_tok) return;
    const char *sh = getenv("PAGODA_SHARED");
#ifdef PAGODA_SHARED_DIR
    if (!sh) sh = PAGODA_SHARED_DIR;
#endif
    if (!sh) sh = "../shared";
    char p[4096];
    snprintf(p, sizeof p, "%s/fixtures/tokenizers/ggml-vocab-gpt-2.gguf", sh);
    gguf_file *g = NULL;
    if (!gguf_open(p, &g) && !tok_load_gguf(g, &g_tok[g_n_tok])) g_lossless[g_n_tok++] = true;
    gguf_close(g); /* the tokenizer keeps copies of everything it needs */
    char dir[] = "/tmp/pg_fuzz_tok_XXXXXX";
    if (mkdtemp(dir)) {
        snprintf(p, sizeof p, "%s/tokenizer.json", dir);
        const char *jsons[] = {k_tiny_json, k_steps_json};
        for (int j = 0; j < 2; j++) {
            FILE *f = fopen(p, "w");
            if (!f) break;
            fputs(jsons[j], f);
            fclose(f);
            if (!tok_load_hf(dir, &g_tok[g_n_tok])) g_n_tok++;
            else if (j == 1) abort(); /* the step spec must stay loadable */
            unlink(p);
        }
        rmdir(dir);
    }
    if (!g_n_tok) abort(); /* the built-in vocabulary must always load */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_once();
    for (int k = 0; k < g_n_tok; k++) {
        const pg_tokenizer *t = g_tok[k];
        for (int ps = 0; ps < 2; ps++) {
            int32_t *ids;
            size_t n;
            if (tok_encode(t, (const char *)data, size, ps, ps, &ids, &n)) continue;
            char *txt;
            size_t len;
            if (!tok_decode(t, ids, n, false, &txt, &len)) {
                /* byte-level BPE is lossless: the text must come back */
                if (g_lossless[k] && !ps && (len != size || (size && memcmp(txt, data, size)))) abort();
                free(txt);
            }
            free(ids);
        }
        /* the bytes as ids (mostly out of range: must be rejected, never read) */
        size_t n = size / 4;
        int32_t *ids = malloc(n * sizeof *ids + 1);
        if (!ids) return 0;
        memcpy(ids, data, n * sizeof *ids);
        for (size_t i = 0; i < n; i++)
            if (i % 2) ids[i] = (int32_t)((uint32_t)ids[i] % (uint32_t)tok_n_vocab(t));
        char *txt;
        size_t len;
        if (!tok_decode(t, ids, n, size & 1, &txt, &len)) free(txt);
        tok_stream *s;
        if (!tok_stream_create(t, size & 2, &s)) {
            char buf[256];
            for (size_t i = 0; i < n; i++) tok_stream_push(s, ids[i], buf, sizeof buf);
            tok_stream_flush(s, buf, sizeof buf);
            tok_stream_destroy(s);
        }
        free(ids);
    }
    return 0;
}
