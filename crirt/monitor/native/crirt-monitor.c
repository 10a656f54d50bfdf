/*
 * crirt-monitor: crirt's per-container monitor (conmon's job) as a native program.
 *
 * A drop-in replacement for `python3 -m crirt.monitor`: it mirrors crirt/monitor/__main__.py
 * function by function (same names where possible), and the Python monitor stays as the
 * fallback. It exists for memory: the Python monitor costs ~2.3 MB PSS per container, this one
 * well under 0.5 MB.
 *
 * Same command line (`crirt-monitor [--sync-fd N] [--foreground] SPEC_JSON`), same behaviour
 * and byte-identical outputs: the MonitorSpec it accepts and the messages it rejects one with
 * (crirt/monitor/protocol.py), the sync line, the exit file, the ctl replies, the attach
 * packets and the CRI log records (crirt/sansio/crilog.py StreamEncoder). Where a Python
 * message ends up in an output (json's decode errors, repr() of a bad value, codec errors,
 * int()'s errors), it is reproduced as CPython 3.11 words it. Where Python would crash with a
 * traceback (exit 3, or 1 before the spec is read), this program writes one line on fd 2 and
 * exits with the same status at the same point.
 *
 * One file, libc only; scripts/build-monitor.sh builds it. Memory: one 64 KiB buffer serves
 * every read (pipes, pty, ctl and attach sockets), log records go out with writev straight
 * from it, and nothing else is kept but what a container's state needs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE (64 * 1024)
#define ATTACH_PACKET (READ_SIZE + 1)  /* a type byte and one read of the container's output */
#define MAX_MESSAGE (64 * 1024)
#define CONN_RECV 4096
#define DEFAULT_LOG_MAX_LINE (16 * 1024)
/* How long output is drained after the container's init exited: grandchildren outside the
 * container's pid namespace may keep the pipes open forever. */
#define DRAIN_NS 2000000000LL
#define CONSOLE_TIMEOUT_MS 5000
#define ERROR_TAIL 4096
#define READ_AVAILABLE_LIMIT (1 << 20)
/* sun_path holds 108 bytes; longer paths go through the directory's /proc fd link. */
#define SUN_PATH_MAX 100
#define INT_MAX_STR_DIGITS 4300 /* CPython's int/str conversion limit (3.11+) */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define LOG_FLAGS (O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW)
#define CGROUP_ROOT "/sys/fs/cgroup"

/* JSON nesting at which Python's json raises RecursionError: the interpreter's limit (1000)
 * minus the frames below each call site, measured with CPython 3.11 under the client's
 * launcher. Deeper input makes the Python monitor die with a traceback; so does this one. */
#define SPEC_MAX_DEPTH 991
#define REQUEST_MAX_DEPTH 987
#define CONFIG_MAX_DEPTH 989

enum { ATTACH_STDIN = 0, ATTACH_STDIN_EOF = 1, ATTACH_RESIZE = 2 };
enum { ATTACH_STDOUT = 1, ATTACH_STDERR = 2 };

/* The one large buffer: stream reads land at rbuf + 1 so that rbuf is the attach packet.
 * Page-aligned: its first 64 KiB can be handed back to the system when the monitor idles. */
static unsigned char rbuf[ATTACH_PACKET] __attribute__((aligned(4096)));

/* ------------------------------------------------------------------------------------------ */
/* Small utilities                                                                            */

static void write_all_quiet(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        c += w;
        n -= (size_t)w;
    }
}

/* Where Python dies of an uncaught exception: a line on fd 2 (its traceback's place), no
 * cleanup, the same exit status. */
static _Noreturn void die(int status, const char *what, int err)
{
    char line[512];
    int n;
    if (err)
        n = snprintf(line, sizeof line, "crirt-monitor: %s: %s\n", what, strerror(err));
    else
        n = snprintf(line, sizeof line, "crirt-monitor: %s\n", what);
    if (n > 0)
        write_all_quiet(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    _exit(status);
}

static int crash_status = 3; /* 1 until the spec is decoded (python's own exit status) */

/* A large buffer was allocated or freed since the loop last trimmed the heap (run_loop). */
static bool heap_grew;
#define LARGE_BUFFER 8192

static void *xrealloc(void *p, size_t n)
{
    if (n >= LARGE_BUFFER)
        heap_grew = true;
    void *q = realloc(p, n ? n : 1);
    if (!q)
        die(crash_status, "out of memory", 0); /* Python: MemoryError */
    return q;
}

static void *xmalloc(size_t n) { return xrealloc(NULL, n); }

static void release(void *p, size_t cap)
{
    if (cap >= LARGE_BUFFER)
        heap_grew = true;
    free(p);
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static void close_quiet(int fd)
{
    if (fd >= 0) {
        int e = errno;
        close(fd);
        errno = e;
    }
}

static void set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Growable byte buffer. */
typedef struct {
    char *p;
    size_t n, cap;
} bbuf;

static void bb_reserve(bbuf *b, size_t extra)
{
    if (b->n + extra + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + extra + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
}

static void bb_putn(bbuf *b, const void *s, size_t n)
{
    bb_reserve(b, n);
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void bb_put(bbuf *b, char c) { bb_putn(b, &c, 1); }
static void bb_puts(bbuf *b, const char *s) { bb_putn(b, s, strlen(s)); }

static void bb_printf(bbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bb_printf(bbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        bb_putn(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void bb_free(bbuf *b)
{
    release(b->p, b->cap);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* Growable text as code points: Python str semantics (lengths, repr, json escapes). */
typedef struct {
    uint32_t *p;
    size_t n, cap;
} ubuf;

static void ub_reserve(ubuf *b, size_t extra)
{
    if (b->n + extra > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->n + extra)
            cap *= 2;
        b->p = xrealloc(b->p, cap * sizeof *b->p);
        b->cap = cap;
    }
}

static void ub_put(ubuf *b, uint32_t c)
{
    ub_reserve(b, 1);
    b->p[b->n++] = c;
}

static void ub_putn(ubuf *b, const uint32_t *s, size_t n)
{
    ub_reserve(b, n);
    if (n)
        memcpy(b->p + b->n, s, n * sizeof *s);
    b->n += n;
}

/* ASCII text (every message template here is ASCII). */
static void ub_puts(ubuf *b, const char *s)
{
    while (*s)
        ub_put(b, (unsigned char)*s++);
}

static void ub_printf(ubuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ub_printf(ubuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        ub_puts(b, tmp);
}

static void ub_free(ubuf *b)
{
    release(b->p, b->cap * sizeof *b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

static bool is_surrogate(uint32_t c) { return c >= 0xD800 && c <= 0xDFFF; }

/* UTF-8 with surrogateescape (os.fsencode); false if a surrogate cannot be encoded. */
static bool fsencode(bbuf *o, const uint32_t *s, size_t n)
{
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        char u[4];
        if (c < 0x80) {
            bb_put(o, (char)c);
        } else if (c < 0x800) {
            u[0] = (char)(0xC0 | (c >> 6));
            u[1] = (char)(0x80 | (c & 0x3F));
            bb_putn(o, u, 2);
        } else if (is_surrogate(c)) {
            if (c >= 0xDC80 && c <= 0xDCFF)
                bb_put(o, (char)(c - 0xDC00));
            else
                ok = false;
        } else if (c < 0x10000) {
            u[0] = (char)(0xE0 | (c >> 12));
            u[1] = (char)(0x80 | ((c >> 6) & 0x3F));
            u[2] = (char)(0x80 | (c & 0x3F));
            bb_putn(o, u, 3);
        } else {
            u[0] = (char)(0xF0 | (c >> 18));
            u[1] = (char)(0x80 | ((c >> 12) & 0x3F));
            u[2] = (char)(0x80 | ((c >> 6) & 0x3F));
            u[3] = (char)(0x80 | (c & 0x3F));
            bb_putn(o, u, 4);
        }
    }
    bb_reserve(o, 0);
    o->p[o->n] = 0;
    return ok;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding bytes as CPython's codecs do (bytes.decode), with their error messages            */

enum { ERR_STRICT, ERR_REPLACE, ERR_SURROGATEPASS, ERR_SURROGATEESCAPE };

static void codec_error(ubuf *err, const char *codec, const uint8_t *s, size_t n, size_t start,
                        size_t end, const char *why)
{
    if (!err)
        return;
    if (start < n && end == start + 1)
        ub_printf(err, "'%s' codec can't decode byte 0x%02x in position %zu: %s", codec, s[start],
                  start, why);
    else
        ub_printf(err, "'%s' codec can't decode bytes in position %zu-%zu: %s", codec, start,
                  end - 1, why);
}

static bool is_cont(uint8_t c) { return c >= 0x80 && c < 0xC0; }

/* One step of CPython's UTF-8 decoder at s[i]: the sequence length (cp set), or 0 with the
 * error range's end and reason as unicode_decode_utf8 reports them. */
static size_t utf8_step(const uint8_t *s, size_t n, size_t i, uint32_t *cp, size_t *eend,
                        const char **why)
{
    uint8_t c = s[i];
    size_t left = n - i;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xE0) {
        if (c < 0xC2)
            goto invalid_start;
        if (left < 2)
            goto unexpected_end;
        if (!is_cont(s[i + 1]))
            goto cont1;
        *cp = ((uint32_t)(c & 0x1F) << 6) | (s[i + 1] & 0x3F);
        return 2;
    }
    if (c < 0xF0) {
        if (left < 3) {
            if (left < 2)
                goto unexpected_end;
            uint8_t c2 = s[i + 1];
            if (!is_cont(c2) || (c2 < 0xA0 ? c == 0xE0 : c == 0xED))
                goto cont1;
            goto unexpected_end;
        }
        uint8_t c2 = s[i + 1], c3 = s[i + 2];
        if (!is_cont(c2) || (c == 0xE0 && c2 < 0xA0) || (c == 0xED && c2 >= 0xA0))
            goto cont1;
        if (!is_cont(c3))
            goto cont2;
        *cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(c2 & 0x3F) << 6) | (c3 & 0x3F);
        return 3;
    }
    if (c < 0xF5) {
        if (left < 4) {
            if (left < 2)
                goto unexpected_end;
            uint8_t c2 = s[i + 1];
            if (!is_cont(c2) || (c2 < 0x90 ? c == 0xF0 : c == 0xF4))
                goto cont1;
            if (left < 3)
                goto unexpected_end;
            if (!is_cont(s[i + 2]))
                goto cont2;
            goto unexpected_end;
        }
        uint8_t c2 = s[i + 1], c3 = s[i + 2], c4 = s[i + 3];
        if (!is_cont(c2) || (c == 0xF0 && c2 < 0x90) || (c == 0xF4 && c2 >= 0x90))
            goto cont1;
        if (!is_cont(c3))
            goto cont2;
        if (!is_cont(c4))
            goto cont3;
        *cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(c2 & 0x3F) << 12) |
              ((uint32_t)(c3 & 0x3F) << 6) | (c4 & 0x3F);
        return 4;
    }
invalid_start:
    *why = "invalid start byte";
    *eend = i + 1;
    return 0;
unexpected_end:
    *why = "unexpected end of data";
    *eend = n;
    return 0;
cont1:
    *why = "invalid continuation byte";
    *eend = i + 1;
    return 0;
cont2:
    *why = "invalid continuation byte";
    *eend = i + 2;
    return 0;
cont3:
    *why = "invalid continuation byte";
    *eend = i + 3;
    return 0;
}

/* bytes.decode("utf-8", errors); -1 (message in err) where Python raises. */
static int decode_utf8(const uint8_t *s, size_t n, int errors, ubuf *out, ubuf *err)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t eend;
        const char *why;
        size_t k = utf8_step(s, n, i, &cp, &eend, &why);
        if (k) {
            ub_put(out, cp);
            i += k;
            continue;
        }
        switch (errors) {
        case ERR_REPLACE:
            ub_put(out, 0xFFFD);
            i = eend;
            continue;
        case ERR_SURROGATEESCAPE:
            for (; i < eend; i++)
                ub_put(out, 0xDC00 + s[i]);
            continue;
        case ERR_SURROGATEPASS:
            if (n - i >= 3 && (s[i] & 0xF0) == 0xE0 && is_cont(s[i + 1]) && is_cont(s[i + 2])) {
                cp = ((uint32_t)(s[i] & 0x0F) << 12) | ((uint32_t)(s[i + 1] & 0x3F) << 6) |
                     (s[i + 2] & 0x3F);
                if (is_surrogate(cp)) {
                    ub_put(out, cp);
                    i += 3;
                    continue;
                }
            }
            break;
        }
        codec_error(err, "utf-8", s, n, i, eend, why);
        return -1;
    }
    return 0;
}

static uint32_t rd16(const uint8_t *p, bool be) { return be ? (uint32_t)p[0] << 8 | p[1] : (uint32_t)p[1] << 8 | p[0]; }

static uint32_t rd32(const uint8_t *p, bool be)
{
    return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
              : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* utf-16-le/-be with surrogatepass (json.loads on bytes), from position q (after a BOM). */
static int decode_utf16(const uint8_t *s, size_t n, size_t q, bool be, ubuf *out, ubuf *err)
{
    const char *codec = be ? "utf-16-be" : "utf-16-le";
    for (;;) {
        size_t start, end;
        const char *why;
        if (n - q >= 2) {
            uint32_t u = rd16(s + q, be);
            q += 2;
            if (!is_surrogate(u)) {
                ub_put(out, u);
                continue;
            }
            if (u >= 0xDC00) {
                why = "illegal encoding";
                start = q - 2;
                end = q;
            } else if (n - q < 2) {
                q -= 2;
                why = "unexpected end of data";
                start = q;
                end = n;
            } else {
                uint32_t u2 = rd16(s + q, be);
                q += 2;
                if (u2 >= 0xDC00 && u2 <= 0xDFFF) {
                    ub_put(out, 0x10000 + ((u - 0xD800) << 10) + (u2 - 0xDC00));
                    continue;
                }
                why = "illegal UTF-16 surrogate";
                start = q - 4;
                end = start + 2;
            }
        } else {
            if (q == n)
                return 0;
            why = "truncated data";
            start = q;
            end = n;
        }
        /* surrogatepass: a lone surrogate passes through */
        if (n - start >= 2 && is_surrogate(rd16(s + start, be))) {
            ub_put(out, rd16(s + start, be));
            q = start + 2;
            continue;
        }
        codec_error(err, codec, s, n, start, end, why);
        return -1;
    }
}

static int decode_utf32(const uint8_t *s, size_t n, size_t q, bool be, ubuf *out, ubuf *err)
{
    const char *codec = be ? "utf-32-be" : "utf-32-le";
    while (q < n) {
        size_t start = q, end;
        const char *why;
        if (n - q >= 4) {
            uint32_t c = rd32(s + q, be);
            if (is_surrogate(c)) {
                ub_put(out, c); /* surrogatepass */
                q += 4;
                continue;
            }
            if (c < 0x110000) {
                ub_put(out, c);
                q += 4;
                continue;
            }
            why = "code point not in range(0x110000)";
            end = q + 4;
        } else {
            why = "truncated data";
            end = n;
        }
        codec_error(err, codec, s, n, start, end, why);
        return -1;
    }
    return 0;
}

/* json.loads(bytes): json.detect_encoding, then decode(encoding, "surrogatepass"). */
static int json_bytes_to_text(const uint8_t *b, size_t n, ubuf *out, ubuf *err)
{
    if (n >= 4 && ((b[0] == 0xFF && b[1] == 0xFE && b[2] == 0 && b[3] == 0) ||
                   (b[0] == 0 && b[1] == 0 && b[2] == 0xFE && b[3] == 0xFF)))
        return decode_utf32(b, n, 4, b[0] == 0, out, err);
    if (n >= 2 && ((b[0] == 0xFE && b[1] == 0xFF) || (b[0] == 0xFF && b[1] == 0xFE)))
        return decode_utf16(b, n, 2, b[0] == 0xFE, out, err);
    if (n >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF)
        return decode_utf8(b + 3, n - 3, ERR_SURROGATEPASS, out, err); /* positions after it */
    if (n >= 4) {
        if (!b[0])
            return b[1] ? decode_utf16(b, n, 0, true, out, err)
                        : decode_utf32(b, n, 0, true, out, err);
        if (!b[1])
            return (b[2] || b[3]) ? decode_utf16(b, n, 0, false, out, err)
                                  : decode_utf32(b, n, 0, false, out, err);
    } else if (n == 2) {
        if (!b[0])
            return decode_utf16(b, n, 0, true, out, err);
        if (!b[1])
            return decode_utf16(b, n, 0, false, out, err);
    }
    return decode_utf8(b, n, ERR_SURROGATEPASS, out, err);
}

/* ------------------------------------------------------------------------------------------ */
/* Python's str.isprintable / str.isspace                                                     */

/* Code points above U+007F that Python 3.11's str.isprintable() refuses (Unicode 14.0:
 * categories Cc Cf Cs Co Cn Zl Zp Zs), as inclusive ranges; repr() escapes them. */
static const uint32_t nonprintable[] = {
    0x80,0xa0,0xad,0xad,0x378,0x379,0x380,0x383,0x38b,0x38b,0x38d,0x38d,0x3a2,0x3a2,0x530,0x530,
    0x557,0x558,0x58b,0x58c,0x590,0x590,0x5c8,0x5cf,0x5eb,0x5ee,0x5f5,0x605,0x61c,0x61c,0x6dd,0x6dd,
    0x70e,0x70f,0x74b,0x74c,0x7b2,0x7bf,0x7fb,0x7fc,0x82e,0x82f,0x83f,0x83f,0x85c,0x85d,0x85f,0x85f,
    0x86b,0x86f,0x88f,0x897,0x8e2,0x8e2,0x984,0x984,0x98d,0x98e,0x991,0x992,0x9a9,0x9a9,0x9b1,0x9b1,
    0x9b3,0x9b5,0x9ba,0x9bb,0x9c5,0x9c6,0x9c9,0x9ca,0x9cf,0x9d6,0x9d8,0x9db,0x9de,0x9de,0x9e4,0x9e5,
    0x9ff,0xa00,0xa04,0xa04,0xa0b,0xa0e,0xa11,0xa12,0xa29,0xa29,0xa31,0xa31,0xa34,0xa34,0xa37,0xa37,
    0xa3a,0xa3b,0xa3d,0xa3d,0xa43,0xa46,0xa49,0xa4a,0xa4e,0xa50,0xa52,0xa58,0xa5d,0xa5d,0xa5f,0xa65,
    0xa77,0xa80,0xa84,0xa84,0xa8e,0xa8e,0xa92,0xa92,0xaa9,0xaa9,0xab1,0xab1,0xab4,0xab4,0xaba,0xabb,
    0xac6,0xac6,0xaca,0xaca,0xace,0xacf,0xad1,0xadf,0xae4,0xae5,0xaf2,0xaf8,0xb00,0xb00,0xb04,0xb04,
    0xb0d,0xb0e,0xb11,0xb12,0xb29,0xb29,0xb31,0xb31,0xb34,0xb34,0xb3a,0xb3b,0xb45,0xb46,0xb49,0xb4a,
    0xb4e,0xb54,0xb58,0xb5b,0xb5e,0xb5e,0xb64,0xb65,0xb78,0xb81,0xb84,0xb84,0xb8b,0xb8d,0xb91,0xb91,
    0xb96,0xb98,0xb9b,0xb9b,0xb9d,0xb9d,0xba0,0xba2,0xba5,0xba7,0xbab,0xbad,0xbba,0xbbd,0xbc3,0xbc5,
    0xbc9,0xbc9,0xbce,0xbcf,0xbd1,0xbd6,0xbd8,0xbe5,0xbfb,0xbff,0xc0d,0xc0d,0xc11,0xc11,0xc29,0xc29,
    0xc3a,0xc3b,0xc45,0xc45,0xc49,0xc49,0xc4e,0xc54,0xc57,0xc57,0xc5b,0xc5c,0xc5e,0xc5f,0xc64,0xc65,
    0xc70,0xc76,0xc8d,0xc8d,0xc91,0xc91,0xca9,0xca9,0xcb4,0xcb4,0xcba,0xcbb,0xcc5,0xcc5,0xcc9,0xcc9,
    0xcce,0xcd4,0xcd7,0xcdc,0xcdf,0xcdf,0xce4,0xce5,0xcf0,0xcf0,0xcf3,0xcff,0xd0d,0xd0d,0xd11,0xd11,
    0xd45,0xd45,0xd49,0xd49,0xd50,0xd53,0xd64,0xd65,0xd80,0xd80,0xd84,0xd84,0xd97,0xd99,0xdb2,0xdb2,
    0xdbc,0xdbc,0xdbe,0xdbf,0xdc7,0xdc9,0xdcb,0xdce,0xdd5,0xdd5,0xdd7,0xdd7,0xde0,0xde5,0xdf0,0xdf1,
    0xdf5,0xe00,0xe3b,0xe3e,0xe5c,0xe80,0xe83,0xe83,0xe85,0xe85,0xe8b,0xe8b,0xea4,0xea4,0xea6,0xea6,
    0xebe,0xebf,0xec5,0xec5,0xec7,0xec7,0xece,0xecf,0xeda,0xedb,0xee0,0xeff,0xf48,0xf48,0xf6d,0xf70,
    0xf98,0xf98,0xfbd,0xfbd,0xfcd,0xfcd,0xfdb,0xfff,0x10c6,0x10c6,0x10c8,0x10cc,0x10ce,0x10cf,
    0x1249,0x1249,0x124e,0x124f,0x1257,0x1257,0x1259,0x1259,0x125e,0x125f,0x1289,0x1289,
    0x128e,0x128f,0x12b1,0x12b1,0x12b6,0x12b7,0x12bf,0x12bf,0x12c1,0x12c1,0x12c6,0x12c7,
    0x12d7,0x12d7,0x1311,0x1311,0x1316,0x1317,0x135b,0x135c,0x137d,0x137f,0x139a,0x139f,
    0x13f6,0x13f7,0x13fe,0x13ff,0x1680,0x1680,0x169d,0x169f,0x16f9,0x16ff,0x1716,0x171e,
    0x1737,0x173f,0x1754,0x175f,0x176d,0x176d,0x1771,0x1771,0x1774,0x177f,0x17de,0x17df,
    0x17ea,0x17ef,0x17fa,0x17ff,0x180e,0x180e,0x181a,0x181f,0x1879,0x187f,0x18ab,0x18af,
    0x18f6,0x18ff,0x191f,0x191f,0x192c,0x192f,0x193c,0x193f,0x1941,0x1943,0x196e,0x196f,
    0x1975,0x197f,0x19ac,0x19af,0x19ca,0x19cf,0x19db,0x19dd,0x1a1c,0x1a1d,0x1a5f,0x1a5f,
    0x1a7d,0x1a7e,0x1a8a,0x1a8f,0x1a9a,0x1a9f,0x1aae,0x1aaf,0x1acf,0x1aff,0x1b4d,0x1b4f,
    0x1b7f,0x1b7f,0x1bf4,0x1bfb,0x1c38,0x1c3a,0x1c4a,0x1c4c,0x1c89,0x1c8f,0x1cbb,0x1cbc,
    0x1cc8,0x1ccf,0x1cfb,0x1cff,0x1f16,0x1f17,0x1f1e,0x1f1f,0x1f46,0x1f47,0x1f4e,0x1f4f,
    0x1f58,0x1f58,0x1f5a,0x1f5a,0x1f5c,0x1f5c,0x1f5e,0x1f5e,0x1f7e,0x1f7f,0x1fb5,0x1fb5,
    0x1fc5,0x1fc5,0x1fd4,0x1fd5,0x1fdc,0x1fdc,0x1ff0,0x1ff1,0x1ff5,0x1ff5,0x1fff,0x200f,
    0x2028,0x202f,0x205f,0x206f,0x2072,0x2073,0x208f,0x208f,0x209d,0x209f,0x20c1,0x20cf,
    0x20f1,0x20ff,0x218c,0x218f,0x2427,0x243f,0x244b,0x245f,0x2b74,0x2b75,0x2b96,0x2b96,
    0x2cf4,0x2cf8,0x2d26,0x2d26,0x2d28,0x2d2c,0x2d2e,0x2d2f,0x2d68,0x2d6e,0x2d71,0x2d7e,
    0x2d97,0x2d9f,0x2da7,0x2da7,0x2daf,0x2daf,0x2db7,0x2db7,0x2dbf,0x2dbf,0x2dc7,0x2dc7,
    0x2dcf,0x2dcf,0x2dd7,0x2dd7,0x2ddf,0x2ddf,0x2e5e,0x2e7f,0x2e9a,0x2e9a,0x2ef4,0x2eff,
    0x2fd6,0x2fef,0x2ffc,0x3000,0x3040,0x3040,0x3097,0x3098,0x3100,0x3104,0x3130,0x3130,
    0x318f,0x318f,0x31e4,0x31ef,0x321f,0x321f,0xa48d,0xa48f,0xa4c7,0xa4cf,0xa62c,0xa63f,
    0xa6f8,0xa6ff,0xa7cb,0xa7cf,0xa7d2,0xa7d2,0xa7d4,0xa7d4,0xa7da,0xa7f1,0xa82d,0xa82f,
    0xa83a,0xa83f,0xa878,0xa87f,0xa8c6,0xa8cd,0xa8da,0xa8df,0xa954,0xa95e,0xa97d,0xa97f,
    0xa9ce,0xa9ce,0xa9da,0xa9dd,0xa9ff,0xa9ff,0xaa37,0xaa3f,0xaa4e,0xaa4f,0xaa5a,0xaa5b,
    0xaac3,0xaada,0xaaf7,0xab00,0xab07,0xab08,0xab0f,0xab10,0xab17,0xab1f,0xab27,0xab27,
    0xab2f,0xab2f,0xab6c,0xab6f,0xabee,0xabef,0xabfa,0xabff,0xd7a4,0xd7af,0xd7c7,0xd7ca,
    0xd7fc,0xf8ff,0xfa6e,0xfa6f,0xfada,0xfaff,0xfb07,0xfb12,0xfb18,0xfb1c,0xfb37,0xfb37,
    0xfb3d,0xfb3d,0xfb3f,0xfb3f,0xfb42,0xfb42,0xfb45,0xfb45,0xfbc3,0xfbd2,0xfd90,0xfd91,
    0xfdc8,0xfdce,0xfdd0,0xfdef,0xfe1a,0xfe1f,0xfe53,0xfe53,0xfe67,0xfe67,0xfe6c,0xfe6f,
    0xfe75,0xfe75,0xfefd,0xff00,0xffbf,0xffc1,0xffc8,0xffc9,0xffd0,0xffd1,0xffd8,0xffd9,
    0xffdd,0xffdf,0xffe7,0xffe7,0xffef,0xfffb,0xfffe,0xffff,0x1000c,0x1000c,0x10027,0x10027,
    0x1003b,0x1003b,0x1003e,0x1003e,0x1004e,0x1004f,0x1005e,0x1007f,0x100fb,0x100ff,0x10103,0x10106,
    0x10134,0x10136,0x1018f,0x1018f,0x1019d,0x1019f,0x101a1,0x101cf,0x101fe,0x1027f,0x1029d,0x1029f,
    0x102d1,0x102df,0x102fc,0x102ff,0x10324,0x1032c,0x1034b,0x1034f,0x1037b,0x1037f,0x1039e,0x1039e,
    0x103c4,0x103c7,0x103d6,0x103ff,0x1049e,0x1049f,0x104aa,0x104af,0x104d4,0x104d7,0x104fc,0x104ff,
    0x10528,0x1052f,0x10564,0x1056e,0x1057b,0x1057b,0x1058b,0x1058b,0x10593,0x10593,0x10596,0x10596,
    0x105a2,0x105a2,0x105b2,0x105b2,0x105ba,0x105ba,0x105bd,0x105ff,0x10737,0x1073f,0x10756,0x1075f,
    0x10768,0x1077f,0x10786,0x10786,0x107b1,0x107b1,0x107bb,0x107ff,0x10806,0x10807,0x10809,0x10809,
    0x10836,0x10836,0x10839,0x1083b,0x1083d,0x1083e,0x10856,0x10856,0x1089f,0x108a6,0x108b0,0x108df,
    0x108f3,0x108f3,0x108f6,0x108fa,0x1091c,0x1091e,0x1093a,0x1093e,0x10940,0x1097f,0x109b8,0x109bb,
    0x109d0,0x109d1,0x10a04,0x10a04,0x10a07,0x10a0b,0x10a14,0x10a14,0x10a18,0x10a18,0x10a36,0x10a37,
    0x10a3b,0x10a3e,0x10a49,0x10a4f,0x10a59,0x10a5f,0x10aa0,0x10abf,0x10ae7,0x10aea,0x10af7,0x10aff,
    0x10b36,0x10b38,0x10b56,0x10b57,0x10b73,0x10b77,0x10b92,0x10b98,0x10b9d,0x10ba8,0x10bb0,0x10bff,
    0x10c49,0x10c7f,0x10cb3,0x10cbf,0x10cf3,0x10cf9,0x10d28,0x10d2f,0x10d3a,0x10e5f,0x10e7f,0x10e7f,
    0x10eaa,0x10eaa,0x10eae,0x10eaf,0x10eb2,0x10eff,0x10f28,0x10f2f,0x10f5a,0x10f6f,0x10f8a,0x10faf,
    0x10fcc,0x10fdf,0x10ff7,0x10fff,0x1104e,0x11051,0x11076,0x1107e,0x110bd,0x110bd,0x110c3,0x110cf,
    0x110e9,0x110ef,0x110fa,0x110ff,0x11135,0x11135,0x11148,0x1114f,0x11177,0x1117f,0x111e0,0x111e0,
    0x111f5,0x111ff,0x11212,0x11212,0x1123f,0x1127f,0x11287,0x11287,0x11289,0x11289,0x1128e,0x1128e,
    0x1129e,0x1129e,0x112aa,0x112af,0x112eb,0x112ef,0x112fa,0x112ff,0x11304,0x11304,0x1130d,0x1130e,
    0x11311,0x11312,0x11329,0x11329,0x11331,0x11331,0x11334,0x11334,0x1133a,0x1133a,0x11345,0x11346,
    0x11349,0x1134a,0x1134e,0x1134f,0x11351,0x11356,0x11358,0x1135c,0x11364,0x11365,0x1136d,0x1136f,
    0x11375,0x113ff,0x1145c,0x1145c,0x11462,0x1147f,0x114c8,0x114cf,0x114da,0x1157f,0x115b6,0x115b7,
    0x115de,0x115ff,0x11645,0x1164f,0x1165a,0x1165f,0x1166d,0x1167f,0x116ba,0x116bf,0x116ca,0x116ff,
    0x1171b,0x1171c,0x1172c,0x1172f,0x11747,0x117ff,0x1183c,0x1189f,0x118f3,0x118fe,0x11907,0x11908,
    0x1190a,0x1190b,0x11914,0x11914,0x11917,0x11917,0x11936,0x11936,0x11939,0x1193a,0x11947,0x1194f,
    0x1195a,0x1199f,0x119a8,0x119a9,0x119d8,0x119d9,0x119e5,0x119ff,0x11a48,0x11a4f,0x11aa3,0x11aaf,
    0x11af9,0x11bff,0x11c09,0x11c09,0x11c37,0x11c37,0x11c46,0x11c4f,0x11c6d,0x11c6f,0x11c90,0x11c91,
    0x11ca8,0x11ca8,0x11cb7,0x11cff,0x11d07,0x11d07,0x11d0a,0x11d0a,0x11d37,0x11d39,0x11d3b,0x11d3b,
    0x11d3e,0x11d3e,0x11d48,0x11d4f,0x11d5a,0x11d5f,0x11d66,0x11d66,0x11d69,0x11d69,0x11d8f,0x11d8f,
    0x11d92,0x11d92,0x11d99,0x11d9f,0x11daa,0x11edf,0x11ef9,0x11faf,0x11fb1,0x11fbf,0x11ff2,0x11ffe,
    0x1239a,0x123ff,0x1246f,0x1246f,0x12475,0x1247f,0x12544,0x12f8f,0x12ff3,0x12fff,0x1342f,0x143ff,
    0x14647,0x167ff,0x16a39,0x16a3f,0x16a5f,0x16a5f,0x16a6a,0x16a6d,0x16abf,0x16abf,0x16aca,0x16acf,
    0x16aee,0x16aef,0x16af6,0x16aff,0x16b46,0x16b4f,0x16b5a,0x16b5a,0x16b62,0x16b62,0x16b78,0x16b7c,
    0x16b90,0x16e3f,0x16e9b,0x16eff,0x16f4b,0x16f4e,0x16f88,0x16f8e,0x16fa0,0x16fdf,0x16fe5,0x16fef,
    0x16ff2,0x16fff,0x187f8,0x187ff,0x18cd6,0x18cff,0x18d09,0x1afef,0x1aff4,0x1aff4,0x1affc,0x1affc,
    0x1afff,0x1afff,0x1b123,0x1b14f,0x1b153,0x1b163,0x1b168,0x1b16f,0x1b2fc,0x1bbff,0x1bc6b,0x1bc6f,
    0x1bc7d,0x1bc7f,0x1bc89,0x1bc8f,0x1bc9a,0x1bc9b,0x1bca0,0x1ceff,0x1cf2e,0x1cf2f,0x1cf47,0x1cf4f,
    0x1cfc4,0x1cfff,0x1d0f6,0x1d0ff,0x1d127,0x1d128,0x1d173,0x1d17a,0x1d1eb,0x1d1ff,0x1d246,0x1d2df,
    0x1d2f4,0x1d2ff,0x1d357,0x1d35f,0x1d379,0x1d3ff,0x1d455,0x1d455,0x1d49d,0x1d49d,0x1d4a0,0x1d4a1,
    0x1d4a3,0x1d4a4,0x1d4a7,0x1d4a8,0x1d4ad,0x1d4ad,0x1d4ba,0x1d4ba,0x1d4bc,0x1d4bc,0x1d4c4,0x1d4c4,
    0x1d506,0x1d506,0x1d50b,0x1d50c,0x1d515,0x1d515,0x1d51d,0x1d51d,0x1d53a,0x1d53a,0x1d53f,0x1d53f,
    0x1d545,0x1d545,0x1d547,0x1d549,0x1d551,0x1d551,0x1d6a6,0x1d6a7,0x1d7cc,0x1d7cd,0x1da8c,0x1da9a,
    0x1daa0,0x1daa0,0x1dab0,0x1deff,0x1df1f,0x1dfff,0x1e007,0x1e007,0x1e019,0x1e01a,0x1e022,0x1e022,
    0x1e025,0x1e025,0x1e02b,0x1e0ff,0x1e12d,0x1e12f,0x1e13e,0x1e13f,0x1e14a,0x1e14d,0x1e150,0x1e28f,
    0x1e2af,0x1e2bf,0x1e2fa,0x1e2fe,0x1e300,0x1e7df,0x1e7e7,0x1e7e7,0x1e7ec,0x1e7ec,0x1e7ef,0x1e7ef,
    0x1e7ff,0x1e7ff,0x1e8c5,0x1e8c6,0x1e8d7,0x1e8ff,0x1e94c,0x1e94f,0x1e95a,0x1e95d,0x1e960,0x1ec70,
    0x1ecb5,0x1ed00,0x1ed3e,0x1edff,0x1ee04,0x1ee04,0x1ee20,0x1ee20,0x1ee23,0x1ee23,0x1ee25,0x1ee26,
    0x1ee28,0x1ee28,0x1ee33,0x1ee33,0x1ee38,0x1ee38,0x1ee3a,0x1ee3a,0x1ee3c,0x1ee41,0x1ee43,0x1ee46,
    0x1ee48,0x1ee48,0x1ee4a,0x1ee4a,0x1ee4c,0x1ee4c,0x1ee50,0x1ee50,0x1ee53,0x1ee53,0x1ee55,0x1ee56,
    0x1ee58,0x1ee58,0x1ee5a,0x1ee5a,0x1ee5c,0x1ee5c,0x1ee5e,0x1ee5e,0x1ee60,0x1ee60,0x1ee63,0x1ee63,
    0x1ee65,0x1ee66,0x1ee6b,0x1ee6b,0x1ee73,0x1ee73,0x1ee78,0x1ee78,0x1ee7d,0x1ee7d,0x1ee7f,0x1ee7f,
    0x1ee8a,0x1ee8a,0x1ee9c,0x1eea0,0x1eea4,0x1eea4,0x1eeaa,0x1eeaa,0x1eebc,0x1eeef,0x1eef2,0x1efff,
    0x1f02c,0x1f02f,0x1f094,0x1f09f,0x1f0af,0x1f0b0,0x1f0c0,0x1f0c0,0x1f0d0,0x1f0d0,0x1f0f6,0x1f0ff,
    0x1f1ae,0x1f1e5,0x1f203,0x1f20f,0x1f23c,0x1f23f,0x1f249,0x1f24f,0x1f252,0x1f25f,0x1f266,0x1f2ff,
    0x1f6d8,0x1f6dc,0x1f6ed,0x1f6ef,0x1f6fd,0x1f6ff,0x1f774,0x1f77f,0x1f7d9,0x1f7df,0x1f7ec,0x1f7ef,
    0x1f7f1,0x1f7ff,0x1f80c,0x1f80f,0x1f848,0x1f84f,0x1f85a,0x1f85f,0x1f888,0x1f88f,0x1f8ae,0x1f8af,
    0x1f8b2,0x1f8ff,0x1fa54,0x1fa5f,0x1fa6e,0x1fa6f,0x1fa75,0x1fa77,0x1fa7d,0x1fa7f,0x1fa87,0x1fa8f,
    0x1faad,0x1faaf,0x1fabb,0x1fabf,0x1fac6,0x1facf,0x1fada,0x1fadf,0x1fae8,0x1faef,0x1faf7,0x1faff,
    0x1fb93,0x1fb93,0x1fbcb,0x1fbef,0x1fbfa,0x1ffff,0x2a6e0,0x2a6ff,0x2b739,0x2b73f,0x2b81e,0x2b81f,
    0x2cea2,0x2ceaf,0x2ebe1,0x2f7ff,0x2fa1e,0x2ffff,0x3134b,0xe00ff,0xe01f0,0x10ffff,
};
static const size_t n_nonprintable = sizeof nonprintable / sizeof nonprintable[0];

static bool py_isprintable(uint32_t c)
{
    if (c < 0x80)
        return c >= 0x20 && c < 0x7F;
    size_t lo = 0, hi = n_nonprintable / 2;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < nonprintable[2 * mid])
            hi = mid;
        else if (c > nonprintable[2 * mid + 1])
            lo = mid + 1;
        else
            return false;
    }
    return true;
}

static bool py_isspace(uint32_t c)
{
    switch (c) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x1C: case 0x1D: case 0x1E:
    case 0x1F: case 0x20: case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029:
    case 0x202F: case 0x205F: case 0x3000:
        return true;
    }
    return c >= 0x2000 && c <= 0x200A;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON: a port of CPython 3.11's json scanner (Modules/_json.c) over code points, so that    */
/* what it accepts and every error message (with its position) match json.loads.              */

enum { J_NULL, J_FALSE, J_TRUE, J_INT, J_FLOAT, J_STR, J_ARR, J_OBJ };

typedef struct jv jv;
struct jv {
    uint8_t t;
    jv *next;            /* next element of the array / member of the object */
    const uint32_t *k;   /* member key */
    size_t kn;
    const uint32_t *s;   /* J_STR text, J_INT digits as written */
    size_t n;            /* length of s; element count of J_ARR / J_OBJ */
    jv *first, *last;
    double f;
    int64_t i;           /* J_INT, saturated (Python's are unbounded) */
};

/* Parse results live in an arena freed at once. */
typedef struct ablk {
    struct ablk *next;
    size_t used, cap;
    max_align_t data[];
} ablk;

typedef struct {
    ablk *head;
} arena;

static void *aalloc(arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 8192 ? n : 8192;
        ablk *b = xmalloc(sizeof *b + cap);
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

static void afree(arena *a)
{
    while (a->head) {
        ablk *b = a->head;
        a->head = b->next;
        release(b, sizeof *b + b->cap);
    }
}

enum { JE_NONE, JE_DECODE, JE_STOP, JE_RECURSION, JE_VALUE };

typedef struct {
    const uint32_t *s;
    ssize_t len;
    arena *a;
    int depth, maxdepth;
    int err;
    const char *msg; /* JE_DECODE */
    ssize_t pos;     /* JE_DECODE, JE_STOP */
    size_t ndigits;  /* JE_VALUE: the int conversion limit */
    ubuf tmp;
} jparser;

static jv *jnew(jparser *p, int t)
{
    jv *v = aalloc(p->a, sizeof *v);
    memset(v, 0, sizeof *v);
    v->t = (uint8_t)t;
    return v;
}

static void *jfail(jparser *p, const char *msg, ssize_t pos)
{
    p->err = JE_DECODE;
    p->msg = msg;
    p->pos = pos;
    return NULL;
}

static void *jstop(jparser *p, ssize_t pos)
{
    p->err = JE_STOP;
    p->pos = pos;
    return NULL;
}

static bool is_ws(uint32_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int hexval(uint32_t d)
{
    if (d >= '0' && d <= '9')
        return (int)(d - '0');
    if (d >= 'a' && d <= 'f')
        return (int)(d - 'a' + 10);
    if (d >= 'A' && d <= 'F')
        return (int)(d - 'A' + 10);
    return -1;
}

/* scanstring_unicode: end is the index after the opening quote. */
static jv *jstring(jparser *p, ssize_t end, ssize_t *next_end)
{
    const uint32_t *buf = p->s;
    ssize_t len = p->len, begin = end - 1, next;
    bool writer = false;
    p->tmp.n = 0;
    for (;;) {
        uint32_t c = 0;
        for (next = end; next < len; next++) {
            c = buf[next];
            if (c == '"' || c == '\\')
                break;
            if (c <= 0x1f)
                return jfail(p, "Invalid control character at", next);
        }
        if (c == '"') {
            if (!writer) {
                jv *v = jnew(p, J_STR);
                v->s = buf + end;
                v->n = (size_t)(next - end);
                *next_end = next + 1;
                return v;
            }
        } else if (c != '\\') {
            return jfail(p, "Unterminated string starting at", begin);
        }
        if (next != end) {
            ub_putn(&p->tmp, buf + end, (size_t)(next - end));
            writer = true;
        }
        next++;
        if (c == '"') {
            end = next;
            break;
        }
        if (next == len)
            return jfail(p, "Unterminated string starting at", begin);
        c = buf[next];
        if (c != 'u') {
            end = next + 1;
            switch (c) {
            case '"': case '\\': case '/': break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            default: c = 0;
            }
            if (c == 0)
                return jfail(p, "Invalid \\escape", end - 2);
        } else {
            c = 0;
            next++;
            end = next + 4;
            if (end >= len)
                return jfail(p, "Invalid \\uXXXX escape", next - 1);
            for (; next < end; next++) {
                int h = hexval(buf[next]);
                if (h < 0)
                    return jfail(p, "Invalid \\uXXXX escape", end - 5);
                c = (c << 4) | (uint32_t)h;
            }
            /* A surrogate pair spelled as two escapes is joined; note the side effects on
             * next, as in the C original (harmless: next is reset below). */
            if (c >= 0xD800 && c <= 0xDBFF && end + 6 < len && buf[next++] == '\\' &&
                buf[next++] == 'u') {
                uint32_t c2 = 0;
                end += 6;
                for (; next < end; next++) {
                    int h = hexval(buf[next]);
                    if (h < 0)
                        return jfail(p, "Invalid \\uXXXX escape", end - 5);
                    c2 = (c2 << 4) | (uint32_t)h;
                }
                if (c2 >= 0xDC00 && c2 <= 0xDFFF)
                    c = 0x10000 + ((c - 0xD800) << 10) + (c2 - 0xDC00);
                else
                    end -= 6;
            }
        }
        ub_put(&p->tmp, c);
        writer = true;
    }
    jv *v = jnew(p, J_STR);
    uint32_t *copy = aalloc(p->a, (p->tmp.n ? p->tmp.n : 1) * sizeof *copy);
    memcpy(copy, p->tmp.p, p->tmp.n * sizeof *copy);
    v->s = copy;
    v->n = p->tmp.n;
    *next_end = end;
    return v;
}

static bool ueq(const uint32_t *a, size_t an, const uint32_t *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an * sizeof *a) == 0);
}

static void jappend(jv *c, jv *v)
{
    if (c->last)
        c->last->next = v;
    else
        c->first = v;
    c->last = v;
    c->n++;
}

/* dict[key] = value: a repeated key keeps its first position and takes the last value. */
static void jobj_set(jv *o, const uint32_t *k, size_t kn, jv *v)
{
    for (jv *m = o->first; m; m = m->next) {
        if (ueq(m->k, m->kn, k, kn)) {
            jv *next = m->next;
            const uint32_t *mk = m->k;
            size_t mkn = m->kn;
            *m = *v;
            m->next = next;
            m->k = mk;
            m->kn = mkn;
            return;
        }
    }
    v->k = k;
    v->kn = kn;
    jappend(o, v);
}

static jv *jscan(jparser *p, ssize_t idx, ssize_t *next);

static ssize_t jskip(jparser *p, ssize_t idx)
{
    while (idx < p->len && is_ws(p->s[idx]))
        idx++;
    return idx;
}

static jv *jobject(jparser *p, ssize_t idx, ssize_t *next)
{
    const uint32_t *s = p->s;
    jv *o = jnew(p, J_OBJ);
    ssize_t nidx;
    idx = jskip(p, idx);
    if (idx >= p->len || s[idx] != '}') {
        for (;;) {
            if (idx >= p->len || s[idx] != '"')
                return jfail(p, "Expecting property name enclosed in double quotes", idx);
            jv *key = jstring(p, idx + 1, &nidx);
            if (!key)
                return NULL;
            idx = jskip(p, nidx);
            if (idx >= p->len || s[idx] != ':')
                return jfail(p, "Expecting ':' delimiter", idx);
            idx = jskip(p, idx + 1);
            jv *val = jscan(p, idx, &nidx);
            if (!val)
                return NULL;
            jobj_set(o, key->s, key->n, val);
            idx = jskip(p, nidx);
            if (idx < p->len && s[idx] == '}')
                break;
            if (idx >= p->len || s[idx] != ',')
                return jfail(p, "Expecting ',' delimiter", idx);
            idx = jskip(p, idx + 1);
        }
    }
    *next = idx + 1;
    return o;
}

static jv *jarray(jparser *p, ssize_t idx, ssize_t *next)
{
    const uint32_t *s = p->s;
    jv *a = jnew(p, J_ARR);
    ssize_t nidx;
    idx = jskip(p, idx);
    if (idx >= p->len || s[idx] != ']') {
        for (;;) {
            jv *val = jscan(p, idx, &nidx);
            if (!val)
                return NULL;
            jappend(a, val);
            idx = jskip(p, nidx);
            if (idx < p->len && s[idx] == ']')
                break;
            if (idx >= p->len || s[idx] != ',')
                return jfail(p, "Expecting ',' delimiter", idx);
            idx = jskip(p, idx + 1);
        }
    }
    *next = idx + 1;
    return a;
}

static bool jdigit(uint32_t c) { return c >= '0' && c <= '9'; }

/* _match_number_unicode, including its backtracking on a bad fraction or exponent. */
static jv *jnumber(jparser *p, ssize_t start, ssize_t *next)
{
    const uint32_t *s = p->s;
    ssize_t end_idx = p->len - 1, idx = start;
    bool is_float = false;
    if (s[idx] == '-') {
        idx++;
        if (idx > end_idx)
            return jstop(p, start);
    }
    if (s[idx] >= '1' && s[idx] <= '9') {
        idx++;
        while (idx <= end_idx && jdigit(s[idx]))
            idx++;
    } else if (s[idx] == '0') {
        idx++;
    } else {
        return jstop(p, start);
    }
    if (idx < end_idx && s[idx] == '.' && jdigit(s[idx + 1])) {
        is_float = true;
        idx += 2;
        while (idx <= end_idx && jdigit(s[idx]))
            idx++;
    }
    if (idx < end_idx && (s[idx] == 'e' || s[idx] == 'E')) {
        ssize_t e_start = idx;
        idx++;
        if (idx < end_idx && (s[idx] == '-' || s[idx] == '+'))
            idx++;
        while (idx <= end_idx && jdigit(s[idx]))
            idx++;
        if (jdigit(s[idx - 1]))
            is_float = true;
        else
            idx = e_start;
    }
    size_t n = (size_t)(idx - start);
    jv *v;
    if (is_float) {
        char *tmp = xmalloc(n + 1);
        for (size_t i = 0; i < n; i++)
            tmp[i] = (char)s[start + (ssize_t)i];
        tmp[n] = 0;
        v = jnew(p, J_FLOAT);
        v->f = strtod(tmp, NULL);
        free(tmp);
    } else {
        size_t digits = n - (s[start] == '-');
        if (digits > INT_MAX_STR_DIGITS) {
            p->err = JE_VALUE;
            p->ndigits = digits;
            return NULL;
        }
        v = jnew(p, J_INT);
        v->s = s + start;
        v->n = n;
        bool neg = s[start] == '-';
        uint64_t acc = 0;
        bool over = false;
        for (size_t i = neg; i < n; i++) {
            uint32_t d = s[start + (ssize_t)i] - '0';
            if (acc > (UINT64_MAX - d) / 10)
                over = true;
            else
                acc = acc * 10 + d;
        }
        if (neg)
            v->i = (over || acc > (uint64_t)INT64_MAX + 1) ? INT64_MIN : (int64_t)(0 - acc);
        else
            v->i = (over || acc > (uint64_t)INT64_MAX) ? INT64_MAX : (int64_t)acc;
    }
    *next = idx;
    return v;
}

static bool jmatch(jparser *p, ssize_t idx, const char *word)
{
    size_t n = strlen(word);
    if (idx + (ssize_t)n - 1 >= p->len)
        return false;
    for (size_t i = 1; i < n; i++)
        if (p->s[idx + (ssize_t)i] != (unsigned char)word[i])
            return false;
    return true;
}

/* scan_once_unicode */
static jv *jscan(jparser *p, ssize_t idx, ssize_t *next)
{
    if (idx >= p->len)
        return jstop(p, idx);
    jv *v;
    switch (p->s[idx]) {
    case '"':
        return jstring(p, idx + 1, next);
    case '{':
    case '[':
        if (++p->depth > p->maxdepth) {
            p->err = JE_RECURSION;
            return NULL;
        }
        v = p->s[idx] == '{' ? jobject(p, idx + 1, next) : jarray(p, idx + 1, next);
        p->depth--;
        return v;
    case 'n':
        if (jmatch(p, idx, "null")) {
            *next = idx + 4;
            return jnew(p, J_NULL);
        }
        break;
    case 't':
        if (jmatch(p, idx, "true")) {
            *next = idx + 4;
            return jnew(p, J_TRUE);
        }
        break;
    case 'f':
        if (jmatch(p, idx, "false")) {
            *next = idx + 5;
            return jnew(p, J_FALSE);
        }
        break;
    case 'N':
        if (jmatch(p, idx, "NaN")) {
            *next = idx + 3;
            v = jnew(p, J_FLOAT);
            v->f = __builtin_nan("");
            return v;
        }
        break;
    case 'I':
        if (jmatch(p, idx, "Infinity")) {
            *next = idx + 8;
            v = jnew(p, J_FLOAT);
            v->f = __builtin_inf();
            return v;
        }
        break;
    case '-':
        if (jmatch(p, idx, "-Infinity")) {
            *next = idx + 9;
            v = jnew(p, J_FLOAT);
            v->f = -__builtin_inf();
            return v;
        }
        break;
    }
    return jnumber(p, idx, next);
}

/* json.loads(text). On failure: err is set; for JE_DECODE/JE_STOP/JE_VALUE *msg gets the
 * exception's text (what "not JSON: {exc}" shows). JE_RECURSION is a RecursionError. */
static jv *json_loads(const uint32_t *s, size_t len, arena *a, int maxdepth, bool str_input,
                      int *err, ubuf *msg)
{
    jparser p = {.s = s, .len = (ssize_t)len, .a = a, .maxdepth = maxdepth};
    ssize_t end = 0;
    jv *v = NULL;
    if (str_input && len && s[0] == 0xFEFF) {
        jfail(&p, "Unexpected UTF-8 BOM (decode using utf-8-sig)", 0);
    } else {
        v = jscan(&p, jskip(&p, 0), &end);
        if (v) {
            end = jskip(&p, end);
            if (end != p.len) {
                v = NULL;
                jfail(&p, "Extra data", end);
            }
        }
    }
    ub_free(&p.tmp);
    *err = p.err;
    if (v)
        return v;
    if (p.err == JE_STOP) {
        p.msg = "Expecting value";
        p.err = JE_DECODE;
    }
    if (p.err == JE_DECODE) {
        /* JSONDecodeError: lineno = count('\n', 0, pos) + 1, colno = pos - rfind('\n') */
        size_t line = 1;
        ssize_t last_nl = -1;
        for (ssize_t i = 0; i < p.pos && i < p.len; i++) {
            if (s[i] == '\n') {
                line++;
                last_nl = i;
            }
        }
        ub_printf(msg, "%s: line %zu column %zd (char %zd)", p.msg, line, p.pos - last_nl,
                  p.pos);
    } else if (p.err == JE_VALUE) {
        ub_printf(msg,
                  "Exceeds the limit (%d digits) for integer string conversion: value has %zu "
                  "digits; use sys.set_int_max_str_digits() to increase the limit",
                  INT_MAX_STR_DIGITS, p.ndigits);
    }
    return NULL;
}

static jv *jget(const jv *o, const char *key)
{
    size_t kn = strlen(key);
    for (jv *m = o->first; m; m = m->next) {
        if (m->kn != kn)
            continue;
        size_t i = 0;
        while (i < kn && m->k[i] == (unsigned char)key[i])
            i++;
        if (i == kn)
            return m;
    }
    return NULL;
}

static bool jis_str(const jv *v, const char *text)
{
    if (!v || v->t != J_STR || v->n != strlen(text))
        return false;
    for (size_t i = 0; i < v->n; i++)
        if (v->s[i] != (unsigned char)text[i])
            return false;
    return true;
}

/* Python truthiness of a decoded value. */
static bool jtruthy(const jv *v)
{
    switch (v->t) {
    case J_NULL: case J_FALSE: return false;
    case J_TRUE: return true;
    case J_INT: return v->i != 0;
    case J_FLOAT: return !(v->f == 0.0);
    default: return v->n != 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* repr() of decoded values, for the messages that quote a bad value                          */

static void hexesc(ubuf *o, char kind, uint32_t c, int width)
{
    ub_printf(o, "\\%c%0*x", kind, width, c);
}

static void repr_str(ubuf *o, const uint32_t *s, size_t n)
{
    bool sq = false, dq = false;
    for (size_t i = 0; i < n; i++) {
        sq |= s[i] == '\'';
        dq |= s[i] == '"';
    }
    uint32_t quote = (sq && !dq) ? '"' : '\'';
    ub_put(o, quote);
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        if (c == quote || c == '\\') {
            ub_put(o, '\\');
            ub_put(o, c);
        } else if (c == '\t') {
            ub_puts(o, "\\t");
        } else if (c == '\n') {
            ub_puts(o, "\\n");
        } else if (c == '\r') {
            ub_puts(o, "\\r");
        } else if (c < ' ' || c == 0x7F) {
            hexesc(o, 'x', c, 2);
        } else if (c < 0x7F || py_isprintable(c)) {
            ub_put(o, c);
        } else if (c <= 0xFF) {
            hexesc(o, 'x', c, 2);
        } else if (c <= 0xFFFF) {
            hexesc(o, 'u', c, 4);
        } else {
            hexesc(o, 'U', c, 8);
        }
    }
    ub_put(o, quote);
}

static void repr_bytes(ubuf *o, const uint8_t *s, size_t n)
{
    bool sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    uint32_t quote = (sq && !dq) ? '"' : '\'';
    ub_put(o, 'b');
    ub_put(o, quote);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == quote || c == '\\') {
            ub_put(o, '\\');
            ub_put(o, c);
        } else if (c == '\t') {
            ub_puts(o, "\\t");
        } else if (c == '\n') {
            ub_puts(o, "\\n");
        } else if (c == '\r') {
            ub_puts(o, "\\r");
        } else if (c < ' ' || c >= 0x7F) {
            hexesc(o, 'x', c, 2);
        } else {
            ub_put(o, c);
        }
    }
    ub_put(o, quote);
}

/* float.__repr__: the shortest round-tripping digits, laid out as Python's 'r' format. */
static void repr_float(ubuf *o, double x)
{
    if (x != x) {
        ub_puts(o, "nan");
        return;
    }
    if (x == __builtin_inf() || x == -__builtin_inf()) {
        ub_puts(o, x < 0 ? "-inf" : "inf");
        return;
    }
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    /* buf: [-]d[.ddd]e[+-]XX */
    char digits[24];
    size_t nd = 0;
    const char *c = buf;
    bool neg = *c == '-';
    if (neg)
        c++;
    for (; *c && *c != 'e'; c++)
        if (*c != '.')
            digits[nd++] = *c;
    int exp10 = atoi(c + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    int decpt = exp10 + 1;
    if (neg)
        ub_put(o, '-');
    if (decpt <= -4 || decpt > 16) {
        ub_put(o, (unsigned char)digits[0]);
        if (nd > 1) {
            ub_put(o, '.');
            for (size_t i = 1; i < nd; i++)
                ub_put(o, (unsigned char)digits[i]);
        }
        ub_printf(o, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
    } else if (decpt <= 0) {
        ub_puts(o, "0.");
        for (int i = 0; i < -decpt; i++)
            ub_put(o, '0');
        for (size_t i = 0; i < nd; i++)
            ub_put(o, (unsigned char)digits[i]);
    } else if ((size_t)decpt >= nd) {
        for (size_t i = 0; i < nd; i++)
            ub_put(o, (unsigned char)digits[i]);
        for (size_t i = nd; i < (size_t)decpt; i++)
            ub_put(o, '0');
        ub_puts(o, ".0");
    } else {
        for (size_t i = 0; i < nd; i++) {
            if (i == (size_t)decpt)
                ub_put(o, '.');
            ub_put(o, (unsigned char)digits[i]);
        }
    }
}

static void repr_value(ubuf *o, const jv *v)
{
    switch (v->t) {
    case J_NULL: ub_puts(o, "None"); break;
    case J_FALSE: ub_puts(o, "False"); break;
    case J_TRUE: ub_puts(o, "True"); break;
    case J_INT:
        if (v->n == 2 && v->s[0] == '-' && v->s[1] == '0')
            ub_put(o, '0');
        else
            ub_putn(o, v->s, v->n);
        break;
    case J_FLOAT: repr_float(o, v->f); break;
    case J_STR: repr_str(o, v->s, v->n); break;
    case J_ARR:
        ub_put(o, '[');
        for (jv *e = v->first; e; e = e->next) {
            repr_value(o, e);
            if (e->next)
                ub_puts(o, ", ");
        }
        ub_put(o, ']');
        break;
    case J_OBJ:
        ub_put(o, '{');
        for (jv *m = v->first; m; m = m->next) {
            repr_str(o, m->k, m->kn);
            ub_puts(o, ": ");
            repr_value(o, m);
            if (m->next)
                ub_puts(o, ", ");
        }
        ub_put(o, '}');
        break;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* JSON output: json.dumps(obj, separators=(",", ":")) with ensure_ascii                      */

static void json_str(bbuf *o, const uint32_t *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    bb_put(o, '"');
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        if (c >= ' ' && c <= '~' && c != '\\' && c != '"') {
            bb_put(o, (char)c);
            continue;
        }
        switch (c) {
        case '\\': bb_puts(o, "\\\\"); continue;
        case '"': bb_puts(o, "\\\""); continue;
        case '\b': bb_puts(o, "\\b"); continue;
        case '\f': bb_puts(o, "\\f"); continue;
        case '\n': bb_puts(o, "\\n"); continue;
        case '\r': bb_puts(o, "\\r"); continue;
        case '\t': bb_puts(o, "\\t"); continue;
        }
        uint32_t units[2] = {c, 0};
        int nu = 1;
        if (c >= 0x10000) {
            units[0] = 0xD800 | ((c - 0x10000) >> 10);
            units[1] = 0xDC00 | ((c - 0x10000) & 0x3FF);
            nu = 2;
        }
        for (int u = 0; u < nu; u++) {
            char e[6] = {'\\', 'u', hex[(units[u] >> 12) & 15], hex[(units[u] >> 8) & 15],
                         hex[(units[u] >> 4) & 15], hex[units[u] & 15]};
            bb_putn(o, e, 6);
        }
    }
    bb_put(o, '"');
}

/* ------------------------------------------------------------------------------------------ */
/* The spec (protocol.MonitorSpec / spec_from_dict)                                           */

/* A str field: its code points (for messages) and its os.fsencode() bytes (for syscalls). */
typedef struct {
    uint32_t *cp;
    size_t n;
    char *b; /* NUL-terminated */
    size_t bn;
    bool bad; /* not encodable: Python raises UnicodeEncodeError where it is used */
} pstr;

static void pstr_set(pstr *p, const uint32_t *cp, size_t n)
{
    bbuf b = {0};
    p->cp = xmalloc((n ? n : 1) * sizeof *cp);
    if (n)
        memcpy(p->cp, cp, n * sizeof *cp);
    p->n = n;
    p->bad = !fsencode(&b, cp, n);
    p->b = b.p;
    p->bn = b.n;
}

static void pstr_ascii(pstr *p, const char *s)
{
    ubuf u = {0};
    ub_puts(&u, s);
    pstr_set(p, u.p, u.n);
    ub_free(&u);
}

/* What os.* functions do with a str path: a NUL or an unencodable surrogate raises a
 * ValueError that no caller catches, i.e. the monitor dies (exit 3 past the spec). */
static const char *need_path(const pstr *p)
{
    if (p->bad)
        die(crash_status, "UnicodeEncodeError: a path holds a lone surrogate", 0);
    if (memchr(p->b, 0, p->bn))
        die(crash_status, "ValueError: embedded null byte", 0);
    return p->b;
}

static struct {
    pstr container_id, bundle, runtime_path, runtime_root, log_path, exit_file, pid_file,
        ctl_socket, attach_socket;
    bool stdin_, stdin_once, tty, start;
    int64_t log_max_line;
} spec;

enum { T_STR, T_BOOL, T_INT };

static const struct field {
    const char *name;
    int type;
    bool required;
} fields[] = {
    {"container_id", T_STR, true},  {"bundle", T_STR, true},      {"runtime_path", T_STR, true},
    {"runtime_root", T_STR, true},  {"log_path", T_STR, true},    {"exit_file", T_STR, true},
    {"pid_file", T_STR, true},      {"ctl_socket", T_STR, true},  {"stdin", T_BOOL, false},
    {"stdin_once", T_BOOL, false},  {"tty", T_BOOL, false},       {"log_max_line", T_INT, false},
    {"attach_socket", T_STR, false}, {"start", T_BOOL, false},
};
#define NFIELDS (sizeof fields / sizeof fields[0])

static bool key_is(const jv *m, const char *name)
{
    size_t n = strlen(name);
    if (m->kn != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (m->k[i] != (unsigned char)name[i])
            return false;
    return true;
}

static int ucmp(const uint32_t *a, size_t an, const uint32_t *b, size_t bn)
{
    for (size_t i = 0; i < an && i < bn; i++)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return an < bn ? -1 : an > bn;
}

/* _check(): a wrong type is "field 'x' has a wrong or missing value <repr>" (bool is not an
 * int here, nor an int a bool). */
static bool type_ok(const jv *v, int type)
{
    switch (type) {
    case T_STR: return v->t == J_STR;
    case T_BOOL: return v->t == J_TRUE || v->t == J_FALSE;
    default: return v->t == J_INT;
    }
}

static void check_failed(ubuf *err, const char *what, const char *name, const jv *v)
{
    ub_printf(err, "%s: field '%s' has a wrong or missing value ", what, name);
    if (v)
        repr_value(err, v);
    else
        ub_puts(err, "None");
}

/* protocol.spec_from_dict; -1 with the ProtocolError's message in err. */
static int spec_from_obj(const jv *o, ubuf *err)
{
    /* unknown field(s), sorted */
    const jv **unknown = NULL;
    size_t nunknown = 0;
    for (const jv *m = o->first; m; m = m->next) {
        bool known = false;
        for (size_t f = 0; f < NFIELDS && !known; f++)
            known = key_is(m, fields[f].name);
        if (!known) {
            unknown = xrealloc(unknown, (nunknown + 1) * sizeof *unknown);
            size_t at = nunknown++;
            while (at > 0 && ucmp(m->k, m->kn, unknown[at - 1]->k, unknown[at - 1]->kn) < 0) {
                unknown[at] = unknown[at - 1];
                at--;
            }
            unknown[at] = m;
        }
    }
    if (nunknown) {
        ub_puts(err, "spec: unknown field(s) [");
        for (size_t i = 0; i < nunknown; i++) {
            if (i)
                ub_puts(err, ", ");
            repr_str(err, unknown[i]->k, unknown[i]->kn);
        }
        ub_put(err, ']');
        free(unknown);
        return -1;
    }
    const jv *vals[NFIELDS];
    for (size_t f = 0; f < NFIELDS; f++) {
        vals[f] = jget(o, fields[f].name);
        if (vals[f] && !type_ok(vals[f], fields[f].type)) {
            check_failed(err, "spec", fields[f].name, vals[f]);
            return -1;
        }
    }
    /* MonitorSpec(**kwargs) without a required argument: the dataclass __init__'s TypeError */
    size_t missing[NFIELDS], nmissing = 0;
    for (size_t f = 0; f < NFIELDS; f++)
        if (fields[f].required && !vals[f])
            missing[nmissing++] = f;
    if (nmissing) {
        ub_printf(err, "spec: MonitorSpec.__init__() missing %zu required positional argument%s: ",
                  nmissing, nmissing > 1 ? "s" : "");
        for (size_t i = 0; i < nmissing; i++) {
            if (i)
                ub_puts(err, nmissing == 2 ? " and " : i == nmissing - 1 ? ", and " : ", ");
            ub_printf(err, "'%s'", fields[missing[i]].name);
        }
        return -1;
    }
    if (vals[0]->n == 0) {
        ub_puts(err, "spec: empty container_id");
        return -1;
    }
    pstr *strs[] = {&spec.container_id, &spec.bundle,   &spec.runtime_path,
                    &spec.runtime_root, &spec.log_path, &spec.exit_file,
                    &spec.pid_file,     &spec.ctl_socket};
    for (size_t f = 0; f < 8; f++)
        pstr_set(strs[f], vals[f]->s, vals[f]->n);
    spec.stdin_ = vals[8] && vals[8]->t == J_TRUE;
    spec.stdin_once = vals[9] && vals[9]->t == J_TRUE;
    spec.tty = vals[10] && vals[10]->t == J_TRUE;
    spec.log_max_line = vals[11] ? vals[11]->i : DEFAULT_LOG_MAX_LINE;
    if (vals[12])
        pstr_set(&spec.attach_socket, vals[12]->s, vals[12]->n);
    else
        pstr_set(&spec.attach_socket, NULL, 0);
    spec.start = vals[13] && vals[13]->t == J_TRUE;
    return 0;
}

/* protocol.decode_spec on the str from argv; 0, -1 (ProtocolError text in err) or dies of a
 * RecursionError as Python would (exit 1, before the monitor exists). */
static int decode_spec(const uint32_t *text, size_t n, ubuf *err)
{
    if (n > MAX_MESSAGE) {
        ub_printf(err, "spec: message too long (%zu bytes)", n);
        return -1;
    }
    arena a = {0};
    int jerr;
    ubuf jmsg = {0};
    jv *o = json_loads(text, n, &a, SPEC_MAX_DEPTH, true, &jerr, &jmsg);
    int rc = -1;
    if (!o) {
        if (jerr == JE_RECURSION)
            die(1, "RecursionError: maximum recursion depth exceeded while decoding JSON", 0);
        ub_puts(err, "spec: not JSON: ");
        ub_putn(err, jmsg.p, jmsg.n);
    } else if (o->t != J_OBJ) {
        ub_puts(err, "spec: expected a JSON object");
    } else {
        rc = spec_from_obj(o, err);
    }
    ub_free(&jmsg);
    afree(&a);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* The CRI log encoder (crilog.StreamEncoder), writing records with writev                   */

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

static void format_timestamp(char *out, size_t cap, int64_t ns)
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
        char f[16];
        snprintf(f, sizeof f, "%09lld", (long long)frac);
        size_t fl = 9;
        while (fl && f[fl - 1] == '0')
            fl--;
        f[fl] = 0;
        snprintf(out + n, cap - (size_t)n, ".%sZ", f);
    } else {
        snprintf(out + n, cap - (size_t)n, "Z");
    }
}

static void lw_init(logw *w, int fd, const char *stream, int64_t now)
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

static void lw_flush(logw *w)
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
static void lw_record(logw *w, bool partial, const char *a, size_t an, const char *b, size_t bn)
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
static void enc_feed(encoder *e, logw *w, const char *data, size_t n)
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
static void enc_finish(encoder *e, logw *w)
{
    if (e->len)
        lw_record(w, true, e->buf, e->len, NULL, 0);
    lw_flush(w);
    e->len = 0;
}

/* Between calls: an empty buffer is given back (partial lines are rare and short-lived). */
static void enc_idle(encoder *e)
{
    if (!e->len && e->buf) {
        release(e->buf, e->cap);
        e->buf = NULL;
        e->cap = 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Monitor state                                                                              */

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

/* The poll set, in registration order (as Python's poll object keeps its dict: a
 * re-registration updates in place, an unregistration removes). */
typedef struct {
    int fd;
    short events;
} watch;

static int sync_fd = -1;
static int log_fd = -1;
static int ctl_fd = -1, attach_fd = -1;
static int sig_fd = -1;
static int stdin_w = -1;
static bbuf stdin_pending;
static bool stdin_close_pending;
static int pty_master = -1;
static int64_t container_pid;
static bool exited;
static int exit_status;
static int64_t finished_at;
static bool created; /* runc create succeeded: a failure from here on must delete it */
static pstr console_path;
static bool have_console_path;
static int console_fd = -1;

static stream streams[2];
static int nstreams;
static attached *atts;
static size_t natts, catts;
static conn *conns;
static size_t nconns, cconns;
static watch *watches;
static size_t nwatches, cwatches;

static void poll_register(int fd, short events)
{
    for (size_t i = 0; i < nwatches; i++) {
        if (watches[i].fd == fd) {
            watches[i].events = events;
            return;
        }
    }
    if (nwatches == cwatches) {
        cwatches = cwatches ? cwatches * 2 : 8;
        watches = xrealloc(watches, cwatches * sizeof *watches);
    }
    watches[nwatches++] = (watch){fd, events};
}

static void poll_unregister(int fd)
{
    for (size_t i = 0; i < nwatches; i++) {
        if (watches[i].fd == fd) {
            memmove(watches + i, watches + i + 1, (nwatches - i - 1) * sizeof *watches);
            nwatches--;
            return;
        }
    }
}

static stream *find_stream(int fd)
{
    for (int i = 0; i < nstreams; i++)
        if (streams[i].fd == fd)
            return &streams[i];
    return NULL;
}

static attached *find_att(int fd)
{
    for (size_t i = 0; i < natts; i++)
        if (atts[i].fd == fd)
            return &atts[i];
    return NULL;
}

static conn *find_conn(int fd)
{
    for (size_t i = 0; i < nconns; i++)
        if (conns[i].fd == fd)
            return &conns[i];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Messages: the sync line, the exit file, ctl replies                                       */

/* The error of a failed setup (MonitorError text, or "monitor: <OSError>"). */
static ubuf failure;

static int fail_msg(const char *msg)
{
    ub_puts(&failure, msg);
    return -1;
}

/* str(OSError(errno)) behind "monitor: ", optionally with its filename. */
static int fail_os(int err, const pstr *filename)
{
    ub_printf(&failure, "monitor: [Errno %d] %s", err, strerror(err));
    if (filename) {
        ub_puts(&failure, ": ");
        repr_str(&failure, filename->cp, filename->n);
    }
    return -1;
}

/* "<what> <path>: <strerror>" */
static int fail_path(const char *what, const pstr *path, int err)
{
    ub_puts(&failure, what);
    ub_put(&failure, ' ');
    ub_putn(&failure, path->cp, path->n);
    ub_puts(&failure, ": ");
    /* Python's "AF_UNIX path too long" OSError has no errno: its strerror is None */
    ub_puts(&failure, err ? strerror(err) : "None");
    return -1;
}

static void encode_sync(bbuf *o, int64_t pid, const ubuf *error)
{
    bb_printf(o, "{\"pid\":%lld,\"monitor_pid\":%d", (long long)pid, (int)getpid());
    if ((error && error->n) || pid <= 0) {
        bb_puts(o, ",\"error\":");
        json_str(o, error ? error->p : NULL, error ? error->n : 0);
    }
    bb_puts(o, "}\n");
}

/* Write the sync line; false if crirt is no longer listening. */
static bool report(int64_t pid, const ubuf *error)
{
    bbuf line = {0};
    encode_sync(&line, pid, error);
    bool ok = write_all(sync_fd, line.p, line.n) == 0;
    bb_free(&line);
    close(sync_fd);
    sync_fd = -1;
    return ok;
}

static void reply_error(bbuf *o, const ubuf *error)
{
    bb_puts(o, "{\"ok\":false,\"error\":");
    if (error->n)
        json_str(o, error->p, error->n);
    else
        bb_puts(o, "\"failed\"");
    bb_puts(o, "}\n");
}

/* ------------------------------------------------------------------------------------------ */
/* Paths and unix sockets                                                                     */

/* os.path.split on bytes */
static void path_split(const char *p, size_t n, size_t *head_len, size_t *tail_off)
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

/* sock_address: the address for path and an fd to close after bind/connect (-1 if none).
 * Paths too long for sun_path are reached through /proc/<pid>/fd/<dirfd>/<name>, which any
 * root process (runc included) can resolve while the fd is open. -1 with errno on failure. */
static int sock_address(const pstr *path, bbuf *addr, int *dfd)
{
    if (path->bad)
        die(crash_status, "UnicodeEncodeError: a socket path holds a lone surrogate", 0);
    *dfd = -1;
    addr->n = 0;
    if (path->bn <= SUN_PATH_MAX) {
        bb_putn(addr, path->b, path->bn);
        return 0;
    }
    size_t hl, to;
    path_split(path->b, path->bn, &hl, &to);
    bbuf dir = {0};
    if (hl)
        bb_putn(&dir, path->b, hl);
    else
        bb_puts(&dir, ".");
    if (memchr(dir.p, 0, dir.n))
        die(crash_status, "ValueError: embedded null byte", 0);
    int fd = open(dir.p, O_PATH | O_DIRECTORY | O_CLOEXEC);
    bb_free(&dir);
    if (fd < 0)
        return -1;
    *dfd = fd;
    bb_printf(addr, "/proc/%d/fd/%d/", (int)getpid(), fd);
    bb_putn(addr, path->b + to, path->bn - to);
    return 0;
}

/* Python's AF_UNIX address conversion: -1 for its "AF_UNIX path too long" (errno 0). */
static int make_sockaddr(const bbuf *addr, struct sockaddr_un *sa, socklen_t *len)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    bool abstract = addr->n > 0 && addr->p[0] == 0;
    if (abstract ? addr->n > sizeof sa->sun_path : addr->n >= sizeof sa->sun_path)
        return -1;
    memcpy(sa->sun_path, addr->p, addr->n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + addr->n);
    return 0;
}

static bool path_lexists(const pstr *path)
{
    struct stat st;
    if (path->bad || memchr(path->b, 0, path->bn))
        return false; /* os.path.lexists swallows the ValueError */
    return lstat(path->b, &st) == 0;
}

enum { LISTEN_OK = 0, LISTEN_OSERROR = -1, LISTEN_RUNNING = -2 };

/* _listen_unix: bind a 0600 socket at path, replacing a stale one. Returns the fd, or
 * LISTEN_RUNNING (a live process listens there) or LISTEN_OSERROR with *err (0: the address
 * is too long). */
static int listen_unix(const pstr *path, int backlog, int type, int *err)
{
    struct sockaddr_un sa;
    socklen_t salen = 0;
    bbuf addr = {0};
    int dfd = -1;
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto oserror;
    if (sock_address(path, &addr, &dfd) < 0)
        goto oserror;
    if (path_lexists(path)) {
        if (make_sockaddr(&addr, &sa, &salen) == 0 &&
            connect(fd, (struct sockaddr *)&sa, salen) == 0) {
            close(fd);
            close_quiet(dfd);
            bb_free(&addr);
            return LISTEN_RUNNING;
        }
        if (unlink(path->b) < 0) /* stale: nobody accepts */
            goto oserror;
        close(fd);
        fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
        if (fd < 0)
            goto oserror;
    }
    mode_t old = umask(0177);
    int rc;
    if (make_sockaddr(&addr, &sa, &salen) < 0) {
        errno = 0;
        rc = -1;
    } else {
        rc = bind(fd, (struct sockaddr *)&sa, salen);
    }
    int e = errno;
    umask(old);
    close_quiet(dfd);
    dfd = -1;
    if (rc < 0) {
        close(fd);
        fd = -1;
        errno = e;
        goto oserror;
    }
    if (listen(fd, backlog) < 0)
        goto oserror;
    set_nonblocking(fd);
    bb_free(&addr);
    return fd;
oserror:
    *err = errno;
    close_quiet(fd);
    close_quiet(dfd);
    bb_free(&addr);
    return LISTEN_OSERROR;
}

/* os.unlink with errors ignored (but a NUL still raises, as in Python). */
static void unlink_quiet(const pstr *p)
{
    unlink(need_path(p));
}

/* ------------------------------------------------------------------------------------------ */
/* Processes                                                                                  */

static const int reset_signals[] = {SIGPIPE, SIGXFSZ, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGCHLD};

/* posix_spawn with the given stdio (NULL: /dev/null), env PATH only, the monitor's ignored
 * signals back at their defaults (ignored dispositions survive exec and the container would
 * inherit them) and an empty signal mask; every other fd is close-on-exec. 0 or an errno. */
static int spawn(char *const argv[], const int *stdio, pid_t *pid)
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

static pid_t wait_for(pid_t pid, int *status)
{
    pid_t r;
    do
        r = waitpid(pid, status, 0);
    while (r < 0 && errno == EINTR);
    return r;
}

static void runc_argv(const char **argv, int *n, const char *verb)
{
    argv[(*n)++] = need_path(&spec.runtime_path);
    argv[(*n)++] = "--root";
    argv[(*n)++] = need_path(&spec.runtime_root);
    argv[(*n)++] = verb;
}

static void delete_container(void)
{
    const char *argv[8];
    int n = 0;
    runc_argv(argv, &n, "delete");
    argv[n++] = "--force";
    argv[n++] = need_path(&spec.container_id);
    argv[n] = NULL;
    pid_t pid;
    int status;
    if (spawn((char *const *)argv, NULL, &pid) == 0)
        wait_for(pid, &status);
}

/* SIGKILL every process left in the container's cgroup (runc kill --all); not waited for
 * here (reap collects it). */
static void kill_all(void)
{
    const char *argv[9];
    int n = 0;
    runc_argv(argv, &n, "kill");
    argv[n++] = "--all";
    argv[n++] = need_path(&spec.container_id);
    argv[n++] = "KILL";
    argv[n] = NULL;
    pid_t pid;
    spawn((char *const *)argv, NULL, &pid);
}

/* protocol.exit_from_wait_status: a signal death is 128+signal, as conmon reports it. */
static void exit_from_status(int status, int *code, int *sig)
{
    if (WIFSIGNALED(status)) {
        *sig = WTERMSIG(status);
        *code = 128 + *sig;
    } else {
        *sig = 0;
        *code = WEXITSTATUS(status);
    }
}

/* _read_available: what the pipe holds now (up to ~1 MiB), chunk by chunk. */
typedef void (*chunk_fn)(void *ctx, const char *p, size_t n);

static void read_available(int fd, chunk_fn fn, void *ctx)
{
    set_nonblocking(fd);
    size_t total = 0;
    while (total < READ_AVAILABLE_LIMIT) {
        ssize_t r = read(fd, rbuf + 1, READ_SIZE);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        fn(ctx, (const char *)rbuf + 1, (size_t)r);
        total += (size_t)r;
    }
}

static void collect_chunk(void *ctx, const char *p, size_t n) { bb_putn(ctx, p, n); }

/* _runc_error: runc's words, stripped, at most the last 4096 characters, and how it ended. */
static void runc_error(const bbuf *raw, int status)
{
    ubuf text = {0};
    decode_utf8((const uint8_t *)raw->p, raw->n, ERR_REPLACE, &text, NULL);
    size_t a = 0, b = text.n;
    while (a < b && py_isspace(text.p[a]))
        a++;
    while (b > a && py_isspace(text.p[b - 1]))
        b--;
    if (b - a > ERROR_TAIL) {
        a = b - ERROR_TAIL;
        ub_put(&failure, 0x2026); /* "…" */
    }
    int code, sig;
    exit_from_status(status, &code, &sig);
    char how[64];
    if (sig)
        snprintf(how, sizeof how, "killed by signal %d", sig);
    else
        snprintf(how, sizeof how, "exit status %d", code);
    if (b > a) {
        ub_putn(&failure, text.p + a, b - a);
        ub_printf(&failure, " (%s)", how);
    } else {
        ub_printf(&failure, "runtime create failed: %s", how);
    }
    ub_free(&text);
}

/* ------------------------------------------------------------------------------------------ */
/* Setup: runc create                                                                         */

static int open_log(void)
{
    return open(need_path(&spec.log_path), LOG_FLAGS, 0640);
}

/* One chunk of runc's output through the encoder; flushed at once, since the records point
 * into rbuf, which the next read reuses. */
static void write_log_chunk(void *ctx, const char *p, size_t n)
{
    void **c = ctx;
    enc_feed(c[0], c[1], p, n);
    lw_flush(c[1]);
}

static void add_stream(int fd, const char *name)
{
    set_nonblocking(fd);
    stream *s = &streams[nstreams++];
    s->fd = fd;
    s->enc = (encoder){.stream = name, .max_line = spec.log_max_line};
    poll_register(fd, POLLIN);
}

/* _receive_console: the pty master runc sends on the console socket. */
static int receive_console(int lfd, int *master)
{
    struct pollfd p = {lfd, POLLIN, 0};
    int r;
    do
        r = poll(&p, 1, CONSOLE_TIMEOUT_MS);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return fail_os(errno, NULL);
    if (r == 0)
        return fail_msg("runtime did not send the console");
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return fail_os(errno, NULL);
    /* a 5 s socket timeout: wait for readability, then receive */
    p = (struct pollfd){c, POLLIN, 0};
    do
        r = poll(&p, 1, CONSOLE_TIMEOUT_MS);
    while (r < 0 && errno == EINTR);
    if (r <= 0) {
        int e = errno;
        close(c);
        if (r == 0)
            return fail_msg("monitor: timed out");
        return fail_os(e, NULL);
    }
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctrl;
    struct iovec iov = {rbuf, 4096};
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
        return fail_os(e, NULL);
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
            cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
            memcpy(master, CMSG_DATA(cm), sizeof(int));
            return 0;
        }
    }
    return fail_msg("runtime sent no console fd");
}

/* Python's int() of a stripped text: [+-]digits with single underscores between digits.
 * 0, -1 (invalid literal) or -2 (over the digit limit, *ndigits set); values beyond int64
 * saturate. */
static int parse_pyint(const char *s, size_t n, int64_t *out, size_t *ndigits)
{
    size_t i = 0, digits = 0;
    bool neg = false;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    uint64_t acc = 0;
    bool over = false;
    if (i >= n || !jdigit((unsigned char)s[i]))
        return -1;
    for (; i < n; i++) {
        if (s[i] == '_' && i + 1 < n && jdigit((unsigned char)s[i + 1]) &&
            jdigit((unsigned char)s[i - 1]))
            continue;
        if (!jdigit((unsigned char)s[i]))
            return -1;
        digits++;
        uint32_t d = (uint32_t)(s[i] - '0');
        if (acc > (UINT64_MAX - d) / 10)
            over = true;
        else
            acc = acc * 10 + d;
    }
    if (digits > INT_MAX_STR_DIGITS) {
        *ndigits = digits;
        return -2;
    }
    if (over || acc > (uint64_t)INT64_MAX)
        *out = neg ? INT64_MIN : INT64_MAX;
    else
        *out = neg ? -(int64_t)acc : (int64_t)acc;
    return 0;
}

static bool is_ascii_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int read_pid_file(void)
{
    const char *path = need_path(&spec.pid_file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    int err = 0;
    bool with_name = true;
    bbuf data = {0};
    if (fd < 0) {
        err = errno;
    } else if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        err = EISDIR; /* Python's open() refuses a directory */
    } else {
        for (;;) {
            ssize_t r = read(fd, rbuf, READ_SIZE);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                err = errno;
                with_name = false;
            }
            if (r <= 0)
                break;
            bb_putn(&data, rbuf, (size_t)r);
        }
    }
    close_quiet(fd);
    ub_puts(&failure, "read pid file ");
    ub_putn(&failure, spec.pid_file.cp, spec.pid_file.n);
    ub_puts(&failure, ": ");
    if (err) {
        bb_free(&data);
        ub_printf(&failure, "[Errno %d] %s", err, strerror(err));
        if (with_name) {
            ub_puts(&failure, ": ");
            repr_str(&failure, spec.pid_file.cp, spec.pid_file.n);
        }
        return -1;
    }
    size_t a = 0, b = data.n;
    while (a < b && is_ascii_space(data.p[a]))
        a++;
    while (b > a && is_ascii_space(data.p[b - 1]))
        b--;
    size_t ndigits = 0;
    int rc = parse_pyint(data.p ? data.p + a : "", b - a, &container_pid, &ndigits);
    if (rc == -1) {
        /* "%.200R": the repr cut at 200 characters */
        ubuf r = {0};
        repr_bytes(&r, (const uint8_t *)(data.p ? data.p + a : ""), b - a);
        ub_puts(&failure, "invalid literal for int() with base 10: ");
        ub_putn(&failure, r.p, r.n > 200 ? 200 : r.n);
        ub_free(&r);
    } else if (rc == -2) {
        ub_printf(&failure,
                  "Exceeds the limit (%d digits) for integer string conversion: value has %zu "
                  "digits; use sys.set_int_max_str_digits() to increase the limit",
                  INT_MAX_STR_DIGITS, ndigits);
    }
    bb_free(&data);
    if (rc)
        return -1;
    failure.n = 0;
    return 0;
}

/* _create: runc create (run --detach with spec.start); on success the container exists (and
 * runs) and container_pid is set; -1 with the message in `failure` otherwise. */
static int create(void)
{
    int err = 0, fd;
    if (spec.log_path.n) {
        log_fd = open_log();
        if (log_fd < 0)
            return fail_path("open log file", &spec.log_path, errno);
    }
    fd = listen_unix(&spec.ctl_socket, 8, SOCK_STREAM, &err);
    if (fd == LISTEN_RUNNING)
        goto running_ctl;
    if (fd < 0)
        return fail_path("listen on", &spec.ctl_socket, err);
    ctl_fd = fd;
    if (spec.attach_socket.n) {
        fd = listen_unix(&spec.attach_socket, 8, SOCK_SEQPACKET, &err);
        if (fd == LISTEN_RUNNING) {
            ub_putn(&failure, spec.attach_socket.cp, spec.attach_socket.n);
            return fail_msg(": a monitor is already running for this container");
        }
        if (fd < 0)
            return fail_path("listen on", &spec.attach_socket, err);
        attach_fd = fd;
    }
    int out_p[2], err_p[2], in_p[2] = {-1, -1};
    if (pipe2(out_p, O_CLOEXEC) < 0)
        return fail_os(errno, NULL);
    if (pipe2(err_p, O_CLOEXEC) < 0)
        return fail_os(errno, NULL);
    if (spec.stdin_ && !spec.tty) {
        if (pipe2(in_p, O_CLOEXEC) < 0)
            return fail_os(errno, NULL);
        stdin_w = in_p[1];
    }
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0) {
        pstr devnull;
        pstr_ascii(&devnull, "/dev/null");
        return fail_os(errno, &devnull);
    }
    /* With start, `run --detach` is create + start in one runc process (one Go start-up less
     * than two calls); it returns once the container's process runs, which is then
     * reparented to this subreaper as after create. Its output waits in the pipes (or the
     * pty) until the loop reads it. */
    const char *argv[16];
    int n = 0;
    argv[n++] = spec.runtime_path.b;
    argv[n++] = "--root";
    argv[n++] = spec.runtime_root.b;
    argv[n++] = spec.start ? "run" : "create";
    if (spec.start)
        argv[n++] = "--detach";
    argv[n++] = "--bundle";
    argv[n++] = spec.bundle.b;
    argv[n++] = "--pid-file";
    argv[n++] = spec.pid_file.b;
    int console_dfd = -1;
    bbuf console_addr = {0};
    if (spec.tty) {
        ubuf cp = {0};
        ub_putn(&cp, spec.ctl_socket.cp, spec.ctl_socket.n);
        ub_puts(&cp, ".console");
        pstr_set(&console_path, cp.p, cp.n);
        ub_free(&cp);
        have_console_path = true;
        fd = listen_unix(&console_path, 1, SOCK_STREAM, &err);
        if (fd == LISTEN_RUNNING) {
            ub_putn(&failure, console_path.cp, console_path.n);
            return fail_msg(": a monitor is already running for this container");
        }
        if (fd < 0)
            return fail_path("console socket", &console_path, err);
        console_fd = fd;
        if (sock_address(&console_path, &console_addr, &console_dfd) < 0) {
            /* OSError of os.open(dirname or "."), which names that directory */
            int e = errno;
            size_t i = console_path.n;
            while (i > 0 && console_path.cp[i - 1] != '/')
                i--;
            size_t h = i;
            while (h > 1 && console_path.cp[h - 1] == '/')
                h--;
            if (h == 1 && console_path.cp[0] == '/')
                h = i; /* all slashes: kept as they are */
            pstr dir;
            if (h)
                pstr_set(&dir, console_path.cp, h);
            else
                pstr_ascii(&dir, ".");
            return fail_os(e, &dir);
        }
        argv[n++] = "--console-socket";
        argv[n++] = console_addr.p;
    }
    argv[n++] = spec.container_id.b;
    argv[n] = NULL;
    /* os.posix_spawn encodes its arguments here: a NUL or a lone surrogate kills the monitor */
    need_path(&spec.runtime_path);
    need_path(&spec.runtime_root);
    need_path(&spec.bundle);
    need_path(&spec.pid_file);
    if (console_addr.p && memchr(console_addr.p, 0, console_addr.n))
        die(crash_status, "ValueError: embedded null byte", 0);
    need_path(&spec.container_id);
    int stdio[3] = {in_p[0] >= 0 ? in_p[0] : null, out_p[1], err_p[1]};
    pid_t pid;
    int rc = spawn((char *const *)argv, stdio, &pid);
    close(out_p[1]);
    close(err_p[1]);
    close_quiet(in_p[0]);
    close(null);
    if (rc) {
        close_quiet(console_dfd);
        return fail_path("exec", &spec.runtime_path, rc);
    }
    int status = 0;
    if (wait_for(pid, &status) < 0) {
        close_quiet(console_dfd);
        return fail_os(errno, NULL);
    }
    close_quiet(console_dfd); /* runc resolved the console path through it */
    bb_free(&console_addr);
    if (status == 0) {
        created = true;
    } else {
        bbuf raw = {0};
        read_available(err_p[0], collect_chunk, &raw);
        read_available(out_p[0], collect_chunk, &raw);
        close(out_p[0]);
        close(err_p[0]);
        runc_error(&raw, status);
        bb_free(&raw);
        return -1;
    }
    if (read_pid_file() < 0)
        return -1;
    if (spec.tty) {
        int master = -1;
        rc = receive_console(console_fd, &master);
        close(console_fd);
        console_fd = -1;
        unlink_quiet(&console_path);
        if (rc < 0)
            return -1;
        /* runc's own stdio carries only its warnings once the pty exists */
        logw *w = xmalloc(sizeof *w);
        encoder e = {.stream = "stderr", .max_line = spec.log_max_line};
        lw_init(w, log_fd, "stderr", clock_ns(CLOCK_REALTIME));
        void *ctx[2] = {&e, w};
        read_available(err_p[0], write_log_chunk, ctx);
        read_available(out_p[0], write_log_chunk, ctx);
        enc_finish(&e, w);
        free(e.buf);
        free(w);
        close(out_p[0]);
        close(err_p[0]);
        if (spec.stdin_) {
            stdin_w = fcntl(master, F_DUPFD_CLOEXEC, 0);
            if (stdin_w < 0)
                return fail_os(errno, NULL);
        }
        pty_master = master;
        add_stream(master, "stdout");
    } else {
        add_stream(out_p[0], "stdout");
        add_stream(err_p[0], "stderr");
    }
    if (stdin_w >= 0)
        set_nonblocking(stdin_w);
    return 0;
running_ctl:
    ub_putn(&failure, spec.ctl_socket.cp, spec.ctl_socket.n);
    return fail_msg(": a monitor is already running for this container");
}

/* ------------------------------------------------------------------------------------------ */
/* config.json: cgroupsPath (OOM counters) and the pid namespace                             */

/* json.load of <bundle>/config.json; NULL if Python's reader would swallow the failure (the
 * RecursionError it would not swallow kills the monitor, as there). */
static jv *load_config(arena *a)
{
    if (spec.bundle.bad || memchr(spec.bundle.b, 0, spec.bundle.bn))
        return NULL;
    bbuf path = {0};
    bb_putn(&path, spec.bundle.b, spec.bundle.bn);
    if (path.n && path.p[path.n - 1] != '/')
        bb_put(&path, '/');
    bb_puts(&path, "config.json");
    int fd = open(path.p, O_RDONLY | O_CLOEXEC);
    bb_free(&path);
    if (fd < 0)
        return NULL;
    bbuf data = {0};
    struct stat st;
    bool ok = fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode);
    while (ok) {
        ssize_t r = read(fd, rbuf, READ_SIZE);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            ok = false;
        if (r <= 0)
            break;
        bb_putn(&data, rbuf, (size_t)r);
    }
    close(fd);
    jv *v = NULL;
    if (ok) {
        ubuf text = {0};
        if (json_bytes_to_text((const uint8_t *)data.p, data.n, &text, NULL) == 0) {
            /* the tree points into the text: keep it in the arena with the tree */
            uint32_t *copy = aalloc(a, (text.n ? text.n : 1) * sizeof *copy);
            memcpy(copy, text.p, text.n * sizeof *copy);
            int jerr;
            ubuf msg = {0};
            v = json_loads(copy, text.n, a, CONFIG_MAX_DEPTH, false, &jerr, &msg);
            ub_free(&msg);
            if (!v && jerr == JE_RECURSION)
                die(3, "RecursionError: maximum recursion depth exceeded while decoding "
                       "config.json", 0);
        }
        ub_free(&text);
    }
    bb_free(&data);
    return v;
}

/* cfg.get("linux", {}): the linux object, NULL if absent, (jv *)-1 if .get() would fail */
#define JBAD ((jv *)-1)

static jv *config_linux(jv *cfg)
{
    if (!cfg || cfg->t != J_OBJ)
        return JBAD;
    jv *lx = jget(cfg, "linux");
    if (lx && lx->t != J_OBJ)
        return JBAD;
    return lx;
}

/* _read_cgroups_path: linux.cgroupsPath if it is a str, else "". */
static void read_cgroups_path(bbuf *out, bool *bad)
{
    arena a = {0};
    jv *lx = config_linux(load_config(&a));
    *bad = false;
    if (lx && lx != JBAD) {
        jv *p = jget(lx, "cgroupsPath");
        if (p && p->t == J_STR) {
            *bad = !fsencode(out, p->s, p->n);
        }
    }
    afree(&a);
}

/* _shares_pid_namespace: no PID namespace of its own (the pod's, or the host's): its init
 * exiting does not end the other processes, which would hold the output pipes open. */
static bool shares_pid_namespace(void)
{
    arena a = {0};
    jv *lx = config_linux(load_config(&a));
    bool shares = false;
    if (lx == JBAD) {
        afree(&a);
        return false;
    }
    jv *ns = lx ? jget(lx, "namespaces") : NULL;
    if (!ns) {
        shares = true; /* not any([]) */
    } else if (ns->t == J_ARR) {
        shares = true;
        for (jv *e = ns->first; e; e = e->next) {
            if (e->t != J_OBJ)
                die(3, "AttributeError: a linux.namespaces entry is not an object", 0);
            jv *path = jget(e, "path");
            if (jis_str(jget(e, "type"), "pid") && !(path && jtruthy(path))) {
                shares = false;
                break;
            }
        }
    } else if ((ns->t == J_STR || ns->t == J_OBJ) && ns->n == 0) {
        shares = true; /* iterating an empty str or dict */
    } else {
        die(3, "TypeError/AttributeError: linux.namespaces is not a list", 0);
    }
    afree(&a);
    return shares;
}

/* cgroup_relpath: OCI linux.cgroupsPath -> path below a hierarchy root (cgroupfs or the
 * systemd "<slice>:<prefix>:<name>" form -> /a.slice/a-b.slice/<prefix>-<name>.scope). */
static void cgroup_relpath(bbuf *o, const char *p, size_t n)
{
    if (memchr(p, ':', n) && !(n && p[0] == '/')) {
        const char *part[3] = {"", "", ""};
        size_t plen[3] = {0, 0, 0};
        size_t k = 0, from = 0;
        for (size_t i = 0; i <= n; i++) {
            if (i == n || (p[i] == ':' && k < 2)) {
                part[k] = p + from;
                plen[k] = i - from;
                k++;
                from = i + 1;
            }
        }
        const char *parent = part[0], *prefix = part[1], *name = part[2];
        size_t parent_n = plen[0], prefix_n = plen[1], name_n = plen[2];
        bool first = true;
        if (parent_n && !(parent_n == 7 && memcmp(parent, "-.slice", 7) == 0)) {
            size_t stem_n = parent_n;
            if (stem_n >= 6 && memcmp(parent + stem_n - 6, ".slice", 6) == 0)
                stem_n -= 6;
            bbuf acc = {0};
            size_t start = 0;
            for (size_t i = 0; i <= stem_n; i++) {
                if (i < stem_n && parent[i] != '-')
                    continue;
                if (acc.n)
                    bb_put(&acc, '-');
                bb_putn(&acc, parent + start, i - start);
                bb_puts(o, first ? "/" : "/");
                first = false;
                bb_putn(o, acc.p ? acc.p : "", acc.n);
                bb_puts(o, ".slice");
                start = i + 1;
            }
            bb_free(&acc);
        }
        bb_put(o, '/');
        if (name_n >= 6 && memcmp(name + name_n - 6, ".slice", 6) == 0) {
            bb_putn(o, name, name_n);
        } else {
            if (prefix_n) {
                bb_putn(o, prefix, prefix_n);
                bb_put(o, '-');
            }
            bb_putn(o, name, name_n);
            bb_puts(o, ".scope");
        }
        return;
    }
    size_t a = 0, b = n;
    while (a < b && p[a] == '/')
        a++;
    while (b > a && p[b - 1] == '/')
        b--;
    bb_put(o, '/');
    bb_putn(o, p + a, b - a);
}

/* parse_oom_counters: an oom_kill (v1 also: under_oom) line with a count > 0. */
static bool parse_oom_counters(const char *t, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && !strchr("\n\r\v\f\x1c\x1d\x1e", t[j]))
            j++;
        const char *line = t + i;
        size_t ln = j - i;
        const char *sp = memchr(line, ' ', ln);
        size_t kn = sp ? (size_t)(sp - line) : ln;
        if ((kn == 8 && memcmp(line, "oom_kill", 8) == 0) ||
            (kn == 9 && memcmp(line, "under_oom", 9) == 0)) {
            const char *v = sp ? sp + 1 : line + ln;
            size_t vn = sp ? ln - kn - 1 : 0, a = 0, b = vn;
            while (a < b && (is_ascii_space(v[a]) || (v[a] >= 0x1c && v[a] <= 0x1f)))
                a++;
            while (b > a && (is_ascii_space(v[b - 1]) || (v[b - 1] >= 0x1c && v[b - 1] <= 0x1f)))
                b--;
            bool digits = b > a, nonzero = false;
            for (size_t k = a; k < b; k++) {
                digits &= jdigit((unsigned char)v[k]);
                nonzero |= v[k] > '0' && v[k] <= '9';
            }
            if (digits && nonzero)
                return true;
        }
        i = j + 1;
        if (j < n && t[j] == '\r' && j + 1 < n && t[j + 1] == '\n')
            i++;
    }
    return false;
}

static bool oom_killed(void)
{
    bbuf cg = {0};
    bool bad;
    read_cgroups_path(&cg, &bad);
    if (!cg.n && !bad) {
        bb_free(&cg);
        return false;
    }
    if (bad || memchr(cg.p, 0, cg.n))
        die(3, "ValueError: linux.cgroupsPath is not a valid path", 0);
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
        int fd = open(path.p, O_RDONLY | O_CLOEXEC);
        bb_free(&path);
        if (fd < 0)
            continue;
        ssize_t r = read(fd, rbuf, READ_SIZE);
        close(fd);
        if (r > 0)
            oom = parse_oom_counters((const char *)rbuf, (size_t)r);
    }
    bb_free(&rel);
    bb_free(&cg);
    return oom;
}

/* ------------------------------------------------------------------------------------------ */
/* The loop                                                                                   */

static void close_stream(stream *s)
{
    logw *w = xmalloc(sizeof *w);
    lw_init(w, log_fd, s->enc.stream, clock_ns(CLOCK_REALTIME));
    enc_finish(&s->enc, w);
    free(w);
    free(s->enc.buf);
    int fd = s->fd;
    poll_unregister(fd);
    close(fd);
    int i = (int)(s - streams);
    memmove(streams + i, streams + i + 1, (size_t)(nstreams - i - 1) * sizeof *streams);
    nstreams--;
}

static void detach(int fd);

static void to_attached(const unsigned char *packet, size_t n)
{
    for (size_t i = 0; i < natts;) {
        /* A client that cannot keep up (or is gone) is dropped: the container and its log
         * never wait for an attach client. */
        if (send(atts[i].fd, packet, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            detach(atts[i].fd);
        else
            i++;
    }
}

static logw *stream_writer;

static void on_stream(stream *s)
{
    ssize_t n;
    do
        n = read(s->fd, rbuf + 1, READ_SIZE);
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
            heap_grew = true; /* rbuf's pages: see run_loop */
        if (log_fd >= 0) {
            if (!stream_writer)
                stream_writer = xmalloc(sizeof *stream_writer);
            lw_init(stream_writer, log_fd, s->enc.stream, clock_ns(CLOCK_REALTIME));
            enc_feed(&s->enc, stream_writer, (const char *)rbuf + 1, (size_t)n);
            lw_flush(stream_writer);
            enc_idle(&s->enc);
        }
        if (natts) {
            rbuf[0] = strcmp(s->enc.stream, "stdout") == 0 ? ATTACH_STDOUT : ATTACH_STDERR;
            to_attached(rbuf, (size_t)n + 1);
        }
        return;
    }
    close_stream(s);
}

static void stdin_flushed(void)
{
    stdin_pending.n = 0;
    bb_free(&stdin_pending);
    poll_unregister(stdin_w);
    for (size_t i = 0; i < natts; i++)
        poll_register(atts[i].fd, POLLIN);
}

static void close_stdin(bool now)
{
    if (stdin_w < 0)
        return;
    if (stdin_pending.n && !now) {
        stdin_close_pending = true;
        return;
    }
    if (stdin_pending.n)
        stdin_flushed();
    poll_unregister(stdin_w);
    close(stdin_w);
    stdin_w = -1;
}

static void write_stdin(const unsigned char *data, size_t n)
{
    if (stdin_w < 0 || stdin_close_pending)
        return;
    if (stdin_pending.n) {
        bb_putn(&stdin_pending, data, n);
        return;
    }
    ssize_t w = write(stdin_w, data, n);
    if (w < 0) {
        if (errno != EAGAIN) {
            close_stdin(true); /* the container closed its stdin */
            return;
        }
        w = 0;
    }
    if ((size_t)w < n) {
        /* Back-pressure: stop reading attach clients until the container reads its stdin. */
        bb_putn(&stdin_pending, data + w, n - (size_t)w);
        poll_register(stdin_w, POLLOUT);
        for (size_t i = 0; i < natts; i++)
            poll_register(atts[i].fd, 0);
    }
}

static void on_stdin_writable(void)
{
    ssize_t w = write(stdin_w, stdin_pending.p, stdin_pending.n);
    if (w < 0) {
        if (errno == EAGAIN)
            return;
        close_stdin(true);
        return;
    }
    if (w > 0) {
        memmove(stdin_pending.p, stdin_pending.p + w, stdin_pending.n - (size_t)w);
        stdin_pending.n -= (size_t)w;
    }
    if (!stdin_pending.n) {
        stdin_flushed();
        if (stdin_close_pending)
            close_stdin(true);
    }
}

static void stdin_done(attached *a)
{
    if (a->stdin_ && !a->done) {
        a->done = true;
        if (spec.stdin_once)
            close_stdin(false);
    }
}

static void detach(int fd)
{
    attached *a = find_att(fd);
    attached copy = *a;
    size_t i = (size_t)(a - atts);
    memmove(atts + i, atts + i + 1, (natts - i - 1) * sizeof *atts);
    natts--;
    stdin_done(&copy);
    poll_unregister(fd);
    close(fd);
}

static void accept_attach(void)
{
    for (;;) {
        int fd = accept4(attach_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        if (natts == catts) {
            catts = catts ? catts * 2 : 4;
            atts = xrealloc(atts, catts * sizeof *atts);
        }
        atts[natts++] = (attached){fd, false, false};
        poll_register(fd, stdin_pending.n ? 0 : POLLIN);
    }
}

static void on_attached(int fd, short ev)
{
    ssize_t n = recv(fd, rbuf, ATTACH_PACKET, MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN) {
            if (ev & (POLLHUP | POLLERR | POLLNVAL))
                detach(fd);
            return;
        }
        n = 0;
    }
    if (n == 0) {
        detach(fd);
        return;
    }
    if (n > 4096)
        heap_grew = true;
    attached *a = find_att(fd);
    switch (rbuf[0]) {
    case ATTACH_STDIN:
        a->stdin_ = true;
        if (n > 1 && !a->done)
            write_stdin(rbuf + 1, (size_t)n - 1);
        break;
    case ATTACH_STDIN_EOF:
        stdin_done(a);
        break;
    case ATTACH_RESIZE:
        if (pty_master >= 0 && n == 5) {
            struct winsize ws = {.ws_row = (unsigned short)(rbuf[3] << 8 | rbuf[4]),
                                 .ws_col = (unsigned short)(rbuf[1] << 8 | rbuf[2])};
            ioctl(pty_master, TIOCSWINSZ, &ws);
        }
        break;
    }
}

static void reap(void)
{
    struct signalfd_siginfo si;
    while (read(sig_fd, &si, sizeof si) > 0)
        ;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        if (pid == container_pid && !exited) {
            exited = true;
            exit_status = status;
            finished_at = clock_ns(CLOCK_REALTIME);
        }
    }
}

static void accept_ctl(void)
{
    for (;;) {
        int fd = accept4(ctl_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        if (nconns == cconns) {
            cconns = cconns ? cconns * 2 : 4;
            conns = xrealloc(conns, cconns * sizeof *conns);
        }
        conns[nconns++] = (conn){fd, NULL, 0, 0};
        poll_register(fd, POLLIN);
    }
}

static void drop_conn(conn *c)
{
    int fd = c->fd;
    release(c->buf, c->cap);
    size_t i = (size_t)(c - conns);
    memmove(conns + i, conns + i + 1, (nconns - i - 1) * sizeof *conns);
    nconns--;
    poll_unregister(fd);
    close(fd);
}

/* _reopen: kubelet rotation renamed the file; write to a new one at the same path. */
static void reopen(bbuf *out)
{
    if (!spec.log_path.n) {
        bb_puts(out, "{\"ok\":true}\n");
        return;
    }
    int fd = open_log();
    if (fd < 0) {
        /* Keep the old file: the kubelet renames it back when we answer an error. */
        ubuf e = {0};
        ub_puts(&e, "reopen ");
        ub_putn(&e, spec.log_path.cp, spec.log_path.n);
        ub_puts(&e, ": ");
        ub_puts(&e, strerror(errno));
        reply_error(out, &e);
        ub_free(&e);
        return;
    }
    int old = log_fd;
    log_fd = fd;
    if (old >= 0) {
        fsync(old);
        close(old);
    }
    bb_puts(out, "{\"ok\":true}\n");
}

/* _handle: one request line -> its reply. */
static void handle(const char *line, size_t n, bbuf *out)
{
    ubuf e = {0};
    if (n > MAX_MESSAGE) {
        ub_printf(&e, "request: message too long (%zu bytes)", n);
        reply_error(out, &e);
        ub_free(&e);
        return;
    }
    ubuf text = {0}, msg = {0};
    arena a = {0};
    jv *o = NULL;
    int jerr = JE_NONE;
    if (json_bytes_to_text((const uint8_t *)line, n, &text, &msg) == 0)
        o = json_loads(text.p, text.n, &a, REQUEST_MAX_DEPTH, false, &jerr, &msg);
    if (!o) {
        if (jerr == JE_RECURSION)
            die(3, "RecursionError: maximum recursion depth exceeded while decoding a request",
                0);
        ub_puts(&e, "request: not JSON: ");
        ub_putn(&e, msg.p, msg.n);
    } else if (o->t != J_OBJ) {
        ub_puts(&e, "request: expected a JSON object");
    } else {
        jv *op = jget(o, "op");
        if (!op || op->t != J_STR) {
            check_failed(&e, "request", "op", op);
        } else if (jis_str(op, "ping")) {
            bb_printf(out, "{\"ok\":true,\"pid\":%d,\"container_pid\":%lld,\"exited\":%s}\n",
                      (int)getpid(), (long long)container_pid, exited ? "true" : "false");
        } else if (jis_str(op, "reopen")) {
            reopen(out);
        } else {
            ub_puts(&e, "unknown op ");
            repr_str(&e, op->s, op->n);
        }
    }
    if (e.n)
        reply_error(out, &e);
    afree(&a);
    ub_free(&text);
    ub_free(&msg);
    ub_free(&e);
}

static void on_conn(conn *c)
{
    ssize_t n = recv(c->fd, rbuf, CONN_RECV, MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN)
            return;
        n = 0;
    }
    if (n == 0) {
        drop_conn(c);
        return;
    }
    if (c->len + (size_t)n > c->cap) {
        c->cap = c->cap ? c->cap * 2 : CONN_RECV;
        if (c->cap < c->len + (size_t)n)
            c->cap = c->len + (size_t)n;
        c->buf = xrealloc(c->buf, c->cap);
    }
    memcpy(c->buf + c->len, rbuf, (size_t)n);
    c->len += (size_t)n;
    char *nl;
    while (c->len && (nl = memchr(c->buf, '\n', c->len))) {
        size_t ln = (size_t)(nl - c->buf);
        bbuf reply = {0};
        handle(c->buf, ln, &reply);
        ssize_t s = send(c->fd, reply.p, reply.n, MSG_DONTWAIT | MSG_NOSIGNAL);
        bb_free(&reply);
        if (s < 0) {
            drop_conn(c);
            return;
        }
        memmove(c->buf, c->buf + ln + 1, c->len - ln - 1);
        c->len -= ln + 1;
    }
    if (c->len > MAX_MESSAGE) {
        drop_conn(c);
        return;
    }
    if (!c->len && c->cap > 4096) {
        release(c->buf, c->cap);
        c->buf = NULL;
        c->cap = 0;
    }
}

static void run_loop(void)
{
    poll_register(sig_fd, POLLIN);
    poll_register(ctl_fd, POLLIN);
    if (attach_fd >= 0)
        poll_register(attach_fd, POLLIN);
    int64_t deadline = 0;
    struct pollfd *pfds = NULL;
    size_t cpfds = 0;
    reap();
    for (;;) {
        int timeout = -1;
        if (exited) {
            int64_t now = clock_ns(CLOCK_MONOTONIC);
            if (!deadline) {
                deadline = now + DRAIN_NS;
                /* As containerd's shim does: the rest of the container dies with its init,
                 * so its output ends now rather than at the drain deadline. */
                if (nstreams && shares_pid_namespace())
                    kill_all();
            }
            if (!nstreams || now >= deadline)
                break;
            int64_t ms = (deadline - now) / 1000000;
            timeout = ms < 1 ? 1 : (int)ms;
        }
        /* After a burst (a long request, a large stdin write, a long partial line, a big
         * read), the heap is trimmed at the first quiet second and rbuf's pages dropped:
         * their pages go back to the system. */
        bool trim = heap_grew && timeout < 0;
        if (trim)
            timeout = 1000;
        if (cpfds < nwatches) {
            cpfds = nwatches * 2;
            pfds = xrealloc(pfds, cpfds * sizeof *pfds);
        }
        size_t n = nwatches;
        for (size_t i = 0; i < n; i++)
            pfds[i] = (struct pollfd){watches[i].fd, watches[i].events, 0};
        int r = poll(pfds, n, timeout);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die(3, "poll", errno);
        }
        if (r == 0 && trim) {
            heap_grew = false;
            malloc_trim(0);
            madvise(rbuf, READ_SIZE, MADV_DONTNEED); /* whole pages of rbuf only */
            continue;
        }
        /* Handlers change the poll set: dispatch the ready fds of this round by what each fd
         * is now, in the order Python would. */
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (pfds[i].revents)
                pfds[k++] = pfds[i];
        for (size_t i = 0; i < k; i++) {
            int fd = pfds[i].fd;
            stream *s;
            conn *c;
            if ((s = find_stream(fd)))
                on_stream(s);
            else if (find_att(fd))
                on_attached(fd, pfds[i].revents);
            else if (fd == stdin_w)
                on_stdin_writable();
            else if (fd == sig_fd)
                reap();
            else if (fd == ctl_fd)
                accept_ctl();
            else if (fd == attach_fd && attach_fd >= 0)
                accept_attach();
            else if ((c = find_conn(fd)))
                on_conn(c);
        }
    }
    free(pfds);
}

/* write_exit_file: atomically (tmp file, fsync, rename, fsync the directory). */
static void write_exit_file(const char *content, size_t len)
{
    const char *path = need_path(&spec.exit_file);
    size_t n = spec.exit_file.bn, hl, to;
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
    if (hl)
        bb_putn(&dir, path, hl);
    else
        bb_puts(&dir, ".");
    int dfd = open(dir.p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    bb_free(&dir);
}

static void finish(void)
{
    while (nstreams) {
        /* Past the drain deadline: whatever still holds the pipe keeps it; flush what we
         * have. */
        stream *s = &streams[0];
        logw *w = xmalloc(sizeof *w);
        lw_init(w, log_fd, s->enc.stream, clock_ns(CLOCK_REALTIME));
        enc_finish(&s->enc, w);
        free(w);
        free(s->enc.buf);
        close(s->fd);
        memmove(streams, streams + 1, (size_t)(nstreams - 1) * sizeof *streams);
        nstreams--;
    }
    for (size_t i = 0; i < natts; i++)
        close(atts[i].fd); /* output is over: attach clients see the socket close */
    natts = 0;
    if (log_fd >= 0)
        fsync(log_fd);
    int code, sig;
    exit_from_status(exit_status, &code, &sig);
    bool oom = oom_killed();
    char line[160];
    int n = snprintf(line, sizeof line,
                     "{\"exit_code\":%d,\"finished_at\":%lld,\"oom_killed\":%s,\"signal\":", code,
                     (long long)finished_at, oom ? "true" : "false");
    if (sig)
        n += snprintf(line + n, sizeof line - (size_t)n, "%d}\n", sig);
    else
        n += snprintf(line + n, sizeof line - (size_t)n, "null}\n");
    /* Nothing is left to run: delete it here, before the exit is reported, so that
     * RemoveContainer finds no runc state and spawns nothing (containerd's shim also deletes
     * the task when it exits). */
    delete_container();
    write_exit_file(line, (size_t)n);
}

static void cleanup_ctl(void)
{
    if (have_console_path)
        unlink_quiet(&console_path);
    if (attach_fd >= 0) {
        close(attach_fd);
        attach_fd = -1;
        unlink_quiet(&spec.attach_socket);
    }
    if (ctl_fd >= 0) {
        close(ctl_fd);
        ctl_fd = -1;
        unlink_quiet(&spec.ctl_socket);
    }
}

/* Monitor.run: never returns. */
static _Noreturn void monitor_run(void)
{
    umask(022);
    if (chdir("/") < 0)
        die(3, "chdir /", errno);
    setsid();
    prctl(PR_SET_NAME, "crirt-monitor", 0, 0, 0);
    int rc = -1;
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
        int e = errno;
        ub_printf(&failure, "monitor: [Errno %d] prctl(36): %s", e, strerror(e));
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
        sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sig_fd < 0)
            fail_os(errno, NULL);
        else
            rc = create();
    }
    if (rc < 0) {
        if (created)
            delete_container();
        cleanup_ctl();
        report(-1, &failure);
        _exit(1);
    }
    if (!report(container_pid, NULL)) {
        /* crirt gave up waiting (timeout) or died and closed the pipe: nobody owns this
         * container. Deleting it (even started) is what lets a restarted crirt roll the start
         * back: a monitor that answers on its ctl socket has always been heard. */
        delete_container();
        cleanup_ctl();
        _exit(1);
    }
    ub_free(&failure);
    run_loop();
    finish();
    cleanup_ctl();
    _exit(0);
}

/* ------------------------------------------------------------------------------------------ */
/* main: _parse_args, the launcher's fork, close_fds_except, run                              */

/* Python's int(str) for --sync-fd: spaces, a sign, digits with single underscores. */
static bool parse_int_arg(const char *s, long *out)
{
    while (is_ascii_space(*s))
        s++;
    const char *e = s + strlen(s);
    while (e > s && is_ascii_space(e[-1]))
        e--;
    int64_t v;
    size_t nd;
    if (e == s || parse_pyint(s, (size_t)(e - s), &v, &nd) != 0 || v < INT_MIN || v > INT_MAX)
        return false;
    *out = (long)v;
    return true;
}

static void close_fds_except(int keep)
{
    /* close_range around the kept fd; /proc/self/fd where the syscall is missing */
    unsigned int lo = 3;
    bool ok = true;
    if (keep >= 3) {
        if (keep > 3)
            ok = syscall(SYS_close_range, 3U, (unsigned int)keep - 1, 0U) == 0;
        lo = (unsigned int)keep + 1;
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
            if (*end || end == name || fd <= 2 || fd == keep || fd == dfd)
                continue;
            close((int)fd);
        }
    }
    close(dfd);
}

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
    crash_status = 1;
    long fd_arg = 1;
    bool foreground = false;
    const char *spec_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sync-fd") == 0) {
            if (i + 1 >= argc)
                die(1, "StopIteration: --sync-fd needs a value", 0);
            if (!parse_int_arg(argv[++i], &fd_arg))
                die(1, "ValueError: invalid literal for int() with base 10", 0);
        } else if (strcmp(argv[i], "--foreground") == 0) {
            foreground = true;
        } else if (!spec_arg || !*spec_arg) {
            /* `elif not spec`: an empty argument does not count as the spec */
            spec_arg = argv[i];
        } else {
            ubuf u = {0}, r = {0};
            bbuf line = {0};
            decode_utf8((const uint8_t *)argv[i], strlen(argv[i]), ERR_SURROGATEESCAPE, &u,
                        NULL);
            repr_str(&r, u.p, u.n);
            ub_free(&u);
            bb_puts(&line, "unexpected argument ");
            fsencode(&line, r.p, r.n);
            bb_put(&line, '\n');
            write_all_quiet(2, line.p, line.n);
            _exit(1);
        }
    }
    if (!spec_arg || !*spec_arg) {
        static const char usage[] =
            "usage: crirt-monitor [--sync-fd N] [--foreground] SPEC_JSON\n";
        write_all_quiet(2, usage, sizeof usage - 1);
        _exit(1);
    }
    sync_fd = (int)fd_arg;
    if (sync_fd < 0 || fcntl(sync_fd, F_SETFD, FD_CLOEXEC) < 0)
        die(1, "set_inheritable", sync_fd < 0 ? EBADF : errno);
    if (!foreground) {
        pid_t pid = fork();
        if (pid < 0)
            die(1, "fork", errno);
        if (pid != 0)
            _exit(0); /* the launcher exits at once: the monitor is reparented away */
    }
    close_fds_except(sync_fd);
    /* fd 2 stays: the client points it at a log file for such messages. */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        for (int t = 0; t < 2; t++)
            if (sync_fd != t && null != t)
                dup3(null, t, O_CLOEXEC);
        if (null > 2 && null != sync_fd)
            close(null);
    }
    /* run(): decode the spec (protocol.decode_spec) from argv's str */
    ubuf text = {0}, err = {0};
    decode_utf8((const uint8_t *)spec_arg, strlen(spec_arg), ERR_SURROGATEESCAPE, &text, NULL);
    int rc = decode_spec(text.p, text.n, &err);
    ub_free(&text);
    if (rc < 0) {
        bbuf line = {0};
        encode_sync(&line, -1, &err);
        write_all(sync_fd, line.p, line.n);
        _exit(2);
    }
    ub_free(&err);
    crash_status = 3;
    monitor_run();
}
