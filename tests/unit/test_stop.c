/* Stop strings over a token stream (src/engine/stop.c) against a direct reference: for random
 * texts cut into random pieces and random stop sets (overlapping, prefixes of each other,
 * multi-byte UTF-8), the emitted text must be exactly the text before the earliest stop string
 * (or all of it), emitted text must never contain a stop-string start that later completes,
 * and the stop must be reported at the piece that completes it. */
#include <string.h>

#include "engine/stop.h"
#include "test_util.h"

static const char *const k_alphabet[] = {"a", "b", "ab", "\n", " ", "é", "日本", "<", "|", ">"};

static void test_case(unsigned long long *rng) {
    char text[512] = {0};
    size_t n = 0;
    int n_pieces = 1 + (int)(test_rand_u64(rng) % 40);
    size_t cut[64];
    for (int i = 0; i < n_pieces; i++) {
        int k = 1 + (int)(test_rand_u64(rng) % 3);
        for (int j = 0; j < k; j++) {
            const char *a = k_alphabet[test_rand_u64(rng) % 10];
            memcpy(text + n, a, strlen(a));
            n += strlen(a);
        }
        cut[i] = n;
    }
    char stops_buf[4][16];
    const char *stops[4];
    int n_stops = (int)(test_rand_u64(rng) % 4);
    for (int s = 0; s < n_stops; s++) {
        if (n > 2 && test_rand_u64(rng) % 2) { /* a piece of the text, so it often matches */
            size_t at = test_rand_u64(rng) % (n - 1), len = 1 + test_rand_u64(rng) % 4;
            if (at + len > n) len = n - at;
            memcpy(stops_buf[s], text + at, len);
            stops_buf[s][len] = 0;
        } else {
            strcpy(stops_buf[s], k_alphabet[test_rand_u64(rng) % 10]);
            strcat(stops_buf[s], k_alphabet[test_rand_u64(rng) % 10]);
        }
        stops[s] = stops_buf[s];
    }
    /* reference: the earliest end position at which some stop string is complete, and its start */
    size_t ref_cut = n, ref_end = (size_t)-1;
    for (size_t end = 1; end <= n && ref_end == (size_t)-1; end++)
        for (int s = 0; s < n_stops; s++) {
            size_t l = strlen(stops[s]);
            if (l && l <= end && !memcmp(text + end - l, stops[s], l)) {
                size_t start = end - l;
                if (ref_end == (size_t)-1 || start < ref_cut) ref_cut = start;
                ref_end = end;
            }
        }
    /* earliest-starting stop among those complete at ref_end... the matcher finds the earliest
     * start among stops complete by the piece that completes the first one */
    stop_matcher m;
    CHECK(stop_init(&m, stops, n_stops) == PAGODA_OK, "init");
    char out[1024];
    size_t n_out = 0, prev = 0;
    int stopped = 0;
    size_t stop_piece_end = 0;
    for (int i = 0; i < n_pieces && !stopped; i++) {
        const char *e;
        size_t ne;
        int r = stop_push(&m, text + prev, cut[i] - prev, &e, &ne);
        memcpy(out + n_out, e, ne);
        n_out += ne;
        prev = cut[i];
        if (r == 1) stopped = 1, stop_piece_end = cut[i];
        /* nothing emitted may reach into a stop string that completes later */
        CHECK(n_out <= ref_cut, "emitted %zu bytes past the stop at %zu", n_out, ref_cut);
    }
    if (!stopped) {
        const char *e;
        size_t ne;
        stop_flush(&m, &e, &ne);
        memcpy(out + n_out, e, ne);
        n_out += ne;
    }
    CHECK(stopped == (ref_end != (size_t)-1), "stop reported %d, reference %d", stopped, ref_end != (size_t)-1);
    if (stopped) {
        CHECK(stop_piece_end >= ref_end, "stopped at %zu before the stop completed at %zu", stop_piece_end, ref_end);
        /* the output is the text before the earliest stop occurrence in what was seen */
        size_t seen = stop_piece_end, first = seen;
        for (int s = 0; s < n_stops; s++) {
            size_t l = strlen(stops[s]);
            for (size_t p = 0; p + l <= seen; p++)
                if (!memcmp(text + p, stops[s], l)) {
                    if (p < first) first = p;
                    break;
                }
        }
        CHECK(n_out == first && !memcmp(out, text, n_out), "output %zu bytes, expected %zu", n_out, first);
        /* which stop string it was (Anthropic's stop_sequence): one that starts there */
        CHECK(m.matched >= 1 && m.matched <= n_stops, "matched %d of %d stops", m.matched, n_stops);
        const char *which = stops[m.matched - 1];
        CHECK(first + strlen(which) <= seen && !memcmp(text + first, which, strlen(which)),
              "stop %d ('%s') is not the one at %zu", m.matched - 1, which, first);
    } else {
        CHECK(n_out == n && !memcmp(out, text, n), "without a stop everything comes out (%zu of %zu)", n_out, n);
        CHECK(m.matched == 0, "no stop, yet matched %d", m.matched);
    }
    stop_free(&m);
}

int main(void) {
    unsigned long long rng = 42;
    for (int i = 0; i < 20000 && !g_test_failures; i++) test_case(&rng);
    /* a stop string split over three tokens never leaks its start */
    stop_matcher m;
    const char *stops[] = {"<|end|>"};
    CHECK(stop_init(&m, stops, 1) == PAGODA_OK, "init");
    const char *e;
    size_t ne;
    CHECK(stop_push(&m, "answer <|", 9, &e, &ne) == 0 && ne == 7 && !memcmp(e, "answer ", 7), "held back '<|'");
    CHECK(stop_push(&m, "en", 2, &e, &ne) == 0 && ne == 0, "still held");
    CHECK(stop_push(&m, "d|> more", 8, &e, &ne) == 1 && ne == 0, "stop found, nothing after it");
    stop_free(&m);
    CHECK(stop_init(&m, stops, 1) == PAGODA_OK, "init");
    CHECK(stop_push(&m, "a <", 3, &e, &ne) == 0 && ne == 2, "'<' held");
    CHECK(stop_push(&m, "b", 1, &e, &ne) == 0 && ne == 2 && !memcmp(e, "<b", 2), "released when it cannot be a stop");
    stop_flush(&m, &e, &ne);
    CHECK(ne == 0, "nothing left");
    stop_free(&m);
    TEST_DONE();
}
