/* libFuzzer target: cgroupsPath to a hierarchy path, and the OOM counter parsers. A relative
 * path always starts with '/'. */
#include <stdint.h>
#include <stdlib.h>

#include "cgroup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *t = (const char *)data;
    bbuf o = {0};
    cgroup_relpath(&o, t, size);
    if (!o.n || o.p[0] != '/')
        abort();
    bb_free(&o);
    parse_oom_counters(t, size);
    oom_kill_count(t, size);
    return 0;
}
