/* SentencePiece BPE (Llama-2, Mistral, Phi-3 as GGUF "llama"): spaces become "▁", an optional
 * leading "▁", then merges by the score of the joined piece, unknown chars as <0xXX> bytes. */
#include <string.h>

#include "core/array.h"
#include "core/log.h"
#include "tokenizer/tok_internal.h"

pagoda_status tok_spm_fragment(const pg_tokenizer *t, tok_work *w, const char *s, size_t n, bool prefix) {
    if (n > (SIZE_MAX - 8) / 3) return pg_fail(PAGODA_ERR_INVALID, "tokenizer: text too long");
    int64_t need = (int64_t)(3 * n + 8); /* each space grows to 3 bytes */
    if (need > w->buf_cap && !pg_grow((void **)&w->buf, &w->buf_cap, need, 1))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    size_t m = 0;
    if (prefix) {
        memcpy(w->buf, "\xE2\x96\x81", 3);
        m = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(w->buf + m, "\xE2\x96\x81", 3);
            m += 3;
        } else {
            w->buf[m++] = s[i];
        }
    }
    bool by_score = t->kind == TOK_SPM;
    if (!t->spm_split) return tok_merge_word(t, w, w->buf, m, by_score);
    /* merges are local, so independent words give the same result one at a time, and far faster
     * than one heap over a whole document */
    pagoda_status st;
    size_t start = 0;
    for (size_t i = 1; i + 2 < m; i++) {
        if (!memcmp(w->buf + i, "\xE2\x96\x81", 3) && (i < 3 || memcmp(w->buf + i - 3, "\xE2\x96\x81", 3))) {
            if ((st = tok_merge_word(t, w, w->buf + start, i - start, by_score))) return st;
            start = i;
        }
    }
    return tok_merge_word(t, w, w->buf + start, m - start, by_score);
}
