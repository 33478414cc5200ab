/* Tool calls: a model's generated text -> OpenAI tool calls (content text + calls, each with an
 * id, a function name and its arguments as a JSON string), whole or streamed.
 *
 * Formats (how the model families write calls):
 *   hermes   Hermes, Qwen2.5, Qwen3: <tool_call>{"name": N, "arguments": {...}}</tool_call>, one
 *            block per call (several in a row: parallel calls); text outside the blocks is content;
 *            the closing tag may be missing after the last call.
 *   llama3   Llama 3.1/3.2: {"name": N, "parameters"|"arguments": {...}} as the whole output, or
 *            after <|python_tag|>; several calls separated by ';' or white space.
 *   mistral  [TOOL_CALLS][{"name": N, "arguments": {...}}, ...], the newer
 *            [TOOL_CALLS]N[ARGS]{...} (an optional [CALL_ID]x before [ARGS]), and a bare
 *            [{"name": ...}, ...] array as the whole output (when the marker token was dropped).
 *   json     generic fallback: the whole output (optionally in a ```json fence) is one JSON value,
 *            {"name", "arguments"|"parameters"}, {"tool_calls": [...]} or an array of calls, each
 *            also accepted in OpenAI's {"type": "function", "function": {...}} shape.
 *
 * Rules, the same whole and streamed: arguments are the JSON object exactly as the model wrote it
 * (json: re-serialized compactly; a string that holds a JSON object is accepted and decoded);
 * white space between content and a call is dropped; a call must name one of the request's tools.
 * Output that is malformed (bad or truncated JSON, an unknown name, arguments that are not an
 * object) is returned as plain content, whole: never an error.
 *
 * Streaming: text is fed in any fragments; the parser gives back deltas. Content is passed on at
 * once except what might still start a call marker (and trailing white space); a call is held
 * until its name is known and valid, then comes as a start delta (id, name) followed by argument
 * fragments. The deltas of a stream concatenate to the whole result, except where the output
 * turned out malformed after a call's start was sent (a call cut off, or a later call broken):
 * then the raw text from the broken call on follows as content, and tc_parser_calls_valid says 0
 * (the whole parse gives the text back as it came).
 *
 * Depends on jansson and libc alone (the fuzz target compiles it by itself). Not thread-safe per
 * parser; parsers are independent. */
#ifndef PG_SERVE_TOOL_CALLS_H
#define PG_SERVE_TOOL_CALLS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    TC_FORMAT_NONE = 0, /* no parsing: the text is content */
    TC_FORMAT_HERMES,
    TC_FORMAT_LLAMA3,
    TC_FORMAT_MISTRAL,
    TC_FORMAT_JSON,
    TC_FORMAT_AUTO, /* for configuration only: chosen from the chat template (tc_format_detect) */
} tc_format;

/* "hermes", "llama3", "mistral", "json", "none", "auto" -> *out; -1 for another name. */
int tc_format_from_name(const char *name, tc_format *out);
const char *tc_format_name(tc_format f);
/* The format a chat template writes calls in: <tool_call> -> hermes, [TOOL_CALLS] -> mistral,
 * <|python_tag|> or ipython -> llama3, otherwise (or NULL) json. */
tc_format tc_format_detect(const char *chat_template);

#define TC_ID_LEN 29      /* "call_" + 24 alphanumerics */
#define TC_MAX_CALLS 128  /* calls per output; more make the output malformed */
#define TC_MAX_NAME 256   /* bytes of a function name */

typedef struct {
    char id[TC_ID_LEN + 1];
    char *name;      /* owned, NUL-terminated */
    char *arguments; /* owned, NUL-terminated: a JSON object as text */
} tc_call;

typedef struct {
    char *content;   /* owned, NUL-terminated; NULL when calls were made and no text is left */
    size_t content_len;
    tc_call *calls;  /* owned [n_calls] */
    size_t n_calls;
} tc_result;
void tc_result_free(tc_result *r); /* NULL-safe; leaves *r zeroed */

typedef struct {
    tc_format format;                /* not AUTO */
    const char *const *tool_names;   /* borrowed (copied by tc_parser_create) [n_tool_names] */
    size_t n_tool_names;
    int parallel;                    /* 0: only the first call is kept, later ones are dropped */
    uint64_t id_seed;                /* call ids come from a generator seeded with this */
} tc_config;

/* The request's "tools" array (OpenAI shape) -> the function names, malloc'd: *names is one
 * block (release with free). 0 ok (entries without a function name are skipped), -1 bad JSON or
 * no memory. */
int tc_tool_names(const char *tools_json, char ***names, size_t *n_names);

typedef enum { TC_DELTA_CONTENT = 0, TC_DELTA_CALL_START, TC_DELTA_CALL_ARGS } tc_delta_kind;
typedef struct {
    tc_delta_kind kind;
    int32_t index;     /* calls: the call's index (0, 1, ...) */
    const char *id;    /* CALL_START: the call id */
    const char *text;  /* CONTENT: the text; CALL_START: the name; CALL_ARGS: an argument fragment */
    size_t len;
} tc_delta;

typedef struct tc_parser tc_parser;
/* NULL if out of memory. */
tc_parser *tc_parser_create(const tc_config *cfg);
void tc_parser_destroy(tc_parser *p); /* NULL-safe */
/* Feeds the next fragment of the generated text. 0 ok, -1 out of memory. */
int tc_parser_feed(tc_parser *p, const char *text, size_t len);
/* The text has ended: what was held is resolved. Feeding after this is an error (-1). */
int tc_parser_finish(tc_parser *p);
/* The deltas produced since the last call (valid until the next feed/finish/next call). */
size_t tc_parser_take(tc_parser *p, const tc_delta **deltas);
/* Calls whose start was sent (streamed) so far. */
size_t tc_parser_n_calls(const tc_parser *p);
/* 1 while the output is well formed; after finish, 1 means every call is complete and valid
 * (finish_reason "tool_calls" when n_calls > 0); 0: malformed, the rest went out as content. */
int tc_parser_calls_valid(const tc_parser *p);

/* The whole text at once: *out filled (release with tc_result_free). 0 ok, -1 out of memory. */
int tc_parse(const tc_config *cfg, const char *text, size_t len, tc_result *out);

#endif
