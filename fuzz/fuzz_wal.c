/*
 * fuzz_wal.c — libFuzzer target for idem_store_wal_scan(), which reads the
 * LMDB store's write-ahead log after a power loss: bytes that a torn write
 * or a dying disk may have left in any state.
 *
 * The input is the generation to read (8 bytes, little-endian) and then
 * the log. Beyond "no crash, no read outside the input", the target
 * checks:
 *   - the scan returns 0 or MDB_CORRUPTED (or ENOMEM);
 *   - every record handed over names one of the two databases, has a key,
 *     and lies inside the log, key and value;
 *   - the scan is a function of its input: a second one hands over the
 *     same records.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/lmdb_wal.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            abort();                                                           \
        }                                                                      \
    } while (0)

typedef struct {
    const uint8_t *log;
    size_t size;
    uint64_t sum; /* of what was handed over, to compare two scans */
    size_t n;
} fuzz_wal_t;

static int fuzz_wal_inside(const void *p, size_t n, const fuzz_wal_t *f)
{
    const uint8_t *q = p;

    return q >= f->log && q <= f->log + f->size &&
           n <= (size_t)(f->log + f->size - q);
}

static int fuzz_wal_apply(void *ctx, unsigned db, const MDB_val *key,
                          const MDB_val *val)
{
    fuzz_wal_t *f = ctx;
    const uint8_t *k = key->mv_data;

    FUZZ_CHECK(db < IDEM_STORE_WAL_DBIS);
    FUZZ_CHECK(key->mv_size > 0 && fuzz_wal_inside(k, key->mv_size, f));
    if (val != NULL) {
        FUZZ_CHECK(fuzz_wal_inside(val->mv_data, val->mv_size, f));
    }
    f->sum = f->sum * 31 + db * 7 + key->mv_size + (val ? val->mv_size : 0) +
             k[0] + k[key->mv_size - 1];
    f->n++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_wal_t a, b;
    uint64_t gen;
    int ra, rb;

    if (size < 8) {
        return 0;
    }
    memcpy(&gen, data, 8);
    memset(&a, 0, sizeof(a));
    a.log = data + 8;
    a.size = size - 8;
    b = a;
    ra = idem_store_wal_scan(a.log, a.size, gen, fuzz_wal_apply, &a);
    FUZZ_CHECK(ra == 0 || ra == MDB_CORRUPTED || ra == ENOMEM);
    rb = idem_store_wal_scan(b.log, b.size, gen, fuzz_wal_apply, &b);
    FUZZ_CHECK(ra == rb && a.n == b.n && a.sum == b.sum);
    return 0;
}
