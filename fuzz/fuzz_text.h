/*
 * fuzz_text.h — a canonical-text sink for the fuzz targets over
 * lib/core/canon.h: it collects what it is given into a growing buffer,
 * which the caller frees.
 */
#ifndef IDEM_FUZZ_TEXT_H
#define IDEM_FUZZ_TEXT_H

#include <stdlib.h>
#include <string.h>

#include "core/canon.h"
#include "idem.h"

typedef struct {
    idem_canon_sink_t super;
    char *buf;
    size_t len;
    size_t cap;
} fuzz_text_t;

static int fuzz_text_write(idem_canon_sink_t *sink, const void *data,
                           size_t len)
{
    fuzz_text_t *t = (fuzz_text_t *)sink;

    if (len == 0)
        return 0;
    if (t->cap - t->len < len) {
        size_t cap = 2 * (t->len + len);
        char *buf = realloc(t->buf, cap);

        if (buf == NULL)
            return IDEM_ENOMEM;
        t->buf = buf;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, data, len);
    t->len += len;
    return 0;
}

static inline fuzz_text_t fuzz_text(void)
{
    return (fuzz_text_t){{fuzz_text_write}, NULL, 0, 0};
}

#endif /* IDEM_FUZZ_TEXT_H */
