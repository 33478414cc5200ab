/* pagoda info -m MODEL: architecture, hyperparameters, metadata and the tensor table. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_common.h"
#include "commands.h"
#include "core/dtype.h"
#include "core/log.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "pagoda.h"

static const char k_usage[] =
            "usage: pagoda info -m MODEL [--all-metadata]\n"
                    "  -m, --model MODEL: a .gguf file, a .safetensors file or a Hugging Face model folder\n";

static void usage(void) { fputs(k_usage, stderr); }

static void print_config(const pg_model_config *c) {
    printf("architecture:   %s (%s)\n", c->arch_name, arch_name(c->arch));
    printf("n_vocab:        %d\nn_embd:         %d\nn_layer:        %d\n", c->n_vocab, c->n_embd, c->n_layer);
    printf("n_head:         %d\nn_head_kv:      %d\nhead_dim:       %d\nn_ff:           %d\n", c->n_head,
           c->n_head_kv, c->head_dim, c->n_ff);
    printf("context:        %d\nnorm:           %s eps=%g\nffn:            %s\n", c->n_ctx_train,
           c->layernorm ? "layernorm" : "rmsnorm", c->norm_eps, c->gated_ffn ? "swiglu" : "gelu");
    if (c->rope == ROPE_NONE)
        printf("positions:      learned\n");
    else
        printf("rope:           %s, dim %d, theta %g, scaling %s (factor %g)\n", c->rope == ROPE_NEOX ? "neox" : "normal",
               c->rope_dim, c->rope_theta, c->rope_scaling, c->rope_factor);
    if (c->sliding_window) printf("sliding_window: %d\n", c->sliding_window);
    printf("bos/eos:        %d / %d\n", c->bos_id, c->eos_id);
}

static void print_kv(const gguf_kv *kv, int all) {
    printf("  %-44s %-8s ", kv->key, gguf_type_name(kv->type));
    switch (kv->type) {
    case GGUF_TYPE_STRING:
        if (kv->str_len > 80 && !all)
            printf("\"%.60s...\" (%llu bytes)", kv->str, (unsigned long long)kv->str_len);
        else
            printf("\"%s\"", kv->str);
        break;
    case GGUF_TYPE_ARRAY:
        printf("[%s x %llu]", gguf_type_name(kv->arr_type), (unsigned long long)kv->arr_n);
        if (kv->arr_type == GGUF_TYPE_STRING && kv->arr_n)
            printf(" \"%.30s\", ...", kv->arr_str[0]);
        break;
    case GGUF_TYPE_FLOAT32: case GGUF_TYPE_FLOAT64: printf("%g", kv->f64); break;
    case GGUF_TYPE_BOOL: printf("%s", kv->i64 ? "true" : "false"); break;
    case GGUF_TYPE_UINT64: printf("%llu", (unsigned long long)kv->u64); break;
    default: printf("%lld", (long long)kv->i64); break;
    }
    printf("\n");
}

/* Loads the model as serving does (weights, shapes, NaN/Inf scan, tokenizer, vocabulary size),
 * so a file info shows without complaint is one pagoda runs. vocab_only: a file pagoda does not
 * run as a model (no tensors, or an architecture it does not know) that carries a vocabulary,
 * which must load as it would for tokenize. */
static int check_loads(const char *path, int vocab_only) {
    pagoda_model *m;
    if ((vocab_only ? pagoda_model_load_vocab : pagoda_model_load)(path, &m)) return cli_error("");
    pagoda_model_free(m);
    printf(vocab_only ? "vocabulary:     ok\n" : "loads:          ok\n");
    return 0;
}

static int info_gguf(const char *path, int all) {
    gguf_file *f;
    if (gguf_open(path, &f)) return cli_error(""); /* the message names the file */
    printf("file:           %s (GGUF v%u, %zu bytes, alignment %zu)\n", path, gguf_version(f), gguf_file_size(f),
           gguf_alignment(f));
    pg_model_config c;
    pagoda_status cst = config_from_gguf(f, &c);
    if (cst == PAGODA_OK)
        print_config(&c);
    else
        printf("runnable:       no (%s)\n", pagoda_last_error());
    printf("metadata (%lld keys):\n", (long long)gguf_n_kv(f));
    for (int64_t i = 0; i < gguf_n_kv(f); i++) print_kv(gguf_kv_at(f, i), all);
    uint64_t total = 0;
    printf("tensors (%lld):\n", (long long)gguf_n_tensors(f));
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char shape[96];
        int o = 0;
        for (int d = 0; d < t->n_dims; d++) o += snprintf(shape + o, sizeof shape - o, d ? ", %lld" : "%lld", (long long)t->ne[d]);
        printf("  %-40s %-6s [%s] %zu bytes\n", t->name, dtype_name(t->dtype), shape, t->size);
        total += t->size;
    }
    printf("tensor bytes:   %llu (%.1f MiB)\n", (unsigned long long)total, total / 1048576.0);
    int64_t n_tensors = gguf_n_tensors(f);
    const char *tok_model = gguf_get_str(f, "tokenizer.ggml.model");
    int has_vocab = tok_model && strcmp(tok_model, "none") != 0;
    gguf_close(f);
    /* A vocab-only file or an architecture pagoda does not run is fine to show once its
     * vocabulary (if any) loads; a file that claims to be a model pagoda runs must also load
     * (every tensor present, right shape, finite weights, its tokenizer). */
    if (n_tensors == 0 || cst == PAGODA_ERR_UNSUPPORTED) return has_vocab ? check_loads(path, 1) : 0;
    if (cst != PAGODA_OK) return cli_error(path);
    return check_loads(path, 0);
}

static int info_safetensors(const char *path) {
    struct stat sb;
    int is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    pagoda_status cst = PAGODA_ERR_UNSUPPORTED;
    if (is_dir) {
        pg_model_config c;
        cst = config_from_hf(path, &c);
        if (cst == PAGODA_OK)
            print_config(&c);
        else if (cst == PAGODA_ERR_UNSUPPORTED)
            printf("runnable:       no (%s)\n", pagoda_last_error());
        else
            return cli_error("");
    }
    st_model *m;
    if (st_open(path, &m)) return cli_error(""); /* the message names the file */
    uint64_t total = 0;
    printf("tensors (%lld):\n", (long long)st_n_tensors(m));
    for (int64_t i = 0; i < st_n_tensors(m); i++) {
        const st_tensor *t = st_tensor_at(m, i);
        char shape[128];
        int o = 0;
        for (int d = 0; d < t->n_dims; d++) o += snprintf(shape + o, sizeof shape - o, d ? ", %lld" : "%lld", (long long)t->shape[d]);
        printf("  %-56s %-5s [%s] %zu bytes\n", t->name, t->dtype_str, shape, t->size);
        total += t->size;
    }
    printf("tensor bytes:   %llu (%.1f MiB)\n", (unsigned long long)total, total / 1048576.0);
    st_close(m);
    if (cst == PAGODA_OK) return check_loads(path, 0);
    char tj[4200];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", path);
    return is_dir && stat(tj, &sb) == 0 ? check_loads(path, 1) : 0; /* a family pagoda does not run */
}

int cmd_info(int argc, char **argv) {
    const char *model = NULL;
    int all = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return usage(), 0;
        if (!strcmp(argv[i], "--all-metadata")) all = 1;
        else if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && i + 1 < argc) model = argv[++i];
        else if (argv[i][0] != '-' && !model) model = argv[i];
        else return cli_unknown_option("pagoda info", argv[i], k_usage);
    }
    if (!model) return usage(), 2;
    size_t n = strlen(model);
    struct stat sb;
    if (stat(model, &sb) != 0) {
        fprintf(stderr, "pagoda: %s: no such file or folder\n", model);
        return 1;
    }
    if (S_ISDIR(sb.st_mode) || (n > 12 && !strcmp(model + n - 12, ".safetensors"))) return info_safetensors(model);
    return info_gguf(model, all);
}
