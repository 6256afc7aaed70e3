/*
 * fuzz_record.c — libFuzzer target for idem_record_decode(), the one place
 * where bytes read back from a store (a disk, another process, a network
 * server) become pointers.
 *
 * The input is the stored value, as a store hands it over. Beyond "no
 * crash, no read outside the input", the target checks:
 *   - a failure is IDEM_ECORRUPT, IDEM_EVERSION or IDEM_ENOMEM;
 *   - an accepted record is sane: a known state, status <= 999, every
 *     header and the body inside the input;
 *   - an accepted record encodes back to exactly the input (the format has
 *     one encoding per record, so nothing is silently dropped or invented);
 *   - any single flipped bit in an accepted record is refused (the
 *     checksum catches it), at a position chosen by the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "idem.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* Whether [p, p + n) lies inside [buf, buf + len). */
static int fuzz_record_inside(const void *p, size_t n, const uint8_t *buf,
                              size_t len)
{
    const uint8_t *q = p;

    if (n == 0) {
        return 1;
    }
    return q >= buf && q <= buf + len && n <= (size_t)(buf + len - q);
}

static void fuzz_record_check(const uint8_t *data, size_t size,
                              const idem_record_t *rec)
{
    const idem_response_t *r = &rec->response;
    volatile uint8_t sink = 0;
    uint8_t *again;
    size_t need, len;

    FUZZ_CHECK(rec->state == IDEM_STATE_IN_PROGRESS ||
               rec->state == IDEM_STATE_COMPLETE);
    FUZZ_CHECK(r->status >= 0 && r->status <= 999);
    FUZZ_CHECK(r->nheaders == 0 || r->headers != NULL);
    for (size_t i = 0; i < r->nheaders; i++) {
        const idem_header_t *h = &r->headers[i];
        FUZZ_CHECK(fuzz_record_inside(h->name.data, h->name.len, data, size));
        FUZZ_CHECK(fuzz_record_inside(h->value.data, h->value.len, data, size));
        for (size_t k = 0; k < h->name.len; k++) {
            sink ^= (uint8_t)h->name.data[k];
        }
        for (size_t k = 0; k < h->value.len; k++) {
            sink ^= (uint8_t)h->value.data[k];
        }
    }
    FUZZ_CHECK(fuzz_record_inside(r->body, r->body_len, data, size));
    for (size_t k = 0; k < r->body_len; k++) {
        sink ^= r->body[k];
    }
    (void)sink;

    need = idem_record_encoded_size(rec);
    FUZZ_CHECK(need == size);
    again = malloc(need);
    FUZZ_CHECK(again != NULL);
    FUZZ_CHECK(idem_record_encode(rec, again, need, &len) == 0);
    FUZZ_CHECK(len == size && memcmp(again, data, size) == 0);
    free(again);
}

/* Flips one bit of an accepted record: it must no longer be accepted. */
static void fuzz_record_flip(const uint8_t *data, size_t size)
{
    idem_header_t *headers = NULL;
    idem_record_t rec;
    uint8_t *copy;
    size_t bit;
    int rc;

    bit = (size_t)(data[size / 2] * 131u + data[size - 1]) % (size * 8);
    copy = malloc(size);
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, data, size);
    copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    rc = idem_record_decode(copy, size, &rec, &headers);
    FUZZ_CHECK(rc == IDEM_ECORRUPT || rc == IDEM_EVERSION);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    idem_header_t *headers = NULL;
    idem_record_t rec;
    int rc;

    rc = idem_record_decode(data, size, &rec, &headers);
    if (rc != 0) {
        FUZZ_CHECK(rc == IDEM_ECORRUPT || rc == IDEM_EVERSION ||
                   rc == IDEM_ENOMEM);
        FUZZ_CHECK(headers == NULL);
        return 0;
    }
    FUZZ_CHECK(headers == rec.response.headers);
    fuzz_record_check(data, size, &rec);
    free(headers);
    fuzz_record_flip(data, size);
    return 0;
}
