/*
The VLV pipeline: the command line, the data, the four training stages, checkpoints and
resumption, and the evaluation. Host-side code shared by train_vlv.c and train_vlv.cu: it
drives the model only through the interface vlvc/vlv.h, which both of them implement,
always with host arrays.

  stage 0   text-to-image: text encoder + DiT learn to draw captions (EMA kept for sampling)
  stage 0b  language model: the caption GPT learns caption text
  stage 1   VLV: vision encoder + adapter learn z, through the frozen decoder, from images only
  stage 2   captions: prefix MLP + GPT learn to write captions from TextEnc(z), K pairs only
  eval      caption accuracy, round trip, text-to-image accuracy, as exact numbers
*/
#ifndef VLVC_PIPELINE_H
#define VLVC_PIPELINE_H

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "model.h" // checkpoint_open: a checkpoint's config
#include "bench.h" // and through it the stages, evaluation, training state, run and settings
#include "pretrained.h"

static void make_dir(const char* path) {
    char buf[1100];
    snprintf(buf, sizeof buf, "%s", path);
    for (char* p = buf + 1; *p; p++) { // mkdir -p
        if (*p == '/') { *p = '\0'; mkdir(buf, 0755); *p = '/'; }
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) fail("could not create the run folder '%s': %s", path, strerror(errno));
}

static int is_folder(const char* path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// One program per run folder: two would write the same files and end as neither run. The lock
// (flock on RUN/lock) goes with the process, however it ends; it is taken before the folder's
// files are read, and the owner writes its pid into it (lock_write_pid) only once its command
// has passed every check. Returns the descriptor, which stays open: that holds the lock.
static int lock_run_folder(const char* dir) {
    char path[1100];
    if (snprintf(path, sizeof path, "%s/lock", dir) >= (int)sizeof path) fail("the path %s/lock is too long", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_NONBLOCK, 0644);
    if (fd < 0) fail("could not open '%s': %s", path, strerror(errno));
    struct stat st;
    const char* kind = not_regular(fd, &st);
    if (kind) fail("'%s' is %s, not the run folder's lock file: remove it, or choose another --out", path, kind);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t got = read(fd, pid, sizeof pid - 1);
        pid[got > 0 ? got : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        fail("another program is using the run folder %s (pid %s): wait for it to finish, or choose another --out", dir,
             pid[0] ? pid : "unknown");
    }
    return fd;
}
static void lock_write_pid(int fd, const char* dir) {
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) fail("could not write %s/lock: %s", dir, strerror(errno));
}

// Every refusal comes before the run folder is touched. Until take_over_folder, what the run
// says (stdout) and notes (its log) is held in memory, so that a refused command leaves stdout
// and the folder as they were and says why on stderr alone (fail).
static void hold_output(Run* r) {
    r->out = open_memstream(&r->held_out, &r->held_out_len);
    r->log = open_memstream(&r->held_log, &r->held_log_len);
    if (!r->out || !r->log) fail("out of memory: cannot hold the run's first lines");
}

// The command passed every check: the folder (created if need be) becomes this run's, locked
// here unless the caller holds its lock already (lock_fd; -1: not yet). Its logs
// are opened first (a FIFO there is refused while nothing has changed yet), then the lock gets
// the pid, the held lines go to stdout and log.txt, and vocab.txt is written.
static void take_over_folder(Run* r, int lock_fd) {
    Settings* s = &r->s;
    make_dir(s->out_dir);
    if (lock_fd < 0) { lock_fd = lock_run_folder(s->out_dir); }
    char log_path[1100], path[1100];
    run_path(r, log_path, sizeof log_path, "log.txt");
    FILE* log = appendOpenCheck(log_path);
    run_path(r, path, sizeof path, "metrics.jsonl");
    r->metrics = appendOpenCheck(path);
    lock_write_pid(lock_fd, s->out_dir);
    if (s->fresh) {
        run_path(r, path, sizeof path, "train_state.bin");
        remove(path);
    }
    fclose(r->out);
    fclose(r->log);
    r->out = NULL;
    r->log = log;
    fwrite(r->held_out, 1, r->held_out_len, stdout);
    fflush(stdout);
    fwriteCheck(r->held_log, 1, r->held_log_len, log, log_path);
    fflush(log);
    free(r->held_out);
    free(r->held_log);
    run_path(r, path, sizeof path, "vocab.txt");
    vocab_save(&r->vocab, path);
}

// A rank other than 0 neither prints nor writes the run folder: what it held is dropped.
static void drop_held_output(Run* r) {
    fclose(r->out);
    fclose(r->log);
    free(r->held_out);
    free(r->held_log);
    r->out = r->log = NULL;
}

// Every rank must run the same command: rank 0's, compared byte for byte.
static void check_same_command(const Run* r) {
    if (dist_ranks() == 1) { return; }
    char root_command[sizeof r->command];
    memcpy(root_command, r->command, sizeof root_command);
    dist_broadcast(root_command, sizeof root_command);
    if (memcmp(root_command, r->command, sizeof root_command) != 0) {
        fail("rank %d runs '%s', rank 0 '%s': every rank must run the same command", dist_rank(), r->command, root_command);
    }
}

// rank 0's model buffer `which` (vlv.h: 0 weights, 1 and 2 AdamW's moments, 3 the EMA) on every rank
static void broadcast_model_buffer(Run* r, int which) {
    size_t n = model_num_params(r->model);
    float* buf = (float*)mallocCheck(n * sizeof(float));
    model_buffer_read(r->model, which, buf);
    dist_broadcast(buf, n * sizeof(float));
    model_buffer_write(r->model, which, buf);
    free(buf);
}

// Rank 0 alone reads the run folder (its training state, or the checkpoint of --from); then
// its weights, AdamW state, EMA and the run's position go to every rank, so that the ranks
// start alike whatever the other machines hold.
static void share_run_state(Run* r, int* from_parts) {
    if (dist_ranks() == 1) { return; }
    struct { int next_stage, next_step, invocations, adam_step, from_parts; double stage_seconds[ALL_DONE]; char sha[65]; } where;
    memset(&where, 0, sizeof where);
    where.next_stage = r->next_stage;
    where.next_step = r->next_step;
    where.invocations = r->invocations;
    where.adam_step = model_adam_step(r->model);
    where.from_parts = *from_parts;
    memcpy(where.stage_seconds, r->stage_seconds, sizeof where.stage_seconds);
    memcpy(where.sha, r->pretrained_sha, sizeof where.sha);
    dist_broadcast(&where, sizeof where);
    r->next_stage = where.next_stage;
    r->next_step = where.next_step;
    r->invocations = where.invocations;
    model_set_adam_step(r->model, where.adam_step);
    *from_parts = where.from_parts;
    memcpy(r->stage_seconds, where.stage_seconds, sizeof where.stage_seconds);
    memcpy(r->pretrained_sha, where.sha, sizeof where.sha);
    for (int k = 0; k < 4; k++) { broadcast_model_buffer(r, k); }
}

// a checkpoint's weights into the model: rank 0 reads the file, every rank gets the weights
static void run_load_weights(Run* r, const char* path) {
    if (r->root) { model_load_weights(r->model, path); }
    if (dist_ranks() > 1) { broadcast_model_buffer(r, 0); }
}

// the whole pipeline; returns the exit status
static int vlv_main(int argc, char** argv) {
    Run run;
    memset(&run, 0, sizeof run);
    Run* r = &run;
    settings_parse(&r->s, argc, argv);
    Settings* s = &r->s;
#ifdef _OPENMP
    if (s->threads > 0) { omp_set_num_threads(s->threads); }
    int threads = omp_get_max_threads();
#else
    int threads = 1;
#endif
    double t_start = wall_seconds();
    size_t used = 0;
    for (int i = 0; i < argc && used < sizeof r->command; i++) {
        used += (size_t)snprintf(r->command + used, sizeof r->command - used, "%s%s", i ? " " : "", argv[i]);
    }
    r->invocations = 1;
    char path[1100];
    hold_output(r);
    time_t now = time(NULL);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
    note(r, "\n==== %s: %s\nsettings (the preset's, then the flags given):\n", when, r->command);
    settings_list(r->log, s, 0);
    // the examples, and the vocabulary of their captions
    source_open(&r->src, s->data, s->model.img_size, s->max_objects, s->seed);
    source_vocab(&r->src, &r->vocab);
    int n_captioned = source_split_size(&r->src, SPLIT_CAPTIONED), n_test = source_split_size(&r->src, SPLIT_TEST);
    if (n_captioned > 0 && s->K > n_captioned) {
        say(r, "--data %s has %d captioned training items: K = %d instead of %d\n", s->data, n_captioned, n_captioned, s->K);
        s->K = n_captioned;
    }
    if (n_test > 0 && s->eval_n > n_test) {
        say(r, "--data %s has %d test items: evaluating %d instead of %d\n", s->data, n_test, n_test, s->eval_n);
        s->eval_n = n_test;
    }
    s->model.vocab = r->vocab.size;
    check_same_command(r);
    if (dist_ranks() > 1) {
        if (s->export_n > 0 || s->bench > 0) fail("--export and --bench run as one process: run them without mpirun");
        if (s->batch % dist_ranks() != 0) fail("--batch %d does not split over %d ranks: give a multiple of %d", s->batch, dist_ranks(), dist_ranks());
    }
    if (s->export_n > 0) { // the exact data of this run, for the PyTorch twin (doc/data.md)
        if (r->src.kind != SOURCE_SHAPES) fail("--export writes the shapes world's splits; --data %s is already files", s->data);
        take_over_folder(r, -1);
        const char* names[NUM_SPLITS] = { "shapes_t2i.bin", "shapes_unpaired.bin", "shapes_captioned.bin", "shapes_test.bin" };
        int counts[NUM_SPLITS] = { s->export_n, s->export_n, s->K, s->eval_n };
        for (int split = 0; split < NUM_SPLITS; split++) {
            run_path(r, path, sizeof path, names[split]);
            shapes_export(path, split, counts[split], s->model.img_size, s->max_objects, s->seed);
            say(r, "wrote %s: %d items\n", path, counts[split]);
        }
        vocab_free(&r->vocab);
        source_free(&r->src);
        fclose(r->log);
        fclose(r->metrics);
        return 0;
    }
    if (s->eval_model[0]) { // the model is the checkpoint's, e.g. trained by dev/vlv.py train
        size_t n;
        fclose(checkpoint_open(s->eval_model, &s->model, &n));
        if (s->model.vocab != r->vocab.size) fail("'%s' has a vocabulary of %d words, --data %s %d", s->eval_model, s->model.vocab, s->data, r->vocab.size);
        s->baseline = 0;
    }
    r->model = model_create(&s->model, s->batch / dist_ranks()); // this rank's rows of each batch
    model_init(r->model, s->seed);
    run_alloc(r);
    char peak_how[160];
    float found = device_describe(threads, r->device, sizeof r->device, peak_how, sizeof peak_how);
    r->peak = s->peak_gflops > 0 ? s->peak_gflops : found;
    char ranks[64] = "";
    if (dist_ranks() > 1) { snprintf(ranks, sizeof ranks, " (%d ranks of %d rows)", dist_ranks(), r->rows); }
    say(r, "vlv.c: preset %s, %zu parameters, batch %d%s, run folder %s\n  on %s%s\n  fp32 peak %.0f GFLOP/s (%s)\n",
        s->preset, model_num_params(r->model), r->B, ranks, s->out_dir, r->device, dist_ranks() > 1 ? " per rank" : "", r->peak,
        s->peak_gflops > 0 ? "given by --peak" : peak_how);
    note(r, "config: ");
    config_print(model_config(r->model), r->log);
    if (strcmp(s->preset, "demo") == 0) {
        say(r, "preset demo: a plumbing check of every stage in under a minute, on models too small and short to learn;\n"
               "  the default preset (no flags) shows VLV working\n");
    }
    if (s->bench > 0) {
        take_over_folder(r, -1);
        int status = run_bench(r);
        run_free(r);
        return status;
    }
    if (s->pretrained[0] && !s->eval_model[0]) {
        if (strcmp(s->from_stage, "0b") == 0) fail("--from 0b retrains the caption LM, which --pretrained %s already holds; use --from 1 or 2", s->pretrained);
        pretrained_load(r, s->pretrained, r->pretrained_sha);
    }
    // the folder's files are read under its lock, by rank 0; a folder that does not exist yet holds nothing
    int lock_fd = r->root && is_folder(s->out_dir) ? lock_run_folder(s->out_dir) : -1;
    int from_parts = 0; // a new run from the pretrained parts: its stage-0b checkpoint and state are written below
    if (r->root) { // rank 0's position and state go to every rank below (share_run_state)
        if (s->eval_model[0]) {
            r->next_stage = ALL_DONE;
        } else if (s->from_stage[0]) { // e.g. another stage-1 recipe on the same frozen decoder
            int from = from_stage_objective(s->from_stage); // settings_parse refused any other value
            run_path(r, path, sizeof path, stage_checkpoint[from - 1]);
            model_load_weights(r->model, path);
            r->next_stage = from;
            say(r, "starting again at %s from %s\n", stage_name[from], path);
        } else if (!s->fresh && train_state_load(r)) {
            if (r->next_stage == BASELINE && !s->baseline) { r->next_stage = ALL_DONE; } // no baseline asked for
            if (r->next_stage == ALL_DONE) { say(r, "%s holds a trained run: evaluating it again\n", s->out_dir); }
            else { say(r, "resuming %s/train_state.bin at %s, step %d (invocation %d)\n", s->out_dir, stage_name[r->next_stage], r->next_step, r->invocations); }
            note(r, "the stored run's settings (the same as this command's: a difference is refused): see the settings above\n");
        } else if (s->pretrained[0]) {
            r->next_stage = STAGE1;
            from_parts = 1;
        }
    }
    share_run_state(r, &from_parts);
    if (s->zero && dist_ranks() > 1) {
        model_shard_optimizer(r->model);
        say(r, "ZeRO-1: each of the %d ranks keeps AdamW's moments of %zu of the %zu weights\n", dist_ranks(),
            model_num_params(r->model) / dist_ranks(), model_num_params(r->model));
    }
    if (r->root) { take_over_folder(r, lock_fd); }
    else { drop_held_output(r); }
    if (from_parts) { // stage 1 starts from the parts; the baseline too (stage0b.bin)
        run_path(r, path, sizeof path, stage_checkpoint[STAGE0B]);
        if (r->root) { model_save(r->model, path); }
        train_state_save(r); // on every rank: under ZeRO-1 it gathers the moments
    }
    int groups[NUM_OBJECTIVES] = { objective_groups(STAGE0), objective_groups(STAGE0B), objective_groups(STAGE1),
                                   objective_groups(STAGE2) | (s->unfreeze_encoder ? ENCODER_GROUPS : 0) };
    if (r->next_stage < ALL_DONE) { run_calibrate(r); }
    int retrained = s->from_stage[0] && strcmp(s->from_stage, "0b") != 0; // stages 0, 0b not from this run
    for (int o = r->next_stage; o < NUM_OBJECTIVES; o++) {
        if (o == STAGE1 && r->next_step == 0 && !r->pretrained_sha[0] && !retrained) { pretrained_write(r); }
        run_stage(r, o, (Objective)o, groups[o]);
    }

    // evaluation of the VLV model (reloaded: the run may resume in the baseline)
    say(r, "\nevaluation on %d held-out examples (DDIM %d steps, guidance %g)\n", s->eval_n, s->sample_steps, s->guidance);
    if (s->eval_model[0]) { snprintf(path, sizeof path, "%s", s->eval_model); }
    else { run_path(r, path, sizeof path, stage_checkpoint[STAGE2]); }
    run_load_weights(r, path);
    int shapes = r->src.kind == SOURCE_SHAPES; // only the shapes world has an oracle and attributes
    int regen = s->regen && shapes;
    Score t2i = eval_t2i(r, "t2i.png", "t2i.tsv"), captions, roundtrip, baseline, regenerated, regenerated_base;
    eval_vlv(r, "captions.tsv", &captions, &roundtrip, regen ? &regenerated : NULL);
    if (s->baseline) {
        if (r->next_stage == BASELINE && r->next_step == 0) { // start from the stage-0b weights
            run_path(r, path, sizeof path, stage_checkpoint[STAGE0B]);
            run_load_weights(r, path);
        }
        if (r->next_stage == BASELINE) { run_stage(r, BASELINE, STAGE2, objective_groups(STAGE2) | ENCODER_GROUPS); }
        run_path(r, path, sizeof path, stage_checkpoint[BASELINE]);
        run_load_weights(r, path);
        eval_vlv(r, "captions_baseline.tsv", &baseline, NULL, regen ? &regenerated_base : NULL);
    }
    float minutes = (float)(wall_seconds() - t_start) / 60.0f;
    if (r->invocations > 1) {
        double trained = 0.0;
        for (int k = 0; k < ALL_DONE; k++) { trained += r->stage_seconds[k]; }
        say(r, "this run took %d invocations: %.1f minutes of training in all, %.1f minutes in this one (evaluation included)\n",
            r->invocations, trained / 60.0, minutes);
    }
    say(r, "\n| measure (%d held-out %s) | value |\n|---|---|\n", s->eval_n, shapes ? "scenes" : "images");
    say(r, "| caption exact%s | %.1f%% |\n", shapes ? " scene" : " (the true caption)", 100 * score_exact(&captions));
    if (shapes) { say_scored_row(r, "caption attributes", score_attr(&captions), &captions); }
    if (s->baseline) {
        say(r, "| baseline (no stage 1) caption exact | %.1f%% |\n", 100 * score_exact(&baseline));
        if (shapes) { say_scored_row(r, "baseline caption attributes", score_attr(&baseline), &baseline); }
    }
    if (shapes) { say_scored_row(r, "round trip exact (oracle)", score_exact(&roundtrip), &roundtrip); }
    say(r, "| round trip pixel MSE | %.4f |\n", roundtrip.mse);
    if (shapes) { say_scored_row(r, "text-to-image exact (oracle)", score_exact(&t2i), &t2i); }
    if (regen) { // the regeneration score beside its ceiling, the text-to-image row above
        say_scored_row(r, "regeneration exact (caption -> decoder -> oracle)", score_exact(&regenerated), &regenerated);
        if (s->baseline) { say_scored_row(r, "baseline regeneration exact", score_exact(&regenerated_base), &regenerated_base); }
        say(r, "| regeneration ceiling (the true captions: text-to-image exact) | %.1f%% |\n", 100 * score_exact(&t2i));
    }
    say(r, "in %s:\n  t2i.png (prompt | sample), roundtrip.png (original | reconstruction | caption), loss_<stage>.png,\n"
           "  captions.tsv%s, metrics.jsonl, log.txt;\n  the test images in test_images/ (try ./caption on them)\n",
        s->out_dir, shapes ? ", t2i.tsv (what the oracle read of each T2I sample)" : "");
    char extra[160] = "";
    size_t at = 0;
    if (s->baseline) { at += (size_t)snprintf(extra + at, sizeof extra - at, " baseline_exact=%.4f", score_exact(&baseline)); }
    if (regen) { at += (size_t)snprintf(extra + at, sizeof extra - at, " regen_exact=%.4f", score_exact(&regenerated)); }
    if (regen && s->baseline) { snprintf(extra + at, sizeof extra - at, " baseline_regen_exact=%.4f", score_exact(&regenerated_base)); }
    if (shapes) {
        say(r, "RESULT caption_exact=%.4f caption_attr=%.4f roundtrip_exact=%.4f t2i_exact=%.4f%s minutes=%.1f\n",
            score_exact(&captions), score_attr(&captions), score_exact(&roundtrip), score_exact(&t2i), extra, minutes);
    } else {
        say(r, "RESULT caption_exact=%.4f roundtrip_mse=%.4f%s minutes=%.1f\n", score_exact(&captions), roundtrip.mse, extra, minutes);
    }
    run_free(r);
    return 0;
}

#endif
