/* hb — tiny multi-call helper for the hermesinit benchmarks (bench/run).
 *
 * Built statically so that exec'ing it costs the same for every contender and nothing it
 * does is hidden behind a shell. Every timestamp is CLOCK_MONOTONIC in nanoseconds, which is
 * shared across PID namespaces, so a stamp taken inside a namespace can be compared with one
 * taken by the driver on the host.
 *
 * Applets (the first argument, or argv[0]'s basename):
 *   ready FIFO [LINE]        print LINE, write one byte into FIFO, then wait; exit 0 on TERM/INT
 *   stamp TAG                print "TAG <ns>" on stdout and exit 0
 *   execstamp TAG CMD…       print "TAG <ns>" on stdout, then exec CMD
 *   stampto FILE CMD…        write "<ns>" into FILE, then exec CMD
 *   crasher STATE FIFO [MS]  append "S <ns>" to STATE; first run: wait MS milliseconds (default
 *                            0), append "X <ns>" and exit 1; later runs: behave like `ready FIFO`
 *   tick FILE                append one byte to FILE and exit 1 (a service that dies at once)
 *   fail                     exit 1 at once
 *   (as `run`)               an s6 `run` file without a shell: the applet and its arguments are
 *                            read from ./hb-args, one per line; exit 1 when there is none
 *   nop                      exit 0 at once (also when called as `hermes`)
 *   storm N                  make N orphans at once (see below) and time how long until PID 1
 *                            has reaped them all; prints "storm_ns <ns> n <N>"
 *   stopbench OPTS -- CMD…   run CMD (an `unshare … PID 1` command line), wait for readiness
 *                            bytes on a FIFO, send a signal to the namespace's PID 1 and time
 *                            until it is gone (pidfd) and until CMD is reaped
 *   execbench N CMD…         fork+exec+wait CMD N times; prints sorted statistics in ns
 *   runrss CMD…              run CMD (stdin/stdout inherited); print "elapsed_ns E maxrss_kb K
 *                            status S" on stderr. The launcher is this tiny static program, so
 *                            the peak RSS that wait4 reports (which includes the pre-exec image)
 *                            is CMD's own, not a big parent's (python's fork would dominate it)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    char buf[256];
    int n = snprintf(buf, sizeof buf, "hb: %s: %s\n", what, strerror(errno));
    if (write(2, buf, n) < 0) {}
    _exit(111);
}

static void put(int fd, const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) { if (errno == EINTR) continue; return; }
        s += w; n -= (size_t)w;
    }
}

static void on_term(int sig) { (void)sig; _exit(0); }

static void clean_signals(void) {
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static int app_ready(int argc, char **argv) {
    if (argc < 2) { put(2, "usage: ready FIFO [LINE]\n"); return 2; }
    clean_signals();
    if (argc > 2) {
        char buf[512];
        snprintf(buf, sizeof buf, "%s\n", argv[2]);
        put(1, buf);
    }
    int fd = open(argv[1], O_WRONLY | O_CLOEXEC);
    if (fd < 0) die(argv[1]);
    if (write(fd, "r", 1) != 1) die("write fifo");
    close(fd);
    for (;;) pause();
}

static int app_stamp(int argc, char **argv) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s %lld\n", argc > 1 ? argv[1] : "T", (long long)now_ns());
    put(1, buf);
    return 0;
}

static int app_execstamp(int argc, char **argv) {
    if (argc < 3) { put(2, "usage: execstamp TAG CMD...\n"); return 2; }
    app_stamp(2, argv);
    execvp(argv[2], argv + 2);
    die(argv[2]);
    return 111;
}

static int app_stampto(int argc, char **argv) {
    if (argc < 3) { put(2, "usage: stampto FILE CMD...\n"); return 2; }
    char buf[64];
    snprintf(buf, sizeof buf, "%lld\n", (long long)now_ns());
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) die(argv[1]);
    put(fd, buf);
    close(fd);
    execvp(argv[2], argv + 2);
    die(argv[2]);
    return 111;
}

static int app_crasher(int argc, char **argv) {
    if (argc < 3) { put(2, "usage: crasher STATE FIFO [MS]\n"); return 2; }
    int64_t t = now_ns();
    int fd = open(argv[1], O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (fd < 0) die(argv[1]);
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    int starts = 0;
    for (ssize_t i = 0; i < n; i++) if (buf[i] == 'S') starts++;
    char line[64];
    snprintf(line, sizeof line, "S %lld\n", (long long)t);
    put(fd, line);
    if (starts == 0) {
        int ms = argc > 3 ? atoi(argv[3]) : 0;
        if (ms > 0) {
            struct timespec d = {ms / 1000, (long)(ms % 1000) * 1000000L};
            nanosleep(&d, NULL);
        }
        snprintf(line, sizeof line, "X %lld\n", (long long)now_ns());
        put(fd, line);
        _exit(1);
    }
    close(fd);
    char *a[] = {"ready", argv[2], NULL};
    return app_ready(2, a);
}

/* A parent that never reaps makes N children that exit at once, waits (without reaping) until
 * every one is a zombie, notes the time and exits: all N zombies are re-parented to PID 1 at
 * that instant. We (its parent) then wait until every one of those pids is gone (kill(pid, 0)
 * fails with ESRCH once PID 1 has reaped it). */
static int app_storm(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10000;
    int p[2];
    if (pipe(p) < 0) die("pipe");
    pid_t mid = fork();
    if (mid < 0) die("fork");
    if (mid == 0) {
        close(p[0]);
        pid_t *kids = calloc((size_t)n, sizeof(pid_t));
        for (int i = 0; i < n; i++) {
            pid_t k = fork();
            if (k < 0) die("fork child");
            if (k == 0) _exit(0);
            kids[i] = k;
        }
        for (int i = 0; i < n; i++) {
            siginfo_t si;
            while (waitid(P_PID, (id_t)kids[i], &si, WEXITED | WNOWAIT) < 0 && errno == EINTR) {}
        }
        int64_t t0 = now_ns();
        if (write(p[1], &t0, sizeof t0) != sizeof t0) die("write");
        size_t left = (size_t)n * sizeof(pid_t);
        char *c = (char *)kids;
        while (left > 0) {
            ssize_t w = write(p[1], c, left);
            if (w < 0) die("write pids");
            c += w; left -= (size_t)w;
        }
        _exit(0);
    }
    close(p[1]);
    int64_t t0;
    pid_t *kids = calloc((size_t)n, sizeof(pid_t));
    if (read(p[0], &t0, sizeof t0) != sizeof t0) die("read t0");
    size_t left = (size_t)n * sizeof(pid_t);
    char *c = (char *)kids;
    while (left > 0) {
        ssize_t r = read(p[0], c, left);
        if (r <= 0) die("read pids");
        c += r; left -= (size_t)r;
    }
    waitpid(mid, NULL, 0);
    struct timespec nap = {0, 50000};
    int64_t deadline = t0 + 60LL * 1000000000LL;
    for (int i = 0; i < n; i++) {
        while (kill(kids[i], 0) == 0 || errno != ESRCH) {
            if (now_ns() > deadline) {
                char buf[128];
                snprintf(buf, sizeof buf, "storm_timeout %d/%d\n", i, n);
                put(1, buf);
                return 1;
            }
            nanosleep(&nap, NULL);
        }
    }
    int64_t t1 = now_ns();
    char buf[128];
    snprintf(buf, sizeof buf, "storm_ns %lld n %d\n", (long long)(t1 - t0), n);
    put(1, buf);
    return 0;
}

/* stopbench [-f FIFO] [-n READY] [-s SETTLE_MS] [-t TIMEOUT_S] [-g SIG] -- CMD…
 * Prints: ready_ns R stop_ns S reap_ns W status X
 *   ready_ns: fork of CMD → the READY-th byte on FIFO
 *   stop_ns:  signal sent to PID 1 → PID 1 gone (its pidfd readable)
 *   reap_ns:  signal sent → CMD (unshare) reaped */
static int app_stopbench(int argc, char **argv) {
    const char *fifo = NULL;
    int need = 1, settle_ms = 0, timeout_s = 30, sig = SIGTERM;
    int i = 1;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) { i++; break; }
        if (i + 1 >= argc) break;
        if (!strcmp(argv[i], "-f")) fifo = argv[++i];
        else if (!strcmp(argv[i], "-n")) need = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-s")) settle_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-t")) timeout_s = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-g")) sig = atoi(argv[++i]);
    }
    if (i >= argc || !fifo) { put(2, "usage: stopbench -f FIFO [-n N] [-s MS] [-t S] [-g SIG] -- CMD...\n"); return 2; }
    int ffd = open(fifo, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (ffd < 0) die(fifo);
    int64_t t_fork = now_ns();
    pid_t u = fork();
    if (u < 0) die("fork");
    if (u == 0) {
        setpgid(0, 0);
        execvp(argv[i], argv + i);
        die(argv[i]);
    }
    int got = 0;
    int64_t deadline = t_fork + (int64_t)timeout_s * 1000000000LL;
    while (got < need) {
        struct pollfd pf = {ffd, POLLIN, 0};
        int64_t left = (deadline - now_ns()) / 1000000;
        if (left <= 0) break;
        int r = poll(&pf, 1, (int)left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        char b[64];
        ssize_t k = read(ffd, b, sizeof b);
        if (k > 0) got += (int)k;
    }
    int64_t t_ready = now_ns();
    if (got < need) {
        char buf[128];
        snprintf(buf, sizeof buf, "hb stopbench: only %d of %d readiness bytes\n", got, need);
        put(2, buf);
        kill(-u, SIGKILL);
        kill(u, SIGKILL);
        waitpid(u, NULL, 0);
        put(1, "error not_ready\n");
        return 1;
    }
    /* The namespace's PID 1 is unshare's only child. */
    pid_t p1 = 0;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", u, u);
    int cfd = open(path, O_RDONLY | O_CLOEXEC);
    if (cfd >= 0) {
        ssize_t k = read(cfd, buf, sizeof buf - 1);
        if (k > 0) { buf[k] = 0; p1 = atoi(buf); }
        close(cfd);
    }
    if (p1 <= 0) { put(2, "hb stopbench: no PID 1 found\n"); kill(u, SIGKILL); return 1; }
    int pfd = (int)syscall(SYS_pidfd_open, p1, 0);
    if (pfd < 0) die("pidfd_open");
    if (settle_ms > 0) {
        struct timespec s = {settle_ms / 1000, (long)(settle_ms % 1000) * 1000000L};
        nanosleep(&s, NULL);
    }
    int64_t t0 = now_ns();
    if (kill(p1, sig) < 0) die("kill");
    struct pollfd pf = {pfd, POLLIN, 0};
    int64_t t1 = -1;
    while (1) {
        int r = poll(&pf, 1, timeout_s * 1000);
        if (r < 0 && errno == EINTR) continue;
        if (r > 0) t1 = now_ns();
        break;
    }
    if (t1 < 0) {
        put(2, "hb stopbench: PID 1 did not exit in time\n");
        kill(p1, SIGKILL);
    }
    int st = 0;
    while (waitpid(u, &st, 0) < 0 && errno == EINTR) {}
    int64_t t2 = now_ns();
    snprintf(buf, sizeof buf, "ready_ns %lld stop_ns %lld reap_ns %lld status %d\n",
             (long long)(t_ready - t_fork), (long long)(t1 < 0 ? -1 : t1 - t0), (long long)(t2 - t0),
             WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    put(1, buf);
    return 0;
}

static int app_tick(int argc, char **argv) {
    if (argc < 2) return 1;
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (fd >= 0) { put(fd, "."); close(fd); }
    return 1;
}

static int dispatch(int argc, char **argv);

/* s6-supervise execs ./run in the service directory; a symlink to hb reads its arguments here. */
static int app_run(void) {
    static char buf[4096];
    int fd = open("hb-args", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 1;
    buf[n] = 0;
    char *args[64];
    int argc = 0;
    args[argc++] = "hb";
    for (char *p = buf; *p && argc < 63;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        if (*p) args[argc++] = p;
        if (!nl) break;
        p = nl + 1;
    }
    args[argc] = NULL;
    return dispatch(argc, args);
}

static int app_runrss(int argc, char **argv) {
    if (argc < 2) { put(2, "usage: runrss CMD...\n"); return 2; }
    int64_t a = now_ns();
    pid_t p = fork();
    if (p < 0) die("fork");
    if (p == 0) {
        execvp(argv[1], argv + 1);
        die(argv[1]);
    }
    int st;
    struct rusage ru;
    while (wait4(p, &st, 0, &ru) < 0 && errno == EINTR) {}
    int64_t b = now_ns();
    char buf[160];
    snprintf(buf, sizeof buf, "elapsed_ns %lld maxrss_kb %ld status %d\n", (long long)(b - a), ru.ru_maxrss,
             WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    put(2, buf);
    return 0;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int app_execbench(int argc, char **argv) {
    if (argc < 3) { put(2, "usage: execbench N CMD...\n"); return 2; }
    int n = atoi(argv[1]);
    int64_t *t = calloc((size_t)n, sizeof(int64_t));
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int64_t a = now_ns();
        pid_t p = fork();
        if (p < 0) die("fork");
        if (p == 0) {
            int dn = open("/dev/null", O_WRONLY);
            if (dn >= 0) { dup2(dn, 1); }
            execv(argv[2], argv + 2);
            _exit(127);
        }
        int st;
        while (waitpid(p, &st, 0) < 0 && errno == EINTR) {}
        t[i] = now_ns() - a;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bad++;
    }
    qsort(t, (size_t)n, sizeof(int64_t), cmp64);
    char buf[256];
    snprintf(buf, sizeof buf, "median_ns %lld p10_ns %lld p90_ns %lld min_ns %lld n %d failed %d\n",
             (long long)t[n / 2], (long long)t[n / 10], (long long)t[n * 9 / 10], (long long)t[0], n, bad);
    put(1, buf);
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    if (!strcmp(base, "hermes") || !strcmp(base, "nop")) return 0;
    if (!strcmp(base, "run")) return app_run();
    return dispatch(argc, argv);
}

static int dispatch(int argc, char **argv) {
    if (argc < 2) { put(2, "usage: hb APPLET ARGS...\n"); return 2; }
    const char *a = argv[1];
    argc--; argv++;
    if (!strcmp(a, "ready")) return app_ready(argc, argv);
    if (!strcmp(a, "stamp")) return app_stamp(argc, argv);
    if (!strcmp(a, "execstamp")) return app_execstamp(argc, argv);
    if (!strcmp(a, "stampto")) return app_stampto(argc, argv);
    if (!strcmp(a, "crasher")) return app_crasher(argc, argv);
    if (!strcmp(a, "storm")) return app_storm(argc, argv);
    if (!strcmp(a, "stopbench")) return app_stopbench(argc, argv);
    if (!strcmp(a, "execbench")) return app_execbench(argc, argv);
    if (!strcmp(a, "runrss")) return app_runrss(argc, argv);
    if (!strcmp(a, "tick")) return app_tick(argc, argv);
    if (!strcmp(a, "fail")) return 1;
    if (!strcmp(a, "nop")) return 0;
    put(2, "hb: unknown applet\n");
    return 2;
}
