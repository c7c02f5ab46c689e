/*
The stage runner: one stage's training steps with its learning-rate schedule, progress lines
(loss, lr, gradient norm, ms/step, images/s, GFLOP/s, ETA), health checks, the NaN guard and
the checkpoints that let a rerun resume.
*/
#ifndef VLVC_STAGES_H
#define VLVC_STAGES_H

#include "train_state.h"
#include "evaluate.h"

static void format_eta(char* out, size_t cap, double seconds) {
    int s = (int)(seconds + 0.5);
    if (s >= 3600) { snprintf(out, cap, "%dh%02dm", s / 3600, s % 3600 / 60); }
    else { snprintf(out, cap, "%dm%02ds", s / 60, s % 60); }
}

// The run's ETA: what is left of this stage at its measured speed, plus the later stages and
// the evaluation at their estimated speeds (run_calibrate), scaled by how far this stage's
// measured speed is from its estimate.
static double run_eta_seconds(const Run* r, int stage, int steps_left, double ms_now) {
    double scale = r->est_ms[stage] > 0.0 ? ms_now / r->est_ms[stage] : 1.0, t = steps_left * ms_now * 1e-3;
    for (int k = stage + 1; k <= STAGE2; k++) { t += r->s.steps[k] * r->est_ms[k] * scale * 1e-3; }
    if (stage < BASELINE && r->s.baseline) { t += stage_steps(&r->s, BASELINE) * r->est_ms[BASELINE] * scale * 1e-3; }
    return t + r->est_eval_s * scale;
}

// The speed estimates behind the run's ETA, from one forward pass of each stage still to run
// (a training step costs about 3 of them; 2 in stage 2, whose backward stops at the prefix),
// and one DDIM step and one caption batch for the evaluation. Changes no weights.
static void run_calibrate(Run* r) {
    memset(r->est_ms, 0, sizeof r->est_ms);
    for (int o = r->next_stage; o <= STAGE2; o++) {
        Batch b = stage_batch(r, (Objective)o, 0);
        double t0 = wall_seconds();
        vlv_forward(r->model, (Objective)o, &b);
        double ms = 1e3 * (wall_seconds() - t0);
        r->est_ms[o] = ms * (o == STAGE2 ? 2.0 : 3.0);
        if (o == STAGE2) { r->est_ms[BASELINE] = 3.0 * ms; } // the baseline's backward runs through the encoder
    }
    if (r->next_stage == BASELINE) { Batch b = stage_batch(r, STAGE2, 0); double t0 = wall_seconds(); vlv_forward(r->model, STAGE2, &b); r->est_ms[BASELINE] = 3e3 * (wall_seconds() - t0); }
    uint64_t rng = 0;
    make_examples(r, SPLIT_TEST, 0, 0, &rng, 0);
    double t0 = wall_seconds();
    text_context(r->model, run_batch(r).text_tokens, r->ctx);
    empty_context(r->model, r->ctx_empty);
    ddim_sample(r->model, own_images(r, r->recon), r->ctx, r->ctx_empty, r->s.guidance, r->s.sample_steps, 1);
    double t_step = wall_seconds() - t0;
    t0 = wall_seconds();
    greedy_caption(r->model, r->generated + (size_t)r->first * model_config(r->model)->cap_len, r->ctx);
    double t_caption = wall_seconds() - t0;
    int batches = (r->s.eval_n + r->B - 1) / r->B;
    // T2I and round trips sample; captions of the VLV model and of the baseline
    r->est_eval_s = batches * (2.0 * r->s.sample_steps * t_step + (1 + r->s.baseline) * t_caption);
}

// One JSON object per line in RUN/metrics.jsonl; the "kind":"train" records' first fields in this
// fixed order (stage_curve reads them back)
static void metrics_record(Run* r, const char* fmt, ...) {
    if (!r->metrics) { return; }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->metrics, fmt, ap);
    va_end(ap);
    fputc('\n', r->metrics);
    fflush(r->metrics);
}

#define METRICS_MAX_BYTES (1ull << 36) // 64 GiB: records of ~200 bytes for 4 stages of 1e8 steps, one per window

// RUN/loss_<stage>.png: the stage's training loss per logged window, from metrics.jsonl. A
// resumed stage logged again the steps after its last checkpoint: a record of a step at or
// before the last one kept replaces everything from that step on.
static void stage_curve(Run* r, int stage) {
    char path[1100];
    run_path(r, path, sizeof path, "metrics.jsonl");
    FILE* fp = readOpenCheck(path, METRICS_MAX_BYTES); // this run appends to it: a regular file
    int cap = 1024, n = 0;
    double* x = (double*)mallocCheck(cap * sizeof(double));
    double* y = (double*)mallocCheck(cap * sizeof(double));
    char line[1024], name[32];
    int step;
    double loss;
    while (fgets(line, sizeof line, fp)) {
        if (sscanf(line, "{\"kind\":\"train\",\"stage\":\"%31[^\"]\",\"step\":%d,\"loss\":%lf", name, &step, &loss) != 3) { continue; }
        if (strcmp(name, stage_name[stage]) != 0 || !(loss == loss)) { continue; }
        while (n > 0 && x[n - 1] >= step) { n--; }
        if (n == cap) {
            cap *= 2;
            x = (double*)reallocCheck(x, cap * sizeof(double));
            y = (double*)reallocCheck(y, cap * sizeof(double));
        }
        x[n] = step;
        y[n++] = loss;
    }
    fclose(fp);
    if (n > 0) {
        char title[160], png[64];
        snprintf(title, sizeof title, "%s: training loss (mean of each %d steps), batch %d", stage_name[stage], r->s.log_every, r->B);
        snprintf(png, sizeof png, "loss_%s.png", stage_name[stage]);
        run_path(r, path, sizeof path, png);
        png_write_curve(path, title, "step", x, y, n);
    }
    free(x);
    free(y);
}

// adds the wall time since *since to the stage's total (kept in the training state)
static void stage_clock(Run* r, int stage, double* since) {
    double now = wall_seconds();
    r->stage_seconds[stage] += now - *since;
    *since = now;
}

// the optimizer of objective o's steps (the baseline trains with stage 2's settings)
static AdamW stage_optimizer(const Settings* s, Objective o) {
    return (AdamW){ .lr = s->lr[o], .beta1 = s->beta1, .beta2 = s->beta2[o], .eps = 1e-8f,
                    .weight_decay = s->weight_decay, .grad_clip = s->grad_clip[o], .clip_z = s->clip_z };
}

// trains stage `stage` (objective o on `groups`) from r->next_step, checkpointing as it goes
static void run_stage(Run* r, int stage, Objective o, int groups) {
    Settings* s = &r->s;
    int total = stage_steps(s, stage);
    int clips_at_z = o == STAGE1 && s->clip_z > 0.0f; // vlv_backward clips in stage 1 only
    char clip_z[32] = "", t_draws[64] = "";
    if (clips_at_z) { snprintf(clip_z, sizeof clip_z, ", clip_z %g", s->clip_z); }
    if (o == STAGE1 && s->t_draws > 1) { snprintf(t_draws, sizeof t_draws, ", t: the largest of %d uniform draws", s->t_draws); }
    say(r, "\n%s\n  %d steps of %d images, lr %g, clip %g, beta2 %g%s%s\n", stage_title[stage], total, r->B, stage_peak_lr(s, stage),
        s->grad_clip[o], s->beta2[o], clip_z, t_draws);
    if (r->next_step == 0) {
        vlv_reset_optimizer(r->model);
        if (o == STAGE0) { vlv_ema_update(r->model, groups, 0.0f); }
        if (s->vit_from_dit && (stage == STAGE1 || stage == BASELINE)) { // settings_parse checked the config
            vlv_vit_from_dit(r->model);
            say(r, "  the vision encoder starts from the frozen DiT (its patch embedding, positions and blocks at t = 0)\n");
        }
    } else {
        say(r, "resuming at step %d\n", r->next_step);
    }
    AdamW opt = stage_optimizer(s, o);
    double clock = wall_seconds();
    double attention_flops, t_window = wall_seconds(), loss_sum = 0.0, norm_sum = 0.0;
    double flops_window = vlv_flops(&attention_flops);
    float norm_max = 0.0f;
    int window = 0, z_clipped = 0;
    for (int step = r->next_step; step < total; step++) {
        Phase phase; // a progressive stage 2: each phase trains its groups with a fresh AdamW
        if (stage == STAGE2 && stage2_phase(s, step, &phase)) {
            if (step == phase.first) {
                static const char* const trains[3] = { "the prefix MLP alone", "the prefix MLP and the caption LLM",
                                                       "the prefix MLP, the caption LLM, the vision encoder and the adapter" };
                vlv_reset_optimizer(r->model);
                say(r, "stage2  phase %d at step %d: %d steps of %s, lr %g\n", phase.index + 1, step, phase.steps, trains[phase.index], phase.lr);
            }
            groups = phase.groups;
        }
        opt.lr = stage_lr(r, stage, step);
        Batch batch = stage_batch(r, o, step);
        if (o == STAGE0) { r->captions_seen += r->B; r->captions_dropped += r->batch_dropped; }
        float loss = vlv_train_step(r->model, o, &batch, groups, &opt);
        if (!is_finite_float(loss)) {
            fail("%s step %d: the loss is %f. Stopped; the last good checkpoint in %s is kept.\n"
                 "  lower the learning rate (--lr%s) or the gradient clipping (--clip)", stage_name[stage], step, loss,
                 s->out_dir, stage_flag[o]);
        }
        if (o == STAGE0) { vlv_ema_update(r->model, groups, s->ema_decay); }
        loss_sum += loss;
        norm_sum += model_grad_norm(r->model);
        if (model_grad_norm(r->model) > norm_max) { norm_max = model_grad_norm(r->model); }
        z_clipped += model_z_clipped(r->model);
        window++;
        if ((step + 1) % s->log_every == 0 || step + 1 == total) {
            double dt = wall_seconds() - t_window;
            double ms = 1e3 * dt / window, gflops = (vlv_flops(&attention_flops) - flops_window) / dt * 1e-9;
            char eta[32], eta_run[32];
            format_eta(eta, sizeof eta, ms * 1e-3 * (total - step - 1));
            format_eta(eta_run, sizeof eta_run, run_eta_seconds(r, stage, total - step - 1, ms));
            // the gradient norm (before the global clip; with --clip_z, after the clip at z): its
            // mean and largest value in the window, and how many images' gradients at z were scaled
            char clipped[48] = "";
            if (clips_at_z) { snprintf(clipped, sizeof clipped, ", %d clipped at z", z_clipped); }
            printf("%-8s step %6d/%d | loss %.5f | norm %.3f | %6.1f ms/step | %6.0f img/s | ETA %s, run %s\n",
                   stage_name[stage], step + 1, total, loss_sum / window, norm_sum / window, ms, r->B * 1e3 / ms, eta, eta_run);
            fflush(stdout);
            note(r, "%-8s step %6d/%d | loss %.5f | lr %.2e | norm %.3f (max %.3f%s) | %7.1f ms/step | %7.1f images/s | %5.1f GFLOP/s (%.0f%% of peak) | ETA %s, run %s\n",
                 stage_name[stage], step + 1, total, loss_sum / window, opt.lr, norm_sum / window, norm_max, clipped, ms,
                 r->B * 1e3 / ms, gflops, r->peak > 0 ? 100.0 * gflops / r->peak : 0.0, eta, eta_run);
            metrics_record(r, "{\"kind\":\"train\",\"stage\":\"%s\",\"step\":%d,\"loss\":%.6g,\"lr\":%.6g,\"norm\":%.6g,"
                              "\"norm_max\":%.6g,\"z_clipped\":%d,\"ms_per_step\":%.3f,\"images_per_s\":%.2f,\"gflops\":%.2f}",
                           stage_name[stage], step + 1, loss_sum / window, opt.lr, norm_sum / window, norm_max, z_clipped, ms,
                           r->B * 1e3 / ms, gflops);
            t_window = wall_seconds();
            flops_window = vlv_flops(&attention_flops);
            loss_sum = norm_sum = 0.0;
            norm_max = 0.0f;
            window = z_clipped = 0;
        }
        if (o == STAGE0 && ((step + 1) % s->eval_every == 0 || step + 1 == total)) {
            vlv_ema_swap(r->model, groups); // health of the EMA decoder
            float with, without;
            conditioning_gap(r, &with, &without, NULL);
            char grid[64];
            snprintf(grid, sizeof grid, "t2i_step%06d.png", step + 1);
            Score t2i = eval_t2i(r, grid, NULL);
            vlv_ema_swap(r->model, groups);
            char oracle[200] = "", attrs[128]; // per attribute: a decoder blind to place words shows here
            if (r->src.kind == SOURCE_SHAPES) {
                score_attrs_text(&t2i, attrs, sizeof attrs);
                snprintf(oracle, sizeof oracle, " | T2I exact %.1f%% (%s)", 100.0f * score_exact(&t2i), attrs);
            }
            printf("stage0  health %d (EMA): conditioning gap %.1f%%%s\n", step + 1, 100.0f * (without - with) / without, oracle);
            fflush(stdout);
            note(r, "stage0  health at step %d (EMA weights): loss with caption %.5f, empty caption %.5f, conditioning gap %.1f%%%s (%s)\n",
                 step + 1, with, without, 100.0f * (without - with) / without, oracle, grid);
            // the dropout the batches really had, so that a pipeline that never empties a
            // caption (the decoder would learn no unconditional prediction) shows
            char dropped[160];
            snprintf(dropped, sizeof dropped, "caption dropout: %ld of %ld captions emptied in this invocation's steps (%.1f%%; --dropout %g)",
                     r->captions_dropped, r->captions_seen, r->captions_seen ? 100.0 * r->captions_dropped / r->captions_seen : 0.0,
                     s->caption_dropout);
            if (step + 1 == total) { say(r, "stage0  %s\n", dropped); } else { note(r, "stage0  %s\n", dropped); }
            metrics_record(r, "{\"kind\":\"health\",\"stage\":\"stage0\",\"step\":%d,\"loss_caption\":%.6g,\"loss_empty\":%.6g,"
                              "\"gap\":%.6g,\"t2i_exact\":%.4f,\"t2i_shape\":%.4f,\"t2i_colour\":%.4f,\"t2i_size\":%.4f,\"t2i_place\":%.4f,"
                              "\"captions\":%ld,\"captions_dropped\":%ld}",
                           step + 1, with, without, (without - with) / without, score_exact(&t2i),
                           t2i.objects ? (double)t2i.attr[0] / t2i.objects : 0.0, t2i.objects ? (double)t2i.attr[1] / t2i.objects : 0.0,
                           t2i.objects ? (double)t2i.attr[2] / t2i.objects : 0.0, t2i.objects ? (double)t2i.attr[3] / t2i.objects : 0.0,
                           r->captions_seen, r->captions_dropped);
            t_window = wall_seconds();
            flops_window = vlv_flops(&attention_flops);
        }
        if (o == STAGE1 && ((step + 1) % s->eval_every == 0 || step + 1 == total)) {
            float with, without, with_z;
            conditioning_gap(r, &with, &without, &with_z);
            // the share is meaningless while the caption hardly helps the decoder (a gap under 1%)
            char recovers[96];
            int meaningful = without - with > 0.01f * without;
            if (meaningful) { snprintf(recovers, sizeof recovers, "%.1f%% of the caption's gain", 100.0f * (without - with_z) / (without - with)); }
            else { snprintf(recovers, sizeof recovers, "n/a (the decoder gains nothing from the caption yet)"); }
            printf("stage1  health %d: z recovers %s\n", step + 1, recovers);
            fflush(stdout);
            note(r, "stage1  health at step %d: decoder loss with TextEnc(z) %.5f, true caption %.5f, empty caption %.5f; z recovers %s\n",
                 step + 1, with_z, with, without, recovers);
            if (meaningful) {
                metrics_record(r, "{\"kind\":\"health\",\"stage\":\"stage1\",\"step\":%d,\"loss_z\":%.6g,\"loss_caption\":%.6g,"
                                  "\"loss_empty\":%.6g,\"z_recovers\":%.6g}", step + 1, with_z, with, without,
                               (without - with_z) / (without - with));
            } else {
                metrics_record(r, "{\"kind\":\"health\",\"stage\":\"stage1\",\"step\":%d,\"loss_z\":%.6g,\"loss_caption\":%.6g,"
                                  "\"loss_empty\":%.6g,\"z_recovers\":null}", step + 1, with_z, with, without);
            }
            t_window = wall_seconds();
            flops_window = vlv_flops(&attention_flops);
        }
        r->next_step = step + 1;
        if (r->next_step % s->ckpt_every == 0 && r->next_step < total) {
            stage_clock(r, stage, &clock);
            train_state_save(r);
        }
        if (++r->steps_done == s->stop_after && r->next_step < total) {
            stage_clock(r, stage, &clock);
            train_state_save(r);
            say(r, "stopped after %d steps as asked (--stop_after); run the same command again to resume\n", s->stop_after);
            run_free(r);
            dist_finish();
            exit(0);
        }
    }
    if (o == STAGE0) { vlv_ema_swap(r->model, groups); } // from here on, the decoder is its EMA
    check_weights_finite(r); // before the position moves on: a failure names this stage
    r->next_stage = stage + 1;
    r->next_step = 0;
    char path[1100];
    run_path(r, path, sizeof path, stage_checkpoint[stage]);
    if (r->root) { model_save(r->model, path); }
    stage_clock(r, stage, &clock);
    train_state_save(r);
    if (r->root) { stage_curve(r, stage); }
    say(r, "%s done: wrote %s and loss_%s.png\n", stage_name[stage], path, stage_name[stage]);
}

#endif
