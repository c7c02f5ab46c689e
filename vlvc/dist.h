/*
Data-parallel training across processes (ranks), for `make train_vlv USE_MPI=1` and
`mpirun -np N ./train_vlv`. Each rank holds the whole model and computes on its rows of the
global batch; the collectives below make every rank end each step with the same bits.

Every reduction here sums in rank order 0, 1, ..., N-1, whatever algorithm the MPI library
would choose, so a run gives the same result each time for the same N:
  dist_sum_floats   reduce-scatter (MPI_Alltoallv: rank k receives every rank's k-th chunk),
                    the rank-order sum of each chunk, then MPI_Allgatherv of the sums: each rank
                    sends and receives 2 (N-1)/N of the buffer, as a ring all-reduce does
  dist_sum_float    one number (a loss): gathered, then summed in rank order
Built without USE_MPI there is one rank and every call here returns at once.

A rank that fails (fail() exits non-zero) aborts every rank through MPI_Abort, which the exit
handler dist_init registers calls unless dist_finish ran: no rank waits forever in a
collective for a rank that is gone. Ranks other than 0 print nothing on stdout.
*/
#ifndef VLVC_DIST_H
#define VLVC_DIST_H

#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#ifdef USE_MPI
#include <mpi.h>
#endif

#define DIST_MAX_RANKS 1024
static int dist_rank_ = 0, dist_ranks_ = 1;

static inline int dist_rank(void) { return dist_rank_; }
static inline int dist_ranks(void) { return dist_ranks_; }

#ifdef USE_MPI
static int dist_finished_ = 0;

static void dist_check(int status, const char* what) {
    if (status == MPI_SUCCESS) { return; }
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(status, text, &len);
    fprintf(stderr, "error: rank %d: %s failed: %s\n", dist_rank_, what, text);
    exit(EXIT_FAILURE); // the exit handler aborts the other ranks
}

static void dist_abort_unless_finished(void) {
    if (!dist_finished_) { MPI_Abort(MPI_COMM_WORLD, EXIT_FAILURE); }
}

// messages above this many bytes go in pieces: MPI's counts are ints
#define DIST_PIECE ((size_t)1 << 30)
#endif

// starts MPI (a no-op without USE_MPI); call before anything else reads argv
static inline void dist_init(int* argc, char*** argv) {
#ifdef USE_MPI
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        fprintf(stderr, "error: MPI_Init failed: run this build under mpirun (or build without USE_MPI=1)\n");
        exit(EXIT_FAILURE);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &dist_rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &dist_ranks_);
    atexit(dist_abort_unless_finished);
    if (dist_ranks_ > DIST_MAX_RANKS) {
        fprintf(stderr, "error: %d ranks: at most %d\n", dist_ranks_, DIST_MAX_RANKS);
        exit(EXIT_FAILURE);
    }
    if (dist_rank_ > 0 && !freopen("/dev/null", "w", stdout)) {
        fprintf(stderr, "error: rank %d: could not silence stdout\n", dist_rank_);
        exit(EXIT_FAILURE);
    }
#else
    (void)argc;
    (void)argv;
#endif
}

// ends MPI after a successful run: every rank must call it before it exits with status 0
static inline void dist_finish(void) {
#ifdef USE_MPI
    fflush(stdout);
    dist_finished_ = 1;
    MPI_Finalize();
#endif
}

// rank 0's `bytes` bytes at buf, on every rank
static inline void dist_broadcast(void* buf, size_t bytes) {
#ifdef USE_MPI
    if (dist_ranks_ == 1) { return; }
    for (size_t at = 0; at < bytes; at += DIST_PIECE) {
        size_t n = bytes - at < DIST_PIECE ? bytes - at : DIST_PIECE;
        dist_check(MPI_Bcast((char*)buf + at, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast");
    }
#else
    (void)buf;
    (void)bytes;
#endif
}

// buf holds N blocks of `bytes` bytes, rank k's at block k: after this call every rank has
// every block (MPI_Allgather in place)
static inline void dist_gather_blocks(void* buf, size_t bytes) {
#ifdef USE_MPI
    if (dist_ranks_ == 1) { return; }
    if (bytes > DIST_PIECE) {
        fprintf(stderr, "error: rank %d: dist_gather_blocks: blocks of %zu bytes, at most %zu\n", dist_rank_, bytes, DIST_PIECE);
        exit(EXIT_FAILURE);
    }
    dist_check(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)bytes, MPI_BYTE, MPI_COMM_WORLD), "MPI_Allgather");
#else
    (void)buf;
    (void)bytes;
#endif
}

// the sum over ranks of x, in rank order
static inline float dist_sum_float(float x) {
#ifdef USE_MPI
    if (dist_ranks_ == 1) { return x; }
    float all[DIST_MAX_RANKS];
    all[dist_rank_] = x;
    dist_gather_blocks(all, sizeof(float));
    float sum = all[0];
    for (int k = 1; k < dist_ranks_; k++) { sum += all[k]; }
    return sum;
#else
    return x;
#endif
}

// the sum over ranks of an integer (exact)
static inline long dist_sum_long(long x) {
#ifdef USE_MPI
    if (dist_ranks_ == 1) { return x; }
    long sum = 0;
    dist_check(MPI_Allreduce(&x, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
    return sum;
#else
    return x;
#endif
}

// x [n] in place: the sum over ranks, element by element, in rank order; the same bits on
// every rank (the scheme: this file's comment)
static inline void dist_sum_floats(float* x, size_t n) {
#ifdef USE_MPI
    int N = dist_ranks_, me = dist_rank_;
    if (N == 1 || n == 0) { return; }
    static float* scratch = NULL; // N copies of this rank's chunk, then their sum
    static size_t scratch_cap = 0;
    static int *counts = NULL, *starts = NULL, *recv_counts = NULL, *recv_starts = NULL;
    if (!counts) {
        counts = (int*)malloc(4 * (size_t)N * sizeof(int));
        if (!counts) { fprintf(stderr, "error: rank %d: out of memory (dist_sum_floats)\n", me); exit(EXIT_FAILURE); }
        starts = counts + N;
        recv_counts = counts + 2 * N;
        recv_starts = counts + 3 * N;
    }
    for (size_t at = 0; at < n; at += DIST_PIECE / sizeof(float)) {
        size_t len = n - at < DIST_PIECE / sizeof(float) ? n - at : DIST_PIECE / sizeof(float);
        float* part = x + at;
        for (int k = 0; k < N; k++) { // chunk k: [k len / N, (k + 1) len / N)
            starts[k] = (int)(len * k / N);
            counts[k] = (int)(len * (k + 1) / N) - starts[k];
        }
        int mine = counts[me];
        size_t need = (size_t)N * mine + 1;
        if (need > scratch_cap) {
            free(scratch);
            scratch = (float*)malloc(need * sizeof(float));
            if (!scratch) { fprintf(stderr, "error: rank %d: out of memory (dist_sum_floats, %zu floats)\n", me, need); exit(EXIT_FAILURE); }
            scratch_cap = need;
        }
        for (int k = 0; k < N; k++) { recv_counts[k] = mine; recv_starts[k] = k * mine; }
        dist_check(MPI_Alltoallv(part, counts, starts, MPI_FLOAT, scratch, recv_counts, recv_starts, MPI_FLOAT, MPI_COMM_WORLD),
                   "MPI_Alltoallv");
        for (int k = 1; k < N; k++) {
            const float* from = scratch + (size_t)k * mine;
            for (int i = 0; i < mine; i++) { scratch[i] += from[i]; }
        }
        dist_check(MPI_Allgatherv(scratch, mine, MPI_FLOAT, part, counts, starts, MPI_FLOAT, MPI_COMM_WORLD), "MPI_Allgatherv");
    }
#else
    (void)x;
    (void)n;
#endif
}

#endif
