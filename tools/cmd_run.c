/* pagoda run -m MODEL (-p TEXT | --prompt-ids IDS | --chat) [-n N] [sampling options]
 * Generates text for one sequence through the engine (include/pagoda.h), streaming it as it
 * comes; --chat talks turn by turn with the model's chat template, each turn a request whose
 * prompt starts with the whole conversation so far, which the prefix cache mostly serves. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_common.h"
#include "commands.h"
#include "core/clock.h"

static const char k_usage[] =
            "usage: pagoda run -m MODEL (-p TEXT | --prompt-ids IDS | --chat) [options]\n"
            "  -m, --model PATH        .gguf file or Hugging Face model folder\n"
            "  -p, --prompt TEXT       prompt text (special-token text such as <|im_start|> is parsed)\n"
            "  --prompt-ids IDS        prompt token ids, e.g. \"1,15043,3186\" (output: ids)\n"
            "  --chat                  interactive chat on standard input, with the model's chat template\n"
            "  --system TEXT           system message for --chat\n"
            "  -n, --max-tokens N      tokens to generate (per turn with --chat; default 128)\n"
            "  --ctx N                 context length (default: the model's, at most 4096)\n"
            "  -t, --threads N         CPU threads (default: all cores)\n"
            CLI_DEVICE_HELP
            CLI_TP_HELP
            CLI_PP_HELP
            CLI_COMM_STATS_HELP
            "  --temperature T         temperature (default 0 = greedy); also --temp\n"
            "  --top-k K  --top-p P  --min-p P\n"
            "  --repeat-penalty R  --presence-penalty P  --frequency-penalty F  --penalty-last-n N\n"
            "  --seed S                RNG seed (default 0)\n"
            "  --ignore-eos            do not stop at end-of-generation tokens\n";

static void usage(void) { fputs(k_usage, stderr); }

typedef struct {
    pagoda_model *m;
    pagoda_engine *e;
    pagoda_request base;  /* sampling, stop conditions: every turn's request starts from this */
    int32_t n_vocab, max_len;
    long n_gen;
    int print_ids;
} runner;

/* One turn's stream, filled by the event callback (the caller's thread: it steps the engine). */
typedef struct {
    int print_ids;
    long n_done;          /* tokens generated */
    char *text;           /* the reply so far [len] */
    size_t len, cap;
    double t_first;       /* when the first token came (0: none yet) */
    int32_t n_prompt, n_cached;
    int done, failed, oom;
    char error[256];
} turn;

static void append(turn *t, const char *s, size_t n) {
    if (!n || t->oom) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = 2 * (t->len + n + 1);
        char *nt = realloc(t->text, cap);
        if (!nt) {
            t->oom = 1;
            return;
        }
        t->text = nt, t->cap = cap;
    }
    memcpy(t->text + t->len, s, n);
    t->len += n;
}

static void on_event(const pagoda_event *ev, void *user) {
    turn *t = user;
    if (ev->token >= 0) {
        if (t->n_done++ == 0) t->t_first = pg_now_s();
        if (t->print_ids) printf("%s%d", t->n_done > 1 ? " " : "", ev->token);
    }
    if (!t->print_ids) {
        fwrite(ev->text, 1, ev->text_len, stdout);
        append(t, ev->text, ev->text_len);
    }
    fflush(stdout);
    t->n_prompt = ev->n_prompt_tokens, t->n_cached = ev->n_cached_tokens;
    if (ev->finish == PAGODA_FINISH_ERROR || ev->finish == PAGODA_FINISH_CANCELLED) {
        t->failed = 1;
        snprintf(t->error, sizeof t->error, "%s", ev->error ? ev->error : "cancelled");
    }
    if (ev->request_done) t->done = 1;
}

/* Runs prompt through the engine, printing the generation as it comes. The generated text is
 * returned in *reply (malloc'd) when reply != NULL. */
static int generate(runner *r, const int32_t *prompt, int32_t n_prompt, char **reply) {
    for (int32_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= r->n_vocab) {
            fprintf(stderr, "pagoda: prompt token %d out of range (vocab %d)\n", prompt[i], r->n_vocab);
            return 1;
        }
    if (n_prompt + r->n_gen > r->max_len) {
        fprintf(stderr, "pagoda: prompt (%d) + max tokens (%ld) exceed the context (%d)\n", n_prompt, r->n_gen, r->max_len);
        return 1;
    }
    turn t = {.print_ids = r->print_ids};
    pagoda_request rq = r->base;
    rq.prompt_tokens = prompt;
    rq.n_prompt_tokens = n_prompt;
    rq.max_tokens = (int32_t)r->n_gen;
    rq.score_only = r->n_gen == 0; /* the prompt goes through the model, nothing is generated */
    rq.on_event = on_event;
    rq.user = &t;
    double t0 = pg_now_s();
    if (pagoda_engine_submit(r->e, &rq, NULL)) return cli_error("");
    while (!t.done)
        if (pagoda_engine_step(r->e, NULL)) {
            free(t.text);
            return cli_error("");
        }
    double t2 = pg_now_s(), t1 = t.n_done ? t.t_first : t2;
    printf("\n");
    fflush(stdout); /* the reply ends before the statistics line on stderr */
    if (t.failed || t.oom) {
        fprintf(stderr, "pagoda: %s\n", t.oom ? "out of memory" : t.error);
        free(t.text);
        return 1;
    }
    /* the first token is drawn in the prompt's step: the rate counts the tokens after it */
    long n_after = t.n_done > 1 ? t.n_done - 1 : 0;
    fprintf(stderr, "pagoda: prompt %d tokens (%d cached) in %.3f s (%.1f tok/s), generated %ld tokens in %.3f s (%.1f tok/s)\n",
            t.n_prompt, t.n_cached, t1 - t0, (t.n_prompt - t.n_cached) / (t1 - t0), t.n_done, t2 - t1,
            n_after / (t2 - t1));
    pagoda_engine_stats st;
    pagoda_engine_get_stats(r->e, &st);
    if (st.n_spec_drafts) /* cumulative over the session's turns */
        fprintf(stderr, "pagoda: speculation: %llu drafts verified, %llu of %llu tokens accepted (%.1f%%), mean accepted "
                "length %.2f\n", (unsigned long long)st.n_spec_drafts, (unsigned long long)st.n_spec_accepted,
                (unsigned long long)st.n_spec_proposed, 100.0 * (double)st.n_spec_accepted / (double)st.n_spec_proposed,
                1.0 + (double)st.n_spec_accepted / (double)st.n_spec_drafts);
    if (reply) {
        if (!t.text && !(t.text = malloc(1))) return 1;
        t.text[t.len] = 0;
        *reply = t.text;
    } else {
        free(t.text);
    }
    return 0;
}

/* Reads a line from stdin (without the newline); NULL at end of input. */
static char *read_line(void) {
    size_t cap = 256, n = 0;
    char *buf = malloc(cap);
    int c;
    while (buf && (c = getchar()) != EOF && c != '\n') {
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
            if (!buf) return NULL;
        }
        buf[n++] = (char)c;
    }
    if (!buf || (c == EOF && n == 0)) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

static int chat(runner *r, const char *system) {
    pagoda_model_info info;
    pagoda_model_get_info(r->m, &info);
    if (!info.chat_template) {
        fprintf(stderr, "pagoda: this model has no chat template\n");
        return 1;
    }
    json_t *messages = json_array();
    if (system) json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "system", "content", system));
    int rc = 0;
    fprintf(stderr, "pagoda: chat; an empty line or end of input ends it\n");
    for (;;) {
        fprintf(stderr, "> ");
        char *line = read_line();
        if (!line || !*line) {
            free(line);
            break;
        }
        json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "user", "content", line));
        free(line);
        char *mj = json_dumps(messages, JSON_COMPACT), *text = NULL, *reply = NULL;
        int32_t *ids = NULL;
        size_t n = 0;
        /* the template writes BOS and the other special tokens itself */
        if (pagoda_chat_render(r->m, mj, NULL, 1, &text)) {
            rc = cli_error("chat template");
        } else if (pagoda_tokenize(r->m, text, strlen(text), 0, 1, &ids, &n)) {
            rc = cli_error("tokenize");
        } else if (generate(r, ids, (int32_t)n, &reply) == 0) {
            json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "assistant", "content", reply));
        } else {
            rc = 1;
        }
        free(mj), pagoda_free(text), pagoda_free(ids), free(reply);
        if (rc) break;
    }
    json_decref(messages);
    return rc;
}

int cmd_run(int argc, char **argv) {
    const char *model = NULL, *ids_str = NULL, *text = NULL, *system = NULL;
    long n_gen = 128, n_ctx = 0, threads = 0, seed = 0, last_n = 64, top_k = 0, tp_size = 1, pp_size = 1, pp_micro = 0;
    int ignore_eos = 0, chat_mode = 0, comm_stats = 0;
    pagoda_sampling sp;
    pagoda_sampling_default(&sp);
    sp.temperature = 0;
    cli_device dev;
    cli_device_default(&dev);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!strcmp(a, "--ignore-eos")) { ignore_eos = 1; continue; }
        if (!strcmp(a, "--chat")) { chat_mode = 1; continue; }
        if (!strcmp(a, "--comm-stats")) { comm_stats = 1; continue; }
        if (!cli_option_listed(a, k_usage)) return cli_unknown_option("pagoda run", a, k_usage);
        if (!v) { fprintf(stderr, "pagoda run: option '%s' needs a value\n", a); return 2; }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--prompt-ids")) ids_str = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) text = v;
        else if (!strcmp(a, "--system")) system = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) bad = cli_int(a, v, 0, 1 << 20, &n_gen);
        else if (!strcmp(a, "--ctx")) bad = cli_int(a, v, 1, 1 << 20, &n_ctx);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) bad = cli_int(a, v, 0, 1024, &threads);
        else if (!strcmp(a, "--temperature") || !strcmp(a, "--temp")) bad = cli_temperature(a, v, &sp.temperature);
        else if (!strcmp(a, "--top-k")) bad = cli_int(a, v, 0, 1 << 24, &top_k);
        else if (!strcmp(a, "--top-p")) bad = cli_float(a, v, &sp.top_p);
        else if (!strcmp(a, "--min-p")) bad = cli_float(a, v, &sp.min_p);
        else if (!strcmp(a, "--repeat-penalty")) bad = cli_float(a, v, &sp.repetition_penalty);
        else if (!strcmp(a, "--presence-penalty")) bad = cli_float(a, v, &sp.presence_penalty);
        else if (!strcmp(a, "--frequency-penalty")) bad = cli_float(a, v, &sp.frequency_penalty);
        else if (!strcmp(a, "--penalty-last-n")) bad = cli_int(a, v, -1, 1 << 20, &last_n);
        else if (!strcmp(a, "--tensor-parallel-size")) bad = cli_int(a, v, 1, 64, &tp_size);
        else if (!strcmp(a, "--pipeline-parallel-size") || !strcmp(a, "-pp")) bad = cli_int(a, v, 1, 64, &pp_size);
        else if (!strcmp(a, "--pp-micro-batches")) bad = cli_int(a, v, 1, 64, &pp_micro);
        else if (!strcmp(a, "--seed")) bad = cli_int(a, v, 0, 0x7fffffffL, &seed);
        else if (cli_device_option(a, v, &dev, &bad)) {}
        else return cli_unknown_option("pagoda run", a, k_usage);
        if (bad) return 2;
        i++;
    }
    if (!model || (!!ids_str + !!text + chat_mode) != 1) {
        fprintf(stderr, "pagoda run: give a model and exactly one of -p, --prompt-ids, --chat\n");
        return usage(), 2;
    }
    if (!(sp.temperature > 0)) sp.temperature = 0; /* <= 0: greedy */
    if (sp.top_p > 1) sp.top_p = 1;                /* >= 1: off */
    if (sp.min_p < 0) sp.min_p = 0;                /* <= 0: off */
    sp.top_k = (int32_t)top_k;
    sp.seed = seed;
    if (last_n == 0) /* a penalty window of no tokens: no penalty */
        sp.repetition_penalty = 1, sp.presence_penalty = 0, sp.frequency_penalty = 0;

    int32_t *prompt = NULL, n_prompt = 0;
    if (ids_str) {
        if (cli_parse_ids(ids_str, &prompt, &n_prompt)) return 2;
        if (n_prompt == 0) {
            fprintf(stderr, "pagoda: --prompt-ids is empty\n");
            free(prompt);
            return 2;
        }
    }
    runner r = {.n_gen = n_gen, .print_ids = ids_str != NULL};
    int rc = 1;
    pagoda_tp_group *tp = NULL;
    if (cli_parallel_begin(tp_size, pp_size, &tp)) {
        free(prompt);
        return 1;
    }
    if (comm_stats) cli_comm_stats_begin(tp);
    if (cli_model_load(model, &r.m)) {
        free(prompt);
        cli_tp_end(tp, 1);
        return 1;
    }
    pagoda_model_info info;
    pagoda_model_facts facts;
    pagoda_model_get_info(r.m, &info);
    pagoda_model_get_facts(r.m, &facts);
    r.n_vocab = info.n_vocab;
    if ((text || chat_mode) && !facts.has_tokenizer) {
        fprintf(stderr, "pagoda: %s has no tokenizer: give the prompt with --prompt-ids\n", model);
        goto done;
    }
    /* one sequence, 512-token prefill chunks, the context asked for (default: the model's, at
     * most 4096); the prefix cache serves a chat's earlier turns */
    pagoda_engine_config ec;
    pagoda_engine_config_default(&ec);
    ec.n_threads = (int32_t)threads;
    ec.max_batch_tokens = 512;
    ec.max_seqs = 1;
    ec.max_model_len = n_ctx > 0 ? (int32_t)n_ctx : info.n_ctx_train > 0 && info.n_ctx_train < 4096 ? info.n_ctx_train : 4096;
    dev.max_batch_given = 1;
    cli_device_apply(&dev, &ec);
    ec.tp = tp;
    ec.pp_micro_batches = (int32_t)pp_micro;
    if (cli_tp_spawn(tp, model, &ec)) goto done; /* ranks that are threads (no mpirun) */
    if (tp && tp->rank > 0) { /* the engine runs on rank 0; this rank runs its share of each step */
        rc = cli_tp_worker(r.m, &ec);
        goto done;
    }
    if (pagoda_engine_create(r.m, &ec, &r.e)) { cli_error(""); goto done; }
    pagoda_engine_stats st;
    pagoda_engine_get_stats(r.e, &st);
    r.max_len = st.max_model_len;

    pagoda_request_default(&r.base);
    r.base.sampling = sp;
    r.base.penalty_last_n = last_n ? (int32_t)last_n : 0;
    int32_t eos = facts.eos_config;
    if (ids_str) {
        /* token ids in, token ids out: generation ends at the model's configured EOS token only
         * (not at the tokenizer's other end-of-generation tokens) */
        r.base.ignore_eos = 1;
        if (!ignore_eos && eos >= 0) r.base.stop_token_ids = &eos, r.base.n_stop_token_ids = 1;
    } else {
        r.base.ignore_eos = ignore_eos;
    }
    if (text) {
        size_t n = 0;
        if (pagoda_tokenize(r.m, text, strlen(text), 1, 1, &prompt, &n)) { cli_error("tokenize"); goto done; }
        n_prompt = (int32_t)n;
        if (n_prompt == 0) { fprintf(stderr, "pagoda: the prompt encodes to no tokens\n"); goto done; }
    }
    rc = chat_mode ? chat(&r, system) : generate(&r, prompt, n_prompt, NULL);
done:
    pagoda_engine_destroy(r.e);
    pagoda_model_free(r.m);
    free(prompt);
    if (comm_stats && rc == 0) cli_comm_stats_print(tp);
    cli_tp_end(tp, rc);
    return rc;
}
