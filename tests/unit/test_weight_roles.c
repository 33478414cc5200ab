/* The weight-role tables are the one declaration of what a model holds: every pg_weight field of
 * pg_layer_weights and pg_model has exactly one role, names are well-formed patterns, shape rules
 * fit the kind; and loading every fixture through the tables fills exactly the roles that apply,
 * with the shapes the rules give and no quantization metadata (formats read today have none). */
#include <stdbool.h>
#include <string.h>

#include "model/model.h"
#include "model/weight_roles.h"
#include "test_util.h"

static int count_conv(const char *s) { /* printf conversions in a name pattern */
    int n = 0;
    for (const char *p = strchr(s, '%'); p; p = strchr(p + 1, '%')) n++;
    return n;
}

/* The n_fields pg_weight fields from offset `first` on: each is one role's, no two roles share one. */
static void check_table(const pg_weight_role *r, int n, size_t first, size_t n_fields, bool layer) {
    CHECK((size_t)n == n_fields, "%d roles for %zu weight fields", n, n_fields);
    for (int i = 0; i < n; i++) {
        CHECK(r[i].offset >= first && (r[i].offset - first) % sizeof(pg_weight) == 0 &&
                  r[i].offset < first + n_fields * sizeof(pg_weight),
              "role %s: offset %zu is not a weight field", r[i].id, r[i].offset);
        for (int j = 0; j < i; j++) CHECK(r[i].offset != r[j].offset, "roles %s and %s share a field", r[i].id, r[j].id);
        CHECK(r[i].gguf && count_conv(r[i].gguf) == (layer ? 1 : 0), "role %s: GGUF name pattern '%s'", r[i].id,
              r[i].gguf ? r[i].gguf : "(null)");
        CHECK(!layer || strstr(r[i].gguf, "%d"), "role %s: layer pattern without %%d", r[i].id);
        for (int f = 0; f < HF_NAMES_COUNT; f++)
            if (r[i].hf[f]) CHECK(count_conv(r[i].hf[f]) == (layer ? 1 : 0) && (!layer || strstr(r[i].hf[f], "%d")),
                                  "role %s: HF name pattern '%s'", r[i].id, r[i].hf[f]);
        bool vec = r[i].kind == ROLE_VECTOR || r[i].kind == ROLE_BIAS;
        CHECK(vec == (r[i].n_out == DIM_ONE), "role %s: vectors (and only they) have n_out DIM_ONE", r[i].id);
        CHECK(!r[i].tied || !layer, "role %s: only a global role can be tied to the embedding", r[i].id);
    }
}

typedef struct {
    int n, n_present;
} walk;

static void count_walk(const pg_weight *w, void *user) {
    walk *s = user;
    s->n++;
    s->n_present += w->data != NULL;
}

/* Load a fixture and compare what the loader filled against the tables. */
static void check_model(const char *path) {
    pg_model *m;
    if (model_load(path, &m)) {
        CHECK(0, "load %s: %s", path, pagoda_last_error());
        return;
    }
    const pg_model_config *c = &m->cfg;
    int ng, nl, n_streamed = 0, n_streamed_g = 0;
    const pg_weight_role *g = model_global_roles(&ng), *lr = model_layer_roles(&nl);
    for (int i = 0; i < ng; i++) {
        const pg_weight *w = role_weight_const(m, &g[i]);
        n_streamed_g += g[i].streamed;
        if (!role_applies(&g[i], c, false)) {
            CHECK(!w->data, "%s: %s loaded though it does not apply", path, g[i].id);
            continue;
        }
        if (g[i].required || g[i].tied) CHECK(w->data != NULL, "%s: %s missing", path, g[i].id);
        if (!w->data) continue;
        CHECK(w->n_in == role_dim(c, g[i].n_in) && w->n_out == role_dim(c, g[i].n_out), "%s: %s shape [%lld, %lld]",
              path, g[i].id, (long long)w->n_in, (long long)w->n_out);
        CHECK(!pg_tensor_has_qmeta(w), "%s: %s carries quantization metadata", path, g[i].id);
    }
    for (int i = 0; i < nl; i++) n_streamed += lr[i].streamed;
    for (int l = 0; l < c->n_layer; l++) {
        const pg_layer_weights *lw = &m->layers[l];
        bool fused = lw->wqkv.data != NULL;
        for (int i = 0; i < nl; i++) {
            const pg_weight *w = role_weight_const(lw, &lr[i]);
            if (!role_applies(&lr[i], c, fused)) {
                CHECK(!w->data, "%s: layer %d %s loaded though it does not apply", path, l, lr[i].id);
                continue;
            }
            if (lr[i].required) CHECK(w->data != NULL, "%s: layer %d %s missing", path, l, lr[i].id);
            if (!w->data) continue;
            CHECK(w->n_in == role_dim(c, lr[i].n_in) && w->n_out == role_dim(c, lr[i].n_out),
                  "%s: layer %d %s shape [%lld, %lld]", path, l, lr[i].id, (long long)w->n_in, (long long)w->n_out);
            CHECK(w->name && w->name[0], "%s: layer %d %s has no name", path, l, lr[i].id);
            CHECK(!pg_tensor_has_qmeta(w), "%s: layer %d %s carries quantization metadata", path, l, lr[i].id);
            if (lr[i].kind == ROLE_VECTOR || lr[i].kind == ROLE_BIAS)
                CHECK(w->dtype == PAGODA_DTYPE_F32, "%s: layer %d %s not converted to F32", path, l, lr[i].id);
        }
    }
    walk s = {0};
    model_for_each_weight(m, count_walk, &s);
    CHECK(s.n == n_streamed_g + c->n_layer * n_streamed, "%s: model_for_each_weight visited %d weights, expected %d",
          path, s.n, n_streamed_g + c->n_layer * n_streamed);
    model_free(m);
}

int main(void) {
    int n;
    const pg_weight_role *r = model_layer_roles(&n);
    check_table(r, n, 0, sizeof(pg_layer_weights) / sizeof(pg_weight), true);
    r = model_global_roles(&n);
    check_table(r, n, offsetof(pg_model, tok_embd), 5, false); /* tok_embd, pos_embd, out_norm(_b), output */
    CHECK(offsetof(pg_model, output) == offsetof(pg_model, tok_embd) + 4 * sizeof(pg_weight),
          "pg_model's weight fields moved: update the global role table");

    pg_model_config c = {.n_embd = 64, .n_head = 4, .n_head_kv = 2, .head_dim = 24, .n_ff = 96, .n_vocab = 300,
                         .n_ctx_train = 128};
    CHECK(role_dim(&c, DIM_Q) == 96 && role_dim(&c, DIM_KV) == 48 && role_dim(&c, DIM_QKV) == 192 &&
              role_dim(&c, DIM_HEAD) == 24 && role_dim(&c, DIM_ONE) == 1,
          "dimension rules");

    const char *shared = test_shared_dir();
    if (!shared) {
        TEST_DONE(); /* the table checks above ran; the fixtures are not here */
    }
    static const char *const k_fixtures[] = {"hf/llama", "hf/llama3", "hf/llama_bf16", "hf/mistral", "hf/qwen2",
                                             "hf/qwen3", "hf/starcoder2", "hf/gpt_bigcode", "gguf/tiny-llama-q4_k.gguf",
                                             "gguf/tiny-llama-tied-f32.gguf"};
    for (size_t i = 0; i < sizeof k_fixtures / sizeof k_fixtures[0]; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/fixtures/%s", shared, k_fixtures[i]);
        check_model(p);
    }
    TEST_DONE();
}
