/* The model manager: models by name, each loaded on demand with its own engine, unloaded when
 * idle past its keep-alive or when a load needs the memory (least recently used first), under
 * one memory budget for the weights and KV caches of every loaded model (the KV part through the
 * pagoda_memory_broker the engines share).
 *
 * A request takes a lease on its model (mgr_acquire) and gives it back when it is done
 * (mgr_release); a model with leases is never unloaded. Loads run on the manager's loader thread:
 * requests for other models keep being served meanwhile, requests for the loading model wait up
 * to their timeout. Thread-safe. */
#ifndef PG_MANAGER_REGISTRY_H
#define PG_MANAGER_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"

typedef enum { MGR_AVAILABLE = 0, MGR_LOADING, MGR_LOADED, MGR_UNLOADING, MGR_STATE_FAILED } mgr_state;
const char *mgr_state_name(mgr_state s);

typedef enum { MGR_TASK_AUTO = 0, MGR_TASK_GENERATE, MGR_TASK_EMBED } mgr_task;

/* One model as configured. Strings are copied. */
typedef struct {
    const char *name;        /* the served name */
    const char *path;        /* .gguf file or Hugging Face folder */
    const char *aliases[8];  /* other names it answers to (NULL-terminated when fewer) */
    int pinned;              /* never evicted nor unloaded when idle */
    double keep_alive_s;     /* < 0: the manager's default; 0 never unload when idle */
    mgr_task task;
    uint64_t kv_mem_bytes;   /* 0: the manager's default */
    int32_t max_model_len;   /* 0: the engine's default */
    const char *chat_template; /* Jinja source replacing the model's (NULL: the model's own) */
} mgr_model_spec;

typedef struct mgr_entry mgr_entry;
typedef struct mgr mgr;

/* Hooks for the layer above: per loaded model state (the server's grammar cache), made right
 * after the model is loaded and freed before it is unloaded. */
typedef void *(*mgr_attach_fn)(pagoda_model *m, void *user);
typedef void (*mgr_detach_fn)(void *attached, void *user);

typedef struct {
    uint64_t memory_budget;         /* host bytes for weights + KV of all loaded models; 0: available memory */
    int32_t models_max;             /* loaded models at most; 0: no count limit */
    double keep_alive_s;            /* idle seconds before a model is unloaded; 0: never */
    uint64_t kv_mem_bytes;          /* per model KV memory when its spec gives none; 0: 1/4 of the budget */
    pagoda_engine_config engine;    /* the template of every engine (kv_mem_bytes, max_model_len and
                                       broker are set per model) */
    mgr_attach_fn attach;           /* may be NULL */
    mgr_detach_fn detach;
    void *hook_user;
} mgr_config;
void mgr_config_default(mgr_config *c);

/* What a request holds while it uses a model. */
typedef struct {
    mgr_entry *entry;
    pagoda_model *model;
    pagoda_engine *engine;
    const pagoda_model_info *info;
    const char *name;        /* the entry's served name (valid while the manager lives) */
    void *attached;          /* what the attach hook made */
    int embed_only;          /* the model serves embeddings only */
    int32_t adapter;         /* LoRA adapter id in the engine (0: the base model) */
} mgr_lease;

pagoda_status mgr_create(const mgr_config *c, mgr **out);
/* Unloads everything (requests must be done) and frees the manager. NULL is a no-op. */
void mgr_destroy(mgr *m);

/* Adds a model (PAGODA_ERR_INVALID when the name is taken). */
pagoda_status mgr_add(mgr *m, const mgr_model_spec *spec);
/* Serves the LoRA adapter at path (PEFT folder or GGUF LoRA) under its own name on the base model
 * (NULL: the default model): a request for that name runs on the base's engine with the adapter
 * (lease.adapter), loaded into it each time the base loads. Call before requests arrive (the list
 * is fixed while serving). PAGODA_ERR_INVALID for a taken name or an unknown base. */
pagoda_status mgr_add_lora(mgr *m, const char *name, const char *path, const char *base);

/* The name a model file or folder is served under by default: "models/foo.Q4_0.gguf" -> "foo.Q4_0",
 * "path/to/hf-folder/" -> "hf-folder" (into buf, cap bytes; returns buf). */
const char *mgr_name_of_path(const char *path, char *buf, size_t cap);
/* Adds every *.gguf file and every folder with a config.json in dir that is not known yet (by
 * path); the name is the file name without .gguf, or the folder's name. Returns how many were
 * added, -1 if dir cannot be read. */
int mgr_scan_dir(mgr *m, const char *dir);
/* Rescans every directory given to mgr_scan_dir before. */
void mgr_rescan(mgr *m);

typedef enum {
    MGR_OK = 0,
    MGR_NOT_FOUND, /* no model by that name */
    MGR_TIMEOUT,   /* still loading (or waiting for memory) after the timeout */
    MGR_FAILED,    /* the load failed: err says why */
} mgr_result;

enum { MGR_RETRY_FAILED = 1, MGR_NO_LOAD = 2 };
/* Finds the model by name or alias (NULL or "": the default model, the first one added), loads
 * it if needed and waits up to timeout_s for it. flags: MGR_RETRY_FAILED: a model whose last
 * load failed is loaded again (else MGR_FAILED); MGR_NO_LOAD: only a loaded model is taken (else
 * MGR_TIMEOUT, nothing started). On MGR_OK *lease holds a reference. err (cap bytes) explains
 * the other results. */
mgr_result mgr_acquire(mgr *m, const char *name, double timeout_s, int flags, mgr_lease *lease, char *err,
                       size_t cap);
void mgr_release(mgr *m, mgr_lease *lease); /* a lease with no entry is a no-op */

/* Starts loading (MGR_OK when loaded or loading now; NOT_FOUND). wait_s > 0: waits for it. */
mgr_result mgr_load(mgr *m, const char *name, double wait_s, char *err, size_t cap);
/* Unloads once its requests are done (waits up to wait_s for them). MGR_FAILED (err) for a
 * pinned model or one still busy at the deadline. */
mgr_result mgr_unload(mgr *m, const char *name, double wait_s, char *err, size_t cap);

/* Loads an adapter while serving (vLLM's /v1/load_lora_adapter): the base (NULL: the default
 * model) is loaded if needed (waiting up to wait_s) and the adapter loaded into its engine, so a
 * bad adapter is an error here. MGR_NOT_FOUND: no such base; MGR_FAILED: the name is taken or the
 * adapter does not load (err says why); MGR_TIMEOUT: the base did not load in time. */
mgr_result mgr_load_lora(mgr *m, const char *name, const char *path, const char *base, double wait_s, char *err,
                         size_t cap);
/* Unloads an adapter by name: requests using it end with an error; its name is free again.
 * MGR_NOT_FOUND when no adapter has that name. */
mgr_result mgr_unload_lora(mgr *m, const char *name, char *err, size_t cap);
typedef struct {
    char name[128], base[128], path[512], error[256];
    int loaded;          /* in its base's engine now */
    int base_state;      /* mgr_state of the base */
} mgr_lora_status;
/* The adapters being served; *out from malloc (free it). */
pagoda_status mgr_list_loras(mgr *m, mgr_lora_status **out, int32_t *n);
/* A snapshot of one model. */
typedef struct {
    char name[128];
    char path[512];
    mgr_state state;
    char error[256];
    int pinned, task_embed;
    double keep_alive_s;     /* 0: never */
    double expires_at;       /* unix time it unloads when idle (0: never / not loaded) */
    double last_used;        /* unix time */
    uint64_t weight_bytes, kv_bytes; /* kv_bytes: granted when loaded, else the estimate */
    uint64_t file_bytes;
    uint64_t adapter_bytes;  /* its LoRA adapters (in its engine when loaded; else their files) */
    int32_t in_flight, max_model_len;
    uint64_t loads, evictions;
    double load_seconds;     /* of the last load */
    int is_default;
} mgr_model_status;
/* *out from malloc (free it); *n entries, in the order they were added. */
pagoda_status mgr_list(mgr *m, mgr_model_status **out, int32_t *n);
/* Looks a name or alias up: 1 if known (its served name copied to served, cap bytes). */
int mgr_known(mgr *m, const char *name, char *served, size_t cap);
uint64_t mgr_budget(const mgr *m);
uint64_t mgr_in_use(mgr *m); /* estimated bytes of the loaded models */
/* Requests in flight over all models (the sum of leases). */
int32_t mgr_in_flight(mgr *m);
/* Calls fn for every loaded engine (e.g. cancel_all at shutdown); the manager lock is held. */
void mgr_for_each_engine(mgr *m, void (*fn)(pagoda_engine *e, void *user), void *user);

#endif
