/* Small utilities shared by every unit: allocation that dies on failure, the growable byte
 * buffer, fd helpers, clocks. */
#ifndef CRIRT_MONITOR_UTIL_H
#define CRIRT_MONITOR_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Allocations of at least this size mark the heap for trimming (heap_grown). */
#define LARGE_BUFFER 8192

int write_all(int fd, const void *p, size_t n);
/* An internal error: a line on fd 2 (the client points it at a log file), no cleanup, a nonzero
 * exit. */
_Noreturn void die(int status, const char *what, int err);

void *xrealloc(void *p, size_t n);
void *xmalloc(size_t n);
/* Room for one more element in a growable array (doubling from `first`). */
void *xgrow(void *arr, size_t n, size_t *cap, size_t first, size_t size);
char *xstrdup(const char *s);
void release(void *p, size_t cap);
/* The heap's one piece of process-wide state (the allocator is process-wide too): whether a
 * large buffer was allocated or freed since the heap was last trimmed. */
bool heap_grown(void);
void heap_mark_grown(void);
void heap_trimmed(void);

int64_t clock_ns(clockid_t id);
void close_quiet(int fd);
void set_nonblocking(int fd);
bool is_digit(char c);
/* ASCII whitespace as Python's bytes.strip() sees it; with text, str.strip()'s \x1c..\x1f too. */
bool is_space(char c, bool text);
/* [*a, *b) of p without the whitespace at both ends */
void strip(const char *p, size_t *a, size_t *b, bool text);

/* Growable byte buffer, always NUL-terminated once anything was put. Text in it is UTF-8,
 * except where a path carries undecodable bytes (see json.c's escapes). */
typedef struct {
    char *p;
    size_t n, cap;
} bbuf;

void bb_reserve(bbuf *b, size_t extra);
void bb_putn(bbuf *b, const void *s, size_t n);
void bb_put(bbuf *b, char c);
void bb_puts(bbuf *b, const char *s);
void bb_printf(bbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bb_free(bbuf *b);

#endif
