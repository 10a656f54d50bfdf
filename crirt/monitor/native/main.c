/*
 * crirt-monitor: crirt's per-container monitor (conmon's job), libc only.
 *
 * It is the monitor crirt runs (crirt/monitor/__main__.py is the executable reference the same
 * protocol tests run against, and the fallback of an install without a C compiler). It exists
 * for memory: ~0.2 MB PSS per container where the Python monitor costs ~2.3 MB.
 *
 * Same command line (`crirt-monitor [--sync-fd N] [--foreground] SPEC_JSON`), same protocol
 * (crirt/monitor/protocol.py) and, on the happy path, byte-identical outputs: the sync line, the
 * exit file, the ctl replies, the attach packets and the CRI log records (crirt/sansio/crilog.py
 * StreamEncoder). Malformed input is refused with a clear message of its own wording (crirt
 * shows it, nobody parses it): a bad spec is a sync line with pid -1 and exit status 2, a
 * failed setup a sync line with pid -1 and exit status 1, a bad ctl request an
 * {"ok":false,"error":...} reply. JSON is read by a strict RFC 8259 parser (UTF-8 only, nesting
 * at most 64 deep); a usage or internal error is one line on fd 2 and a nonzero exit.
 *
 * `crirt-monitor --fork-server SOCKET --code CODE` is the fork server crirt runs when it uses
 * this monitor (crirt/monitor/forkserver.py's invariants and protocol; that Python server runs
 * only with the Python monitor): it forks and execs this binary for each monitor, costing
 * ~0.3 MB PSS where the Python server costs ~8 MB. CODE is what it answers a ping with.
 *
 * Units: util (allocation, buffers), json (a strict parser and json.dumps-style output),
 * protocol (spec, requests, replies, exit record), crilog (the CRI log encoder), cgroup (path
 * and OOM counter text), sys (sockets, processes, files), setup (runc create, console, OOM
 * watch), loop (the poll loop, the exit), forkserver, main. scripts/build-monitor.sh builds
 * them; tests/native/ holds their unit tests and fuzz targets. Memory: one 64 KiB buffer serves
 * every read (pipes, pty, ctl and attach sockets), log records go out with writev straight
 * from it, and nothing else is kept but what a container's state needs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forkserver.h"
#include "monitor.h"
#include "sys.h"

int main(int argc, char **argv)
{
    /* Large transient buffers (a long ctl request, a pending stdin burst, config.json) are
     * mmapped and given back when freed, and the heap's top is trimmed early: an idle monitor
     * keeps only what its container's state needs. */
    mallopt(M_MMAP_THRESHOLD, 32 * 1024);
    mallopt(M_TRIM_THRESHOLD, 64 * 1024);
    /* Python ignores these from its start; the monitor relies on EPIPE rather than death. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
    long fd_arg = 1;
    bool foreground = false;
    const char *spec_arg = NULL, *fs_socket = NULL, *fs_code = "";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sync-fd") == 0) {
            char *end = NULL;
            if (i + 1 < argc) {
                errno = 0;
                fd_arg = strtol(argv[++i], &end, 10);
            }
            if (!end || *end || end == argv[i] || errno || fd_arg < 0 || fd_arg > INT_MAX)
                die(1, "--sync-fd needs a file descriptor number", 0);
        } else if (strcmp(argv[i], "--foreground") == 0) {
            foreground = true;
        } else if (strcmp(argv[i], "--fork-server") == 0 && i + 1 < argc) {
            fs_socket = argv[++i];
        } else if (strcmp(argv[i], "--code") == 0 && i + 1 < argc) {
            fs_code = argv[++i];
        } else if (!spec_arg || !*spec_arg) {
            /* `elif not spec`: an empty argument does not count as the spec */
            spec_arg = argv[i];
        } else {
            char msg[256];
            snprintf(msg, sizeof msg, "unexpected argument '%.200s'", argv[i]);
            die(1, msg, 0);
        }
    }
    if (fs_socket && spec_arg)
        die(1, "--fork-server takes no spec", 0);
    if (fs_socket)
        fork_server(fs_socket, fs_code);
    if (!spec_arg || !*spec_arg)
        die(1,
            "usage: crirt-monitor [--sync-fd N] [--foreground] SPEC_JSON\n"
            "       crirt-monitor --fork-server SOCKET --code CODE",
            0);
    /* The one monitor of this process (static: rbuf is page-aligned and 64 KiB). */
    static struct monitor mon;
    struct monitor *m = &mon;
    int sync_fd = (int)fd_arg;
    monitor_init(m, sync_fd);
    if (fcntl(sync_fd, F_SETFD, FD_CLOEXEC) < 0)
        die(1, "--sync-fd", errno);
    if (!foreground) {
        pid_t pid = fork();
        if (pid < 0)
            die(1, "fork", errno);
        if (pid != 0)
            _exit(0); /* the launcher exits at once: the monitor is reparented away */
    }
    close_fds_except(&sync_fd, 1);
    /* fd 2 stays: the client points it at a log file for such messages. */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        for (int t = 0; t < 2; t++)
            if (sync_fd != t && null != t)
                dup3(null, t, O_CLOEXEC);
        if (null > 2 && null != sync_fd)
            close(null);
    }
    /* run(): decode the spec (protocol.decode_spec) */
    bbuf err = {0};
    if (decode_spec(spec_arg, &m->spec, &err) < 0) {
        report(m, -1, &err);
        _exit(2);
    }
    bb_free(&err);
    monitor_run(m);
}
