/*
The model's configuration, the 256-byte header every vlv.c file starts with (doc/formats.md):
64 int32 = magic, version, the config fields, num_params, zeros; and the CRC32 trailer that
ends checkpoints, pretrained parts and training states.
*/
#ifndef VLVC_CONFIG_H
#define VLVC_CONFIG_H

#include <zlib.h>
#include "utils.h"

#define CHECKPOINT_MAGIC 20261126
#define CHECKPOINT_VERSION 2
#define DEBUG_STATE_MAGIC 20261127
#define DEBUG_STATE_VERSION 1
#define HEADER_INTS 64
#define CRC_BYTES 4

// special tokens of the word-level vocabulary (doc/model.md "Tokens")
enum { TOKEN_PAD = 0, TOKEN_BOS = 1, TOKEN_EOS = 2, TOKEN_UNK = 3, TOKEN_FIRST_WORD = 4 };
enum { PREDICT_EPS = 0, PREDICT_V = 1 };
// parameter groups: what an objective trains is a set of these (checkpoint order)
enum { GROUP_VIT, GROUP_ADAPTER, GROUP_TEXTENC, GROUP_DIT, GROUP_PREFIX, GROUP_GPT, NUM_GROUPS };

typedef struct {
    int img_size;    // H = W of the RGB images
    int patch;       // P: patches are P x P x 3
    int n_q;         // the text encoder's sequence length (the decoder's context rows)
    int vocab;       // V: word-level vocabulary incl. the 4 specials
    int cap_len;     // T_c: caption-decoder token length
    int d_v, L_v, nh_v;        // vision encoder (the adapter shares its width d_v)
    int L_a, nh_a;             // adapter
    int d_t, L_t, nh_t;        // text encoder: width of z and of the context c
    int d_d, L_d, nh_d, d_freq;// DiT decoder, timestep feature size
    int d_g, L_g, nh_g;        // caption decoder (GPT)
    int prediction;            // PREDICT_EPS or PREDICT_V
    int n_timesteps;           // diffusion steps T
    int n_z;                   // N_q of the paper: learned queries = z's rows, 1..n_q; in the text
                               // encoder z fills the first n_z positions, the PAD token the rest
} Config;

// header slots 2..23 hold the fields in this order; slot 24 holds num_params; slot 25 holds n_z
// when it is below n_q, else 0 (so a model with n_z = n_q has the header it had without n_z)
#define CONFIG_FIELDS 22
#define HEADER_N_Z (3 + CONFIG_FIELDS)
static inline int* config_field(Config* c, int i) {
    int* fields[CONFIG_FIELDS] = {
        &c->img_size, &c->patch, &c->n_q, &c->vocab, &c->cap_len,
        &c->d_v, &c->L_v, &c->nh_v, &c->L_a, &c->nh_a,
        &c->d_t, &c->L_t, &c->nh_t, &c->d_d, &c->L_d, &c->nh_d, &c->d_freq,
        &c->d_g, &c->L_g, &c->nh_g, &c->prediction, &c->n_timesteps };
    return fields[i];
}
static inline const char* config_field_name(int i) {
    static const char* names[CONFIG_FIELDS] = {
        "img_size", "patch", "n_q", "vocab", "cap_len", "d_v", "L_v", "nh_v", "L_a", "nh_a",
        "d_t", "L_t", "nh_t", "d_d", "L_d", "nh_d", "d_freq", "d_g", "L_g", "nh_g",
        "prediction", "n_timesteps" };
    return names[i];
}

// The first field in which a stored config differs from the one given, as the text of a
// refusal ("--d_g 96, where this run's model has --d_g 32"); 0 when they are the same.
static inline int config_difference(const Config* stored, const Config* given, char* out, size_t cap) {
    for (int i = 0; i < CONFIG_FIELDS; i++) {
        int a = *config_field((Config*)stored, i), b = *config_field((Config*)given, i);
        if (a == b) { continue; }
        const char* name = config_field_name(i);
        if (strcmp(name, "prediction") == 0) {
            snprintf(out, cap, "--prediction %s, where this run's model has --prediction %s", a == PREDICT_V ? "v" : "eps",
                     b == PREDICT_V ? "v" : "eps");
        } else if (strcmp(name, "vocab") == 0) { // not a flag: the data's vocabulary
            snprintf(out, cap, "a vocabulary of %d words, where this run's data has %d", a, b);
        } else {
            snprintf(out, cap, "--%s %d, where this run's model has --%s %d", name, a, name, b);
        }
        return 1;
    }
    if (stored->n_z != given->n_z) {
        snprintf(out, cap, "--n_z %d, where this run's model has --n_z %d", stored->n_z, given->n_z);
        return 1;
    }
    return 0;
}

static inline int config_num_patches(const Config* c) {
    int g = c->img_size / c->patch;
    return g * g;
}
static inline int config_patch_dim(const Config* c) { return c->patch * c->patch * 3; }

// returns NULL when the config is usable, else a sentence saying what is wrong. Each field has
// a range, and the products the model is sized from are checked in 64 bits, so that no
// checkpoint header or command line can overflow an int further on (config_batch_problem
// adds the batch).
static inline const char* config_problem(const Config* c) {
    static char msg[200];
    // n_timesteps at most 10,000: the schedule's last alphas_cumprod is about 10^(-2.33 T / 1000),
    // which leaves float32's range (1e-38) past T = 16,000, and DDIM divides by its square root
    //                          img  patch n_q  vocab    cap  d_v L_v nh_v L_a nh_a d_t L_t nh_t d_d L_d nh_d d_freq d_g L_g nh_g pred T
    static const int most[CONFIG_FIELDS] = { 4096, 4096, 4096, 1 << 20, 4096, 8192, 256, 256, 256, 256, 8192, 256, 256, 8192, 256,
                                             256, 8192, 8192, 256, 256, 1, 10000 };
    for (int i = 0; i < CONFIG_FIELDS; i++) {
        int v = *config_field((Config*)c, i);
        int least = i == 20 ? 0 : 1; // prediction may be 0 (eps)
        if (v < least || v > most[i]) {
            snprintf(msg, sizeof msg, "config field %s = %d is out of range [%d, %d]", config_field_name(i), v, least, most[i]);
            return msg;
        }
    }
    if (c->img_size % c->patch != 0) return "img_size is not divisible by patch";
    if (c->d_v % c->nh_v != 0) return "d_v is not divisible by nh_v";
    if (c->d_v % c->nh_a != 0) return "d_v is not divisible by nh_a";
    if (c->d_t % c->nh_t != 0) return "d_t is not divisible by nh_t";
    if (c->d_d % c->nh_d != 0) return "d_d is not divisible by nh_d";
    if (c->d_g % c->nh_g != 0) return "d_g is not divisible by nh_g";
    if (c->d_d % 4 != 0) return "d_d is not divisible by 4 (the 2D sin-cos positions need it)";
    if (c->d_freq % 2 != 0) return "d_freq is odd";
    if (c->prediction != PREDICT_EPS && c->prediction != PREDICT_V) return "prediction is neither 0 (eps) nor 1 (v)";
    if (c->vocab <= TOKEN_FIRST_WORD) return "vocab has no room for words after the 4 special tokens";
    if (c->n_q < 2 || c->cap_len < 2) return "n_q and cap_len must be at least 2 (BOS and EOS)";
    if (c->n_z < 1 || c->n_z > c->n_q) {
        snprintf(msg, sizeof msg, "n_z = %d: the learned queries must be 1 to n_q = %d", c->n_z, c->n_q);
        return msg;
    }
    long long grid = c->img_size / c->patch;
    if (grid * grid > 16384) return "more than 16384 patches (img_size / patch > 128)";
    return NULL;
}

// why the vision encoder cannot start from the DiT (vlv_vit_from_dit), or NULL: it takes the
// DiT's patch embedding and its first L_v blocks as they are
static inline const char* vit_from_dit_problem(const Config* c) {
    if (c->d_v != c->d_d) return "it needs d_v = d_d";
    if (c->nh_v != c->nh_d) return "it needs nh_v = nh_d";
    if (c->L_v > c->L_d) return "it needs L_v <= L_d";
    return NULL;
}

// NULL when a batch of B fits: the largest activation (a block's MLP, attention's score matrix,
// the logits, the images) must have fewer than 2^31 floats, computed in 64 bits
static inline const char* config_batch_problem(const Config* c, int B) {
    static char msg[200];
    if (B < 1) return "the batch must be at least 1";
    long long Np = (long long)(c->img_size / c->patch) * (c->img_size / c->patch);
    long long T = Np > c->n_q + c->cap_len ? Np : c->n_q + c->cap_len; // the longest sequence
    long long width = c->d_v > c->d_t ? c->d_v : c->d_t;
    width = width > c->d_d ? width : c->d_d;
    width = width > c->d_g ? width : c->d_g;
    long long heads = c->nh_v > c->nh_t ? c->nh_v : c->nh_t;
    heads = heads > c->nh_d ? heads : c->nh_d;
    heads = heads > c->nh_g ? heads : c->nh_g;
    heads = heads > c->nh_a ? heads : c->nh_a;
    long long sizes[4] = { B * T * 4 * width, B * heads * T * T, (long long)B * c->cap_len * c->vocab,
                           (long long)B * c->img_size * c->img_size * 3 };
    const char* what[4] = { "an MLP's hidden layer", "attention's scores", "the logits", "the images" };
    for (int k = 0; k < 4; k++) {
        if (sizes[k] >= (1LL << 31)) {
            snprintf(msg, sizeof msg, "at batch %d, %s would hold %lld floats (at most 2^31 - 1): use a smaller batch or model", B, what[k], sizes[k]);
            return msg;
        }
    }
    return NULL;
}

// A file format as its readers and writers know it: the magic number and version of its header,
// its name, what to do with a file of it that is refused and, for the formats that end in a
// CRC32 trailer, what lies between the header and the trailer: `fixed` bytes, then `per_param`
// bytes per parameter (the debug state, of records up to an "end" record, has no trailer)
typedef struct { int magic, version; const char* what, *remedy; long fixed; int per_param; } FileFormat;
static const FileFormat CHECKPOINT_FORMAT = { CHECKPOINT_MAGIC, CHECKPOINT_VERSION, "checkpoint",
                                              "restore it from a copy, or train it again", 0, sizeof(float) };
static const FileFormat DEBUG_STATE_FORMAT = { DEBUG_STATE_MAGIC, DEBUG_STATE_VERSION, "debug state",
                                               "write it again with dev/vlv.py dump (make check does)", 0, 0 };

// the largest file a format with a CRC32 trailer can hold (num_params is an int32): what its
// reader opens at most (regular_open); the exact size its header implies is checked after
static inline uint64_t format_max_bytes(const FileFormat* f) {
    return HEADER_INTS * 4ull + (uint64_t)f->fixed + (uint64_t)f->per_param * INT32_MAX + CRC_BYTES;
}

static inline void header_write(FILE* fp, const char* path, const FileFormat* f, const Config* c, int num_params) {
    int header[HEADER_INTS] = {0};
    header[0] = f->magic;
    header[1] = f->version;
    for (int i = 0; i < CONFIG_FIELDS; i++) header[2 + i] = *config_field((Config*)c, i);
    header[2 + CONFIG_FIELDS] = num_params;
    header[HEADER_N_Z] = c->n_z < c->n_q ? c->n_z : 0;
    fwriteCheck(header, sizeof(int), HEADER_INTS, fp, path);
}

// reads a header and checks its magic number and version
static inline void header_start(FILE* fp, const char* path, const FileFormat* f, int* header) {
    freadCheck(header, sizeof(int), HEADER_INTS, fp, path);
    if (header[0] != f->magic) {
        fail("'%s' is not a vlv.c %s: magic number %d, expected %d", path, f->what, header[0], f->magic);
    }
    if (header[1] != f->version) {
        fail("'%s' is a %s of version %d; this program reads version %d\n  %s", path, f->what, header[1], f->version, f->remedy);
    }
}

// the config of a header, every field in range and the slots after n_z zero; returns
// num_params (slot 24)
static inline int header_config(const int* header, const char* path, const FileFormat* f, Config* c) {
    for (int i = 0; i < CONFIG_FIELDS; i++) *config_field(c, i) = header[2 + i];
    int n_z = header[HEADER_N_Z];
    if (n_z != 0 && (n_z < 1 || n_z >= c->n_q)) {
        fail("'%s' has a bad header: slot %d (n_z) is %d; it holds 1 to n_q - 1 (n_q = %d), or 0 for n_z = n_q\n  %s",
             path, HEADER_N_Z, n_z, c->n_q, f->remedy);
    }
    c->n_z = n_z ? n_z : c->n_q;
    const char* problem = config_problem(c);
    if (problem) fail("'%s' has a bad config in its header: %s\n  %s", path, problem, f->remedy);
    int num_params = header[2 + CONFIG_FIELDS];
    if (num_params < 0) fail("'%s' has a bad header: num_params = %d is negative\n  %s", path, num_params, f->remedy);
    for (int i = HEADER_N_Z + 1; i < HEADER_INTS; i++) {
        if (header[i] != 0) fail("'%s' has a bad header: reserved slot %d is %d, not 0\n  %s", path, i, header[i], f->remedy);
    }
    return num_params;
}

// reads and checks the header of a file without a CRC32 trailer (the debug state); returns num_params
static inline int header_read(FILE* fp, const char* path, const FileFormat* f, Config* c) {
    int header[HEADER_INTS];
    header_start(fp, path, f, header);
    return header_config(header, path, f, c);
}

// zlib's CRC32 of the first n bytes of an open file; the stream is left after them
static inline uint32_t file_crc32(FILE* fp, const char* path, long n) {
    if (fseek(fp, 0, SEEK_SET) != 0) { fail("cannot seek in '%s': %s", path, strerror(errno)); }
    unsigned char buf[1 << 16];
    uLong crc = crc32(0L, Z_NULL, 0);
    for (long done = 0; done < n; ) {
        size_t chunk = n - done < (long)sizeof buf ? (size_t)(n - done) : sizeof buf;
        freadCheck(buf, 1, chunk, fp, path);
        crc = crc32(crc, buf, (uInt)chunk);
        done += (long)chunk;
    }
    return (uint32_t)crc;
}

// The CRC32 trailer: checkpoints, pretrained parts and training states end in 4 bytes that hold,
// little-endian, zlib's CRC32 of every byte before them, header included, so that a change the
// field checks cannot see (a head count, a weight) is refused too. The writer appends it to a
// file of atomic_open (which opens it for reading too) from the bytes the file holds.
static inline void crc_append(FILE* fp, const char* path) {
    if (fflush(fp) != 0) { fail("writing '%s' failed: %s\n  is the disk full?", path, strerror(errno)); }
    long size = ftell(fp);
    if (size < 0) { fail("cannot tell the size of '%s': %s", path, strerror(errno)); }
    uint32_t crc = file_crc32(fp, path, size);
    if (fseek(fp, 0, SEEK_END) != 0) { fail("cannot seek in '%s': %s", path, strerror(errno)); } // reading, then writing
    unsigned char le[CRC_BYTES] = { (unsigned char)crc, (unsigned char)(crc >> 8), (unsigned char)(crc >> 16), (unsigned char)(crc >> 24) };
    fwriteCheck(le, 1, CRC_BYTES, fp, path);
}

// Reads and checks the header of a file with a CRC32 trailer. The size that num_params implies
// is checked before the CRC32, so that a cut or lengthened file is reported as such, and the
// CRC32 before the config, so that any other damage is reported as damage rather than as an odd
// config. Returns num_params; the stream is left after the header.
static inline int header_read_crc(FILE* fp, const char* path, const FileFormat* f, Config* c) {
    long size = file_size(fp, path);
    if (size < HEADER_INTS * 4L + CRC_BYTES) {
        fail("'%s' is truncated: %ld bytes, shorter than a header and a CRC32 (%d bytes)\n  %s", path, size,
             HEADER_INTS * 4 + CRC_BYTES, f->remedy);
    }
    int header[HEADER_INTS];
    header_start(fp, path, f, header);
    int num_params = header[2 + CONFIG_FIELDS];
    long long want = HEADER_INTS * 4LL + f->fixed + (long long)f->per_param * num_params + CRC_BYTES;
    if (num_params >= 0 && size != want) {
        fail("'%s' has %ld bytes, but a %s of %d parameters (its header's count) has %lld: the file is %s\n  %s", path, size,
             f->what, num_params, want, size < want ? "truncated" : "longer (trailing data)", f->remedy);
    }
    uint32_t computed = file_crc32(fp, path, size - CRC_BYTES);
    unsigned char le[CRC_BYTES];
    freadCheck(le, 1, CRC_BYTES, fp, path);
    uint32_t stored = le[0] | (uint32_t)le[1] << 8 | (uint32_t)le[2] << 16 | (uint32_t)le[3] << 24;
    if (stored != computed) {
        fail("'%s' is corrupt: its CRC32 is %08x but its contents give %08x; the file was changed or damaged after it was written\n  %s",
             path, (unsigned)stored, (unsigned)computed, f->remedy);
    }
    if (fseek(fp, HEADER_INTS * 4L, SEEK_SET) != 0) { fail("cannot seek in '%s': %s", path, strerror(errno)); }
    return header_config(header, path, f, c);
}

static inline void config_print(const Config* c, FILE* out) {
    for (int i = 0; i < CONFIG_FIELDS; i++) { fprintf(out, "%s=%d ", config_field_name(i), *config_field((Config*)c, i)); }
    fprintf(out, "n_z=%d\n", c->n_z);
}

#endif
