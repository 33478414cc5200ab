/* pagoda serve -m MODEL [options]
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
#include "serve/server.h"
#include "serve/tool_calls.h"

#define MAX_KEYS 64

static void usage(void) {
    fprintf(stderr,
            "usage: pagoda serve -m MODEL [options]\n"
            "  -m, --model PATH           .gguf file or Hugging Face model folder\n"
            "  --host ADDR                address to listen on (default 127.0.0.1)\n"
            "  --port N                   port (default 8080; 0: any free port)\n"
            "  --api-key KEY              require 'Authorization: Bearer KEY' on /v1/ (repeatable;\n"
            "                             also the PAGODA_API_KEY environment variable)\n"
            "  --served-model-name NAME   the model's name in the API (default: file name without .gguf)\n"
            "  -t, --threads N            kernel threads (default: all cores)\n"
            "  --kv-mem SIZE              KV cache memory, e.g. 512M, 2G (default: 1/4 of available memory)\n"
            "  --kv-type f32|f16          KV cache element type (default f32, f16 on the GPU; f16 holds twice the tokens)\n"
            CLI_DEVICE_HELP
            "  --max-batch-tokens N       tokens per engine step (default 256)\n"
            "  --max-seqs N               sequences per step (default 64)\n"
            "  --max-model-len N          prompt + generation limit (default: the model's context)\n"
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
            "  --http-threads N           HTTP worker threads (default 4)\n"
            "  --no-prefix-caching        do not reuse the KV cache of identical prompt prefixes\n"
            "  --allow-special-in-content chat: special-token text in messages (\"<|im_start|>\") becomes\n"
            "                             special tokens, so messages can forge turns (default: plain text;\n"
            "                             a request's \"allow_special_in_content\" overrides this)\n"
            "  --tool-call-parser NAME    how chat output is read as tool calls: hermes (<tool_call>), llama3,\n"
            "                             mistral ([TOOL_CALLS]), json (the whole output a JSON call), none,\n"
            "                             or auto (default: chosen from the model's chat template)\n"
            "  -v, --verbose              engine log lines at info level\n");
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

    const char *model = NULL, *keys[MAX_KEYS];
    int n_keys = 0, verbose = 0, prefix_caching = 1, kv_type = PAGODA_DTYPE_F32;
    long threads = 0, max_batch = 0, max_seqs = 0, max_len = 0, max_waiting = 0, port = 8080;
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
        if (!v) { fprintf(stderr, "pagoda serve: option '%s' needs a value\n", a); return 2; }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--host")) sc.host = v;
        else if (!strcmp(a, "--port")) bad = cli_int(a, v, 0, 65535, &port);
        else if (!strcmp(a, "--api-key")) {
            if (n_keys == MAX_KEYS || !*v) { fprintf(stderr, "pagoda serve: --api-key: empty or too many keys\n"); return 2; }
            keys[n_keys++] = v;
        }
        else if (!strcmp(a, "--served-model-name")) sc.served_model_name = v;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) bad = cli_int(a, v, 0, 1024, &threads);
        else if (!strcmp(a, "--kv-mem")) bad = cli_size(a, v, &kv_mem);
        else if (!strcmp(a, "--kv-type")) bad = cli_kv_type(a, v, &kv_type), dev.kv_type_given = 1;
        else if (!strcmp(a, "--max-batch-tokens")) bad = cli_int(a, v, 1, 1 << 20, &max_batch), dev.max_batch_given = 1;
        else if (!strcmp(a, "--max-seqs")) bad = cli_int(a, v, 1, 1 << 16, &max_seqs);
        else if (cli_device_option(a, v, &dev, &bad)) {}
        else if (!strcmp(a, "--max-model-len")) bad = cli_int(a, v, 1, 1 << 24, &max_len);
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
        else if (!strcmp(a, "--grace")) {
            bad = cli_float(a, v, &grace);
            if (!bad && !(grace >= 0 && grace <= 86400)) {
                fprintf(stderr, "pagoda serve: --grace expects seconds in [0, 86400], got '%s'\n", v);
                bad = 1;
            }
        }
        else { fprintf(stderr, "pagoda serve: unknown option '%s'\n", a); return usage(), 2; }
        if (bad) return 2;
        i++;
    }
    if (!model) {
        fprintf(stderr, "pagoda serve: give a model with -m\n");
        return usage(), 2;
    }
    const char *env_key = getenv("PAGODA_API_KEY");
    if (env_key && *env_key && n_keys < MAX_KEYS) keys[n_keys++] = env_key;
    pagoda_log_set(log_to_stderr, NULL, verbose ? PAGODA_LOG_INFO : PAGODA_LOG_WARN);

    pagoda_model *m = NULL;
    pagoda_engine *e = NULL;
    pg_server *srv = NULL;
    int rc = 1;
    if (cli_model_load(model, &m)) goto done;
    pagoda_engine_config ec;
    pagoda_engine_config_default(&ec);
    ec.n_threads = (int32_t)threads;
    if (kv_mem) ec.kv_mem_bytes = kv_mem;
    if (max_batch) ec.max_batch_tokens = (int32_t)max_batch;
    if (max_seqs) ec.max_seqs = (int32_t)max_seqs;
    if (max_len) ec.max_model_len = (int32_t)max_len;
    ec.max_waiting = (int32_t)max_waiting;
    ec.prefix_caching = prefix_caching;
    ec.kv_dtype = (pagoda_dtype)kv_type;
    cli_device_apply(&dev, &ec);
    if (pagoda_engine_create(m, &ec, &e)) {
        cli_error("engine");
        goto done;
    }
    if (pagoda_engine_start(e)) {
        cli_error("engine start");
        goto done;
    }
    sc.port = (int)port;
    sc.api_keys = keys;
    sc.n_api_keys = n_keys;
    sc.model_path = model;
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
    if (serve_create(m, e, &sc, &srv)) {
        cli_error("serve");
        goto done;
    }
    pagoda_engine_stats st;
    pagoda_engine_get_stats(e, &st);
    int v6 = strchr(sc.host, ':') != NULL;
    fprintf(stderr,
            "pagoda: serving '%s' at http://%s%s%s:%d/ (max model len %d, KV %d blocks of %d tokens%s); "
            "Ctrl-C or SIGTERM stops\n",
            serve_model_name(srv), v6 ? "[" : "", sc.host, v6 ? "]" : "", serve_port(srv), st.max_model_len,
            st.kv_blocks_total, st.kv_block_size, n_keys ? ", API key required" : "");
    serve_wait_and_drain(srv, &sigs, grace);
    rc = 0;
done:
    serve_destroy(srv);
    pagoda_engine_destroy(e);
    pagoda_model_free(m);
    if (rc == 0) fprintf(stderr, "pagoda: stopped\n");
    return rc;
}
