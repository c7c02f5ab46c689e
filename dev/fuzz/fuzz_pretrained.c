/*
Fuzz target: the pretrained-parts reader, pretrained_load (vlvc/pretrained.h), what
--pretrained FILE reads: the input is pretrained.bin, loaded into the tiny run of
dev/fuzz/fuzz_run.h, with its last 4 bytes set to its CRC32 (fuzz_with_crc). Its provenance
pretrained.txt is written beside it for each input with the input's SHA-256 and the run's
vocabulary, as a genuine one would be: with any other the reader stops at the hash, before the
file's contents.
  make fuzz    or, longer:    make fuzz-pretrained FUZZ_SECONDS=600
*/
#define VLV_NO_MAIN
#include "train_vlv.c"
#include "vlvc/train_state.h"
#include "vlvc/pretrained.h"
#include "dev/fuzz/fuzz.h"
#include "dev/fuzz/fuzz_run.h"

static Run run;
static char bin[512], txt[512], vocab[128];

static void target_init(void) {
    fuzz_run_init(&run, fuzz_dir);
    fuzz_path(bin, sizeof bin, "pretrained.bin");
    provenance_path(bin, txt, sizeof txt);
    vocab_fingerprint(&run.vocab, vocab, sizeof vocab);
}

static void write_provenance(const uint8_t* data, size_t size) {
    Sha256 h;
    char hex[65], text[1024];
    sha256_init(&h);
    sha256_update(&h, data, size);
    sha256_final(&h, hex);
    int n = snprintf(text, sizeof text, "%s\nfile: pretrained.bin\nsha256: %s\nvocabulary: %s\ncommand: fuzz\n"
                     "commit: fuzz\nhardware: fuzz\n", PROVENANCE_FIRST_LINE, hex, vocab);
    fuzz_write(txt, (const uint8_t*)text, (size_t)n);
}

static void load_parts(void* arg) {
    (void)arg;
    char sha[65];
    pretrained_load(&run, bin, sha);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    uint8_t* input = fuzz_with_crc(data, size);
    fuzz_write(bin, input, size);
    write_provenance(input, size);
    free(input);
    fuzz_read(load_parts, NULL);
    return 0;
}
