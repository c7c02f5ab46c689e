/*
What every fuzz target of dev/fuzz/ shares (dev/fuzz/README.md). Include it after the
project's headers; a target defines target_init (once, before the first input) and
LLVMFuzzerTestOneInput, which writes the input to a file with fuzz_write and hands the reader
to fuzz_read.

A reader refuses bad input through fail() (vlvc/utils.h), which ends in exit(1). The targets
are linked with -Wl,--wrap=exit (dev/fuzz/fuzz.mk), so that an exit called while a reader
runs jumps back into fuzz_read: a refusal is an ordinary outcome of an input, as acceptance
is, while a crash, a sanitizer report, a hang or a leak stays a finding.

An exiting program need not close its files nor free its memory; a refusal that returns
must, or a million refusals run out of file descriptors and memory. fuzz_read closes the
streams the reader left open (fopen, fdopen and gzopen are wrapped as well) and frees the
heap blocks it left allocated (seen through the sanitizer's malloc and free hooks). That is
also why leak detection stays on: after a refusal nothing is left, after an acceptance only
what the target's own free call (vocab_free, model_free, ...) does not free, a real leak.
The readers write no files, so fail()'s removal of unfinished atomic writes has nothing to do.
*/
#ifndef VLV_FUZZ_H
#define VLV_FUZZ_H

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <zlib.h>
#include <sanitizer/allocator_interface.h>
#include <sanitizer/common_interface_defs.h>
#include "vlvc/config.h"

// the originals of the wrapped functions (ld --wrap=NAME calls __wrap_NAME instead of NAME)
void __real_exit(int status) __attribute__((noreturn));
FILE* __real_fopen(const char* path, const char* mode);
FILE* __real_fdopen(int fd, const char* mode);
int __real_fclose(FILE* fp);
gzFile __real_gzopen(const char* path, const char* mode);
int __real_gzclose(gzFile gz);

static jmp_buf fuzz_refusal;
// 1 while a reader runs, its exit, streams and heap blocks ours; per thread, since libFuzzer's
// own threads (the -rss_limit_mb monitor) allocate and free meanwhile, and the block list
// must hold the reader's blocks only
static _Thread_local int fuzz_reading;

// the streams a running reader has open
#define FUZZ_MAX_STREAMS 16
typedef struct { void* handle; int is_gz; } FuzzStream;
static FuzzStream fuzz_streams[FUZZ_MAX_STREAMS];
static int fuzz_num_streams;

// the heap blocks a running reader holds (its own, and those of libc and zlib on its behalf)
#define FUZZ_MAX_BLOCKS (1 << 20)
static void* fuzz_blocks[FUZZ_MAX_BLOCKS];
static int fuzz_num_blocks, fuzz_blocks_used; // in use now, and the most in use since fuzz_read began

// a finding of the harness's own: said where the sanitizers report (libFuzzer's log, also
// when -close_fd_mask closed stderr), then abort, which libFuzzer records as a crash
static void fuzz_abort(const char* what) {
    char line[256];
    snprintf(line, sizeof line, "fuzz harness: %s", what);
    __sanitizer_report_error_summary(line);
    abort();
}

__attribute__((noreturn)) void __wrap_exit(int status) {
    if (!fuzz_reading) { __real_exit(status); } // libFuzzer's own exit, at the end of a run
    if (status != EXIT_FAILURE) { fuzz_abort("a reader exited with a status other than fail()'s"); }
    longjmp(fuzz_refusal, 1);
}

static void stream_opened(void* handle, int is_gz) {
    if (handle == NULL || !fuzz_reading) { return; }
    if (fuzz_num_streams == FUZZ_MAX_STREAMS) { fuzz_abort("a reader holds more than FUZZ_MAX_STREAMS streams"); }
    fuzz_streams[fuzz_num_streams++] = (FuzzStream){ handle, is_gz };
}
static void stream_closed(void* handle) {
    for (int i = 0; i < fuzz_num_streams; i++) {
        if (fuzz_streams[i].handle == handle) { fuzz_streams[i] = fuzz_streams[--fuzz_num_streams]; return; }
    }
}
FILE* __wrap_fopen(const char* path, const char* mode) { FILE* fp = __real_fopen(path, mode); stream_opened(fp, 0); return fp; }
FILE* __wrap_fdopen(int fd, const char* mode) { FILE* fp = __real_fdopen(fd, mode); stream_opened(fp, 0); return fp; }
int __wrap_fclose(FILE* fp) { stream_closed(fp); return __real_fclose(fp); }
gzFile __wrap_gzopen(const char* path, const char* mode) { gzFile gz = __real_gzopen(path, mode); stream_opened(gz, 1); return gz; }
int __wrap_gzclose(gzFile gz) { stream_closed(gz); return __real_gzclose(gz); }

// the sanitizer calls these on every malloc and free; they must not allocate
static void block_allocated(const volatile void* p, size_t size) {
    (void)size;
    if (!fuzz_reading) { return; }
    if (fuzz_num_blocks == FUZZ_MAX_BLOCKS) { fuzz_abort("a reader holds more than FUZZ_MAX_BLOCKS heap blocks"); }
    fuzz_blocks[fuzz_num_blocks++] = (void*)p;
    if (fuzz_num_blocks > fuzz_blocks_used) { fuzz_blocks_used = fuzz_num_blocks; }
}
static void block_freed(const volatile void* p) {
    if (!fuzz_reading) { return; }
    for (int i = fuzz_num_blocks - 1; i >= 0; i--) { // the latest first: most blocks live briefly
        if (fuzz_blocks[i] == p) { fuzz_blocks[i] = fuzz_blocks[--fuzz_num_blocks]; return; }
    }
}

// after a refusal: close the streams first (still tracking, so the buffers they free drop out
// of the list), then free what is left
static void fuzz_clean_up(void) {
    while (fuzz_num_streams > 0) {
        FuzzStream s = fuzz_streams[fuzz_num_streams - 1];
        if (s.is_gz) { __wrap_gzclose((gzFile)s.handle); } else { __wrap_fclose((FILE*)s.handle); }
    }
    fuzz_reading = 0;
    for (int i = 0; i < fuzz_num_blocks; i++) { free(fuzz_blocks[i]); }
}

// LeakSanitizer counts a block as reachable while any global holds its address: the lists must
// not hide a leak of the next accepted input
static void fuzz_forget(void) {
    memset(fuzz_blocks, 0, (size_t)fuzz_blocks_used * sizeof fuzz_blocks[0]);
    memset(fuzz_streams, 0, sizeof fuzz_streams);
    fuzz_num_blocks = fuzz_blocks_used = fuzz_num_streams = 0;
}

// runs reader(arg); returns 1 if it returned (the input was accepted), 0 if it refused it
static int fuzz_read(void (*reader)(void* arg), void* arg) {
    if (setjmp(fuzz_refusal)) {
        fuzz_clean_up();
        fuzz_forget();
        return 0;
    }
    fuzz_reading = 1;
    reader(arg);
    fuzz_reading = 0;
    // glibc keeps every open FILE on a list, so LeakSanitizer would never see a stream left open
    if (fuzz_num_streams > 0) { fuzz_abort("a reader accepted its input and left a file open"); }
    fuzz_forget();
    return 1;
}

// a folder of this process for the files the readers are given, in $TMPDIR (run_target.sh:
// build/fuzz/tmp) or /tmp, removed at exit; a crash leaves it for the inquiry
static char fuzz_dir[256];

static void fuzz_path(char* out, size_t cap, const char* name) {
    if (snprintf(out, cap, "%s/%s", fuzz_dir, name) >= (int)cap) { fuzz_abort("path too long"); }
}

// a new file each time: ext4 flushes a file truncated and written again when it is closed (its
// auto_da_alloc), which made the targets 200 times slower
static void fuzz_write(const char* path, const uint8_t* data, size_t size) {
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size || close(fd) != 0) { perror(path); fuzz_abort("cannot write the input"); }
}

// Checkpoints, training states and pretrained parts end in a CRC32 of their other bytes
// (vlvc/config.h), which the readers check before any field and which a mutated input almost
// never keeps right: their targets hand the reader a copy of the input whose last 4 bytes are
// set to that CRC32, so that the fuzzer reaches the checks behind it. The caller frees the copy.
static uint8_t* fuzz_with_crc(const uint8_t* data, size_t size) {
    uint8_t* copy = (uint8_t*)malloc(size ? size : 1);
    if (copy == NULL) { fuzz_abort("out of memory for a copy of the input"); }
    memcpy(copy, data, size);
    if (size >= CRC_BYTES) {
        uint32_t crc = (uint32_t)crc32(0L, copy, (uInt)(size - CRC_BYTES));
        for (int i = 0; i < CRC_BYTES; i++) { copy[size - CRC_BYTES + i] = (uint8_t)(crc >> 8 * i); }
    }
    return copy;
}

static void remove_tree(const char* dir) {
    DIR* dp = opendir(dir);
    if (dp == NULL) { return; }
    for (struct dirent* e; (e = readdir(dp)) != NULL; ) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) { continue; }
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_type == DT_DIR) { remove_tree(path); } else { unlink(path); }
    }
    closedir(dp);
    rmdir(dir);
}
static void fuzz_remove_dir(void) { remove_tree(fuzz_dir); }

static void target_init(void); // each target's own set-up, in fuzz_dir

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc; (void)argv;
    if (!__sanitizer_install_malloc_and_free_hooks(block_allocated, block_freed)) { fuzz_abort("no malloc hooks: build with -fsanitize=address"); }
    const char* tmp = getenv("TMPDIR");
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/vlv_fuzz.XXXXXX", tmp && *tmp && strlen(tmp) < 200 ? tmp : "/tmp");
    if (mkdtemp(fuzz_dir) == NULL) { perror(fuzz_dir); fuzz_abort("cannot make a temporary folder"); }
    atexit(fuzz_remove_dir);
    target_init();
    return 0;
}

#endif
