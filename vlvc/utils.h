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
#include <unistd.h>
#include <time.h>
#include <fcntl.h>
#include <sys/stat.h>

// Files being written atomically (atomic_open .. atomic_commit, below): fail() removes their
// temporary files, so that an error such as a full disk leaves no partial file behind.
#define ATOMIC_MAX_OPEN 4
typedef struct { FILE* fp; char tmp[4096]; } AtomicFile;
static AtomicFile atomic_files[ATOMIC_MAX_OPEN];

// print a message like printf, remove the temporary files of unfinished writes, then exit(1)
static inline void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    for (int i = 0; i < ATOMIC_MAX_OPEN; i++) {
        if (atomic_files[i].fp) { fclose(atomic_files[i].fp); remove(atomic_files[i].tmp); atomic_files[i].fp = NULL; }
    }
    exit(EXIT_FAILURE);
}

// seconds on a monotonic clock, for timing
static inline double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Every reader opens its file here. The file is opened without blocking, so that a FIFO is
// refused at once instead of waiting forever for a writer, and checked on the open descriptor
// (no race with a rename): only a regular file of at most max_bytes (the format's own bound) is
// read, so that neither a device (/dev/zero feeds a reader forever) nor a directory nor a socket
// is. Returns NULL with the reason in err; errno stays ENOENT when the file does not exist.
// what a file is when it is not a regular one ("a FIFO", ...); NULL when it is one
static inline const char* mode_not_regular(mode_t mode) {
    if (S_ISREG(mode)) { return NULL; }
    if (S_ISFIFO(mode)) { return "a FIFO"; }
    if (S_ISCHR(mode)) { return "a character device"; }
    if (S_ISBLK(mode)) { return "a block device"; }
    if (S_ISDIR(mode)) { return "a directory"; }
    if (S_ISSOCK(mode)) { return "a socket"; }
    return "neither a file nor a folder";
}
static inline const char* not_regular(int fd, struct stat* st) {
    return fstat(fd, st) != 0 ? "a file whose type cannot be read" : mode_not_regular(st->st_mode);
}

// the descriptor back to blocking I/O (the files are regular: O_NONBLOCK served the open only)
static inline FILE* blocking_stream(int fd, const char* mode) {
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 ? NULL : fdopen(fd, mode);
}

static inline FILE* regular_open(const char* path, uint64_t max_bytes, char* err, size_t err_size) {
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        snprintf(err, err_size, "could not open '%s': %s", path, strerror(e));
        errno = e;
        return NULL;
    }
    struct stat st;
    const char* kind = not_regular(fd, &st);
    if (kind) {
        close(fd);
        snprintf(err, err_size, "'%s' is %s, not a regular file: give the path of a file", path, kind);
        errno = EINVAL;
        return NULL;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        snprintf(err, err_size, "'%s' has %lld bytes, more than the %llu that a file of its kind can hold", path,
                 (long long)st.st_size, (unsigned long long)max_bytes);
        errno = EFBIG;
        return NULL;
    }
    FILE* fp = blocking_stream(fd, "rb");
    if (fp == NULL) {
        int e = errno;
        close(fd);
        snprintf(err, err_size, "could not open '%s': %s", path, strerror(e));
        errno = e;
    }
    return fp;
}
static inline FILE* read_open_check(const char* path, uint64_t max_bytes, const char* file, int line) {
    char err[4400];
    FILE* fp = regular_open(path, max_bytes, err, sizeof err);
    if (fp == NULL) { fail("%s [%s:%d]\n  check that the path is right and that you may read it", err, file, line); }
    return fp;
}
#define readOpenCheck(path, max_bytes) read_open_check(path, max_bytes, __FILE__, __LINE__)

// A log of the run folder, opened to append (and created): a FIFO or device in its place is
// refused, where fopen would wait for a reader or write to the device.
static inline FILE* append_open_check(const char* path, const char* file, int line) {
    struct stat st;
    const char* kind = stat(path, &st) == 0 ? mode_not_regular(st.st_mode) : NULL; // a FIFO without a reader fails open
    if (kind) { fail("'%s' is %s, not a regular file: remove it, or choose another --out [%s:%d]", path, kind, file, line); }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK, 0644);
    if (fd < 0) fail("could not open '%s' to append to it: %s [%s:%d]\n  may this user write there?", path, strerror(errno), file, line);
    kind = not_regular(fd, &st); // and what was opened, should it have been replaced meanwhile
    if (kind) { close(fd); fail("'%s' is %s, not a regular file: remove it, or choose another --out [%s:%d]", path, kind, file, line); }
    FILE* fp = blocking_stream(fd, "a");
    if (fp == NULL) { close(fd); fail("could not open '%s': %s [%s:%d]", path, strerror(errno), file, line); }
    return fp;
}
#define appendOpenCheck(path) append_open_check(path, __FILE__, __LINE__)

#define THREADS_MAX 1024 // OpenMP threads that either program accepts (libgomp's own limit fails less clearly)

// A whole number given on the command line: decimal digits only (no sign, space or suffix, which
// strtoul would let through) and within [lo, hi]; anything else is refused with the flag's name.
static inline unsigned long long parse_whole(const char* flag, const char* v, unsigned long long lo, unsigned long long hi) {
    int digits = *v != '\0';
    for (const char* p = v; *p; p++) { digits &= *p >= '0' && *p <= '9'; }
    errno = 0;
    unsigned long long x = digits ? strtoull(v, NULL, 10) : 0;
    if (!digits || errno || x < lo || x > hi) fail("%s: '%s' is not a whole number in [%llu, %llu]", flag, v, lo, hi);
    return x;
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

// Atomic writes: the data goes to PATH.tmp, which atomic_commit flushes to the disk (fsync)
// and renames to PATH. A reader, a crash or a power loss sees the old file or the new one,
// never half of one; an error on the way (fail) removes PATH.tmp. The file is open for reading
// too, so that a writer can read back what it wrote (crc_append in vlvc/config.h).
static inline FILE* atomic_open(const char* path) {
    int slot = 0;
    while (slot < ATOMIC_MAX_OPEN && atomic_files[slot].fp) { slot++; }
    if (slot == ATOMIC_MAX_OPEN) fail("atomic_open('%s'): more than %d files written at once", path, ATOMIC_MAX_OPEN);
    AtomicFile* a = &atomic_files[slot];
    if (snprintf(a->tmp, sizeof a->tmp, "%s.tmp", path) >= (int)sizeof a->tmp) fail("the path '%s' is too long", path);
    FILE* fp = fopen(a->tmp, "w+b");
    if (fp == NULL) fail("could not open '%s' (mode w+b): %s\n  does the folder exist, and may this user write there?", a->tmp, strerror(errno));
    a->fp = fp;
    return fp;
}
static inline void atomic_commit(FILE* fp, const char* path) {
    int slot = 0;
    while (slot < ATOMIC_MAX_OPEN && atomic_files[slot].fp != fp) { slot++; }
    if (slot == ATOMIC_MAX_OPEN) fail("atomic_commit('%s'): not a file of atomic_open", path);
    AtomicFile* a = &atomic_files[slot];
    if (fflush(fp) != 0 || ferror(fp) || fsync(fileno(fp)) != 0) {
        fail("writing '%s' failed: %s\n  is the disk full? The previous '%s' is kept", a->tmp, strerror(errno), path);
    }
    a->fp = NULL;
    if (fclose(fp) != 0) { remove(a->tmp); fail("closing '%s' failed: %s\n  is the disk full? The previous '%s' is kept", a->tmp, strerror(errno), path); }
    if (rename(a->tmp, path) != 0) { remove(a->tmp); fail("could not rename '%s' to '%s': %s", a->tmp, path, strerror(errno)); }
}

static inline void* malloc_check(size_t size, const char* file, int line) {
    void* p = malloc(size == 0 ? 1 : size);
    if (p == NULL) {
        fail("out of memory: could not allocate %.1f MiB [%s:%d]\n"
             "  use a smaller batch or model", size / (1024.0 * 1024.0), file, line);
    }
    return p;
}
#define mallocCheck(size) malloc_check(size, __FILE__, __LINE__)

static inline void* realloc_check(void* ptr, size_t size, const char* file, int line) {
    void* p = realloc(ptr, size);
    if (!p) { fail("out of memory: %zu bytes (%s:%d); use a smaller batch or model", size, file, line); }
    return p;
}
#define reallocCheck(ptr, size) realloc_check(ptr, size, __FILE__, __LINE__)

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
