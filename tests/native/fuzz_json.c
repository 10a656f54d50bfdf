/* libFuzzer target: the JSON parser and the ctl request decoder on arbitrary bytes. A parse that
 * succeeds must re-serialize its strings (json_str) without fault. */
#include <stdint.h>
#include <string.h>

#include "json.h"
#include "protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ablk *a = NULL;
    bbuf err = {0}, out = {0};
    jv *v = json_parse(data, size, &a, &err);
    for (jv *m = v && (v->t == J_OBJ || v->t == J_ARR) ? v->first : NULL; m; m = m->next) {
        if (m->t == J_STR)
            json_str(&out, m->s, m->n);
        if (m->k)
            json_str(&out, m->k, m->kn);
    }
    afree(&a);
    err.n = 0;
    jv *r = decode_request(data, size, &a, &err);
    if (!r) {
        out.n = 0;
        reply_error(&out, &err);
    }
    afree(&a);
    bb_free(&err);
    bb_free(&out);
    return 0;
}
