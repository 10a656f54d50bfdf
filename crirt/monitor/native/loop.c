#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "json.h"
#include "monitor.h"
#include "sys.h"

/* How long output is drained after the container's init exited: grandchildren outside the
 * container's pid namespace may keep the pipes open forever. */
#define DRAIN_NS 2000000000LL

void poll_register(struct monitor *m, int fd, short events)
{
    for (size_t i = 0; i < m->nwatches; i++) {
        if (m->watches[i].fd == fd) {
            m->watches[i].events = events;
            return;
        }
    }
    m->watches = xgrow(m->watches, m->nwatches, &m->cwatches, 8, sizeof *m->watches);
    m->watches[m->nwatches++] = (watch){fd, events};
}

void poll_unregister(struct monitor *m, int fd)
{
    for (size_t i = 0; i < m->nwatches; i++) {
        if (m->watches[i].fd == fd) {
            memmove(m->watches + i, m->watches + i + 1, (m->nwatches - i - 1) * sizeof *m->watches);
            m->nwatches--;
            return;
        }
    }
}

static stream *find_stream(struct monitor *m, int fd)
{
    for (int i = 0; i < m->nstreams; i++)
        if (m->streams[i].fd == fd)
            return &m->streams[i];
    return NULL;
}

static attached *find_att(struct monitor *m, int fd)
{
    for (size_t i = 0; i < m->natts; i++)
        if (m->atts[i].fd == fd)
            return &m->atts[i];
    return NULL;
}

static conn *find_conn(struct monitor *m, int fd)
{
    for (size_t i = 0; i < m->nconns; i++)
        if (m->conns[i].fd == fd)
            return &m->conns[i];
    return NULL;
}

static void close_stream(struct monitor *m, stream *s)
{
    logw *w = xmalloc(sizeof *w);
    lw_init(w, m->log_fd, s->enc.stream, clock_ns(CLOCK_REALTIME));
    enc_finish(&s->enc, w);
    free(w);
    free(s->enc.buf);
    int fd = s->fd;
    poll_unregister(m, fd);
    close(fd);
    int i = (int)(s - m->streams);
    memmove(m->streams + i, m->streams + i + 1, (size_t)(m->nstreams - i - 1) * sizeof *m->streams);
    m->nstreams--;
}

static void detach(struct monitor *m, int fd);
static void resume_accept(struct monitor *m);

static void to_attached(struct monitor *m, const unsigned char *packet, size_t n)
{
    for (size_t i = 0; i < m->natts;) {
        /* A client that cannot keep up (or is gone) is dropped: the container and its log
         * never wait for an attach client. */
        if (send(m->atts[i].fd, packet, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            detach(m, m->atts[i].fd);
        else
            i++;
    }
}


static void on_stream(struct monitor *m, stream *s)
{
    ssize_t n;
    do
        n = read(s->fd, m->rbuf + 1, READ_SIZE);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN)
            return;
        if (errno != EIO) /* EIO: pty master after the last slave closed */
            die(3, "read", errno);
        n = 0;
    }
    if (n > 0) {
        if (n > 4096)
            heap_mark_grown(); /* rbuf's pages: see run_loop */
        if (m->log_fd >= 0) {
            if (!m->stream_writer)
                m->stream_writer = xmalloc(sizeof *m->stream_writer);
            lw_init(m->stream_writer, m->log_fd, s->enc.stream, clock_ns(CLOCK_REALTIME));
            enc_feed(&s->enc, m->stream_writer, (const char *)m->rbuf + 1, (size_t)n);
            lw_flush(m->stream_writer);
            enc_idle(&s->enc);
        }
        if (m->natts) {
            m->rbuf[0] = strcmp(s->enc.stream, "stdout") == 0 ? ATTACH_STDOUT : ATTACH_STDERR;
            to_attached(m, m->rbuf, (size_t)n + 1);
        }
        return;
    }
    close_stream(m, s);
}

static void stdin_flushed(struct monitor *m)
{
    m->stdin_pending.n = 0;
    bb_free(&m->stdin_pending);
    poll_unregister(m, m->stdin_w);
    for (size_t i = 0; i < m->natts; i++)
        poll_register(m, m->atts[i].fd, POLLIN);
}

static void close_stdin(struct monitor *m, bool now)
{
    if (m->stdin_w < 0)
        return;
    if (m->stdin_pending.n && !now) {
        m->stdin_close_pending = true;
        return;
    }
    if (m->stdin_pending.n)
        stdin_flushed(m);
    poll_unregister(m, m->stdin_w);
    close(m->stdin_w);
    m->stdin_w = -1;
}

static void write_stdin(struct monitor *m, const unsigned char *data, size_t n)
{
    if (m->stdin_w < 0 || m->stdin_close_pending)
        return;
    if (m->stdin_pending.n) {
        bb_putn(&m->stdin_pending, data, n);
        return;
    }
    ssize_t w = write(m->stdin_w, data, n);
    if (w < 0) {
        if (errno != EAGAIN) {
            close_stdin(m, true); /* the container closed its stdin */
            return;
        }
        w = 0;
    }
    if ((size_t)w < n) {
        /* Back-pressure: stop reading attach clients until the container reads its stdin. */
        bb_putn(&m->stdin_pending, data + w, n - (size_t)w);
        poll_register(m, m->stdin_w, POLLOUT);
        for (size_t i = 0; i < m->natts; i++)
            poll_register(m, m->atts[i].fd, 0);
    }
}

static void on_stdin_writable(struct monitor *m)
{
    ssize_t w = write(m->stdin_w, m->stdin_pending.p, m->stdin_pending.n);
    if (w < 0) {
        if (errno == EAGAIN)
            return;
        close_stdin(m, true);
        return;
    }
    if (w > 0) {
        memmove(m->stdin_pending.p, m->stdin_pending.p + w, m->stdin_pending.n - (size_t)w);
        m->stdin_pending.n -= (size_t)w;
    }
    if (!m->stdin_pending.n) {
        stdin_flushed(m);
        if (m->stdin_close_pending)
            close_stdin(m, true);
    }
}

static void stdin_done(struct monitor *m, attached *a)
{
    if (a->stdin_ && !a->done) {
        a->done = true;
        if (m->spec.stdin_once)
            close_stdin(m, false);
    }
}

static void detach(struct monitor *m, int fd)
{
    attached *a = find_att(m, fd);
    attached copy = *a;
    size_t i = (size_t)(a - m->atts);
    memmove(m->atts + i, m->atts + i + 1, (m->natts - i - 1) * sizeof *m->atts);
    m->natts--;
    stdin_done(m, &copy);
    poll_unregister(m, fd);
    close(fd);
    if (m->attach_fd >= 0 && m->natts < MAX_CLIENTS)
        poll_register(m, m->attach_fd, POLLIN);
}

/* How long a listening socket rests after accept failed for want of resources (EMFILE, ...). */
#define ACCEPT_RETRY_NS 100000000LL

/* Stop polling a listening socket: at the client cap until one leaves, after a failed accept
 * (out of descriptors or memory) for ACCEPT_RETRY_NS. Polling it meanwhile would spin: the
 * pending connection keeps it readable. */
static void pause_accept(struct monitor *m, int lfd, int err)
{
    poll_register(m, lfd, 0);
    if (err)
        m->accept_retry_at = clock_ns(CLOCK_MONOTONIC) + ACCEPT_RETRY_NS;
}

static void resume_accept(struct monitor *m)
{
    if (m->nconns < MAX_CLIENTS)
        poll_register(m, m->ctl_fd, POLLIN);
    if (m->attach_fd >= 0 && m->natts < MAX_CLIENTS)
        poll_register(m, m->attach_fd, POLLIN);
}

/* accept4 on a listening socket: the client's fd, or -1 when there is none to take now. */
static int accept_client(struct monitor *m, int lfd, size_t clients)
{
    if (clients >= MAX_CLIENTS) {
        pause_accept(m, lfd, 0);
        return -1;
    }
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0 && errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
        pause_accept(m, lfd, errno);
    return fd;
}

static void accept_attach(struct monitor *m)
{
    for (;;) {
        int fd = accept_client(m, m->attach_fd, m->natts);
        if (fd < 0)
            return;
        m->atts = xgrow(m->atts, m->natts, &m->catts, 4, sizeof *m->atts);
        m->atts[m->natts++] = (attached){fd, false, false};
        poll_register(m, fd, m->stdin_pending.n ? 0 : POLLIN);
    }
}

static void on_attached(struct monitor *m, int fd, short ev)
{
    ssize_t n = recv(fd, m->rbuf, ATTACH_PACKET, MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN) {
            if (ev & (POLLHUP | POLLERR | POLLNVAL))
                detach(m, fd);
            return;
        }
        n = 0;
    }
    if (n == 0) {
        detach(m, fd);
        return;
    }
    if (n > 4096)
        heap_mark_grown();
    attached *a = find_att(m, fd);
    switch (m->rbuf[0]) {
    case ATTACH_STDIN:
        a->stdin_ = true;
        if (n > 1 && !a->done)
            write_stdin(m, m->rbuf + 1, (size_t)n - 1);
        break;
    case ATTACH_STDIN_EOF:
        stdin_done(m, a);
        break;
    case ATTACH_RESIZE:
        if (m->pty_master >= 0 && n == 5) {
            struct winsize ws = {.ws_row = (unsigned short)(m->rbuf[3] << 8 | m->rbuf[4]),
                                 .ws_col = (unsigned short)(m->rbuf[1] << 8 | m->rbuf[2])};
            ioctl(m->pty_master, TIOCSWINSZ, &ws);
        }
        break;
    }
}

void reap(struct monitor *m)
{
    struct signalfd_siginfo si;
    while (read(m->sig_fd, &si, sizeof si) > 0)
        ;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        if (pid == m->container_pid && !m->exited) {
            m->exited = true;
            m->exit_status = status;
            m->finished_at = clock_ns(CLOCK_REALTIME);
            /* Now, before systemd hears (through the same delayed kernfs notification as our
             * inotify) that the scope is empty and removes its cgroup with the counters. */
            if (m->oom.fd >= 0)
                check_oom(m);
        }
    }
}

static void accept_ctl(struct monitor *m)
{
    for (;;) {
        int fd = accept_client(m, m->ctl_fd, m->nconns);
        if (fd < 0)
            return;
        m->conns = xgrow(m->conns, m->nconns, &m->cconns, 4, sizeof *m->conns);
        m->conns[m->nconns++] = (conn){fd, NULL, 0, 0};
        poll_register(m, fd, POLLIN);
    }
}

static void drop_conn(struct monitor *m, conn *c)
{
    int fd = c->fd;
    release(c->buf, c->cap);
    size_t i = (size_t)(c - m->conns);
    memmove(m->conns + i, m->conns + i + 1, (m->nconns - i - 1) * sizeof *m->conns);
    m->nconns--;
    poll_unregister(m, fd);
    close(fd);
    resume_accept(m);
}

/* _reopen: kubelet rotation renamed the file; write to a new one at the same path. */
static void reopen(struct monitor *m, bbuf *out)
{
    if (!*m->spec.log_path) {
        bb_puts(out, "{\"ok\":true}\n");
        return;
    }
    int fd = open_log(m);
    if (fd < 0) {
        /* Keep the old file: the kubelet renames it back when we answer an error. */
        bbuf e = {0};
        bb_puts(&e, "reopen ");
        bb_puts(&e, m->spec.log_path);
        bb_printf(&e, ": %s", strerror(errno));
        reply_error(out, &e);
        bb_free(&e);
        return;
    }
    int old = m->log_fd;
    m->log_fd = fd;
    if (old >= 0) {
        fsync(old);
        close(old);
    }
    bb_puts(out, "{\"ok\":true}\n");
}

/* _handle: one request line -> its reply. */
static void handle(struct monitor *m, const char *line, size_t n, bbuf *out)
{
    bbuf e = {0};
    ablk *a = NULL;
    jv *o = decode_request(line, n, &a, &e), *op = o ? jget(o, "op") : NULL;
    if (!o) {
        reply_error(out, &e);
    } else if (jis_str(op, "ping")) {
        bb_printf(out, "{\"ok\":true,\"pid\":%d,\"container_pid\":%lld,\"exited\":%s}\n",
                  (int)getpid(), (long long)m->container_pid, m->exited ? "true" : "false");
    } else if (jis_str(op, "reopen")) {
        reopen(m, out);
    } else {
        unknown_op(out, op);
    }
    afree(&a);
    bb_free(&e);
}

static void on_conn(struct monitor *m, conn *c)
{
    ssize_t n = recv(c->fd, m->rbuf, CONN_RECV, MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN)
            return;
        n = 0;
    }
    if (n == 0) {
        drop_conn(m, c);
        return;
    }
    if (c->len + (size_t)n > c->cap) {
        c->cap = c->cap ? c->cap * 2 : CONN_RECV;
        if (c->cap < c->len + (size_t)n)
            c->cap = c->len + (size_t)n;
        c->buf = xrealloc(c->buf, c->cap);
    }
    memcpy(c->buf + c->len, m->rbuf, (size_t)n);
    c->len += (size_t)n;
    char *nl;
    while (c->len && (nl = memchr(c->buf, '\n', c->len))) {
        size_t ln = (size_t)(nl - c->buf);
        bbuf reply = {0};
        handle(m, c->buf, ln, &reply);
        ssize_t s = send(c->fd, reply.p, reply.n, MSG_DONTWAIT | MSG_NOSIGNAL);
        bb_free(&reply);
        if (s < 0) {
            drop_conn(m, c);
            return;
        }
        memmove(c->buf, c->buf + ln + 1, c->len - ln - 1);
        c->len -= ln + 1;
    }
    if (c->len > MAX_MESSAGE) {
        drop_conn(m, c);
        return;
    }
    if (!c->len && c->cap > 4096) {
        release(c->buf, c->cap);
        c->buf = NULL;
        c->cap = 0;
    }
}

void run_loop(struct monitor *m)
{
    poll_register(m, m->sig_fd, POLLIN);
    poll_register(m, m->ctl_fd, POLLIN);
    if (m->attach_fd >= 0)
        poll_register(m, m->attach_fd, POLLIN);
    int64_t deadline = 0;
    struct pollfd *pfds = NULL;
    size_t cpfds = 0;
    reap(m);
    for (;;) {
        int timeout = -1;
        if (m->exited) {
            int64_t now = clock_ns(CLOCK_MONOTONIC);
            if (!deadline) {
                deadline = now + DRAIN_NS;
                /* As containerd's shim does: the rest of the container dies with its init,
                 * so its output ends now rather than at the drain deadline. */
                if (m->nstreams && shares_pid_namespace(m))
                    kill_all(m);
            }
            if (!m->nstreams || now >= deadline)
                break;
            int64_t ms = (deadline - now) / 1000000;
            timeout = ms < 1 ? 1 : (int)ms;
        }
        /* After a burst (a long request, a large stdin write, a long partial line, a big
         * read), the heap is trimmed at the first quiet second and rbuf's pages dropped:
         * their pages go back to the system. */
        bool trim = heap_grown() && timeout < 0;
        if (trim)
            timeout = 1000;
        if (m->accept_retry_at) {
            int64_t ms = (m->accept_retry_at - clock_ns(CLOCK_MONOTONIC)) / 1000000;
            if (ms <= 0) {
                m->accept_retry_at = 0;
                resume_accept(m);
                continue;
            }
            if (timeout < 0 || ms < timeout)
                timeout = (int)ms;
        }
        if (cpfds < m->nwatches) {
            cpfds = m->nwatches * 2;
            pfds = xrealloc(pfds, cpfds * sizeof *pfds);
        }
        size_t n = m->nwatches;
        for (size_t i = 0; i < n; i++)
            pfds[i] = (struct pollfd){m->watches[i].fd, m->watches[i].events, 0};
        int r = poll(pfds, n, timeout);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die(3, "poll", errno);
        }
        if (r == 0 && trim) {
            heap_trimmed();
            malloc_trim(0);
            madvise(m->rbuf, READ_SIZE, MADV_DONTNEED); /* whole pages of rbuf only */
            continue;
        }
        /* Handlers change the poll set: dispatch the ready fds of this round by what each fd
         * is now, in the order Python would. The OOM counters first: an exit in the same
         * round may be what removes the cgroup. */
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (pfds[i].revents && pfds[i].fd == m->oom.fd && m->oom.fd >= 0)
                check_oom(m);
            else if (pfds[i].revents)
                pfds[k++] = pfds[i];
        }
        for (size_t i = 0; i < k; i++) {
            int fd = pfds[i].fd;
            stream *s;
            conn *c;
            if ((s = find_stream(m, fd)))
                on_stream(m, s);
            else if (find_att(m, fd))
                on_attached(m, fd, pfds[i].revents);
            else if (fd == m->stdin_w)
                on_stdin_writable(m);
            else if (fd == m->sig_fd)
                reap(m);
            else if (fd == m->ctl_fd)
                accept_ctl(m);
            else if (fd == m->attach_fd && m->attach_fd >= 0)
                accept_attach(m);
            else if ((c = find_conn(m, fd)))
                on_conn(m, c);
        }
    }
    free(pfds);
}

/* write_exit_file: atomically (tmp file, fsync, rename, fsync the directory). */
static void write_exit_file(struct monitor *m, const char *content, size_t len)
{
    const char *path = m->spec.exit_file;
    size_t n = strlen(path), hl, to;
    path_split(path, n, &hl, &to);
    /* Dot-prefixed: watchers of the exit directory skip it (crirt.runtime.exits). */
    bbuf tmp = {0};
    bb_putn(&tmp, path, hl);
    if (hl && path[hl - 1] != '/')
        bb_put(&tmp, '/');
    bb_put(&tmp, '.');
    bb_putn(&tmp, path + to, n - to);
    bb_puts(&tmp, ".tmp");
    int fd = open(tmp.p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die(3, "write exit file", errno);
    if (write_all(fd, content, len) < 0 || fsync(fd) < 0)
        die(3, "write exit file", errno);
    close(fd);
    if (rename(tmp.p, path) < 0)
        die(3, "rename exit file", errno);
    bb_free(&tmp);
    bbuf dir = {0};
    path_dir(&dir, path);
    int dfd = open(dir.p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    bb_free(&dir);
}

void finish(struct monitor *m)
{
    /* Past the drain deadline: whatever still holds the pipe keeps it; flush what we have. */
    while (m->nstreams)
        close_stream(m, &m->streams[0]);
    for (size_t i = 0; i < m->natts; i++)
        close(m->atts[i].fd); /* output is over: attach clients see the socket close */
    m->natts = 0;
    if (m->log_fd >= 0)
        fsync(m->log_fd);
    if (m->oom.fd >= 0)
        check_oom(m); /* a bump not yet dispatched (gone already: oom.seen stays as it is) */
    bool oom = m->oom.seen || oom_killed(m);
    bbuf line = {0};
    encode_exit(&line, m->exit_status, m->finished_at, oom);
    /* Nothing is left to run: delete it here, before the exit is reported, so that
     * RemoveContainer finds no runc state and spawns nothing (containerd's shim also deletes
     * the task when it exits). */
    delete_container(m);
    write_exit_file(m, line.p, line.n);
    bb_free(&line);
}

static void cleanup_ctl(struct monitor *m)
{
    if (m->console_path)
        unlink(m->console_path);
    if (m->attach_fd >= 0) {
        close(m->attach_fd);
        m->attach_fd = -1;
        unlink(m->spec.attach_socket);
    }
    if (m->ctl_fd >= 0) {
        close(m->ctl_fd);
        m->ctl_fd = -1;
        unlink(m->spec.ctl_socket);
    }
}

/* Monitor.run: never returns. */
_Noreturn void monitor_run(struct monitor *m)
{
    umask(022);
    if (chdir("/") < 0)
        die(3, "chdir /", errno);
    setsid();
    prctl(PR_SET_NAME, "crirt-monitor", 0, 0, 0);
    int rc = -1;
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
        int e = errno;
        bb_printf(&m->failure, "monitor: [Errno %d] prctl(36): %s", e, strerror(e));
    } else {
        /* Blocked rather than ignored, as the Python monitor does; SIGCHLD is read from a
         * signalfd by the loop. runc gets every signal back at its default (spawn). */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGHUP);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGQUIT);
        sigaddset(&set, SIGCHLD);
        sigprocmask(SIG_BLOCK, &set, NULL);
        /* An inherited SIG_IGN would have the kernel reap the container behind our back
         * (Python's handler replaces it likewise). */
        signal(SIGCHLD, SIG_DFL);
        sigemptyset(&set);
        sigaddset(&set, SIGCHLD);
        m->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
        if (m->sig_fd < 0)
            fail_os(&m->failure, errno, NULL);
        else
            rc = create(m);
    }
    if (rc < 0) {
        if (m->created)
            delete_container(m);
        cleanup_ctl(m);
        report(m, -1, &m->failure);
        _exit(1);
    }
    watch_oom(m);
    if (!report(m, m->container_pid, &m->failure)) {
        /* crirt gave up waiting (timeout) or died and closed the pipe: nobody owns this
         * container. Deleting it (even started) is what lets a restarted crirt roll the start
         * back: a monitor that answers on its ctl socket has always been heard. */
        delete_container(m);
        cleanup_ctl(m);
        _exit(1);
    }
    bb_free(&m->failure);
    run_loop(m);
    finish(m);
    cleanup_ctl(m);
    _exit(0);
}

bool report(struct monitor *m, int64_t pid, const bbuf *error)
{
    bbuf line = {0};
    encode_sync(&line, pid, (int)getpid(), error);
    bool ok = write_all(m->sync_fd, line.p, line.n) == 0;
    bb_free(&line);
    close(m->sync_fd);
    m->sync_fd = -1;
    return ok;
}

void monitor_init(struct monitor *m, int sync_fd)
{
    m->sync_fd = sync_fd;
    m->log_fd = m->ctl_fd = m->attach_fd = m->sig_fd = m->stdin_w = m->pty_master = -1;
    m->console_fd = -1;
    m->oom.fd = -1;
    m->oom.parent_base = -1;
    m->spec.log_max_line = DEFAULT_LOG_MAX_LINE;
}
