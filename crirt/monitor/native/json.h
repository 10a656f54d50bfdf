/* UTF-8, JSON output as Python's json.dumps writes it, and a strict RFC 8259 parser over UTF-8
 * bytes (the spec, ctl requests, config.json): UTF-8 only, nesting at most JSON_MAX_DEPTH. */
#ifndef CRIRT_MONITOR_JSON_H
#define CRIRT_MONITOR_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Far deeper than any spec, request or OCI config.json; keeps the recursive parser's stack
 * small and bounded. */
#define JSON_MAX_DEPTH 64

/* The length of the well-formed UTF-8 sequence at s (its code point in *cp), 0 if there is
 * none (overlong forms, surrogates and values above U+10FFFF are not well-formed). */
size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
void utf8_put(bbuf *o, uint32_t c);
/* A JSON string as json.dumps writes it (ensure_ascii). */
void json_str(bbuf *o, const char *str, size_t n);

/* Integers are int64 (beyond: an error). A number with a fraction or an exponent is J_NUM,
 * which no field accepts: only whether it is zero is kept (b). */
enum { J_NULL, J_BOOL, J_INT, J_NUM, J_STR, J_ARR, J_OBJ };
extern const char *const jkind[];

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

void afree(ablk **a);
/* One JSON text; NULL with "not JSON: <why> at byte <n>" appended to err (if given). */
jv *json_parse(const void *s, size_t n, ablk **a, bbuf *err);
bool key_is(const jv *m, const char *key);
/* obj[key] of a J_OBJ; of a repeated key the last one, as in Python's dict. */
jv *jget(const jv *o, const char *key);
bool jis_str(const jv *v, const char *text);
/* The field's JSON type (bool is not an int here, nor 1.0); else false and the message in
 * err. */
bool check(const jv *v, const char *what, const char *name, int type, bbuf *err);

#endif
