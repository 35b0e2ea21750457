/* fl_philox.h: the counter-based generator of the samplers, Philox-4x32-10.
 *
 * Philox (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC11)
 * maps a 128-bit counter and a 64-bit key to 128 random bits through ten rounds of two 32x32
 * -> 64-bit multiplications and xors, the key bumped by the Weyl constants between rounds. It
 * keeps no state: the draw of a row is a pure function of (key, counter), so it is the same on
 * every thread, every SIMD path and in every batch order, and rows are independent streams.
 * Checked against Random123's published known-answer vectors (csrc/tests/test_kernels_isa.c,
 * tests/test_decode.py).
 *
 * How the samplers key it (API section 8): key = the 64-bit seed (low word first); counter =
 * (offset low, offset high, stream low, stream high), where the stream is the row's C-order
 * index for one seed shared by the batch and 0 for a seed per row. The first two output words
 * make the row's uniform in [0, 1) with 53 random bits (fl_philox_uniform).
 */
#ifndef FL_PHILOX_H
#define FL_PHILOX_H

#include <stdint.h>

#define FL_PHILOX_M0 0xD2511F53u
#define FL_PHILOX_M1 0xCD9E8D57u
#define FL_PHILOX_W0 0x9E3779B9u
#define FL_PHILOX_W1 0xBB67AE85u

/* Philox-4x32 with the given number of rounds (10 for Philox-4x32-10): out = f(ctr, key) */
static inline void fl_philox4x32(const uint32_t ctr[4], const uint32_t key[2], int rounds, uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
    for (int r = 0; r < rounds; r++) {
        if (r > 0) {
            k0 += FL_PHILOX_W0;
            k1 += FL_PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)FL_PHILOX_M0 * c0, p1 = (uint64_t)FL_PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The uniform in [0, 1) of key seed and counter (offset, stream): words 0 and 1 of
 * Philox-4x32-10 as a 53-bit fraction, (w1 * 2^21 + w0 / 2^11) / 2^53 */
static inline double fl_philox_uniform(uint64_t seed, uint64_t offset, uint64_t stream)
{
    uint32_t ctr[4] = {(uint32_t)offset, (uint32_t)(offset >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t w[4];
    fl_philox4x32(ctr, key, 10, w);
    uint64_t bits = ((uint64_t)w[1] << 21) | (uint64_t)(w[0] >> 11);
    return (double)bits * 0x1p-53;
}

#endif
