/* pagoda tokenize -m MODEL [--ids|--pieces] [--no-special] [--add-special] TEXT
 * pagoda tokenize -m MODEL [--ids|--pieces] --chat [--tools JSON] [--allow-special-in-content]
 *                 [--no-generation-prompt] MESSAGES_JSON
 * Shows how a model's tokenizer splits text (MODEL: .gguf, vocab-only .gguf, or HF folder), or
 * the prompt a chat request becomes (the server's pagoda_chat_tokenize). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"

static const char k_usage[] =
            "usage: pagoda tokenize -m MODEL [--ids | --pieces] [--no-special] [--add-special] TEXT\n"
                    "  -m, --model PATH  .gguf file or Hugging Face model folder\n"
                    "  --ids          print only the token ids\n"
                    "  --pieces       print only the pieces\n"
                    "  --no-special   treat special-token text (e.g. <|im_start|>) as plain text\n"
                    "  --add-special  add BOS/EOS as the model does by default\n"
                    "  --chat         TEXT is a JSON array of messages: print the chat prompt's tokens as the\n"
                    "                 server builds them (message text is plain text: special-token text in\n"
                    "                 it stays ordinary text)\n"
                    "  --tools JSON   with --chat: a JSON array of tool definitions\n"
                    "  --allow-special-in-content  with --chat: special-token text in messages becomes\n"
                    "                 special tokens (the server's --allow-special-in-content)\n"
                    "  --no-generation-prompt      with --chat: no assistant turn opened at the end\n"
                    "  TEXT '-' reads standard input\n";

static void usage(void) { fputs(k_usage, stderr); }

static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, stdin);
        n += r;
        if (r == 0) break;
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    if (buf) { /* NUL-terminated too (--chat reads a JSON string) */
        char *nb = realloc(buf, n + 1);
        if (!nb) free(buf);
        if ((buf = nb)) buf[n] = 0;
    }
    *len = n;
    return buf;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL;
    const char *tools = NULL;
    int ids_only = 0, pieces_only = 0, parse_special = 1, add_special = 0;
    int chat = 0, allow_special = 0, gen_prompt = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!strcmp(a, "--ids")) ids_only = 1;
        else if (!strcmp(a, "--pieces")) pieces_only = 1;
        else if (!strcmp(a, "--no-special")) parse_special = 0;
        else if (!strcmp(a, "--add-special")) add_special = 1;
        else if (!strcmp(a, "--chat")) chat = 1;
        else if (!strcmp(a, "--allow-special-in-content")) allow_special = 1;
        else if (!strcmp(a, "--no-generation-prompt")) gen_prompt = 0;
        else if (!strcmp(a, "--tools") && i + 1 < argc) tools = argv[++i];
        else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) model = argv[++i];
        else if (!text && (a[0] != '-' || !strcmp(a, "-"))) text = a;
        else return cli_unknown_option("pagoda tokenize", a, k_usage);
    }
    if (!model || !text) return usage(), 2;
    if (!chat && (tools || allow_special || !gen_prompt)) {
        fprintf(stderr, "pagoda tokenize: --tools, --allow-special-in-content and --no-generation-prompt need --chat\n");
        return 2;
    }
    pagoda_model *tk = NULL; /* the tokenizer only: vocabulary-only GGUFs load too */
    if (pagoda_model_load_vocab(model, &tk)) return cli_error("tokenizer");
    size_t len = 0;
    char *owned = NULL;
    if (!strcmp(text, "-")) {
        if (!(owned = read_stdin(&len))) { pagoda_model_free(tk); return 1; }
        text = owned;
    } else {
        len = strlen(text);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    pagoda_status st = chat ? pagoda_chat_tokenize(tk, text, tools, gen_prompt, allow_special, &ids, &n)
                            : pagoda_tokenize(tk, text, len, add_special, parse_special, &ids, &n);
    if (st) {
        rc = cli_error("tokenize");
    } else {
        for (size_t i = 0; i < n; i++) {
            size_t pl;
            const char *p = pagoda_token_piece(tk, ids[i], &pl);
            if (!p) p = "";
            if (ids_only) printf("%s%d", i ? " " : "", ids[i]);
            else if (pieces_only) printf("%s%.*s", i ? " " : "", (int)pl, p);
            else printf("%6d -> '%.*s'\n", ids[i], (int)pl, p);
        }
        if (ids_only || pieces_only) printf("\n");
        fprintf(stderr, "pagoda: %zu tokens\n", n);
    }
    pagoda_free(ids);
    free(owned);
    pagoda_model_free(tk);
    return rc;
}
