/*
The pretrained parts: the frozen text-to-image decoder (text encoder + DiT, stage 0's EMA
weights) and the caption language model (stage 0b), as the paper starts from a pretrained
Stable Diffusion and a pretrained LLM. A run that trained stages 0 and 0b writes them to its
folder as pretrained.bin with its provenance in pretrained.txt (doc/formats.md); a run given
--pretrained FILE starts at stage 1 from them, with the vision encoder, the adapter and the
prefix MLP initialized from its own seed.

pretrained.txt is text, "key: value" lines after a first line that names the format and its
version; the run refuses a pretrained.bin whose SHA-256 is not the one recorded there.
*/
#ifndef VLVC_PRETRAINED_H
#define VLVC_PRETRAINED_H

#include "model.h"    // the tensor table: which tensors the parts hold
#include "sha256.h"
#include "evaluate.h" // the T2I score recorded in the provenance

#define PRETRAINED_MAGIC 20261203
#define PRETRAINED_VERSION 2
static const FileFormat PRETRAINED_FORMAT = { PRETRAINED_MAGIC, PRETRAINED_VERSION, "pretrained parts file",
                                              "restore it, or pretrain from scratch with --preset scratch", 0, sizeof(float) };
#define PROVENANCE_MAX_BYTES 8191 // a provenance file is about 1 KB; a larger one is not one
#define PROVENANCE_FIRST_LINE "vlv.c pretrained parts, provenance version 1"
#define PRETRAINED_GROUPS (1 << GROUP_TEXTENC | 1 << GROUP_DIT | 1 << GROUP_GPT)

#ifndef VLV_COMMIT
#define VLV_COMMIT "unknown" // the Makefile passes git's commit
#endif

// the provenance file of a pretrained.bin: the same path ending in .txt instead of .bin
static void provenance_path(const char* bin, char* out, size_t cap) {
    size_t n = strlen(bin);
    if (n < 4 || strcmp(bin + n - 4, ".bin") != 0) fail("the pretrained parts '%s' must be a .bin file (its provenance is the .txt beside it)", bin);
    if (n + 1 > cap) fail("the path '%s' is too long", bin);
    snprintf(out, cap, "%.*s.txt", (int)(n - 4), bin);
}

// the vocabulary's fingerprint: its size and the SHA-256 of its words, one per line
static void vocab_fingerprint(const Vocab* v, char* out, size_t cap) {
    Sha256 h;
    sha256_init(&h);
    for (int i = 0; i < v->size; i++) {
        sha256_update(&h, v->words[i], strlen(v->words[i]));
        sha256_update(&h, "\n", 1);
    }
    char hex[65];
    sha256_final(&h, hex);
    snprintf(out, cap, "%d words, sha256 %s", v->size, hex);
}

// [offset, numel] of the parts' tensors in the model's layout, in layout order
static float* parts_gather(const Config* c, const float* all, size_t* n_out) {
    TensorInfo* table;
    int count;
    count_params(c, &table, &count);
    size_t n = 0;
    for (int i = 0; i < count; i++) { if (PRETRAINED_GROUPS & 1 << table[i].group) { n += table[i].numel; } }
    float* parts = (float*)mallocCheck(n * sizeof(float));
    size_t at = 0;
    for (int i = 0; i < count; i++) {
        if (!(PRETRAINED_GROUPS & 1 << table[i].group)) { continue; }
        memcpy(parts + at, all + table[i].offset, table[i].numel * sizeof(float));
        at += table[i].numel;
    }
    free(table);
    *n_out = n;
    return parts;
}

static void parts_scatter(const Config* c, float* all, const float* parts) {
    TensorInfo* table;
    int count;
    count_params(c, &table, &count);
    size_t at = 0;
    for (int i = 0; i < count; i++) {
        if (!(PRETRAINED_GROUPS & 1 << table[i].group)) { continue; }
        memcpy(all + table[i].offset, parts + at, table[i].numel * sizeof(float));
        at += table[i].numel;
    }
    free(table);
}

// writes RUN/pretrained.bin and RUN/pretrained.txt from the model as it stands after stage 0b
static void pretrained_write(Run* r) {
    const Config* c = model_config(r->model);
    // the decoder's own score: text-to-image on held-out prompts, read by the oracle (on every
    // rank: the ranks share the sampling); rank 0 writes the files
    // (only the shapes world has an oracle: elsewhere nothing is sampled)
    int scored = r->src.kind == SOURCE_SHAPES;
    Score t2i;
    memset(&t2i, 0, sizeof t2i);
    if (scored) {
        say(r, "scoring the pretrained decoder: text-to-image on %d held-out prompts\n", r->s.eval_n);
        t2i = eval_t2i(r, NULL, NULL);
    }
    if (!r->root) { return; }
    size_t n_all = model_num_params(r->model), n;
    float* all = (float*)mallocCheck(n_all * sizeof(float));
    model_buffer_read(r->model, 0, all);
    float* parts = parts_gather(c, all, &n);
    free(all);
    char bin[1100], txt[1100], hex[65];
    run_path(r, bin, sizeof bin, "pretrained.bin");
    provenance_path(bin, txt, sizeof txt);
    FILE* fp = atomic_open(bin);
    header_write(fp, bin, &PRETRAINED_FORMAT, c, (int)n);
    fwriteCheck(parts, sizeof(float), n, fp, bin);
    crc_append(fp, bin);
    atomic_commit(fp, bin);
    free(parts);
    fp = readOpenCheck(bin, format_max_bytes(&PRETRAINED_FORMAT));
    if (!sha256_stream(fp, hex)) fail("could not read back '%s' to hash it: %s", bin, strerror(errno));
    fclose(fp);
    // the score (brief for the console), and with how it was sampled for the provenance
    char vocab[128], attrs[128], brief[200] = "not scored (no oracle for this data)", score[300];
    vocab_fingerprint(&r->vocab, vocab, sizeof vocab);
    snprintf(score, sizeof score, "%s", brief);
    if (scored) {
        score_attrs_text(&t2i, attrs, sizeof attrs);
        snprintf(brief, sizeof brief, "exact %.1f%% (%s)", 100.0f * score_exact(&t2i), attrs);
        snprintf(score, sizeof score, "%d held-out prompts, DDIM %d steps, guidance %g: %s", t2i.n, r->s.sample_steps,
                 r->s.guidance, brief);
    }
    time_t now = time(NULL);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    fp = atomic_open(txt);
    fprintf(fp, "%s\n", PROVENANCE_FIRST_LINE);
    fprintf(fp, "file: pretrained.bin\n");
    fprintf(fp, "sha256: %s\n", hex);
    fprintf(fp, "parts: text encoder + DiT (stage 0, EMA weights), caption language model (stage 0b)\n");
    fprintf(fp, "config: ");
    config_print(c, fp);
    fprintf(fp, "vocabulary: %s\n", vocab);
    fprintf(fp, "data: %s, seed %llu\n", r->s.data, (unsigned long long)r->s.seed);
    fprintf(fp, "command: %s\n", r->command);
    fprintf(fp, "commit: %s\n", VLV_COMMIT);
    fprintf(fp, "hardware: %s\n", r->device);
    fprintf(fp, "wall time: stage 0 %.1f s, stage 0b %.1f s, over %d invocation%s\n", r->stage_seconds[STAGE0],
            r->stage_seconds[STAGE0B], r->invocations, r->invocations == 1 ? "" : "s (resumed)");
    fprintf(fp, "t2i: %s\n", score);
    fprintf(fp, "written: %s\n", when);
    atomic_commit(fp, txt);
    say(r, "wrote %s (sha256 %.16s...)\n  and its provenance pretrained.txt: text-to-image %s\n", bin, hex, brief);
}

// the value of "key: value" in a provenance file's lines; 0 if absent
static int provenance_value(const char* text, const char* key, char* out, size_t cap) {
    size_t k = strlen(key);
    for (const char* line = text; *line; ) {
        const char* end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > k + 1 && strncmp(line, key, k) == 0 && line[k] == ':' && line[k + 1] == ' ') {
            snprintf(out, cap, "%.*s", (int)(len - k - 2), line + k + 2);
            return 1;
        }
        line += len + (end != NULL);
    }
    return 0;
}

// checks FILE against its provenance, loads the parts into the (initialized) model and tells
// where they came from; returns the file's SHA-256 in sha (the training state records it)
static void pretrained_load(Run* r, const char* bin, char sha[65]) {
    char txt[1100];
    provenance_path(bin, txt, sizeof txt);
    char text[PROVENANCE_MAX_BYTES + 1], err[4400];
    FILE* fp = regular_open(txt, PROVENANCE_MAX_BYTES, err, sizeof err);
    if (!fp) fail("the pretrained parts' provenance cannot be read: %s; it comes with '%s'\n"
                  "  restore both (git checkout data/), or pretrain from scratch with --preset scratch", err, bin);
    size_t len = fread(text, 1, PROVENANCE_MAX_BYTES, fp);
    if (ferror(fp)) fail("reading '%s' failed: %s", txt, strerror(errno));
    fclose(fp);
    text[len] = '\0';
    if (strncmp(text, PROVENANCE_FIRST_LINE "\n", strlen(PROVENANCE_FIRST_LINE) + 1) != 0) {
        fail("'%s' is not a provenance file of this version: its first line must be '%s'", txt, PROVENANCE_FIRST_LINE);
    }
    char recorded[128], vocab[128], given_vocab[128];
    if (!provenance_value(text, "sha256", recorded, sizeof recorded)) fail("'%s' records no sha256", txt);
    fp = regular_open(bin, format_max_bytes(&PRETRAINED_FORMAT), err, sizeof err);
    if (!fp) fail("the pretrained parts cannot be read: %s\n"
                  "  restore them (git checkout data/), or pretrain from scratch with --preset scratch", err);
    if (!sha256_stream(fp, sha)) fail("the pretrained parts '%s' cannot be read: %s", bin, strerror(errno));
    if (strcmp(sha, recorded) != 0) {
        fail("'%s' is not the file its provenance describes: its SHA-256 is %s, %s records %s.\n"
             "  restore it (git checkout data/), or pretrain from scratch with --preset scratch", bin, sha, txt, recorded);
    }
    vocab_fingerprint(&r->vocab, given_vocab, sizeof given_vocab);
    if (!provenance_value(text, "vocabulary", vocab, sizeof vocab) || strcmp(vocab, given_vocab) != 0) {
        fail("'%s' was pretrained on another vocabulary (%s) than --data %s has (%s)", bin, vocab, r->s.data, given_vocab);
    }
    Config c;
    int stored = header_read_crc(fp, bin, &PRETRAINED_FORMAT, &c);
    c.n_z = model_config(r->model)->n_z; // the parts hold no learned queries: any n_z starts from them
    char differs[256];
    if (config_difference(&c, model_config(r->model), differs, sizeof differs)) {
        fail("'%s' holds a model with %s (a model flag differs from the preset's):\n"
             "  give --pretrained none to pretrain the decoder and LM of these sizes here", bin, differs);
    }
    size_t n_all = model_num_params(r->model), n;
    float* all = (float*)mallocCheck(n_all * sizeof(float));
    model_buffer_read(r->model, 0, all);
    float* parts = parts_gather(&c, all, &n);
    if ((size_t)stored != n) fail("'%s' says it holds %d parameters but its config's parts have %zu", bin, stored, n);
    freadCheck(parts, sizeof(float), n, fp, bin);
    fclose(fp);
    for (size_t i = 0; i < n; i++) { if (!is_finite_float(parts[i])) fail("'%s' holds a NaN or infinity", bin); }
    parts_scatter(&c, all, parts);
    model_buffer_write(r->model, 0, all);
    free(parts);
    free(all);
    static const char* shown[] = { "command", "commit", "hardware", "wall time", "t2i" };
    say(r, "pretrained parts (the frozen decoder and the caption LM): %s, sha256 %.16s...\n  its provenance, %s:\n", bin, sha, txt);
    for (size_t k = 0; k < sizeof shown / sizeof shown[0]; k++) {
        char value[2048];
        if (provenance_value(text, shown[k], value, sizeof value)) { say(r, "    %-9s %s\n", shown[k], value); }
    }
    say(r, "(--preset scratch pretrains them from scratch, then runs these stages, in one invocation)\n");
}

#endif
