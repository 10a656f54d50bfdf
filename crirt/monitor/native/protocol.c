#include "protocol.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

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
static int spec_from_obj(const jv *o, struct monitor_spec *spec, bbuf *err)
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
        void *dst = (char *)spec + fields[f].off;
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
int decode_spec(const char *text, struct monitor_spec *spec, bbuf *err)
{
    *spec = (struct monitor_spec){.log_max_line = DEFAULT_LOG_MAX_LINE};
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
        rc = spec_from_obj(o, spec, err);
    }
    afree(&a);
    return rc;
}

void spec_free(struct monitor_spec *spec)
{
    for (size_t f = 0; f < NFIELDS; f++)
        if (fields[f].type == J_STR)
            free(*(char **)((char *)spec + fields[f].off));
    *spec = (struct monitor_spec){.log_max_line = DEFAULT_LOG_MAX_LINE};
}

jv *decode_request(const void *line, size_t n, ablk **a, bbuf *e)
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

void encode_sync(bbuf *line, int64_t pid, int monitor_pid, const bbuf *error)
{
    bb_printf(line, "{\"pid\":%lld,\"monitor_pid\":%d", (long long)pid, monitor_pid);
    if (error->n || pid <= 0) {
        bb_puts(line, ",\"error\":");
        json_str(line, error->p ? error->p : "", error->n);
    }
    bb_puts(line, "}\n");
}

void reply_error(bbuf *o, const bbuf *error)
{
    bb_puts(o, "{\"ok\":false,\"error\":");
    json_str(o, error->p ? error->p : "", error->n);
    bb_puts(o, "}\n");
}

void unknown_op(bbuf *out, const jv *op)
{
    bbuf e = {0};
    bb_puts(&e, "unknown op '");
    bb_putn(&e, op->s, op->n);
    bb_put(&e, '\'');
    reply_error(out, &e);
    bb_free(&e);
}

void exit_from_status(int status, int *code, int *sig)
{
    if (WIFSIGNALED(status)) {
        *sig = WTERMSIG(status);
        *code = 128 + *sig;
    } else {
        *sig = 0;
        *code = WEXITSTATUS(status);
    }
}

void encode_exit(bbuf *o, int wait_status, int64_t finished_at, bool oom)
{
    int code, sig;
    exit_from_status(wait_status, &code, &sig);
    bb_printf(o, "{\"exit_code\":%d,\"finished_at\":%lld,\"oom_killed\":%s,\"signal\":", code,
              (long long)finished_at, oom ? "true" : "false");
    if (sig)
        bb_printf(o, "%d}\n", sig);
    else
        bb_puts(o, "null}\n");
}
