/* The monitor's wire protocol (crirt/monitor/protocol.py): the spec it is started with, the
 * ctl requests it answers, the sync line, ctl replies and the exit record. Pure: no I/O. */
#ifndef CRIRT_MONITOR_PROTOCOL_H
#define CRIRT_MONITOR_PROTOCOL_H

#include <stdbool.h>
#include <stdint.h>

#include "json.h"
#include "util.h"

#define MAX_MESSAGE (64 * 1024)
#define DEFAULT_LOG_MAX_LINE (16 * 1024)

/* protocol.MonitorSpec. The strings hold no NUL (refused): they go to syscalls as they are. */
struct monitor_spec {
    char *container_id, *bundle, *runtime_path, *runtime_root, *log_path, *exit_file, *pid_file,
        *ctl_socket, *attach_socket;
    bool stdin_, stdin_once, tty, start, systemd_cgroup;
    int64_t log_max_line;
};

/* protocol.decode_spec: 0 and *spec filled, or -1 with the message in err. */
int decode_spec(const char *text, struct monitor_spec *spec, bbuf *err);
void spec_free(struct monitor_spec *spec);
/* protocol.decode_request: the request object, whose "op" is a string, or NULL with the
 * message in e. */
jv *decode_request(const void *line, size_t n, ablk **a, bbuf *e);
/* protocol.encode_sync: the sync line ("error" when there is one or no pid). */
void encode_sync(bbuf *line, int64_t pid, int monitor_pid, const bbuf *error);
void reply_error(bbuf *o, const bbuf *error);
void unknown_op(bbuf *out, const jv *op);
/* protocol.exit_from_wait_status: a signal death is 128+signal, as conmon reports it. */
void exit_from_status(int status, int *code, int *sig);
/* The exit record (protocol.ExitRecord as JSON, one line). */
void encode_exit(bbuf *o, int wait_status, int64_t finished_at, bool oom);

#endif
