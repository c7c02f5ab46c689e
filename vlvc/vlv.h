/*
The model as the pipeline sees it: an opaque Model and the calls the pipeline makes.
train_vlv.c (host memory) and train_vlv.cu (device memory) each implement every call; the
pipeline (vlvc/pipeline.h) uses nothing else of either. Every array here is a host array.
*/
#ifndef VLVC_VLV_H
#define VLVC_VLV_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"

typedef struct Model Model;

// the four objectives (doc/model.md "Objectives") and the parameter groups each trains by default
typedef enum { STAGE0, STAGE0B, STAGE1, STAGE2, NUM_OBJECTIVES } Objective;
static const char* const objective_name[NUM_OBJECTIVES] = { "stage0", "stage0b", "stage1", "stage2" };

// the parameter groups each objective trains by default (doc/model.md "Objectives")
static inline int objective_groups(Objective o) {
    switch (o) {
        case STAGE0: return 1 << GROUP_TEXTENC | 1 << GROUP_DIT;
        case STAGE0B: return 1 << GROUP_GPT;
        case STAGE1: return 1 << GROUP_VIT | 1 << GROUP_ADAPTER;
        default: return 1 << GROUP_PREFIX | 1 << GROUP_GPT;
    }
}
#define ENCODER_GROUPS (1 << GROUP_VIT | 1 << GROUP_ADAPTER)

// a training batch
typedef struct {
    const float* images;        // [B,H,W,3] x0 (stages 0 and 1) or the image to caption (stage 2)
    const int* text_tokens;     // [B,N_q]   stage 0
    const int* caption_tokens;  // [B,T_c]   stages 0b and 2
    const float* noise;         // [B,H,W,3] stages 0 and 1
    const int* timesteps;       // [B]       stages 0 and 1
} Batch;

// AdamW's settings (vlv_update), and stage 1's per-image clip at z (vlv_backward; 0: off)
typedef struct { float lr, beta1, beta2, eps, weight_decay, grad_clip, clip_z; } AdamW;

// building and files. model_create sizes the activations for batches of B.
Model* model_create(const Config* c, int B);
void model_destroy(Model* m);
const Config* model_config(const Model* m);
size_t model_num_params(const Model* m);
void model_init(Model* m, uint64_t seed);                   // the standard initialization
void model_load_weights(Model* m, const char* path);         // a checkpoint of this config
void model_save(const Model* m, const char* path);           // a checkpoint, written atomically
// the four buffers of num_params floats: 0 weights, 1 AdamW's m, 2 AdamW's v, 3 the EMA
void model_buffer_read(const Model* m, int which, float* out);
void model_buffer_write(Model* m, int which, const float* in);
// ZeRO-1 (--zero 1, several ranks): from here on this rank keeps AdamW's moments of its chunk of
// the parameters only; reading the moments (model_buffer_read 1, 2) then gathers every rank's
// chunk, so every rank must call it together
void model_shard_optimizer(Model* m);

// training: one step of AdamW on objective o for the parameter groups `groups`; the loss
float vlv_train_step(Model* m, Objective o, const Batch* batch, int groups, const AdamW* opt);
float vlv_forward(Model* m, Objective o, const Batch* batch); // the loss only
void vlv_reset_optimizer(Model* m);                          // moments and step to 0
void vlv_vit_from_dit(Model* m);                            // the vision encoder from the frozen DiT at t = 0
int model_adam_step(const Model* m);                         // AdamW's step count (bias correction)
void model_set_adam_step(Model* m, int step);
float model_grad_norm(const Model* m); // the last step's gradient norm, before clipping
int model_z_clipped(const Model* m);   // images whose gradient at z the last stage-1 step clipped
void vlv_ema_update(Model* m, int groups, float decay);      // EMA of those groups' weights
void vlv_ema_swap(Model* m, int groups);                     // weights <-> EMA

// inference. ctx [B,N_q,d_t] is the decoder's context; x [B,H,W,3] the image being sampled.
void text_context(Model* m, const int* tokens, float* ctx);  // tokens [B,N_q]
void empty_context(Model* m, float* ctx);                    // the empty caption's
void image_context(Model* m, const float* images, float* ctx); // TextEnc(z(images)), images [B,H,W,3]
void ddim_sample(Model* m, float* x, const float* ctx_cond, const float* ctx_empty, float guidance,
                 int num_steps, int steps_run);              // the first steps_run of num_steps DDIM steps
void greedy_caption(Model* m, int* tokens, const float* ctx); // tokens [B,T_c]
void beam_caption(Model* m, int* best, const float* ctx, int beams); // one context [N_q,d_t] -> best [T_c]

// the matmuls' and attention's floating-point operations so far (2 per multiply-add;
// elementwise layers, under 1% of the work, are not counted), and attention's part of them
double vlv_flops(double* attention);
// the machine in words, and its fp32 peak in GFLOP/s for "% of peak" (0: unknown), with how
// that peak was found
float device_describe(int threads, char* desc, size_t cap, char* peak_how, size_t how_cap);

#endif
