/*
 * crirt-monitor: crirt's per-container monitor (conmon's job) as a native program.
 *
 * A drop-in replacement for `python3 -m crirt.monitor`: it mirrors crirt/monitor/__main__.py
 * function by function (same names where possible), and the Python monitor stays as the
 * fallback. It exists for memory: the Python monitor costs ~2.3 MB PSS per container, this one
 * well under 0.5 MB.
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
#include <sys/file.h>
#include <sys/inotify.h>
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
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define LOG_FLAGS (O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW)
#define CGROUP_ROOT "/sys/fs/cgroup"
/* Far deeper than any spec, request or OCI config.json; keeps the recursive parser's stack
 * small and bounded. */
#define JSON_MAX_DEPTH 64

enum { ATTACH_STDIN = 0, ATTACH_STDIN_EOF = 1, ATTACH_RESIZE = 2 };
enum { ATTACH_STDOUT = 1, ATTACH_STDERR = 2 };

/* The one large buffer: stream reads land at rbuf + 1 so that rbuf is the attach packet.
 * Page-aligned: its first 64 KiB can be handed back to the system when the monitor idles. */
static unsigned char rbuf[ATTACH_PACKET] __attribute__((aligned(4096)));

/* ------------------------------------------------------------------------------------------ */
/* Small utilities                                                                            */

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

/* An internal error (where the Python monitor dies of an uncaught exception): a line on fd 2,
 * which the client points at a log file, no cleanup, a nonzero exit. */
static _Noreturn void die(int status, const char *what, int err)
{
    char line[512];
    int n = snprintf(line, sizeof line, "crirt-monitor: %s%s%s\n", what, err ? ": " : "",
                     err ? strerror(err) : "");
    if (n > 0)
        write_all(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    _exit(status);
}

/* A large buffer was allocated or freed since the loop last trimmed the heap (run_loop). */
static bool heap_grew;
#define LARGE_BUFFER 8192

static void *xrealloc(void *p, size_t n)
{
    if (n >= LARGE_BUFFER)
        heap_grew = true;
    void *q = realloc(p, n ? n : 1);
    if (!q)
        die(3, "out of memory", 0);
    return q;
}

static void *xmalloc(size_t n) { return xrealloc(NULL, n); }

/* Room for one more element in a growable array (doubling from `first`). */
static void *xgrow(void *arr, size_t n, size_t *cap, size_t first, size_t size)
{
    if (n < *cap)
        return arr;
    *cap = *cap ? *cap * 2 : first;
    return xrealloc(arr, *cap * size);
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

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

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* ASCII whitespace as Python's bytes.strip() sees it; str.strip() (text) also strips
 * \x1c..\x1f (and non-ASCII spaces, which do not matter here). */
static bool is_space(char c, bool text)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (text && c >= 0x1c && c <= 0x1f);
}

/* [*a, *b) of p without the whitespace at both ends */
static void strip(const char *p, size_t *a, size_t *b, bool text)
{
    while (*a < *b && is_space(p[*a], text))
        ++*a;
    while (*b > *a && is_space(p[*b - 1], text))
        --*b;
}

/* Growable byte buffer, always NUL-terminated. Text in it is UTF-8, except where a path
 * carries undecodable bytes (see jescape). */
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

/* ------------------------------------------------------------------------------------------ */
/* UTF-8 and JSON output                                                                     */

/* The length of the well-formed UTF-8 sequence at s (its code point in *cp), 0 if there is
 * none (overlong forms, surrogates and values above U+10FFFF are not well-formed). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
    size_t len = s[0] < 0x80    ? 1
                 : s[0] > 0xF4  ? 0
                 : s[0] >= 0xF0 ? 4
                 : s[0] >= 0xE0 ? 3
                 : s[0] >= 0xC2 ? 2
                                : 0;
    if (!len || n < len)
        return 0;
    uint32_t v = len == 1 ? s[0] : s[0] & (0x3Fu >> (len - 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < least[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

static void utf8_put(bbuf *o, uint32_t c)
{
    static const unsigned char lead[] = {0, 0, 0xC0, 0xE0, 0xF0};
    char u[4];
    int n = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    for (int k = n - 1; k > 0; k--, c >>= 6)
        u[k] = (char)(0x80 | (c & 0x3F));
    u[0] = (char)(lead[n] | c);
    bb_putn(o, u, (size_t)n);
}

/* A JSON string as json.dumps writes it (ensure_ascii): all but printable ASCII escaped, astral
 * characters as surrogate pairs. A byte that is not UTF-8 (a path's, see jescape) is written as
 * Python holds it: U+DC80..U+DCFF (os.fsdecode's surrogateescape). */
static void json_str(bbuf *o, const char *str, size_t n)
{
    static const char named[] = "\\\"\b\f\n\r\t", as[] = "\\\"bfnrt";
    const unsigned char *s = (const unsigned char *)str;
    bb_put(o, '"');
    for (size_t i = 0, k; i < n; i += k) {
        uint32_t c = s[i];
        const char *e = c ? strchr(named, (int)c) : NULL;
        k = 1;
        if (e) {
            bb_put(o, '\\');
            bb_put(o, as[e - named]);
        } else if (c >= ' ' && c <= '~') {
            bb_put(o, (char)c);
        } else {
            if (!(k = utf8_decode(s + i, n - i, &c))) {
                c = 0xDC00 + s[i];
                k = 1;
            }
            if (c >= 0x10000)
                bb_printf(o, "\\u%04x\\u%04x", 0xD800 | ((c - 0x10000) >> 10),
                          0xDC00 | ((c - 0x10000) & 0x3FF));
            else
                bb_printf(o, "\\u%04x", c);
        }
    }
    bb_put(o, '"');
}

/* ------------------------------------------------------------------------------------------ */
/* JSON input: a strict RFC 8259 parser over UTF-8 bytes (the spec, requests, config.json)   */

/* Integers are int64 (beyond: an error). A number with a fraction or an exponent is J_NUM,
 * which no field accepts: only whether it is zero is kept (b). */
enum { J_NULL, J_BOOL, J_INT, J_NUM, J_STR, J_ARR, J_OBJ };
static const char *const jkind[] = {"null",     "a boolean", "an integer", "a number",
                                    "a string", "an array",  "an object"};

typedef struct jv jv;
struct jv {
    uint8_t t;
    bool b;           /* its truth value, as Python's bool() sees it */
    int64_t i;        /* J_INT */
    char *s, *k;      /* J_STR: the text; a member's key (NUL-terminated, may hold more NULs) */
    size_t n, kn;     /* their lengths; J_ARR / J_OBJ: n is the length of src */
    const char *src;  /* J_ARR / J_OBJ: its JSON text in the input (passed on verbatim) */
    jv *first, *next; /* J_ARR / J_OBJ: the elements or members in order; the next sibling */
};

/* A parse result's allocations are chained (behind each one, aligned) and freed at once. */
typedef union ablk {
    union ablk *next;
    max_align_t align;
} ablk;

static void *aalloc(ablk **a, size_t n)
{
    ablk *b = xmalloc(sizeof *b + n);
    b->next = *a;
    *a = b;
    return memset(b + 1, 0, n);
}

static void afree(ablk **a)
{
    for (ablk *b; (b = *a);) {
        *a = b->next;
        free(b);
    }
}

typedef struct {
    const unsigned char *s;
    size_t n, i; /* the input, its length, the position (where an error is reported) */
    int depth;
    ablk **a;
    const char *err;
    bbuf tmp; /* the string being decoded */
} jparser;

static void *jfail(jparser *p, const char *msg)
{
    p->err = msg;
    return NULL;
}

static bool jat(const jparser *p, char c) { return p->i < p->n && p->s[p->i] == c; }
static bool jdigit(const jparser *p) { return p->i < p->n && is_digit((char)p->s[p->i]); }

static void jws(jparser *p)
{
    while (jat(p, ' ') || jat(p, '\t') || jat(p, '\n') || jat(p, '\r'))
        p->i++;
}

static jv *jnew(jparser *p, int t)
{
    jv *v = aalloc(p->a, sizeof *v);
    v->t = (uint8_t)t;
    return v;
}

static bool hex4(const jparser *p, size_t at, uint32_t *out)
{
    *out = 0;
    for (size_t k = at; k < at + 4; k++) {
        char c = k < p->n ? (char)p->s[k] : 0, l = (char)(c | 0x20);
        if (!is_digit(c) && !(l >= 'a' && l <= 'f'))
            return false;
        *out = *out << 4 | (uint32_t)(is_digit(c) ? c - '0' : l - 'a' + 10);
    }
    return true;
}

/* The escape at p->i (a backslash) into p->tmp. */
static bool jescape(jparser *p)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    unsigned char c = p->i + 1 < p->n ? p->s[p->i + 1] : 0;
    const char *e = c ? strchr(from, c) : NULL;
    uint32_t u, lo;
    if (e) {
        bb_put(&p->tmp, to[e - from]);
        p->i += 2;
        return true;
    }
    if (c != 'u' || !hex4(p, p->i + 2, &u))
        return jfail(p, c == 'u' ? "invalid \\u escape" : "invalid escape");
    if (u >= 0xD800 && u <= 0xDBFF && p->i + 12 <= p->n && p->s[p->i + 6] == '\\' &&
        p->s[p->i + 7] == 'u' && hex4(p, p->i + 8, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
        u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
        p->i += 6;
    } else if (u >= 0xDC80 && u <= 0xDCFF) {
        /* A path byte that is not UTF-8, as crirt's json.dumps writes an os.fsdecode()d path:
         * the byte itself, as os.fsencode() gives it back to the Python monitor. */
        bb_put(&p->tmp, (char)(u - 0xDC00));
        p->i += 6;
        return true;
    } else if (u >= 0xD800 && u <= 0xDFFF) {
        return jfail(p, "lone surrogate in a \\u escape");
    }
    utf8_put(&p->tmp, u);
    p->i += 6;
    return true;
}

/* The string at p->i (a quote), copied into the arena. */
static char *jstring(jparser *p, size_t *len)
{
    p->tmp.n = 0;
    for (p->i++; !jat(p, '"');) {
        uint32_t cp;
        size_t k;
        if (p->i >= p->n)
            return jfail(p, "unterminated string");
        if (p->s[p->i] == '\\') {
            if (!jescape(p))
                return NULL;
        } else if (p->s[p->i] < 0x20) {
            return jfail(p, "control character in a string");
        } else if (!(k = utf8_decode(p->s + p->i, p->n - p->i, &cp))) {
            return jfail(p, "invalid UTF-8");
        } else {
            bb_putn(&p->tmp, p->s + p->i, k);
            p->i += k;
        }
    }
    p->i++;
    *len = p->tmp.n;
    char *out = aalloc(p->a, *len + 1);
    return *len ? memcpy(out, p->tmp.p, *len) : out;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static jv *jnumber(jparser *p)
{
    size_t start = p->i;
    bool neg = jat(p, '-'), over = false, nonzero = false, integer = true;
    uint64_t acc = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    p->i += neg;
    if (!jdigit(p))
        return jfail(p, "invalid number");
    if (jat(p, '0'))
        p->i++;
    else for (; jdigit(p); p->i++) {
        unsigned d = p->s[p->i] - '0';
        over |= acc > (limit - d) / 10;
        acc = acc * 10 + d;
        nonzero |= d;
    }
    if (jat(p, '.')) {
        p->i++;
        if (!jdigit(p))
            return jfail(p, "invalid number");
        for (integer = false; jdigit(p); p->i++)
            nonzero |= p->s[p->i] != '0';
    }
    if (jat(p, 'e') || jat(p, 'E')) {
        p->i += 1 + (p->i + 1 < p->n && (p->s[p->i + 1] == '+' || p->s[p->i + 1] == '-'));
        if (!jdigit(p))
            return jfail(p, "invalid number");
        for (integer = false; jdigit(p);)
            p->i++;
    }
    if (integer && over) {
        p->i = start;
        return jfail(p, "integer out of range");
    }
    jv *v = jnew(p, integer ? J_INT : J_NUM);
    v->i = neg ? (int64_t)(0 - acc) : (int64_t)acc;
    v->b = nonzero;
    return v;
}

static jv *jvalue(jparser *p)
{
    static const char *const words[] = {"null", "false", "true"};
    jws(p);
    if (p->i >= p->n)
        return jfail(p, "unexpected end of input");
    char c = (char)p->s[p->i];
    if (c == '-' || is_digit(c))
        return jnumber(p);
    if (c == '"') {
        jv *v = jnew(p, J_STR);
        v->s = jstring(p, &v->n);
        v->b = v->n != 0;
        return v->s ? v : NULL;
    }
    if (c != '[' && c != '{') {
        for (int w = 0; w < 3; w++) {
            size_t len = strlen(words[w]);
            if (p->n - p->i >= len && memcmp(p->s + p->i, words[w], len) == 0) {
                jv *v = jnew(p, w ? J_BOOL : J_NULL);
                v->b = w == 2;
                p->i += len;
                return v;
            }
        }
        return jfail(p, "expected a value");
    }
    /* an array or an object */
    char close = c == '{' ? '}' : ']';
    if (++p->depth > JSON_MAX_DEPTH)
        return jfail(p, "too deeply nested (over 64 levels)");
    jv *o = jnew(p, c == '{' ? J_OBJ : J_ARR), **tail = &o->first;
    size_t start = p->i++;
    jws(p);
    for (bool more = !jat(p, close); more;) {
        char *k = NULL;
        size_t kn = 0;
        if (c == '{') {
            jws(p);
            if (!jat(p, '"'))
                return jfail(p, "expected a string key");
            if (!(k = jstring(p, &kn)))
                return NULL;
            jws(p);
            if (!jat(p, ':'))
                return jfail(p, "expected ':'");
            p->i++;
        }
        jv *v = jvalue(p);
        if (!v)
            return NULL;
        v->k = k;
        v->kn = kn;
        *tail = v;
        tail = &v->next;
        jws(p);
        if ((more = jat(p, ',')))
            p->i++;
        else if (!jat(p, close))
            return jfail(p, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    p->i++;
    p->depth--;
    o->b = o->first != NULL;
    o->src = (const char *)p->s + start;
    o->n = p->i - start;
    return o;
}

/* One JSON text; NULL with "not JSON: <why> at byte <n>" appended to err (if given). */
static jv *json_parse(const void *s, size_t n, ablk **a, bbuf *err)
{
    jparser p = {.s = s, .n = n, .a = a};
    jv *v = jvalue(&p);
    if (v) {
        jws(&p);
        if (p.i < p.n)
            v = jfail(&p, "unexpected data after the value");
    }
    bb_free(&p.tmp);
    if (!v && err)
        bb_printf(err, "not JSON: %s at byte %zu", p.err, p.i);
    return v;
}

static bool key_is(const jv *m, const char *key)
{
    return m->kn == strlen(key) && memcmp(m->k, key, m->kn) == 0;
}

/* obj[key] of a J_OBJ; of a repeated key the last one, as in Python's dict. */
static jv *jget(const jv *o, const char *key)
{
    jv *found = NULL;
    for (jv *m = o->first; m; m = m->next)
        if (key_is(m, key))
            found = m;
    return found;
}

static bool jis_str(const jv *v, const char *text)
{
    return v && v->t == J_STR && v->n == strlen(text) && memcmp(v->s, text, v->n) == 0;
}

/* _check(): the field's JSON type (bool is not an int here, nor 1.0); else false and the
 * message in err. */
static bool check(const jv *v, const char *what, const char *name, int type, bbuf *err)
{
    if (v && v->t == type)
        return true;
    bb_printf(err, "%s: field '%s' has a wrong or missing value (expected %s, got %s)", what,
              name, jkind[type], v ? jkind[v->t] : "no value");
    return false;
}

/* ------------------------------------------------------------------------------------------ */
/* The spec (protocol.MonitorSpec / spec_from_dict)                                           */

/* The strings hold no NUL (refused): they go to syscalls as they are. */
static struct monitor_spec {
    char *container_id, *bundle, *runtime_path, *runtime_root, *log_path, *exit_file, *pid_file,
        *ctl_socket, *attach_socket;
    bool stdin_, stdin_once, tty, start, systemd_cgroup;
    int64_t log_max_line;
} spec = {.log_max_line = DEFAULT_LOG_MAX_LINE};

/* In MonitorSpec's order, the required ones (no default) first. */
static const struct field {
    const char *name;
    uint8_t type; /* J_STR, J_BOOL or J_INT */
    size_t off;
} fields[] = {
#define F(name, member, type) {name, type, offsetof(struct monitor_spec, member)}
    F("container_id", container_id, J_STR),   F("bundle", bundle, J_STR),
    F("runtime_path", runtime_path, J_STR),   F("runtime_root", runtime_root, J_STR),
    F("log_path", log_path, J_STR),           F("exit_file", exit_file, J_STR),
    F("pid_file", pid_file, J_STR),           F("ctl_socket", ctl_socket, J_STR),
    F("stdin", stdin_, J_BOOL),               F("stdin_once", stdin_once, J_BOOL),
    F("tty", tty, J_BOOL),                    F("log_max_line", log_max_line, J_INT),
    F("attach_socket", attach_socket, J_STR), F("start", start, J_BOOL),
    F("systemd_cgroup", systemd_cgroup, J_BOOL),
#undef F
};
#define NFIELDS (sizeof fields / sizeof fields[0])
#define NREQUIRED 8

static int keycmp(const void *a, const void *b)
{
    const jv *x = *(const jv *const *)a, *y = *(const jv *const *)b;
    int c = memcmp(x->k, y->k, x->kn < y->kn ? x->kn : y->kn);
    return c ? c : (x->kn > y->kn) - (x->kn < y->kn);
}

/* protocol.spec_from_dict: 0, or -1 with the message in err. */
static int spec_from_obj(const jv *o, bbuf *err)
{
    const jv **unknown = NULL, *vals[NFIELDS];
    size_t nunknown = 0;
    for (const jv *m = o->first; m; m = m->next) {
        size_t f = 0;
        while (f < NFIELDS && !key_is(m, fields[f].name))
            f++;
        if (f == NFIELDS) {
            unknown = xrealloc(unknown, (nunknown + 1) * sizeof *unknown);
            unknown[nunknown++] = m;
        }
    }
    if (nunknown) {
        qsort(unknown, nunknown, sizeof *unknown, keycmp);
        bb_puts(err, "spec: unknown field(s) [");
        for (size_t i = 0; i < nunknown; i++) {
            if (i && keycmp(&unknown[i - 1], &unknown[i]) == 0)
                continue; /* a repeated key */
            bb_puts(err, i ? ", '" : "'");
            bb_putn(err, unknown[i]->k, unknown[i]->kn);
            bb_put(err, '\'');
        }
        bb_put(err, ']');
        free(unknown);
        return -1;
    }
    for (size_t f = 0; f < NFIELDS; f++) {
        const jv *v = vals[f] = jget(o, fields[f].name);
        if (v && !check(v, "spec", fields[f].name, fields[f].type, err))
            return -1;
        if (v && v->t == J_STR && memchr(v->s, 0, v->n)) {
            bb_printf(err, "spec: field '%s' holds a NUL character", fields[f].name);
            return -1;
        }
    }
    for (size_t f = 0; f < NREQUIRED; f++)
        if (!vals[f])
            bb_printf(err, "%s'%s'", err->n ? ", " : "spec: missing required field(s) [",
                      fields[f].name);
    if (err->n) {
        bb_put(err, ']');
        return -1;
    }
    if (!vals[0]->n) {
        bb_puts(err, "spec: empty container_id");
        return -1;
    }
    for (size_t f = 0; f < NFIELDS; f++) {
        void *dst = (char *)&spec + fields[f].off;
        if (fields[f].type == J_STR)
            *(char **)dst = xstrdup(vals[f] ? vals[f]->s : "");
        else if (vals[f] && fields[f].type == J_BOOL)
            *(bool *)dst = vals[f]->b;
        else if (vals[f])
            *(int64_t *)dst = vals[f]->i;
    }
    return 0;
}

/* protocol.decode_spec on the argument: 0, or -1 with the message in err. */
static int decode_spec(const char *text, bbuf *err)
{
    size_t n = strlen(text); /* crirt's specs are ASCII (json.dumps): bytes are characters */
    if (n > MAX_MESSAGE) {
        bb_printf(err, "spec: message too long (%zu bytes)", n);
        return -1;
    }
    ablk *a = NULL;
    bb_puts(err, "spec: ");
    jv *o = json_parse(text, n, &a, err);
    int rc = -1;
    if (o && o->t != J_OBJ) {
        bb_puts(err, "expected a JSON object");
    } else if (o) {
        err->n = 0;
        rc = spec_from_obj(o, err);
    }
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
        n += snprintf(out + n, cap - (size_t)n, ".%09lld", (long long)frac);
        while (out[n - 1] == '0')
            n--;
    }
    snprintf(out + n, cap - (size_t)n, "Z");
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
static char *console_path; /* the tty console socket, while it exists */
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
    watches = xgrow(watches, nwatches, &cwatches, 8, sizeof *watches);
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
static bbuf failure;

static int fail_msg(const char *msg)
{
    bb_puts(&failure, msg);
    return -1;
}

/* str(OSError(errno)) behind "monitor: ", optionally with its filename. */
static int fail_os(int err, const char *filename)
{
    bb_printf(&failure, "monitor: [Errno %d] %s", err, strerror(err));
    if (filename) {
        bb_puts(&failure, ": '");
        bb_puts(&failure, filename);
        bb_put(&failure, '\'');
    }
    return -1;
}

/* "<what> <path>: <strerror>" */
static int fail_path(const char *what, const char *path, int err)
{
    bb_printf(&failure, "%s ", what);
    bb_puts(&failure, path);
    bb_printf(&failure, ": %s", strerror(err));
    return -1;
}

/* Write the sync line (protocol.encode_sync); false if crirt is no longer listening. */
static bool report(int64_t pid, const bbuf *error)
{
    bbuf line = {0};
    bb_printf(&line, "{\"pid\":%lld,\"monitor_pid\":%d", (long long)pid, (int)getpid());
    if (error->n || pid <= 0) {
        bb_puts(&line, ",\"error\":");
        json_str(&line, error->p ? error->p : "", error->n);
    }
    bb_puts(&line, "}\n");
    bool ok = write_all(sync_fd, line.p, line.n) == 0;
    bb_free(&line);
    close(sync_fd);
    sync_fd = -1;
    return ok;
}

static void reply_error(bbuf *o, const bbuf *error)
{
    bb_puts(o, "{\"ok\":false,\"error\":");
    json_str(o, error->p, error->n);
    bb_puts(o, "}\n");
}

/* ------------------------------------------------------------------------------------------ */
/* Paths and unix sockets                                                                     */

/* os.path.split */
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

/* The directory of path (os.path.split's head, or "."), in a new buffer. */
static void path_dir(bbuf *dir, const char *path)
{
    size_t hl, to;
    path_split(path, strlen(path), &hl, &to);
    if (hl)
        bb_putn(dir, path, hl);
    else
        bb_puts(dir, ".");
}

/* sock_address: the address for path and an fd to close after bind/connect (-1 if none).
 * Paths too long for sun_path are reached through /proc/<pid>/fd/<dirfd>/<name>, which any
 * root process (runc included) can resolve while the fd is open. -1 with errno on failure. */
static int sock_address(const char *path, bbuf *addr, int *dfd)
{
    size_t n = strlen(path), hl, to;
    *dfd = -1;
    addr->n = 0;
    if (n <= SUN_PATH_MAX) {
        bb_putn(addr, path, n);
        return 0;
    }
    bbuf dir = {0};
    path_dir(&dir, path);
    int fd = open(dir.p, O_PATH | O_DIRECTORY | O_CLOEXEC);
    bb_free(&dir);
    if (fd < 0)
        return -1;
    *dfd = fd;
    path_split(path, n, &hl, &to);
    bb_printf(addr, "/proc/%d/fd/%d/", (int)getpid(), fd);
    bb_puts(addr, path + to);
    return 0;
}

/* -1 with ENAMETOOLONG if the address does not fit sun_path. */
static int make_sockaddr(const bbuf *addr, struct sockaddr_un *sa, socklen_t *len)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (addr->n >= sizeof sa->sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sa->sun_path, addr->p, addr->n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + addr->n);
    return 0;
}

/* _listen_unix: bind a 0600 socket at path, replacing a stale one. The fd, or -1 with the
 * message in failure: a live process listens there (a second monitor for one container), or
 * "<what> <path>: <strerror>". */
static int listen_unix(const char *path, int backlog, int type, const char *what)
{
    struct sockaddr_un sa;
    socklen_t salen = 0;
    struct stat st;
    bbuf addr = {0};
    int dfd = -1;
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto oserror;
    if (sock_address(path, &addr, &dfd) < 0)
        goto oserror;
    if (lstat(path, &st) == 0) {
        if (make_sockaddr(&addr, &sa, &salen) == 0 &&
            connect(fd, (struct sockaddr *)&sa, salen) == 0) {
            close(fd);
            close_quiet(dfd);
            bb_free(&addr);
            bb_puts(&failure, path);
            return fail_msg(": a monitor is already running for this container");
        }
        if (unlink(path) < 0) /* stale: nobody accepts */
            goto oserror;
        close(fd);
        fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
        if (fd < 0)
            goto oserror;
    }
    mode_t old = umask(0177);
    int rc = make_sockaddr(&addr, &sa, &salen);
    if (rc == 0)
        rc = bind(fd, (struct sockaddr *)&sa, salen);
    int e = errno;
    umask(old);
    close_quiet(dfd);
    dfd = -1;
    if (rc < 0) {
        errno = e;
        goto oserror;
    }
    if (listen(fd, backlog) < 0)
        goto oserror;
    set_nonblocking(fd);
    bb_free(&addr);
    return fd;
oserror:
    close_quiet(fd);
    close_quiet(dfd);
    bb_free(&addr);
    return fail_path(what, path, errno);
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

/* runc and its global options, the same for every call on this container: argv[0..n). */
static int runtime_argv(const char **argv)
{
    int n = 0;
    argv[n++] = spec.runtime_path;
    argv[n++] = "--root";
    argv[n++] = spec.runtime_root;
    if (spec.systemd_cgroup)
        argv[n++] = "--systemd-cgroup";
    return n;
}

static void delete_container(void)
{
    const char *argv[8];
    int n = runtime_argv(argv);
    argv[n++] = "delete";
    argv[n++] = "--force";
    argv[n++] = spec.container_id;
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
    const char *argv[10];
    int n = runtime_argv(argv);
    argv[n++] = "kill";
    argv[n++] = "--all";
    argv[n++] = spec.container_id;
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

/* _runc_error: runc's words (undecodable bytes replaced), stripped, at most the last 4096
 * characters, and how it ended. */
static void runc_error(const bbuf *raw, int status)
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
        bb_puts(&failure, "\xE2\x80\xA6"); /* "…" */
    }
    int code, sig;
    exit_from_status(status, &code, &sig);
    char how[64];
    if (sig)
        snprintf(how, sizeof how, "killed by signal %d", sig);
    else
        snprintf(how, sizeof how, "exit status %d", code);
    if (b > a) {
        bb_putn(&failure, text.p + a, b - a);
        bb_printf(&failure, " (%s)", how);
    } else {
        bb_printf(&failure, "runtime create failed: %s", how);
    }
    bb_free(&text);
}

/* ------------------------------------------------------------------------------------------ */
/* Setup: runc create                                                                         */

static int open_log(void)
{
    return open(spec.log_path, LOG_FLAGS, 0640);
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
static int receive_console(int lfd, int *master)
{
    int r = wait_readable(lfd);
    if (r <= 0)
        return r ? fail_os(errno, NULL) : fail_msg("runtime did not send the console");
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return fail_os(errno, NULL);
    /* a 5 s socket timeout: wait for readability, then receive */
    if ((r = wait_readable(c)) <= 0) {
        int e = errno;
        close(c);
        return r ? fail_os(e, NULL) : fail_msg("monitor: timed out");
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

/* The whole file at path into out: 0 or an errno. */
static int read_file(const char *path, bbuf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0;
    if (fd < 0)
        return errno;
    for (ssize_t r; (r = read(fd, rbuf, READ_SIZE)) != 0;) {
        if (r < 0 && errno != EINTR) {
            err = errno;
            break;
        }
        if (r > 0)
            bb_putn(out, rbuf, (size_t)r);
    }
    close(fd);
    return err;
}

/* The pid runc wrote (int(f.read().strip()) in Python); -1 with the message in failure. */
static int read_pid_file(void)
{
    bbuf data = {0};
    int err = read_file(spec.pid_file, &data);
    size_t a = 0, b = data.n;
    char *end = NULL;
    strip(data.p, &a, &b, false);
    if (!err && b > a) {
        data.p[b] = 0;
        errno = 0;
        container_pid = strtoll(data.p + a, &end, 10);
        if (errno || end != data.p + b)
            end = NULL;
    }
    bb_free(&data);
    if (end)
        return 0;
    bb_puts(&failure, "read pid file ");
    bb_puts(&failure, spec.pid_file);
    bb_printf(&failure, ": %s", err ? strerror(err) : "not a process id");
    return -1;
}

/* _create: runc create (run --detach with spec.start); on success the container exists (and
 * runs) and container_pid is set; -1 with the message in `failure` otherwise. */
static int create(void)
{
    if (*spec.log_path && (log_fd = open_log()) < 0)
        return fail_path("open log file", spec.log_path, errno);
    if ((ctl_fd = listen_unix(spec.ctl_socket, 8, SOCK_STREAM, "listen on")) < 0)
        return -1;
    if (*spec.attach_socket &&
        (attach_fd = listen_unix(spec.attach_socket, 8, SOCK_SEQPACKET, "listen on")) < 0)
        return -1;
    int out_p[2], err_p[2], in_p[2] = {-1, -1};
    if (pipe2(out_p, O_CLOEXEC) < 0 || pipe2(err_p, O_CLOEXEC) < 0 ||
        (spec.stdin_ && !spec.tty && pipe2(in_p, O_CLOEXEC) < 0))
        return fail_os(errno, NULL);
    stdin_w = in_p[1];
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0)
        return fail_os(errno, "/dev/null");
    /* With start, `run --detach` is create + start in one runc process (one Go start-up less
     * than two calls); it returns once the container's process runs, which is then
     * reparented to this subreaper as after create. Its output waits in the pipes (or the
     * pty) until the loop reads it. */
    /* runc's own messages go to a file in the bundle, not to its stderr, which is the
     * container's: a warning (the systemd driver skipping a device, say) would otherwise land
     * in the container's log. A failure's words are read back from it. */
    static char runc_log[PATH_MAX];
    if (snprintf(runc_log, sizeof runc_log, "%s/runc.log", spec.bundle) >= (int)sizeof runc_log)
        return fail_os(ENAMETOOLONG, spec.bundle);
    unlink(runc_log);
    const char *argv[18];
    int n = runtime_argv(argv);
    argv[n++] = "--log";
    argv[n++] = runc_log;
    argv[n++] = spec.start ? "run" : "create";
    if (spec.start)
        argv[n++] = "--detach";
    argv[n++] = "--bundle";
    argv[n++] = spec.bundle;
    argv[n++] = "--pid-file";
    argv[n++] = spec.pid_file;
    int console_dfd = -1;
    bbuf console_addr = {0};
    if (spec.tty) {
        bbuf cp = {0};
        bb_puts(&cp, spec.ctl_socket);
        bb_puts(&cp, ".console");
        console_path = cp.p;
        if ((console_fd = listen_unix(console_path, 1, SOCK_STREAM, "console socket")) < 0)
            return -1;
        if (sock_address(console_path, &console_addr, &console_dfd) < 0) {
            /* OSError of os.open(dirname or "."), which names that directory */
            int e = errno;
            bbuf dir = {0};
            path_dir(&dir, console_path);
            fail_os(e, dir.p);
            bb_free(&dir);
            return -1;
        }
        argv[n++] = "--console-socket";
        argv[n++] = console_addr.p;
    }
    argv[n++] = spec.container_id;
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
        return fail_path("exec", spec.runtime_path, rc);
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
        if (read_file(runc_log, &raw) != 0 || !raw.n) {
            raw.n = 0;
            read_available(err_p[0], collect_chunk, &raw);
            read_available(out_p[0], collect_chunk, &raw);
        }
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
        unlink(console_path);
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
}

/* ------------------------------------------------------------------------------------------ */
/* config.json: cgroupsPath (OOM counters) and the pid namespace                             */

/* cfg["linux"] of <bundle>/config.json: NULL if absent, (jv *)-1 if the file cannot be read or
 * parsed or the value is no object (where Python's reader gives up: no cgroups path, no
 * shared pid namespace). */
#define JBAD ((jv *)-1)

static jv *config_linux(ablk **a)
{
    bbuf path = {0}, data = {0};
    bb_puts(&path, spec.bundle);
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
static void read_cgroups_path(bbuf *out)
{
    ablk *a = NULL;
    jv *lx = config_linux(&a);
    jv *p = lx && lx != JBAD ? jget(lx, "cgroupsPath") : NULL;
    if (p && p->t == J_STR && !memchr(p->s, 0, p->n))
        bb_putn(out, p->s, p->n);
    afree(&a);
}

/* _shares_pid_namespace: no PID namespace of its own (the pod's, or the host's): its init
 * exiting does not end the other processes, which would hold the output pipes open. An
 * ill-formed linux.namespaces counts as not sharing. */
static bool shares_pid_namespace(void)
{
    ablk *a = NULL;
    jv *lx = config_linux(&a);
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
                bb_put(o, '/');
                bb_putn(o, acc.p, acc.n);
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
            size_t a = 0, b = sp ? ln - kn - 1 : 0;
            strip(v, &a, &b, true);
            bool digits = b > a, nonzero = false;
            for (size_t k = a; k < b; k++) {
                digits &= is_digit(v[k]);
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
    read_cgroups_path(&cg);
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
static int oom_fd = -1;
static bool oom_seen;
static bbuf oom_path, oom_parent_path;
static long long oom_parent_base = -1;

/* The "oom_kill N" count of a memory.events text; -1 without one. */
static long long oom_kill_count(const char *t, size_t n)
{
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(t + i, '\n', n - i);
        size_t j = nl ? (size_t)(nl - t) : n;
        if (j - i > 9 && memcmp(t + i, "oom_kill ", 9) == 0) {
            long long v = 0;
            size_t k = i + 9;
            for (; k < j && is_digit(t[k]) && v < (1LL << 50); k++)
                v = v * 10 + (t[k] - '0');
            return k == j && k > i + 9 ? v : -1;
        }
        i = j + 1;
    }
    return -1;
}

static long long parent_oom_kills(void)
{
    bbuf text = {0};
    long long v = read_file(oom_parent_path.p, &text) == 0 ? oom_kill_count(text.p, text.n) : -1;
    bb_free(&text);
    return v;
}

static void check_oom(void)
{
    while (read(oom_fd, rbuf, READ_SIZE) > 0)
        ; /* the events only say "changed" */
    bbuf text = {0};
    if (read_file(oom_path.p, &text) == 0) {
        if (parse_oom_counters(text.p, text.n))
            oom_seen = true;
        else
            oom_parent_base = parent_oom_kills(); /* read after ours: ours was still clean */
    } else if (exited && !oom_seen && oom_parent_base >= 0 && WIFSIGNALED(exit_status) &&
               WTERMSIG(exit_status) == SIGKILL && parent_oom_kills() > oom_parent_base) {
        oom_seen = true;
    }
    bb_free(&text);
}

static void watch_oom(void)
{
    struct stat st;
    if (stat(CGROUP_ROOT "/cgroup.controllers", &st) != 0)
        return;
    bbuf cg = {0}, rel = {0};
    read_cgroups_path(&cg);
    if (cg.n) {
        cgroup_relpath(&rel, cg.p, cg.n);
        bb_puts(&oom_path, CGROUP_ROOT);
        bb_putn(&oom_path, rel.p, rel.n);
        bb_puts(&oom_path, "/memory.events");
        bb_puts(&oom_parent_path, CGROUP_ROOT);
        path_dir(&oom_parent_path, rel.p);
        bb_puts(&oom_parent_path, "/memory.events");
        oom_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (oom_fd >= 0 && inotify_add_watch(oom_fd, oom_path.p, IN_MODIFY) < 0) {
            close(oom_fd);
            oom_fd = -1;
        }
        if (oom_fd >= 0) {
            /* the parent's too (best effort: a root-level cgroup has no memory.events) */
            inotify_add_watch(oom_fd, oom_parent_path.p, IN_MODIFY);
            poll_register(oom_fd, POLLIN);
            check_oom();
        }
    }
    bb_free(&cg);
    bb_free(&rel);
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
        atts = xgrow(atts, natts, &catts, 4, sizeof *atts);
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
            /* Now, before systemd hears (through the same delayed kernfs notification as our
             * inotify) that the scope is empty and removes its cgroup with the counters. */
            if (oom_fd >= 0)
                check_oom();
        }
    }
}

static void accept_ctl(void)
{
    for (;;) {
        int fd = accept4(ctl_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        conns = xgrow(conns, nconns, &cconns, 4, sizeof *conns);
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
    if (!*spec.log_path) {
        bb_puts(out, "{\"ok\":true}\n");
        return;
    }
    int fd = open_log();
    if (fd < 0) {
        /* Keep the old file: the kubelet renames it back when we answer an error. */
        bbuf e = {0};
        bb_puts(&e, "reopen ");
        bb_puts(&e, spec.log_path);
        bb_printf(&e, ": %s", strerror(errno));
        reply_error(out, &e);
        bb_free(&e);
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

/* protocol.decode_request: the request object, whose "op" is a string, or NULL with the
 * message in e. */
static jv *decode_request(const void *line, size_t n, ablk **a, bbuf *e)
{
    if (n > MAX_MESSAGE) {
        bb_printf(e, "request: message too long (%zu bytes)", n);
        return NULL;
    }
    bb_puts(e, "request: ");
    jv *o = json_parse(line, n, a, e);
    if (o && o->t != J_OBJ) {
        bb_puts(e, "expected a JSON object");
        return NULL;
    }
    if (o)
        e->n = 0;
    return o && check(jget(o, "op"), "request", "op", J_STR, e) ? o : NULL;
}

static void unknown_op(bbuf *out, const jv *op)
{
    bbuf e = {0};
    bb_puts(&e, "unknown op '");
    bb_putn(&e, op->s, op->n);
    bb_put(&e, '\'');
    reply_error(out, &e);
    bb_free(&e);
}

/* _handle: one request line -> its reply. */
static void handle(const char *line, size_t n, bbuf *out)
{
    bbuf e = {0};
    ablk *a = NULL;
    jv *o = decode_request(line, n, &a, &e), *op = o ? jget(o, "op") : NULL;
    if (!o) {
        reply_error(out, &e);
    } else if (jis_str(op, "ping")) {
        bb_printf(out, "{\"ok\":true,\"pid\":%d,\"container_pid\":%lld,\"exited\":%s}\n",
                  (int)getpid(), (long long)container_pid, exited ? "true" : "false");
    } else if (jis_str(op, "reopen")) {
        reopen(out);
    } else {
        unknown_op(out, op);
    }
    afree(&a);
    bb_free(&e);
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
         * is now, in the order Python would. The OOM counters first: an exit in the same
         * round may be what removes the cgroup. */
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (pfds[i].revents && pfds[i].fd == oom_fd && oom_fd >= 0)
                check_oom();
            else if (pfds[i].revents)
                pfds[k++] = pfds[i];
        }
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
    const char *path = spec.exit_file;
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

static void finish(void)
{
    /* Past the drain deadline: whatever still holds the pipe keeps it; flush what we have. */
    while (nstreams)
        close_stream(&streams[0]);
    for (size_t i = 0; i < natts; i++)
        close(atts[i].fd); /* output is over: attach clients see the socket close */
    natts = 0;
    if (log_fd >= 0)
        fsync(log_fd);
    int code, sig;
    exit_from_status(exit_status, &code, &sig);
    if (oom_fd >= 0)
        check_oom(); /* a bump not yet dispatched (gone already: oom_seen stays as it is) */
    bool oom = oom_seen || oom_killed();
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
    if (console_path)
        unlink(console_path);
    if (attach_fd >= 0) {
        close(attach_fd);
        attach_fd = -1;
        unlink(spec.attach_socket);
    }
    if (ctl_fd >= 0) {
        close(ctl_fd);
        ctl_fd = -1;
        unlink(spec.ctl_socket);
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
        bb_printf(&failure, "monitor: [Errno %d] prctl(36): %s", e, strerror(e));
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
    watch_oom();
    if (!report(container_pid, &failure)) {
        /* crirt gave up waiting (timeout) or died and closed the pipe: nobody owns this
         * container. Deleting it (even started) is what lets a restarted crirt roll the start
         * back: a monitor that answers on its ctl socket has always been heard. */
        delete_container();
        cleanup_ctl();
        _exit(1);
    }
    bb_free(&failure);
    run_loop();
    finish();
    cleanup_ctl();
    _exit(0);
}

/* ------------------------------------------------------------------------------------------ */
/* main: _parse_args, the launcher's fork, close_fds_except, run                              */

/* Close every fd above 2 but keep[0..nkeep) (ascending). */
static void close_fds_except(const int *keep, int nkeep)
{
    /* close_range between the kept fds; /proc/self/fd where the syscall is missing */
    unsigned int lo = 3;
    bool ok = true;
    for (int i = 0; i < nkeep && ok; i++) {
        if (keep[i] < (int)lo)
            continue;
        if (keep[i] > (int)lo)
            ok = syscall(SYS_close_range, lo, (unsigned int)keep[i] - 1, 0U) == 0;
        lo = (unsigned int)keep[i] + 1;
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
            bool kept = fd <= 2 || fd == dfd;
            for (int i = 0; i < nkeep; i++)
                kept |= fd == keep[i];
            if (!*end && end != name && !kept)
                close((int)fd);
        }
    }
    close(dfd);
}

/* ------------------------------------------------------------------------------------------ */
/* The fork server (crirt/monitor/forkserver.py) for the native monitor                      */

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
    sync_fd = fd;
    report(-1, &e);
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
static void fs_serve(int conn, const char *code)
{
    struct timeval tv = {FS_CONN_TIMEOUT, 0};
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(FS_MAX_FDS * sizeof(int))];
    } ctl;
    struct iovec iov = {rbuf, MAX_MESSAGE + 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                        .msg_controllen = sizeof ctl.b};
    ssize_t n = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return; /* timed out or reset: nothing was received */
    int fds[FS_MAX_FDS], nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++)
                if (nfds < FS_MAX_FDS)
                    memcpy(&fds[nfds++], CMSG_DATA(c) + k * sizeof(int), sizeof(int));
    if (mh.msg_flags & MSG_CTRUNC)
        nfds = FS_MAX_FDS + 1; /* more than we could take: refused below like any wrong count */
    bbuf out = {0}, e = {0};
    ablk *a = NULL;
    size_t len = mh.msg_flags & MSG_TRUNC ? (size_t)MAX_MESSAGE + 1 : (size_t)n;
    jv *o = decode_request(rbuf, len, &a, &e), *op = o ? jget(o, "op") : NULL;
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
    for (int i = 0; i < nfds && i < FS_MAX_FDS; i++)
        close(fds[i]);
    afree(&a);
    bb_free(&e);
    bb_free(&out);
}

/* forkserver.main: `--fork-server SOCKET --code CODE`; prints "ready <pid>" or "busy". */
static _Noreturn void fork_server(const char *path, const char *code)
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
    int fd = listen_unix(path, 64, SOCK_SEQPACKET, "listen on");
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
    if ((sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
        die(1, "signalfd", errno);
    for (;;) {
        struct pollfd p[2] = {{sig_fd, POLLIN, 0}, {fd, POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            die(3, "poll", errno);
        if (p[0].revents)
            reap();
        int conn = p[1].revents ? accept4(fd, NULL, NULL, SOCK_CLOEXEC) : -1;
        if (conn >= 0) {
            fs_serve(conn, code);
            close(conn);
        }
    }
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
    sync_fd = (int)fd_arg;
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
    if (decode_spec(spec_arg, &err) < 0) {
        report(-1, &err);
        _exit(2);
    }
    bb_free(&err);
    monitor_run();
}
