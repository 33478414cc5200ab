/* Structured-output fields of a request body, in every dialect clients send them:
 *   OpenAI      response_format {"type": "text" | "json_object" | "json_schema", "json_schema":
 *               {"name", "schema", "strict", "description"}}
 *   vLLM        structured_outputs {"json" | "regex" | "choice" | "grammar" | "json_object", ...}
 *               and the older guided_json / guided_regex / guided_choice / guided_grammar
 *   llama.cpp   grammar (GBNF text), json_schema (a schema object), grammar_lazy with
 *               grammar_triggers (strings, or {"type": "word", "value"}): the constraint applies
 *               from the first trigger in the output on (the grammar's sentences start with it)
 * At most one constraint per request. Parsing only: the grammar is compiled by the server
 * (structured.c) once the model is known. Used by openai_request.c; no engine, no HTTP. */
#ifndef PG_SERVE_STRUCTURED_REQUEST_H
#define PG_SERVE_STRUCTURED_REQUEST_H

#include <jansson.h>
#include <stddef.h>

#define SO_MAX_TRIGGERS 8
#define SO_MAX_TRIGGER_LEN 64

typedef struct {
    int kind;            /* pagoda_grammar_kind; 0: none */
    char *text;          /* owned: schema (compact JSON), pattern, choice array (JSON) or GBNF */
    size_t len;
    int whitespace_flexible;
    char field[64];      /* the field that gave it, for messages ("response_format.json_schema") */
    int lazy;            /* grammar_lazy: true */
    char *triggers[SO_MAX_TRIGGERS]; /* owned: grammar_triggers (words) */
    int n_triggers;
} so_constraint;

/* 1: key is not a structured-output field (nothing done); 0: parsed into *so; -1: bad value, with
 * the offending field in param and a message in msg (HTTP 400). */
int so_parse_field(const char *key, const json_t *v, so_constraint *so, char *param, size_t param_cap, char *msg,
                   size_t msg_cap);
void so_constraint_free(so_constraint *so);

#endif
