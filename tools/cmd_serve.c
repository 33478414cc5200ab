/* pagoda serve MODEL [options]  (or -m MODEL)
 * Loads a model, starts the batching engine on its own thread and serves the OpenAI API, the chat
 * page, /health and /metrics until SIGTERM or SIGINT, then drains (see src/serve/server.h). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli_common.h"
#include "commands.h"
#include "pagoda.h"
#include "manager/models_config.h"
#include "manager/registry.h"
#include "serve/exit_watchdog.h"
#include "serve/server.h"
#include "serve/tool_calls.h"

#define MAX_KEYS 64
#define MAX_MODELS 64

static const char k_usage[] =
            "usage: pagoda serve MODEL [options]   (or: pagoda serve -m MODEL [options])\n"
            "  MODEL, -m, --model PATH    .gguf file or Hugging Face model folder (loaded at start; the model of\n"
            "                             requests without \"model\")\n"
            "  -m, --model NAME=PATH      one more model served as NAME, loaded on its first request (repeatable)\n"
            "  --models-dir DIR           serve every *.gguf file and Hugging Face folder (with config.json) in DIR,\n"
            "                             by file name without .gguf / folder name; rescanned on GET /v1/models and\n"
            "                             POST /models/load\n"
            "  --lora NAME=PATH[@BASE]    serve a LoRA adapter (PEFT folder or GGUF LoRA) as model NAME on BASE\n"
            "                             (default: the default model), applied per request in the shared batch;\n"
            "                             repeatable; vLLM's --lora-modules NAME=PATH is the same\n"
            "  --max-loras N              adapters resident per engine (default 8)\n"
            "  --enable-runtime-lora      serve POST /v1/load_lora_adapter and /v1/unload_lora_adapter\n"
            "  --models-config FILE       models in YAML: name, path, aliases, n_ctx, kv_mem, keep_alive, pinned,\n"
            "                             task (see src/manager/models_config.h)\n"
            "  --memory-budget SIZE       host memory for the weights and KV caches of all loaded models (default:\n"
            "                             the available memory); loading past it evicts the least recently used\n"
            "                             idle model\n"
            "  --models-max N             loaded models at most (default: no count limit)\n"
            "  --keep-alive SECONDS       unload a model idle this long (default 0: never)\n"
            "  --model-load-timeout S     a request waits this long for its model to load, then gets 503 with\n"
            "                             Retry-After (default 120)\n"
            "  --host ADDR                address to listen on (default 127.0.0.1)\n"
            "  --port N                   port (default 8080; 0: any free port)\n"
            "  --api-key KEY              require 'Authorization: Bearer KEY' on /v1/, /infill (repeatable;\n"
            "                             also the PAGODA_API_KEY environment variable)\n"
            "  --served-model-name NAME   the model's name in the API (default: file name without .gguf)\n"
            "  --chat-template T          the default model's chat template: a Jinja file, or the template\n"
            "                             text itself (as vLLM); per model: chat_template in --models-config\n"
            "  --allowed-origins LIST     CORS: \"*\" or comma-separated origins (http://localhost:3000,...)\n"
            "                             whose pages may call the API (default: none, no CORS headers)\n"
            "  --strict-requests          unknown request fields get 400 (default: ignored, one warning\n"
            "                             per request in the log)\n"
            "  -t, --threads N            kernel threads (default: all cores)\n"
            "  --kv-mem SIZE              KV cache memory per model, e.g. 512M, 2G (default: 1/4 of the memory budget)\n"
            CLI_DEVICE_HELP
            "  --max-batch-tokens N       tokens per engine step (default 256); also --max-num-batched-tokens\n"
            "  --max-seqs N               sequences per step (default 64); also --max-num-seqs, -np, --parallel\n"
            "  --max-model-len N          prompt + generation limit (default: the model's context); also -c,\n"
            "                             --ctx-size\n"
            "  --tensor-parallel-size N, -tp N  split the model over N ranks (the processes of an MPI job\n"
            "                             under mpirun -np N, else N threads of this process): rank 0 serves\n"
            "                             HTTP, the others run their share of every step; CPU, or one GPU each\n"
            "                             with --device cuda, sums through NCCL; one model (MODEL), no LoRA\n"
            "  --pipeline-parallel-size N, -pp N  cut the layers into N stages over the processes of the MPI\n"
            "                             job or threads (CPU; TP*N ranks, rank = stage*TP + tp rank); with -tp\n"
            "  --pp-micro-batches M       a step's sequences in up to M micro-batches so stages overlap\n"
            "                             (default: N, each of at least 64 tokens; 1: none)\n"
            "  --comm-stats               count each rank's MPI traffic: rank 0's in /metrics (pagoda:tp_*),\n"
            "                             every rank's printed at exit\n"
            "  --max-waiting N            queued requests beyond which requests get 429 (default: no limit)\n"
            "  --max-connections N        concurrent HTTP connections (default 4096); more are refused at\n"
            "                             once (the open-file limit is raised to its hard limit, and N is\n"
            "                             lowered to fit what that allows)\n"
            "  --max-connections-per-ip N connections from one client address (default 1024; 0: no limit);\n"
            "                             loopback clients are exempt unless --per-ip-limit-loopback\n"
            "  --per-ip-limit-loopback    apply --max-connections-per-ip to 127.0.0.0/8 and ::1 too\n"
            "  --request-head-timeout S   a request's head must arrive in full within S seconds of the\n"
            "                             connection's start (or the previous request's end), however\n"
            "                             slowly it trickles in (default 20)\n"
            "  --request-body-timeout S   its body within S seconds of the head (default 60)\n"
            "  --max-body-bytes N         request body limit; larger bodies get 413 (default 1048576)\n"
            "  --timeout SECONDS          idle / header / upload timeout per connection (default 60)\n"
            "  --max-unsent-bytes SIZE    a stream whose client leaves more than this unread is cancelled\n"
            "                             with a clear reason (default 4M; 0: no limit)\n"
            "  --grace SECONDS            on SIGTERM, time in-flight requests get to finish (default 10)\n"
            "  --health-generate-timeout S  GET /health_generate answers 503 when one generated token takes\n"
            "                             longer than this (default 20)\n"
            "  --http-threads N           HTTP worker threads (default 4)\n"
            "  --no-prefix-caching        do not reuse the KV cache of identical prompt prefixes\n"
            "  --allow-special-in-content chat: special-token text in messages (\"<|im_start|>\") becomes\n"
            "                             special tokens, so messages can forge turns (default: plain text;\n"
            "                             a request's \"allow_special_in_content\" overrides this)\n"
            "  --tool-call-parser NAME    how chat output is read as tool calls: hermes (<tool_call>), llama3,\n"
            "                             mistral ([TOOL_CALLS]), json (the whole output a JSON call), none,\n"
            "                             or auto (default: chosen from the model's chat template)\n"
            "  --auto-tool-grammar on|off with tool_choice auto, a call the model starts follows the tools'\n"
            "                             schemas (a grammar from the format's opening text on; default on)\n"
            "  --task embed|generate|auto what the server is for (default auto: embed for a sentence-transformers\n"
            "                             package, a GGUF with a pooling type or a model without an LM head,\n"
            "                             else generate). embed: the generation routes answer 400. Both answer\n"
            "                             /v1/embeddings (the model's pooling, else last-token)\n"
            "  -v, --verbose              engine log lines at info level\n"
            "  --version                  print the version and exit\n";

static void usage(void) { fputs(k_usage, stderr); }

/* "NAME=PATH": a name without '/' before the first '=' */
static int is_named(const char *v) {
    const char *eq = strchr(v, '=');
    return eq && eq > v && eq[1] && !memchr(v, '/', (size_t)(eq - v));
}

/* Under tensor (or pipeline) parallelism the group's processes hold exactly one engine, made at start-up and
 * destroyed at shutdown (its destruction stops the other ranks): whatever would make a second
 * engine on the group, or unload and reload the one, is refused here with the reason. */
static int tp_refused(long tp, long pp, int has_model, int n_named, const char *models_dir, const char *models_config,
                      int n_loras, int runtime_lora, const cli_device *dev) {
    const char *why = NULL;
    if (!has_model) why = "give the model as MODEL (or -m PATH): it is loaded at start on every rank";
    else if (n_named) why = "-m NAME=PATH serves a second model, and the group holds one engine";
    else if (models_dir) why = "--models-dir serves several models, and the group holds one engine";
    else if (models_config) why = "--models-config serves several models, and the group holds one engine";
    else if (n_loras || runtime_lora) why = "LoRA adapters are not supported with tensor parallelism";
    else if (dev->cuda && pp > 1) why = "pipeline parallelism runs on the CPU only for now (no --device cuda)";
    if (!why) return 0;
    if (pp > 1) fprintf(stderr, "pagoda serve: --tensor-parallel-size %ld x --pipeline-parallel-size %ld: %s\n", tp, pp, why);
    else fprintf(stderr, "pagoda serve: --tensor-parallel-size %ld: %s\n", tp, why);
    return 1;
}

/* Rank > 0 of a tensor-parallel server: its share of the model and of every step of rank 0's
 * engine (ec: the config rank 0's engine gets), until that engine stops. SIGTERM and SIGINT stay
 * blocked here: a rank ends when rank 0 has drained and destroyed its engine (or when the job is
 * killed), never in the middle of a step rank 0 still needs. */
static int tp_worker(const char *path, const pagoda_engine_config *ec) {
    pagoda_model *m = NULL;
    if (pagoda_model_load(path, &m)) {
        char ctx[64];
        snprintf(ctx, sizeof ctx, "tensor parallel rank %d", ec->tp->rank);
        return cli_error(ctx);
    }
    pagoda_model_prefault(m, NULL, NULL);
    int rc = cli_tp_worker(m, ec);
    pagoda_model_free(m);
    return rc;
}

static void log_to_stderr(int level, const char *msg, void *user) {
    (void)user;
    static const char *const names[] = {"error", "warning", "info", "debug"};
    fprintf(stderr, "pagoda: %s: %s\n", level >= 0 && level < 4 ? names[level] : "log", msg);
}

int cmd_serve(int argc, char **argv) {
    /* SIGTERM/SIGINT are taken with sigwait by the main thread: block them before any thread
     * (engine, OpenMP, HTTP) exists so that every thread inherits the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *model = NULL, *keys[MAX_KEYS], *task = "auto", *models_dir = NULL, *models_config = NULL;
    const char *chat_template_arg = NULL;
    char *chat_template = NULL; /* read from chat_template_arg */
    const char *named[MAX_MODELS]; /* -m NAME=PATH */
    const char *loras[MAX_MODELS]; /* --lora NAME=PATH[@BASE] */
    int n_loras = 0;
    long max_loras = 0;
    int n_named = 0;
    long models_max = 0;
    float keep_alive = 0, load_timeout = 120;
    uint64_t budget = 0;
    int n_keys = 0, verbose = 0, prefix_caching = 1;
    int comm_stats = 0; /* --comm-stats */
    long threads = 0, max_batch = 0, max_seqs = 0, max_len = 0, max_waiting = 0, port = 8080, tp_size = 1, pp_size = 1, pp_micro = 0;
    long max_conn = 4096, timeout = 60, http_threads = 4, max_body = 1 << 20;
    long max_per_ip = 1024, head_timeout = 20, body_timeout = 60;
    float grace = 10;
    uint64_t kv_mem = 0;
    serve_config sc;
    serve_config_default(&sc);
    cli_device dev;
    cli_device_default(&dev);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) { verbose = 1; continue; }
        if (!strcmp(a, "--no-prefix-caching")) { prefix_caching = 0; continue; }
        if (!strcmp(a, "--allow-special-in-content")) { sc.allow_special_in_content = 1; continue; }
        if (!strcmp(a, "--per-ip-limit-loopback")) { sc.per_ip_limit_loopback = 1; continue; }
        if (!strcmp(a, "--strict-requests")) { sc.strict_requests = 1; continue; }
        if (!strcmp(a, "--enable-runtime-lora")) { sc.runtime_lora = 1; continue; }
        if (!strcmp(a, "--comm-stats")) { comm_stats = 1; continue; }
        if (!strcmp(a, "--version")) return cli_print_version(), 0;
        if (a[0] != '-' || !a[1]) { /* the model, positional as in `vllm serve MODEL` */
            if (model) return fprintf(stderr, "pagoda serve: the model is given twice ('%s' and '%s'): give it once, "
                                              "positional or with -m\n", model, a), 2;
            model = a;
            continue;
        }
        if (!cli_option_listed(a, k_usage)) return cli_unknown_option("pagoda serve", a, k_usage);
        if (!v) { fprintf(stderr, "pagoda serve: option '%s' needs a value\n", a); return 2; }
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && is_named(v)) {
            if (n_named == MAX_MODELS) return fprintf(stderr, "pagoda serve: at most %d -m NAME=PATH\n", MAX_MODELS), 2;
            named[n_named++] = v;
        }
        else if (!strcmp(a, "--lora") || !strcmp(a, "--lora-modules")) {
            if (!strchr(v, '=') || v[0] == '=') return fprintf(stderr, "pagoda serve: %s wants NAME=PATH[@BASE], not '%s'\n", a, v), 2;
            if (n_loras == MAX_MODELS) return fprintf(stderr, "pagoda serve: at most %d adapters\n", MAX_MODELS), 2;
            loras[n_loras++] = v;
        }
        else if (!strcmp(a, "--max-loras")) bad = cli_int(a, v, 1, 255, &max_loras);
        else if (!strcmp(a, "--models-dir")) models_dir = v;
        else if (!strcmp(a, "--models-config")) models_config = v;
        else if (!strcmp(a, "--memory-budget")) bad = cli_size(a, v, &budget);
        else if (!strcmp(a, "--models-max")) bad = cli_int(a, v, 0, 1 << 16, &models_max);
        else if (!strcmp(a, "--keep-alive")) bad = cli_float_in(a, v, 0, 1e9f, &keep_alive);
        else if (!strcmp(a, "--model-load-timeout")) bad = cli_float_in(a, v, 0.001f, 86400, &load_timeout);
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (model) return fprintf(stderr, "pagoda serve: the model is given twice ('%s' and '%s'): give it once, "
                                              "positional or with -m\n", model, v), 2;
            model = v;
        }
        else if (!strcmp(a, "--allowed-origins")) sc.allowed_origins = v;
        else if (!strcmp(a, "--host")) sc.host = v;
        else if (!strcmp(a, "--port")) bad = cli_int(a, v, 0, 65535, &port);
        else if (!strcmp(a, "--api-key")) {
            if (n_keys == MAX_KEYS || !*v) { fprintf(stderr, "pagoda serve: --api-key: empty or too many keys\n"); return 2; }
            keys[n_keys++] = v;
        }
        else if (!strcmp(a, "--served-model-name")) sc.served_model_name = v;
        else if (!strcmp(a, "--chat-template")) chat_template_arg = v;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) bad = cli_int(a, v, 0, 1024, &threads);
        else if (!strcmp(a, "--kv-mem")) bad = cli_size(a, v, &kv_mem);
        else if (!strcmp(a, "--tensor-parallel-size") || !strcmp(a, "-tp")) bad = cli_int(a, v, 1, 1024, &tp_size);
        else if (!strcmp(a, "--pipeline-parallel-size") || !strcmp(a, "-pp")) bad = cli_int(a, v, 1, 64, &pp_size);
        else if (!strcmp(a, "--pp-micro-batches")) bad = cli_int(a, v, 1, 64, &pp_micro);
        else if (!strcmp(a, "--max-batch-tokens") || !strcmp(a, "--max-num-batched-tokens"))
            bad = cli_int(a, v, 1, 1 << 20, &max_batch), dev.max_batch_given = 1;
        else if (!strcmp(a, "--max-seqs") || !strcmp(a, "--max-num-seqs") || !strcmp(a, "-np") || !strcmp(a, "--parallel"))
            bad = cli_int(a, v, 1, 1 << 16, &max_seqs);
        else if (cli_device_option(a, v, &dev, &bad)) {}
        else if (!strcmp(a, "--max-model-len") || !strcmp(a, "-c") || !strcmp(a, "--ctx-size"))
            bad = cli_int(a, v, 1, 1 << 24, &max_len);
        else if (!strcmp(a, "--max-waiting")) bad = cli_int(a, v, 0, 1 << 24, &max_waiting);
        else if (!strcmp(a, "--max-connections")) bad = cli_int(a, v, 1, 1 << 16, &max_conn);
        else if (!strcmp(a, "--max-connections-per-ip")) bad = cli_int(a, v, 0, 1 << 16, &max_per_ip);
        else if (!strcmp(a, "--request-head-timeout")) bad = cli_int(a, v, 1, 86400, &head_timeout);
        else if (!strcmp(a, "--request-body-timeout")) bad = cli_int(a, v, 1, 86400, &body_timeout);
        else if (!strcmp(a, "--max-body-bytes")) bad = cli_int(a, v, 1024, 1L << 30, &max_body);
        else if (!strcmp(a, "--timeout")) bad = cli_int(a, v, 1, 86400, &timeout);
        else if (!strcmp(a, "--max-unsent-bytes")) {
            uint64_t b = 0;
            if (!(bad = cli_size(a, v, &b))) sc.max_unsent_bytes = (size_t)b;
        }
        else if (!strcmp(a, "--http-threads")) bad = cli_int(a, v, 1, 256, &http_threads);
        else if (!strcmp(a, "--tool-call-parser")) {
            tc_format f;
            if ((bad = tc_format_from_name(v, &f) != 0))
                fprintf(stderr, "pagoda serve: --tool-call-parser expects hermes, llama3, mistral, json, none or auto, got '%s'\n", v);
            sc.tool_call_parser = v;
        }
        else if (!strcmp(a, "--auto-tool-grammar")) {
            if ((bad = strcmp(v, "on") && strcmp(v, "off")))
                fprintf(stderr, "pagoda serve: --auto-tool-grammar expects on or off, got '%s'\n", v);
            sc.auto_tool_grammar = !strcmp(v, "on");
        }
        else if (!strcmp(a, "--task")) {
            if ((bad = strcmp(v, "embed") && strcmp(v, "generate") && strcmp(v, "auto")))
                fprintf(stderr, "pagoda serve: --task expects embed, generate or auto, got '%s'\n", v);
            task = v;
        }
        else if (!strcmp(a, "--health-generate-timeout")) {
            float t = 0;
            if (!(bad = cli_float_in(a, v, 0.001f, 86400, &t))) sc.health_generate_timeout_s = t;
        }
        else if (!strcmp(a, "--grace")) {
            bad = cli_float(a, v, &grace);
            if (!bad && !(grace >= 0 && grace <= 86400)) {
                fprintf(stderr, "pagoda serve: --grace expects seconds in [0, 86400], got '%s'\n", v);
                bad = 1;
            }
        }
        else return cli_unknown_option("pagoda serve", a, k_usage);
        if (bad) return 2;
        i++;
    }
    if (!model && !n_named && !models_dir && !models_config) {
        fprintf(stderr, "pagoda serve: give a model: pagoda serve MODEL (or -m MODEL, -m NAME=PATH, --models-dir DIR, "
                        "--models-config FILE)\n");
        return usage(), 2;
    }
    if (tp_size * pp_size > 1 &&
        tp_refused(tp_size, pp_size, model != NULL, n_named, models_dir, models_config, n_loras, sc.runtime_lora, &dev))
        return 2;
    const char *env_key = getenv("PAGODA_API_KEY");
    if (env_key && *env_key && n_keys < MAX_KEYS) keys[n_keys++] = env_key;
    pagoda_log_set(log_to_stderr, NULL, verbose ? PAGODA_LOG_INFO : PAGODA_LOG_WARN);

    mgr *models = NULL;
    pg_server *srv = NULL;
    pagoda_tp_group *tp = NULL;
    int rc = 1;
    mgr_config mc;
    mgr_config_default(&mc);
    mc.memory_budget = budget;
    mc.models_max = (int32_t)models_max;
    mc.keep_alive_s = keep_alive;
    mc.kv_mem_bytes = kv_mem;
    pagoda_engine_config *ec = &mc.engine;
    ec->n_threads = (int32_t)threads;
    if (max_batch) ec->max_batch_tokens = (int32_t)max_batch;
    if (max_seqs) ec->max_seqs = (int32_t)max_seqs;
    if (max_len) ec->max_model_len = (int32_t)max_len;
    ec->max_waiting = (int32_t)max_waiting;
    ec->prefix_caching = prefix_caching;
    cli_device_apply(&dev, ec);
    ec->max_adapters = (int32_t)max_loras;
    if (cli_parallel_begin(tp_size, pp_size, &tp)) return 1;
    ec->pp_micro_batches = (int32_t)pp_micro;
    ec->tp = tp;
    sc.tensor_parallel_size = (int)tp_size;
    if (comm_stats && tp) { /* every MPI rank counts; rank 0's counts are also in /metrics */
        cli_comm_stats_begin(tp);
        if (!pagoda_tp_threads_is(tp)) sc.tp_comm = tp;
    }
    if (cli_tp_spawn(tp, model, ec)) { /* ranks that are threads (no mpirun) */
        cli_tp_end(tp, 1);
        return 1;
    }
    if (tp && tp->rank > 0) { /* the manager's engine config (registry.c load_locked) less what is per rank */
        rc = tp_worker(model, ec);
        if (comm_stats && rc == 0) cli_comm_stats_print(tp);
        cli_tp_end(tp, rc);
        return rc;
    }
    if (serve_model_hooks(&mc, sc.tool_call_parser) || mgr_create(&mc, &models)) {
        cli_error("serve");
        goto done;
    }
    const mgr_task mtask = !strcmp(task, "embed") ? MGR_TASK_EMBED : !strcmp(task, "generate") ? MGR_TASK_GENERATE : MGR_TASK_AUTO;
    char first_name[256];
    if (chat_template_arg) {
        char why[512];
        if (!(chat_template = mgr_read_chat_template(chat_template_arg, why, sizeof why))) {
            fprintf(stderr, "pagoda serve: --chat-template: %s\n", why);
            goto done;
        }
    }
    if (model) { /* the default model: served by its old name (and path), loaded now */
        mgr_model_spec ms = {.name = sc.served_model_name ? sc.served_model_name : mgr_name_of_path(model, first_name, sizeof first_name),
                             .path = model, .pinned = !n_named && !models_dir && !models_config, .keep_alive_s = -1, .task = mtask,
                             .chat_template = chat_template};
        if (mgr_add(models, &ms)) {
            cli_error("serve");
            goto done;
        }
        if (ms.name != first_name) snprintf(first_name, sizeof first_name, "%s", ms.name);
    }
    for (int i = 0; i < n_named; i++) {
        char name[256];
        const char *eq = strchr(named[i], '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - named[i]), named[i]);
        mgr_model_spec ms = {.name = name, .path = eq + 1, .keep_alive_s = -1, .task = mtask,
                             .chat_template = !model && i == 0 ? chat_template : NULL}; /* the default is the first */
        if (mgr_add(models, &ms)) {
            cli_error("serve");
            goto done;
        }
        if (!model && i == 0) snprintf(first_name, sizeof first_name, "%s", name);
    }
    if (models_config) {
        char err[512];
        if (mgr_read_config(models, models_config, err, sizeof err)) {
            fprintf(stderr, "pagoda serve: --models-config %s: %s\n", models_config, err);
            goto done;
        }
    }
    if (models_dir && mgr_scan_dir(models, models_dir) < 0) {
        fprintf(stderr, "pagoda serve: --models-dir %s: %s\n", models_dir, strerror(errno));
        goto done;
    }
    for (int i = 0; i < n_loras; i++) {
        char name[256], path[4096];
        const char *eq = strchr(loras[i], '='), *at = strrchr(eq + 1, '@');
        snprintf(name, sizeof name, "%.*s", (int)(eq - loras[i]), loras[i]);
        snprintf(path, sizeof path, "%.*s", (int)(at ? at - eq - 1 : (long)strlen(eq + 1)), eq + 1);
        if (mgr_add_lora(models, name, path, at ? at + 1 : NULL)) {
            cli_error("serve");
            goto done;
        }
    }
    mgr_model_status *list = NULL;
    int32_t n_models = 0;
    if (mgr_list(models, &list, &n_models) || n_models == 0) {
        free(list);
        fprintf(stderr, "pagoda serve: no model to serve (--models-dir %s holds no .gguf file nor model folder)\n",
                models_dir ? models_dir : "");
        goto done;
    }
    if (!model) snprintf(first_name, sizeof first_name, "%s", list[0].name);
    free(list);
    if (model) {
        char err[512];
        if (mgr_load(models, first_name, 1e9, err, sizeof err)) {
            fprintf(stderr, "pagoda serve: %s\n", err);
            goto done;
        }
    }
    sc.port = (int)port;
    sc.api_keys = keys;
    sc.n_api_keys = n_keys;
    sc.model_path = model ? model : first_name;
    sc.served_model_name = first_name;
    sc.model_load_timeout_s = load_timeout;
    /* Every connection holds a descriptor: raise the soft open-file limit to the hard one so the
     * connection limit, not EMFILE, is what bounds them, and lower the connection limit to what
     * the descriptors allow (RESERVE for the model, logs and the HTTP threads' own descriptors).
     * Connections over the limit are refused at once (src/serve/conn_guard.h). */
    enum { RESERVE = 256 };
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)max_conn + RESERVE) {
            long fit = rl.rlim_cur > (rlim_t)RESERVE + 16 ? (long)rl.rlim_cur - RESERVE : 16;
            fprintf(stderr, "pagoda: warning: the open-file limit is %llu: --max-connections lowered from %ld to %ld\n",
                    (unsigned long long)rl.rlim_cur, max_conn, fit);
            max_conn = fit;
        }
    }
    sc.max_connections = (int)max_conn;
    sc.max_connections_per_ip = (int)max_per_ip;
    sc.request_head_timeout_s = (int)head_timeout;
    sc.request_body_timeout_s = (int)body_timeout;
    sc.max_body_bytes = (size_t)max_body;
    sc.timeout_s = (int)timeout;
    sc.http_threads = (int)http_threads;
    if (serve_create(models, &sc, &srv)) {
        cli_error("serve");
        goto done;
    }
    int v6 = strchr(sc.host, ':') != NULL;
    mgr_lease lease;
    char err[64];
    if (model && mgr_acquire(models, first_name, 0, 0, &lease, err, sizeof err) == MGR_OK) {
        if (lease.embed_only) fprintf(stderr, "pagoda: task embed: /v1/embeddings only (the generation routes answer 400)\n");
        pagoda_engine_stats st;
        pagoda_engine_get_stats(lease.engine, &st);
        char tp_note[64] = "";
        if (tp && tp->pp_size > 1)
            snprintf(tp_note, sizeof tp_note, ", %d pipeline stages over %d processes", (int)tp->pp_size, (int)tp->size);
        else if (tp) snprintf(tp_note, sizeof tp_note, ", tensor parallel over %d processes", (int)tp->size);
        fprintf(stderr,
                "pagoda: serving '%s' at http://%s%s%s:%d/ (max model len %d, KV %d blocks of %d tokens%s%s); "
                "Ctrl-C or SIGTERM stops\n",
                serve_model_name(srv), v6 ? "[" : "", sc.host, v6 ? "]" : "", serve_port(srv), st.max_model_len,
                st.kv_blocks_total, st.kv_block_size, tp_note, n_keys ? ", API key required" : "");
        mgr_release(models, &lease);
    } else
        fprintf(stderr, "pagoda: serving '%s' at http://%s%s%s:%d/ (%d models, loaded on demand; memory budget %.0f MiB%s); "
                        "Ctrl-C or SIGTERM stops\n", first_name, v6 ? "[" : "", sc.host, v6 ? "]" : "", serve_port(srv),
                n_models, mgr_budget(models) / 1048576.0, n_keys ? ", API key required" : "");
    serve_wait_and_drain(srv, &sigs, grace);
    if (tp && serve_requests_stuck(srv)) {
        /* a rank does not answer: the engine thread waits in a collective that never completes,
           and destroying the engine would wait for it forever; end the whole job instead */
        fprintf(stderr, "pagoda: the engine is stuck (a tensor-parallel rank does not answer): ending the MPI job\n");
        cli_tp_end(tp, 1);
        return 1;
    }
    rc = 0;
done:
    serve_destroy(srv);
    serve_exit_phase("unloading the models (an engine does not stop)");
    mgr_destroy(models);
    free(chat_template);
    if (rc == 0) fprintf(stderr, "pagoda: stopped\n");
    if (comm_stats && tp && rc == 0) cli_comm_stats_print(tp);
    cli_tp_end(tp, rc); /* the engine, and with it the other ranks, stopped in mgr_destroy */
    return rc;
}
