/* Several engines in one process: two engines over two different models (../shared's
 * pycoder-tiny and the gpt_bigcode fixture) step concurrently on their own threads, each producing
 * exactly the tokens it produces alone; a memory broker divides the cores and the KV memory
 * between them (the process never runs more threads than the broker gave out), refuses a third
 * engine it cannot serve with a message naming the shortage, and takes back what a destroyed
 * engine held. */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pagoda.h"
#include "test_util.h"

enum { N_REQ = 4, N_GEN = 48 };

typedef struct {
    int32_t tokens[N_REQ][N_GEN];
    int32_t n[N_REQ];
    int done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} outputs;

typedef struct {
    outputs *o;
    int idx;
} req_ctx;

static void on_event(const pagoda_event *ev, void *user) {
    req_ctx *c = user;
    outputs *o = c->o;
    pthread_mutex_lock(&o->mu);
    if (ev->token >= 0 && o->n[c->idx] < N_GEN) o->tokens[c->idx][o->n[c->idx]++] = ev->token;
    if (ev->request_done) {
        o->done++;
        pthread_cond_broadcast(&o->cv);
    }
    pthread_mutex_unlock(&o->mu);
}

/* The OS threads of this process now. */
static int process_threads(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static int32_t g_prompts[N_REQ][24];

static void submit_all(pagoda_engine *e, outputs *o, req_ctx *ctx) {
    memset(o->n, 0, sizeof o->n);
    o->done = 0;
    for (int i = 0; i < N_REQ; i++) {
        pagoda_request q;
        pagoda_request_default(&q);
        q.prompt_tokens = g_prompts[i], q.n_prompt_tokens = 8 + 5 * i;
        q.max_tokens = N_GEN;
        q.ignore_eos = 1;
        if (i % 2) { /* seeded sampling: the same seed gives the same tokens, alone or not */
            q.sampling.temperature = 0.8f, q.sampling.top_p = 0.95f, q.sampling.seed = 100 + i;
        } else {
            q.sampling.temperature = 0;
        }
        ctx[i] = (req_ctx){o, i};
        q.on_event = on_event, q.user = &ctx[i];
        uint64_t id;
        CHECK(pagoda_engine_submit(e, &q, &id) == PAGODA_OK, "submit: %s", pagoda_last_error());
    }
}

static void wait_done(outputs *o) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 300; /* a generous bound for a loaded 2-core machine; the run takes about a second */
    pthread_mutex_lock(&o->mu);
    while (o->done < N_REQ)
        if (pthread_cond_timedwait(&o->cv, &o->mu, &ts)) break;
    pthread_mutex_unlock(&o->mu);
    CHECK(o->done == N_REQ, "%d of %d requests finished", o->done, N_REQ);
}

static pagoda_status make_engine(pagoda_model *m, pagoda_memory_broker *b, int32_t n_threads, uint64_t kv_bytes,
                                 pagoda_engine **e) {
    pagoda_engine_config c;
    pagoda_engine_config_default(&c);
    c.broker = b;
    c.n_threads = n_threads;
    c.kv_mem_bytes = kv_bytes;
    c.max_seqs = 8;
    return pagoda_engine_create(m, &c, e);
}

int main(void) {
    const char *shared = test_shared_dir();
    if (!shared) TEST_SKIP("../shared not found (set PAGODA_SHARED): fixture models unavailable");
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/models/pycoder-tiny", shared);
    snprintf(pb, sizeof pb, "%s/fixtures/hf/gpt_bigcode", shared);
    pagoda_model *ma = NULL, *mb = NULL;
    if (pagoda_model_load(pa, &ma) || pagoda_model_load(pb, &mb)) {
        fprintf(stderr, "load: %s\n", pagoda_last_error());
        return 1;
    }
    pagoda_model_info ia, ib;
    pagoda_model_get_info(ma, &ia), pagoda_model_get_info(mb, &ib);
    /* token-id prompts (the fixture has no tokenizer), valid in both vocabularies */
    int32_t v = ia.n_vocab < ib.n_vocab ? ia.n_vocab : ib.n_vocab;
    unsigned long long rng = 7;
    for (int i = 0; i < N_REQ; i++)
        for (int j = 0; j < 24; j++) g_prompts[i][j] = (int32_t)(test_rand_u64(&rng) % (unsigned long long)v);

    pagoda_memory_broker_config bc = {.host_bytes = 64ull << 20, .n_cores = 2};
    pagoda_memory_broker *broker = NULL;
    CHECK(pagoda_memory_broker_create(&bc, &broker) == PAGODA_OK, "broker: %s", pagoda_last_error());
    outputs alone[2], both[2];
    req_ctx ctx[2][N_REQ];
    for (int k = 0; k < 2; k++) {
        memset(&alone[k], 0, sizeof alone[k]), memset(&both[k], 0, sizeof both[k]);
        pthread_mutex_init(&alone[k].mu, NULL), pthread_cond_init(&alone[k].cv, NULL);
        pthread_mutex_init(&both[k].mu, NULL), pthread_cond_init(&both[k].cv, NULL);
    }

    /* engine A takes one core and 16 MiB, engine B whatever cores are left and 16 MiB */
    pagoda_engine *ea = NULL, *eb = NULL, *ec = NULL;
    CHECK(make_engine(ma, broker, 1, 16ull << 20, &ea) == PAGODA_OK, "engine A: %s", pagoda_last_error());
    CHECK(make_engine(mb, broker, 0, 16ull << 20, &eb) == PAGODA_OK, "engine B: %s", pagoda_last_error());
    if (!ea || !eb) return 1;
    pagoda_engine_stats sa, sb;
    pagoda_engine_get_stats(ea, &sa), pagoda_engine_get_stats(eb, &sb);
    CHECK(sa.n_threads == 1 && sb.n_threads == 1, "threads A %d, B %d (the broker has 2 cores)", sa.n_threads, sb.n_threads);
    CHECK(sa.kv_bytes <= (16ull << 20) && sb.kv_bytes <= (16ull << 20) && sa.kv_bytes > 0 && sb.kv_bytes > 0,
          "KV bytes A %llu, B %llu (16 MiB each asked)", (unsigned long long)sa.kv_bytes, (unsigned long long)sb.kv_bytes);
    pagoda_memory_broker_stats bs;
    pagoda_memory_broker_get_stats(broker, &bs);
    CHECK(bs.cores_used == 2 && bs.n_engines == 2 && bs.host_used == sa.kv_bytes + sb.kv_bytes,
          "broker: cores %d, engines %d, host %llu", bs.cores_used, bs.n_engines, (unsigned long long)bs.host_used);

    /* a third engine: no core left, and then not enough memory */
    CHECK(make_engine(ma, broker, 0, 8ull << 20, &ec) == PAGODA_ERR_NOMEM && !ec, "a third engine got cores");
    CHECK(strstr(pagoda_last_error(), "cores") != NULL, "message: %s", pagoda_last_error());

    /* each alone, stepped on this thread */
    pagoda_engine *es[2] = {ea, eb};
    for (int k = 0; k < 2; k++) {
        submit_all(es[k], &alone[k], ctx[k]);
        int32_t live = 1;
        for (int guard = 0; live > 0 && guard < 100000; guard++) pagoda_engine_step(es[k], &live);
        CHECK(alone[k].done == N_REQ, "engine %c alone: %d requests finished", 'A' + k, alone[k].done);
    }
    /* both at once, each on its own engine thread */
    int base_threads = process_threads();
    CHECK(pagoda_engine_start(ea) == PAGODA_OK && pagoda_engine_start(eb) == PAGODA_OK, "start");
    submit_all(ea, &both[0], ctx[0]);
    submit_all(eb, &both[1], ctx[1]);
    int max_threads = 0;
    for (;;) {
        int t = process_threads();
        if (t > max_threads) max_threads = t;
        pthread_mutex_lock(&both[0].mu);
        int da = both[0].done;
        pthread_mutex_unlock(&both[0].mu);
        pthread_mutex_lock(&both[1].mu);
        int db = both[1].done;
        pthread_mutex_unlock(&both[1].mu);
        if (da == N_REQ && db == N_REQ) break;
        usleep(2000);
    }
    wait_done(&both[0]), wait_done(&both[1]);
    /* this thread + two engine threads; a one-thread OpenMP team starts no workers */
    CHECK(max_threads <= base_threads + 2, "%d threads ran (%d before the engines started): oversubscribed", max_threads,
          base_threads);
    printf("two engines: %d threads at most (%d before), broker cores %d/%d\n", max_threads, base_threads, bs.cores_used,
           bs.cores_total);
    for (int k = 0; k < 2; k++) {
        int same = 0;
        for (int i = 0; i < N_REQ; i++)
            same += alone[k].n[i] == both[k].n[i] && alone[k].n[i] == N_GEN &&
                    !memcmp(alone[k].tokens[i], both[k].tokens[i], sizeof(int32_t) * N_GEN);
        CHECK(same == N_REQ, "engine %c: %d of %d requests equal alone and concurrently", 'A' + k, same, N_REQ);
        printf("engine %c (%s): %d/%d requests equal alone and concurrently\n", 'A' + k, k ? ib.arch : ia.arch, same, N_REQ);
    }

    /* destroying A gives its core and memory back: a new engine fits again */
    pagoda_engine_destroy(ea);
    pagoda_memory_broker_get_stats(broker, &bs);
    CHECK(bs.cores_used == 1 && bs.n_engines == 1 && bs.host_used == sb.kv_bytes, "after A: cores %d, engines %d",
          bs.cores_used, bs.n_engines);
    CHECK(make_engine(ma, broker, 0, 64ull << 20, &ec) == PAGODA_OK, "engine C: %s", pagoda_last_error());
    pagoda_engine_stats scs;
    if (ec) {
        pagoda_engine_get_stats(ec, &scs);
        CHECK(scs.kv_bytes <= (48ull << 20), "C took %llu bytes of 48 MiB left", (unsigned long long)scs.kv_bytes);
    }
    pagoda_engine_destroy(ec);
    pagoda_engine_destroy(eb);
    pagoda_memory_broker_get_stats(broker, &bs);
    CHECK(bs.cores_used == 0 && bs.host_used == 0 && bs.n_engines == 0, "broker not empty at the end");
    pagoda_memory_broker_destroy(broker);
    pagoda_model_free(ma), pagoda_model_free(mb);
    TEST_DONE();
}
