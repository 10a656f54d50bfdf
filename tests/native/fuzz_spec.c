/* libFuzzer target: the spec decoder (the monitor's command line argument, a C string). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    struct monitor_spec spec;
    bbuf err = {0};
    if (decode_spec(text, &spec, &err) == 0)
        spec_free(&spec);
    bb_free(&err);
    free(text);
    return 0;
}
