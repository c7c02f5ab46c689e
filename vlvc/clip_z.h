/*
Stage 1's per-image clip of the gradient at z (--clip_z k). Now and then the frozen text
encoder's Jacobian at one z position is 10^3-10^4 times its usual size (doc/results/history.md,
measurement 9), and that one image's gradient then outweighs the other B - 1 together. Each
image's row of dz [B, n] is scaled to at most k times the batch's lower median row norm. The
bound is found on the host in both builds; train_vlv.cu scales the rows on the device. With
several ranks (vlvc/dist.h) the median is the global batch's: each rank holds B of its rows.
*/
#ifndef VLVC_CLIP_Z_H
#define VLVC_CLIP_Z_H

#include <math.h>
#include <stddef.h>
#include "dist.h"

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

// The clip on host arrays: this rank's rows dz [B, n] in place, norms [B * ranks] scratch (the
// global batch's, rank r's at r B). Returns how many rows of the global batch were scaled down.
static inline int clip_rows_to_median(float* dz, float* norms, int B, size_t n, float k) {
    float* mine = norms + (size_t)dist_rank() * B;
    for (int b = 0; b < B; b++) {
        double sumsq = 0.0;
        for (size_t j = 0; j < n; j++) { sumsq += (double)dz[(size_t)b * n + j] * dz[(size_t)b * n + j]; }
        mine[b] = (float)sqrt(sumsq);
    }
    dist_gather_blocks(norms, (size_t)B * sizeof(float));
    int clipped;
    float bound = clip_bound(norms, B * dist_ranks(), k, &clipped);
    for (int b = 0; b < B; b++) {
        if (mine[b] <= bound) { continue; }
        float scale = bound / mine[b];
        for (size_t j = 0; j < n; j++) { dz[(size_t)b * n + j] *= scale; }
    }
    return clipped;
}

#endif
