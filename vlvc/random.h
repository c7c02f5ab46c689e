/*
Random numbers: xorshift* for uniform draws and Box-Muller for normal ones, the same on every
machine and in both builds (noise, timesteps, initial weights, the data's draws).
*/
#ifndef VLVC_RANDOM_H
#define VLVC_RANDOM_H

#include <stdint.h>
#include <math.h>

static inline uint32_t random_u32(uint64_t* state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}
static inline float random_uniform(uint64_t* state) { return (random_u32(state) >> 8) / 16777216.0f; }
static inline float random_normal(uint64_t* state) {
    float u1 = random_uniform(state), u2 = random_uniform(state);
    return sqrtf(-2.0f * logf(u1 + 1e-12f)) * cosf(6.2831853f * u2);
}

#endif
