#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "json.h"
#include "monitor.h"
#include "sys.h"

#define LOG_FLAGS (O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW)
#define CONSOLE_TIMEOUT_MS 5000
#define ERROR_TAIL 4096
#define CGROUP_ROOT "/sys/fs/cgroup"

/* runc and its global options, the same for every call on this container: argv[0..n). */
static int runtime_argv(struct monitor *m, const char **argv)
{
    int n = 0;
    argv[n++] = m->spec.runtime_path;
    argv[n++] = "--root";
    argv[n++] = m->spec.runtime_root;
    if (m->spec.systemd_cgroup)
        argv[n++] = "--systemd-cgroup";
    return n;
}

void delete_container(struct monitor *m)
{
    const char *argv[8];
    int n = runtime_argv(m, argv);
    argv[n++] = "delete";
    argv[n++] = "--force";
    argv[n++] = m->spec.container_id;
    argv[n] = NULL;
    pid_t pid;
    int status;
    if (spawn((char *const *)argv, NULL, &pid) == 0)
        wait_for(pid, &status);
}

/* SIGKILL every process left in the container's cgroup (runc kill --all); not waited for
 * here (reap collects it). */
void kill_all(struct monitor *m)
{
    const char *argv[10];
    int n = runtime_argv(m, argv);
    argv[n++] = "kill";
    argv[n++] = "--all";
    argv[n++] = m->spec.container_id;
    argv[n++] = "KILL";
    argv[n] = NULL;
    pid_t pid;
    spawn((char *const *)argv, NULL, &pid);
}

/* _runc_error: runc's words (undecodable bytes replaced), stripped, at most the last 4096
 * characters, and how it ended. */
static void runc_error(struct monitor *m, const bbuf *raw, int status)
{
    bbuf text = {0};
    for (size_t i = 0; i < raw->n;) {
        uint32_t cp;
        size_t k = utf8_decode((const unsigned char *)raw->p + i, raw->n - i, &cp);
        if (k)
            bb_putn(&text, raw->p + i, k);
        else
            bb_puts(&text, "\xEF\xBF\xBD"); /* U+FFFD */
        i += k ? k : 1;
    }
    size_t a = 0, b = text.n, t, chars = 0;
    strip(text.p, &a, &b, true);
    for (t = b; t > a && chars < ERROR_TAIL; t--)
        chars += ((unsigned char)text.p[t - 1] & 0xC0) != 0x80;
    if (t > a) {
        a = t;
        bb_puts(&m->failure, "\xE2\x80\xA6"); /* "…" */
    }
    int code, sig;
    exit_from_status(status, &code, &sig);
    char how[64];
    if (sig)
        snprintf(how, sizeof how, "killed by signal %d", sig);
    else
        snprintf(how, sizeof how, "exit status %d", code);
    if (b > a) {
        bb_putn(&m->failure, text.p + a, b - a);
        bb_printf(&m->failure, " (%s)", how);
    } else {
        bb_printf(&m->failure, "runtime create failed: %s", how);
    }
    bb_free(&text);
}

int open_log(struct monitor *m)
{
    return open(m->spec.log_path, LOG_FLAGS, 0640);
}

/* One chunk of runc's output through the encoder; flushed at once, since the records point
 * into rbuf, which the next read reuses. */
static void write_log_chunk(void *ctx, const char *p, size_t n)
{
    void **c = ctx;
    enc_feed(c[0], c[1], p, n);
    lw_flush(c[1]);
}

static void add_stream(struct monitor *m, int fd, const char *name)
{
    set_nonblocking(fd);
    stream *s = &m->streams[m->nstreams++];
    s->fd = fd;
    s->enc = (encoder){.stream = name, .max_line = m->spec.log_max_line};
    poll_register(m, fd, POLLIN);
}

/* poll() for readability, up to the console timeout: >0, 0 (timed out) or -1 (errno) */
static int wait_readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    int r;
    while ((r = poll(&p, 1, CONSOLE_TIMEOUT_MS)) < 0 && errno == EINTR)
        ;
    return r;
}

/* _receive_console: the pty master runc sends on the console socket. */
static int receive_console(struct monitor *m, int lfd, int *master)
{
    int r = wait_readable(lfd);
    if (r <= 0)
        return r ? fail_os(&m->failure, errno, NULL) : fail_msg(&m->failure, "runtime did not send the console");
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return fail_os(&m->failure, errno, NULL);
    /* a 5 s socket timeout: wait for readability, then receive */
    if ((r = wait_readable(c)) <= 0) {
        int e = errno;
        close(c);
        return r ? fail_os(&m->failure, e, NULL) : fail_msg(&m->failure, "monitor: timed out");
    }
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctrl;
    struct iovec iov = {m->rbuf, 4096};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl.buf,
                         /* room for one fd exactly, as socket.recv_fds(conn, 4096, 1) */
                         .msg_controllen = CMSG_LEN(sizeof(int))};
    ssize_t n;
    do
        n = recvmsg(c, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    int e = errno;
    close(c);
    if (n < 0)
        return fail_os(&m->failure, e, NULL);
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
            cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
            memcpy(master, CMSG_DATA(cm), sizeof(int));
            return 0;
        }
    }
    return fail_msg(&m->failure, "runtime sent no console fd");
}

/* The pid runc wrote (int(f.read().strip()) in Python); -1 with the message in failure. */
static int read_pid_file(struct monitor *m)
{
    bbuf data = {0};
    int err = read_file(m->spec.pid_file, &data);
    size_t a = 0, b = data.n;
    char *end = NULL;
    strip(data.p, &a, &b, false);
    if (!err && b > a) {
        data.p[b] = 0;
        errno = 0;
        m->container_pid = strtoll(data.p + a, &end, 10);
        if (errno || end != data.p + b)
            end = NULL;
    }
    bb_free(&data);
    if (end)
        return 0;
    bb_puts(&m->failure, "read pid file ");
    bb_puts(&m->failure, m->spec.pid_file);
    bb_printf(&m->failure, ": %s", err ? strerror(err) : "not a process id");
    return -1;
}

/* _create: runc create (run --detach with spec.start); on success the container exists (and
 * runs) and container_pid is set; -1 with the message in `failure` otherwise. */
int create(struct monitor *m)
{
    if (*m->spec.log_path && (m->log_fd = open_log(m)) < 0)
        return fail_path(&m->failure, "open log file", m->spec.log_path, errno);
    if ((m->ctl_fd = listen_unix(m->spec.ctl_socket, 8, SOCK_STREAM, "listen on", &m->failure)) < 0)
        return -1;
    if (*m->spec.attach_socket &&
        (m->attach_fd = listen_unix(m->spec.attach_socket, 8, SOCK_SEQPACKET, "listen on", &m->failure)) < 0)
        return -1;
    int out_p[2], err_p[2], in_p[2] = {-1, -1};
    if (pipe2(out_p, O_CLOEXEC) < 0 || pipe2(err_p, O_CLOEXEC) < 0 ||
        (m->spec.stdin_ && !m->spec.tty && pipe2(in_p, O_CLOEXEC) < 0))
        return fail_os(&m->failure, errno, NULL);
    m->stdin_w = in_p[1];
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0)
        return fail_os(&m->failure, errno, "/dev/null");
    /* With start, `run --detach` is create + start in one runc process (one Go start-up less
     * than two calls); it returns once the container's process runs, which is then
     * reparented to this subreaper as after create. Its output waits in the pipes (or the
     * pty) until the loop reads it. */
    /* runc's own messages go to a file in the bundle, not to its stderr, which is the
     * container's: a warning (the systemd driver skipping a device, say) would otherwise land
     * in the container's log. A failure's words are read back from it. */
    static char runc_log[PATH_MAX];
    if (snprintf(runc_log, sizeof runc_log, "%s/runc.log", m->spec.bundle) >= (int)sizeof runc_log)
        return fail_os(&m->failure, ENAMETOOLONG, m->spec.bundle);
    unlink(runc_log);
    const char *argv[18];
    int n = runtime_argv(m, argv);
    argv[n++] = "--log";
    argv[n++] = runc_log;
    argv[n++] = m->spec.start ? "run" : "create";
    if (m->spec.start)
        argv[n++] = "--detach";
    argv[n++] = "--bundle";
    argv[n++] = m->spec.bundle;
    argv[n++] = "--pid-file";
    argv[n++] = m->spec.pid_file;
    int console_dfd = -1;
    bbuf console_addr = {0};
    if (m->spec.tty) {
        bbuf cp = {0};
        bb_puts(&cp, m->spec.ctl_socket);
        bb_puts(&cp, ".console");
        m->console_path = cp.p;
        if ((m->console_fd = listen_unix(m->console_path, 1, SOCK_STREAM, "console socket", &m->failure)) < 0)
            return -1;
        if (sock_address(m->console_path, &console_addr, &console_dfd) < 0) {
            /* OSError of os.open(dirname or "."), which names that directory */
            int e = errno;
            bbuf dir = {0};
            path_dir(&dir, m->console_path);
            fail_os(&m->failure, e, dir.p);
            bb_free(&dir);
            return -1;
        }
        argv[n++] = "--console-socket";
        argv[n++] = console_addr.p;
    }
    argv[n++] = m->spec.container_id;
    argv[n] = NULL;
    int stdio[3] = {in_p[0] >= 0 ? in_p[0] : null, out_p[1], err_p[1]};
    pid_t pid;
    int rc = spawn((char *const *)argv, stdio, &pid);
    close(out_p[1]);
    close(err_p[1]);
    close_quiet(in_p[0]);
    close(null);
    if (rc) {
        close_quiet(console_dfd);
        return fail_path(&m->failure, "exec", m->spec.runtime_path, rc);
    }
    int status = 0;
    if (wait_for(pid, &status) < 0) {
        close_quiet(console_dfd);
        return fail_os(&m->failure, errno, NULL);
    }
    close_quiet(console_dfd); /* runc resolved the console path through it */
    bb_free(&console_addr);
    if (status == 0) {
        m->created = true;
    } else {
        bbuf raw = {0};
        if (read_file(runc_log, &raw) != 0 || !raw.n) {
            raw.n = 0;
            read_available(err_p[0], m->rbuf + 1, READ_SIZE, collect_chunk, &raw);
            read_available(out_p[0], m->rbuf + 1, READ_SIZE, collect_chunk, &raw);
        }
        close(out_p[0]);
        close(err_p[0]);
        runc_error(m, &raw, status);
        bb_free(&raw);
        return -1;
    }
    if (read_pid_file(m) < 0)
        return -1;
    if (m->spec.tty) {
        int master = -1;
        rc = receive_console(m, m->console_fd, &master);
        close(m->console_fd);
        m->console_fd = -1;
        unlink(m->console_path);
        if (rc < 0)
            return -1;
        /* runc's own stdio carries only its warnings once the pty exists */
        logw *w = xmalloc(sizeof *w);
        encoder e = {.stream = "stderr", .max_line = m->spec.log_max_line};
        lw_init(w, m->log_fd, "stderr", clock_ns(CLOCK_REALTIME));
        void *ctx[2] = {&e, w};
        read_available(err_p[0], m->rbuf + 1, READ_SIZE, write_log_chunk, ctx);
        read_available(out_p[0], m->rbuf + 1, READ_SIZE, write_log_chunk, ctx);
        enc_finish(&e, w);
        free(e.buf);
        free(w);
        close(out_p[0]);
        close(err_p[0]);
        if (m->spec.stdin_) {
            m->stdin_w = fcntl(master, F_DUPFD_CLOEXEC, 0);
            if (m->stdin_w < 0)
                return fail_os(&m->failure, errno, NULL);
        }
        m->pty_master = master;
        add_stream(m, master, "stdout");
    } else {
        add_stream(m, out_p[0], "stdout");
        add_stream(m, err_p[0], "stderr");
    }
    if (m->stdin_w >= 0)
        set_nonblocking(m->stdin_w);
    return 0;
}

/* cfg["linux"] of <bundle>/config.json: NULL if absent, (jv *)-1 if the file cannot be read or
 * parsed or the value is no object (where Python's reader gives up: no cgroups path, no
 * shared pid namespace). */
#define JBAD ((jv *)-1)

static jv *config_linux(struct monitor *m, ablk **a)
{
    bbuf path = {0}, data = {0};
    bb_puts(&path, m->spec.bundle);
    bb_puts(&path, path.n && path.p[path.n - 1] != '/' ? "/config.json" : "config.json");
    int err = read_file(path.p, &data);
    jv *cfg = err ? NULL : json_parse(data.p, data.n, a, NULL);
    bb_free(&path);
    bb_free(&data);
    if (!cfg || cfg->t != J_OBJ)
        return JBAD;
    jv *lx = jget(cfg, "linux");
    return lx && lx->t != J_OBJ ? JBAD : lx;
}

/* _read_cgroups_path: linux.cgroupsPath if it is a string (and a path), else "". */
static void read_cgroups_path(struct monitor *m, bbuf *out)
{
    ablk *a = NULL;
    jv *lx = config_linux(m, &a);
    jv *p = lx && lx != JBAD ? jget(lx, "cgroupsPath") : NULL;
    if (p && p->t == J_STR && !memchr(p->s, 0, p->n))
        bb_putn(out, p->s, p->n);
    afree(&a);
}

/* _shares_pid_namespace: no PID namespace of its own (the pod's, or the host's): its init
 * exiting does not end the other processes, which would hold the output pipes open. An
 * ill-formed linux.namespaces counts as not sharing. */
bool shares_pid_namespace(struct monitor *m)
{
    ablk *a = NULL;
    jv *lx = config_linux(m, &a);
    jv *ns = lx && lx != JBAD ? jget(lx, "namespaces") : NULL;
    bool shares = lx != JBAD && (!ns || ns->t == J_ARR);
    for (jv *e = shares && ns ? ns->first : NULL; e && shares; e = e->next) {
        jv *path = e->t == J_OBJ ? jget(e, "path") : NULL;
        if (e->t != J_OBJ || (jis_str(jget(e, "type"), "pid") && !(path && path->b)))
            shares = false;
    }
    afree(&a);
    return shares;
}

bool oom_killed(struct monitor *m)
{
    bbuf cg = {0};
    read_cgroups_path(m, &cg);
    if (!cg.n) {
        bb_free(&cg);
        return false;
    }
    bbuf rel = {0};
    cgroup_relpath(&rel, cg.p, cg.n);
    struct stat st;
    const char *files[2][2] = {{"", "/memory.events"}, {NULL, NULL}};
    if (stat(CGROUP_ROOT "/cgroup.controllers", &st) != 0) {
        files[0][0] = "/memory";
        files[0][1] = "/memory.oom_control";
        files[1][0] = "/unified";
        files[1][1] = "/memory.events";
    }
    bool oom = false;
    for (int f = 0; f < 2 && files[f][0] && !oom; f++) {
        bbuf path = {0};
        bb_puts(&path, CGROUP_ROOT);
        bb_puts(&path, files[f][0]);
        bb_putn(&path, rel.p, rel.n);
        bb_puts(&path, files[f][1]);
        bbuf text = {0};
        oom = read_file(path.p, &text) == 0 && parse_oom_counters(text.p, text.n);
        bb_free(&path);
        bb_free(&text);
    }
    bb_free(&rel);
    bb_free(&cg);
    return oom;
}

/* OOM kills on cgroup v2. Under the systemd driver the container's cgroup (its scope) is
 * removed by systemd as soon as the last process exits, often before anyone has read its
 * memory.events: the race CRI-O (cri-o#7035), conmon (#426) and containerd (which skips
 * critest's OOM spec with systemd) know. The kernel's own notification of the counter is
 * delayed too (cgroup_file_notify waits out a 20 ms rate limit). So:
 * - the container's memory.events and its parent's (the pod's slice: v2 events are
 *   hierarchical) are watched with inotify; on every event, while the container's own file
 *   can be read, its counters decide, and the parent's oom_kill count is noted;
 * - if the container dies of SIGKILL and its own file is gone, an oom_kill the parent counted
 *   since the last note is the container's: a sibling's OOM would have been noted at its own
 *   event, the container being alive then. On v1 the cgroup stays until `runc delete`:
 *   oom_killed() at the exit. */
static long long parent_oom_kills(struct monitor *m)
{
    bbuf text = {0};
    long long v = read_file(m->oom.parent_path.p, &text) == 0 ? oom_kill_count(text.p, text.n) : -1;
    bb_free(&text);
    return v;
}

void check_oom(struct monitor *m)
{
    while (read(m->oom.fd, m->rbuf, READ_SIZE) > 0)
        ; /* the events only say "changed" */
    /* The parent's count first: the kernel counts an OOM kill in the container's cgroup and
     * then in each ancestor (memcg_memory_event), so a count read before a still-clean file
     * of ours cannot hold a kill of ours. Read after ours (as before), it could: the kill
     * then raised the base and was never seen (the guest's OOM test, under load). */
    long long parent = parent_oom_kills(m);
    bbuf text = {0};
    if (read_file(m->oom.path.p, &text) == 0) {
        if (parse_oom_counters(text.p, text.n))
            m->oom.seen = true;
        else
            m->oom.parent_base = parent;
    } else if (m->exited && !m->oom.seen && m->oom.parent_base >= 0 && WIFSIGNALED(m->exit_status) &&
               WTERMSIG(m->exit_status) == SIGKILL && parent > m->oom.parent_base) {
        m->oom.seen = true;
    }
    bb_free(&text);
}

void watch_oom(struct monitor *m)
{
    struct stat st;
    if (stat(CGROUP_ROOT "/cgroup.controllers", &st) != 0)
        return;
    bbuf cg = {0}, rel = {0};
    read_cgroups_path(m, &cg);
    if (cg.n) {
        cgroup_relpath(&rel, cg.p, cg.n);
        bb_puts(&m->oom.path, CGROUP_ROOT);
        bb_putn(&m->oom.path, rel.p, rel.n);
        bb_puts(&m->oom.path, "/memory.events");
        bb_puts(&m->oom.parent_path, CGROUP_ROOT);
        path_dir(&m->oom.parent_path, rel.p);
        bb_puts(&m->oom.parent_path, "/memory.events");
        m->oom.fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (m->oom.fd >= 0 && inotify_add_watch(m->oom.fd, m->oom.path.p, IN_MODIFY) < 0) {
            close(m->oom.fd);
            m->oom.fd = -1;
        }
        if (m->oom.fd >= 0) {
            /* the parent's too (best effort: a root-level cgroup has no memory.events) */
            inotify_add_watch(m->oom.fd, m->oom.parent_path.p, IN_MODIFY);
            poll_register(m, m->oom.fd, POLLIN);
            check_oom(m);
        }
    }
    bb_free(&cg);
    bb_free(&rel);
}

