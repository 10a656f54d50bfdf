/* The CRI log encoder (crirt/sansio/crilog.py StreamEncoder): container output as CRI log
 * records ("<RFC3339Nano> <stream> <P|F> <content>"), written with writev. */
#ifndef CRIRT_MONITOR_CRILOG_H
#define CRIRT_MONITOR_CRILOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Records of one feed()/finish() call share their timestamp, as in Python where the caller
 * reads the clock once per call; they go out in as few writev calls as the iovec batch allows
 * (Python writes the joined bytes at once; a write error drops the rest of the call's bytes
 * likewise). */
#define LW_IOV 256

typedef struct {
    int fd; /* -1: discard */
    bool failed;
    int n;
    struct iovec iov[LW_IOV];
    char prefix[2][64]; /* "<ts> <stream> P " and "... F " */
    size_t prefix_len;
} logw;

typedef struct {
    const char *stream;
    int64_t max_line;
    char *buf; /* the unterminated line */
    size_t len, cap;
} encoder;

/* Go's time.RFC3339Nano in UTC. */
void format_timestamp(char *out, size_t cap, int64_t ns);
/* A writer for one feed()/finish() call: its records share the timestamp `now`. fd -1 discards. */
void lw_init(logw *w, int fd, const char *stream, int64_t now);
void lw_flush(logw *w);
/* One record whose content is the concatenation a[0:an] + b[0:bn]. */
void lw_record(logw *w, bool partial, const char *a, size_t an, const char *b, size_t bn);
/* StreamEncoder.feed; the records go to w (flushed by the caller). */
void enc_feed(encoder *e, logw *w, const char *data, size_t n);
/* StreamEncoder.finish: an unterminated line becomes a final P record; flushed. */
void enc_finish(encoder *e, logw *w);
/* Between calls: an empty buffer is given back. */
void enc_idle(encoder *e);

#endif
