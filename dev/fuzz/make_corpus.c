/*
Writes the fuzz targets' seed corpus, dev/fuzz/corpus/<target>/: a few small valid files per
reader, written with the project's own writers where it has one (model_save, train_state_save,
vocab_save, shapes_export, png_save), and a few near-valid ones that stop at a late check (a
NaN weight, unsorted words, a gzip stream cut short, a caption line with two TABs). The same
bytes come out on every run.
  make fuzz-corpus      (builds build/fuzz/make_corpus and runs it on dev/fuzz/corpus)
*/
#define VLV_NO_MAIN
#include "train_vlv.c"
#include "vlvc/train_state.h"
#include "vlvc/pretrained.h"
#include "vlvc/shapes_export.h"
#include "dev/fuzz/fuzz_run.h"

static const char* out_root;

// out_root/target/name, the folder made if needed
static const char* seed_path(const char* target, const char* name) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", out_root, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", out_root, target, name);
    return path;
}

static void write_bytes(const char* path, const void* data, size_t n) {
    FILE* fp = atomic_open(path);
    fwriteCheck(data, 1, n, fp, path);
    atomic_commit(fp, path);
}
static void write_text(const char* target, const char* name, const char* text) {
    write_bytes(seed_path(target, name), text, strlen(text));
}

// ----------------------------------------------------------------------------
// model files: checkpoints, training states, pretrained parts

static void checkpoint_seeds(Run* r) {
    model_save(r->model, seed_path("checkpoint", "tiny.bin"));
    Config c = FUZZ_CONFIG; // other shapes: two heads and two blocks where widths allow, v-prediction
    c.img_size = 4; c.n_q = 3; c.n_z = 3; c.cap_len = 4; c.d_v = 2; c.nh_v = 2; c.L_v = 2; c.d_g = 2; c.nh_g = 2;
    c.prediction = PREDICT_V; c.n_timesteps = 1000;
    Model* m = model_create(&c, 1);
    model_init(m, 7);
    model_save(m, seed_path("checkpoint", "v_prediction.bin"));
    // near-valid: a NaN weight, the last check
    size_t n = model_num_params(m);
    float* w = (float*)mallocCheck(n * sizeof(float));
    model_buffer_read(m, 0, w);
    w[n / 2] = NAN;
    model_buffer_write(m, 0, w);
    model_save(m, seed_path("checkpoint", "nan_weight.bin"));
    free(w);
    model_destroy(m);
}

// a training state where the run stands at (stage, step) with AdamW's count adam
static void state_seed(Run* r, const char* name, int stage, int step, int adam) {
    char path[1100];
    r->next_stage = stage;
    r->next_step = step;
    model_set_adam_step(r->model, adam);
    train_state_save(r);
    run_path(r, path, sizeof path, "train_state.bin");
    if (rename(path, seed_path("train_state", name)) != 0) fail("could not move '%s': %s", path, strerror(errno));
}

static void train_state_seeds(Run* r) {
    state_seed(r, "fresh.bin", STAGE0, 0, 0);
    // AdamW's moments as a few steps leave them: small, the second ones positive
    size_t n = model_num_params(r->model);
    float* moments = (float*)mallocCheck(n * sizeof(float));
    for (int k = 1; k <= 2; k++) {
        for (size_t i = 0; i < n; i++) { moments[i] = k == 1 ? 0.01f * (float)(i % 7) - 0.03f : 1e-4f * (float)(i % 5 + 1); }
        model_buffer_write(r->model, k, moments);
    }
    free(moments);
    state_seed(r, "mid_stage1.bin", STAGE1, 3, 3);
    r->stage_seconds[STAGE0] = 1.5;
    r->invocations = 2;
    state_seed(r, "all_done.bin", ALL_DONE, 0, 4);
}

static void pretrained_seeds(Run* r) {
    size_t n_all = model_num_params(r->model), n;
    float* all = (float*)mallocCheck(n_all * sizeof(float));
    model_buffer_read(r->model, 0, all);
    float* parts = parts_gather(&FUZZ_CONFIG, all, &n);
    for (int k = 0; k < 2; k++) { // near-valid: an infinite weight
        const char* path = seed_path("pretrained", k == 0 ? "parts.bin" : "inf_weight.bin");
        if (k == 1) { parts[n - 1] = INFINITY; }
        FILE* fp = atomic_open(path);
        header_write(fp, path, &PRETRAINED_FORMAT, &FUZZ_CONFIG, (int)n);
        fwriteCheck(parts, sizeof(float), n, fp, path);
        crc_append(fp, path);
        atomic_commit(fp, path);
    }
    free(parts);
    free(all);
}

// ----------------------------------------------------------------------------
// text files: vocabularies, caption files

static void vocab_seeds(void) {
    Vocab v;
    shapes_vocab(&v);
    vocab_save(&v, seed_path("vocab", "shapes.txt"));
    vocab_free(&v);
    static const char* const captions[] = { "a photo of a t-shirt", "a photo of an ankle boot" };
    vocab_build(&v, captions, 2);
    vocab_save(&v, seed_path("vocab", "fashion.txt"));
    vocab_free(&v);
    write_text("vocab", "unsorted.txt", "vlv.c-vocabulary 1 6\n<pad>\n<bos>\n<eos>\n<unk>\nzebra\napple\n");
    write_text("vocab", "crlf.txt", "vlv.c-vocabulary 1 5\r\n<pad>\r\n<bos>\r\n<eos>\r\n<unk>\r\nword\r\n");
}

// the names are those of the folder fuzz_captions.c makes
static void caption_seeds(void) {
    write_text("captions", "plain.tsv", "a.png\ta red circle\nb.jpg\ta blue square at the top\n");
    write_text("captions", "bom_crlf.tsv", "\xEF\xBB\xBF" "c d.jpeg\t  a small green triangle  \r\n\r\nE.PNG\ta diamond\r\nf.Jpg\tx\r\n");
    write_text("captions", "two_tabs.tsv", "a.png\ta red\tcircle\n");
    write_text("captions", "twice.tsv", "a.png\tone\nb.jpg\ttwo\na.png\tthree\n");
    write_text("captions", "not_listed.tsv", "a.png\tone\n.hidden.png\ttwo\nnotes.txt\tthree\n");
}

// ----------------------------------------------------------------------------
// binary datasets: IDX files (plain and gzipped), shapes exports

// an IDX file of unsigned bytes: big-endian magic and dimensions, then the values i*37 mod 256
static void idx_seed(const char* name, uint32_t magic, int ndim, const uint32_t* dims, int gz, size_t cut) {
    uint8_t buf[512];
    size_t n = 0, count = 1;
    for (int i = -1; i < ndim; i++) {
        uint32_t x = i < 0 ? magic : dims[i];
        for (int b = 3; b >= 0; b--) { buf[n++] = (uint8_t)(x >> (8 * b)); }
        if (i >= 0) { count *= dims[i]; }
    }
    for (size_t i = 0; i < count; i++) { buf[n++] = (uint8_t)(i * 37 % 256); }
    const char* path = seed_path("idx", name);
    if (!gz) { write_bytes(path, buf, n); return; }
    uint8_t packed[1024];
    z_stream z = { 0 };
    if (deflateInit2(&z, 9, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY) != Z_OK) fail("deflateInit2 failed");
    z.next_in = buf; z.avail_in = (uInt)n; z.next_out = packed; z.avail_out = sizeof packed;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) fail("deflate failed");
    write_bytes(path, packed, z.total_out - cut);
    deflateEnd(&z);
}

static void idx_seeds(void) {
    uint32_t images[3] = { 3, 4, 5 }, labels[1] = { 3 };
    idx_seed("images.idx", 0x803, 3, images, 0, 0);
    idx_seed("images.idx.gz", 0x803, 3, images, 1, 0);
    idx_seed("labels.idx", 0x801, 1, labels, 0, 0);
    idx_seed("labels.idx.gz", 0x801, 1, labels, 1, 0);
    idx_seed("images_no_trailer.idx.gz", 0x803, 3, images, 1, 4);
}

static void shapes_export_seeds(void) {
    shapes_export(seed_path("shapes_export", "t2i_1.bin"), SPLIT_T2I, 1, SHAPES_MIN_IMG, 1, 1337);
    shapes_export(seed_path("shapes_export", "test_2.bin"), SPLIT_TEST, 2, SHAPES_MIN_IMG, 3, 7);
}

// ----------------------------------------------------------------------------
// images: PNGs of every colour type stb_image_write makes, JPEGs, and by hand the PNG
// kinds it does not make (16-bit, palette with transparency, interlaced)

static void png_chunk(FILE* fp, const char* path, const char* type, const uint8_t* data, uint32_t n) {
    uint8_t be[4] = { (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };
    fwriteCheck(be, 1, 4, fp, path);
    fwriteCheck(type, 1, 4, fp, path);
    if (n > 0) { fwriteCheck(data, 1, n, fp, path); }
    uLong crc = crc32(0, (const Bytef*)type, 4);
    if (n > 0) { crc = crc32(crc, data, n); } // crc32 of a NULL buffer is 0, not the crc so far
    uint8_t c[4] = { (uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8), (uint8_t)crc };
    fwriteCheck(c, 1, 4, fp, path);
}

// a PNG of w x h, bit depth and colour type as given, from its filtered scanlines raw[n]
// (Adam7 passes one after the other if interlaced); palette: PLTE and tRNS of 2 entries
static void png_by_hand(const char* name, int w, int h, int depth, int type, int interlaced, const uint8_t* raw, size_t n) {
    const char* path = seed_path("image", name);
    FILE* fp = atomic_open(path);
    fwriteCheck("\x89PNG\r\n\x1a\n", 1, 8, fp, path);
    uint8_t ihdr[13] = { 0, 0, 0, (uint8_t)w, 0, 0, 0, (uint8_t)h, (uint8_t)depth, (uint8_t)type, 0, 0, (uint8_t)interlaced };
    png_chunk(fp, path, "IHDR", ihdr, sizeof ihdr);
    if (type == 3) {
        static const uint8_t plte[6] = { 200, 30, 30, 30, 30, 200 }, trns[2] = { 255, 0 };
        png_chunk(fp, path, "PLTE", plte, sizeof plte);
        png_chunk(fp, path, "tRNS", trns, sizeof trns);
    }
    uint8_t packed[256];
    uLongf packed_n = sizeof packed;
    if (compress2(packed, &packed_n, raw, n, 9) != Z_OK) fail("compress2 failed");
    png_chunk(fp, path, "IDAT", packed, (uint32_t)packed_n);
    png_chunk(fp, path, "IEND", NULL, 0);
    atomic_commit(fp, path);
}

static void image_seeds(void) {
    uint8_t px[16 * 16 * 4];
    for (size_t i = 0; i < sizeof px; i++) { px[i] = (uint8_t)(i * 53 % 251); }
    png_save(seed_path("image", "rgb.png"), px, 3, 2);
    static const char* const pngs[3] = { "grey.png", "grey_alpha.png", "rgba.png" };
    static const int comps[3] = { 1, 2, 4 };
    for (int k = 0; k < 3; k++) {
        if (!stbi_write_png(seed_path("image", pngs[k]), 2, 3, comps[k], px, 2 * comps[k])) fail("stbi_write_png failed");
    }
    // quality 95 keeps the colour planes whole, 50 subsamples them; 9 x 7 leaves partial blocks
    if (!stbi_write_jpg(seed_path("image", "rgb.jpg"), 16, 8, 3, px, 95)) fail("stbi_write_jpg failed");
    if (!stbi_write_jpg(seed_path("image", "rgb_subsampled.jpg"), 16, 16, 3, px, 50)) fail("stbi_write_jpg failed");
    if (!stbi_write_jpg(seed_path("image", "grey.jpg"), 9, 7, 1, px, 75)) fail("stbi_write_jpg failed");
    // 16-bit RGB 2 x 2: per row filter byte 0, then 2 pixels of 6 bytes
    uint8_t rgb16[2 * 13];
    for (int i = 0; i < 26; i++) { rgb16[i] = i % 13 == 0 ? 0 : (uint8_t)(i * 29); }
    png_by_hand("rgb16.png", 2, 2, 16, 2, 0, rgb16, sizeof rgb16);
    // 1-bit palette 2 x 2, colour 1 transparent: a filter byte and one byte per row
    static const uint8_t palette[4] = { 0, 0x40, 0, 0x80 };
    png_by_hand("palette.png", 2, 2, 1, 3, 0, palette, sizeof palette);
    // 8-bit grey 2 x 2, Adam7: pass 1 has (0,0), pass 6 (1,0), pass 7 row 1; each row a filter byte first
    static const uint8_t adam7[7] = { 0, 10, 0, 200, 0, 90, 160 };
    png_by_hand("interlaced.png", 2, 2, 8, 0, 1, adam7, sizeof adam7);
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s OUT_DIR (dev/fuzz/corpus)\n", argv[0]); return 2; }
    out_root = argv[1];
    mkdir(out_root, 0755);
    char run_dir[1100];
    snprintf(run_dir, sizeof run_dir, "%s/.run", out_root); // the run's own train_state.bin, moved out
    mkdir(run_dir, 0755);
    Run r;
    fuzz_run_init(&r, run_dir);
    checkpoint_seeds(&r);
    train_state_seeds(&r);
    pretrained_seeds(&r);
    rmdir(run_dir);
    vocab_seeds();
    caption_seeds();
    idx_seeds();
    shapes_export_seeds();
    image_seeds();
    model_destroy(r.model);
    vocab_free(&r.vocab);
    printf("wrote the seed corpus under %s\n", out_root);
    return 0;
}
