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

// the optimizer of objective o's steps (the baseline trains with stage 2's settings)
static AdamW stage_optimizer(const Settings* s, Objective o) {
    return (AdamW){ .lr = s->lr[o], .beta1 = s->beta1, .beta2 = s->beta2[o], .eps = 1e-8f,
                    .weight_decay = s->weight_decay, .grad_clip = s->grad_clip[o], .clip_z = s->clip_z };
}

// trains stage `stage` (objective o on `groups`) from r->next_step, checkpointing as it goes
static void run_stage(Run* r, int stage, Objective o, int groups) {
    Settings* s = &r->s;
    int total = s->steps[o];
    int clips_at_z = o == STAGE1 && s->clip_z > 0.0f; // vlv_backward clips in stage 1 only
    char clip_z[32] = "";
    if (clips_at_z) { snprintf(clip_z, sizeof clip_z, ", clip_z %g", s->clip_z); }
    say(r, "\n%s: %d steps of %d images, lr %g, clip %g, beta2 %g%s\n", stage_title[stage], total, r->B, s->lr[o],
        s->grad_clip[o], s->beta2[o], clip_z);
    if (r->next_step == 0) {
        vlv_reset_optimizer(r->model);
        if (o == STAGE0) { vlv_ema_update(r->model, groups, 0.0f); }
    } else {
        say(r, "resuming at step %d\n", r->next_step);
    }
    AdamW opt = stage_optimizer(s, o);
    double attention_flops, t_window = wall_seconds(), loss_sum = 0.0, norm_sum = 0.0;
    double flops_window = vlv_flops(&attention_flops);
    float norm_max = 0.0f;
    int window = 0, z_clipped = 0;
    for (int step = r->next_step; step < total; step++) {
        opt.lr = stage_lr(r, o, step);
        Batch batch = stage_batch(r, o, step);
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
            char eta[32];
            format_eta(eta, sizeof eta, ms * 1e-3 * (total - step - 1));
            // the gradient norm (before the global clip; with --clip_z, after the clip at z): its
            // mean and largest value in the window, and how many images' gradients at z were scaled
            char clipped[48] = "";
            if (clips_at_z) { snprintf(clipped, sizeof clipped, ", %d clipped at z", z_clipped); }
            say(r, "%-8s step %6d/%d | loss %.5f | lr %.2e | norm %.3f (max %.3f%s) | %7.1f ms/step | %7.1f images/s | %5.1f GFLOP/s (%.0f%% of peak) | ETA %s\n",
                stage_name[stage], step + 1, total, loss_sum / window, opt.lr, norm_sum / window, norm_max, clipped, ms,
                r->B * 1e3 / ms, gflops, r->peak > 0 ? 100.0 * gflops / r->peak : 0.0, eta);
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
                snprintf(oracle, sizeof oracle, "T2I oracle exact %.1f%% (%s) ", 100.0f * score_exact(&t2i), attrs);
            }
            say(r, "stage0  health at step %d (EMA weights): loss with caption %.5f, empty caption %.5f, "
                   "conditioning gap %.1f%%; %s(%s)\n", step + 1, with, without,
                100.0f * (without - with) / without, oracle, grid);
            t_window = wall_seconds();
            flops_window = vlv_flops(&attention_flops);
        }
        if (o == STAGE1 && ((step + 1) % s->eval_every == 0 || step + 1 == total)) {
            float with, without, with_z;
            conditioning_gap(r, &with, &without, &with_z);
            say(r, "stage1  health at step %d: decoder loss with TextEnc(z) %.5f, true caption %.5f, empty caption %.5f; "
                   "z recovers %.1f%% of the caption's gain\n", step + 1, with_z, with, without,
                100.0f * (without - with_z) / (without - with));
            t_window = wall_seconds();
            flops_window = vlv_flops(&attention_flops);
        }
        r->next_step = step + 1;
        if (r->next_step % s->ckpt_every == 0 && r->next_step < total) { train_state_save(r); }
        if (++r->steps_done == s->stop_after && r->next_step < total) {
            train_state_save(r);
            say(r, "stopped after %d steps as asked (--stop_after); run the same command again to resume\n", s->stop_after);
            run_free(r);
            exit(0);
        }
    }
    if (o == STAGE0) { vlv_ema_swap(r->model, groups); } // from here on, the decoder is its EMA
    check_weights_finite(r); // before the position moves on: a failure names this stage
    r->next_stage = stage + 1;
    r->next_step = 0;
    char path[1100];
    run_path(r, path, sizeof path, stage_checkpoint[stage]);
    model_save(r->model, path);
    train_state_save(r);
    say(r, "%s done: wrote %s\n", stage_name[stage], path);
}

#endif
