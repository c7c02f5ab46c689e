/*
The training vocabulary shared by train_vlv.c, train_vlv.cu and the pipeline: the objectives
and the parameter groups each trains, a training batch (host arrays), AdamW's settings, the
random numbers (the same on every machine), and stage 0's caption dropout.
*/
#ifndef VLVC_OBJECTIVES_H
#define VLVC_OBJECTIVES_H

#include <math.h>
#include "model.h"

// random numbers: xorshift* and Box-Muller, the same on every machine
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

typedef enum { STAGE0, STAGE0B, STAGE1, STAGE2, NUM_OBJECTIVES } Objective;
static const char* const objective_name[NUM_OBJECTIVES] = { "stage0", "stage0b", "stage1", "stage2" };

// the parameter groups each objective trains by default (doc/model.md "Objectives")
static inline int objective_groups(Objective o) {
    switch (o) {
        case STAGE0: return 1 << GROUP_TEXTENC | 1 << GROUP_DIT;
        case STAGE0B: return 1 << GROUP_GPT;
        case STAGE1: return 1 << GROUP_VIT | 1 << GROUP_ADAPTER;
        default: return 1 << GROUP_PREFIX | 1 << GROUP_GPT;
    }
}
#define ENCODER_GROUPS (1 << GROUP_VIT | 1 << GROUP_ADAPTER)

typedef struct {
    const float* images;        // [B,H,W,3] x0 (stages 0 and 1) or the image to caption (stage 2)
    const int* text_tokens;     // [B,N_q]   stage 0
    const int* caption_tokens;  // [B,T_c]   stages 0b and 2
    const float* noise;         // [B,H,W,3] stages 0 and 1
    const int* timesteps;       // [B]       stages 0 and 1
} Batch;

static inline void check_tokens(const int* tokens, size_t n, int vocab, const char* what) {
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= vocab) fail("%s: token %d at index %zu is outside the vocabulary [0, %d)", what, tokens[i], i, vocab);
    }
}

// the empty caption [BOS, EOS, PAD...] in a row of n tokens
static inline void empty_caption(int* row, int n) {
    for (int j = 0; j < n; j++) { row[j] = j == 0 ? TOKEN_BOS : j == 1 ? TOKEN_EOS : TOKEN_PAD; }
}

// Stage 0's caption dropout: each of the B captions [B, N] becomes the empty caption with
// probability p, so that the decoder also learns the unconditional prediction that
// classifier-free guidance steers away from. Returns how many were dropped.
static inline int caption_dropout(int* tokens, int B, int N, float p, uint64_t* rng) {
    int dropped = 0;
    for (int b = 0; b < B; b++) {
        if (random_uniform(rng) < p) { empty_caption(tokens + (size_t)b * N, N); dropped++; }
    }
    return dropped;
}

// AdamW's settings (vlv_update)
typedef struct { float lr, beta1, beta2, eps, weight_decay, grad_clip; } AdamW;

#endif
