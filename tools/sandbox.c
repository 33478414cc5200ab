#define _GNU_SOURCE
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "core/clock.h"

extern char **environ;

#define SB_NOBODY 65534  /* the unprivileged user programs run as when pagoda runs as root */
#define SB_INNER_ID 1000 /* the program's uid/gid inside its user namespace (non-zero: no capabilities) */
#define SB_STACK (256 * 1024)
#define SB_SETUP_FAILED 125
#define SB_TMPFS_MIB 64u /* the writable temp dir's size with namespaces */

enum { TIER_NAMESPACES = 0, TIER_RLIMITS = 1 };

struct sb_runner {
    sb_config cfg;
    int tier;
    int drop_uid;   /* running as root: programs run as SB_NOBODY */
    char python[PATH_MAX];
    char root[PATH_MAX]; /* this run's temp folder; one sub-folder per program */
    char isolation[1536];
    unsigned long serial;
    int null_fd;
    char *stack;
};

/* Everything the child needs, prepared before clone(): the child calls no malloc (the parent may
 * have other threads) and only async-signal-safe functions. */
typedef struct {
    const sb_runner *r;
    const char *dir;
    const char *prog;       /* dir/program.py */
    const char *tmpfs_opts; /* namespaces: options of the tmpfs mounted over dir */
    int sync_fd, sync_wr; /* namespaces: the child waits until the parent has written its id maps */
    int out_fd, err_fd;
    char *const *argv, *const *envp;
} child_args;

/* snprintf without gcc's -Wformat-truncation (truncated paths in messages are fine) */
__attribute__((format(printf, 3, 4))) static void msgf(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

static void put(const char *s) {
    ssize_t w = write(2, s, strlen(s));
    (void)w;
}

static void die(const char *what) {
    int e = errno;
    put("sandbox setup: ");
    put(what);
    put(" failed: ");
    const char *n = strerrorname_np(e);
    put(n ? n : "error");
    put("\n");
    _exit(SB_SETUP_FAILED);
}

static void set_limit(int res, rlim_t soft, rlim_t hard, const char *what) {
    struct rlimit rl = {soft, hard};
    if (setrlimit(res, &rl)) die(what);
}

static int child_main(void *arg) {
    const child_args *a = arg;
    const sb_runner *r = a->r;
    if (dup2(a->err_fd, 2) < 0 || dup2(a->out_fd, 1) < 0 || dup2(r->null_fd, 0) < 0) _exit(SB_SETUP_FAILED);
    if (setpgid(0, 0)) die("setpgid");
    if (r->tier == TIER_NAMESPACES) {
        char c;
        close(a->sync_wr);
        if (read(a->sync_fd, &c, 1) != 1) _exit(SB_SETUP_FAILED); /* the parent gave up */
        close(a->sync_fd);
        /* our own copy of the mount table: nothing we do propagates back */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) die("making mounts private");
        /* a /proc that shows only this namespace's processes (not essential: may be refused) */
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
        /* the program file, read before its folder is covered by the tmpfs below */
        int src = open(a->prog, O_RDONLY | O_CLOEXEC);
        if (src < 0) die("opening the program");
#ifdef MOUNT_ATTR_RDONLY
        struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID};
        if (mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, &ro, sizeof ro)) die("remounting / read-only");
#else
        errno = ENOSYS;
        die("mount_setattr (glibc too old)");
#endif
        /* the only writable place: a size-capped tmpfs over the temp dir (the disk cannot fill up) */
        if (mount("tmpfs", a->dir, "tmpfs", MS_NOSUID | MS_NODEV, a->tmpfs_opts)) die("mounting a tmpfs on the temp dir");
        if (r->drop_uid && setgroups(0, NULL)) die("setgroups");
        if (setresgid(SB_INNER_ID, SB_INNER_ID, SB_INNER_ID)) die("setresgid");
        if (setresuid(SB_INNER_ID, SB_INNER_ID, SB_INNER_ID)) die("setresuid");
        if (chdir(a->dir)) die("chdir to the temp dir");
        int dst = open("program.py", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (dst < 0) die("creating the program in the tmpfs");
        char buf[8192];
        for (;;) {
            ssize_t n = read(src, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) die("reading the program");
            if (n == 0) break;
            for (ssize_t off = 0; off < n;) {
                ssize_t w = write(dst, buf + off, (size_t)(n - off));
                if (w < 0 && errno == EINTR) continue;
                if (w < 0) die("copying the program");
                off += w;
            }
        }
        close(src);
        close(dst);
    } else {
        if (r->drop_uid) {
            if (setgroups(0, NULL)) die("setgroups");
            if (setresgid(SB_NOBODY, SB_NOBODY, SB_NOBODY)) die("setresgid");
            if (setresuid(SB_NOBODY, SB_NOBODY, SB_NOBODY)) die("setresuid");
        }
        if (chdir(a->dir)) die("chdir to the temp dir");
    }
    rlim_t cpu = (rlim_t)ceil(r->cfg.timeout_s);
    set_limit(RLIMIT_CPU, cpu, cpu + 1, "RLIMIT_CPU");
    set_limit(RLIMIT_AS, r->cfg.mem_bytes, r->cfg.mem_bytes, "RLIMIT_AS");
    set_limit(RLIMIT_FSIZE, 10 << 20, 10 << 20, "RLIMIT_FSIZE");
    set_limit(RLIMIT_NOFILE, 64, 64, "RLIMIT_NOFILE");
    set_limit(RLIMIT_CORE, 0, 0, "RLIMIT_CORE");
    set_limit(RLIMIT_NPROC, (rlim_t)r->cfg.max_procs, (rlim_t)r->cfg.max_procs, "RLIMIT_NPROC");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) die("PR_SET_NO_NEW_PRIVS");
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0); /* after the uid change, which clears it */
    /* unblock and reset signals the parent may have changed */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    syscall(SYS_close_range, 3U, ~0U, 0U);
    execve(r->python, a->argv, a->envp);
    die("exec of the python interpreter");
    return SB_SETUP_FAILED;
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = (ssize_t)strlen(text), w = write(fd, text, (size_t)n);
    close(fd);
    return w == n ? 0 : -1;
}

/* Maps the child's user namespace ids: SB_INNER_ID inside = nobody (as root) or our own ids. */
static int write_id_maps(const sb_runner *r, pid_t pid) {
    char path[64], map[64];
    unsigned uid = r->drop_uid ? SB_NOBODY : (unsigned)geteuid(), gid = r->drop_uid ? SB_NOBODY : (unsigned)getegid();
    if (!r->drop_uid) { /* an unprivileged writer may map only its own gid, after denying setgroups */
        msgf(path, sizeof path, "/proc/%d/setgroups", (int)pid);
        if (write_file(path, "deny")) return -1;
    }
    msgf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
    msgf(map, sizeof map, "%d %u 1\n", SB_INNER_ID, gid);
    if (write_file(path, map)) return -1;
    msgf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
    msgf(map, sizeof map, "%d %u 1\n", SB_INNER_ID, uid);
    return write_file(path, map);
}

typedef struct {
    pid_t pid;
    size_t idx;
    double deadline;
    int killed;
    int err_fd;
    char dir[PATH_MAX];
} slot;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)ftw;
    if (flag == FTW_DP || flag == FTW_D || flag == FTW_DNR) rmdir(path);
    else unlink(path);
    return 0;
}

static int chmod_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)ftw;
    if (flag == FTW_D || flag == FTW_DNR) chmod(path, (st->st_mode & 07777) | 0700);
    return 0;
}

static void rm_rf(const char *dir) {
    if (!dir[0]) return;
    nftw(dir, chmod_entry, 16, FTW_PHYS | FTW_MOUNT);
    nftw(dir, rm_entry, 16, FTW_PHYS | FTW_DEPTH | FTW_MOUNT);
}

/* Starts one program. Returns 0 (s->pid set), or -1 with a message in msg. */
static int spawn(sb_runner *r, const char *program, slot *s, char *msg, size_t msg_cap) {
    s->pid = -1, s->killed = 0, s->err_fd = -1;
    msgf(s->dir, sizeof s->dir, "%s/s%lu", r->root, r->serial++);
    int out_fd = -1, sync[2] = {-1, -1};
    if (mkdir(s->dir, 0700)) {
        msgf(msg, msg_cap, "sandbox: mkdir %s: %s", s->dir, strerror(errno));
        s->dir[0] = 0;
        return -1;
    }
    if (r->drop_uid && chown(s->dir, SB_NOBODY, SB_NOBODY)) {
        msgf(msg, msg_cap, "sandbox: chown %s: %s", s->dir, strerror(errno));
        return -1;
    }
    char path[PATH_MAX + 32];
    msgf(path, sizeof path, "%s/program.py", s->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t len = strlen(program);
    if (fd < 0 || write(fd, program, len) != (ssize_t)len) {
        msgf(msg, msg_cap, "sandbox: cannot write %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    msgf(path, sizeof path, "%s/.stdout", s->dir);
    out_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    msgf(path, sizeof path, "%s/.stderr", s->dir);
    s->err_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out_fd < 0 || s->err_fd < 0) {
        msgf(msg, msg_cap, "sandbox: cannot create output files in %s: %s", s->dir, strerror(errno));
        goto fail;
    }
    char home[PATH_MAX + 8];
    msgf(home, sizeof home, "HOME=%s", s->dir);
    char *envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", home, "LANG=C.UTF-8", NULL};
    char *argv[] = {"python3", "-I", "-B", "program.py", NULL};
    int flags = SIGCHLD;
    if (r->tier == TIER_NAMESPACES) {
        if (pipe2(sync, O_CLOEXEC)) {
            msgf(msg, msg_cap, "sandbox: pipe: %s", strerror(errno));
            goto fail;
        }
        flags |= CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
    }
    char prog[PATH_MAX + 32], opts[128];
    msgf(prog, sizeof prog, "%s/program.py", s->dir);
    msgf(opts, sizeof opts, "size=%um,nr_inodes=4096,mode=0700,uid=%d,gid=%d", SB_TMPFS_MIB, SB_INNER_ID, SB_INNER_ID);
    child_args a = {r, s->dir, prog, opts, sync[0], sync[1], out_fd, s->err_fd, argv, envp};
    s->pid = clone(child_main, r->stack + SB_STACK, flags, &a);
    if (s->pid < 0) {
        msgf(msg, msg_cap, "sandbox: clone: %s", strerror(errno));
        goto fail;
    }
    if (r->tier == TIER_NAMESPACES) {
        close(sync[0]), sync[0] = -1;
        int bad = write_id_maps(r, s->pid);
        if (bad) msgf(msg, msg_cap, "sandbox: writing the user namespace id maps: %s", strerror(errno));
        if (bad || write(sync[1], "g", 1) != 1) {
            close(sync[1]);
            kill(s->pid, SIGKILL);
            while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR) {}
            s->pid = -1;
            sync[1] = -1;
            if (!bad) msgf(msg, msg_cap, "sandbox: the child did not start");
            goto fail;
        }
        close(sync[1]);
    } else {
        setpgid(s->pid, s->pid); /* also done by the child; whichever runs first */
    }
    close(out_fd);
    s->deadline = pg_now_s() + r->cfg.timeout_s;
    return 0;
fail:
    if (out_fd >= 0) close(out_fd);
    if (sync[0] >= 0) close(sync[0]);
    if (sync[1] >= 0) close(sync[1]);
    return -1;
}

/* The last non-blank line of the program's stderr, control characters replaced. */
static void last_stderr_line(int fd, char *buf, size_t cap) {
    buf[0] = 0;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || st.st_size <= 0) return;
    char tail[4096];
    off_t off = st.st_size > (off_t)sizeof tail ? st.st_size - (off_t)sizeof tail : 0;
    ssize_t n = pread(fd, tail, sizeof tail, off);
    if (n <= 0) return;
    while (n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == '\r' || tail[n - 1] == ' ')) n--;
    ssize_t start = n;
    while (start > 0 && tail[start - 1] != '\n') start--;
    size_t o = 0;
    for (ssize_t i = start; i < n && o + 1 < cap; i++)
        buf[o++] = (unsigned char)tail[i] < 0x20 ? ' ' : tail[i];
    buf[o] = 0;
}

static void finish(sb_runner *r, slot *s, int status, sb_outcome *o) {
    if (r->tier != TIER_NAMESPACES) killpg(s->pid, SIGKILL); /* leftovers in the group */
    memset(o, 0, sizeof *o);
    char line[200];
    last_stderr_line(s->err_fd, line, sizeof line);
    if (WIFEXITED(status)) {
        o->exit_code = WEXITSTATUS(status);
        o->signal = 0;
    } else {
        o->exit_code = -1;
        o->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    }
    if (s->killed || o->signal == SIGXCPU) {
        o->status = SB_TIMED_OUT;
        msgf(o->message, sizeof o->message, "timed out");
    } else if (o->exit_code == 0) {
        o->status = SB_PASSED;
        msgf(o->message, sizeof o->message, "passed");
    } else {
        o->status = SB_FAILED;
        if (line[0]) msgf(o->message, sizeof o->message, "failed: %s", line);
        else if (o->signal) msgf(o->message, sizeof o->message, "failed: killed by signal %d (%s)", o->signal, strsignal(o->signal));
        else msgf(o->message, sizeof o->message, "failed: exit code %d", o->exit_code);
    }
    if (s->err_fd >= 0) close(s->err_fd);
    s->err_fd = -1;
    rm_rf(s->dir);
    s->pid = -1;
}

int sb_run_all(sb_runner *r, const char *const *programs, size_t n, sb_outcome *out, sb_progress_fn progress,
               void *user) {
    int jobs = r->cfg.jobs;
    slot *slots = calloc((size_t)jobs, sizeof *slots);
    if (!slots) return 1;
    for (int j = 0; j < jobs; j++) slots[j].pid = -1;
    size_t next = 0, done = 0;
    int running = 0;
    while (done < n) {
        for (int j = 0; j < jobs && next < n; j++) {
            if (slots[j].pid > 0) continue;
            slots[j].idx = next;
            char msg[256];
            if (spawn(r, programs[next], &slots[j], msg, sizeof msg)) {
                sb_outcome *o = &out[next];
                memset(o, 0, sizeof *o);
                o->status = SB_FAILED;
                o->exit_code = -1;
                msgf(o->message, sizeof o->message, "failed: %s", msg);
                if (slots[j].err_fd >= 0) close(slots[j].err_fd);
                rm_rf(slots[j].dir);
                slots[j].pid = -1;
                done++;
                if (progress) progress(done, n, user);
            } else {
                running++;
            }
            next++;
        }
        int progressed = 0;
        double t = pg_now_s();
        for (int j = 0; j < jobs; j++) {
            slot *s = &slots[j];
            if (s->pid <= 0) continue;
            int status;
            pid_t w = waitpid(s->pid, &status, WNOHANG);
            if (w == s->pid || (w < 0 && errno == ECHILD)) {
                if (w < 0) status = 0x7f00; /* lost: report as failed */
                finish(r, s, status, &out[s->idx]);
                running--, done++, progressed = 1;
                if (progress) progress(done, n, user);
            } else if (t > s->deadline && !s->killed) {
                /* PID 1 of its namespace (its death ends all the others) and its process group */
                kill(s->pid, SIGKILL);
                killpg(s->pid, SIGKILL);
                s->killed = 1;
                progressed = 1;
            }
        }
        if (!progressed) {
            struct timespec ts = {0, 1000000}; /* 1 ms */
            nanosleep(&ts, NULL);
        }
    }
    free(slots);
    return 0;
}

/* sys.executable of `python3` on PATH (pyenv and venv shims resolve to the real interpreter). */
static int resolve_python3(char *buf, size_t cap) {
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC)) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    char *args[] = {"python3", "-c", "import sys; print(sys.executable)", NULL};
    pid_t pid;
    int err = posix_spawnp(&pid, "python3", &fa, NULL, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    size_t n = 0;
    if (!err) {
        ssize_t k;
        while (n + 1 < cap && ((k = read(pfd[0], buf + n, cap - 1 - n)) > 0 || (k < 0 && errno == EINTR)))
            if (k > 0) n += (size_t)k;
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    }
    close(pfd[0]);
    buf[n] = 0;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    return err || !n || buf[0] != '/' ? -1 : 0;
}

static const char *k_probe = "import sys\nprint(sys.version_info[0])\n";

int sb_runner_create(const sb_config *cfg, sb_runner **out) {
    sb_runner *r = calloc(1, sizeof *r);
    if (!r) return 1;
    r->cfg = *cfg;
    if (r->cfg.timeout_s <= 0) r->cfg.timeout_s = 10;
    if (!r->cfg.mem_bytes) r->cfg.mem_bytes = (uint64_t)1 << 30;
    if (r->cfg.max_procs <= 0) r->cfg.max_procs = 64;
    if (r->cfg.jobs <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        r->cfg.jobs = c > 0 ? (int)c : 1;
    }
    r->drop_uid = geteuid() == 0;
    r->null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    r->stack = malloc(SB_STACK);
    const char *tmp = getenv("TMPDIR");
    msgf(r->root, sizeof r->root, "%s/pagoda-sandbox-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (r->null_fd < 0 || !r->stack || !mkdtemp(r->root) || chmod(r->root, 0711)) {
        fprintf(stderr, "pagoda: sandbox: cannot create a temp dir (%s): %s\n", r->root, strerror(errno));
        r->root[0] = 0;
        sb_runner_destroy(r);
        return 1;
    }
    /* interpreters to try, in order */
    char cand[4][PATH_MAX];
    int n_cand = 0;
    if (cfg->python) msgf(cand[n_cand++], PATH_MAX, "%s", cfg->python);
    else {
        if (!resolve_python3(cand[n_cand], PATH_MAX)) n_cand++;
        const char *fixed[] = {"/usr/bin/python3", "/usr/local/bin/python3"};
        for (int i = 0; i < 2; i++) {
            int dup = 0;
            for (int k = 0; k < n_cand; k++) dup |= !strcmp(cand[k], fixed[i]);
            if (!dup && !access(fixed[i], X_OK)) msgf(cand[n_cand++], PATH_MAX, "%s", fixed[i]);
        }
    }
    if (!n_cand) {
        fprintf(stderr, "pagoda: sandbox: no python3 interpreter found (use --python PATH)\n");
        sb_runner_destroy(r);
        return 1;
    }
    char why[2][512] = {"", ""};
    /* PAGODA_SANDBOX=rlimits skips the namespaces (to test the fallback, or where a seccomp
     * profile makes namespace creation hang rather than fail) */
    const char *force = getenv("PAGODA_SANDBOX");
    int first = force && !strcmp(force, "rlimits") ? TIER_RLIMITS : TIER_NAMESPACES;
    if (first == TIER_RLIMITS) msgf(why[TIER_NAMESPACES], sizeof why[0], "PAGODA_SANDBOX=rlimits");
    char skipped[1024];
    for (r->tier = first; r->tier <= TIER_RLIMITS; r->tier++) {
        skipped[0] = 0;
        for (int k = 0; k < n_cand; k++) {
            msgf(r->python, sizeof r->python, "%s", cand[k]);
            sb_outcome o;
            int saved_jobs = r->cfg.jobs;
            r->cfg.jobs = 1;
            int bad = sb_run_all(r, &k_probe, 1, &o, NULL, NULL);
            r->cfg.jobs = saved_jobs;
            if (bad) { sb_runner_destroy(r); return 1; }
            if (o.status == SB_PASSED) goto chosen;
            if (!why[r->tier][0] || o.exit_code == SB_SETUP_FAILED)
                msgf(why[r->tier], sizeof why[r->tier], "%s: %s", cand[k], o.message);
            size_t l = strlen(skipped);
            msgf(skipped + l, sizeof skipped - l, "%s%s (%s)", l ? ", " : "", cand[k], o.message);
        }
    }
    fprintf(stderr, "pagoda: sandbox: cannot run python in the sandbox: %s\n", why[TIER_RLIMITS]);
    sb_runner_destroy(r);
    return 1;
chosen:;
    char procs[64];
    msgf(procs, sizeof procs, "%d processes", r->cfg.max_procs);
    if (r->tier == TIER_NAMESPACES)
        msgf(r->isolation, sizeof r->isolation,
                 "user+mount+pid+net+ipc+uts namespaces: read-only filesystem except a %u MiB tmpfs work dir, "
                 "no network, own PID namespace, %s; rlimits cpu %.0fs, address space %llu MiB, %s, "
                 "file size 10 MiB, 64 files",
                 SB_TMPFS_MIB, r->drop_uid ? "runs as uid 65534 (nobody)" : "runs as the invoking user",
                 ceil(r->cfg.timeout_s), (unsigned long long)(r->cfg.mem_bytes >> 20), procs);
    else
        msgf(r->isolation, sizeof r->isolation,
                 "rlimits only (namespaces unavailable: %s): cpu %.0fs, address space %llu MiB, %s%s, file size "
                 "10 MiB, 64 files; %s",
                 why[TIER_NAMESPACES], ceil(r->cfg.timeout_s), (unsigned long long)(r->cfg.mem_bytes >> 20), procs,
                 r->drop_uid ? "" : " (counting all of the user's processes)",
                 r->drop_uid ? "runs as uid 65534 (nobody): it can write wherever that user can"
                             : "the program can write wherever the invoking user can");
    if (r->cfg.verbose)
        fprintf(stderr, "sandbox: %s; python %s%s%s%s\n", r->isolation, r->python, skipped[0] ? " (not usable: " : "",
                skipped, skipped[0] ? ")" : "");
    *out = r;
    return 0;
}

void sb_runner_destroy(sb_runner *r) {
    if (!r) return;
    if (r->root[0]) rm_rf(r->root);
    if (r->null_fd >= 0) close(r->null_fd);
    free(r->stack);
    free(r);
}

const char *sb_runner_isolation(const sb_runner *r) { return r->isolation; }
const char *sb_runner_python(const sb_runner *r) { return r->python; }
