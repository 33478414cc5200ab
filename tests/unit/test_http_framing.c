/* Request framing checks (src/serve/http_framing.c): a table of header sets with the status each
 * must get (0: accepted, 400, 501) and words its message must contain. The same shapes are sent on
 * real sockets by tests/python/test_http_hostile.py; this table also covers the cases a socket
 * test cannot cheaply reach (HTTP/1.0, parameters, empty list elements, 20-digit lengths). */
#include <string.h>

#include "serve/http_framing.h"
#include "test_util.h"

typedef struct {
    const char *id;
    http_header h[4];
    int http10;
    unsigned status;
    const char *words;
} framing_case;

#define CL "Content-Length"
#define TE "Transfer-Encoding"

static const framing_case k_cases[] = {
    {"no body", {{"Host", "x"}}, 0, 0, NULL},
    {"one length", {{CL, "42"}}, 0, 0, NULL},
    {"same length twice", {{CL, "42"}, {CL, "42"}}, 0, 0, NULL},
    {"same length as a list", {{CL, "42 , 42"}}, 0, 0, NULL},
    {"two lengths", {{CL, "42"}, {CL, "5"}}, 0, 400, "Conflicting Content-Length values: 42 and 5"},
    {"two lengths in a list", {{CL, "42, 5"}}, 0, 400, "Conflicting"},
    {"length not a number", {{CL, "4x"}}, 0, 400, "Invalid Content-Length"},
    {"negative length", {{CL, "-1"}}, 0, 400, "Invalid Content-Length"},
    {"20-digit length", {{CL, "18446744073709551616"}}, 0, 400, "Invalid Content-Length"},
    {"empty length", {{CL, ""}}, 0, 400, "Invalid Content-Length"},
    {"length with trailing comma", {{CL, "5,"}}, 0, 400, "Invalid Content-Length"},
    {"chunked", {{TE, "chunked"}}, 0, 0, NULL},
    {"Chunked, any case", {{"transfer-encoding", "ChUnKeD"}}, 0, 0, NULL},
    {"chunked with a length", {{CL, "5"}, {TE, "chunked"}}, 0, 400, "both Transfer-Encoding and Content-Length"},
    {"length after chunked", {{TE, "chunked"}, {CL, "5"}}, 0, 400, "both"},
    {"chunked in HTTP/1.0", {{TE, "chunked"}}, 1, 400, "HTTP/1.0"},
    {"gzip, chunked", {{TE, "gzip, chunked"}}, 0, 501, "'gzip' is not implemented"},
    {"gzip then chunked headers", {{TE, "gzip"}, {TE, "chunked"}}, 0, 501, "'gzip'"},
    {"coding with a parameter", {{TE, "x-foo;a=1, chunked"}}, 0, 501, "'x-foo;a=1'"},
    {"chunked, gzip", {{TE, "chunked, gzip"}}, 0, 400, "must be the last"},
    {"chunked twice", {{TE, "chunked"}, {TE, "chunked"}}, 0, 400, "must be the last"},
    {"gzip alone", {{TE, "gzip"}}, 0, 400, "must end with 'chunked'"},
    {"identity", {{TE, "identity"}}, 0, 400, "'identity' is not a transfer coding"},
    {"identity with a length", {{TE, "identity"}, {CL, "3"}}, 0, 400, "'identity'"},
    {"empty coding", {{TE, ""}}, 0, 400, "Empty element"},
    {"empty element", {{TE, "gzip, , chunked"}}, 0, 400, "Empty element"},
    {"trailing comma", {{TE, "chunked,"}}, 0, 400, "Empty element"},
    {"chunked with a parameter", {{TE, "chunked;x=1"}}, 0, 400, "no parameters"},
};

int main(void) {
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) {
        const framing_case *c = &k_cases[i];
        size_t n = 0;
        while (n < 4 && c->h[n].name) n++;
        char msg[256];
        unsigned st = http_framing_check(c->h, n, c->http10, msg, sizeof msg);
        CHECK(st == c->status, "%s: status %u, want %u (%s)", c->id, st, c->status, msg);
        if (c->words) CHECK(strstr(msg, c->words) != NULL, "%s: message '%s' lacks '%s'", c->id, msg, c->words);
        if (!c->status) CHECK(msg[0] == 0, "%s: a message for an accepted head: '%s'", c->id, msg);
    }
    char tiny[1] = {'x'};
    http_header two[2] = {{CL, "1"}, {CL, "2"}};
    CHECK(http_framing_check(two, 2, 0, tiny, sizeof tiny) == 400 && tiny[0] == 0, "a 1-byte message buffer");
    TEST_DONE();
}
