#define _GNU_SOURCE
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int write_all(int fd, const void *p, size_t n)
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

_Noreturn void die(int status, const char *what, int err)
{
    char line[512];
    int n = snprintf(line, sizeof line, "crirt-monitor: %s%s%s\n", what, err ? ": " : "",
                     err ? strerror(err) : "");
    if (n > 0)
        write_all(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    _exit(status);
}

static bool grown;

bool heap_grown(void) { return grown; }
void heap_mark_grown(void) { grown = true; }
void heap_trimmed(void) { grown = false; }

void *xrealloc(void *p, size_t n)
{
    if (n >= LARGE_BUFFER)
        grown = true;
    void *q = realloc(p, n ? n : 1);
    if (!q)
        die(3, "out of memory", 0);
    return q;
}

void *xmalloc(size_t n) { return xrealloc(NULL, n); }

void *xgrow(void *arr, size_t n, size_t *cap, size_t first, size_t size)
{
    if (n < *cap)
        return arr;
    *cap = *cap ? *cap * 2 : first;
    return xrealloc(arr, *cap * size);
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

void release(void *p, size_t cap)
{
    if (cap >= LARGE_BUFFER)
        grown = true;
    free(p);
}

int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void close_quiet(int fd)
{
    if (fd >= 0) {
        int e = errno;
        close(fd);
        errno = e;
    }
}

void set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_space(char c, bool text)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (text && c >= 0x1c && c <= 0x1f);
}

void strip(const char *p, size_t *a, size_t *b, bool text)
{
    while (*a < *b && is_space(p[*a], text))
        ++*a;
    while (*b > *a && is_space(p[*b - 1], text))
        --*b;
}

void bb_reserve(bbuf *b, size_t extra)
{
    if (b->n + extra + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + extra + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
}

void bb_putn(bbuf *b, const void *s, size_t n)
{
    bb_reserve(b, n);
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void bb_put(bbuf *b, char c) { bb_putn(b, &c, 1); }
void bb_puts(bbuf *b, const char *s) { bb_putn(b, s, strlen(s)); }

void bb_printf(bbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        bb_putn(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

void bb_free(bbuf *b)
{
    release(b->p, b->cap);
    b->p = NULL;
    b->n = b->cap = 0;
}
