#define _GNU_SOURCE
#include "crilog.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

void format_timestamp(char *out, size_t cap, int64_t ns)
{
    /* Go's time.RFC3339Nano in UTC: trailing zeros of the fraction trimmed, the dot too */
    int64_t sec = ns / 1000000000LL, frac = ns % 1000000000LL;
    if (frac < 0) {
        frac += 1000000000LL;
        sec--;
    }
    int64_t days = sec / 86400, rem = sec % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    /* civil_from_days (H. Hinnant) */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    int n = snprintf(out, cap, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld", (long long)y,
                     (long long)m, (long long)d, (long long)(rem / 3600),
                     (long long)(rem / 60 % 60), (long long)(rem % 60));
    if (frac) {
        n += snprintf(out + n, cap - (size_t)n, ".%09lld", (long long)frac);
        while (out[n - 1] == '0')
            n--;
    }
    snprintf(out + n, cap - (size_t)n, "Z");
}

void lw_init(logw *w, int fd, const char *stream, int64_t now)
{
    char ts[48];
    format_timestamp(ts, sizeof ts, now);
    w->fd = fd;
    w->failed = false;
    w->n = 0;
    int len = snprintf(w->prefix[0], sizeof w->prefix[0], "%s %s P ", ts, stream);
    snprintf(w->prefix[1], sizeof w->prefix[1], "%s %s F ", ts, stream);
    w->prefix_len = (size_t)len;
}

void lw_flush(logw *w)
{
    struct iovec *iov = w->iov;
    int n = w->n;
    w->n = 0;
    if (w->fd < 0 || w->failed)
        return;
    while (n > 0) {
        ssize_t r = writev(w->fd, iov, n > IOV_MAX ? IOV_MAX : n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* A full disk must not block the container: drop what cannot be written. */
            w->failed = true;
            return;
        }
        while (n > 0 && (size_t)r >= iov->iov_len) {
            r -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + r;
            iov->iov_len -= (size_t)r;
        }
    }
}

/* One record whose content is the concatenation a[0:an] + b[0:bn]. */
void lw_record(logw *w, bool partial, const char *a, size_t an, const char *b, size_t bn)
{
    if (w->n + 4 > LW_IOV)
        lw_flush(w);
    w->iov[w->n++] = (struct iovec){w->prefix[partial ? 0 : 1], w->prefix_len};
    if (an)
        w->iov[w->n++] = (struct iovec){(void *)a, an};
    if (bn)
        w->iov[w->n++] = (struct iovec){(void *)b, bn};
    w->iov[w->n++] = (struct iovec){"\n", 1};
}

/* The slice [x, y) of the virtual line a + b as a record. */
static void lw_slice(logw *w, bool partial, const char *a, size_t an, const char *b, size_t x,
                     size_t y)
{
    const char *p1 = NULL, *p2 = NULL;
    size_t n1 = 0, n2 = 0;
    if (x < an) {
        p1 = a + x;
        n1 = (y < an ? y : an) - x;
    }
    if (y > an) {
        size_t from = x > an ? x - an : 0;
        p2 = b + from;
        n2 = y - an - from;
    }
    lw_record(w, partial, p1, n1, p2, n2);
}

/* _emit_line: P slices of max_line while too long, then F with the rest. */
static void enc_line(encoder *e, logw *w, const char *a, size_t an, const char *b, size_t bn)
{
    size_t total = an + bn, start = 0;
    if (e->max_line > 0) {
        size_t limit = (size_t)e->max_line;
        while (total - start > limit) {
            lw_slice(w, true, a, an, b, start, start + limit);
            start += limit;
        }
    }
    lw_slice(w, false, a, an, b, start, total);
}

static void enc_reserve(encoder *e, size_t need)
{
    if (need > e->cap) {
        size_t cap = e->cap ? e->cap : 256;
        while (cap < need)
            cap *= 2;
        e->buf = xrealloc(e->buf, cap);
        e->cap = cap;
    }
}

/* StreamEncoder.feed; the records go to w (flushed by the caller). */
void enc_feed(encoder *e, logw *w, const char *data, size_t n)
{
    size_t start = 0;
    while (start < n) {
        const char *nl = memchr(data + start, '\n', n - start);
        if (!nl) {
            /* The unterminated rest: buf += data[start:], then cut it into full-size
             * partials, keeping the tail (at most max_line bytes) for more data. The cut
             * works on buf + data without joining them first. */
            const char *t = data + start;
            size_t tn = n - start, total = e->len + tn;
            lw_flush(w); /* records may point into buf, which changes now */
            if (e->max_line > 0 && total > (size_t)e->max_line) {
                size_t limit = (size_t)e->max_line, cut = (total - 1) / limit * limit;
                for (size_t off = 0; off < cut; off += limit)
                    lw_slice(w, true, e->buf, e->len, t, off, off + limit);
                lw_flush(w);
                size_t keep = total - cut;
                enc_reserve(e, keep);
                if (cut < e->len) {
                    memmove(e->buf, e->buf + cut, e->len - cut);
                    memcpy(e->buf + (e->len - cut), t, tn);
                } else {
                    memcpy(e->buf, t + (cut - e->len), keep);
                }
                e->len = keep;
            } else {
                enc_reserve(e, total);
                memcpy(e->buf + e->len, t, tn);
                e->len = total;
            }
            return;
        }
        size_t end = (size_t)(nl - data);
        if (e->len) {
            enc_line(e, w, e->buf, e->len, data + start, end - start);
            e->len = 0; /* the bytes stay valid until the next flush */
        } else {
            enc_line(e, w, NULL, 0, data + start, end - start);
        }
        start = end + 1;
    }
}

/* StreamEncoder.finish: an unterminated line becomes a final P record. */
void enc_finish(encoder *e, logw *w)
{
    if (e->len)
        lw_record(w, true, e->buf, e->len, NULL, 0);
    lw_flush(w);
    e->len = 0;
}

/* Between calls: an empty buffer is given back (partial lines are rare and short-lived). */
void enc_idle(encoder *e)
{
    if (!e->len && e->buf) {
        release(e->buf, e->cap);
        e->buf = NULL;
        e->cap = 0;
    }
}
