/*
Image files (doc/images.md): any image file -> S×S RGB floats in [-1, 1] (centre crop, box
filter when shrinking, bilinear when enlarging), and PNG grids of results. The datasets built
on them (Fashion-MNIST, image folders) are datasets.h. Host-side, valid C and C++.

Images are float [S, S, 3] (height, width, channel), pixel value v in 0..255 -> v/127.5 - 1.

Link with -lstb (Debian libstb-dev: stb_image and stb_image_write, compiled).
*/
#ifndef VLVC_IMAGES_H
#define VLVC_IMAGES_H

#include <math.h>
#include <unistd.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#include "utils.h"
#include "font.h"

// ----------------------------------------------------------------------------
// resampling

// One axis of a separable resize from n_in to n_out samples: output i is the sum over
// k < taps of weight[i*taps + k] * input[index[i*taps + k]].
typedef struct {
    int taps;
    int* index;
    float* weight;
} Resampler;

// Shrinking: each output averages the inputs its footprint [i, i+1)·n_in/n_out covers,
// weighted by the overlap (a box filter: exact area averaging, for any ratio, so the mean is
// kept). Enlarging (or equal sizes: the identity): bilinear between pixel centres, clamped at
// the edges (PyTorch's interpolate(mode="bilinear", align_corners=False)).
static Resampler resampler_make(int n_in, int n_out) {
    Resampler r;
    double scale = (double)n_in / n_out;
    r.taps = n_in > n_out ? (int)ceil(scale) + 1 : 2;
    if (r.taps > n_in) { r.taps = n_in; }
    r.index = (int*)mallocCheck((size_t)n_out * r.taps * sizeof(int));
    r.weight = (float*)mallocCheck((size_t)n_out * r.taps * sizeof(float));
    for (int i = 0; i < n_out; i++) {
        int* idx = r.index + (size_t)i * r.taps;
        float* w = r.weight + (size_t)i * r.taps;
        if (n_in > n_out) {
            double lo = i * scale, hi = (i + 1) * scale;
            int first = (int)floor(lo);
            if (first > n_in - r.taps) { first = n_in - r.taps; }
            for (int k = 0; k < r.taps; k++) {
                double overlap = fmin(hi, first + k + 1.0) - fmax(lo, (double)(first + k));
                idx[k] = first + k;
                w[k] = overlap > 0.0 ? (float)(overlap / scale) : 0.0f;
            }
        } else {
            double src = fmin(fmax((i + 0.5) * scale - 0.5, 0.0), n_in - 1.0);
            int i0 = (int)floor(src);
            idx[0] = i0;
            w[0] = (float)(1.0 - (src - i0));
            if (r.taps == 2) { idx[1] = i0 + 1 < n_in ? i0 + 1 : i0; w[1] = (float)(src - i0); }
        }
    }
    return r;
}

static void resampler_free(Resampler* r) { free(r->index); free(r->weight); }

// Centre-crops a w×h 8-bit image (channels 1 = grey, replicated to RGB, or 3 = RGB) to a
// square of side min(w, h) (offset floor((w-side)/2), floor((h-side)/2)) and resizes it to
// S×S RGB floats in [-1, 1]. Separable: along each row first, then along each column.
static void crop_resize(const uint8_t* src, int w, int h, int channels, int S, float* out) {
    int side = w < h ? w : h, x0 = (w - side) / 2, y0 = (h - side) / 2;
    Resampler r = resampler_make(side, S);
    float* rows = (float*)mallocCheck((size_t)side * S * 3 * sizeof(float)); // [side, S, 3]
    for (int y = 0; y < side; y++) {
        const uint8_t* line = src + ((size_t)(y0 + y) * w + x0) * channels;
        for (int x = 0; x < S; x++) {
            for (int c = 0; c < 3; c++) {
                float sum = 0.0f;
                for (int k = 0; k < r.taps; k++) {
                    size_t at = (size_t)r.index[x * r.taps + k] * channels + (channels == 1 ? 0 : c);
                    sum += r.weight[x * r.taps + k] * line[at];
                }
                rows[((size_t)y * S + x) * 3 + c] = sum;
            }
        }
    }
    for (int y = 0; y < S; y++) {
        for (int i = 0; i < S * 3; i++) {
            float sum = 0.0f;
            for (int k = 0; k < r.taps; k++) { sum += r.weight[y * r.taps + k] * rows[(size_t)r.index[y * r.taps + k] * S * 3 + i]; }
            float v = sum / 127.5f - 1.0f; // the weights sum to 1 up to rounding: keep [-1, 1] exact
            out[(size_t)y * S * 3 + i] = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
        }
    }
    free(rows);
    resampler_free(&r);
}

// ----------------------------------------------------------------------------
// loading any image file

// formats the message for image_load's caller (vsnprintf: a long path is cut, not overflowed)
__attribute__((format(printf, 3, 4)))
static int image_error(char* err, size_t err_size, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return 0;
}

// The decoder sees only what is meant: PNG and JPEG (by their signatures, whatever the name),
// of sides 1..IMAGE_MAX_SIDE and at most IMAGE_MAX_PIXELS in all, read from the header by
// stbi_info before anything is decoded. A small file cannot claim a huge image (a
// decompression bomb) and a side of 0 never reaches the resampler.
#define IMAGE_MAX_SIDE 16384
#define IMAGE_MAX_PIXELS (1L << 25) // 32 M pixels: 96 MB of RGB bytes at most
#define IMAGE_MAX_BYTES (1ull << 28) // 256 MiB: more than any PNG or JPEG of IMAGE_MAX_PIXELS takes
static inline int image_signature_ok(const uint8_t* sig, size_t n) {
    static const uint8_t png[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    int is_png = n >= 8 && memcmp(sig, png, 8) == 0;
    int is_jpeg = n >= 3 && sig[0] == 0xFF && sig[1] == 0xD8 && sig[2] == 0xFF;
    return is_png || is_jpeg;
}

// Two JPEG defects of the stb_image that Debian ships (libstb-dev 0.0~git20220908): a Huffman
// table of more than 256 codes overflows its arrays (stbi__build_huffman), and a scan that
// uses a table no DHT segment defined decodes with uninitialized memory (its STBI_ASSERT may
// then abort the program). Walks the segments as stb_image reads them, zeros past the end
// included: 0 if either occurs, 1 otherwise (the rest is stb_image's to judge).
static int jpeg_byte(FILE* fp) { int c = getc(fp); return c == EOF ? 0 : c; }
static int jpeg_tables_ok(FILE* fp) {
    int defined[2][4] = { { 0 } }; // [DC, AC][table id]
    rewind(fp);
    for (int c = getc(fp); c != EOF; c = getc(fp)) {
        if (c != 0xFF) { continue; }                  // entropy-coded data of a scan
        do { c = getc(fp); } while (c == 0xFF);       // fill bytes
        if (c == EOF || c == 0xD9) { return 1; }      // end of image
        if (c == 0x00 || c == 0x01 || (c >= 0xD0 && c <= 0xD8)) { continue; } // stuffed 0, TEM, RSTn, SOI: no length
        int high = jpeg_byte(fp);
        long left = (high << 8 | jpeg_byte(fp)) - 2;  // the segment's length after these 2 bytes
        if (c == 0xC4) {                              // DHT: (class << 4 | id, 16 counts, the symbols) ...
            while (left > 0) {
                int q = jpeg_byte(fp), n = 0;
                for (int i = 0; i < 16; i++) { n += jpeg_byte(fp); }
                if (n > 256) { return 0; }
                if (q >> 4 <= 1 && (q & 15) <= 3) { defined[q >> 4][q & 15] = 1; }
                left -= 17 + n;
                if (fseek(fp, n, SEEK_CUR) != 0) { return 1; }
            }
            continue;
        }
        if (c == 0xDA) {                              // SOS: count, (component, DC << 4 | AC) ..., Ss, Se, Ah << 4 | Al
            int count = jpeg_byte(fp), tables[4] = { 0 };
            if (count < 1 || count > 4) { return 1; }
            for (int i = 0; i < count; i++) { jpeg_byte(fp); tables[i] = jpeg_byte(fp); }
            int ss = jpeg_byte(fp), se = jpeg_byte(fp), a = jpeg_byte(fp);
            for (int i = 0; i < count; i++) {
                int dc = tables[i] >> 4, ac = tables[i] & 15;
                if (dc > 3 || ac > 3) { return 1; }
                if (ss == 0 && a >> 4 == 0 && !defined[0][dc]) { return 0; } // a first DC scan (or baseline)
                if (se > 0 && !defined[1][ac]) { return 0; }
            }
            left -= 1 + 2 * count + 3;
        }
        if (left > 0 && fseek(fp, left, SEEK_CUR) != 0) { return 1; }
    }
    return 1;
}

// Where a file that stb_image cannot decode, or that it would decode from zeros past the end,
// was cut: NULL when it is whole. A PNG is whole when its IEND chunk is (each chunk: a 4-byte
// big-endian length, a 4-byte type, the data, a 4-byte CRC); a JPEG when an end-of-image marker
// (FF D9) follows its first start-of-scan (FF DA): the scan's data never holds FF D9, since an
// FF in it is always followed by 00 or a restart marker.
static const char* image_cut(FILE* fp, const char* path, int is_png) {
    long size = file_size(fp, path);
    if (is_png) {
        for (long at = 8; ; ) {
            uint8_t head[8];
            if (fseek(fp, at, SEEK_SET) != 0 || fread(head, 1, 8, fp) != 8) { return "it ends before its IEND chunk"; }
            long len = (long)head[0] << 24 | head[1] << 16 | head[2] << 8 | head[3];
            if (at + 12 + len > size) { return memcmp(head + 4, "IDAT", 4) == 0 ? "it ends inside an IDAT chunk, the pixels" : "it ends inside a chunk"; }
            if (memcmp(head + 4, "IEND", 4) == 0) { return NULL; }
            at += 12 + len;
        }
    }
    rewind(fp);
    int prev = 0, c, scanning = 0;
    while ((c = getc(fp)) != EOF) {
        if (prev == 0xFF && c == 0xDA) { scanning = 1; }
        if (scanning && prev == 0xFF && c == 0xD9) { return NULL; }
        prev = c;
    }
    return scanning ? "no end-of-image marker follows its scan" : "it ends before its first scan";
}

// Loads a PNG (8- or 16-bit, 16 reduced to 8) or JPEG file, grey, grey+alpha, RGB or RGBA
// (alpha dropped), into out [S, S, 3]. Returns 1, or 0 with err saying which file and why: a
// bad image among many is the caller's to report and skip, so this never exits on a bad file.
//   if (!image_load(path, S, img, err, sizeof err)) { fprintf(stderr, "%s\n", err); continue; }
static inline int image_load(const char* path, int S, float* out, char* err, size_t err_size) {
    if (S < 1) { fail("image_load: image size %d must be positive", S); }
    char why[4400];
    FILE* fp = regular_open(path, IMAGE_MAX_BYTES, why, sizeof why);
    if (fp == NULL) { return image_error(err, err_size, "image: %s", why); }
    uint8_t sig[8];
    size_t got = fread(sig, 1, sizeof sig, fp);
    if (!image_signature_ok(sig, got)) {
        fclose(fp);
        return image_error(err, err_size, "could not read image '%s': not a PNG or JPEG file", path);
    }
    if (sig[0] == 0xFF && !jpeg_tables_ok(fp)) {
        fclose(fp);
        return image_error(err, err_size, "could not decode image '%s': a corrupt JPEG (a Huffman table too large or missing)", path);
    }
    const char* format = sig[0] == 0xFF ? "JPEG" : "PNG";
    rewind(fp);
    int w, h, file_channels;
    if (!stbi_info_from_file(fp, &w, &h, &file_channels)) { // its reason is the last format stb tried, not this one's
        const char* cut = image_cut(fp, path, sig[0] != 0xFF);
        fclose(fp);
        if (cut) { return image_error(err, err_size, "could not decode image '%s': a truncated %s (%s)", path, format, cut); }
        return image_error(err, err_size, "could not decode image '%s': a corrupt %s (its header cannot be read)", path, format);
    }
    if (w < 1 || h < 1 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || (long)w * h > IMAGE_MAX_PIXELS) {
        fclose(fp);
        return image_error(err, err_size, "could not read image '%s': it is %d x %d pixels; each side must be 1..%d "
                           "and the image at most %ld pixels", path, w, h, IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
    }
    const char* cut = image_cut(fp, path, sig[0] != 0xFF);
    if (cut) {
        fclose(fp);
        return image_error(err, err_size, "could not decode image '%s': a truncated %s (%s)", path, format, cut);
    }
    rewind(fp);
    int dw, dh;
    uint8_t* pixels = stbi_load_from_file(fp, &dw, &dh, &file_channels, 3);
    fclose(fp);
    if (pixels == NULL) { // stb_image decodes by the signature, so its reason is this format's
        return image_error(err, err_size, "could not decode image '%s': a corrupt %s (stb_image: %s)", path, format, stbi_failure_reason());
    }
    if (dw != w || dh != h) {
        stbi_image_free(pixels);
        return image_error(err, err_size, "could not decode image '%s': its header says %d x %d, its data %d x %d", path, w, h, dw, dh);
    }
    crop_resize(pixels, w, h, 3, S, out);
    stbi_image_free(pixels);
    return 1;
}

// ----------------------------------------------------------------------------
// PNG grids

#define GRID_SEPARATOR 2      // pixels of grey between the images of a grid
#define GRID_SEPARATOR_GREY 128

// [-1, 1] -> 0..255, clamped; NaN -> 0 (black). Tested on the bits: -Ofast assumes no NaNs.
static uint8_t image_byte(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0) { return 0; }
    v = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
    return (uint8_t)(v * 127.5f + 128.0f); // (v + 1)·127.5, rounded to nearest
}

typedef struct { FILE* fp; int failed; } PngSink;

static void png_sink_write(void* ctx, void* data, int size) {
    PngSink* sink = (PngSink*)ctx;
    if (fwrite(data, 1, (size_t)size, sink->fp) != (size_t)size) { sink->failed = 1; }
}

// RGB bytes [H, W, 3] as a PNG at path: written to path.tmp and renamed, so readers never see half a file
static inline void png_save(const char* path, const uint8_t* rgb, int W, int H) {
    PngSink sink = {atomic_open(path), 0};
    int encoded = stbi_write_png_to_func(png_sink_write, &sink, W, H, 3, rgb, W * 3);
    if (!encoded || sink.failed) { fail("writing '%s' failed: %s\n  is the disk full?", path, !encoded ? "the PNG encoder failed" : strerror(errno)); }
    atomic_commit(sink.fp, path);
}

// Writes n images [n, S, S, 3] in [-1, 1] to one PNG: cols per row, row-major, each pixel
// shown as scale×scale pixels, GRID_SEPARATOR grey pixels between images (empty cells grey).
// scale <= 0 picks the smallest factor that makes an image at least 128 pixels wide (×4 for
// 32×32). Written to path.tmp and renamed: readers never see half a file.
static inline void png_write_grid(const char* path, const float* images, int n, int S, int cols, int scale) {
    if (n < 1 || S < 1 || cols < 1) { fail("png_write_grid '%s': bad layout n=%d S=%d cols=%d", path, n, S, cols); }
    if (scale <= 0) { scale = (128 + S - 1) / S; }
    if (cols > n) { cols = n; }
    int rows = (n + cols - 1) / cols, cell = S * scale;
    int W = cols * cell + (cols - 1) * GRID_SEPARATOR, H = rows * cell + (rows - 1) * GRID_SEPARATOR;
    uint8_t* canvas = (uint8_t*)mallocCheck((size_t)W * H * 3);
    memset(canvas, GRID_SEPARATOR_GREY, (size_t)W * H * 3);
    for (int b = 0; b < n; b++) {
        int top = (b / cols) * (cell + GRID_SEPARATOR), left = (b % cols) * (cell + GRID_SEPARATOR);
        for (int y = 0; y < cell; y++) {
            for (int x = 0; x < cell; x++) {
                const float* px = images + (((size_t)b * S + y / scale) * S + x / scale) * 3;
                uint8_t* dst = canvas + ((size_t)(top + y) * W + left + x) * 3;
                for (int c = 0; c < 3; c++) { dst[c] = image_byte(px[c]); }
            }
        }
    }
    png_save(path, canvas, W, H);
    free(canvas);
}

// ----------------------------------------------------------------------------
// labelled pictures: a canvas of RGB bytes with images, text (vlvc/font.h) and lines

typedef struct { int W, H; uint8_t* px; } Canvas;

static inline Canvas canvas_create(int W, int H, uint8_t grey) {
    Canvas c = { W, H, (uint8_t*)mallocCheck((size_t)W * H * 3) };
    memset(c.px, grey, (size_t)W * H * 3);
    return c;
}

static inline void canvas_dot(Canvas* c, int x, int y, const uint8_t rgb[3]) {
    if (x < 0 || y < 0 || x >= c->W || y >= c->H) { return; }
    memcpy(c->px + ((size_t)y * c->W + x) * 3, rgb, 3);
}

// an S x S image with its top-left corner at (x, y), each pixel scale x scale
static inline void canvas_image(Canvas* c, int x, int y, const float* img, int S, int scale) {
    for (int v = 0; v < S * scale; v++) {
        for (int u = 0; u < S * scale; u++) {
            const float* p = img + ((size_t)(v / scale) * S + u / scale) * 3;
            uint8_t rgb[3] = { image_byte(p[0]), image_byte(p[1]), image_byte(p[2]) };
            canvas_dot(c, x + u, y + v, rgb);
        }
    }
}

static inline int text_width(const char* text, int scale) { return (int)strlen(text) * (FONT_W + 1) * scale; }

// text with its top-left corner at (x, y), glyphs scale x scale
static inline void canvas_text(Canvas* c, int x, int y, const char* text, int scale, const uint8_t rgb[3]) {
    for (const char* t = text; *t; t++, x += (FONT_W + 1) * scale) {
        const Glyph* g = font_glyph(*t);
        for (int v = 0; v < FONT_H * scale; v++) {
            for (int u = 0; u < FONT_W * scale; u++) {
                if (g->rows[v / scale][u / scale] == '#') { canvas_dot(c, x + u, y + v + g->drop * scale, rgb); }
            }
        }
    }
}

static inline void canvas_line(Canvas* c, int x0, int y0, int x1, int y1, const uint8_t rgb[3]) {
    int n = abs(x1 - x0) > abs(y1 - y0) ? abs(x1 - x0) : abs(y1 - y0);
    for (int i = 0; i <= n; i++) {
        canvas_dot(c, x0 + (n ? (x1 - x0) * i / n : 0), y0 + (n ? (y1 - y0) * i / n : 0), rgb);
    }
}

static const uint8_t INK[3] = { 235, 235, 235 }, DIM_INK[3] = { 150, 150, 150 }, CURVE_INK[3] = { 90, 170, 255 };
#define LABEL_SCALE 2 // text 10 x 14 px per glyph
#define LABEL_IMAGE_SCALE 2

// rows of k images side by side (the k column headers above them), each row followed by its
// label, in `cols` columns of rows under a title: "prompt | sample" or "original | reconstruction | caption".
// images: row i's k images at i*k .. i*k + k - 1, each [S, S, 3]
static inline void png_write_labelled(const char* path, const char* title, const char* const* headers, int k,
                                      const float* images, const char* const* labels, int n, int S, int cols) {
    if (n < 1 || k < 1 || cols < 1) { fail("png_write_labelled '%s': bad layout n=%d k=%d cols=%d", path, n, k, cols); }
    if (cols > n) { cols = n; }
    int line = (FONT_LINE + 1) * LABEL_SCALE, cell = S * LABEL_IMAGE_SCALE, gap = 6, rows = (n + cols - 1) / cols;
    int label_w = 0;
    for (int i = 0; i < n; i++) { int w = text_width(labels[i], LABEL_SCALE); label_w = w > label_w ? w : label_w; }
    int slot = cell; // an image's column: wide enough for its header too
    for (int j = 0; j < k; j++) { slot = text_width(headers[j], 1) > slot ? text_width(headers[j], 1) : slot; }
    slot += gap;
    int images_w = k * slot;
    int col_w = images_w + label_w + 3 * gap, row_h = (cell > line ? cell : line) + gap;
    int top = line + 2 * gap + FONT_LINE + gap;
    int W = cols * col_w + gap, H = top + rows * row_h + gap;
    if (W < text_width(title, LABEL_SCALE) + 2 * gap) { W = text_width(title, LABEL_SCALE) + 2 * gap; }
    Canvas c = canvas_create(W, H, 40);
    canvas_text(&c, gap, gap, title, LABEL_SCALE, INK);
    for (int col = 0; col < cols; col++) {
        int x = gap + col * col_w;
        for (int j = 0; j < k; j++) { canvas_text(&c, x + j * slot, line + 2 * gap, headers[j], 1, DIM_INK); }
    }
    for (int i = 0; i < n; i++) {
        int x = gap + (i / rows) * col_w, y = top + (i % rows) * row_h;
        for (int j = 0; j < k; j++) { canvas_image(&c, x + j * slot, y, images + (size_t)(i * k + j) * S * S * 3, S, LABEL_IMAGE_SCALE); }
        canvas_text(&c, x + images_w + gap, y + (cell - FONT_H * LABEL_SCALE) / 2, labels[i], LABEL_SCALE, INK);
    }
    png_save(path, c.px, c.W, c.H);
    free(c.px);
}

// a curve y(x) over n points (x increasing), log-scaled y when every y > 0, with its title
// and the x and y ranges written at the axes: the loss curve of a stage
static inline void png_write_curve(const char* path, const char* title, const char* x_name, const double* x,
                                   const double* y, int n) {
    if (n < 1) { fail("png_write_curve '%s': no points", path); }
    int log_y = 1;
    double y_lo = y[0], y_hi = y[0];
    for (int i = 0; i < n; i++) {
        log_y &= y[i] > 0.0;
        y_lo = y[i] < y_lo ? y[i] : y_lo;
        y_hi = y[i] > y_hi ? y[i] : y_hi;
    }
    double f_lo = log_y ? log10(y_lo) : y_lo, f_hi = log_y ? log10(y_hi) : y_hi;
    if (f_hi - f_lo < 1e-12) { f_lo -= 0.5; f_hi += 0.5; }
    double x_lo = x[0], x_hi = x[n - 1] > x[0] ? x[n - 1] : x[0] + 1.0;
    const int H = 400, left = 90, right = 20, top = 40, bottom = 50;
    int W = text_width(title, LABEL_SCALE) + 20 > 640 ? text_width(title, LABEL_SCALE) + 20 : 640;
    Canvas c = canvas_create(W, H, 40);
    canvas_text(&c, 10, 10, title, LABEL_SCALE, INK);
    int x0 = left, x1 = W - right, y0 = H - bottom, y1 = top;
    canvas_line(&c, x0, y0, x1, y0, DIM_INK);
    canvas_line(&c, x0, y0, x0, y1, DIM_INK);
    int px_prev = 0, py_prev = 0;
    for (int i = 0; i < n; i++) {
        double f = log_y ? log10(y[i]) : y[i];
        int px = x0 + (int)((x[i] - x_lo) / (x_hi - x_lo) * (x1 - x0));
        int py = y0 - (int)((f - f_lo) / (f_hi - f_lo) * (y0 - y1));
        if (i) { canvas_line(&c, px_prev, py_prev, px, py, CURVE_INK); } else { canvas_dot(&c, px, py, CURVE_INK); }
        px_prev = px;
        py_prev = py;
    }
    char t[64];
    snprintf(t, sizeof t, "%.3g", y_hi);
    canvas_text(&c, x0 - text_width(t, 1) - 6, y1, t, 1, INK);
    snprintf(t, sizeof t, "%.3g", y_lo);
    canvas_text(&c, x0 - text_width(t, 1) - 6, y0 - FONT_H, t, 1, INK);
    canvas_text(&c, 6, (y0 + y1) / 2, log_y ? "loss (log)" : "loss", 1, DIM_INK);
    snprintf(t, sizeof t, "%.0f", x_lo);
    canvas_text(&c, x0, y0 + 8, t, 1, INK);
    snprintf(t, sizeof t, "%.0f", x_hi);
    canvas_text(&c, x1 - text_width(t, 1), y0 + 8, t, 1, INK);
    canvas_text(&c, (x0 + x1 - text_width(x_name, 1)) / 2, y0 + 8 + 2 * FONT_H, x_name, 1, DIM_INK);
    png_save(path, c.px, c.W, c.H);
    free(c.px);
}

#endif
