/*
The evaluation, scored exactly: captions of held-out images (parsed back into scenes), round
trips image -> z -> guided DDIM -> image and text-to-image samples (read by the classical
oracle), each per attribute (shape, colour, size, place); and the stages' health figures.
*/
#ifndef VLVC_EVALUATE_H
#define VLVC_EVALUATE_H

#include "run.h"

// exact scenes, and attributes (shape, colour, size, cell) right per true object
typedef struct { int n, exact, objects, attr[NUM_ATTRS]; double mse; } Score;

static void score_add(Score* sc, const Scene* truth, const Scene* guess) {
    int exact, attr[NUM_ATTRS];
    scene_compare(truth, guess, &exact, attr);
    sc->n++;
    sc->exact += exact;
    sc->objects += truth->n;
    for (int k = 0; k < NUM_ATTRS; k++) { sc->attr[k] += attr[k]; }
}
static float score_exact(const Score* sc) { return sc->n ? (float)sc->exact / sc->n : 0.0f; }
static float score_attr(const Score* sc) {
    int right = 0;
    for (int k = 0; k < NUM_ATTRS; k++) { right += sc->attr[k]; }
    return sc->objects ? right / (float)(NUM_ATTRS * sc->objects) : 0.0f;
}
// "shape 99.2%, colour 99.6%, size 100.0%, place 58.2%": which attribute a score loses on
static void score_attrs_text(const Score* sc, char* out, size_t cap) {
    static const char* names[NUM_ATTRS] = { "shape", "colour", "size", "place" };
    size_t used = 0;
    for (int k = 0; k < NUM_ATTRS && used < cap; k++) {
        used += (size_t)snprintf(out + used, cap - used, "%s%s %.1f%%", k ? ", " : "", names[k],
                                 sc->objects ? 100.0f * sc->attr[k] / sc->objects : 0.0f);
    }
}
// one row of the evaluation table: "| label | 57.4% (shape 99.2%, colour 99.6%, ...) |"
static void say_scored_row(Run* r, const char* label, float fraction, const Score* sc) {
    char attrs[128];
    score_attrs_text(sc, attrs, sizeof attrs);
    say(r, "| %s | %.1f%% (%s) |\n", label, 100 * fraction, attrs);
}

// guided DDIM from fresh noise on the contexts in r->ctx -> r->recon, against the empty
// caption's context (computed here: the decoder's weights change during stage 0). The noise
// is the global batch's; each rank samples its rows, then every rank gets every row.
static void sample_images(Run* r, uint64_t seed) {
    empty_context(r->model, r->ctx_empty);
    uint64_t rng = seed;
    for (size_t i = 0; i < r->img; i++) { r->recon[i] = random_normal(&rng); }
    ddim_sample(r->model, own_images(r, r->recon), r->ctx, r->ctx_empty, r->s.guidance, r->s.sample_steps, r->s.sample_steps);
    dist_gather_blocks(r->recon, r->img / dist_ranks() * sizeof(float));
}

// the conditioning gap of the decoder: its loss on a fixed held-out batch with the true
// captions and with the empty caption. A decoder that ignores its caption has no gap, and
// then stage 1 has nothing to learn from. With with_z, also the loss with the context
// TextEnc(z) of the images themselves (stage 1's loss on that batch): how much of the gap
// the encoder has recovered.
static void conditioning_gap(Run* r, float* with_caption, float* without, float* with_z) {
    uint64_t rng = stream_seed(r->s.seed, 99, 0);
    make_examples(r, SPLIT_TEST, 0, 0, &rng, 0);
    make_noise(r, 1, &rng);
    Batch b = run_batch(r); // the losses are the whole batch's, over the ranks
    *with_caption = vlv_forward(r->model, STAGE0, &b);
    if (with_z) { *with_z = vlv_forward(r->model, STAGE1, &b); }
    for (int i = 0; i < r->B; i++) { empty_caption(r->text_tokens + (size_t)i * model_config(r->model)->n_q, model_config(r->model)->n_q); }
    *without = vlv_forward(r->model, STAGE0, &b);
}

// text-to-image: draws the captions of held-out examples, and in the shapes world the oracle
// reads them back (other sources have no oracle: only the first batch is drawn, for the grid).
// With a tsv name, each prompt and what the oracle read go there, a line per example. Every
// rank scores every example (the samples are gathered); rank 0 writes the files.
static Score eval_t2i(Run* r, const char* grid, const char* tsv) {
    Score sc;
    memset(&sc, 0, sizeof sc);
    int scored = r->src.kind == SOURCE_SHAPES;
    FILE* out = NULL;
    char tsv_path[1100];
    if (tsv && scored && r->root) {
        run_path(r, tsv_path, sizeof tsv_path, tsv);
        out = atomic_open(tsv_path);
        fprintf(out, "index\tprompt\toracle read\n");
    }
    for (int first = 0; first < (scored ? r->s.eval_n : 1); first += r->B) {
        uint64_t rng = 0;
        make_examples(r, SPLIT_TEST, (uint64_t)first, 0, &rng, 0);
        text_context(r->model, run_batch(r).text_tokens, r->ctx);
        sample_images(r, stream_seed(r->s.seed, 98, (uint64_t)first));
        for (int b = 0; b < r->B && first + b < r->s.eval_n && scored; b++) {
            Scene seen;
            oracle_parse(&seen, r->recon + (size_t)b * r->img / r->B, r->H);
            score_add(&sc, &r->truth[b], &seen);
            if (out) {
                char read[CAPTION_MAX];
                scene_caption(read, sizeof read, &seen);
                fprintf(out, "%d\t%s\t%s\n", first + b, r->captions[b], seen.n > 0 ? read : "(no shape read)");
            }
        }
        if (first == 0 && grid && r->root) { // the first samples, each beside its prompt
            char path[1100], txt[1200], title[160];
            run_path(r, path, sizeof path, grid);
            if (snprintf(txt, sizeof txt, "%s.txt", path) >= (int)sizeof txt) fail("the path %s.txt is too long", path);
            int n = r->B < 16 ? r->B : 16;
            const char* labels[16];
            for (int b = 0; b < n; b++) { labels[b] = r->captions[b]; }
            static const char* const header[1] = { "sample" };
            snprintf(title, sizeof title, "text-to-image: the decoder draws each prompt (ddim %d steps, w = %g)",
                     r->s.sample_steps, r->s.guidance);
            png_write_labelled(path, title, header, 1, r->recon, labels, n, r->H, 2);
            FILE* fp = atomic_open(txt);
            for (int b = 0; b < n; b++) { fprintf(fp, "%d\t%s\n", b, r->captions[b]); }
            atomic_commit(fp, txt);
        }
    }
    if (out) { atomic_commit(out, tsv_path); }
    return sc;
}

// The regeneration of one evaluation batch: r->generated's captions as the decoder's prompts,
// the oracle's reading of each drawing scored against r->truth. The noise is eval_t2i's, so a
// caption equal to the truth is drawn exactly as the text-to-image score drew the truth: the
// two differ only on the scenes captioned wrong. A caption that does not fit the decoder's N_q
// tokens cannot be drawn: it scores as wrong.
static void regenerate(Run* r, int first, Score* regen, FILE* tsv) {
    const Config* c = model_config(r->model);
    char text[CAPTION_MAX];
    unsigned char* drawable = (unsigned char*)mallocCheck((size_t)r->B);
    for (int b = 0; b < r->B; b++) {
        int* row = r->text_tokens + (size_t)b * c->n_q;
        vocab_decode(&r->vocab, r->generated + (size_t)b * c->cap_len, c->cap_len, text, sizeof text);
        drawable[b] = vocab_encode(&r->vocab, text, row, c->n_q) > 0;
        if (!drawable[b]) { empty_caption(row, c->n_q); }
    }
    text_context(r->model, run_batch(r).text_tokens, r->ctx);
    sample_images(r, stream_seed(r->s.seed, 98, (uint64_t)first)); // eval_t2i's noise
    for (int b = 0; b < r->B && first + b < r->s.eval_n; b++) {
        Scene seen;
        memset(&seen, 0, sizeof seen);
        if (drawable[b]) { oracle_parse(&seen, r->recon + (size_t)b * (r->img / r->B), r->H); }
        else { seen.n = -1; }
        score_add(regen, &r->truth[b], &seen);
        if (tsv) {
            char read[CAPTION_MAX];
            vocab_decode(&r->vocab, r->generated + (size_t)b * c->cap_len, c->cap_len, text, sizeof text);
            scene_caption(read, sizeof read, &seen);
            fprintf(tsv, "%d\t%s\t%s\t%s\n", first + b, r->captions[b], text,
                    !drawable[b] ? "(too long to draw)" : seen.n > 0 ? read : "(no shape read)");
        }
    }
    free(drawable);
}

// captions (written to captions_file) and, unless roundtrip is NULL, round trips of held-out
// images, whose files then go to RUN/test_images (for ./caption, or --data folder:RUN/test_images).
// Each rank captions and samples its rows, every rank scores every example, rank 0 writes.
// Unless regen is NULL (shapes world only), also the regeneration score, the paper's Table 1
// in exact form: each predicted caption drawn by the frozen decoder, the drawing read by the
// oracle and scored against the true scene (what it read: regen_<captions_file>). Its ceiling
// is the true captions drawn the same way: the text-to-image score.
static void eval_vlv(Run* r, const char* captions_file, Score* captions, Score* roundtrip, Score* regen) {
    char path[1100];
    FILE* test_images = NULL, *out = NULL, *regen_tsv = NULL;
    if (roundtrip && r->root) {
        if (snprintf(path, sizeof path, "%s/test_images", r->s.out_dir) >= (int)sizeof path) fail("the path %s/test_images is too long", r->s.out_dir);
        if (mkdir(path, 0755) != 0 && errno != EEXIST) fail("could not create the folder '%s': %s", path, strerror(errno));
        snprintf(path, sizeof path, "%s/test_images/captions.tsv", r->s.out_dir);
        test_images = atomic_open(path);
    }
    if (r->root) {
        run_path(r, path, sizeof path, captions_file);
        out = atomic_open(path);
        fprintf(out, "index\ttruth\tcaption\n");
    }
    if (regen && r->root) {
        char name[300];
        snprintf(name, sizeof name, "regen_%s", captions_file);
        run_path(r, path, sizeof path, name);
        regen_tsv = atomic_open(path);
        fprintf(regen_tsv, "index\ttruth\tcaption\toracle read of its drawing\n");
    }
    memset(captions, 0, sizeof *captions);
    if (roundtrip) { memset(roundtrip, 0, sizeof *roundtrip); }
    if (regen) { memset(regen, 0, sizeof *regen); }
    const Config* c = model_config(r->model);
    size_t per = r->img / r->B;
    for (int first = 0; first < r->s.eval_n; first += r->B) {
        uint64_t rng = 0;
        make_examples(r, SPLIT_TEST, (uint64_t)first, 0, &rng, 1);
        image_context(r->model, own_images(r, r->images), r->ctx);
        greedy_caption(r->model, r->generated + (size_t)r->first * c->cap_len, r->ctx);
        dist_gather_blocks(r->generated, (size_t)r->rows * c->cap_len * sizeof(int));
        if (roundtrip) { sample_images(r, stream_seed(r->s.seed, 97, (uint64_t)first)); }
        for (int b = 0; b < r->B && first + b < r->s.eval_n; b++) {
            char text[CAPTION_MAX];
            vocab_decode(&r->vocab, r->generated + (size_t)b * c->cap_len, c->cap_len, text, sizeof text);
            Scene said, seen;
            memset(&said, 0, sizeof said);
            memset(&seen, 0, sizeof seen);
            if (r->src.kind == SOURCE_SHAPES) { // scene by scene, attribute by attribute
                if (!caption_parse(&said, text)) { said.n = -1; } // ungrammatical: scores as wrong
                score_add(captions, &r->truth[b], &said);
            } else { // right when it is the true caption
                captions->n++;
                captions->exact += strcmp(text, r->captions[b]) == 0;
            }
            if (out) { fprintf(out, "%d\t%s\t%s\n", first + b, r->captions[b], text); }
            if (!roundtrip) { continue; }
            if (r->src.kind == SOURCE_SHAPES) {
                oracle_parse(&seen, r->recon + b * per, r->H);
                score_add(roundtrip, &r->truth[b], &seen);
            } else {
                roundtrip->n++;
            }
            double se = 0.0;
            for (size_t i = 0; i < per; i++) { double d = r->recon[b * per + i] - r->images[b * per + i]; se += d * d; }
            roundtrip->mse += se / per;
        }
        if (first == 0 && roundtrip && r->root) { // originals | reconstructions, side by side, with the caption of each
            int n = r->B < 16 ? r->B : 16;
            float* pairs = (float*)mallocCheck(2 * n * per * sizeof(float));
            char said[16][CAPTION_MAX];
            const char* labels[16];
            for (int b = 0; b < n; b++) {
                memcpy(pairs + (2 * b) * per, r->images + b * per, per * sizeof(float));
                memcpy(pairs + (2 * b + 1) * per, r->recon + b * per, per * sizeof(float));
                vocab_decode(&r->vocab, r->generated + (size_t)b * c->cap_len, c->cap_len, said[b], sizeof said[b]);
                labels[b] = said[b];
            }
            static const char* const headers[2] = { "original", "reconstruction" };
            char title[160];
            snprintf(title, sizeof title, "round trips: image -> z -> the frozen decoder, and the caption of z (ddim %d, w = %g)",
                     r->s.sample_steps, r->s.guidance);
            run_path(r, path, sizeof path, "roundtrip.png");
            png_write_labelled(path, title, headers, 2, pairs, labels, n, r->H, 2);
            free(pairs);
        }
        if (test_images) { // the test images as files, in the folder source's layout (captions.tsv beside them)
            for (int b = 0; b < r->B && first + b < r->s.eval_n; b++) {
                char name[32];
                snprintf(name, sizeof name, "%04d.png", first + b);
                snprintf(path, sizeof path, "%s/test_images/%s", r->s.out_dir, name);
                png_write_grid(path, r->images + b * per, 1, r->H, 1, 1);
                fprintf(test_images, "%s\t%s\n", name, r->captions[b]);
            }
        }
        if (regen) { regenerate(r, first, regen, regen_tsv); } // last: it overwrites the batch's text tokens and samples
    }
    if (regen_tsv) {
        char name[300];
        snprintf(name, sizeof name, "regen_%s", captions_file);
        run_path(r, path, sizeof path, name);
        atomic_commit(regen_tsv, path);
    }
    if (test_images) {
        snprintf(path, sizeof path, "%s/test_images/captions.tsv", r->s.out_dir);
        atomic_commit(test_images, path);
    }
    if (out) {
        run_path(r, path, sizeof path, captions_file);
        atomic_commit(out, path);
    }
    if (roundtrip) { roundtrip->mse /= roundtrip->n ? roundtrip->n : 1; }
}

#endif
