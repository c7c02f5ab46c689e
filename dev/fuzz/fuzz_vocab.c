/*
Fuzz target: the vocabulary reader, vocab_load (vlvc/tokenizer.h), what ./caption reads from
a run's vocab.txt. An accepted vocabulary is freed with vocab_free.
  make fuzz    or, longer:    make fuzz-vocab FUZZ_SECONDS=600
*/
#include "vlvc/tokenizer.h"
#include "dev/fuzz/fuzz.h"

static char path[512];

static void target_init(void) { fuzz_path(path, sizeof path, "vocab.txt"); }

static void load_vocab(void* arg) {
    (void)arg;
    Vocab v;
    vocab_load(&v, path);
    vocab_free(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz_write(path, data, size);
    fuzz_read(load_vocab, NULL);
    return 0;
}
