/* Tokenizers as real models ship them: GGUF metadata (tokenizer.ggml.*) or a Hugging Face
 * tokenizer.json + tokenizer_config.json. Byte-level BPE (GPT-2, StarCoder, SmolLM2, Qwen, Llama-3,
 * DeepSeek, Falcon, BLOOM, Tekken, ... : a tokenizer.json pre_tokenizer is read generally, GGUF
 * tokenizer.ggml.pre names the family) and SentencePiece BPE (Llama-2, Mistral, Phi-3), encoding and
 * decoding exactly as the reference tokenizers do. */
#ifndef PG_TOKENIZER_TOKENIZER_H
#define PG_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/gguf.h"
#include "pagoda.h"

typedef struct pg_tokenizer pg_tokenizer;

/* From GGUF metadata. Fails with a clear error for an unknown tokenizer.ggml.model or .pre. */
pagoda_status tok_load_gguf(const gguf_file *f, pg_tokenizer **out);
/* From a folder with tokenizer.json (and tokenizer_config.json when present). */
pagoda_status tok_load_hf(const char *dir, pg_tokenizer **out);
void tok_free(pg_tokenizer *t); /* NULL is a no-op */

int32_t tok_n_vocab(const pg_tokenizer *t);
int32_t tok_bos(const pg_tokenizer *t); /* -1 if none */
int32_t tok_eos(const pg_tokenizer *t); /* -1 if none */
/* True for tokens that end generation (EOS, EOT such as <|im_end|> / <|eot_id|>). */
bool tok_is_eog(const pg_tokenizer *t, int32_t id);
bool tok_add_bos_default(const pg_tokenizer *t);
/* The model's chat template (Jinja source), NULL if it has none. */
const char *tok_chat_template(const pg_tokenizer *t);

/* Encodes len bytes of text. add_special: add BOS/EOS as the model's defaults say;
 * parse_special: match special/added token text (e.g. "<|im_start|>") as those tokens.
 * *ids is malloc'd (caller frees). Invalid UTF-8 is encoded, never rejected. */
pagoda_status tok_encode(const pg_tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
                         int32_t **ids, size_t *n_ids);

/* Same, in one pass over the whole text, where plain (len bytes, or NULL) marks the bytes that
 * are plain text: a special token is matched only where none of its bytes is marked (1), so
 * special-token text inside marked bytes is encoded as ordinary text. The text is still encoded
 * as one string (BPE merges across the marks), so unmarked text gives the ids tok_encode gives. */
pagoda_status tok_encode_masked(const pg_tokenizer *t, const char *text, size_t len, bool add_special,
                                bool parse_special, const uint8_t *plain, int32_t **ids, size_t *n_ids);

/* The raw piece of a token as stored in the vocabulary (e.g. "Ġhello", "▁the", "<0x0A>"). */
const char *tok_piece(const pg_tokenizer *t, int32_t id, size_t *len);

/* The bytes token id adds to the text, as the grammar engine sees it: decoded (byte-level
 * unmapped, SentencePiece "▁" as a space, <0xXX> as its byte), without the leading-space strip
 * that tok_decode applies to a text's first token. NULL (*len 0) if id is out of range.
 * *special (may be NULL): 1 for a token that is never text (control, unknown, unused). */
const char *tok_token_bytes(const pg_tokenizer *t, int32_t id, size_t *len, bool *special);

/* Decodes ids to text (malloc'd, NUL-terminated, *len excludes the NUL). skip_special drops
 * control tokens. Bytes are returned as the tokens give them, even if not valid UTF-8. */
pagoda_status tok_decode(const pg_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **text,
                         size_t *len);

/* Streaming detokenizer: push one token at a time, get back only complete UTF-8 text
 * (a multi-byte character split across tokens is held until it is complete). */
typedef struct tok_stream tok_stream;
pagoda_status tok_stream_create(const pg_tokenizer *t, bool skip_special, tok_stream **out);
void tok_stream_destroy(tok_stream *s);
/* Appends the newly complete text for id to out (at most cap bytes; returns bytes written,
 * or the needed size if larger than cap, nothing written then). */
size_t tok_stream_push(tok_stream *s, int32_t id, char *out, size_t cap);
/* Whatever is held back (an incomplete sequence at the end), as is. */
size_t tok_stream_flush(tok_stream *s, char *out, size_t cap);

#endif
