/* `pagoda serve --models-config FILE`: the served models in YAML (read with libyaml), e.g.
 *
 *   models:
 *     - name: chat
 *       path: models/SmolLM2-135M-Instruct.Q4_1.gguf
 *       aliases: [gpt-4o-mini]
 *       n_ctx: 4096          # max model length
 *       kv_mem: 256M         # KV cache memory
 *       keep_alive: 300      # seconds idle before unloading (0: never)
 *       pinned: true         # never evicted
 *       task: generate       # generate, embed or auto
 *
 * ("models" may also map names to the same mappings, without "name"). Unknown keys are errors. */
#ifndef PG_MANAGER_MODELS_CONFIG_H
#define PG_MANAGER_MODELS_CONFIG_H

#include <stddef.h>

#include "manager/registry.h"

/* Adds the file's models to m. On failure err (cap bytes) says what and where (line). */
pagoda_status mgr_read_config(mgr *m, const char *path, char *err, size_t cap);

/* A chat template given as vLLM's --chat-template takes it: the path of a file holding the
 * Jinja source (at most 1 MiB), or the source itself (text with "{{" or "{%"). Returns it from
 * malloc, or NULL with err (cap bytes) saying why. */
char *mgr_read_chat_template(const char *arg, char *err, size_t cap);

#endif
