/*
Small checking wrappers shared by the CPU and CUDA programs: every failure prints what went
wrong, where, and what to do, then exits non-zero. Nothing here ever returns an error code
the caller could forget to check.
*/
#ifndef VLVC_UTILS_H
#define VLVC_UTILS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <stdarg.h>
#include <errno.h>

// print a message like printf, then exit(1)
static inline void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(EXIT_FAILURE);
}

static inline FILE* fopen_check(const char* path, const char* mode, const char* file, int line) {
    FILE* fp = fopen(path, mode);
    if (fp == NULL) {
        fail("could not open '%s' (mode %s): %s [%s:%d]\n"
             "  check that the path is right and that you may %s it",
             path, mode, strerror(errno), file, line, mode[0] == 'r' ? "read" : "write");
    }
    return fp;
}
#define fopenCheck(path, mode) fopen_check(path, mode, __FILE__, __LINE__)

// fread that names the file and says "truncated" when the file ends early
static inline void fread_check(void* ptr, size_t size, size_t nmemb, FILE* fp, const char* path,
                        const char* file, int line) {
    size_t got = fread(ptr, size, nmemb, fp);
    if (got != nmemb) {
        if (feof(fp)) {
            fail("'%s' is truncated: wanted %zu items of %zu bytes, got %zu [%s:%d]\n"
                 "  the file was cut short; write it again", path, nmemb, size, got, file, line);
        }
        fail("reading '%s' failed: %s [%s:%d]", path, strerror(errno), file, line);
    }
}
#define freadCheck(ptr, size, nmemb, fp, path) fread_check(ptr, size, nmemb, fp, path, __FILE__, __LINE__)

static inline void fwrite_check(const void* ptr, size_t size, size_t nmemb, FILE* fp, const char* path,
                         const char* file, int line) {
    if (fwrite(ptr, size, nmemb, fp) != nmemb) {
        fail("writing '%s' failed: %s [%s:%d]\n  is the disk full?", path, strerror(errno), file, line);
    }
}
#define fwriteCheck(ptr, size, nmemb, fp, path) fwrite_check(ptr, size, nmemb, fp, path, __FILE__, __LINE__)

static inline void fclose_check(FILE* fp, const char* path, const char* file, int line) {
    if (fclose(fp) != 0) {
        fail("closing '%s' failed: %s [%s:%d]\n  the data may not be on disk; is the disk full?",
             path, strerror(errno), file, line);
    }
}
#define fcloseCheck(fp, path) fclose_check(fp, path, __FILE__, __LINE__)

static inline void* malloc_check(size_t size, const char* file, int line) {
    void* p = malloc(size == 0 ? 1 : size);
    if (p == NULL) {
        fail("out of memory: could not allocate %.1f MiB [%s:%d]\n"
             "  use a smaller batch or model", size / (1024.0 * 1024.0), file, line);
    }
    return p;
}
#define mallocCheck(size) malloc_check(size, __FILE__, __LINE__)

static inline void* calloc_check(size_t nmemb, size_t size, const char* file, int line) {
    void* p = calloc(nmemb == 0 ? 1 : nmemb, size == 0 ? 1 : size);
    if (p == NULL) {
        fail("out of memory: could not allocate %.1f MiB [%s:%d]\n"
             "  use a smaller batch or model", nmemb * (double)size / (1024.0 * 1024.0), file, line);
    }
    return p;
}
#define callocCheck(nmemb, size) calloc_check(nmemb, size, __FILE__, __LINE__)

// size of an open file in bytes (the stream is left at its start)
static inline long file_size(FILE* fp, const char* path) {
    if (fseek(fp, 0, SEEK_END) != 0) { fail("cannot seek in '%s': %s", path, strerror(errno)); }
    long size = ftell(fp);
    if (size < 0 || fseek(fp, 0, SEEK_SET) != 0) { fail("cannot seek in '%s': %s", path, strerror(errno)); }
    return size;
}

// isfinite() that survives -Ofast/-ffinite-math-only (which lets the compiler assume it is
// always true): look at the exponent bits directly
static inline int is_finite_float(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return ((bits >> 23) & 0xFF) != 0xFF;
}

#endif
