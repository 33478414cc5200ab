/* JSON Lines files (optionally gzip-compressed) read into memory: the HumanEval problems and
 * sample files used by `pagoda eval` and `pagoda bench serve --workload humaneval`. */
#ifndef PG_TOOLS_JSONL_H
#define PG_TOOLS_JSONL_H

#include <stddef.h>

#include <jansson.h>

/* Reads PATH fully into *data (malloc'd, NUL-terminated). Files ending in .gz (or starting with
 * the gzip magic) are decompressed by running `gzip -dc` (zlib is not linked). At most max_bytes.
 * Returns 0, or prints "pagoda: <path>: <why>" and returns 1. */
int jsonl_read_file(const char *path, size_t max_bytes, char **data, size_t *len);

/* Parses every non-blank line of PATH as a JSON object. *rows: owned array of owned json_t*
 * (free with jsonl_free). A bad line is an error naming its line number. */
int jsonl_load(const char *path, json_t ***rows, size_t *n_rows);
void jsonl_free(json_t **rows, size_t n_rows);

/* Helpers for the HumanEval fields: the string value of key, or NULL. */
const char *jsonl_str(const json_t *row, const char *key);

/* Finds the default HumanEval problems file: $PAGODA_SHARED/data/HumanEval.jsonl.gz, then
 * ../shared/data/HumanEval.jsonl.gz next to the repository the binary was built in, then relative
 * to the working directory. Writes the path into buf and returns 0, or returns 1. */
int jsonl_find_humaneval(char *buf, size_t cap);

#endif
