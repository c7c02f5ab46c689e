/*
SHA-256 (FIPS 180-4), for the pretrained parts' provenance: the file in data/ is named by its
digest, and a run refuses a file whose digest is not the one its provenance records.
*/
#ifndef VLVC_SHA256_H
#define VLVC_SHA256_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    uint32_t h[8];
    uint8_t block[64];
    size_t used;       // bytes in block
    uint64_t length;   // bytes hashed so far
} Sha256;

static inline uint32_t sha256_rotr(uint32_t x, int n) { return x >> n | x << (32 - n); }

// one 64-byte block into the state (FIPS 180-4, 6.2.2)
static inline void sha256_block(uint32_t h[8], const uint8_t* p) {
    // the first 32 bits of the fractional parts of the cube roots of the first 64 primes
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2 };
    uint32_t w[64];
    for (int t = 0; t < 16; t++) {
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 | (uint32_t)p[4 * t + 2] << 8 | p[4 * t + 3];
    }
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = sha256_rotr(w[t - 15], 7) ^ sha256_rotr(w[t - 15], 18) ^ w[t - 15] >> 3;
        uint32_t s1 = sha256_rotr(w[t - 2], 17) ^ sha256_rotr(w[t - 2], 19) ^ w[t - 2] >> 10;
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t S1 = sha256_rotr(e, 6) ^ sha256_rotr(e, 11) ^ sha256_rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = hh + S1 + ch + k[t] + w[t];
        uint32_t S0 = sha256_rotr(a, 2) ^ sha256_rotr(a, 13) ^ sha256_rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static inline void sha256_init(Sha256* s) {
    // the first 32 bits of the fractional parts of the square roots of the first 8 primes
    static const uint32_t h0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    memcpy(s->h, h0, sizeof h0);
    s->used = 0;
    s->length = 0;
}

static inline void sha256_update(Sha256* s, const void* data, size_t n) {
    const uint8_t* p = (const uint8_t*)data;
    s->length += n;
    while (n > 0) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->block + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used == 64) { sha256_block(s->h, s->block); s->used = 0; }
    }
}

// the digest as 64 lowercase hex digits and a terminating zero
static inline void sha256_final(Sha256* s, char hex[65]) {
    uint64_t bits = s->length * 8;
    uint8_t pad = 0x80, zero = 0;
    sha256_update(s, &pad, 1); // a one bit, zeros to 56 bytes mod 64, the length in bits (big-endian)
    while (s->used != 56) { sha256_update(s, &zero, 1); }
    uint8_t len[8];
    for (int i = 0; i < 8; i++) { len[i] = (uint8_t)(bits >> (56 - 8 * i)); }
    sha256_update(s, len, 8);
    for (int i = 0; i < 8; i++) { snprintf(hex + 8 * i, 9, "%08x", s->h[i]); }
}

// the digest of an open file from its position to its end (the caller opened it with its
// format's bound: vlvc/utils.h regular_open); 0 if reading failed. The stream is left at its end.
static inline int sha256_stream(FILE* fp, char hex[65]) {
    Sha256 s;
    sha256_init(&s);
    uint8_t buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, fp)) > 0) { sha256_update(&s, buf, got); }
    int ok = !ferror(fp);
    sha256_final(&s, hex);
    return ok;
}

#endif
