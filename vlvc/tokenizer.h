/*
The word-level tokenizer (doc/model.md "Tokens", doc/data.md "Vocabulary file"): ids 0..3 are
PAD, BOS, EOS, UNK; the words of the caption corpus follow in byte order (strcmp), so the ids do
not depend on the order of the corpus and Python's sorted() rebuilds them. A word is a run of
non-whitespace bytes, taken as is: the captions are normalised where they are made, not here.
One vocabulary serves the text encoder and the caption decoder; it is saved as a text file.
*/
#ifndef VLVC_TOKENIZER_H
#define VLVC_TOKENIZER_H

#include "config.h"
#include "random.h"

#define VOCAB_MAGIC "vlv.c-vocabulary"
#define VOCAB_VERSION 1
#define VOCAB_MAX_WORD 63         // bytes; a longer corpus word is a corpus problem, not a word
#define VOCAB_MAX_SIZE (1 << 20)  // the config's limit on any field
#define VOCAB_MAX_BYTES (64 + (uint64_t)VOCAB_MAX_SIZE * (VOCAB_MAX_WORD + 1)) // the first line, then a word per line

typedef struct {
    int size;      // including the 4 specials
    char** words;  // words[id]; words[TOKEN_FIRST_WORD..] strictly increasing in strcmp order
} Vocab;

static const char* const vocab_specials[TOKEN_FIRST_WORD] = {"<pad>", "<bos>", "<eos>", "<unk>"};

static inline int vocab_is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// the next word at *p: sets *word to its start, moves *p past it, returns its length (0 at the end)
static inline size_t vocab_next_word(const char** p, const char** word) {
    const char* s = *p;
    while (vocab_is_space(*s)) s++;
    const char* e = s;
    while (*e != '\0' && !vocab_is_space(*e)) e++;
    *word = s;
    *p = e;
    return (size_t)(e - s);
}

static inline char* vocab_strndup(const char* s, size_t n) {
    char* d = (char*)mallocCheck(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static inline int vocab_strcmp(const void* a, const void* b) {
    return strcmp(*(char* const*)a, *(char* const*)b);
}

static inline void vocab_free(Vocab* v) {
    for (int i = 0; i < v->size; i++) free(v->words[i]);
    free(v->words);
    v->words = NULL;
    v->size = 0;
}

// the vocabulary of a caption corpus: the specials, then every distinct word in byte order
static inline void vocab_build(Vocab* v, const char* const* texts, int n) {
    size_t count = 0, cap = 256;
    char** all = (char**)mallocCheck(cap * sizeof(char*));
    for (int t = 0; t < n; t++) {
        const char* p = texts[t];
        const char* w;
        size_t len;
        while ((len = vocab_next_word(&p, &w)) > 0) {
            if (len > VOCAB_MAX_WORD) {
                fail("caption %d has a word of %zu bytes ('%.20s...'); words may have at most %d", t, len, w, VOCAB_MAX_WORD);
            }
            for (int s = 0; s < TOKEN_FIRST_WORD; s++) {
                if (strlen(vocab_specials[s]) == len && strncmp(w, vocab_specials[s], len) == 0) {
                    fail("caption %d contains '%s', the name of a special token", t, vocab_specials[s]);
                }
            }
            if (count == cap) {
                cap *= 2;
                char** grown = (char**)realloc(all, cap * sizeof(char*));
                if (grown == NULL) fail("out of memory building the vocabulary (%zu words)", count);
                all = grown;
            }
            all[count++] = vocab_strndup(w, len);
        }
    }
    qsort(all, count, sizeof(char*), vocab_strcmp);
    size_t unique = 0;
    for (size_t i = 0; i < count; i++) {
        if (unique > 0 && strcmp(all[unique - 1], all[i]) == 0) { free(all[i]); continue; }
        all[unique++] = all[i];
    }
    if (unique + TOKEN_FIRST_WORD > VOCAB_MAX_SIZE) {
        fail("the caption corpus has %zu distinct words; a vocabulary holds at most %d", unique, VOCAB_MAX_SIZE - TOKEN_FIRST_WORD);
    }
    v->size = (int)unique + TOKEN_FIRST_WORD;
    v->words = (char**)mallocCheck((size_t)v->size * sizeof(char*));
    for (int s = 0; s < TOKEN_FIRST_WORD; s++) v->words[s] = vocab_strndup(vocab_specials[s], strlen(vocab_specials[s]));
    memcpy(v->words + TOKEN_FIRST_WORD, all, unique * sizeof(char*));
    free(all);
}

// the id of the word w[0..len), or TOKEN_UNK (binary search: the words are sorted)
static inline int vocab_lookup(const Vocab* v, const char* w, size_t len) {
    int lo = TOKEN_FIRST_WORD, hi = v->size - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const char* m = v->words[mid];
        int c = strncmp(m, w, len);
        if (c == 0) c = m[len] == '\0' ? 0 : 1; // m is longer than w: it sorts after
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return TOKEN_UNK;
}

// writes [BOS, words..., EOS, PAD...] of length len (unknown words become UNK); returns the
// number of tokens before the padding (>= 2), or 0 when the text does not fit (tokens are then
// all PAD): the caller reports "too long", nothing is truncated silently
static inline int vocab_encode(const Vocab* v, const char* text, int* tokens, int len) {
    for (int i = 0; i < len; i++) tokens[i] = TOKEN_PAD;
    const char* p = text;
    const char* w;
    size_t wl;
    int n = 0;
    while ((wl = vocab_next_word(&p, &w)) > 0) n++;
    if (n + 2 > len) return 0;
    p = text;
    int t = 0;
    tokens[t++] = TOKEN_BOS;
    while ((wl = vocab_next_word(&p, &w)) > 0) tokens[t++] = vocab_lookup(v, w, wl);
    tokens[t++] = TOKEN_EOS;
    return t;
}

// the words of tokens[0..len) up to the first EOS, joined by spaces; PAD and BOS are skipped,
// an id outside the vocabulary reads as "<unk>". Always NUL-terminated; cut short if cap is
// too small (cap >= 1).
static inline void vocab_decode(const Vocab* v, const int* tokens, int len, char* out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < len && tokens[i] != TOKEN_EOS; i++) {
        int id = tokens[i];
        if (id == TOKEN_PAD || id == TOKEN_BOS) continue;
        const char* w = (id >= 0 && id < v->size) ? v->words[id] : vocab_specials[TOKEN_UNK];
        int wrote = snprintf(out + n, cap - n, "%s%s", n > 0 ? " " : "", w);
        if (wrote < 0 || (size_t)wrote >= cap - n) { // cut: snprintf left what fitted, terminated
            return;
        }
        n += (size_t)wrote;
    }
}

// text file: "vlv.c-vocabulary VERSION SIZE\n", then one word per line, ids in order
static inline void vocab_save(const Vocab* v, const char* path) {
    FILE* fp = atomic_open(path);
    if (fprintf(fp, "%s %d %d\n", VOCAB_MAGIC, VOCAB_VERSION, v->size) < 0) fail("writing '%s' failed", path);
    for (int i = 0; i < v->size; i++) {
        if (fprintf(fp, "%s\n", v->words[i]) < 0) fail("writing '%s' failed: is the disk full?", path);
    }
    atomic_commit(fp, path);
}

static inline void vocab_load(Vocab* v, const char* path) {
    FILE* fp = readOpenCheck(path, VOCAB_MAX_BYTES);
    long size = file_size(fp, path);
    char* buf = (char*)mallocCheck((size_t)size + 1);
    freadCheck(buf, 1, (size_t)size, fp, path);
    fclose(fp);
    buf[size] = '\0';
    const char* end = buf + size;
    size_t mlen = strlen(VOCAB_MAGIC);
    if ((size_t)size <= mlen || memcmp(buf, VOCAB_MAGIC, mlen) != 0 || buf[mlen] != ' ') {
        fail("'%s' is not a vlv.c vocabulary: it does not start with '%s'", path, VOCAB_MAGIC);
    }
    char* nl = (char*)memchr(buf, '\n', (size_t)size);
    if (nl == NULL) fail("'%s' is truncated: its first line has no end", path);
    *nl = '\0';
    int version, count, used = 0;
    if (sscanf(buf + mlen, " %d %d%n", &version, &count, &used) != 2 || buf[mlen + used] != '\0') {
        fail("'%s' is corrupt: its first line '%s' is not '%s VERSION SIZE'", path, buf, VOCAB_MAGIC);
    }
    if (version != VOCAB_VERSION) {
        fail("'%s' is a vocabulary of version %d; this program reads version %d", path, version, VOCAB_VERSION);
    }
    if (count <= TOKEN_FIRST_WORD || count > VOCAB_MAX_SIZE) {
        fail("'%s' is corrupt: a bad word count %d (expected %d..%d)", path, count, TOKEN_FIRST_WORD + 1, VOCAB_MAX_SIZE);
    }
    v->size = 0;
    v->words = (char**)mallocCheck((size_t)count * sizeof(char*));
    const char* p = nl + 1;
    for (int i = 0; i < count; i++) {
        const char* e = (const char*)memchr(p, '\n', (size_t)(end - p));
        if (e == NULL) fail("'%s' is truncated: it promises %d words and ends in word %d", path, count, i);
        size_t len = (size_t)(e - p);
        int bad = len == 0 || len > VOCAB_MAX_WORD;
        for (size_t k = 0; k < len; k++) bad |= (unsigned char)p[k] <= ' ' || p[k] == 0x7f;
        if (bad) fail("'%s' is corrupt: line %d is not a word (empty, too long, or with spaces or control bytes)", path, i + 2);
        v->words[v->size++] = vocab_strndup(p, len);
        if (i < TOKEN_FIRST_WORD && strcmp(v->words[i], vocab_specials[i]) != 0) {
            fail("'%s' is corrupt: id %d must be the special token '%s', not '%s'", path, i, vocab_specials[i], v->words[i]);
        }
        if (i > TOKEN_FIRST_WORD && strcmp(v->words[i - 1], v->words[i]) >= 0) {
            fail("'%s' is corrupt: the words are not sorted or repeat ('%s' before '%s')", path, v->words[i - 1], v->words[i]);
        }
        p = e + 1;
    }
    if (p != end) fail("'%s' has trailing data after its %d words", path, count);
    free(buf);
}

// ----------------------------------------------------------------------------
// token rows

static inline void check_tokens(const int* tokens, size_t n, int vocab, const char* what) {
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= vocab) fail("%s: token %d at index %zu is outside the vocabulary [0, %d)", what, tokens[i], i, vocab);
    }
}

// the next-token targets a cross-entropy counts: those that are not PAD
static inline int count_targets(const int* targets, int n) {
    int counted = 0;
    for (int i = 0; i < n; i++) { counted += targets[i] != TOKEN_PAD; }
    return counted;
}

// the empty caption [BOS, EOS, PAD...] in a row of n tokens
static inline void empty_caption(int* row, int n) {
    for (int j = 0; j < n; j++) { row[j] = j == 0 ? TOKEN_BOS : j == 1 ? TOKEN_EOS : TOKEN_PAD; }
}

// Stage 0's caption dropout: each of the B captions [B, N] becomes the empty caption with
// probability p, so that the decoder also learns the unconditional prediction that
// classifier-free guidance steers away from. Returns how many were dropped.
static inline int caption_dropout(int* tokens, int B, int N, float p, uint64_t* rng) {
    int dropped = 0;
    for (int b = 0; b < B; b++) {
        if (random_uniform(rng) < p) { empty_caption(tokens + (size_t)b * N, N); dropped++; }
    }
    return dropped;
}

#endif
