/* pagoda run -m MODEL (-p TEXT | --prompt-ids IDS | --chat) [-n N] [sampling options]
 * Generates text for one sequence, streaming it as it comes; --chat talks turn by turn with the
 * model's chat template, reusing the cached prefix of the conversation. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_common.h"
#include "commands.h"
#include "engine/sampler.h"
#include "kernels/kernels.h"
#include "template/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "core/clock.h"

static void usage(void) {
    fprintf(stderr,
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
            "  --temp T                temperature (default 0 = greedy)\n"
            "  --top-k K  --top-p P  --min-p P\n"
            "  --repeat-penalty R  --presence-penalty P  --frequency-penalty F  --penalty-last-n N\n"
            "  --seed S                RNG seed (default 0)\n"
            "  --ignore-eos            do not stop at end-of-generation tokens\n");
}

typedef struct {
    cli_session s;
    cli_tokenizer tk;     /* tk.tok NULL: the model has no tokenizer (ids only) */
    pg_sampler *smp;
    int32_t *cached;      /* the tokens in the KV cache, in order [s.n_past] */
    long n_gen;
    int ignore_eos, print_ids;
} runner;

static int is_end(const runner *r, int32_t tok) {
    if (r->ignore_eos) return 0;
    return r->tk.tok ? tok_is_eog(r->tk.tok, tok) : tok == r->s.m->cfg.eos_id;
}

/* Feeds prompt (skipping the prefix already cached), then generates, printing as it goes.
 * The generated text is returned in *reply (malloc'd) when reply != NULL. */
static int generate(runner *r, const int32_t *prompt, int32_t n_prompt, char **reply) {
    const int32_t V = r->s.m->cfg.n_vocab;
    for (int32_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V) {
            fprintf(stderr, "pagoda: prompt token %d out of range (vocab %d)\n", prompt[i], V);
            return 1;
        }
    if (n_prompt + r->n_gen > r->s.n_ctx) {
        fprintf(stderr, "pagoda: prompt (%d) + max tokens (%ld) exceed the context (%d)\n", n_prompt, r->n_gen, r->s.n_ctx);
        return 1;
    }
    int32_t common = 0;
    while (common < r->s.n_past && common < n_prompt && r->cached[common] == prompt[common]) common++;
    if (common == n_prompt) common--; /* the last prompt token must run to give logits */
    r->s.n_past = common;
    sampler_reset(r->smp);
    for (int32_t i = 0; i < n_prompt; i++) sampler_accept(r->smp, prompt[i]);
    double t0 = pg_now_s();
    if (cli_session_eval(&r->s, prompt + common, n_prompt - common, NULL)) return 1;
    memcpy(r->cached, prompt, sizeof(int32_t) * (size_t)n_prompt);
    double t1 = pg_now_s();

    tok_stream *ts = NULL;
    if (r->tk.tok && !r->print_ids && tok_stream_create(r->tk.tok, true, &ts)) return cli_error("detokenizer");
    size_t out_len = 0, out_cap = 256;
    char *out = malloc(out_cap), piece[256];
    long n_done = 0;
    int rc = 1;
    if (!out) goto done;
    for (; n_done < r->n_gen; n_done++) {
        int32_t tok = sampler_sample(r->smp, r->s.logits);
        sampler_accept(r->smp, tok);
        if (is_end(r, tok)) break;
        if (ts) {
            size_t k = tok_stream_push(ts, tok, piece, sizeof piece);
            if (k > sizeof piece) k = 0; /* one token never decodes to more than 256 bytes in practice */
            fwrite(piece, 1, k, stdout);
            if (out_len + k + 1 > out_cap) {
                char *no = realloc(out, out_cap = 2 * (out_len + k + 1));
                if (!no) goto done;
                out = no;
            }
            memcpy(out + out_len, piece, k);
            out_len += k;
        } else {
            printf("%s%d", n_done ? " " : "", tok);
        }
        fflush(stdout);
        r->cached[r->s.n_past] = tok;
        if (n_done + 1 < r->n_gen && cli_session_eval(&r->s, &tok, 1, NULL)) goto done;
    }
    if (ts) {
        size_t k = tok_stream_flush(ts, piece, sizeof piece);
        if (k <= sizeof piece) fwrite(piece, 1, k, stdout);
    }
    printf("\n");
    fflush(stdout); /* the reply ends before the statistics line on stderr */
    double t2 = pg_now_s();
    fprintf(stderr, "pagoda: prompt %d tokens (%d cached) in %.3f s (%.1f tok/s), generated %ld tokens in %.3f s (%.1f tok/s)\n",
            n_prompt, common, t1 - t0, (n_prompt - common) / (t1 - t0), n_done, t2 - t1, n_done / (t2 - t1));
    out[out_len] = 0;
    if (reply) *reply = out, out = NULL;
    rc = 0;
done:
    free(out);
    tok_stream_destroy(ts);
    return rc;
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
    const char *tmpl = tok_chat_template(r->tk.tok);
    if (!tmpl) {
        fprintf(stderr, "pagoda: this model has no chat template\n");
        return 1;
    }
    json_t *messages = json_array();
    if (system) json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "system", "content", system));
    const char *bos = NULL, *eos = NULL;
    size_t l;
    if (tok_bos(r->tk.tok) >= 0) bos = tok_piece(r->tk.tok, tok_bos(r->tk.tok), &l);
    if (tok_eos(r->tk.tok) >= 0) eos = tok_piece(r->tk.tok, tok_eos(r->tk.tok), &l);
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
        chat_template_input in = {.messages_json = mj, .add_generation_prompt = true, .bos_token = bos, .eos_token = eos};
        int32_t *ids = NULL;
        size_t n = 0;
        if (chat_template_render(tmpl, &in, &text)) {
            rc = cli_error("chat template");
        } else if (tok_encode(r->tk.tok, text, strlen(text), false, true, &ids, &n)) {
            rc = cli_error("tokenize");
        } else if (generate(r, ids, (int32_t)n, &reply) == 0) {
            json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "assistant", "content", reply));
        } else {
            rc = 1;
        }
        free(mj), free(text), free(ids), free(reply);
        if (rc) break;
    }
    json_decref(messages);
    return rc;
}

int cmd_run(int argc, char **argv) {
    const char *model = NULL, *ids_str = NULL, *text = NULL, *system = NULL;
    long n_gen = 128, n_ctx = 0, threads = 0, seed = 0, last_n = 64, top_k = 0;
    int ignore_eos = 0, chat_mode = 0;
    pg_sampling_params sp = sampler_default_params();
    sp.temperature = 0;
    cli_device dev;
    cli_device_default(&dev);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!strcmp(a, "--ignore-eos")) { ignore_eos = 1; continue; }
        if (!strcmp(a, "--chat")) { chat_mode = 1; continue; }
        if (!v) { fprintf(stderr, "pagoda run: option '%s' needs a value\n", a); return 2; }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--prompt-ids")) ids_str = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) text = v;
        else if (!strcmp(a, "--system")) system = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) bad = cli_int(a, v, 0, 1 << 20, &n_gen);
        else if (!strcmp(a, "--ctx")) bad = cli_int(a, v, 1, 1 << 20, &n_ctx);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) bad = cli_int(a, v, 0, 1024, &threads);
        else if (!strcmp(a, "--temp")) bad = cli_float(a, v, &sp.temperature);
        else if (!strcmp(a, "--top-k")) bad = cli_int(a, v, 0, 1 << 24, &top_k);
        else if (!strcmp(a, "--top-p")) bad = cli_float(a, v, &sp.top_p);
        else if (!strcmp(a, "--min-p")) bad = cli_float(a, v, &sp.min_p);
        else if (!strcmp(a, "--repeat-penalty")) bad = cli_float(a, v, &sp.repetition_penalty);
        else if (!strcmp(a, "--presence-penalty")) bad = cli_float(a, v, &sp.presence_penalty);
        else if (!strcmp(a, "--frequency-penalty")) bad = cli_float(a, v, &sp.frequency_penalty);
        else if (!strcmp(a, "--penalty-last-n")) bad = cli_int(a, v, -1, 1 << 20, &last_n);
        else if (!strcmp(a, "--seed")) bad = cli_int(a, v, 0, 0x7fffffffL, &seed);
        else if (cli_device_option(a, v, &dev, &bad)) {}
        else { fprintf(stderr, "pagoda run: unknown option '%s'\n", a); return usage(), 2; }
        if (bad) return 2;
        i++;
    }
    if (!model || (!!ids_str + !!text + chat_mode) != 1) {
        fprintf(stderr, "pagoda run: give a model and exactly one of -p, --prompt-ids, --chat\n");
        return usage(), 2;
    }
    sp.top_k = (int32_t)top_k;
    sp.seed = (uint64_t)seed;
    sp.penalty_last_n = (int32_t)last_n;
    kcpu_set_threads((int)threads);

    runner r = {.n_gen = n_gen, .ignore_eos = ignore_eos, .print_ids = ids_str != NULL};
    int32_t *prompt = NULL, n_prompt = 0;
    int rc = 1;
    if (ids_str) {
        if (cli_parse_ids(ids_str, &prompt, &n_prompt)) return 2;
        if (n_prompt == 0) {
            fprintf(stderr, "pagoda: --prompt-ids is empty\n");
            free(prompt);
            return 2;
        }
    }
    if (cli_session_open(model, (int32_t)n_ctx, 512, &dev, &r.s)) {
        free(prompt);
        return 1;
    }
    /* a model without a tokenizer (e.g. test fixtures) still runs from ids */
    if ((text || chat_mode) && cli_tokenizer_open(model, &r.tk)) goto done;
    if (!ids_str && !r.tk.tok) goto done;
    if (sampler_create(&sp, r.s.m->cfg.n_vocab, &r.smp)) { cli_error("sampler"); goto done; }
    if (!(r.cached = malloc(sizeof(int32_t) * (size_t)r.s.n_ctx))) goto done;
    if (text) {
        size_t n = 0;
        if (tok_encode(r.tk.tok, text, strlen(text), true, true, &prompt, &n)) { cli_error("tokenize"); goto done; }
        n_prompt = (int32_t)n;
        if (n_prompt == 0) { fprintf(stderr, "pagoda: the prompt encodes to no tokens\n"); goto done; }
    }
    rc = chat_mode ? chat(&r, system) : generate(&r, prompt, n_prompt, NULL);
done:
    sampler_destroy(r.smp);
    cli_tokenizer_close(&r.tk);
    cli_session_close(&r.s);
    free(r.cached);
    free(prompt);
    return rc;
}
