#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The length of the well-formed UTF-8 sequence at s (its code point in *cp), 0 if there is
 * none (overlong forms, surrogates and values above U+10FFFF are not well-formed). */
size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
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

void utf8_put(bbuf *o, uint32_t c)
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
void json_str(bbuf *o, const char *str, size_t n)
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

/* JSON input: a strict RFC 8259 parser over UTF-8 bytes (the spec, requests, config.json)   */

const char *const jkind[] = {"null",     "a boolean", "an integer", "a number",
                                    "a string", "an array",  "an object"};



static void *aalloc(ablk **a, size_t n)
{
    ablk *b = xmalloc(sizeof *b + n);
    b->next = *a;
    *a = b;
    return memset(b + 1, 0, n);
}

void afree(ablk **a)
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
jv *json_parse(const void *s, size_t n, ablk **a, bbuf *err)
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

bool key_is(const jv *m, const char *key)
{
    return m->kn == strlen(key) && memcmp(m->k, key, m->kn) == 0;
}

/* obj[key] of a J_OBJ; of a repeated key the last one, as in Python's dict. */
jv *jget(const jv *o, const char *key)
{
    jv *found = NULL;
    for (jv *m = o->first; m; m = m->next)
        if (key_is(m, key))
            found = m;
    return found;
}

bool jis_str(const jv *v, const char *text)
{
    return v && v->t == J_STR && v->n == strlen(text) && memcmp(v->s, text, v->n) == 0;
}

/* _check(): the field's JSON type (bool is not an int here, nor 1.0); else false and the
 * message in err. */
bool check(const jv *v, const char *what, const char *name, int type, bbuf *err)
{
    if (v && v->t == type)
        return true;
    bb_printf(err, "%s: field '%s' has a wrong or missing value (expected %s, got %s)", what,
              name, jkind[type], v ? jkind[v->t] : "no value");
    return false;
}
