#define _GNU_SOURCE
#include "jsonl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Reads everything from fd (at most max_bytes) into a malloc'd NUL-terminated buffer. */
static int read_all(int fd, size_t max_bytes, char **data, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) return -ENOMEM;
    for (;;) {
        if (n == cap) {
            if (cap >= max_bytes) { free(buf); return -EFBIG; }
            cap = cap * 2 > max_bytes ? max_bytes : cap * 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) { free(buf); return -ENOMEM; }
            buf = nb;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { int e = errno; free(buf); return -e; }
        if (r == 0) break;
        n += (size_t)r;
    }
    buf[n] = 0;
    *data = buf, *len = n;
    return 0;
}

int jsonl_read_file(const char *path, size_t max_bytes, char **data, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "pagoda: %s: %s\n", path, strerror(errno));
        return 1;
    }
    unsigned char magic[2] = {0, 0};
    ssize_t got = pread(fd, magic, 2, 0);
    int gz = ends_with(path, ".gz") || (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b);
    int rc;
    if (!gz) {
        rc = read_all(fd, max_bytes, data, len);
        close(fd);
    } else {
        /* gzip -dc < file: the file is the child's stdin, so no shell and no quoting */
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC)) {
            close(fd);
            fprintf(stderr, "pagoda: pipe: %s\n", strerror(errno));
            return 1;
        }
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, fd, 0);
        posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
        char *args[] = {"gzip", "-dc", NULL};
        pid_t pid;
        int err = posix_spawnp(&pid, "gzip", &fa, NULL, args, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(fd);
        close(pfd[1]);
        if (err) {
            close(pfd[0]);
            fprintf(stderr, "pagoda: %s: cannot run gzip to decompress it: %s\n", path, strerror(err));
            return 1;
        }
        rc = read_all(pfd[0], max_bytes, data, len);
        close(pfd[0]);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        if (!rc && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            free(*data);
            fprintf(stderr, "pagoda: %s: gzip -dc failed (not a valid gzip file?)\n", path);
            return 1;
        }
    }
    if (rc) {
        fprintf(stderr, "pagoda: %s: %s\n", path, rc == -EFBIG ? "file too large" : strerror(-rc));
        return 1;
    }
    return 0;
}

int jsonl_load(const char *path, json_t ***rows_out, size_t *n_out) {
    char *data;
    size_t len;
    if (jsonl_read_file(path, (size_t)1 << 30, &data, &len)) return 1;
    size_t cap = 256, n = 0;
    json_t **rows = malloc(cap * sizeof *rows);
    if (!rows) { free(data); return 1; }
    char *p = data, *end = data + len;
    for (size_t line = 1; p < end; line++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        size_t l = (size_t)(e - p);
        const char *q = p;
        while (q < e && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q < e) {
            json_error_t jerr;
            json_t *v = json_loadb(p, l, JSON_REJECT_DUPLICATES, &jerr);
            if (!v || !json_is_object(v)) {
                fprintf(stderr, "pagoda: %s:%zu: %s\n", path, line, v ? "not a JSON object" : jerr.text);
                json_decref(v);
                jsonl_free(rows, n);
                free(data);
                return 1;
            }
            if (n == cap) {
                json_t **nr = realloc(rows, 2 * cap * sizeof *rows);
                if (!nr) { json_decref(v); jsonl_free(rows, n); free(data); return 1; }
                rows = nr, cap *= 2;
            }
            rows[n++] = v;
        }
        p = nl ? nl + 1 : end;
    }
    free(data);
    *rows_out = rows, *n_out = n;
    return 0;
}

void jsonl_free(json_t **rows, size_t n) {
    if (!rows) return;
    for (size_t i = 0; i < n; i++) json_decref(rows[i]);
    free(rows);
}

const char *jsonl_str(const json_t *row, const char *key) {
    return json_string_value(json_object_get(row, key));
}

static int try_path(char *buf, size_t cap, const char *dir, const char *rel) {
    if (!dir || !*dir) return 1;
    int w = snprintf(buf, cap, "%s/%s", dir, rel);
    if (w < 0 || (size_t)w >= cap) return 1;
    return access(buf, R_OK) ? 1 : 0;
}

int jsonl_find_humaneval(char *buf, size_t cap) {
    const char *rel = "data/HumanEval.jsonl.gz";
    if (!try_path(buf, cap, getenv("PAGODA_SHARED"), rel)) return 0;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0; /* the binary's folder: <repo>/build; shared lies next to the repo */
            const char *ups[] = {"../../shared", "../shared"};
            for (size_t i = 0; i < 2; i++) {
                char dir[PATH_MAX + 32];
                snprintf(dir, sizeof dir, "%s/%s", exe, ups[i]);
                if (!try_path(buf, cap, dir, rel)) return 0;
            }
        }
    }
    if (!try_path(buf, cap, "../shared", rel)) return 0;
    if (!try_path(buf, cap, "shared", rel)) return 0;
    return 1;
}
