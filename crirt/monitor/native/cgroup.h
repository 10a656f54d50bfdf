/* Cgroup text: OCI cgroupsPath to a path below a hierarchy's root, and the OOM counters of
 * memory.events / memory.oom_control. Pure. */
#ifndef CRIRT_MONITOR_CGROUP_H
#define CRIRT_MONITOR_CGROUP_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

/* OCI linux.cgroupsPath -> path below a hierarchy root (cgroupfs, or the systemd
 * "<slice>:<prefix>:<name>" form -> /a.slice/a-b.slice/<prefix>-<name>.scope). */
void cgroup_relpath(bbuf *o, const char *p, size_t n);
/* An oom_kill (v1 also: under_oom) line with a count > 0. */
bool parse_oom_counters(const char *t, size_t n);
/* The "oom_kill N" count of a memory.events text; -1 without one. */
long long oom_kill_count(const char *t, size_t n);

#endif
