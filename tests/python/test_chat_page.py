"""The chat page at GET /: a real browser (Playwright + Chromium) types a message, sends it, sees
the assistant's reply stream in, and holds a second turn with the conversation history. The server
requires an API key, which the page asks for."""
import json
import os

import pytest

import time

from serve_harness import Server, metric, running

CHROMIUM = "/usr/bin/chromium"
KEY = "page-key-42"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not installed: no browser for the chat page test", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "128M", "-t", "2", "--api-key", KEY)


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        pg = browser.new_page()
        pg.set_default_timeout(30000)
        yield pg
        browser.close()


def assistant_texts(page):
    return page.eval_on_selector_all(".msg.assistant", "els => els.map(e => e.textContent)")


def test_chat_page(server, page):
    bodies = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data))
            if r.url.endswith("/v1/chat/completions") and r.method == "POST" else None)
    page.goto(server.url + "/")
    assert page.title() == "pagoda chat"

    # without the key the server says 401 and the page shows the error
    page.fill("#max_tokens", "12")
    page.fill("#temperature", "0")
    page.fill("#input", "Hello!")
    page.click("#send")
    page.wait_for_selector(".msg.error")
    assert "API key" in page.inner_text(".msg.error")
    page.wait_for_function("!document.getElementById('send').disabled")

    # with the key: the reply streams in
    page.fill("#apikey", KEY)
    page.dispatch_event("#apikey", "change")
    page.wait_for_function("document.getElementById('model').textContent.startsWith('SmolLM2')")
    page.click("#clear")
    page.fill("#input", "What is the capital of France?")
    page.click("#send")
    page.wait_for_selector(".msg.assistant")
    page.wait_for_function("document.querySelectorAll('.msg.assistant.streaming').length == 0 && "
                           "!document.getElementById('send').disabled")
    first = assistant_texts(page)
    assert len(first) == 1 and first[0].strip()
    stats = page.inner_text("#stats")
    assert "tokens" in stats and "tokens/s" in stats, stats

    # second turn: the history goes with it
    page.fill("#input", "And of Italy?")
    page.press("#input", "Enter")
    page.wait_for_function("document.querySelectorAll('.msg.assistant').length == 2 && "
                           "document.querySelectorAll('.msg.assistant.streaming').length == 0 && "
                           "!document.getElementById('send').disabled")
    texts = assistant_texts(page)
    assert texts[0] == first[0] and texts[1].strip()
    last = bodies[-1]
    assert last["stream"] is True
    roles = [m["role"] for m in last["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert last["messages"][1]["content"] == first[0]
    assert last["messages"][2]["content"] == "And of Italy?"
    users = page.eval_on_selector_all(".msg.user", "els => els.map(e => e.textContent)")
    assert users == ["What is the capital of France?", "And of Italy?"]


def test_stop_button(server, page):
    page.fill("#max_tokens", "2000")
    page.fill("#temperature", "0.8")
    page.fill("#input", "Write a very long story about a dragon.")
    page.click("#send")
    page.wait_for_function("(() => { const m = document.querySelectorAll('.msg.assistant');"
                           " return m.length && m[m.length - 1].textContent.length > 20; })()")
    assert page.is_enabled("#stop")
    page.click("#stop")
    page.wait_for_function("!document.getElementById('send').disabled")
    assert "stopped" in page.inner_text("#stats")
    assert not page.is_enabled("#stop")
    # the aborted fetch closed the connection: the server cancelled the request
    deadline = time.time() + 3
    while metric(server.metrics(), "pagoda:num_requests_running") and time.time() < deadline:
        time.sleep(0.05)
    m = server.metrics()
    assert metric(m, "pagoda:num_requests_running") == 0
    assert metric(m, "pagoda:request_success_total", finished_reason="abort") >= 1
    if os.environ.get("PAGODA_CHAT_SCREENSHOT"):  # to look at the page: a PNG path
        page.screenshot(path=os.environ["PAGODA_CHAT_SCREENSHOT"])
