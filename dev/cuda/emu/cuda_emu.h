/*
cuda_emu.h — runs CUDA C++ kernels on the CPU, for checking kernels where no GPU is at hand.

A functional emulator, not a simulator of a GPU: it checks what a kernel computes, not how
fast. dev/cuda/emu/translate.py rewrites each launch `kernel<<<grid, block>>>(args)` into
`emu_launch_named("kernel", emu::cfg(grid, block), kernel)(args)`; this header (included through the
cuda_runtime.h beside it) supplies the rest: the built-in variables, __syncthreads,
__syncwarp, __shfl_xor_sync, and the runtime calls the project uses (cudaMalloc as malloc,
cudaMemcpy as memcpy, ...).

How a launch runs: the blocks one after another; inside a block every thread is a coroutine
(ucontext) that runs until it reaches a barrier or returns. A barrier releases its threads
when every thread that must take part has arrived, so __syncthreads and the warp
primitives have their real semantics, and __shared__ (defined as `static`) is shared by the
block's threads. What it finds:
  * a barrier that can never be released (divergent __syncthreads, a shuffle or __syncwarp
    while lanes of the warp have exited): reported with the kernel's name, then exit(1);
  * reads of memory nothing wrote: cudaMalloc fills new memory with 0xFF bytes (NaN floats,
    -1 ints), so they show up as NaNs in the results;
  * out-of-bounds accesses, when built with -fsanitize=address (device memory is malloc'd);
  * races on shared memory between barriers, partly: EMU_REVERSE=1 runs the threads (and the
    blocks) in the opposite order, so that a missing barrier that the forward order hides
    (a reader that happens to run after its writer) changes the result.
It does not model the memory consistency of a real GPU, warps running in lockstep, timing, or
races between blocks through global memory (blocks run one at a time here): those need the
GPU (compute-sanitizer's racecheck, and the determinism checks of test_vlv.cu).
*/
#ifndef CUDA_EMU_H
#define CUDA_EMU_H

#include <ucontext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdint.h>
#include <float.h>
#include <time.h>
#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 { unsigned int x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
using std::max;
using std::min;

namespace emu {

// Switching between coroutines: glibc's swapcontext makes a system call (the signal mask)
// at every switch, which dominates the run time; on x86-64 a few lines of assembly switch
// stacks without one. ucontext stays the portable path, and the one AddressSanitizer knows.
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(EMU_UCONTEXT)
#define EMU_FAST_SWITCH 1
// emu_switch(save, to): push the callee-saved registers, store the stack pointer in *save,
// continue on the stack `to` (popping what its own emu_switch pushed, or a fresh frame)
extern "C" void emu_switch(void** save, void* to);
asm(".text\n"
    ".globl emu_switch\n"
    ".type emu_switch, @function\n"
    "emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size emu_switch, .-emu_switch\n");
#endif

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };
struct Thread {
#ifdef EMU_FAST_SWITCH
    void* sp;
#else
    ucontext_t ctx;
#endif
    uint3 tid;
    int state;
};
inline Thread* cur = nullptr;
inline uint3 block_idx;
inline dim3 block_dim, grid_dim;
#ifdef EMU_FAST_SWITCH
inline void* scheduler_sp = nullptr;
#else
inline ucontext_t scheduler;
#endif
inline std::vector<Thread> threads;
inline std::vector<char*> stacks;
inline std::vector<uint64_t> exchange; // one slot per thread, for the shuffles
inline void (*body)(void*) = nullptr;  // the launch being run
inline void* body_arg = nullptr;
inline const char* kernel_name = "?";
inline int last_error = 0;
constexpr size_t STACK = 256 * 1024;

inline void die(const char* what) {
    fprintf(stderr, "cuda_emu: %s, in kernel %s, block (%u, %u, %u)\n", what, kernel_name, block_idx.x, block_idx.y, block_idx.z);
    exit(1);
}
inline bool reverse_order() {
    static int r = -1;
    if (r < 0) { const char* e = getenv("EMU_REVERSE"); r = e && e[0] == '1'; }
    return r == 1;
}
#ifdef EMU_FAST_SWITCH
inline void entry() {
    body(body_arg);
    cur->state = DONE;
    emu_switch(&cur->sp, scheduler_sp); // never resumed
    __builtin_unreachable();
}
inline void wait_at(int state) {
    cur->state = state;
    emu_switch(&cur->sp, scheduler_sp);
}
inline void start_thread(Thread& t, char* stack) {
    // a fresh frame that emu_switch "returns" into: six zero registers, then entry's address;
    // entry then starts with the stack aligned as after a call
    uintptr_t top = ((uintptr_t)stack + STACK) & ~(uintptr_t)15;
    void** sp = (void**)(top - 64);
    for (int k = 0; k < 6; k++) { sp[k] = nullptr; }
    sp[6] = (void*)&entry;
    sp[7] = nullptr;
    t.sp = sp;
}
inline void resume(Thread& t) { emu_switch(&scheduler_sp, t.sp); }
#else
inline void entry() {
    body(body_arg);
    cur->state = DONE; // returning resumes the scheduler (uc_link)
}
inline void wait_at(int state) {
    cur->state = state;
    swapcontext(&cur->ctx, &scheduler);
}
inline void start_thread(Thread& t, char* stack) {
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = stack;
    t.ctx.uc_stack.ss_size = STACK;
    t.ctx.uc_link = &scheduler;
    makecontext(&t.ctx, (void (*)())entry, 0);
}
inline void resume(Thread& t) { swapcontext(&scheduler, &t.ctx); }
#endif

// runs one block to completion, releasing barriers as they fill
inline void run_block() {
    int n = (int)(block_dim.x * block_dim.y * block_dim.z);
    if ((int)threads.size() < n) { threads.resize(n); }
    while ((int)stacks.size() < n) { stacks.push_back((char*)malloc(STACK)); }
    if ((int)exchange.size() < n) { exchange.resize(n); }
    for (int i = 0; i < n; i++) {
        Thread& t = threads[i];
        t.tid = { i % block_dim.x, (i / block_dim.x) % block_dim.y, i / (block_dim.x * block_dim.y) };
        t.state = RUNNABLE;
        start_thread(t, stacks[i]);
    }
    int warps = (n + 31) / 32;
    for (;;) {
        for (int k = 0; k < n; k++) {
            int i = reverse_order() ? n - 1 - k : k;
            if (threads[i].state != RUNNABLE) continue;
            cur = &threads[i];
            resume(threads[i]);
        }
        cur = nullptr;
        int done = 0, at_block = 0;
        for (int i = 0; i < n; i++) { done += threads[i].state == DONE; at_block += threads[i].state == AT_BLOCK_BARRIER; }
        if (done == n) return;
        // warp barriers first: a warp whose live lanes all wait at one is released
        bool released = false;
        for (int w = 0; w < warps; w++) {
            int lo = w * 32, hi = std::min(n, lo + 32), waiting = 0, live = 0, exited = 0;
            for (int i = lo; i < hi; i++) {
                waiting += threads[i].state == AT_WARP_BARRIER;
                live += threads[i].state != DONE;
                exited += threads[i].state == DONE;
            }
            if (waiting == 0) continue;
            if (waiting != live) die("lanes of a warp wait at different barriers (__syncwarp / shuffle vs __syncthreads)");
            if (exited) die("a full-warp __syncwarp or shuffle while lanes of the warp have exited");
            if (hi - lo != 32) die("a full-warp __syncwarp or shuffle in a partial warp");
            for (int i = lo; i < hi; i++) { threads[i].state = RUNNABLE; }
            released = true;
        }
        if (released) continue;
        if (at_block + done != n) die("deadlock");
        if (done) die("__syncthreads reached while some threads of the block have exited");
        for (int i = 0; i < n; i++) { threads[i].state = RUNNABLE; }
    }
}

struct LaunchConfig { dim3 grid, block; };
inline LaunchConfig cfg(dim3 grid, dim3 block, size_t shared_bytes = 0, void* stream = nullptr) {
    if (shared_bytes) die("dynamic shared memory is not emulated");
    (void)stream;
    return { grid, block };
}

template <class Tuple, class K>
struct Call {
    K kernel;
    Tuple args;
    static void run(void* self) { Call* c = (Call*)self; std::apply(c->kernel, c->args); }
};

} // namespace emu

#define threadIdx (emu::cur->tid)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() { emu::wait_at(emu::AT_BLOCK_BARRIER); }
inline void __syncwarp(unsigned int mask = 0xffffffffu) {
    if (mask != 0xffffffffu) emu::die("only full-warp __syncwarp is emulated");
    emu::wait_at(emu::AT_WARP_BARRIER);
}
template <class T>
inline T __shfl_xor_sync(unsigned int mask, T v, int lane_mask) {
    static_assert(sizeof(T) <= 8, "shuffle of a type larger than 8 bytes");
    if (mask != 0xffffffffu) emu::die("only full-warp shuffles are emulated");
    int i = (int)(emu::cur - emu::threads.data());
    int partner = (i & ~31) | ((i & 31) ^ (lane_mask & 31));
    memcpy(&emu::exchange[i], &v, sizeof(T));
    __syncwarp();
    T r;
    memcpy(&r, &emu::exchange[partner], sizeof(T));
    __syncwarp(); // nobody overwrites its slot before every lane has read
    return r;
}

// emu_launch_named("k", cfg, k)(args...): the call operator has the kernel's own parameter
// types, so the arguments convert exactly as in a launch (NULL to a pointer, size_t to int)
template <class... P>
struct Launch {
    const char* name;
    emu::LaunchConfig c;
    void (*kernel)(P...);
    void operator()(P... args) const {
        dim3 g = c.grid, b = c.block;
        unsigned long long threads = (unsigned long long)b.x * b.y * b.z;
        if (g.x == 0 || g.y == 0 || g.z == 0 || threads == 0 || threads > 1024 || b.z > 64 || g.x > 0x7fffffffu ||
            g.y > 65535 || g.z > 65535) {
            emu::last_error = 9; // cudaErrorInvalidConfiguration
            return;
        }
        using Tuple = std::tuple<P...>;
        emu::Call<Tuple, void (*)(P...)> call{ kernel, Tuple(args...) };
        emu::body = &emu::Call<Tuple, void (*)(P...)>::run;
        emu::body_arg = &call;
        emu::kernel_name = name;
        emu::grid_dim = g;
        emu::block_dim = b;
        unsigned long long blocks = (unsigned long long)g.x * g.y * g.z;
        for (unsigned long long k = 0; k < blocks; k++) {
            unsigned long long id = emu::reverse_order() ? blocks - 1 - k : k;
            emu::block_idx = { (unsigned)(id % g.x), (unsigned)((id / g.x) % g.y), (unsigned)(id / ((unsigned long long)g.x * g.y)) };
            emu::run_block();
        }
    }
};
template <class... P>
Launch<P...> emu_launch_named(const char* name, emu::LaunchConfig c, void (*kernel)(P...)) { return { name, c, kernel }; }

// ---- the runtime API, as far as this project uses it ----
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2, cudaErrorInvalidConfiguration = 9 };
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
struct cudaDeviceProp { char name[256]; int multiProcessorCount; size_t totalGlobalMem; int major, minor; size_t l2CacheSize; };
inline const char* cudaGetErrorString(cudaError_t e) {
    return e == 0 ? "no error" : e == 2 ? "out of memory" : e == 9 ? "invalid configuration argument" : "error";
}
inline const char* cudaGetErrorName(cudaError_t e) {
    return e == 0 ? "cudaSuccess" : e == 2 ? "cudaErrorMemoryAllocation" : e == 9 ? "cudaErrorInvalidConfiguration" : "cudaError";
}
inline cudaError_t cudaGetLastError() { cudaError_t e = emu::last_error; emu::last_error = 0; return e; }
inline cudaError_t cudaPeekAtLastError() { return emu::last_error; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return cudaErrorMemoryAllocation;
    memset(*p, 0xFF, bytes); // poison: NaN floats, -1 ints
    return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) { free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) { if (bytes) memmove(dst, src, bytes); return cudaSuccess; }
inline cudaError_t cudaMemset(void* p, int v, size_t bytes) { if (bytes) memset(p, v, bytes); return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "CPU emulator (cuda_emu.h)");
    prop->multiProcessorCount = 1;
    prop->totalGlobalMem = (size_t)1 << 34;
    prop->major = 9;
    return cudaSuccess;
}
typedef struct { double t; }* cudaEvent_t;
inline double emu_now() { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }
inline cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = (cudaEvent_t)calloc(1, sizeof **e); return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { free(e); return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t e, void* stream = nullptr) { (void)stream; e->t = emu_now(); return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) { *ms = (float)((b->t - a->t) * 1e3); return cudaSuccess; }

#endif
