/*
Data-parallel training across processes (ranks): `make train_vlv USE_MPI=1` and `mpirun -np N
./train_vlv` on CPUs; train_vlvcu_nccl (make cuda) on GPUs, one process per GPU. Each rank holds
the whole model and computes on its rows of the global batch; the collectives below make
every rank end each step with the same bits. doc/distributed.md tells how to run them.

Every reduction here sums in rank order 0, 1, ..., N-1, whatever algorithm the MPI library
would choose, so a run gives the same result each time for the same N:
  dist_sum_floats   reduce-scatter (MPI_Alltoallv: rank k receives every rank's k-th chunk),
                    the rank-order sum of each chunk, then MPI_Allgatherv of the sums: each rank
                    sends and receives 2 (N-1)/N of the buffer, as a ring all-reduce does
  dist_sum_double   one number (a loss, a count, a squared norm): gathered, summed in rank order
Built with neither USE_MPI nor USE_NCCL there is one rank and every call returns at once.

USE_NCCL (train_vlv.cu): the host collectives go through NCCL on a device staging buffer, and
the gradients are summed on the device (dist_sum_device_floats: ncclAllReduce, whose order NCCL
fixes for a given set of GPUs and version), on one GPU too, so that one rank shows the cost. The ranks find each other through MPI (mpirun),
or, when VLV_NCCL_ID_FILE is set, through a file on a filesystem they share: rank 0 writes
NCCL's unique id there, and each process takes its rank and the rank count from VLV_RANK and
VLV_RANKS (its GPU: VLV_LOCAL_RANK, else rank modulo the GPUs it sees).

A rank that fails (fail() exits non-zero) aborts every rank through MPI_Abort, which the exit
handler dist_init registers calls unless dist_finish ran: no rank waits forever in a
collective for a rank that is gone. (Under the file bootstrap there is no launcher to stop the
others: a rank that dies leaves them waiting, so run them under something that stops the
group.) Ranks other than 0 print nothing on stdout.
*/
#ifndef VLVC_DIST_H
#define VLVC_DIST_H

#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>
#ifdef USE_MPI
#define OMPI_SKIP_MPICXX 1 // the C API only: a C++ compiler (nvcc) would also pull in the deprecated C++ bindings
#include <mpi.h>
#endif
#ifdef USE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

#define DIST_MAX_RANKS 1024
static int dist_rank_ = 0, dist_ranks_ = 1;

static inline int dist_rank(void) { return dist_rank_; }
static inline int dist_ranks(void) { return dist_ranks_; }

static inline void dist_fail(const char* what, const char* why) {
    fprintf(stderr, "error: rank %d: %s failed: %s\n", dist_rank_, what, why);
    exit(EXIT_FAILURE); // the exit handler aborts the other ranks
}

#if defined(USE_MPI) || defined(USE_NCCL)
static int dist_finished_ = 0, dist_by_mpi_ = 0;

static void dist_abort_unless_finished(void) {
#ifdef USE_MPI
    if (!dist_finished_ && dist_by_mpi_) { MPI_Abort(MPI_COMM_WORLD, EXIT_FAILURE); }
#endif
}
#endif

#ifdef USE_MPI
static inline void dist_check(int status, const char* what) {
    if (status == MPI_SUCCESS) { return; }
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(status, text, &len);
    dist_fail(what, text);
}
// broadcasts above this many bytes go in pieces: MPI's counts are ints
#define DIST_PIECE ((size_t)1 << 30)
#endif

#ifdef USE_NCCL
static ncclComm_t dist_comm_;
static void* dist_staging_ = NULL; // device memory the host collectives go through
static size_t dist_staging_bytes_ = 0;

static inline void dist_nccl_check(ncclResult_t status, const char* what) {
    if (status != ncclSuccess) { dist_fail(what, ncclGetErrorString(status)); }
}
static inline void dist_cuda_check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) { dist_fail(what, cudaGetErrorString(status)); }
}
static inline char* dist_staging(size_t bytes) {
    if (bytes > dist_staging_bytes_) {
        if (dist_staging_) { dist_cuda_check(cudaFree(dist_staging_), "cudaFree (the staging buffer)"); }
        dist_cuda_check(cudaMalloc(&dist_staging_, bytes), "cudaMalloc (the staging buffer)");
        dist_staging_bytes_ = bytes;
    }
    return (char*)dist_staging_;
}
static inline int dist_env(const char* name, int fallback) {
    const char* v = getenv(name);
    if (!v || !*v) { return fallback; }
    char* end;
    long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > DIST_MAX_RANKS) {
        fprintf(stderr, "error: %s=%s: give a whole number in [0, %d]\n", name, v, DIST_MAX_RANKS);
        exit(EXIT_FAILURE);
    }
    return (int)x;
}
// NCCL's unique id from rank 0 to every rank: by MPI, or through the file VLV_NCCL_ID_FILE
// (written to a temporary name and renamed, so that a rank never reads half of it; the other
// ranks wait for it up to 120 s)
static inline void dist_share_nccl_id(ncclUniqueId* id, const char* file) {
    if (!file) {
#ifdef USE_MPI
        dist_check(MPI_Bcast(id, sizeof *id, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast (the NCCL id)");
#endif
        return;
    }
    if (dist_rank_ == 0) {
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", file);
        FILE* fp = fopen(tmp, "wb");
        if (!fp || fwrite(id, sizeof *id, 1, fp) != 1 || fclose(fp) != 0 || rename(tmp, file) != 0) {
            fprintf(stderr, "error: rank 0 could not write the NCCL id to '%s': is VLV_NCCL_ID_FILE on a folder it may write?\n", file);
            exit(EXIT_FAILURE);
        }
        return;
    }
    for (int tries = 0; tries < 1200; tries++) {
        FILE* fp = fopen(file, "rb");
        if (fp) {
            size_t got = fread(id, sizeof *id, 1, fp);
            fclose(fp);
            if (got == 1) { return; }
        }
        usleep(100000);
    }
    fprintf(stderr, "error: rank %d: no NCCL id in '%s' after 120 s: is rank 0 running, and is the file on a filesystem both see?\n",
            dist_rank_, file);
    exit(EXIT_FAILURE);
}
#endif

// Starts the ranks (a no-op in a one-rank build); call before anything else reads argv.
static inline void dist_init(int* argc, char*** argv) {
#if defined(USE_MPI) || defined(USE_NCCL)
    const char* id_file = getenv("VLV_NCCL_ID_FILE");
#ifndef USE_NCCL
    id_file = NULL;
#endif
    if (!id_file) {
#ifdef USE_MPI
        if (MPI_Init(argc, argv) != MPI_SUCCESS) {
            fprintf(stderr, "error: MPI_Init failed: run this build under mpirun (or build without USE_MPI=1)\n");
            exit(EXIT_FAILURE);
        }
        dist_by_mpi_ = 1;
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_rank(MPI_COMM_WORLD, &dist_rank_);
        MPI_Comm_size(MPI_COMM_WORLD, &dist_ranks_);
#else
        fprintf(stderr, "error: this build has no MPI: set VLV_NCCL_ID_FILE, VLV_RANK and VLV_RANKS (doc/distributed.md)\n");
        exit(EXIT_FAILURE);
#endif
    }
    atexit(dist_abort_unless_finished);
#ifdef USE_NCCL
    if (id_file) {
        dist_rank_ = dist_env("VLV_RANK", 0);
        dist_ranks_ = dist_env("VLV_RANKS", 1);
        if (dist_rank_ >= dist_ranks_) {
            fprintf(stderr, "error: VLV_RANK=%d with VLV_RANKS=%d: ranks count from 0 to VLV_RANKS - 1\n", dist_rank_, dist_ranks_);
            exit(EXIT_FAILURE);
        }
    }
#endif
    if (dist_ranks_ > DIST_MAX_RANKS) {
        fprintf(stderr, "error: %d ranks: at most %d\n", dist_ranks_, DIST_MAX_RANKS);
        exit(EXIT_FAILURE);
    }
#ifdef USE_NCCL
    { // a communicator even for one rank: its all-reduce then runs as well, to show what it costs
        int devices = 0;
        dist_cuda_check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
        if (devices < 1) { dist_fail("finding a GPU", "none is visible"); }
        // the GPU of this rank: its rank on this machine (Open MPI says it; the file bootstrap
        // may), else the rank modulo the GPUs seen
        int local = dist_env("VLV_LOCAL_RANK", dist_env("OMPI_COMM_WORLD_LOCAL_RANK", dist_rank_));
        dist_cuda_check(cudaSetDevice(local % devices), "cudaSetDevice");
        ncclUniqueId id;
        if (dist_rank_ == 0) { dist_nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId"); }
        dist_share_nccl_id(&id, id_file);
        dist_nccl_check(ncclCommInitRank(&dist_comm_, dist_ranks_, id, dist_rank_), "ncclCommInitRank");
    }
#endif
    if (dist_rank_ > 0 && !freopen("/dev/null", "w", stdout)) { dist_fail("silencing stdout", "freopen"); }
#else
    (void)argc;
    (void)argv;
#endif
}

// ends the ranks after a successful run: every rank calls it before it exits with status 0
static inline void dist_finish(void) {
#if defined(USE_MPI) || defined(USE_NCCL)
    fflush(stdout);
    dist_finished_ = 1;
#ifdef USE_NCCL
    ncclCommDestroy(dist_comm_);
#endif
#ifdef USE_MPI
    if (dist_by_mpi_) { MPI_Finalize(); }
#endif
#endif
}

// rank 0's `bytes` bytes at buf, on every rank
static inline void dist_broadcast(void* buf, size_t bytes) {
    if (dist_ranks_ == 1 || bytes == 0) { return; }
#if defined(USE_NCCL)
    char* stage = dist_staging(bytes);
    dist_cuda_check(cudaMemcpy(stage, buf, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (broadcast)");
    dist_nccl_check(ncclBroadcast(stage, stage, bytes, ncclChar, 0, dist_comm_, 0), "ncclBroadcast");
    dist_cuda_check(cudaMemcpy(buf, stage, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (broadcast)");
#elif defined(USE_MPI)
    for (size_t at = 0; at < bytes; at += DIST_PIECE) {
        size_t n = bytes - at < DIST_PIECE ? bytes - at : DIST_PIECE;
        dist_check(MPI_Bcast((char*)buf + at, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast");
    }
#else
    (void)buf;
#endif
}

// buf holds N blocks of `bytes` bytes, rank k's at block k: after this call every rank has
// every block (an all-gather in place)
static inline void dist_gather_blocks(void* buf, size_t bytes) {
    if (dist_ranks_ == 1 || bytes == 0) { return; }
#if defined(USE_NCCL)
    char* stage = dist_staging(bytes * dist_ranks_);
    char* mine = stage + bytes * dist_rank_;
    dist_cuda_check(cudaMemcpy(mine, (char*)buf + bytes * dist_rank_, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (gather)");
    dist_nccl_check(ncclAllGather(mine, stage, bytes, ncclChar, dist_comm_, 0), "ncclAllGather");
    dist_cuda_check(cudaMemcpy(buf, stage, bytes * dist_ranks_, cudaMemcpyDeviceToHost), "cudaMemcpy (gather)");
#elif defined(USE_MPI)
    if (bytes > DIST_PIECE) { dist_fail("dist_gather_blocks", "a block over 1 GiB"); }
    dist_check(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)bytes, MPI_BYTE, MPI_COMM_WORLD), "MPI_Allgather");
#else
    (void)buf;
#endif
}

// the sum over ranks of x, in rank order, in double: a loss, a count (exact below 2^53), a
// gradient's squared norm summed over the shards
static inline double dist_sum_double(double x) {
    if (dist_ranks_ == 1) { return x; }
    double all[DIST_MAX_RANKS];
    all[dist_rank_] = x;
    dist_gather_blocks(all, sizeof(double));
    double sum = all[0];
    for (int k = 1; k < dist_ranks_; k++) { sum += all[k]; }
    return sum;
}

// Rank k's chunk of n floats, [k n / N, (k + 1) n / N): the part of a buffer it sums, and under
// ZeRO-1 the parameters whose AdamW moments it keeps
static inline void dist_chunk(size_t n, int k, size_t* start, size_t* len) {
    *start = n * k / dist_ranks_;
    *len = n * (k + 1) / dist_ranks_ - *start;
}

#ifdef USE_NCCL
// device memory x [n] in place: the sum over ranks (ncclAllReduce on the default stream; also
// with one rank, where it changes nothing and shows what the call costs)
static inline void dist_sum_device_floats(float* x, size_t n) {
    if (n == 0) { return; }
    dist_nccl_check(ncclAllReduce(x, x, n, ncclFloat, ncclSum, dist_comm_, 0), "ncclAllReduce");
}
// device memory x [n], n a multiple of the rank count: this rank's chunk becomes the sum over
// ranks of that chunk (ncclReduceScatter in place); the rest of x is left undefined
static inline void dist_reduce_scatter_device_floats(float* x, size_t n) {
    if (dist_ranks_ == 1 || n == 0) { return; }
    size_t start, len;
    dist_chunk(n, dist_rank_, &start, &len);
    dist_nccl_check(ncclReduceScatter(x, x + start, len, ncclFloat, ncclSum, dist_comm_, 0), "ncclReduceScatter");
}
// device memory x [n], n a multiple of the rank count: every chunk from its rank (ncclAllGather in place)
static inline void dist_allgather_device_floats(float* x, size_t n) {
    if (dist_ranks_ == 1 || n == 0) { return; }
    size_t start, len;
    dist_chunk(n, dist_rank_, &start, &len);
    dist_nccl_check(ncclAllGather(x + start, x, len, ncclFloat, dist_comm_, 0), "ncclAllGather");
}
#else
#ifdef USE_MPI
// the chunks of n floats as MPI's int counts and offsets
static inline void dist_counts(size_t n, int* counts, int* starts) {
    if (n > 2147483647u) { dist_fail("a sum over ranks", "a buffer of more than 2^31 - 1 floats"); }
    for (int k = 0; k < dist_ranks_; k++) {
        size_t start, len;
        dist_chunk(n, k, &start, &len);
        starts[k] = (int)start;
        counts[k] = (int)len;
    }
}
static int dist_counts_[4 * DIST_MAX_RANKS];
#endif

// host memory x [n]: this rank's chunk becomes the sum over ranks of that chunk, in rank order
// (each rank's chunk k goes to rank k by MPI_Alltoallv); the rest of x is left as it was
static inline void dist_reduce_scatter_floats(float* x, size_t n) {
#ifdef USE_MPI
    int N = dist_ranks_;
    if (N == 1 || n == 0) { return; }
    int *counts = dist_counts_, *starts = counts + N, *recv_counts = counts + 2 * N, *recv_starts = counts + 3 * N;
    dist_counts(n, counts, starts);
    int mine = counts[dist_rank_];
    static float* scratch = NULL; // N copies of this rank's chunk
    static size_t scratch_cap = 0;
    size_t need = (size_t)N * mine + 1;
    if (need > scratch_cap) {
        free(scratch);
        scratch = (float*)malloc(need * sizeof(float));
        if (!scratch) { dist_fail("a sum over ranks", "out of memory"); }
        scratch_cap = need;
    }
    for (int k = 0; k < N; k++) { recv_counts[k] = mine; recv_starts[k] = k * mine; }
    dist_check(MPI_Alltoallv(x, counts, starts, MPI_FLOAT, scratch, recv_counts, recv_starts, MPI_FLOAT, MPI_COMM_WORLD), "MPI_Alltoallv");
    float* sum = x + starts[dist_rank_];
    memcpy(sum, scratch, (size_t)mine * sizeof(float));
    for (int k = 1; k < N; k++) {
        const float* from = scratch + (size_t)k * mine;
        for (int i = 0; i < mine; i++) { sum[i] += from[i]; }
    }
#else
    (void)x;
    (void)n;
#endif
}

// host memory x [n]: every rank's chunk from that rank (MPI_Allgatherv in place)
static inline void dist_allgather_floats(float* x, size_t n) {
#ifdef USE_MPI
    int N = dist_ranks_;
    if (N == 1 || n == 0) { return; }
    int *counts = dist_counts_, *starts = counts + N;
    dist_counts(n, counts, starts);
    dist_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, counts, starts, MPI_FLOAT, MPI_COMM_WORLD), "MPI_Allgatherv");
#else
    (void)x;
    (void)n;
#endif
}

// host memory x [n] in place: the sum over ranks, element by element, in rank order; the same
// bits on every rank (the scheme: this file's comment)
static inline void dist_sum_floats(float* x, size_t n) {
    dist_reduce_scatter_floats(x, n);
    dist_allgather_floats(x, n);
}
#endif

#endif
