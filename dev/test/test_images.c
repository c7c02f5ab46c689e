/*
Checks of vlvc/images.h: crop and resize on constructed images, bad image files (an error
code, never an exit), the PNG grid writer, the IDX reader on synthetic, broken and (when
installed) the real Fashion-MNIST files, image folders and caption files. Every check_*
function makes its own temporary directory and removes it.

  gcc -O2 -Wall -Wextra -std=gnu11 -o test_images dev/test/test_images.c -lstb -lz -lm && ./test_images
*/
#include <sys/wait.h>
#include <sys/stat.h>
#include "../../vlvc/images.h"
#include "../../vlvc/datasets.h"
// checks.h brings the debug-state reader along, which these checks do not use
#pragma GCC diagnostic ignored "-Wunused-function"
#include "checks.h"

// ----------------------------------------------------------------------------
// helpers

static void img_tmpdir(char* dir, size_t size) {
    const char* base = getenv("TMPDIR");
    snprintf(dir, size, "%s/vlv_images_XXXXXX", base ? base : "/tmp");
    if (mkdtemp(dir) == NULL) fail("could not make a temporary directory '%s': %s", dir, strerror(errno));
}

// removes dir with its files and the (empty or flat) folders in it
static void img_rmtree(const char* dir) {
    DIR* dp = opendir(dir);
    if (dp == NULL) return;
    struct dirent* e;
    while ((e = readdir(dp)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) { img_rmtree(path); } else { remove(path); }
    }
    closedir(dp);
    rmdir(dir);
}

static unsigned img_rand(unsigned* state) { *state = *state * 1664525u + 1013904223u; return *state >> 8; }

// writes w×h pixels of comp channels as dir/name in the format its extension names
static const char* img_write(char* path, const char* dir, const char* name, int w, int h, int comp, const uint8_t* px) {
    snprintf(path, 4096, "%s/%s", dir, name);
    const char* ext = strrchr(name, '.');
    int ok = strcasecmp(ext, ".png") == 0 ? stbi_write_png(path, w, h, comp, px, w * comp)
           : strcasecmp(ext, ".bmp") == 0 ? stbi_write_bmp(path, w, h, comp, px)
           : stbi_write_jpg(path, w, h, comp, px, 95);
    if (!ok) fail("test setup: could not write '%s'", path);
    return path;
}

static void img_write_bytes(const char* path, const void* data, size_t n) {
    FILE* fp = fopenCheck(path, "wb");
    fwriteCheck(data, 1, n, fp, path);
    fcloseCheck(fp, path);
}

// max |out - expected| over S×S×3, expected given per pixel as (y, x, c) -> value
static float img_max_err(const float* out, int S, float (*expected)(int y, int x, int c)) {
    float worst = 0.0f;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++)
            for (int c = 0; c < 3; c++) worst = fmaxf(worst, fabsf(out[(y * S + x) * 3 + c] - expected(y, x, c)));
    return worst;
}

static float img_max_dev(const float* out, size_t n, float value) {
    float worst = 0.0f;
    for (size_t i = 0; i < n; i++) worst = fmaxf(worst, fabsf(out[i] - value));
    return worst;
}

// image_load that must succeed; returns 0 and reports the message if it did not
static int img_load_ok(const char* what, const char* path, int S, float* out) {
    char err[512];
    if (image_load(path, S, out, err, sizeof err)) return 1;
    report(what, 0, "%s", err);
    return 0;
}

static void try_idx_load(const char* images, const char* labels) { IdxDataset d; idx_load(&d, images, labels); }
static void try_fashion_mnist(const char* dir, const char* split) { IdxDataset d; fashion_mnist_load(&d, dir, split); }
static void try_folder(const char* dir, const char* captions) { ImageFolder f; image_folder_open(&f, dir, captions); }
static void try_grid(const char* path, const char* unused) {
    (void)unused;
    float px[3] = {0.0f, 0.0f, 0.0f};
    png_write_grid(path, px, 1, 1, 1, 1);
}

// ----------------------------------------------------------------------------
// crop and resize

static float split_lr(int y, int x, int c) { (void)y; return x < 16 ? (c == 0 ? 1.0f : -1.0f) : (c == 2 ? 1.0f : -1.0f); }
static float split_tb(int y, int x, int c) { (void)x; (void)c; return y < 10 ? 1.0f : -1.0f; }
static float ramp_bilinear(int y, int x, int c) { (void)y; (void)c; const float v[4] = {-1.0f, -0.5f, 0.5f, 1.0f}; return v[x]; }

static void check_image_crop_resize(void) {
    char dir[256], path[4096];
    img_tmpdir(dir, sizeof dir);
    uint8_t* px = (uint8_t*)mallocCheck(100 * 100 * 4);
    float* out = (float*)mallocCheck(100 * 100 * 3 * sizeof(float));

    // 96×64 RGB, red | blue at x = 48: the crop keeps x 16..79, so the split lands mid-square
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 96; x++) {
            uint8_t* p = px + (y * 96 + x) * 3;
            p[0] = x < 48 ? 255 : 0; p[1] = 0; p[2] = x < 48 ? 0 : 255;
        }
    if (img_load_ok("image: wide RGB split, crop + box /2", img_write(path, dir, "split.png", 96, 64, 3, px), 32, out)) {
        float e = img_max_err(out, 32, split_lr);
        report("image: wide RGB split, crop + box /2", e < 1e-6f, "96×64 -> 32×32, max err %.1e", e);
    }

    // 40×100 grey+alpha, white (alpha 0) above y = 50, black below: crop keeps y 30..69;
    // alpha must be dropped, grey replicated
    for (int y = 0; y < 100; y++)
        for (int x = 0; x < 40; x++) { px[(y * 40 + x) * 2] = y < 50 ? 255 : 0; px[(y * 40 + x) * 2 + 1] = y < 50 ? 0 : 255; }
    if (img_load_ok("image: tall grey+alpha split", img_write(path, dir, "tall.png", 40, 100, 2, px), 20, out)) {
        float e = img_max_err(out, 20, split_tb);
        report("image: tall grey+alpha split", e < 1e-6f, "40×100 -> 20×20, alpha ignored, max err %.1e", e);
    }

    // a constant RGBA image stays constant when shrunk (ratio 53/32) and enlarged (53 -> 100)
    for (int i = 0; i < 77 * 53; i++) { px[4 * i] = 10; px[4 * i + 1] = 200; px[4 * i + 2] = 90; px[4 * i + 3] = 128; }
    img_write(path, dir, "const.png", 77, 53, 4, px);
    float worst = 0.0f;
    int sizes[2] = {32, 100};
    for (int t = 0; t < 2; t++) {
        if (!img_load_ok("image: constant RGBA stays constant", path, sizes[t], out)) break;
        for (int i = 0; i < sizes[t] * sizes[t]; i++)
            for (int c = 0; c < 3; c++) worst = fmaxf(worst, fabsf(out[i * 3 + c] - ((c == 0 ? 10 : c == 1 ? 200 : 90) / 127.5f - 1.0f)));
        if (t == 1) report("image: constant RGBA stays constant", worst < 1e-5f, "77×53 -> 32 and 100, max err %.1e", worst);
    }

    // 1-pixel checkerboard: the box filter /2 gives its mean (0) everywhere
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++) px[y * 64 + x] = (x + y) % 2 ? 255 : 0;
    if (img_load_ok("image: checkerboard box /2 = mean", img_write(path, dir, "checker.png", 64, 64, 1, px), 32, out)) {
        float e = img_max_dev(out, 32 * 32 * 3, 0.0f);
        report("image: checkerboard box /2 = mean", e < 1e-6f, "64 -> 32, max |v - 0| %.1e", e);
    }

    // noise, ratio 90/32 = 2.8125: area averaging keeps the mean of each channel
    unsigned seed = 7;
    double mean_in[3] = {0, 0, 0}, mean_out[3] = {0, 0, 0};
    for (int i = 0; i < 90 * 90 * 3; i++) { px[i] = (uint8_t)img_rand(&seed); mean_in[i % 3] += px[i] / 127.5 - 1.0; }
    if (img_load_ok("image: box filter keeps the mean", img_write(path, dir, "noise.png", 90, 90, 3, px), 32, out)) {
        double e = 0.0;
        for (int i = 0; i < 32 * 32 * 3; i++) mean_out[i % 3] += out[i];
        for (int c = 0; c < 3; c++) e = fmax(e, fabs(mean_out[c] / (32 * 32) - mean_in[c] / (90 * 90)));
        report("image: box filter keeps the mean", e < 1e-5, "90 -> 32, max |mean diff| %.1e", e);
        // independently: blow each pixel up 32×32 times (to 2880²), then average 90×90 blocks
        e = 0.0;
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
                for (int c = 0; c < 3; c++) {
                    double sum = 0.0;
                    for (int a = y * 90; a < (y + 1) * 90; a++)
                        for (int b = x * 90; b < (x + 1) * 90; b++) sum += px[((a / 32) * 90 + b / 32) * 3 + c];
                    e = fmax(e, fabs(out[(y * 32 + x) * 3 + c] - (sum / (90 * 90) / 127.5 - 1.0)));
                }
        report("image: box filter = area average", e < 1e-5, "90 -> 32 against 32x supersampling, max err %.1e", e);
    }

    // bilinear 2 -> 4 (pixel centres, edges clamped): black|white gives -1, -0.5, 0.5, 1
    const uint8_t ramp[4] = {0, 255, 0, 255};
    if (img_load_ok("image: bilinear 2 -> 4", img_write(path, dir, "ramp.png", 2, 2, 1, ramp), 4, out)) {
        float e = img_max_err(out, 4, ramp_bilinear);
        report("image: bilinear 2 -> 4", e < 1e-6f, "max err %.1e", e);
    }

    // equal size is the identity; the crop offset is floor((h - w) / 2): in a 5×8 image rows
    // 1..5 are kept, so the white rows 0, 6, 7 vanish and row 1..5's values stay exact
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 5; x++) px[y * 5 + x] = (y == 0 || y >= 6) ? 255 : (uint8_t)(10 * y + x);
    if (img_load_ok("image: crop offset floor, identity resize", img_write(path, dir, "offset.png", 5, 8, 1, px), 5, out)) {
        float e = 0.0f;
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 5; x++) e = fmaxf(e, fabsf(out[(y * 5 + x) * 3 + 1] - ((10 * (y + 1) + x) / 127.5f - 1.0f)));
        report("image: crop offset floor, identity resize", e < 1e-6f, "5×8 -> 5×5 (rows 1..5), max err %.1e", e);
    }

    // JPEG (lossy: a flat colour comes back within a few levels)
    for (int i = 0; i < 40 * 30; i++) { px[3 * i] = 200; px[3 * i + 1] = 100; px[3 * i + 2] = 50; }
    if (img_load_ok("image: JPEG, flat colour", img_write(path, dir, "flat.jpg", 40, 30, 3, px), 16, out)) {
        float e = 0.0f;
        for (int i = 0; i < 16 * 16; i++)
            for (int c = 0; c < 3; c++) e = fmaxf(e, fabsf(out[i * 3 + c] - ((c == 0 ? 200 : c == 1 ? 100 : 50) / 127.5f - 1.0f)));
        report("image: JPEG, flat colour", e <= 3.0f / 127.5f, "40×30 quality 95 -> 16, max err %.1f levels", e * 127.5f);
    }
    // what stb_image would also decode (BMP here) is refused: only PNG and JPEG are meant
    char err[512];
    const char* bmp = img_write(path, dir, "flat.bmp", 40, 30, 3, px);
    report("image: BMP is refused (PNG and JPEG only)", !image_load(bmp, 16, out, err, sizeof err) && strstr(err, "not a PNG or JPEG"),
           "%s", err);
    free(px);
    free(out);
    img_rmtree(dir);
}

// bad files give an error code and a message naming the file, and the program goes on
static void check_image_load_errors(void) {
    char dir[256], path[4096], bad[4096];
    img_tmpdir(dir, sizeof dir);
    float out[8 * 8 * 3];
    char err[512];
    // each bad file must be refused with its name and the reason, before anything is decoded
    // where the header already tells (the 18000² PNG is 41 bytes: a decompression bomb)
    enum { CASES = 16 };
    struct { const char* what; const char* reason; } cases[CASES] = {
        {"image error: missing file", "No such file"},  {"image error: a directory", "not a regular file"},
        {"image error: empty file", "not a PNG or JPEG"}, {"image error: text named .png", "not a PNG or JPEG"},
        {"image error: a PNG cut in half says so", "a truncated PNG (it ends inside an IDAT chunk, the pixels)"},
        {"image error: PNM of height 0", "not a PNG or JPEG"},
        {"image error: a TGA claiming 12320 x 33607", "not a PNG or JPEG"},
        {"image error: a PNG header claiming 18000 x 18000", "18000 x 18000 pixels"},
        {"image error: a PNG header claiming 4 x 0", "could not"},
        {"image error: a PNG header claiming 20000 x 1", "20000 x 1 pixels"},
        {"image error: a FIFO named .png (no hang)", "not a regular file"},
        {"image error: a JPEG Huffman table of 777 codes (stb overflows it)", "corrupt JPEG"},
        {"image error: a JPEG scan on an undefined Huffman table", "corrupt JPEG"},
        {"image error: a JPEG cut in half says so, and names JPEG", "a truncated JPEG (no end-of-image marker follows its scan)"},
        {"image error: a PNG without its IEND chunk (the pixels whole) is truncated", "a truncated PNG (it ends before its IEND chunk)"},
        {"image error: a character device (/dev/zero) named as an image", "is a character device, not a regular file"}};
    // a PNG signature and an IHDR chunk of w x h, 8-bit RGB (what stbi_info reads), then nothing
    uint8_t header[33] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R' };
    header[24] = 8; header[25] = 2;
    const uint32_t sizes[3][2] = { { 18000, 18000 }, { 4, 0 }, { 20000, 1 } };
    uint8_t tga[41] = { 0, 0, 2 };
    tga[12] = 12320 & 255; tga[13] = 12320 >> 8; tga[14] = 33607 & 255; tga[15] = 33607 >> 8; tga[16] = 24;
    unsigned seed = 3;
    uint8_t noise[64 * 64 * 3];
    for (size_t i = 0; i < sizeof noise; i++) noise[i] = (uint8_t)img_rand(&seed);
    img_write(path, dir, "noise.png", 64, 64, 3, noise);
    FILE* fp = fopenCheck(path, "rb");
    long size = file_size(fp, path);
    uint8_t* png = (uint8_t*)mallocCheck((size_t)size);
    freadCheck(png, 1, (size_t)size, fp, path);
    fclose(fp);
    img_write(path, dir, "noise.jpg", 64, 64, 3, noise);
    fp = fopenCheck(path, "rb");
    long jpeg_size = file_size(fp, path);
    uint8_t* jpeg = (uint8_t*)mallocCheck((size_t)jpeg_size);
    freadCheck(jpeg, 1, (size_t)jpeg_size, fp, path);
    fclose(fp);
    for (int t = 0; t < CASES; t++) {
        if (t == 0) snprintf(bad, sizeof bad, "%s/missing.png", dir);
        if (t == 1) snprintf(bad, sizeof bad, "%s", dir);
        if (t == 2) { snprintf(bad, sizeof bad, "%s/empty.png", dir); img_write_bytes(bad, "", 0); }
        if (t == 3) { snprintf(bad, sizeof bad, "%s/text.png", dir); img_write_bytes(bad, "hello, world\n", 13); }
        if (t == 4) { snprintf(bad, sizeof bad, "%s/cut.png", dir); img_write_bytes(bad, png, (size_t)size / 2); }
        if (t == 5) { snprintf(bad, sizeof bad, "%s/x.png", dir); img_write_bytes(bad, "P6\n4 0\n255\n", 11); }
        if (t == 6) { snprintf(bad, sizeof bad, "%s/bomb.tga", dir); img_write_bytes(bad, tga, sizeof tga); }
        if (t >= 7 && t <= 9) {
            for (int k = 0; k < 4; k++) {
                header[16 + k] = (uint8_t)(sizes[t - 7][0] >> (24 - 8 * k));
                header[20 + k] = (uint8_t)(sizes[t - 7][1] >> (24 - 8 * k));
            }
            snprintf(bad, sizeof bad, "%s/claims%d.png", dir, t);
            img_write_bytes(bad, header, sizeof header);
        }
        if (t == 10) {
            snprintf(bad, sizeof bad, "%s/fifo.png", dir);
            if (mkfifo(bad, 0600) != 0) fail("mkfifo %s: %s", bad, strerror(errno));
            alarm(10); // a hang ends the test with SIGALRM instead of never
        }
        // the fuzzer's reproducers of two defects of Debian's stb_image (dev/fuzz/README.md)
        if (t == 11) snprintf(bad, sizeof bad, "dev/fuzz/crashes/stb_jpeg_dht_777_codes.jpg");
        if (t == 12) snprintf(bad, sizeof bad, "dev/fuzz/crashes/stb_jpeg_undefined_huffman_table.jpg");
        if (t == 13) { snprintf(bad, sizeof bad, "%s/cut.jpg", dir); img_write_bytes(bad, jpeg, (size_t)jpeg_size / 2); }
        if (t == 14) { snprintf(bad, sizeof bad, "%s/no_iend.png", dir); img_write_bytes(bad, png, (size_t)size - 12); } // IEND: 12 bytes
        if (t == 15) snprintf(bad, sizeof bad, "/dev/zero");
        err[0] = '\0';
        int loaded = image_load(bad, 8, out, err, sizeof err);
        alarm(0);
        report(cases[t].what, !loaded && strstr(err, bad) && strstr(err, cases[t].reason), "%s", err);
    }
    free(png);
    free(jpeg);
    img_rmtree(dir);
}

// ----------------------------------------------------------------------------
// PNG grids

static void check_png_grid(void) {
    char dir[256], path[4096], tmp[4200];
    img_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/grid.png", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    enum { N = 5, S = 6 };
    float images[N * S * S * 3];
    unsigned seed = 11;
    for (int i = 0; i < N * S * S * 3; i++) images[i] = (img_rand(&seed) % 20001) / 10000.0f - 1.0f;

    // 5 images, 3 columns, scale 1: 22×14, separators and the empty cell grey
    png_write_grid(path, images, N, S, 3, 1);
    int w, h, comp;
    uint8_t* px = stbi_load(path, &w, &h, &comp, 3);
    if (px == NULL || w != 3 * S + 2 * GRID_SEPARATOR || h != 2 * S + GRID_SEPARATOR) {
        report("grid: layout and values", 0, "got %d×%d, want %d×%d", px ? w : 0, px ? h : 0, 3 * S + 4, 2 * S + 2);
    } else {
        float err = 0.0f;
        int grey_ok = 1;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int row = y / (S + GRID_SEPARATOR), col = x / (S + GRID_SEPARATOR);
                int iy = y % (S + GRID_SEPARATOR), ix = x % (S + GRID_SEPARATOR), b = row * 3 + col;
                for (int c = 0; c < 3; c++) {
                    uint8_t v = px[(y * w + x) * 3 + c];
                    if (iy >= S || ix >= S || b >= N) { grey_ok &= v == GRID_SEPARATOR_GREY; continue; }
                    err = fmaxf(err, fabsf(v / 127.5f - 1.0f - images[((b * S + iy) * S + ix) * 3 + c]));
                }
            }
        report("grid: layout and values", grey_ok && err <= 1.0f / 255 + 1e-6f, "%d×%d, max err %.2f/255, separators %s",
               w, h, err * 255, grey_ok ? "grey" : "WRONG");
    }
    stbi_image_free(px);

    // scale ×4 read back through image_load (box /4 of 4×4 blocks): within 1/255
    float back[S * S * 3];
    png_write_grid(path, images, 1, S, 1, 4);
    if (img_load_ok("grid: round trip through image_load", path, S, back)) {
        float err = 0.0f;
        for (int i = 0; i < S * S * 3; i++) err = fmaxf(err, fabsf(back[i] - images[i]));
        report("grid: round trip through image_load", err <= 1.0f / 255 + 1e-6f && access(tmp, F_OK) != 0,
               "scale 4, max err %.2f/255, %s", err * 255, access(tmp, F_OK) != 0 ? "no temp file left" : "TEMP FILE LEFT");
    }

    // clamping: 2, -3, NaN, +inf, -inf, 1 -> 255, 0, 0, 255, 0, 255
    float odd[6] = {2.0f, -3.0f, NAN, INFINITY, -INFINITY, 1.0f};
    const uint8_t want[6] = {255, 0, 0, 255, 0, 255};
    png_write_grid(path, odd, 1, 1, 1, 1);
    px = stbi_load(path, &w, &h, &comp, 3);
    int ok = px != NULL && w == 1 && h == 1;
    uint8_t got[3] = {0, 0, 0};
    if (ok) { memcpy(got, px, 3); ok = memcmp(got, want, 3) == 0; }
    stbi_image_free(px);
    png_write_grid(path, odd + 3, 1, 1, 1, 1);
    px = stbi_load(path, &w, &h, &comp, 3);
    ok = ok && px != NULL && memcmp(px, want + 3, 3) == 0;
    report("grid: clamps, NaN -> black", ok, "(2, -3, NaN) -> (%d, %d, %d), (inf, -inf, 1) -> (%d, %d, %d)",
           got[0], got[1], got[2], px ? px[0] : -1, px ? px[1] : -1, px ? px[2] : -1);
    stbi_image_free(px);

    // default scale for 32×32: ×4
    float* big = (float*)callocCheck(2 * 32 * 32 * 3, sizeof(float));
    png_write_grid(path, big, 2, 32, 2, 0);
    free(big);
    ok = stbi_info(path, &w, &h, &comp);
    report("grid: default scale x4 for 32x32", ok && w == 2 * 128 + GRID_SEPARATOR && h == 128, "%d×%d", w, h);

    expect_exit_1("grid: unwritable path exits with a message", try_grid, "/nonexistent_vlv_dir/grid.png", NULL,
                        "/nonexistent_vlv_dir/grid.png", "could not open");
    img_rmtree(dir);
}

// ----------------------------------------------------------------------------
// IDX files

// writes an IDX file: magic, dims (big-endian), data; gzip-compressed if gz
static void img_write_idx(const char* path, uint32_t magic, int ndim, const uint32_t* dims, const uint8_t* data,
                          size_t n, int gz) {
    uint8_t header[16];
    for (int i = 0; i <= ndim; i++) {
        uint32_t v = i == 0 ? magic : dims[i - 1];
        header[4 * i] = (uint8_t)(v >> 24); header[4 * i + 1] = (uint8_t)(v >> 16);
        header[4 * i + 2] = (uint8_t)(v >> 8); header[4 * i + 3] = (uint8_t)v;
    }
    if (!gz) {
        FILE* fp = fopenCheck(path, "wb");
        fwriteCheck(header, 1, 4 + 4 * (size_t)ndim, fp, path);
        fwriteCheck(data, 1, n, fp, path);
        fcloseCheck(fp, path);
        return;
    }
    gzFile g = gzopen(path, "wb");
    if (g == NULL || gzwrite(g, header, 4 + 4 * (unsigned)ndim) <= 0 || (n && gzwrite(g, data, (unsigned)n) <= 0) ||
        gzclose(g) != Z_OK) {
        fail("test setup: could not write '%s'", path);
    }
}

static void check_idx_synthetic(void) {
    char dir[256], images[4096], labels[4096];
    img_tmpdir(dir, sizeof dir);
    uint8_t data[3 * 4 * 5], lab[3] = {2, 0, 9};
    for (int i = 0; i < 60; i++) data[i] = (uint8_t)(i * 4);
    uint32_t di[3] = {3, 4, 5}, dl[1] = {3};
    for (int gz = 0; gz < 2; gz++) {
        snprintf(images, sizeof images, "%s/images%s", dir, gz ? ".gz" : "");
        snprintf(labels, sizeof labels, "%s/labels%s", dir, gz ? ".gz" : "");
        img_write_idx(images, IDX_IMAGES_MAGIC, 3, di, data, sizeof data, gz);
        img_write_idx(labels, IDX_LABELS_MAGIC, 1, dl, lab, 3, gz);
        IdxDataset d;
        idx_load(&d, images, labels);
        int ok = d.n == 3 && d.rows == 4 && d.cols == 5 && memcmp(d.images, data, 60) == 0 && memcmp(d.labels, lab, 3) == 0;
        report(gz ? "idx: synthetic, gzip-compressed" : "idx: synthetic, plain", ok, "n %d, %d×%d", d.n, d.rows, d.cols);

        // a 4×5 image on 8×8: offset (2, 1), black around; on 3×3: centre crop + box
        float out[8 * 8 * 3];
        idx_image(&d, 1, 8, out);
        float err = 0.0f;
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                int inside = y >= 2 && y < 6 && x >= 1 && x < 6;
                float want = inside ? d.images[20 + (y - 2) * 5 + x - 1] / 127.5f - 1.0f : -1.0f;
                for (int c = 0; c < 3; c++) err = fmaxf(err, fabsf(out[(y * 8 + x) * 3 + c] - want));
            }
        if (gz) report("idx: image padded (centred)", err < 1e-6f, "4×5 on 8×8, max err %.1e", err);
        idx_free(&d);
    }

    // a 28×28 image shrunk to 14: box /2 = mean of each 2×2 block
    IdxDataset d = {1, 28, 28, NULL, NULL};
    uint8_t img28[28 * 28];
    unsigned seed = 5;
    for (int i = 0; i < 28 * 28; i++) img28[i] = (uint8_t)img_rand(&seed);
    d.images = img28;
    float out[14 * 14 * 3];
    idx_image(&d, 0, 14, out);
    float err = 0.0f;
    for (int y = 0; y < 14; y++)
        for (int x = 0; x < 14; x++) {
            float mean = (img28[2 * y * 28 + 2 * x] + img28[2 * y * 28 + 2 * x + 1] + img28[(2 * y + 1) * 28 + 2 * x] +
                          img28[(2 * y + 1) * 28 + 2 * x + 1]) / 4.0f;
            err = fmaxf(err, fabsf(out[(y * 14 + x) * 3 + 2] - (mean / 127.5f - 1.0f)));
        }
    report("idx: image shrunk (box)", err < 1e-5f, "28 -> 14, max err %.1e", err);

    // captions name the class, and read back
    int ok = strcmp(FASHION_MNIST_CAPTIONS[7], "a photo of a sneaker") == 0 &&
             strcmp(FASHION_MNIST_CAPTIONS[9], "a photo of an ankle boot") == 0 && fashion_mnist_class_of("a photo of a") == -1;
    for (int c = 0; c < 10; c++) ok &= fashion_mnist_class_of(FASHION_MNIST_CAPTIONS[c]) == c && strstr(FASHION_MNIST_CAPTIONS[c], FASHION_MNIST_CLASSES[c]);
    report("fashion-mnist: captions and their classes", ok, "'%s' ... '%s'", FASHION_MNIST_CAPTIONS[0], FASHION_MNIST_CAPTIONS[9]);
    img_rmtree(dir);
}

static void check_idx_broken(void) {
    char dir[256], images[4096], labels[4096], bad[4096], bad2[4096];
    img_tmpdir(dir, sizeof dir);
    uint8_t data[2 * 28 * 28] = {0}, lab[3] = {1, 2, 3};
    uint32_t di[3] = {2, 28, 28}, dl[1] = {2};
    snprintf(images, sizeof images, "%s/train-images-idx3-ubyte", dir);
    snprintf(labels, sizeof labels, "%s/train-labels-idx1-ubyte", dir);
    img_write_idx(images, IDX_IMAGES_MAGIC, 3, di, data, sizeof data, 0);
    img_write_idx(labels, IDX_LABELS_MAGIC, 1, dl, lab, 2, 0);
    IdxDataset d;
    fashion_mnist_load(&d, dir, "train");
    report("fashion-mnist: plain (not .gz) files", d.n == 2 && d.labels[1] == 2, "n %d", d.n);
    idx_free(&d);

    snprintf(bad, sizeof bad, "%s/bad", dir);
    snprintf(bad2, sizeof bad2, "%s/bad2", dir);
    expect_exit_1("idx: missing file", try_idx_load, bad, labels, bad, "could not open");
    expect_exit_1("idx: wrong magic (labels as images)", try_idx_load, labels, labels, labels, "magic");
    img_write_idx(bad, IDX_IMAGES_MAGIC, 3, di, data, sizeof data - 1, 0);
    expect_exit_1("idx: truncated by 1 byte", try_idx_load, bad, labels, bad, "truncated");
    img_write_idx(bad, IDX_IMAGES_MAGIC, 3, di, data, sizeof data, 0);
    FILE* fp = fopenCheck(bad, "ab");
    fputc(0, fp);
    fclose(fp);
    expect_exit_1("idx: 1 trailing byte", try_idx_load, bad, labels, bad, "trailing data");
    img_write_bytes(bad, "\x00\x00\x08\x03\x00\x00", 6);
    expect_exit_1("idx: shorter than its header", try_idx_load, bad, labels, bad, "shorter than its IDX header");
    uint32_t zero[3] = {2, 0, 28};
    img_write_idx(bad, IDX_IMAGES_MAGIC, 3, zero, data, 0, 0);
    expect_exit_1("idx: zero dimension", try_idx_load, bad, labels, bad, "implausible");
    img_write_idx(bad2, IDX_LABELS_MAGIC, 1, (const uint32_t[]){3}, lab, 3, 0);
    expect_exit_1("idx: 2 images but 3 labels", try_idx_load, images, bad2, bad2, "must belong together");

    // gzip: decompressed size short of the header's, and a cut compressed stream
    img_write_idx(bad, IDX_IMAGES_MAGIC, 3, di, data, sizeof data / 2, 1);
    expect_exit_1("idx: gzip, data short of the header", try_idx_load, bad, labels, bad, "(decompressed)");
    img_write_idx(bad, IDX_IMAGES_MAGIC, 3, di, data, sizeof data, 1);
    fp = fopenCheck(bad, "rb");
    long size = file_size(fp, bad);
    uint8_t* gz = (uint8_t*)mallocCheck((size_t)size);
    freadCheck(gz, 1, (size_t)size, fp, bad);
    fclose(fp);
    img_write_bytes(bad, gz, (size_t)size - 6);
    expect_exit_1("idx: gzip stream cut short", try_idx_load, bad, labels, bad, "corrupt or truncated");
    gz[size / 2] ^= 0x55;
    img_write_bytes(bad, gz, (size_t)size);
    free(gz);
    expect_exit_1("idx: gzip stream with a flipped byte", try_idx_load, bad, labels, bad, "corrupt or truncated");

    // bombs: a header claiming 2^31 - 1 images of 28×28 (58 TB) is refused before anything is
    // allocated; 10 MB of zeros behind a header of 2 images (a 10 KB gzip file) is read only
    // up to the byte past what the header claims
    uint32_t huge[3] = {0x7FFFFFFFu, 28, 28};
    img_write_idx(bad, IDX_IMAGES_MAGIC, 3, huge, data, sizeof data, 1);
    expect_exit_1("idx: a header claiming 58 TB", try_idx_load, bad, labels, bad, "more than the");
    size_t bomb_n = 10u << 20;
    uint8_t* bomb = (uint8_t*)callocCheck(bomb_n, 1);
    img_write_idx(bad, IDX_IMAGES_MAGIC, 3, di, bomb, bomb_n, 1);
    free(bomb);
    expect_exit_1("idx: a 10 MB gzip bomb behind a 2-image header", try_idx_load, bad, labels, bad, "trailing data (decompressed)");

    // Fashion-MNIST's own rules: 28×28, labels 0..9, files present
    uint32_t small[3] = {2, 27, 28};
    img_write_idx(images, IDX_IMAGES_MAGIC, 3, small, data, 2 * 27 * 28, 0);
    expect_exit_1("fashion-mnist: 27x28 images", try_fashion_mnist, dir, "train", images, "28×28");
    img_write_idx(images, IDX_IMAGES_MAGIC, 3, di, data, sizeof data, 0);
    lab[1] = 10;
    img_write_idx(labels, IDX_LABELS_MAGIC, 1, dl, lab, 2, 0);
    expect_exit_1("fashion-mnist: label 10", try_fashion_mnist, dir, "train", labels, "not a class");
    expect_exit_1("fashion-mnist: missing split", try_fashion_mnist, dir, "t10k", "t10k-images-idx3-ubyte.gz",
                        "apt-get install dataset-fashion-mnist");
    img_rmtree(dir);
}

static void check_fashion_mnist_real(void) {
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/train-images-idx3-ubyte.gz", FASHION_MNIST_DIR);
    if (access(probe, R_OK) != 0) {
        printf("skip %-44s %s not installed (apt-get install dataset-fashion-mnist)\n", "fashion-mnist: the real files", probe);
        return;
    }
    const char* splits[2] = {"train", "t10k"};
    const int counts[2] = {60000, 10000};
    for (int s = 0; s < 2; s++) {
        IdxDataset d;
        fashion_mnist_load(&d, FASHION_MNIST_DIR, splits[s]);
        int per_class[10] = {0}, balanced = 1;
        for (int i = 0; i < d.n; i++) per_class[d.labels[i]]++;
        for (int c = 0; c < 10; c++) balanced &= per_class[c] == counts[s] / 10;
        double mean = 0.0; // of pixels in [0, 1]: 0.2860 (train, the published figure), 0.2868 (test)
        for (size_t i = 0; i < (size_t)d.n * 28 * 28; i++) mean += d.images[i] / 255.0;
        mean /= (double)d.n * 28 * 28;
        char name[64];
        snprintf(name, sizeof name, "fashion-mnist: %s split", splits[s]);
        report(name, d.n == counts[s] && d.rows == 28 && d.cols == 28 && balanced && fabs(mean - (s ? 0.2868 : 0.2860)) < 0.0001,
               "%d images %d×%d, %d per class, pixel mean %.4f", d.n, d.rows, d.cols, per_class[0], mean);
        if (s == 1) {
            float out[32 * 32 * 3];
            idx_image(&d, 0, 32, out);
            float border = 0.0f;
            for (int i = 0; i < 32; i++) // rows 0, 1, 30, 31 are padding
                for (int c = 0; c < 3; c++) border = fmaxf(border, fabsf(out[i * 3 + c] + 1.0f) + fabsf(out[(31 * 32 + i) * 3 + c] + 1.0f));
            report("fashion-mnist: test image 0 padded to 32", border == 0.0f && d.labels[0] == 9,
                   "label %d (%s), border %s", d.labels[0], FASHION_MNIST_CAPTIONS[d.labels[0]], border == 0.0f ? "black" : "NOT BLACK");
        }
        idx_free(&d);
    }
}

// ----------------------------------------------------------------------------
// image folders and caption files

static void check_image_folder(void) {
    char dir[256], path[4096], tsv[4096], sub[4096], expect[4096];
    img_tmpdir(dir, sizeof dir);
    uint8_t px[4 * 4 * 3];
    for (int i = 0; i < 48; i++) px[i] = (uint8_t)(i * 5);
    const char* files[6] = {"b.png", "a.jpg", "C.PNG", "d.jpeg", ".hidden.png", "z.bmp"};
    for (int i = 0; i < 6; i++) img_write(path, dir, files[i], 4, 4, 3, px);
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    img_write_bytes(path, "x", 1);
    snprintf(sub, sizeof sub, "%s/e.png", dir); // a folder with an image's name
    if (mkdir(sub, 0700) != 0) fail("test setup: mkdir '%s': %s", sub, strerror(errno));

    ImageFolder f;
    image_folder_open(&f, dir, NULL);
    const char* want[4] = {"C.PNG", "a.jpg", "b.png", "d.jpeg"};
    int ok = f.count == 4 && f.captions == NULL;
    for (int i = 0; ok && i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, want[i]);
        float out[4 * 4 * 3];
        char err[512];
        ok = strcmp(f.names[i], want[i]) == 0 && strcmp(f.paths[i], path) == 0 && image_load(f.paths[i], 4, out, err, sizeof err);
    }
    report("folder: PNG/JPEG files, sorted", ok, "%d files: %s %s %s %s", f.count, f.count > 0 ? f.names[0] : "",
           f.count > 1 ? f.names[1] : "", f.count > 2 ? f.names[2] : "", f.count > 3 ? f.names[3] : "");
    image_folder_free(&f);

    // BOM, CRLF, a blank line, spaces around a caption, no final newline; two images uncaptioned
    snprintf(tsv, sizeof tsv, "%s/captions.tsv", dir);
    const char* text = "\xEF\xBB\xBF" "b.png\ta small red circle\r\n\r\nC.PNG\t  two words \r\nd.jpeg\tlast line";
    img_write_bytes(tsv, text, strlen(text));
    image_folder_open(&f, dir, tsv);
    ok = f.num_captioned == 3 && f.captions[1] == NULL && strcmp(f.captions[0], "two words") == 0 &&
         strcmp(f.captions[2], "a small red circle") == 0 && strcmp(f.captions[3], "last line") == 0;
    report("folder: captions", ok, "BOM, CRLF, blank line, no final LF: %d of %d captioned", f.num_captioned, f.count);
    image_folder_free(&f);

    struct { const char* what; const char* text; const char* reason; } bad[6] = {
        {"captions: a line without TAB", "b.png\tok\nC.PNG two words\n", ":2: no TAB"},
        {"captions: empty caption", "b.png\t  \r\n", ":1: empty caption"},
        {"captions: unknown file", "b.png\tx\nnotes.txt\ty\n", ":2: 'notes.txt' is not a PNG/JPEG"},
        {"captions: file listed twice", "b.png\tx\na.jpg\ty\nb.png\tz\n", ":3: 'b.png' was already captioned on line 1"},
        {"captions: a second TAB", "b.png\tx\ty\n", ":1: a second TAB"},
        {"captions: old Mac CR-only lines", "b.png\tx\rC.PNG\ty\r", ":1: a second TAB"}};
    for (int t = 0; t < 6; t++) {
        img_write_bytes(tsv, bad[t].text, strlen(bad[t].text));
        snprintf(expect, sizeof expect, "%s%s", tsv, bad[t].reason);
        expect_exit_1(bad[t].what, try_folder, dir, tsv, tsv, expect);
    }
    snprintf(path, sizeof path, "%s/missing.tsv", dir);
    expect_exit_1("captions: missing file", try_folder, dir, path, path, "could not open");
    expect_exit_1("folder: no images", try_folder, sub, NULL, sub, "has no .png/.jpg/.jpeg files");
    snprintf(path, sizeof path, "%s/nowhere", dir);
    expect_exit_1("folder: missing", try_folder, path, NULL, path, "could not open image folder");
    img_rmtree(dir);
}

int main(void) {
    check_image_crop_resize();
    check_image_load_errors();
    check_png_grid();
    check_idx_synthetic();
    check_idx_broken();
    check_fashion_mnist_real();
    check_image_folder();
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
