/* pagoda bench load -m MODEL: how long a cold model takes to give its first token, phase by phase
 * (metadata, weights mapped, weights resident, first token), with the model's files out of the
 * page cache (cold: posix_fadvise DONTNEED on every file, checked with mincore) and in it (warm),
 * next to a plain sequential read() of the same files measured in the same run: the floor the
 * disk sets. With --llama-server PATH, `pagoda serve` and llama-server are also each started on
 * the same file and timed from process start to the first token of a /v1/completions request. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_common.h"
#include "commands.h"
#include "core/clock.h"
#include "http_client.h"

extern char **environ;

static const char k_usage[] =
            "usage: pagoda bench load -m MODEL [options]   cold and warm start of a model\n\n"
            "  -m, --model PATH      .gguf file or Hugging Face model folder\n"
            "  -r N                  repetitions; medians are reported (default 3)\n"
            "  -t N                  kernel threads (default: all cores)\n"
            "  --kv-mem SIZE         KV memory of the engine (default 256M)\n"
            "  --cases LIST          cold,warm (default both)\n"
            "  --llama-server PATH   also start `pagoda serve` and this llama-server on the same file\n"
            "                        and time each from process start to its first token\n"
            "  --json PATH           also write the results as JSON\n";

enum { MAX_FILES = 256, MAX_REPS = 50 };

typedef struct {
    char *path[MAX_FILES];
    uint64_t size[MAX_FILES];
    int n;
    uint64_t total;
} file_set;

static void files_free(file_set *f) {
    for (int i = 0; i < f->n; i++) free(f->path[i]);
    f->n = 0;
}

static int files_add(file_set *f, const char *path) {
    struct stat sb;
    if (stat(path, &sb) || !S_ISREG(sb.st_mode) || f->n == MAX_FILES) return 0;
    if (!(f->path[f->n] = strdup(path))) return -1;
    f->size[f->n++] = (uint64_t)sb.st_size;
    f->total += (uint64_t)sb.st_size;
    return 0;
}

/* The model's files: the file itself, or every regular file of the folder. */
static int files_of(const char *model, file_set *f) {
    memset(f, 0, sizeof *f);
    struct stat sb;
    if (stat(model, &sb)) return fprintf(stderr, "pagoda bench load: %s: %s\n", model, strerror(errno)), -1;
    if (!S_ISDIR(sb.st_mode)) return files_add(f, model);
    DIR *d = opendir(model);
    if (!d) return fprintf(stderr, "pagoda bench load: %s: %s\n", model, strerror(errno)), -1;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && snprintf(p, sizeof p, "%s/%s", model, e->d_name) < (int)sizeof p) files_add(f, p);
    closedir(d);
    return 0;
}

/* Asks the kernel to drop the files' clean pages from the page cache; returns the share of their
 * bytes still resident afterwards (mincore), so a cold case that is not cold can be told. */
static double drop_cache(const file_set *f) {
    uint64_t resident = 0, total = 0;
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < f->n; i++) {
        int fd = open(f->path[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        size_t n = (size_t)f->size[i];
        void *map = n ? mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
        if (map != MAP_FAILED) {
            size_t np = (n + (size_t)page - 1) / (size_t)page;
            unsigned char *vec = malloc(np);
            if (vec && !mincore(map, n, vec))
                for (size_t k = 0; k < np; k++) resident += (vec[k] & 1) ? (uint64_t)page : 0;
            free(vec);
            munmap(map, n);
        }
        total += n;
        close(fd);
    }
    return total ? (double)(resident > total ? total : resident) / (double)total : 0;
}

/* Seconds to read() every byte of the files in 16 MiB pieces: the sequential-read floor. */
static double sequential_read(const file_set *f) {
    size_t cap = (size_t)16 << 20;
    char *buf = malloc(cap);
    if (!buf) return -1;
    double t0 = pg_now_s();
    for (int i = 0; i < f->n; i++) {
        int fd = open(f->path[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        while (read(fd, buf, cap) > 0) {}
        close(fd);
    }
    double t = pg_now_s() - t0;
    free(buf);
    return t;
}

typedef struct {
    int done, failed, got_token;
    double t_token;
} load_req;

static void on_event(const pagoda_event *ev, void *user) {
    load_req *q = user;
    if (ev->token >= 0 && !q->got_token) q->got_token = 1, q->t_token = pg_now_s();
    if (ev->finish == PAGODA_FINISH_ERROR || ev->finish == PAGODA_FINISH_CANCELLED) q->failed = 1;
    if (ev->request_done) q->done = 1;
}

typedef struct {
    double meta, mapped, resident, first; /* seconds from the start of the load */
} phases;

/* One in-process load: vocabulary + metadata, weights mapped, weights resident, one greedy token
 * of a one-token prompt through a fresh engine. */
static int load_once(const char *model, int32_t threads, uint64_t kv_mem, phases *ph) {
    pagoda_model *m = NULL;
    pagoda_engine *e = NULL;
    int rc = 1;
    double t0 = pg_now_s();
    if (pagoda_model_load_vocab(model, &m)) return cli_error("bench load");
    ph->meta = pg_now_s() - t0;
    pagoda_model_free(m), m = NULL;
    if (pagoda_model_load(model, &m)) return cli_error("bench load");
    ph->mapped = pg_now_s() - t0;
    pagoda_model_prefault(m, NULL, NULL);
    ph->resident = pg_now_s() - t0;
    pagoda_engine_config ec;
    pagoda_engine_config_default(&ec);
    ec.n_threads = threads;
    ec.kv_mem_bytes = kv_mem;
    if (pagoda_engine_create(m, &ec, &e)) { cli_error("bench load"); goto out; }
    int32_t tok = 1;
    load_req q = {0};
    pagoda_request rq;
    pagoda_request_default(&rq);
    rq.prompt_tokens = &tok, rq.n_prompt_tokens = 1, rq.max_tokens = 1, rq.ignore_eos = 1;
    rq.sampling.temperature = 0;
    rq.on_event = on_event, rq.user = &q;
    if (pagoda_engine_submit(e, &rq, NULL)) { cli_error("bench load"); goto out; }
    while (!q.done)
        if (pagoda_engine_step(e, NULL)) { cli_error("bench load"); goto out; }
    if (q.failed || !q.got_token) { fprintf(stderr, "pagoda bench load: the request failed\n"); goto out; }
    ph->first = q.t_token - t0;
    rc = 0;
out:
    pagoda_engine_destroy(e);
    pagoda_model_free(m);
    return rc;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &n))
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

typedef struct {
    int done, ok;
} post_state;

static void on_post_done(void *user, const hc_result *r) {
    post_state *p = user;
    p->done = 1, p->ok = r->ok;
}

/* Starts argv (output to /dev/null), waits for GET /health to answer 200, sends one
 * one-token completion and returns the seconds from the start to its answer (-1: failed). */
static double server_first_token(char *const *argv, int port, double limit_s) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    double t0 = pg_now_s(), result = -1;
    int err = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err) {
        fprintf(stderr, "pagoda bench load: cannot start %s: %s\n", argv[0], strerror(err));
        return -1;
    }
    char url[128], e[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/health", port);
    for (;;) {
        long status = 0;
        char *body = NULL;
        int r = hc_get(url, NULL, 2, &status, &body, e, sizeof e);
        free(body);
        if (!r && status == 200) break;
        int ws;
        if (waitpid(pid, &ws, WNOHANG) == pid) {
            fprintf(stderr, "pagoda bench load: %s exited before it was ready\n", argv[0]);
            return -1;
        }
        if (pg_now_s() - t0 > limit_s) goto out;
        usleep(2000);
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/completions", port);
    hc_client *c = hc_client_create();
    post_state ps = {0};
    hc_handler h = {.on_done = on_post_done, .user = &ps};
    if (c && !hc_post_json(c, url, NULL, "{\"prompt\": [1, 2], \"max_tokens\": 1, \"temperature\": 0}", (long)limit_s, &h))
        while (!ps.done) hc_client_run(c, 50);
    hc_client_destroy(c);
    if (ps.ok) result = pg_now_s() - t0;
    else fprintf(stderr, "pagoda bench load: %s: the completion failed\n", argv[0]);
out:
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return result;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    if (n <= 0) return -1;
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    double seq, meta, mapped, resident, first, serve, llama, cached_after_drop;
} case_result;

int cmd_bench_load(int argc, char **argv) {
    const char *model = NULL, *json_path = NULL, *llama = NULL, *cases = "cold,warm";
    long reps = 3, threads = 0;
    uint64_t kv_mem = (uint64_t)256 << 20;
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(k_usage, stderr), 0;
        if (!cli_option_listed(a, k_usage)) return cli_unknown_option("pagoda bench load", a, k_usage);
        if (!v) { fprintf(stderr, "pagoda bench load: option '%s' needs a value\n", a); return 2; }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "-r")) bad = cli_int(a, v, 1, MAX_REPS, &reps);
        else if (!strcmp(a, "-t")) bad = cli_int(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "--kv-mem")) bad = cli_size(a, v, &kv_mem);
        else if (!strcmp(a, "--cases")) cases = v;
        else if (!strcmp(a, "--llama-server")) llama = v;
        else if (!strcmp(a, "--json")) json_path = v;
        else return cli_unknown_option("pagoda bench load", a, k_usage);
        if (bad) return 2;
    }
    if (!model) return fputs(k_usage, stderr), 2;
    file_set fs;
    if (files_of(model, &fs)) return 1;
    if (!fs.n) return fprintf(stderr, "pagoda bench load: %s: no files\n", model), 1;
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) return fprintf(stderr, "pagoda bench load: cannot find the pagoda binary\n"), 1;
    self[sl] = 0;
    printf("model: %s (%d files, %.1f MiB)\n", model, fs.n, fs.total / 1048576.0);
    const char *names[2] = {"cold", "warm"};
    case_result res[2];
    int ran[2] = {strstr(cases, "cold") != NULL, strstr(cases, "warm") != NULL};
    int rc = 0;
    for (int c = 0; c < 2 && !rc; c++) {
        if (!ran[c]) continue;
        double v[8][MAX_REPS];
        int nv[8] = {0};
        for (int r = 0; r < reps && !rc; r++) {
            fprintf(stderr, "\r%s: repetition %d/%ld ", names[c], r + 1, reps);
            /* the sequential-read floor, then the load, each from the same cache state */
            double left = c == 0 ? drop_cache(&fs) : (sequential_read(&fs), 1.0);
            v[7][nv[7]++] = c == 0 ? left : 1.0;
            v[0][nv[0]++] = sequential_read(&fs);
            if (c == 0) drop_cache(&fs);
            phases ph = {0};
            if (load_once(model, (int32_t)threads, kv_mem, &ph)) { rc = 1; break; }
            v[1][nv[1]++] = ph.meta, v[2][nv[2]++] = ph.mapped, v[3][nv[3]++] = ph.resident, v[4][nv[4]++] = ph.first;
            if (llama) {
                char port_s[16], t_s[16];
                snprintf(t_s, sizeof t_s, "%ld", threads > 0 ? threads : sysconf(_SC_NPROCESSORS_ONLN));
                snprintf(port_s, sizeof port_s, "%d", free_port());
                char *pa[] = {self, "serve", (char *)model, "--port", port_s, "-t", t_s, "--kv-mem", "256M", NULL};
                if (c == 0) drop_cache(&fs);
                double t = server_first_token(pa, atoi(port_s), 300);
                snprintf(port_s, sizeof port_s, "%d", free_port());
                char *la[] = {(char *)llama, "-m", (char *)model, "--port", port_s, "-t", t_s, "-c", "2048", NULL};
                if (c == 0) drop_cache(&fs);
                double tl = server_first_token(la, atoi(port_s), 300);
                if (t < 0 || tl < 0) { rc = 1; break; }
                v[5][nv[5]++] = t, v[6][nv[6]++] = tl;
            }
        }
        fprintf(stderr, "\r%*s\r", 40, "");
        res[c] = (case_result){median(v[0], nv[0]), median(v[1], nv[1]), median(v[2], nv[2]), median(v[3], nv[3]),
                               median(v[4], nv[4]), median(v[5], nv[5]), median(v[6], nv[6]), median(v[7], nv[7])};
    }
    if (rc) return files_free(&fs), rc;
    printf("%-34s", "seconds (median)");
    for (int c = 0; c < 2; c++)
        if (ran[c]) printf("%12s", names[c]);
    printf("\n");
    const char *rows[] = {"sequential read of the files", "metadata + vocabulary", "weights mapped",
                          "weights resident", "first token (in process)", "pagoda serve: first token",
                          "llama-server: first token"};
    for (int k = 0; k < 7; k++) {
        if (k >= 5 && !llama) break;
        printf("%-34s", rows[k]);
        for (int c = 0; c < 2; c++) {
            if (!ran[c]) continue;
            const double *f = &res[c].seq;
            printf("%12.3f", f[k]);
        }
        printf("\n");
    }
    for (int c = 0; c < 2; c++) {
        if (!ran[c]) continue;
        printf("%s: read %.2f GB/s; first token / sequential read %.2fx", names[c], fs.total / res[c].seq / 1e9,
               res[c].first / res[c].seq);
        if (llama) printf("; pagoda serve / llama-server %.2fx", res[c].serve / res[c].llama);
        if (c == 0) printf("; %.1f%% of the files still cached after the drop", 100 * res[c].cached_after_drop);
        printf("\n");
    }
    if (json_path) {
        FILE *f = fopen(json_path, "w");
        if (!f) rc = cli_error(json_path);
        else {
            fprintf(f, "{\"model\": \"%s\", \"bytes\": %llu, \"reps\": %ld", model, (unsigned long long)fs.total, reps);
            for (int c = 0; c < 2; c++) {
                if (!ran[c]) continue;
                const case_result *r = &res[c];
                fprintf(f, ", \"%s\": {\"sequential_read_s\": %.6f, \"metadata_s\": %.6f, \"mapped_s\": %.6f, "
                           "\"resident_s\": %.6f, \"first_token_s\": %.6f", names[c], r->seq, r->meta, r->mapped,
                        r->resident, r->first);
                if (llama) fprintf(f, ", \"serve_first_token_s\": %.6f, \"llama_server_first_token_s\": %.6f", r->serve, r->llama);
                fprintf(f, "}");
            }
            fprintf(f, "}\n");
            fclose(f);
        }
    }
    files_free(&fs);
    return rc;
}
