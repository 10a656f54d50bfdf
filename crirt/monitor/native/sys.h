/* The monitor's OS boundary: paths and unix sockets, processes, files and fds. */
#ifndef CRIRT_MONITOR_SYS_H
#define CRIRT_MONITOR_SYS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "util.h"

/* sun_path holds 108 bytes; longer paths go through the directory's /proc fd link. */
#define SUN_PATH_MAX 100
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define READ_AVAILABLE_LIMIT (1 << 20)

/* Failure messages (MonitorError text, or "monitor: <OSError>"), appended to failure; each
 * returns -1. */
int fail_msg(bbuf *failure, const char *msg);
/* str(OSError(errno)) behind "monitor: ", optionally with its filename. */
int fail_os(bbuf *failure, int err, const char *filename);
/* "<what> <path>: <strerror>" */
int fail_path(bbuf *failure, const char *what, const char *path, int err);

/* os.path.split */
void path_split(const char *p, size_t n, size_t *head_len, size_t *tail_off);
/* The directory of path (os.path.split's head, or "."), appended to dir. */
void path_dir(bbuf *dir, const char *path);
/* The address for path and an fd to close after bind/connect (-1 if none); paths too long for
 * sun_path go through /proc/<pid>/fd/<dirfd>/<name>. -1 with errno on failure. */
int sock_address(const char *path, bbuf *addr, int *dfd);
/* Bind a 0600 socket at path, replacing a stale one: the fd, or -1 with the message in
 * failure. */
int listen_unix(const char *path, int backlog, int type, const char *what, bbuf *failure);

/* posix_spawn with the given stdio (NULL: /dev/null), env PATH only, ignored signals back at
 * their defaults and an empty signal mask: 0 or an errno. */
int spawn(char *const argv[], const int *stdio, pid_t *pid);
pid_t wait_for(pid_t pid, int *status);

typedef void (*chunk_fn)(void *ctx, const char *p, size_t n);
/* What the pipe holds now (up to ~1 MiB), read into buf chunk by chunk, each given to fn. */
void read_available(int fd, unsigned char *buf, size_t size, chunk_fn fn, void *ctx);
/* A chunk_fn appending to a bbuf (ctx). */
void collect_chunk(void *ctx, const char *p, size_t n);
/* The whole file at path appended to out: 0 or an errno. */
int read_file(const char *path, bbuf *out);
/* Close every fd above 2 but keep[0..nkeep) (ascending). */
void close_fds_except(const int *keep, int nkeep);

#endif
