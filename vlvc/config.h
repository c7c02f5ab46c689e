/*
The model's configuration and the 256-byte header every vlv.c file starts with
(doc/formats.md): 64 int32 = magic, version, the config fields, zeros.
*/
#ifndef VLVC_CONFIG_H
#define VLVC_CONFIG_H

#include "utils.h"

#define CHECKPOINT_MAGIC 20261126
#define CHECKPOINT_VERSION 1
#define DEBUG_STATE_MAGIC 20261127
#define DEBUG_STATE_VERSION 1
#define HEADER_INTS 64

// special tokens of the word-level vocabulary (doc/model.md "Tokens")
enum { TOKEN_PAD = 0, TOKEN_BOS = 1, TOKEN_EOS = 2, TOKEN_UNK = 3, TOKEN_FIRST_WORD = 4 };
enum { PREDICT_EPS = 0, PREDICT_V = 1 };
// parameter groups: what an objective trains is a set of these (checkpoint order)
enum { GROUP_VIT, GROUP_ADAPTER, GROUP_TEXTENC, GROUP_DIT, GROUP_PREFIX, GROUP_GPT, NUM_GROUPS };

typedef struct {
    int img_size;    // H = W of the RGB images
    int patch;       // P: patches are P x P x 3
    int n_q;         // N_q: learned queries = text-encoder sequence length
    int vocab;       // V: word-level vocabulary incl. the 4 specials
    int cap_len;     // T_c: caption-decoder token length
    int d_v, L_v, nh_v;        // vision encoder (the adapter shares its width d_v)
    int L_a, nh_a;             // adapter
    int d_t, L_t, nh_t;        // text encoder: width of z and of the context c
    int d_d, L_d, nh_d, d_freq;// DiT decoder, timestep feature size
    int d_g, L_g, nh_g;        // caption decoder (GPT)
    int prediction;            // PREDICT_EPS or PREDICT_V
    int n_timesteps;           // diffusion steps T
} Config;

// header slots 2..23 hold the fields in this order; slot 24 holds num_params
#define CONFIG_FIELDS 22
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
    //                          img  patch n_q  vocab    cap  d_v L_v nh_v L_a nh_a d_t L_t nh_t d_d L_d nh_d d_freq d_g L_g nh_g pred T
    static const int most[CONFIG_FIELDS] = { 4096, 4096, 4096, 1 << 20, 4096, 8192, 256, 256, 256, 256, 8192, 256, 256, 8192, 256,
                                             256, 8192, 8192, 256, 256, 1, 1 << 20 };
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
    long long grid = c->img_size / c->patch;
    if (grid * grid > 16384) return "more than 16384 patches (img_size / patch > 128)";
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

static inline void header_write(FILE* fp, const char* path, int magic, int version, const Config* c, int num_params) {
    int header[HEADER_INTS] = {0};
    header[0] = magic;
    header[1] = version;
    for (int i = 0; i < CONFIG_FIELDS; i++) header[2 + i] = *config_field((Config*)c, i);
    header[2 + CONFIG_FIELDS] = num_params;
    fwriteCheck(header, sizeof(int), HEADER_INTS, fp, path);
}

// reads and validates a header; returns num_params (slot 24)
static inline int header_read(FILE* fp, const char* path, int magic, int version, const char* what, Config* c) {
    int header[HEADER_INTS];
    freadCheck(header, sizeof(int), HEADER_INTS, fp, path);
    if (header[0] != magic) {
        fail("'%s' is not a vlv.c %s: magic number %d, expected %d", path, what, header[0], magic);
    }
    if (header[1] != version) {
        fail("'%s' is a %s of version %d; this program reads version %d", path, what, header[1], version);
    }
    for (int i = 0; i < CONFIG_FIELDS; i++) *config_field(c, i) = header[2 + i];
    const char* problem = config_problem(c);
    if (problem) fail("'%s' has a bad config in its header: %s", path, problem);
    return header[2 + CONFIG_FIELDS];
}

static inline void config_print(const Config* c, FILE* out) {
    for (int i = 0; i < CONFIG_FIELDS; i++) {
        fprintf(out, "%s=%d%s", config_field_name(i), *config_field((Config*)c, i),
                i + 1 < CONFIG_FIELDS ? " " : "\n");
    }
}

#endif
