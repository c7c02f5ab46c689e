/*
Reader of the debug-state file that dev/vlv.py writes (doc/formats.md): a header, then named
records (batch, activations, losses, gradients, optimizer-step losses, sampling results)
until a record named "end". Shared by test_vlv.c and test_vlv.cu.
*/
#ifndef VLVC_DEBUG_STATE_H
#define VLVC_DEBUG_STATE_H

#include "../../vlvc/config.h"

enum { DTYPE_F32 = 0, DTYPE_I32 = 1 };

typedef struct {
    char* name;
    int dtype, ndim, dims[8];
    size_t numel;
    void* data;  // float* or int*
} Record;

typedef struct {
    const char* path;
    Config config;
    Record* records;
    int count;
} DebugState;

static inline void debug_state_load(DebugState* ds, const char* path) {
    FILE* fp = fopenCheck(path, "rb");
    long size = file_size(fp, path);
    ds->path = path;
    header_read(fp, path, &DEBUG_STATE_FORMAT, &ds->config);
    ds->records = NULL;
    ds->count = 0;
    int capacity = 0, ended = 0;
    while (!ended) {
        int name_len;
        freadCheck(&name_len, sizeof(int), 1, fp, path);
        if (name_len <= 0 || name_len > 256) fail("'%s': corrupt record header (name length %d)", path, name_len);
        if (ds->count == capacity) {
            capacity = capacity ? 2 * capacity : 64;
            ds->records = (Record*)realloc(ds->records, capacity * sizeof(Record));
            if (!ds->records) fail("out of memory reading '%s'", path);
        }
        Record* r = &ds->records[ds->count++];
        r->name = (char*)mallocCheck(name_len + 1);
        freadCheck(r->name, 1, name_len, fp, path);
        r->name[name_len] = '\0';
        freadCheck(&r->dtype, sizeof(int), 1, fp, path);
        freadCheck(&r->ndim, sizeof(int), 1, fp, path);
        if ((r->dtype != DTYPE_F32 && r->dtype != DTYPE_I32) || r->ndim < 0 || r->ndim > 8) {
            fail("'%s': record '%s' has a bad dtype %d or ndim %d", path, r->name, r->dtype, r->ndim);
        }
        freadCheck(r->dims, sizeof(int), r->ndim, fp, path);
        r->numel = 1;
        for (int i = 0; i < r->ndim; i++) {
            if (r->dims[i] < 0) fail("'%s': record '%s' has a negative dimension", path, r->name);
            r->numel *= r->dims[i];
        }
        long left = size - ftell(fp);
        if ((long)(r->numel * 4) > left) fail("'%s' is truncated inside record '%s'", path, r->name);
        r->data = mallocCheck(r->numel * 4);
        freadCheck(r->data, 4, r->numel, fp, path);
        ended = strcmp(r->name, "end") == 0;
    }
    if (ftell(fp) != size) fail("'%s' has trailing data after its 'end' record", path);
    fclose(fp);
}

static inline void debug_state_free(DebugState* ds) {
    for (int i = 0; i < ds->count; i++) { free(ds->records[i].name); free(ds->records[i].data); }
    free(ds->records);
}

// the record called name, or NULL
static inline const Record* debug_state_find(const DebugState* ds, const char* name) {
    for (int i = 0; i < ds->count; i++) {
        if (strcmp(ds->records[i].name, name) == 0) return &ds->records[i];
    }
    return NULL;
}

// the record called name, which must exist with this dtype and element count (0: any)
static inline const Record* debug_state_get(const DebugState* ds, const char* name, int dtype, size_t numel) {
    const Record* r = debug_state_find(ds, name);
    if (!r) fail("'%s' has no record '%s'; regenerate it with dev/vlv.py", ds->path, name);
    if (r->dtype != dtype) fail("'%s': record '%s' has dtype %d, expected %d", ds->path, name, r->dtype, dtype);
    if (numel && r->numel != numel) fail("'%s': record '%s' has %zu elements, expected %zu", ds->path, name, r->numel, numel);
    return r;
}
static inline const float* debug_state_floats(const DebugState* ds, const char* name, size_t numel) {
    return (const float*)debug_state_get(ds, name, DTYPE_F32, numel)->data;
}
static inline const int* debug_state_ints(const DebugState* ds, const char* name, size_t numel) {
    return (const int*)debug_state_get(ds, name, DTYPE_I32, numel)->data;
}

#endif
