/* libFuzzer target: the CRI log encoder, with an oracle. The first byte picks max_line (0..63),
 * the second how the rest is cut into chunks; the records written must give back the input
 * exactly (P contents, F contents plus the newline) and no record may exceed max_line. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "crilog.h"

#define PREFIX_LEN (sizeof "1970-01-01T00:00:01Z stdout " - 1)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int64_t max_line = data[0] & 63;
    size_t step = (size_t)data[1] + 1;
    const char *in = (const char *)data + 2;
    size_t n = size - 2;
    static int fd = -1;
    if (fd < 0)
        fd = memfd_create("crilog", 0);
    ftruncate(fd, 0);
    lseek(fd, 0, SEEK_SET);
    encoder e = {.stream = "stdout", .max_line = max_line};
    logw *w = malloc(sizeof *w);
    for (size_t off = 0; off < n; off += step) {
        lw_init(w, fd, "stdout", 1000000000LL);
        enc_feed(&e, w, in + off, n - off < step ? n - off : step);
        lw_flush(w);
        enc_idle(&e);
    }
    lw_init(w, fd, "stdout", 1000000000LL);
    enc_finish(&e, w);
    free(w);
    free(e.buf);
    off_t len = lseek(fd, 0, SEEK_END);
    char *log = malloc((size_t)len + 1), *back = malloc(n + 1);
    if (pread(fd, log, (size_t)len, 0) != len)
        abort();
    size_t got = 0;
    for (off_t i = 0; i < len;) {
        char *nl = memchr(log + i, '\n', (size_t)(len - i));
        if (!nl || (size_t)(nl - (log + i)) < PREFIX_LEN + 2)
            abort(); /* a record without its terminator or its prefix */
        const char *tag = log + i + PREFIX_LEN, *content = tag + 2;
        size_t cn = (size_t)(nl - content);
        if ((*tag != 'P' && *tag != 'F') || tag[1] != ' ' || got + cn + (*tag == 'F') > n)
            abort();
        if (max_line > 0 && cn > (size_t)max_line)
            abort(); /* a record longer than max_line */
        memcpy(back + got, content, cn);
        got += cn;
        if (*tag == 'F')
            back[got++] = '\n';
        i = nl - log + 1;
    }
    if (got != n || memcmp(back, in, n) != 0)
        abort(); /* the records do not give back the output */
    free(log);
    free(back);
    return 0;
}
