#define _GNU_SOURCE
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* The error of a failed setup (MonitorError text, or "monitor: <OSError>"). */

int fail_msg(bbuf *failure, const char *msg)
{
    bb_puts(failure, msg);
    return -1;
}

/* str(OSError(errno)) behind "monitor: ", optionally with its filename. */
int fail_os(bbuf *failure, int err, const char *filename)
{
    bb_printf(failure, "monitor: [Errno %d] %s", err, strerror(err));
    if (filename) {
        bb_puts(failure, ": '");
        bb_puts(failure, filename);
        bb_put(failure, '\'');
    }
    return -1;
}

/* "<what> <path>: <strerror>" */
int fail_path(bbuf *failure, const char *what, const char *path, int err)
{
    bb_printf(failure, "%s ", what);
    bb_puts(failure, path);
    bb_printf(failure, ": %s", strerror(err));
    return -1;
}


/* os.path.split */
void path_split(const char *p, size_t n, size_t *head_len, size_t *tail_off)
{
    size_t i = n;
    while (i > 0 && p[i - 1] != '/')
        i--;
    *tail_off = i;
    size_t h = i;
    bool all_slashes = true;
    for (size_t k = 0; k < h; k++)
        all_slashes &= p[k] == '/';
    if (h && !all_slashes)
        while (h > 0 && p[h - 1] == '/')
            h--;
    *head_len = h;
}

/* The directory of path (os.path.split's head, or "."), in a new buffer. */
void path_dir(bbuf *dir, const char *path)
{
    size_t hl, to;
    path_split(path, strlen(path), &hl, &to);
    if (hl)
        bb_putn(dir, path, hl);
    else
        bb_puts(dir, ".");
}

/* sock_address: the address for path and an fd to close after bind/connect (-1 if none).
 * Paths too long for sun_path are reached through /proc/<pid>/fd/<dirfd>/<name>, which any
 * root process (runc included) can resolve while the fd is open. -1 with errno on failure. */
int sock_address(const char *path, bbuf *addr, int *dfd)
{
    size_t n = strlen(path), hl, to;
    *dfd = -1;
    addr->n = 0;
    if (n <= SUN_PATH_MAX) {
        bb_putn(addr, path, n);
        return 0;
    }
    bbuf dir = {0};
    path_dir(&dir, path);
    int fd = open(dir.p, O_PATH | O_DIRECTORY | O_CLOEXEC);
    bb_free(&dir);
    if (fd < 0)
        return -1;
    *dfd = fd;
    path_split(path, n, &hl, &to);
    bb_printf(addr, "/proc/%d/fd/%d/", (int)getpid(), fd);
    bb_puts(addr, path + to);
    return 0;
}

/* -1 with ENAMETOOLONG if the address does not fit sun_path. */
static int make_sockaddr(const bbuf *addr, struct sockaddr_un *sa, socklen_t *len)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (addr->n >= sizeof sa->sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sa->sun_path, addr->p, addr->n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + addr->n);
    return 0;
}

/* _listen_unix: bind a 0600 socket at path, replacing a stale one. The fd, or -1 with the
 * message in failure: a live process listens there (a second monitor for one container), or
 * "<what> <path>: <strerror>". */
int listen_unix(const char *path, int backlog, int type, const char *what, bbuf *failure)
{
    struct sockaddr_un sa;
    socklen_t salen = 0;
    struct stat st;
    bbuf addr = {0};
    int dfd = -1;
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto oserror;
    if (sock_address(path, &addr, &dfd) < 0)
        goto oserror;
    if (lstat(path, &st) == 0) {
        if (make_sockaddr(&addr, &sa, &salen) == 0 &&
            connect(fd, (struct sockaddr *)&sa, salen) == 0) {
            close(fd);
            close_quiet(dfd);
            bb_free(&addr);
            bb_puts(failure, path);
            return fail_msg(failure, ": a monitor is already running for this container");
        }
        if (unlink(path) < 0) /* stale: nobody accepts */
            goto oserror;
        close(fd);
        fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
        if (fd < 0)
            goto oserror;
    }
    mode_t old = umask(0177);
    int rc = make_sockaddr(&addr, &sa, &salen);
    if (rc == 0)
        rc = bind(fd, (struct sockaddr *)&sa, salen);
    int e = errno;
    umask(old);
    close_quiet(dfd);
    dfd = -1;
    if (rc < 0) {
        errno = e;
        goto oserror;
    }
    if (listen(fd, backlog) < 0)
        goto oserror;
    set_nonblocking(fd);
    bb_free(&addr);
    return fd;
oserror:
    close_quiet(fd);
    close_quiet(dfd);
    bb_free(&addr);
    return fail_path(failure, what, path, errno);
}

static const int reset_signals[] = {SIGPIPE, SIGXFSZ, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGCHLD};

/* posix_spawn with the given stdio (NULL: /dev/null), env PATH only, the monitor's ignored
 * signals back at their defaults (ignored dispositions survive exec and the container would
 * inherit them) and an empty signal mask; every other fd is close-on-exec. 0 or an errno. */
int spawn(char *const argv[], const int *stdio, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t def, none;
    const char *path = getenv("PATH");
    bbuf env = {0};
    bb_puts(&env, "PATH=");
    bb_puts(&env, path ? path : DEFAULT_PATH);
    char *envp[] = {env.p, NULL};
    posix_spawn_file_actions_init(&fa);
    for (int t = 0; t < 3; t++) {
        if (stdio)
            posix_spawn_file_actions_adddup2(&fa, stdio[t], t);
        else
            posix_spawn_file_actions_addopen(&fa, t, "/dev/null", t ? O_WRONLY : O_RDONLY, 0);
    }
    posix_spawnattr_init(&attr);
    sigemptyset(&def);
    for (size_t i = 0; i < sizeof reset_signals / sizeof *reset_signals; i++)
        sigaddset(&def, reset_signals[i]);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &def);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    int rc = posix_spawn(pid, argv[0], &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    bb_free(&env);
    return rc;
}

pid_t wait_for(pid_t pid, int *status)
{
    pid_t r;
    do
        r = waitpid(pid, status, 0);
    while (r < 0 && errno == EINTR);
    return r;
}

/* _read_available: what the pipe holds now (up to ~1 MiB), chunk by chunk. */

void read_available(int fd, unsigned char *buf, size_t size, chunk_fn fn, void *ctx)
{
    set_nonblocking(fd);
    size_t total = 0;
    while (total < READ_AVAILABLE_LIMIT) {
        ssize_t r = read(fd, buf, size);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        fn(ctx, (const char *)buf, (size_t)r);
        total += (size_t)r;
    }
}

void collect_chunk(void *ctx, const char *p, size_t n) { bb_putn(ctx, p, n); }

/* The whole file at path into out: 0 or an errno. */
int read_file(const char *path, bbuf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0;
    if (fd < 0)
        return errno;
    char buf[8192];
    for (ssize_t r; (r = read(fd, buf, sizeof buf)) != 0;) {
        if (r < 0 && errno != EINTR) {
            err = errno;
            break;
        }
        if (r > 0)
            bb_putn(out, buf, (size_t)r);
    }
    close(fd);
    return err;
}

/* Close every fd above 2 but keep[0..nkeep) (ascending). */
void close_fds_except(const int *keep, int nkeep)
{
    /* close_range between the kept fds; /proc/self/fd where the syscall is missing */
    unsigned int lo = 3;
    bool ok = true;
    for (int i = 0; i < nkeep && ok; i++) {
        if (keep[i] < (int)lo)
            continue;
        if (keep[i] > (int)lo)
            ok = syscall(SYS_close_range, lo, (unsigned int)keep[i] - 1, 0U) == 0;
        lo = (unsigned int)keep[i] + 1;
    }
    if (ok && syscall(SYS_close_range, lo, ~0U, 0U) == 0)
        return;
    int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    char buf[4096];
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (long off = 0; off < n;) {
            unsigned short reclen;
            memcpy(&reclen, buf + off + 16, sizeof reclen);
            const char *name = buf + off + 19;
            off += reclen;
            char *end;
            long fd = strtol(name, &end, 10);
            bool kept = fd <= 2 || fd == dfd;
            for (int i = 0; i < nkeep; i++)
                kept |= fd == keep[i];
            if (!*end && end != name && !kept)
                close((int)fd);
        }
    }
    close(dfd);
}
