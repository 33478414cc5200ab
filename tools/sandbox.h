/* Runs untrusted Python programs (model-written code) in a sandbox, several at a time.
 *
 * Each program runs as `python3 -I -B program.py` in a fresh temporary directory, in its own
 * process group, with rlimits (CPU seconds, address space, file size, open files, processes), stdin
 * from /dev/null, stdout/stderr captured to bounded files, an empty environment (PATH, HOME=the
 * temp dir) and a wall-clock timeout after which the whole process group is killed.
 *
 * Where the kernel allows unprivileged user namespaces the program also gets new user, mount, PID,
 * network, IPC and UTS namespaces: the whole filesystem is remounted read-only and the only writable
 * place is a size-capped tmpfs over the temp dir, there is no network (loopback only, down), it is
 * PID 1 of its own PID namespace (with a fresh /proc where the kernel permits), so killing it ends
 * every process it started, and it has no capabilities. When pagoda runs as root the program runs
 * as the unprivileged user 65534 (nobody), so DAC permissions apply to it and the process limit is
 * enforced. Where namespaces are not available it falls back to rlimits only (logged once); then
 * the program can write wherever its user can.
 *
 * The parent process must not have other children that it reaps with wait(-1). */
#ifndef PG_TOOLS_SANDBOX_H
#define PG_TOOLS_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *python;   /* interpreter; NULL: probe python3 on PATH, /usr/bin/python3, ... */
    double timeout_s;     /* wall clock per program (RLIMIT_CPU is its ceiling in seconds) */
    uint64_t mem_bytes;   /* RLIMIT_AS; 0: 1 GiB */
    int max_procs;        /* RLIMIT_NPROC (processes + threads per sandbox); 0: 64 */
    int jobs;             /* programs run at once; 0: the number of CPUs */
    int verbose;          /* log the isolation in effect to stderr */
} sb_config;

typedef enum { SB_PASSED = 0, SB_FAILED = 1, SB_TIMED_OUT = 2 } sb_status;

typedef struct {
    sb_status status;
    int exit_code;      /* -1 when killed by a signal */
    int signal;
    char message[256];  /* "passed", "timed out", or "failed: <last line of stderr>" */
} sb_outcome;

typedef struct sb_runner sb_runner;

/* Picks the strongest isolation that works here (by running a probe program) and the interpreter.
 * Returns 0, or prints why nothing works and returns 1. */
int sb_runner_create(const sb_config *cfg, sb_runner **out);
void sb_runner_destroy(sb_runner *r);
/* One line describing the isolation in effect. */
const char *sb_runner_isolation(const sb_runner *r);
const char *sb_runner_python(const sb_runner *r);

typedef void (*sb_progress_fn)(size_t done, size_t total, void *user);

/* Runs programs[0..n) (Python source text, borrowed), cfg->jobs at a time; out[i] gets program
 * i's outcome. progress (optional) is called after each program ends. Returns 0, or 1 when the
 * sandbox itself failed (out of memory, no temp dir). */
int sb_run_all(sb_runner *r, const char *const *programs, size_t n, sb_outcome *out, sb_progress_fn progress,
               void *user);

#endif
