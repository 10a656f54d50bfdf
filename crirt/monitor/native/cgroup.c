#include "cgroup.h"

#include <string.h>

/* cgroup_relpath: OCI linux.cgroupsPath -> path below a hierarchy root (cgroupfs or the
 * systemd "<slice>:<prefix>:<name>" form -> /a.slice/a-b.slice/<prefix>-<name>.scope). */
void cgroup_relpath(bbuf *o, const char *p, size_t n)
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
bool parse_oom_counters(const char *t, size_t n)
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

/* The "oom_kill N" count of a memory.events text; -1 without one. */
long long oom_kill_count(const char *t, size_t n)
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
