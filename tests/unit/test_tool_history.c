/* Tool history in chat requests: an assistant message's tool_calls (arguments as the JSON string
 * OpenAI clients send) and "tool" messages, parsed by src/serve/openai_request.c and rendered by
 * real chat templates. Templates read arguments as a mapping (`arguments | tojson`: Llama 3.1,
 * Qwen2.5, Mistral) or accept a string too (Qwen3), so the request keeps a string that holds a
 * JSON object as that object; the renderings must show the arguments once, as JSON, not as a
 * JSON-encoded string. */
#include <jansson.h>
#include <string.h>

#include "serve/openai_request.h"
#include "template/chat_template.h"
#include "test_util.h"

static const char *BODY =
    "{\"messages\": ["
    "{\"role\": \"user\", \"content\": \"Weather in Paris?\"},"
    "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"call_1\", \"type\": \"function\","
    " \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}},"
    " {\"id\": \"call_2\", \"type\": \"function\", \"function\": {\"name\": \"note\", \"arguments\": \"free text\"}}]},"
    "{\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"content\": \"{\\\"temperature\\\": 21}\"}],"
    "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {}}},"
    " {\"type\": \"function\", \"function\": {\"name\": \"note\"}}],"
    "\"parallel_tool_calls\": false}";

/* the way Llama 3.1's and Mistral's templates write an earlier call (written for this test) */
static const char *OBJ_TMPL =
    "{%- for m in messages %}{%- if m.tool_calls %}{%- for tc in m.tool_calls %}"
    "{{ '{\"name\": \"' + tc.function.name + '\", \"parameters\": ' }}{{ tc.function.arguments | tojson }}{{ '}\\n' }}"
    "{%- endfor %}{%- elif m.role == 'tool' %}{{ 'ipython: ' + m.content + '\\n' }}"
    "{%- else %}{{ m.role + ': ' + m.content + '\\n' }}{%- endif %}{%- endfor %}";

static char *render(const char *tmpl, const oa_request *r) {
    chat_template_input in = {.messages_json = r->messages_json, .tools_json = r->tools_json,
                              .add_generation_prompt = true, .eos_token = "<|im_end|>"};
    char *out = NULL;
    pagoda_status st = chat_template_render(tmpl, &in, &out);
    CHECK(st == PAGODA_OK, "render: %s", pagoda_last_error());
    return out;
}

int main(void) {
    oa_request r;
    oa_error err;
    int rc = oa_request_parse(BODY, strlen(BODY), OA_CHAT, NULL, &r, &err);
    CHECK(rc == 0, "parse: %s (%s)", err.message, err.param);
    if (rc) TEST_DONE();
    CHECK(r.parallel_tool_calls == 0 && r.tools_json, "parallel_tool_calls / tools");

    json_t *m = json_loads(r.messages_json, 0, NULL);
    json_t *calls = json_object_get(json_array_get(m, 1), "tool_calls");
    json_t *a0 = json_object_get(json_object_get(json_array_get(calls, 0), "function"), "arguments");
    json_t *a1 = json_object_get(json_object_get(json_array_get(calls, 1), "function"), "arguments");
    CHECK(json_is_object(a0) && json_is_string(json_object_get(a0, "city")), "object arguments decoded");
    CHECK(json_is_string(a1) && !strcmp(json_string_value(a1), "free text"), "other strings stay strings");
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(m, 1), "content")), ""), "null content -> \"\"");
    json_decref(m);

    char *out = render(OBJ_TMPL, &r);
    const char *want = "user: Weather in Paris?\n"
                       "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n"
                       "{\"name\": \"note\", \"parameters\": \"free text\"}\n"
                       "ipython: {\"temperature\": 21}\n";
    CHECK(out && !strcmp(out, want), "object template:\n%s\nwant:\n%s", out ? out : "(null)", want);
    free(out);

    /* Qwen3's template (as Hugging Face ships it, from tests/golden/chat_templates.json) */
    json_t *g = json_load_file(PAGODA_TESTS_DIR "/golden/chat_templates.json", 0, NULL);
    const char *qwen3 = json_string_value(json_object_get(json_object_get(g, "templates"), "qwen3"));
    CHECK(qwen3 != NULL, "qwen3 template in the golden file");
    if (qwen3 && (out = render(qwen3, &r))) {
        CHECK(strstr(out, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>") &&
                  strstr(out, "<tool_call>\n{\"name\": \"note\", \"arguments\": free text}\n</tool_call>") &&
                  strstr(out, "<|im_start|>user\n<tool_response>\n{\"temperature\": 21}\n</tool_response><|im_end|>\n") &&
                  strstr(out, "\"name\": \"get_weather\""),
              "qwen3 rendering:\n%s", out);
        free(out);
    }
    json_decref(g);
    oa_request_free(&r);
    TEST_DONE();
}
