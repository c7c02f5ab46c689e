/*
Beam search's bookkeeping on the host: beam_caption (train_vlv.c, train_vlv.cu) runs the
caption decoder on the live beams, as rows of the model's batch, and hands its logits here.
*/
#ifndef VLVC_BEAMS_H
#define VLVC_BEAMS_H

#include <float.h>
#include <math.h>
#include "config.h"

// Keeps the `beams` captions of highest total log-probability; a caption that emitted EOS is finished
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
