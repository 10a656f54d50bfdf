/* One container's monitor: its state (one struct, no globals) and the steps of its life,
 * setup.c (runc create or run --detach, the console, the OOM watch) and loop.c (the poll loop
 * over the container's output, stdin, attach and ctl clients; the exit record). */
#ifndef CRIRT_MONITOR_MONITOR_H
#define CRIRT_MONITOR_MONITOR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "crilog.h"
#include "protocol.h"
#include "util.h"

#define READ_SIZE (64 * 1024)
#define ATTACH_PACKET (READ_SIZE + 1) /* a type byte and one read of the container's output */
#define CONN_RECV 4096
/* Clients served at once on each of the ctl and attach sockets (crirt keeps one or two; an
 * exec or attach session is one each). Beyond it, or when the monitor is out of descriptors,
 * the listening socket is left unpolled until one leaves, instead of spinning on accept. */
#define MAX_CLIENTS 64

enum { ATTACH_STDIN = 0, ATTACH_STDIN_EOF = 1, ATTACH_RESIZE = 2 };
enum { ATTACH_STDOUT = 1, ATTACH_STDERR = 2 };

typedef struct {
    int fd;
    encoder enc;
} stream;

typedef struct {
    int fd;
    bool stdin_, done;
} attached;

typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
} conn;

/* The poll set, in registration order (a re-registration updates in place, an unregistration
 * removes). */
typedef struct {
    int fd;
    short events;
} watch;

/* OOM kills on cgroup v2 (setup.c, watch_oom): the container's memory.events and its
 * parent's, watched with inotify. */
struct oom_watch {
    int fd;
    bool seen;
    bbuf path, parent_path;
    long long parent_base;
};

struct monitor {
    /* The one large buffer: stream reads land at rbuf + 1 so that rbuf is the attach packet.
     * Page-aligned: its first 64 KiB can be handed back to the system when the monitor idles. */
    unsigned char rbuf[ATTACH_PACKET] __attribute__((aligned(4096)));
    struct monitor_spec spec;
    int sync_fd, log_fd, ctl_fd, attach_fd, sig_fd;
    int stdin_w; /* the container's stdin (a pipe, or a dup of the pty master) */
    bbuf stdin_pending;
    bool stdin_close_pending;
    int pty_master;
    int64_t container_pid;
    bool exited;
    int exit_status;
    int64_t finished_at;
    bool created;      /* runc create succeeded: a failure from here on must delete it */
    char *console_path; /* the tty console socket, while it exists */
    int console_fd;
    stream streams[2];
    int nstreams;
    attached *atts;
    size_t natts, catts;
    conn *conns;
    size_t nconns, cconns;
    watch *watches;
    size_t nwatches, cwatches;
    bbuf failure; /* the error of a failed setup */
    struct oom_watch oom;
    logw *stream_writer;
    int64_t accept_retry_at; /* CLOCK_MONOTONIC ns: accepting paused after EMFILE & co */
};

void monitor_init(struct monitor *m, int sync_fd);
/* Write the sync line (protocol.encode_sync) and close the sync fd; false if crirt is no
 * longer listening. */
bool report(struct monitor *m, int64_t pid, const bbuf *error);
/* Monitor.run: never returns. */
_Noreturn void monitor_run(struct monitor *m);

/* setup.c */
int open_log(struct monitor *m);
int create(struct monitor *m);
void delete_container(struct monitor *m);
void kill_all(struct monitor *m);
bool shares_pid_namespace(struct monitor *m);
void watch_oom(struct monitor *m);
void check_oom(struct monitor *m);
bool oom_killed(struct monitor *m);

/* loop.c */
void poll_register(struct monitor *m, int fd, short events);
void poll_unregister(struct monitor *m, int fd);
void run_loop(struct monitor *m);
void finish(struct monitor *m);
void reap(struct monitor *m);

#endif
