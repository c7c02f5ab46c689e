/*
caption.c — caption images with a trained VLV model, and reconstruct them through it.

  ./caption -m runs/default/model.bin photo.png sketch.jpg ...   prints IMAGE<TAB>caption
  ./caption -m MODEL --beams 4 IMAGE...                          beam search instead of greedy
  ./caption -m MODEL --recon roundtrip.png IMAGE...              also image -> z -> DDIM -> image,
                                                                 as a grid of (original | reconstruction)

Any PNG or JPEG of any size is centre-cropped and resized to the model's image size. An image
that is missing or unreadable is reported on stderr and the others are still captioned; the
exit status is then 1. The vocabulary is the run folder's vocab.txt (next to the model), or
--vocab PATH.
*/
#define VLV_NO_MAIN
#include "train_vlv.c"
#include "vlvc/tokenizer.h"
#include "vlvc/images.h"

static void usage(const char* prog) {
    fprintf(stderr,
            "usage: %s -m MODEL [--vocab PATH] [--beams K] [--recon OUT.png] [--steps S] [--guidance W]\n"
            "       [--seed N] [--threads N] IMAGE...\n"
            "  -m MODEL        a checkpoint written by train_vlv (e.g. runs/default/model.bin)\n"
            "  --vocab PATH    the vocabulary (default: vocab.txt next to MODEL)\n"
            "  --beams K       beam search with K beams (default 1: greedy)\n"
            "  --recon OUT     write the round trip of every image as a PNG grid (original | reconstruction)\n"
            "  --steps S       DDIM steps of the round trip (default 50)\n"
            "  --guidance W    classifier-free guidance of the round trip (default 1: none)\n"
            "  --seed N        seed of the round trip's starting noise (default 1)\n"
            "  --threads N     OpenMP threads (default: all cores)\n", prog);
    exit(2);
}

int main(int argc, char** argv) {
    const char *model_path = NULL, *vocab_path = NULL, *recon_path = NULL;
    int beams = 1, steps = 50, n_images = 0;
    float guidance = 1.0f;
    uint64_t seed = 1;
    const char** image_paths = (const char**)mallocCheck(argc * sizeof(char*));
    for (int i = 1; i < argc; i++) { // flags and images in any order
        const char* a = argv[i];
        if (a[0] != '-') { image_paths[n_images++] = a; continue; }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(argv[0]); }
        if (i + 1 >= argc) { fprintf(stderr, "error: %s needs a value\n", a); usage(argv[0]); }
        const char* v = argv[++i];
        if (strcmp(a, "-m") == 0) { model_path = v; }
        else if (strcmp(a, "--vocab") == 0) { vocab_path = v; }
        else if (strcmp(a, "--recon") == 0) { recon_path = v; }
        else if (strcmp(a, "--beams") == 0) { beams = (int)parse_whole(a, v, 1, 64); }
        else if (strcmp(a, "--steps") == 0) { steps = (int)parse_whole(a, v, 1, 1000); }
        else if (strcmp(a, "--seed") == 0) { seed = parse_whole(a, v, 0, 1ull << 40); }
        else if (strcmp(a, "--threads") == 0) {
            int t = (int)parse_whole(a, v, 1, THREADS_MAX);
#ifdef _OPENMP
            omp_set_num_threads(t);
#else
            (void)t;
#endif
        } else if (strcmp(a, "--guidance") == 0) {
            char* end;
            guidance = strtof(v, &end);
            if (*v == '\0' || *end != '\0' || !is_finite_float(guidance)) fail("--guidance: '%s' is not a number", v);
        } else { fprintf(stderr, "error: unknown flag %s\n", a); usage(argv[0]); }
    }
    if (!model_path || n_images == 0) { usage(argv[0]); }

    Model m;
    model_load(&m, model_path, beams); // the batch rows serve as the beams
    const Config* c = &m.config;
    char default_vocab[4096];
    if (!vocab_path) { // vocab.txt in the model's folder
        const char* slash = strrchr(model_path, '/');
        int dir_len = slash ? (int)(slash - model_path) + 1 : 0;
        snprintf(default_vocab, sizeof default_vocab, "%.*svocab.txt", dir_len, model_path);
        vocab_path = default_vocab;
    }
    Vocab vocab;
    vocab_load(&vocab, vocab_path);
    if (vocab.size != c->vocab) fail("'%s' has %d words but '%s' was trained with %d", vocab_path, vocab.size, model_path, c->vocab);

    int S = c->img_size, failures = 0, done = 0;
    size_t per = (size_t)S * S * 3, ctx_row = (size_t)c->n_q * c->d_t;
    float* images = (float*)mallocCheck(m.B * per * sizeof(float));      // the image in every batch row
    float* ctx = (float*)mallocCheck(m.B * ctx_row * sizeof(float));
    float* grid = recon_path ? (float*)mallocCheck(2 * (size_t)n_images * per * sizeof(float)) : NULL;
    char (*said)[1024] = recon_path ? (char(*)[1024])mallocCheck((size_t)n_images * 1024) : NULL; // the grid's labels
    int* tokens = (int*)mallocCheck(c->cap_len * sizeof(int));
    if (recon_path) { empty_context(&m, m.ctx_empty); }
    for (int i = 0; i < n_images; i++) {
        char err[512];
        if (!image_load(image_paths[i], S, images, err, sizeof err)) {
            fprintf(stderr, "error: %s\n", err);
            failures++;
            continue;
        }
        for (int b = 1; b < m.B; b++) { memcpy(images + b * per, images, per * sizeof(float)); }
        image_context(&m, images, ctx);
        beam_caption(&m, tokens, ctx, beams);
        char text[1024];
        vocab_decode(&vocab, tokens, c->cap_len, text, sizeof text);
        printf("%s\t%s\n", image_paths[i], text);
        fflush(stdout);
        if (recon_path) { // image -> z -> TextEnc -> guided DDIM from noise -> image
            uint64_t rng = seed * 0x9E3779B97F4A7C15ull + (uint64_t)i;
            float* x = grid + (2 * (size_t)done + 1) * per;
            memcpy(grid + 2 * (size_t)done * per, images, per * sizeof(float));
            float* xb = (float*)mallocCheck(m.B * per * sizeof(float));
            for (size_t j = 0; j < m.B * per; j++) { xb[j] = random_normal(&rng); }
            ddim_sample(&m, xb, ctx, m.ctx_empty, guidance, steps, steps);
            memcpy(x, xb, per * sizeof(float));
            free(xb);
            snprintf(said[done], sizeof said[done], "%s", text);
        }
        done++;
    }
    if (recon_path && done > 0) {
        const char** labels = (const char**)mallocCheck((size_t)done * sizeof(char*));
        for (int i = 0; i < done; i++) { labels[i] = said[i]; }
        static const char* const headers[2] = { "original", "reconstruction" };
        char title[160];
        snprintf(title, sizeof title, "round trips: image -> z -> the frozen decoder, and the caption (ddim %d, w = %g)", steps, guidance);
        png_write_labelled(recon_path, title, headers, 2, grid, labels, done, S, 1);
        free(labels);
        fprintf(stderr, "wrote %s: %d round trips (original | reconstruction | caption)\n", recon_path, done);
    }
    if (failures) { fprintf(stderr, "%d of %d images could not be read\n", failures, n_images); }
    free(images); free(ctx); free(grid); free(said); free(tokens); free(image_paths);
    vocab_free(&vocab);
    model_free(&m);
    return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
