/* The fork server (crirt/monitor/forkserver.py's invariants and protocol) for the native
 * monitor: `crirt-monitor --fork-server SOCKET --code CODE`. It forks and execs this binary
 * for each monitor (~0.3 MB PSS where the Python server costs ~8 MB). CODE is what it answers
 * a ping with. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "forkserver.h"
#include "protocol.h"
#include "sys.h"

/* Exited monitors (orphaned to this subreaper) are reaped as soon as they end. */
static void reap_children(int sig_fd)
{
    struct signalfd_siginfo si;
    while (read(sig_fd, &si, sizeof si) > 0)
        ;
    int status;
    while (waitpid(-1, &status, WNOHANG) > 0)
        ;
}

#define FS_CONN_TIMEOUT 5 /* seconds a client may take to send its request */
#define FS_MAX_FDS 4      /* room to see (and refuse) a few fds too many; the kernel drops more */

/* The forked monitor: only the sync fd (and 0-2) open, the fork server's signal mask and
 * dispositions undone, then exec; if exec fails, a sync report line
 * (protocol.encode_sync: pid -1, this process, the exec error). */
static _Noreturn void exec_monitor(const char *const argv[], int fd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    close_fds_except(&fd, 1);
    fcntl(fd, F_SETFD, 0);
    execv(argv[0], (char *const *)argv);
    int err = errno;
    signal(SIGPIPE, SIG_IGN); /* crirt gone: the report fails quietly */
    bbuf e = {0};
    bb_puts(&e, "exec ");
    bb_puts(&e, argv[0]);
    bb_printf(&e, ": %s", strerror(err));
    bbuf line = {0};
    encode_sync(&line, -1, (int)getpid(), &e);
    write_all(fd, line.p, line.n);
    _exit(127);
}

/* forkserver._spawn_monitor: fork twice, the grandchild execs the monitor; the middle child
 * exits at once, so the monitor is orphaned to this process (its subreaper), not crirt's. */
static void fs_spawn(const jv *req, const int *fds, int nfds, bbuf *out, bbuf *e)
{
    const jv *spec_v = jget(req, "spec"), *exe = jget(req, "exec");
    if (nfds != 1) {
        bb_printf(e, "spawn: expected one sync pipe fd, got %d%s",
                  nfds > FS_MAX_FDS ? FS_MAX_FDS : nfds, nfds > FS_MAX_FDS ? " or more" : "");
        return;
    }
    if (!spec_v || spec_v->t != J_OBJ) {
        bb_puts(e, "spawn: missing spec (a JSON object)");
        return;
    }
    if (!exe || exe->t != J_STR || exe->s[0] != '/' || memchr(exe->s, 0, exe->n)) {
        bb_puts(e, "spawn: exec must be an absolute path");
        return;
    }
    /* Built before the fork: the child only closes fds and execs. The spec goes on as the
     * client wrote it; the monitor validates it. */
    char fdarg[16];
    snprintf(fdarg, sizeof fdarg, "%d", fds[0]);
    bbuf text = {0};
    bb_putn(&text, spec_v->src, spec_v->n);
    const char *argv[] = {exe->s, "--sync-fd", fdarg, "--foreground", text.p, NULL};
    int status = -1;
    pid_t pid = fork();
    if (pid == 0) {
        pid_t g = fork();
        if (g == 0)
            exec_monitor(argv, fds[0]);
        _exit(g < 0);
    }
    if (pid < 0)
        bb_printf(e, "fork: %s", strerror(errno));
    else if (wait_for(pid, &status) != pid || status != 0)
        bb_printf(e, "fork failed (status %#x)", (unsigned)status);
    else
        bb_puts(out, "{\"ok\":true}\n");
    bb_free(&text);
}

/* forkserver._serve_one: one request (a message, with fds) on a fresh connection, one reply.
 * Whatever the request, every fd received is closed before returning. */
static void fs_serve(int conn, const char *code, unsigned char *buf)
{
    struct timeval tv = {FS_CONN_TIMEOUT, 0};
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(FS_MAX_FDS * sizeof(int))];
    } ctl;
    struct iovec iov = {buf, MAX_MESSAGE + 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                        .msg_controllen = sizeof ctl.b};
    ssize_t n = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return; /* timed out or reset: nothing was received */
    /* Only the fds that arrived are kept and closed: a truncated SCM_RIGHTS message (MSG_CTRUNC)
     * carries fewer than its header claims, and the kernel has closed the rest. */
    int fds[FS_MAX_FDS], nfds = 0, got = 0;
    for (int k = 0; k < FS_MAX_FDS; k++)
        fds[k] = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
            continue;
        size_t room = (size_t)((char *)ctl.b + mh.msg_controllen - (char *)CMSG_DATA(c));
        size_t len = c->cmsg_len - CMSG_LEN(0);
        for (size_t k = 0; k < (len < room ? len : room) / sizeof(int); k++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
            if (got < FS_MAX_FDS)
                fds[got++] = fd;
            else
                close(fd);
        }
    }
    nfds = got;
    if (mh.msg_flags & MSG_CTRUNC)
        nfds = FS_MAX_FDS + 1; /* more than we could take: refused below like any wrong count */
    bbuf out = {0}, e = {0};
    ablk *a = NULL;
    size_t len = mh.msg_flags & MSG_TRUNC ? (size_t)MAX_MESSAGE + 1 : (size_t)n;
    jv *o = decode_request(buf, len, &a, &e), *op = o ? jget(o, "op") : NULL;
    if (!o) {
        reply_error(&out, &e);
    } else if (jis_str(op, "ping")) {
        bb_printf(&out, "{\"ok\":true,\"pid\":%d,\"code\":", (int)getpid());
        json_str(&out, code, strlen(code));
        bb_puts(&out, "}\n");
    } else if (jis_str(op, "exit")) {
        send(conn, "{\"ok\":true}\n", 12, MSG_NOSIGNAL);
        _exit(0); /* the monitors are not our children: they keep running */
    } else if (jis_str(op, "spawn")) {
        fs_spawn(o, fds, nfds, &out, &e);
        if (e.n)
            reply_error(&out, &e);
    } else {
        unknown_op(&out, op);
    }
    send(conn, out.p, out.n, MSG_NOSIGNAL);
    for (int i = 0; i < got; i++)
        close(fds[i]);
    afree(&a);
    bb_free(&e);
    bb_free(&out);
}

/* forkserver.main: `--fork-server SOCKET --code CODE`; prints "ready <pid>" or "busy". */
_Noreturn void fork_server(const char *path, const char *code)
{
    bbuf lock = {0};
    bb_puts(&lock, path);
    bb_puts(&lock, ".lock");
    int lock_fd = open(lock.p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0)
        die(1, lock.p, errno);
    if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK)
            die(1, lock.p, errno);
        write_all(1, "busy\n", 5); /* the client talks to the one holding the lock */
        _exit(0);
    }
    bb_free(&lock);
    bbuf failure = {0};
    int fd = listen_unix(path, 64, SOCK_SEQPACKET, "listen on", &failure);
    if (fd < 0)
        die(1, failure.p, 0);
    pid_t pid = fork();
    if (pid < 0)
        die(1, "fork", errno);
    if (pid) {
        char line[32];
        int n = snprintf(line, sizeof line, "ready %d\n", (int)pid);
        _exit(write_all(1, line, (size_t)n) < 0);
    }
    /* The server proper: own session, no cwd pinned, stdout /dev/null so the launcher's reader
     * sees EOF; stderr stays (the client's log file). Orphaned monitors are re-parented to us
     * (subreaper), so we reap them; they outlive both us and crirt. */
    setsid();
    prctl(PR_SET_NAME, "crirt-forksrv", 0, 0, 0);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
        die(1, "prctl(PR_SET_CHILD_SUBREAPER)", errno);
    if (chdir("/") < 0)
        die(1, "chdir /", errno);
    int null = open("/dev/null", O_RDWR);
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0)
        die(1, "/dev/null", errno);
    int keep[] = {lock_fd < fd ? lock_fd : fd, lock_fd < fd ? fd : lock_fd};
    close_fds_except(keep, 2);
    /* SIGCHLD through a signalfd: exited monitors are reaped (reap()) as soon as they end. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGCHLD, SIG_DFL);
    int sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sig_fd < 0)
        die(1, "signalfd", errno);
    unsigned char *buf = xmalloc(MAX_MESSAGE + 1);
    for (;;) {
        struct pollfd p[2] = {{sig_fd, POLLIN, 0}, {fd, POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            die(3, "poll", errno);
        if (p[0].revents)
            reap_children(sig_fd);
        int conn = p[1].revents ? accept4(fd, NULL, NULL, SOCK_CLOEXEC) : -1;
        if (conn >= 0) {
            fs_serve(conn, code, buf);
            close(conn);
        }
    }
}
