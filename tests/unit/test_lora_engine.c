/* LoRA adapters through the public engine API: load (PEFT and GGUF), info, the max_adapters limit,
 * requests with different adapters stepped together give peft's greedy outputs, an unknown id is
 * refused at submit, unloading while a request runs ends it with an error (engine thread running),
 * and a reused id runs the newly loaded adapter. */
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "format/safetensors.h"
#include "pagoda.h"
#include "test_util.h"

typedef struct {
    int32_t toks[512];
    int32_t n;
    pagoda_finish_reason finish;
    char error[256];
    atomic_int done;
    int slow; /* the callback sleeps 2 ms per token: a request outlives the unload below */
} res;

static void on_ev(const pagoda_event *ev, void *user) {
    res *r = user;
    if (ev->token >= 0 && r->n < 512) r->toks[r->n++] = ev->token;
    if (r->slow) usleep(2000);
    if (ev->finish) {
        r->finish = ev->finish;
        if (ev->error) snprintf(r->error, sizeof r->error, "%s", ev->error);
    }
    if (ev->request_done) atomic_store(&r->done, 1);
}

static pagoda_status submit(pagoda_engine *e, const int32_t *p, int32_t n, int32_t max_tokens, int32_t adapter, res *r) {
    memset(r, 0, sizeof *r);
    if (max_tokens < 0) r->slow = 1, max_tokens = -max_tokens; /* negative: a slow consumer */
    pagoda_request q;
    pagoda_request_default(&q);
    q.prompt_tokens = p, q.n_prompt_tokens = n, q.max_tokens = max_tokens, q.ignore_eos = 1;
    q.sampling.temperature = 0, q.on_event = on_ev, q.user = r, q.adapter = adapter;
    uint64_t id;
    return pagoda_engine_submit(e, &q, &id);
}

static int same(const res *r, const st_tensor *go) {
    int32_t n = (int32_t)go->shape[1];
    return r->n == n && !memcmp(r->toks, go->data, sizeof(int32_t) * (size_t)n);
}

static void wait_done(res *r) {
    for (int i = 0; i < 60000 && !atomic_load(&r->done); i++) usleep(1000);
    CHECK(atomic_load(&r->done), "request did not finish");
}

int main(void) {
    const char *shared = test_shared_dir();
    if (!shared) TEST_SKIP("../shared absent (fixtures/lora)");
    char p[1200], dir[1024];
    snprintf(dir, sizeof dir, "%s/fixtures/lora/llama", shared);
    snprintf(p, sizeof p, "%s/golden.safetensors", dir);
    st_model *g = NULL;
    pagoda_model *m = NULL;
    CHECK(st_open(p, &g) == 0, "%s", pagoda_last_error());
    snprintf(p, sizeof p, "%s/fixtures/hf/llama", shared);
    CHECK(pagoda_model_load(p, &m) == 0, "%s", pagoda_last_error());
    if (!g || !m) TEST_DONE();
    pagoda_engine_config c;
    pagoda_engine_config_default(&c);
    c.kv_mem_bytes = 8 << 20, c.n_threads = 2, c.max_adapters = 2;
    pagoda_engine *e = NULL;
    CHECK(pagoda_engine_create(m, &c, &e) == 0, "%s", pagoda_last_error());
    if (!e) TEST_DONE();

    int32_t a1 = 0, a2 = 0, a3 = 0;
    snprintf(p, sizeof p, "%s/attn_r8", dir);
    CHECK(pagoda_engine_adapter_load(e, p, 0, &a1) == 0 && a1 == 1, "load attn_r8: %s (id %d)", pagoda_last_error(), a1);
    snprintf(p, sizeof p, "%s/mlp_r4.f16.gguf", dir);
    CHECK(pagoda_engine_adapter_load(e, p, 0, &a2) == 0 && a2 == 2, "load mlp_r4: %s (id %d)", pagoda_last_error(), a2);
    snprintf(p, sizeof p, "%s/attn_r8.gguf", dir);
    CHECK(pagoda_engine_adapter_load(e, p, 0, &a3) == PAGODA_ERR_NOMEM && a3 == 0, "a third adapter over max_adapters 2");
    CHECK(strstr(pagoda_last_error(), "max_adapters") != NULL, "message: %s", pagoda_last_error());
    pagoda_adapter_info info;
    CHECK(pagoda_engine_adapter_info(e, 1, &info) == 0 && info.rank == 8 && info.n_layers == 2 &&
          !strcmp(info.targets, "q_proj,k_proj,v_proj,o_proj") && !strcmp(info.source, "peft") && info.bytes > 0,
          "info 1: rank %d layers %d targets %s source %s", info.rank, info.n_layers, info.targets, info.source);
    CHECK(pagoda_engine_adapter_info(e, 2, &info) == 0 && info.rank == 4 && !strcmp(info.targets, "gate_proj,up_proj,down_proj") &&
          !strcmp(info.source, "gguf"), "info 2: rank %d targets %s", info.rank, info.targets);
    CHECK(pagoda_engine_adapter_info(e, 3, &info) == PAGODA_ERR_INVALID, "info of a free id");

    const st_tensor *pa = st_find(g, "greedy_prompt_attn_r8"), *oa = st_find(g, "greedy_output_attn_r8");
    const st_tensor *pm = st_find(g, "greedy_prompt_mlp_r4"), *om = st_find(g, "greedy_output_mlp_r4");
    int32_t na = (int32_t)pa->shape[1], nm = (int32_t)pm->shape[1], ng = (int32_t)oa->shape[1];
    /* unknown ids: refused at submit */
    res r0, r1, r2, r3;
    CHECK(submit(e, pa->data, na, ng, 7, &r0) == PAGODA_ERR_INVALID, "adapter 7 accepted");
    CHECK(strstr(pagoda_last_error(), "adapter 7 is not loaded") != NULL, "message: %s", pagoda_last_error());
    CHECK(submit(e, pa->data, na, ng, -1, &r0) == PAGODA_ERR_INVALID, "adapter -1 accepted");
    /* three requests stepped together: adapter 1, adapter 2, the base */
    CHECK(submit(e, pa->data, na, ng, 1, &r1) == 0, "%s", pagoda_last_error());
    CHECK(submit(e, pm->data, nm, ng, 2, &r2) == 0, "%s", pagoda_last_error());
    CHECK(submit(e, pa->data, na, ng, 0, &r3) == 0, "%s", pagoda_last_error());
    int32_t live = 1;
    for (int i = 0; live && i < 10000; i++) pagoda_engine_step(e, &live);
    CHECK(same(&r1, oa), "attn_r8 greedy differs from peft's (%d tokens)", r1.n);
    CHECK(same(&r2, om), "mlp_r4 greedy differs from peft's (%d tokens)", r2.n);
    CHECK(r3.n == ng && !same(&r3, oa), "the base request ran with the adapter");
    printf("engine: attn_r8 %s, mlp_r4 %s, base %d tokens\n", same(&r1, oa) ? "equal" : "DIFFERS",
           same(&r2, om) ? "equal" : "DIFFERS", r3.n);

    /* unload under a running request (engine thread): it ends with an error */
    CHECK(pagoda_engine_start(e) == 0, "%s", pagoda_last_error());
    CHECK(submit(e, pa->data, na, -240, 1, &r1) == 0, "%s", pagoda_last_error());
    for (int i = 0; i < 30000 && r1.n < 3 && !atomic_load(&r1.done); i++) usleep(1000);
    CHECK(pagoda_engine_adapter_unload(e, 1) == 0, "%s", pagoda_last_error());
    CHECK(pagoda_engine_adapter_unload(e, 1) == PAGODA_ERR_INVALID, "unloaded twice");
    wait_done(&r1);
    printf("engine: unloaded under a running request: finish %d (%s) after %d tokens\n", r1.finish, r1.error, r1.n);
    CHECK(r1.finish == PAGODA_FINISH_ERROR && strstr(r1.error, "adapter 1 was unloaded"), "finish %d error %s", r1.finish,
          r1.error);
    /* id 1 reused by another adapter: its requests run the new one (and no cached prefix of the old) */
    snprintf(p, sizeof p, "%s/mlp_r4", dir);
    CHECK(pagoda_engine_adapter_load(e, p, 0, &a1) == 0 && a1 == 1, "reload: %s (id %d)", pagoda_last_error(), a1);
    CHECK(submit(e, pm->data, nm, ng, 1, &r1) == 0, "%s", pagoda_last_error());
    wait_done(&r1);
    CHECK(same(&r1, om), "id 1 reused: mlp_r4 greedy differs (%d tokens, finish %d %s)", r1.n, r1.finish, r1.error);
    pagoda_engine_destroy(e);
    pagoda_model_free(m);
    st_close(g);
    TEST_DONE();
}
