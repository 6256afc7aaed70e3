/*
 * record.c — the versioned binary form of a record, as every store keeps it.
 *
 * Layout of format version 1 (integers little-endian):
 *
 *   off  size  field
 *     0     4  magic "IDMR"
 *     4     1  version (1)
 *     5     1  state (1 in progress, 2 complete)
 *     6     2  number of headers
 *     8     4  flags
 *    12    32  request fingerprint
 *    44     8  created_ms        (int64)
 *    52     8  expires_ms        (int64)
 *    60     8  owner             (uint64)
 *    68     8  lease_until_ms    (int64)
 *    76     4  status            (0 while in progress, else 100..999)
 *    80     8  body length
 *    88        headers: u16 name length, name, u32 value length, value
 *              body
 *   end-4   4  CRC-32C of every byte before it
 *
 * The decoder trusts nothing: every length is checked against what is left
 * before it is used, the checksum is verified first, and the result points
 * into the caller's buffer, so a corrupt or truncated record is an error and
 * never a read out of bounds.
 */
#include "idem.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define REC_MAGIC       "IDMR"
#define REC_VERSION     1
#define REC_FIXED       88u
#define REC_TRAILER     4u
#define REC_MAX_HEADERS 1024u
#define REC_MAX_NAME    0xffffu
#define REC_MAX_VALUE   (1u << 20)
#define REC_MAX_BODY    ((uint64_t)1 << 32)

/* CRC-32C (Castagnoli), reflected, table-driven: one table built once. */
static uint32_t crc32c_table[256];

static void idem_record_crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        }
        crc32c_table[i] = c;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <nmmintrin.h>

__attribute__((target("sse4.2"))) static uint32_t
idem_record_crc_hw(const uint8_t *p, size_t n)
{
    uint64_t c = 0xffffffffu;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) {
        c32 = _mm_crc32_u8(c32, *p++);
    }
    return c32 ^ 0xffffffffu;
}
#endif

static uint32_t idem_record_crc_sw(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n--) {
        c = crc32c_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    }
    return c ^ 0xffffffffu;
}

/* The table and the CPU probe are set up once, on first use. */
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_has_hw;

static void idem_record_crc_setup(void)
{
    idem_record_crc_init();
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    crc_has_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t idem_record_crc(const uint8_t *p, size_t n)
{
    pthread_once(&crc_once, idem_record_crc_setup);
#if defined(__x86_64__) && defined(__GNUC__)
    if (crc_has_hw) {
        return idem_record_crc_hw(p, n);
    }
#endif
    return idem_record_crc_sw(p, n);
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

size_t idem_record_encoded_size(const idem_record_t *rec)
{
    const idem_response_t *r = &rec->response;
    size_t n = REC_FIXED + REC_TRAILER;

    if (r->nheaders > REC_MAX_HEADERS || r->body_len >= REC_MAX_BODY) {
        return 0;
    }
    for (size_t i = 0; i < r->nheaders; i++) {
        if (r->headers[i].name.len > REC_MAX_NAME ||
            r->headers[i].value.len > REC_MAX_VALUE) {
            return 0;
        }
        n += 2 + r->headers[i].name.len + 4 + r->headers[i].value.len;
    }
    return n + r->body_len;
}

int idem_record_encode(const idem_record_t *rec, uint8_t *buf, size_t cap,
                       size_t *len)
{
    const idem_response_t *r = &rec->response;
    size_t need, off;

    if (rec->state != IDEM_STATE_IN_PROGRESS &&
        rec->state != IDEM_STATE_COMPLETE) {
        return IDEM_EINVAL;
    }
    if (r->status < 0 || r->status > 999 ||
        (r->body_len > 0 && r->body == NULL)) {
        return IDEM_EINVAL;
    }
    need = idem_record_encoded_size(rec);
    if (need == 0 || need > cap) {
        return IDEM_ETOOBIG;
    }

    memcpy(buf, REC_MAGIC, 4);
    buf[4] = REC_VERSION;
    buf[5] = (uint8_t)rec->state;
    put_u16(buf + 6, (uint16_t)r->nheaders);
    put_u32(buf + 8, rec->flags);
    memcpy(buf + 12, rec->fingerprint.bytes, IDEM_HASH_LEN);
    put_u64(buf + 44, (uint64_t)rec->created_ms);
    put_u64(buf + 52, (uint64_t)rec->expires_ms);
    put_u64(buf + 60, rec->owner);
    put_u64(buf + 68, (uint64_t)rec->lease_until_ms);
    put_u32(buf + 76, (uint32_t)r->status);
    put_u64(buf + 80, (uint64_t)r->body_len);
    off = REC_FIXED;

    for (size_t i = 0; i < r->nheaders; i++) {
        const idem_header_t *h = &r->headers[i];
        put_u16(buf + off, (uint16_t)h->name.len);
        off += 2;
        if (h->name.len) {
            memcpy(buf + off, h->name.data, h->name.len);
        }
        off += h->name.len;
        put_u32(buf + off, (uint32_t)h->value.len);
        off += 4;
        if (h->value.len) {
            memcpy(buf + off, h->value.data, h->value.len);
        }
        off += h->value.len;
    }
    if (r->body_len) {
        memcpy(buf + off, r->body, r->body_len);
    }
    off += r->body_len;
    put_u32(buf + off, idem_record_crc(buf, off));
    *len = off + REC_TRAILER;
    return 0;
}

int idem_record_decode(const uint8_t *buf, size_t len, idem_record_t *rec,
                       idem_header_t **headers_out)
{
    idem_record_t out;
    idem_header_t *headers = NULL;
    size_t off, end, nheaders;
    uint64_t body_len;
    uint32_t status;

    if (buf == NULL || len < REC_FIXED + REC_TRAILER ||
        memcmp(buf, REC_MAGIC, 4) != 0) {
        return IDEM_ECORRUPT;
    }
    if (buf[4] != REC_VERSION) {
        return IDEM_EVERSION;
    }
    end = len - REC_TRAILER;
    if (get_u32(buf + end) != idem_record_crc(buf, end)) {
        return IDEM_ECORRUPT;
    }

    memset(&out, 0, sizeof(out));
    out.state = (idem_state_t)buf[5];
    if (out.state != IDEM_STATE_IN_PROGRESS &&
        out.state != IDEM_STATE_COMPLETE) {
        return IDEM_ECORRUPT;
    }
    nheaders = get_u16(buf + 6);
    out.flags = get_u32(buf + 8);
    memcpy(out.fingerprint.bytes, buf + 12, IDEM_HASH_LEN);
    out.created_ms = (int64_t)get_u64(buf + 44);
    out.expires_ms = (int64_t)get_u64(buf + 52);
    out.owner = get_u64(buf + 60);
    out.lease_until_ms = (int64_t)get_u64(buf + 68);
    status = get_u32(buf + 76);
    body_len = get_u64(buf + 80);
    if (status > 999 || nheaders > REC_MAX_HEADERS) {
        return IDEM_ECORRUPT;
    }
    out.response.status = (int)status;

    if (nheaders) {
        headers = calloc(nheaders, sizeof(*headers));
        if (headers == NULL) {
            return IDEM_ENOMEM;
        }
    }

    off = REC_FIXED;
    for (size_t i = 0; i < nheaders; i++) {
        size_t n;
        if (end - off < 2) {
            goto corrupt;
        }
        n = get_u16(buf + off);
        off += 2;
        if (end - off < n) {
            goto corrupt;
        }
        headers[i].name.data = (const char *)buf + off;
        headers[i].name.len = n;
        off += n;
        if (end - off < 4) {
            goto corrupt;
        }
        n = get_u32(buf + off);
        off += 4;
        if (n > REC_MAX_VALUE || end - off < n) {
            goto corrupt;
        }
        headers[i].value.data = (const char *)buf + off;
        headers[i].value.len = n;
        off += n;
    }
    if (body_len != end - off) {
        goto corrupt;
    }
    out.response.body = body_len ? buf + off : NULL;
    out.response.body_len = (size_t)body_len;
    out.response.headers = headers;
    out.response.nheaders = nheaders;

    *rec = out;
    *headers_out = headers;
    return 0;

corrupt:
    free(headers);
    return IDEM_ECORRUPT;
}
