/* Unit tests of the native monitor's pure units: the JSON parser and writer, the protocol
 * (spec, requests, sync line, exit record), the CRI log encoder and the cgroup text parsers.
 * Built with ASan and UBSan by tests/native/build.sh and run by tests/unit/monitor/
 * test_native_units.py; each failed check prints its line and the run exits 1. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../crirt/monitor/native/cgroup.h"
#include "../../crirt/monitor/native/crilog.h"
#include "../../crirt/monitor/native/json.h"
#include "../../crirt/monitor/native/protocol.h"

static int failures, checks;

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        checks++;                                                                                \
        if (!(cond)) {                                                                           \
            failures++;                                                                          \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);             \
        }                                                                                        \
    } while (0)

#define CHECK_STR(got, want)                                                                     \
    do {                                                                                         \
        checks++;                                                                                \
        const char *g_ = (got), *w_ = (want);                                                    \
        if (strcmp(g_ ? g_ : "(null)", w_) != 0) {                                               \
            failures++;                                                                          \
            fprintf(stderr, "%s:%d: got \"%s\", want \"%s\"\n", __FILE__, __LINE__,              \
                    g_ ? g_ : "(null)", w_);                                                     \
        }                                                                                        \
    } while (0)

/* -- json ----------------------------------------------------------------------------------- */

static const char *parse_error(const char *text)
{
    static char out[256];
    ablk *a = NULL;
    bbuf err = {0};
    jv *v = json_parse(text, strlen(text), &a, &err);
    snprintf(out, sizeof out, "%s", v ? "ok" : err.p);
    afree(&a);
    bb_free(&err);
    return out;
}

static void test_json_parse(void)
{
    ablk *a = NULL;
    const char *text = "{\"a\":[1,-2,true,null,\"x\\u00e9\\ud83d\\ude00\"],\"a\":{\"b\":0.5}}";
    jv *v = json_parse(text, strlen(text), &a, NULL);
    CHECK(v && v->t == J_OBJ);
    jv *m = jget(v, "a"); /* the last of a repeated key, as Python's dict */
    CHECK(m && m->t == J_OBJ && jget(m, "b")->t == J_NUM && jget(m, "b")->b);
    jv *arr = v->first;
    CHECK(arr->t == J_ARR && arr->first->t == J_INT && arr->first->i == 1);
    CHECK(arr->first->next->i == -2);
    jv *s = arr->first->next->next->next->next;
    CHECK(s->t == J_STR && s->n == 7 && memcmp(s->s, "x\xc3\xa9\xf0\x9f\x98\x80", 7) == 0);
    CHECK(arr->n == strlen("[1,-2,true,null,\"x\\u00e9\\ud83d\\ude00\"]"));
    afree(&a);

    CHECK_STR(parse_error("9223372036854775807"), "ok");
    CHECK_STR(parse_error("-9223372036854775808"), "ok");
    CHECK_STR(parse_error("9223372036854775808"), "not JSON: integer out of range at byte 0");
    CHECK_STR(parse_error("{\"a\":1,}"), "not JSON: expected a string key at byte 7");
    CHECK_STR(parse_error("[1 2]"), "not JSON: expected ',' or ']' at byte 3");
    CHECK_STR(parse_error("\"\\ud800\""), "not JSON: lone surrogate in a \\u escape at byte 1");
    CHECK_STR(parse_error("\"\xff\""), "not JSON: invalid UTF-8 at byte 1");
    CHECK_STR(parse_error("\"\xc0\x80\""), "not JSON: invalid UTF-8 at byte 1");
    CHECK_STR(parse_error("\"a\nb\""), "not JSON: control character in a string at byte 2");
    CHECK_STR(parse_error("01"), "not JSON: unexpected data after the value at byte 1");
    CHECK_STR(parse_error("1."), "not JSON: invalid number at byte 2");
    CHECK_STR(parse_error(""), "not JSON: unexpected end of input at byte 0");
    CHECK_STR(parse_error("nul"), "not JSON: expected a value at byte 0");
    /* nesting: 64 levels parse, 65 do not (the stack stays bounded whatever the input) */
    char deep[200];
    memset(deep, '[', 64);
    memset(deep + 64, ']', 64);
    deep[128] = 0;
    CHECK_STR(parse_error(deep), "ok");
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    deep[130] = 0;
    CHECK_STR(parse_error(deep), "not JSON: too deeply nested (over 64 levels) at byte 64");
}

static void test_json_str(void)
{
    bbuf o = {0};
    /* as json.dumps (ensure_ascii): named escapes, \u00XX, surrogate pairs, and an undecodable
     * path byte as the lone surrogate os.fsdecode gives it */
    json_str(&o, "a\"\\\n\x01\xc3\xa9\xf0\x9f\x98\x80\xff", 12);
    CHECK_STR(o.p, "\"a\\\"\\\\\\n\\u0001\\u00e9\\ud83d\\ude00\\udcff\"");
    bb_free(&o);
    /* ... and back: \udcXX is that byte again */
    ablk *a = NULL;
    jv *v = json_parse("\"\\udcff\"", 8, &a, NULL);
    CHECK(v && v->n == 1 && (unsigned char)v->s[0] == 0xff);
    afree(&a);
}

/* -- protocol ------------------------------------------------------------------------------- */

#define REQUIRED                                                                                 \
    "\"container_id\":\"c\",\"bundle\":\"/b\",\"runtime_path\":\"/r\",\"runtime_root\":\"/rr\","   \
    "\"log_path\":\"/l\",\"exit_file\":\"/e\",\"pid_file\":\"/p\",\"ctl_socket\":\"/c\""

static const char *spec_error(const char *text)
{
    static char out[512];
    struct monitor_spec spec;
    bbuf err = {0};
    int rc = decode_spec(text, &spec, &err);
    snprintf(out, sizeof out, "%s", rc == 0 ? "ok" : err.p);
    if (rc == 0)
        spec_free(&spec);
    bb_free(&err);
    return out;
}

static void test_decode_spec(void)
{
    struct monitor_spec spec;
    bbuf err = {0};
    CHECK(decode_spec("{" REQUIRED ",\"tty\":true,\"log_max_line\":7}", &spec, &err) == 0);
    CHECK_STR(spec.container_id, "c");
    CHECK_STR(spec.attach_socket, ""); /* optional strings default to "" */
    CHECK(spec.tty && !spec.stdin_ && spec.log_max_line == 7);
    spec_free(&spec);
    CHECK(decode_spec("{" REQUIRED "}", &spec, &err) == 0 && spec.log_max_line == 16 * 1024);
    spec_free(&spec);
    bb_free(&err);

    CHECK_STR(spec_error("{\"container_id\":\"c\"}"),
              "spec: missing required field(s) ['bundle', 'runtime_path', 'runtime_root', "
              "'log_path', 'exit_file', 'pid_file', 'ctl_socket']");
    CHECK_STR(spec_error("{" REQUIRED ",\"zz\":1,\"aa\":2,\"zz\":3}"),
              "spec: unknown field(s) ['aa', 'zz']");
    CHECK_STR(spec_error("{" REQUIRED ",\"tty\":1}"),
              "spec: field 'tty' has a wrong or missing value (expected a boolean, got an "
              "integer)");
    CHECK_STR(spec_error("{" REQUIRED ",\"log_max_line\":1.0}"),
              "spec: field 'log_max_line' has a wrong or missing value (expected an integer, "
              "got a number)");
    CHECK_STR(spec_error("{" REQUIRED ",\"bundle\":\"a\\u0000b\"}"),
              "spec: field 'bundle' holds a NUL character");
    CHECK_STR(spec_error("[]"), "spec: expected a JSON object");
    CHECK_STR(spec_error("{"), "spec: not JSON: expected a string key at byte 1");
    const char *empty_id =
        "{\"container_id\":\"\",\"bundle\":\"/b\",\"runtime_path\":\"/r\",\"runtime_root\":\"/rr\","
        "\"log_path\":\"/l\",\"exit_file\":\"/e\",\"pid_file\":\"/p\",\"ctl_socket\":\"/c\"}";
    CHECK_STR(spec_error(empty_id), "spec: empty container_id");
    char *big = malloc(MAX_MESSAGE + 2);
    memset(big, ' ', MAX_MESSAGE + 1);
    big[MAX_MESSAGE + 1] = 0;
    CHECK_STR(spec_error(big), "spec: message too long (65537 bytes)");
    free(big);
}

static void test_requests_and_replies(void)
{
    ablk *a = NULL;
    bbuf e = {0}, o = {0};
    jv *r = decode_request("{\"op\":\"ping\"}", 13, &a, &e);
    CHECK(r && jis_str(jget(r, "op"), "ping"));
    afree(&a);
    CHECK(!decode_request("{\"op\":1}", 8, &a, &e));
    CHECK_STR(e.p, "request: field 'op' has a wrong or missing value (expected a string, got an "
                   "integer)");
    afree(&a);
    e.n = 0;
    CHECK(!decode_request("[1]", 3, &a, &e));
    CHECK_STR(e.p, "request: expected a JSON object");
    afree(&a);

    encode_sync(&o, 42, 7, &(bbuf){0});
    CHECK_STR(o.p, "{\"pid\":42,\"monitor_pid\":7}\n");
    o.n = 0;
    bbuf why = {0};
    bb_puts(&why, "runc: \"no\"");
    encode_sync(&o, -1, 7, &why);
    CHECK_STR(o.p, "{\"pid\":-1,\"monitor_pid\":7,\"error\":\"runc: \\\"no\\\"\"}\n");
    o.n = 0;
    reply_error(&o, &why);
    CHECK_STR(o.p, "{\"ok\":false,\"error\":\"runc: \\\"no\\\"\"}\n");
    o.n = 0;
    encode_exit(&o, 3 << 8, 1700000000123456789LL, false);
    CHECK_STR(o.p, "{\"exit_code\":3,\"finished_at\":1700000000123456789,\"oom_killed\":false,"
                   "\"signal\":null}\n");
    o.n = 0;
    encode_exit(&o, 9 /* killed by SIGKILL */, 5, true);
    CHECK_STR(o.p, "{\"exit_code\":137,\"finished_at\":5,\"oom_killed\":true,\"signal\":9}\n");
    bb_free(&o);
    bb_free(&e);
    bb_free(&why);
}

/* -- CRI log -------------------------------------------------------------------------------- */

/* The records an encoder writes for the chunks (NUL-separated in `chunks`, n of them), then
 * finish; the timestamp fixed at 1 s + 5 ns. */
static const char *encode(int64_t max_line, const char *const *chunks, int n)
{
    static char out[4096];
    int fd = memfd_create("log", 0);
    encoder e = {.stream = "stdout", .max_line = max_line};
    logw *w = malloc(sizeof *w);
    for (int i = 0; i < n; i++) {
        lw_init(w, fd, "stdout", 1000000005LL);
        enc_feed(&e, w, chunks[i], strlen(chunks[i]));
        lw_flush(w);
        enc_idle(&e);
    }
    lw_init(w, fd, "stdout", 1000000005LL);
    enc_finish(&e, w);
    free(w);
    free(e.buf);
    ssize_t len = pread(fd, out, sizeof out - 1, 0);
    out[len < 0 ? 0 : len] = 0;
    close(fd);
    return out;
}

#define TS "1970-01-01T00:00:01.000000005Z stdout "

static void test_crilog(void)
{
    char ts[48];
    format_timestamp(ts, sizeof ts, 0);
    CHECK_STR(ts, "1970-01-01T00:00:00Z");
    format_timestamp(ts, sizeof ts, 1700000000120000000LL);
    CHECK_STR(ts, "2023-11-14T22:13:20.12Z");
    format_timestamp(ts, sizeof ts, -1);
    CHECK_STR(ts, "1969-12-31T23:59:59.999999999Z");
    format_timestamp(ts, sizeof ts, 951782400LL * 1000000000LL); /* a leap day */
    CHECK_STR(ts, "2000-02-29T00:00:00Z");

    CHECK_STR(encode(16384, (const char *[]){"a\nb\n"}, 1), TS "F a\n" TS "F b\n");
    /* an unterminated line waits for more; at EOF it is a final P record */
    CHECK_STR(encode(16384, (const char *[]){"ab", "c\nd"}, 2), TS "F abc\n" TS "P d\n");
    /* long lines are cut into P records of exactly max_line bytes, across chunks */
    CHECK_STR(encode(3, (const char *[]){"abcdefg\n"}, 1), TS "P abc\n" TS "P def\n" TS "F g\n");
    CHECK_STR(encode(3, (const char *[]){"ab", "cd", "efg", "h\n"}, 4),
              TS "P abc\n" TS "P def\n" TS "F gh\n");
    CHECK_STR(encode(3, (const char *[]){"abc\n"}, 1), TS "F abc\n");
    /* an empty line is an empty F record; \r is content; max_line 0 never cuts */
    CHECK_STR(encode(0, (const char *[]){"\n\r\n", "xxxxxxxxxx\n"}, 2),
              TS "F \n" TS "F \r\n" TS "F xxxxxxxxxx\n");
}

/* -- cgroup --------------------------------------------------------------------------------- */

static const char *relpath(const char *p)
{
    static char out[256];
    bbuf o = {0};
    cgroup_relpath(&o, p, strlen(p));
    snprintf(out, sizeof out, "%s", o.p ? o.p : "");
    bb_free(&o);
    return out;
}

static void test_cgroup(void)
{
    CHECK_STR(relpath("/crirt/pod1/c1"), "/crirt/pod1/c1");
    CHECK_STR(relpath("crirt/c1//"), "/crirt/c1");
    CHECK_STR(relpath("kubepods-besteffort-pod12.slice:crio:abc"),
              "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/"
              "crio-abc.scope");
    CHECK_STR(relpath("-.slice:crio:abc"), "/crio-abc.scope");
    CHECK_STR(relpath("system.slice::x.slice"), "/system.slice/x.slice");
    CHECK_STR(relpath("a.slice:p:n:extra"), "/a.slice/p-n:extra.scope");
    const char *v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
    CHECK(parse_oom_counters(v1, strlen(v1)));
    const char *clean = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n";
    CHECK(!parse_oom_counters(clean, strlen(clean)));
    const char *v2 = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n";
    CHECK(parse_oom_counters(v2, strlen(v2)));
    CHECK(!parse_oom_counters("oom_kill 1x\n", 12));
    CHECK(oom_kill_count(v2, strlen(v2)) == 1);
    CHECK(oom_kill_count("oom 3\n", 6) == -1);
    CHECK(oom_kill_count("oom_kill 12", 11) == 12);
    CHECK(oom_kill_count("oom_kill 1 2\n", 13) == -1);
}

int main(void)
{
    test_json_parse();
    test_json_str();
    test_decode_spec();
    test_requests_and_replies();
    test_crilog();
    test_cgroup();
    printf("%d checks, %d failed\n", checks, failures);
    return failures != 0;
}
