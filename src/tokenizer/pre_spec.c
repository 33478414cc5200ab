/* Pre-tokenizer specs: a tokenizer.json "pre_tokenizer" object read generally (Sequence, Split,
 * ByteLevel, Digits, Punctuation, Whitespace, WhitespaceSplit, CharDelimiterSplit, Metaspace), and
 * the families GGUF files name in tokenizer.ggml.pre, each written as the steps its Hugging Face
 * tokenizer.json uses (the split regexes are the ones llama.cpp lists for each family). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "tokenizer/tok_internal.h"

/* HF ByteLevel's own split (use_regex) */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RE_CONTRACT "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RE_LLAMA3                                                                                  \
    RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                   \
    RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN35                                                                                  \
    RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_SEED_CODER                                                                              \
    RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_BAILING                                                                                 \
    "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*" \
    "|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"
/* upper-then-lower words (Tekken, GPT-4o) */
#define RE_UPPER "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]"
#define RE_LOWER "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]"
#define RE_WORDS(sfx)                                                                              \
    "[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER "*" RE_LOWER "+" sfx "|[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER "+" RE_LOWER "*" sfx
#define RE_TEKKEN RE_WORDS("") "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_GPT4O RE_WORDS(RE_CONTRACT "?") "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_DEEPSEEK3                                                                               \
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*" \
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_CJK "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"
#define RE_BLOOM " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{0964}\\x{06D4}\\x{060C})]+"
/* DeepSeek LLM: letters of cased scripts, ASCII/fullwidth punctuation */
#define RE_DS_LETTERS                                                                              \
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}"      \
    "\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}"     \
    "\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}"           \
    "\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"        \
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}"        \
    "\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}" \
    "\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}" \
    "\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}"         \
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}"          \
    "\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}"          \
    "\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}"         \
    "\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}"        \
    "\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"      \
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}" \
    "\\x{1E900}-\\x{1E943}]+"
#define RE_DS_PUNCT "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+"
/* HF Punctuation: Unicode P* plus ASCII punctuation (Rust's is_ascii_punctuation) */
#define RE_PUNCT "[\\p{P}\\x21-\\x2F\\x3A-\\x40\\x5B-\\x60\\x7B-\\x7E]"

/* Oniguruma's \\w: Alphabetic, marks, decimal digits, connector punctuation, join controls */
#define RE_OWORD_SET "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}"
#define RE_OWORD "[" RE_OWORD_SET "]"

/* One step of a family's spec. */
typedef enum {
    OP_END, OP_SPLIT, /* regex, Isolated */
    OP_DIGITS1,       /* Digits(individual_digits=true) */
    OP_DIGITS,        /* Digits(individual_digits=false) */
    OP_PUNCT,         /* Punctuation(Isolated) */
    OP_PUNCT_RUN,     /* Punctuation(Contiguous) */
    OP_BL_RE,         /* ByteLevel(use_regex=true) */
    OP_BL,            /* ByteLevel(use_regex=false) */
} pre_op;

typedef struct {
    const char *names; /* '|'-separated tokenizer.ggml.pre values */
    bool ignore_merges;
    struct { pre_op op; const char *re; } step[8];
} pre_family;

static const pre_family k_families[] = {
    {"default|gpt-2|gpt2|phi-2|jais|olmo|mpt|exaone4|trillion|granite-docling|gigachat|a.x-4.0|mellum|"
     "jina-es|jina-de|jina-v2-es|jina-v2-de|jina-v1-en|jina-v2-code|roberta-bpe|modern-bert",
     false, {{OP_BL_RE, NULL}}},
    {"starcoder|refact|smollm|command-r|codeshell|exaone|minerva-7b|mellum2", false, {{OP_DIGITS1, NULL}, {OP_BL_RE, NULL}}},
    {"llama-bpe|llama3|llama-v3|falcon3|falcon-h1|pixtral|midm-2.0|lfm2", true, {{OP_SPLIT, RE_LLAMA3}, {OP_BL, NULL}}},
    {"dbrx|smaug-bpe|chatglm-bpe|glm4", false, {{OP_SPLIT, RE_LLAMA3}, {OP_BL, NULL}}},
    {"qwen2|deepseek-r1-qwen|stablelm2|megrez|hunyuan|solar-open|kormo|f2llmv2|grok-2", false, {{OP_SPLIT, RE_QWEN2}, {OP_BL, NULL}}},
    {"qwen35", false, {{OP_SPLIT, RE_QWEN35}, {OP_BL, NULL}}},
    {"seed-coder", false, {{OP_SPLIT, RE_SEED_CODER}, {OP_BL, NULL}}},
    {"bailingmoe|bailingmoe2|llada-moe", false, {{OP_SPLIT, RE_BAILING}, {OP_BL, NULL}}},
    {"deepseek-coder", false,
     {{OP_SPLIT, "[\\r\\n]"}, {OP_SPLIT, "\\s?\\p{L}+"}, {OP_SPLIT, "\\s?\\p{P}+"}, {OP_SPLIT, RE_CJK}, {OP_DIGITS1, NULL}, {OP_BL, NULL}}},
    {"deepseek-llm", false,
     {{OP_SPLIT, "[\\r\\n]"}, {OP_SPLIT, RE_DS_LETTERS}, {OP_SPLIT, RE_DS_PUNCT}, {OP_SPLIT, "\\s+$"}, {OP_SPLIT, RE_CJK},
      {OP_DIGITS, NULL}, {OP_BL, NULL}}},
    {"deepseek-v3|hunyuan-dense|joyai-llm", false,
     {{OP_SPLIT, "\\p{N}{1,3}"}, {OP_SPLIT, "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+"},
      {OP_SPLIT, RE_DEEPSEEK3}, {OP_BL, NULL}}},
    {"falcon", false, {{OP_PUNCT_RUN, NULL}, {OP_BL_RE, NULL}, {OP_DIGITS, NULL}, {OP_SPLIT, "[0-9][0-9][0-9]"}}},
    {"poro-chat|bloom|gpt3-finnish", false, {{OP_SPLIT, RE_BLOOM}, {OP_BL, NULL}}},
    {"viking", false, {{OP_SPLIT, RE_BLOOM}, {OP_DIGITS1, NULL}, {OP_BL, NULL}}},
    {"tekken", true, {{OP_SPLIT, RE_TEKKEN}, {OP_BL, NULL}}},
    {"gpt-4o|llama4|kanana2|minimax-m2", false, {{OP_SPLIT, RE_GPT4O}, {OP_BL, NULL}}},
    {"chameleon", false,
     {{OP_SPLIT, "<sentinel:[0-9]+>"}, {OP_SPLIT, "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z"}, {OP_SPLIT, "([\\t\\n]|    |  )"},
      {OP_DIGITS1, NULL}, {OP_PUNCT, NULL}, {OP_BL_RE, NULL}}},
};

const char *tok_pre_family(int i, bool *ignore_merges) {
    if (i < 0 || (size_t)i >= sizeof k_families / sizeof *k_families) return NULL;
    static char first[sizeof k_families / sizeof *k_families][32];
    const char *names = k_families[i].names, *e = strchr(names, '|');
    size_t l = e ? (size_t)(e - names) : strlen(names);
    if (l >= sizeof first[i]) l = sizeof first[i] - 1;
    memcpy(first[i], names, l);
    first[i][l] = 0;
    if (ignore_merges) *ignore_merges = k_families[i].ignore_merges;
    return first[i];
}

static pagoda_status add_bytelevel(pg_tokenizer *t, bool use_regex, bool prefix_space) {
    pagoda_status st = PAGODA_OK;
    t->byte_level = true;
    if (prefix_space) st = tok_add_step(t, TOK_STEP_PREFIX);
    if (!st && use_regex) st = tok_add_split(t, RE_GPT2, false, TOK_SPLIT_ISOLATED, false);
    return st ? st : tok_add_step(t, TOK_STEP_BYTES);
}

static bool name_in(const char *names, const char *pre) {
    size_t n = strlen(pre);
    for (const char *p = names; *p;) {
        const char *e = strchr(p, '|');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !memcmp(p, pre, n)) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

pagoda_status tok_pre_from_name(pg_tokenizer *t, const char *pre) {
    for (size_t f = 0; f < sizeof k_families / sizeof *k_families; f++) {
        const pre_family *fam = &k_families[f];
        if (!name_in(fam->names, pre)) continue;
        pagoda_status st = PAGODA_OK;
        if (fam->ignore_merges) t->ignore_merges = true;
        for (int i = 0; i < 8 && fam->step[i].op != OP_END && !st; i++) {
            switch (fam->step[i].op) {
            case OP_SPLIT: st = tok_add_split(t, fam->step[i].re, false, TOK_SPLIT_ISOLATED, false); break;
            case OP_DIGITS1: st = tok_add_split(t, "\\p{N}", false, TOK_SPLIT_ISOLATED, false); break;
            case OP_DIGITS: st = tok_add_split(t, "\\p{N}", false, TOK_SPLIT_CONTIGUOUS, false); break;
            case OP_PUNCT: st = tok_add_split(t, RE_PUNCT, false, TOK_SPLIT_ISOLATED, false); break;
            case OP_PUNCT_RUN: st = tok_add_split(t, RE_PUNCT, false, TOK_SPLIT_CONTIGUOUS, false); break;
            case OP_BL_RE: st = add_bytelevel(t, true, false); break;
            case OP_BL: st = add_bytelevel(t, false, false); break;
            default: break;
            }
        }
        return st;
    }
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer: unsupported pre-tokenizer tokenizer.ggml.pre = '%s'", pre);
}

/* ---- tokenizer.json ---- */

static const char *jstr(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* Oniguruma (which `tokenizers` compiles these regexes with) nests character classes: [a[bc]] is
 * a, b or c, where PCRE2 reads a literal '['. Flattens nested positive classes; a negated or
 * intersected nested class has no PCRE2 spelling here and is refused. *out is malloc'd. */
static pagoda_status onig_to_pcre2(const char *re, char **out) {
    size_t n = strlen(re);
    char *o = malloc(n + 1);
    if (!o) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    size_t m = 0;
    int depth = 0;
    bool class_start = false; /* just after '[' or '[^': a ']' here is literal */
    for (size_t i = 0; i < n; i++) {
        char ch = re[i];
        if (ch == '\\' && i + 1 < n) {
            o[m++] = ch;
            o[m++] = re[++i];
            class_start = false;
            continue;
        }
        if (depth == 0) {
            if (ch == '[') {
                depth = 1;
                class_start = true;
                o[m++] = ch;
                if (i + 1 < n && re[i + 1] == '^') o[m++] = re[++i];
                continue;
            }
            o[m++] = ch;
            continue;
        }
        if (ch == '[' && i + 1 < n && re[i + 1] == ':') { /* POSIX class [:alpha:] */
            const char *e = strstr(re + i + 2, ":]");
            if (e) {
                size_t l = (size_t)(e + 2 - (re + i));
                memcpy(o + m, re + i, l);
                m += l;
                i += l - 1;
                class_start = false;
                continue;
            }
        }
        if (ch == '[') {
            if (i + 1 < n && re[i + 1] == '^') {
                free(o);
                return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer.json: split regex with a negated nested character class");
            }
            depth++;
            class_start = true;
            continue;
        }
        if (ch == '&' && i + 1 < n && re[i + 1] == '&') {
            free(o);
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer.json: split regex with a character class intersection (&&)");
        }
        if (ch == ']' && !class_start) {
            if (--depth == 0) o[m++] = ch;
            continue;
        }
        class_start = false;
        o[m++] = ch;
    }
    o[m] = 0;
    *out = o;
    return PAGODA_OK;
}

static pagoda_status behavior_of(const json_t *p, const char *what, tok_split_behavior *b) {
    const char *s = jstr(p, "behavior");
    if (!s || !strcmp(s, "Isolated") || !strcmp(s, "isolated")) *b = TOK_SPLIT_ISOLATED;
    else if (!strcmp(s, "Removed") || !strcmp(s, "removed")) *b = TOK_SPLIT_REMOVED;
    else if (!strcmp(s, "MergedWithPrevious") || !strcmp(s, "merged_with_previous")) *b = TOK_SPLIT_MERGED_PREV;
    else if (!strcmp(s, "MergedWithNext") || !strcmp(s, "merged_with_next")) *b = TOK_SPLIT_MERGED_NEXT;
    else if (!strcmp(s, "Contiguous") || !strcmp(s, "contiguous")) *b = TOK_SPLIT_CONTIGUOUS;
    else return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer.json: %s with behavior '%s' is not supported", what, s);
    return PAGODA_OK;
}

pagoda_status tok_pre_from_json(pg_tokenizer *t, const void *json) {
    const json_t *p = json;
    if (!p || json_is_null(p)) return PAGODA_OK;
    const char *type = jstr(p, "type");
    if (!type) return pg_fail(PAGODA_ERR_FORMAT, "tokenizer.json: pre_tokenizer without a type");
    pagoda_status st;
    tok_split_behavior beh;
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(p, "pretokenizers"), *e;
        size_t i;
        json_array_foreach(arr, i, e) if ((st = tok_pre_from_json(t, e))) return st;
        return PAGODA_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        json_t *ur = json_object_get(p, "use_regex");
        return add_bytelevel(t, !ur || json_is_true(ur), json_is_true(json_object_get(p, "add_prefix_space")));
    }
    if (!strcmp(type, "Split")) {
        if ((st = behavior_of(p, "Split", &beh))) return st;
        bool inv = json_is_true(json_object_get(p, "invert"));
        json_t *pat = json_object_get(p, "pattern");
        const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
        if (lit) return tok_add_split(t, lit, true, beh, inv);
        if (!re) return pg_fail(PAGODA_ERR_FORMAT, "tokenizer.json: Split without a pattern");
        char *pc = NULL;
        if ((st = onig_to_pcre2(re, &pc))) return st;
        st = tok_add_split(t, pc, false, beh, inv);
        free(pc);
        return st;
    }
    if (!strcmp(type, "Digits")) {
        bool each = json_is_true(json_object_get(p, "individual_digits"));
        return tok_add_split(t, "\\p{N}", false, each ? TOK_SPLIT_ISOLATED : TOK_SPLIT_CONTIGUOUS, false);
    }
    if (!strcmp(type, "Punctuation")) {
        if ((st = behavior_of(p, "Punctuation", &beh))) return st;
        return tok_add_split(t, RE_PUNCT, false, beh, false);
    }
    if (!strcmp(type, "WhitespaceSplit")) return tok_add_split(t, "\\s", false, TOK_SPLIT_REMOVED, false);
    if (!strcmp(type, "Whitespace")) /* \\w+|[^\\w\\s]+ with Oniguruma's Unicode \\w */
        return tok_add_split(t, RE_OWORD "+|[^" RE_OWORD_SET "\\s]+", false, TOK_SPLIT_REMOVED, true);
    if (!strcmp(type, "CharDelimiterSplit")) {
        const char *d = jstr(p, "delimiter");
        if (!d || !*d) return pg_fail(PAGODA_ERR_FORMAT, "tokenizer.json: CharDelimiterSplit without a delimiter");
        return tok_add_split(t, d, true, TOK_SPLIT_REMOVED, false);
    }
    if (!strcmp(type, "Metaspace")) {
        const char *rep = jstr(p, "replacement");
        json_t *split = json_object_get(p, "split");
        const char *scheme = jstr(p, "prepend_scheme");
        if ((rep && strcmp(rep, "\xE2\x96\x81")) || json_is_true(split))
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer.json: Metaspace with split or another replacement");
        if (t->n_split)
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer.json: Metaspace after other pre-tokenizers");
        t->spm_escape = true;
        t->add_space_prefix = !scheme || strcmp(scheme, "never");
        return PAGODA_OK;
    }
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "tokenizer.json: unsupported pre_tokenizer type '%s'", type);
}
