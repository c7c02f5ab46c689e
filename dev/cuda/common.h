/*
dev/cuda/common.h — what every CUDA lab shares: checked CUDA calls, grid arithmetic, the labs'
random numbers (xorshift64, the same data on every run) and uploads of host vectors. Each lab
holds its own kernels, references and timing; this is only the harness around them.
*/
#ifndef DEV_CUDA_COMMON_H
#define DEV_CUDA_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <algorithm>
#include <vector>
#include <cuda_runtime.h>

static void cuda_check(cudaError_t err, const char* what, const char* file, int line) {
    if (err != cudaSuccess) {
        fprintf(stderr, "CUDA error \"%s\" in %s [%s:%d]\n", cudaGetErrorString(err), what, file, line);
        exit(1);
    }
}
#define cudaCheck(call) cuda_check((call), #call, __FILE__, __LINE__)
#define cudaCheckLaunch() cuda_check(cudaGetLastError(), "a kernel launch", __FILE__, __LINE__)
static unsigned int ceil_div(long a, long b) { return (unsigned int)((a + b - 1) / b); }

// xorshift64: 32 random bits, and a float in [-1, 1) from the top 24 of them
static unsigned long long rng_state = 88172645463325252ull;
static unsigned int rnd(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (unsigned int)(rng_state >> 32);
}
static float uniform(void) { return (float)((rnd() >> 8) / 8388608.0 - 1.0); }

// a device copy of h (at least one element, so that an empty vector still gets a valid pointer)
template <class T>
static T* upload(const std::vector<T>& h) {
    T* d;
    cudaCheck(cudaMalloc((void**)&d, (h.size() ? h.size() : 1) * sizeof(T)));
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

#endif
