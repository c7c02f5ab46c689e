/*
The training vocabulary shared by train_vlv.c, train_vlv.cu and the pipeline: the objectives
and the parameter groups each trains, a training batch (host arrays), AdamW's settings, the
random numbers (the same on every machine), stage 0's caption dropout, and beam search's
bookkeeping.
*/
#ifndef VLVC_OBJECTIVES_H
#define VLVC_OBJECTIVES_H

#include <float.h>
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

// The lower median of B values (the value of rank (B-1)/2; ties ranked by index)
static inline float lower_median(const float* v, int B) {
    for (int b = 0; b < B; b++) {
        int rank = 0;
        for (int j = 0; j < B; j++) { rank += v[j] < v[b] || (v[j] == v[b] && j < b); }
        if (rank == (B - 1) / 2) { return v[b]; }
    }
    return 0.0f; // not reached for B >= 1
}

// The clip's bound from the B row norms: k times their lower median; *clipped gets how many
// rows lie above it (clip_rows_to_median here, clip_rows_to_median_device in train_vlv.cu)
static inline float clip_bound(const float* norms, int B, float k, int* clipped) {
    float bound = k * lower_median(norms, B);
    *clipped = 0;
    for (int b = 0; b < B; b++) { *clipped += norms[b] > bound; }
    return bound;
}

// Stage 1's per-image clip of the gradient at z (--clip_z k). Now and then the frozen text
// encoder's Jacobian at one z position is 10^3-10^4 times its usual size (doc/results.md,
// measurement 9), and that one image's gradient then outweighs the other B - 1 together.
// Each image's row of dz [B, n] is scaled to at most k times the batch's lower median row
// norm. norms [B] is scratch. Returns how many rows were scaled down.
static inline int clip_rows_to_median(float* dz, float* norms, int B, size_t n, float k) {
    for (int b = 0; b < B; b++) {
        double sumsq = 0.0;
        for (size_t j = 0; j < n; j++) { sumsq += (double)dz[(size_t)b * n + j] * dz[(size_t)b * n + j]; }
        norms[b] = (float)sqrt(sumsq);
    }
    int clipped;
    float bound = clip_bound(norms, B, k, &clipped);
    for (int b = 0; b < B; b++) {
        if (norms[b] <= bound) { continue; }
        float scale = bound / norms[b];
        for (size_t j = 0; j < n; j++) { dz[(size_t)b * n + j] *= scale; }
    }
    return clipped;
}

// AdamW's settings (vlv_update), and stage 1's per-image clip at z (vlv_backward; 0: off)
typedef struct { float lr, beta1, beta2, eps, weight_decay, grad_clip, clip_z; } AdamW;

// Beam search's bookkeeping on the host (beam_caption in train_vlv.c and train_vlv.cu run the
// caption decoder on the beams, rows of the model's batch, and hand its logits here). Keeps
// the `beams` captions of highest total log-probability; a caption that emitted EOS is finished
// and keeps its score.
#define BEAMS_MAX 64
typedef struct {
    int* seqs;          // [B, T] the live beams' tokens (row b < live)
    int* next;          // [B, T] scratch: the next step's beams
    float* score;       // [B]    total log-probability of each live beam
    float* next_score;  // [B]    scratch
    int live, beams, B, T, V;
} Beams;

// one beam, [BOS, PAD...], scored 0
static inline void beams_start(Beams* s, int beams, int B, int T, int V) {
    if (beams < 1 || beams > B || beams > BEAMS_MAX) fail("beam search: %d beams; at most %d and the model's batch (%d)", beams, BEAMS_MAX, B);
    s->seqs = (int*)mallocCheck((size_t)2 * B * T * sizeof(int));
    s->next = s->seqs + (size_t)B * T;
    s->score = (float*)mallocCheck(2 * (size_t)B * sizeof(float));
    s->next_score = s->score + B;
    for (int i = 0; i < B * T; i++) { s->seqs[i] = i % T == 0 ? TOKEN_BOS : TOKEN_PAD; }
    s->live = 1;
    s->score[0] = 0.0f;
    s->beams = beams; s->B = B; s->T = T; s->V = V;
}

// extends every live beam at position pos from logits [B, T, V] (the decoder on s->seqs)
static inline void beams_extend(Beams* s, int pos, const float* logits) {
    int T = s->T, V = s->V, beams = s->beams;
    // candidates (beam, token, score); a finished beam is one candidate with token -1
    int n_next = 0, cand_beam[BEAMS_MAX], cand_token[BEAMS_MAX];
    float* next_score = s->next_score;
    for (int b = 0; b < s->live; b++) {
        int prev = s->seqs[b * T + pos - 1];
        int finished = pos > 1 && (prev == TOKEN_EOS || prev == TOKEN_PAD);
        const float* row = logits + ((size_t)b * T + pos - 1) * V;
        float maxv = -FLT_MAX, sum = 0.0f;
        for (int v = 0; v < V; v++) { if (row[v] > maxv) { maxv = row[v]; } }
        for (int v = 0; v < V; v++) { sum += expf(row[v] - maxv); }
        float log_norm = maxv + logf(sum);
        for (int v = finished ? -1 : 0; v < (finished ? 0 : V); v++) {
            float sc = finished ? s->score[b] : s->score[b] + row[v] - log_norm;
            // keep the top `beams` candidates sorted by score (insertion; when full, the last drops)
            if (n_next == beams && sc <= next_score[beams - 1]) { continue; }
            int at = n_next < beams ? n_next++ : beams - 1;
            for (; at > 0 && next_score[at - 1] < sc; at--) {
                next_score[at] = next_score[at - 1]; cand_beam[at] = cand_beam[at - 1]; cand_token[at] = cand_token[at - 1];
            }
            next_score[at] = sc; cand_beam[at] = b; cand_token[at] = v;
        }
    }
    for (int k = 0; k < n_next; k++) {
        memcpy(s->next + k * T, s->seqs + cand_beam[k] * T, T * sizeof(int));
        s->next[k * T + pos] = cand_token[k] < 0 ? TOKEN_PAD : cand_token[k];
    }
    memcpy(s->seqs, s->next, (size_t)n_next * T * sizeof(int));
    memcpy(s->score, next_score, n_next * sizeof(float));
    s->live = n_next;
}

// the best finished caption (beams are sorted by score), or if none finished the best one, to
// best [T]; frees the beams
static inline void beams_finish(Beams* s, int* best) {
    int T = s->T, pick = 0;
    for (int b = s->live - 1; b >= 0; b--) {
        for (int j = 1; j < T; j++) { if (s->seqs[b * T + j] == TOKEN_EOS) { pick = b; } }
    }
    memcpy(best, s->seqs + pick * T, T * sizeof(int));
    free(s->seqs);
    free(s->score);
}

#endif
