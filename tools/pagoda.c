/* pagoda command-line entry: `pagoda <command> [options]`. */
#include <stdio.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} k_commands[] = {
    {"run", cmd_run, "generate tokens from a prompt"},
    {"info", cmd_info, "show a model's architecture, hyperparameters and tensors"},
    {"logits", cmd_logits, "compute logits for input_ids from a safetensors file"},
    {"bench", cmd_bench, "prompt-processing and generation speed, memory bandwidth"},
    {"tokenize", cmd_tokenize, "show how a model's tokenizer splits text"},
    {"serve", cmd_serve, "serve a model over an OpenAI-compatible HTTP API"},
    {"eval", cmd_eval, "evaluate a model on a benchmark (humaneval pass@k)"},
    {"synth", cmd_synth, "write a GGUF with random weights of a real model's shape"},
    {"perplexity", cmd_perplexity, "perplexity of a text (as llama-perplexity), KL divergence against a base"},
    {"quantize", cmd_quantize, "rewrite a GGUF's weights in another type (as llama-quantize --pure)"},
    {"imatrix", cmd_imatrix, "importance matrix of a text for quantize --imatrix (as llama-imatrix)"},
};

static void usage(void) {
    fprintf(stderr, "usage: pagoda <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        fprintf(stderr, "  %-10s %s\n", k_commands[i].name, k_commands[i].help);
    fprintf(stderr, "\n`pagoda <command> --help` for its options; `pagoda --version` for the version.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        cli_print_version();
        return 0;
    }
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        if (!strcmp(argv[1], k_commands[i].name)) return k_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "pagoda: unknown command '%s'\n", argv[1]);
    usage();
    return 2;
}
