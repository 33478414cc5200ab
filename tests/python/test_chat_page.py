"""The chat page at GET /: a real browser (Playwright driving Debian's Chromium) against a real
`pagoda serve` of the built-in model. It types a message, sees the reply stream in, holds a second
turn with the history, stops a long answer; conversations live in localStorage (a sidebar list
that survives a reload), the last answer is regenerated, a user message edited and sent again;
replies render as markdown with highlighted code blocks (Debian's libjs-marked and
libjs-highlight.js, compiled into the binary) and copy buttons, and model output never runs as
HTML. The server requires an API key, which the page asks for.

Deterministic markdown comes from a conversation stored in the page's own storage format
(localStorage "pagoda_chats"), which the page renders exactly as it renders a streamed reply."""
import json
import os
import time
import urllib.request

import pytest

from serve_harness import metric, running

CHROMIUM = "/usr/bin/chromium"
KEY = "page-key-42"
SCREENSHOT = os.environ.get("PAGODA_CHAT_SCREENSHOT")  # a PNG path: where to save a picture of the page

CODE = "def add(a, b):\n    # the sum\n    return a + b\n"
MARKDOWN = ("Here is **bold**, *emphasis* and `inline code`.\n\n"
            "```python\n" + CODE + "```\n\n"
            "<script>window.__pwned = 1</script>\n\n"
            "Inline <img src=x onerror=\"window.__pwned = 2\"> tag and "
            "<a href=\"javascript:window.__pwned=3\">raw link</a>.\n\n"
            "[a script link](javascript:window.__pwned=4) and [a web link](https://example.com/docs).\n\n"
            "![picture](javascript:window.__pwned=5)\n\n"
            "- one\n- two\n")


def stored_chat(cid, *turns, title=None):
    msgs = [{"role": role, "content": text} for role, text in turns]
    return {"id": cid, "title": title or msgs[0]["content"], "updated": int(time.time() * 1000), "messages": msgs}


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "128M", "-t", "2", "--api-key", KEY)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium): no browser for the chat page tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def assets_built(server):
    """Whether pagoda was built with libjs-marked and libjs-highlight.js installed."""
    codes = [server.get(f"/assets/{n}")[0] for n in ("marked.js", "highlight.js", "highlight.css")]
    return all(c == 200 for c in codes)


class Page:
    """A fresh browser context (its own localStorage) on the chat page, recording request bodies."""

    def __init__(self, browser, server, key=True, chats=None, current=None, settings=None, block_assets=False):
        self.ctx = browser.new_context(viewport={"width": 1100, "height": 760})
        self.ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
        if block_assets:
            self.ctx.route("**/assets/**", lambda route: route.abort())
        self.pg = self.ctx.new_page()
        self.pg.set_default_timeout(60000)
        self.console = []
        self.pg.on("console", lambda m: self.console.append(m.text))
        self.pg.on("pageerror", lambda e: self.console.append("pageerror: " + str(e)))
        self.bodies = []
        self.pg.on("request", lambda r: self.bodies.append(json.loads(r.post_data))
                   if r.url.endswith("/v1/chat/completions") and r.method == "POST" else None)
        self.pg.goto(server.url + "/")
        store = {}
        if key:
            store["pagoda_api_key"] = KEY
        if chats is not None:
            store["pagoda_chats"] = json.dumps(chats)
            store["pagoda_chat_current"] = current or chats[0]["id"]
        if settings is not None:
            store["pagoda_settings"] = json.dumps(settings)
        if store:
            self.pg.evaluate("s => { for (const k in s) localStorage.setItem(k, s[k]); }", store)
            self.reload()

    def reload(self):
        self.pg.reload()
        self.pg.wait_for_function("document.getElementById('model').textContent !== '…'")

    def close(self):
        self.ctx.close()

    def texts(self, sel):
        return self.pg.eval_on_selector_all(sel, "els => els.map(e => e.textContent)")

    def stored(self):
        return json.loads(self.pg.evaluate("localStorage.getItem('pagoda_chats')") or "[]")

    def idle(self):
        self.pg.wait_for_function("!document.body.classList.contains('busy') && "
                                  "!document.getElementById('send').disabled")


@pytest.fixture
def open_page(browser, server):
    pages = []

    def make(**kw):
        p = Page(browser, server, **kw)
        pages.append(p)
        return p

    yield make
    for p in pages:
        p.close()


def test_assets_routes(server, assets_built):
    status, headers, body = server.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="/assets/marked.js"' in body
    status, headers, body = server.get("/assets/no-such.js")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    status, _, _ = server.post("/assets/marked.js", {})
    assert status == 405
    if not assets_built:
        pytest.skip("pagoda was built without libjs-marked / libjs-highlight.js: the page shows plain text")
    status, headers, body = server.get("/assets/marked.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"marked" in body
    status, headers, body = server.get("/assets/highlight.js")
    assert status == 200 and b"hljs" in body
    status, headers, body = server.get("/assets/highlight.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and b".hljs" in body
    # an ETag per asset: a browser that has it gets 304 without the body (846 KB of highlight.js)
    etag = headers["ETag"]
    assert etag and etag.startswith('"')
    status, h2, body = server.get("/assets/highlight.css", headers={"If-None-Match": etag})
    assert status == 304 and body == b"" and h2["ETag"] == etag
    status, _, body = server.get("/assets/highlight.css", headers={"If-None-Match": '"other"'})
    assert status == 200 and b".hljs" in body
    _, h3, _ = server.get("/assets/marked.js")
    assert h3["ETag"] != etag
    # the assets are public like the page (the API key guards /v1/ only)
    with urllib.request.urlopen(server.url + "/assets/highlight.css", timeout=30) as r:
        assert r.status == 200


def test_chat_page(server, open_page):
    p = open_page(key=False)
    page = p.pg
    assert page.title() == "pagoda chat"

    # without the key the server says 401 and the page shows the error
    page.fill("#max_tokens", "12")
    page.fill("#temperature", "0")
    page.fill("#input", "Hello!")
    page.click("#send")
    page.wait_for_selector(".msg.error")
    assert "API key" in page.inner_text(".msg.error")
    p.idle()

    # with the key: the reply streams in
    page.fill("#apikey", KEY)
    page.dispatch_event("#apikey", "change")
    page.wait_for_function("document.getElementById('model').textContent.startsWith('SmolLM2')")
    page.click("#new")
    assert p.texts(".msg") == []
    page.fill("#input", "What is the capital of France?")
    page.click("#send")
    page.wait_for_selector(".msg.assistant")
    p.idle()
    assert len(p.texts(".msg.assistant .body")) == 1
    stats = page.inner_text("#stats")
    assert "tokens" in stats and "tokens/s" in stats, stats
    first = p.stored()
    france = [c for c in first if c["messages"][0]["content"] == "What is the capital of France?"]
    assert len(france) == 1 and [m["role"] for m in france[0]["messages"]] == ["user", "assistant"]
    answer = france[0]["messages"][1]["content"]
    assert answer.strip()

    # second turn: the history goes with it
    page.fill("#input", "And of Italy?")
    page.press("#input", "Enter")
    page.wait_for_function("document.querySelectorAll('.msg.assistant').length == 2")
    p.idle()
    last = p.bodies[-1]
    assert last["stream"] is True
    roles = [m["role"] for m in last["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert last["messages"][1]["content"] == answer
    assert last["messages"][2]["content"] == "And of Italy?"
    users = p.texts(".msg.user .body")
    assert users == ["What is the capital of France?", "And of Italy?"]
    shown = p.texts(".msg.assistant .body")

    # the conversation survives a reload; the list holds both conversations, titled by their first message
    p.reload()
    assert p.texts(".msg.user .body") == users
    assert p.texts(".msg.assistant .body") == shown
    assert p.texts("#chats li .title") == ["What is the capital of France?", "Hello!"]
    assert p.texts("#chats li.active .title") == ["What is the capital of France?"]
    # switch to the other one, then delete it
    page.click("#chats li:nth-child(2) .title")
    assert p.texts(".msg.user .body") == ["Hello!"] and p.texts(".msg.assistant") == []
    page.click("#chats li.active .del")
    assert p.texts("#chats li .title") == ["What is the capital of France?"]
    assert p.texts(".msg") == []  # a new, empty conversation is shown
    assert len(p.stored()) == 1
    assert not [c for c in p.console if "pageerror" in c], p.console


def test_stop_button(server, open_page):
    p = open_page()
    page = p.pg
    page.fill("#max_tokens", "2000")
    page.fill("#temperature", "0.8")
    page.fill("#input", "Write a very long story about a dragon.")
    page.click("#send")
    page.wait_for_function("(() => { const m = document.querySelectorAll('.msg.assistant .body');"
                           " return m.length && m[m.length - 1].textContent.length > 20; })()")
    assert page.is_enabled("#stop")
    page.click("#stop")
    p.idle()
    assert "stopped" in page.inner_text("#stats")
    assert not page.is_enabled("#stop")
    # what came before the stop is kept
    msgs = p.stored()[0]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"] and len(msgs[1]["content"]) > 20
    # the aborted fetch closed the connection: the server cancelled the request
    deadline = time.time() + 10
    while metric(server.metrics(), "pagoda:num_requests_running") and time.time() < deadline:
        time.sleep(0.05)
    m = server.metrics()
    assert metric(m, "pagoda:num_requests_running") == 0
    assert metric(m, "pagoda:request_success_total", finished_reason="abort") >= 1


def test_markdown_code_copy_and_no_script(server, open_page, assets_built):
    if not assets_built:
        pytest.skip("pagoda was built without libjs-marked / libjs-highlight.js: no markdown to test")
    chat = stored_chat("c-md", ("user", "Show me a Python function, with a <b>tag</b>."), ("assistant", MARKDOWN),
                       ("user", "And in JavaScript?"), ("assistant", "Cut off:\n\n```js\nlet x = 1;\nx +"))
    p = open_page(chats=[chat])
    page = p.pg
    body = ".msg.assistant .body"
    # markdown is rendered
    assert p.texts(f"{body} strong") == ["bold"]
    assert p.texts(f"{body} em") == ["emphasis"]
    assert "inline code" in p.texts(f"{body} p > code")
    assert p.texts(f"{body} li") == ["one", "two"]
    # the code block is highlighted and has a copy button
    assert page.eval_on_selector(f"{body} pre code", "e => e.classList.contains('hljs')")
    assert page.eval_on_selector(f"{body} pre code", "e => e.textContent") == CODE.rstrip("\n")
    kinds = page.eval_on_selector_all(f"{body} pre code span", "els => els.map(e => e.className)")
    assert "hljs-keyword" in kinds and "hljs-comment" in kinds, kinds
    page.click(f"{body} .copy-code")
    page.wait_for_function("document.querySelector('.copy-code').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == CODE.rstrip("\n")
    # copying the whole message gives its markdown source
    page.click(".msg.assistant .copy-msg")
    page.wait_for_function("document.querySelector('.msg.assistant .copy-msg').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == MARKDOWN
    # model output is data: no script ran, no raw element came through, no javascript: link
    assert page.evaluate("window.__pwned") is None
    assert page.eval_on_selector_all(f"{body} script, {body} img, {body} b", "els => els.length") == 0
    text = page.inner_text(body)
    assert "<script>window.__pwned = 1</script>" in text and "<img src=x" in text
    hrefs = page.eval_on_selector_all(f"{body} a", "els => els.map(e => e.getAttribute('href'))")
    assert hrefs == ["https://example.com/docs"], hrefs
    # the user's message is shown as typed
    assert p.texts(".msg.user .body")[0] == "Show me a Python function, with a <b>tag</b>."
    # a reply cut off inside a code block still shows it as code
    assert page.eval_on_selector(".msg.assistant >> nth=1 >> pre code", "e => e.textContent") == "let x = 1;\nx +"
    assert not [c for c in p.console if "pageerror" in c], p.console


def test_model_reply_with_code(server, open_page, assets_built):
    """A real streamed reply: the built-in model, asked for code at temperature 0, answers with a
    fenced block, which renders highlighted with a working copy button."""
    if not assets_built:
        pytest.skip("pagoda was built without libjs-marked / libjs-highlight.js: no highlighting to test")
    older = [stored_chat("c-1", ("user", "What is a prefix cache?"), ("assistant", "It reuses KV blocks.")),
             stored_chat("c-2", ("user", "Explain continuous batching in one line."), ("assistant", "Requests join mid-flight."))]
    for i, c in enumerate(older):
        c["updated"] -= 1000 * (i + 1)
    p = open_page(chats=older, settings={"system": "", "temperature": "0", "top_p": "1", "max_tokens": "100"})
    page = p.pg
    page.click("#new")
    page.fill("#input", "Write a Python function that adds two numbers.")
    page.click("#send")
    p.idle()
    raw = next(c for c in p.stored() if c["title"].startswith("Write a Python"))["messages"][1]["content"]
    assert "```python\n" in raw, raw
    code = raw.split("```python\n", 1)[1].split("\n```", 1)[0]
    first = ".msg.assistant .code >> nth=0"
    assert page.eval_on_selector(".msg.assistant pre code", "e => e.classList.contains('hljs')")
    assert page.eval_on_selector(".msg.assistant pre code", "e => e.textContent") == code
    kinds = page.eval_on_selector_all(".msg.assistant pre code span", "els => els.map(e => e.className)")
    assert "hljs-keyword" in kinds, kinds  # def, return
    assert page.inner_text(f"{first} >> .lang") == "python"
    if SCREENSHOT:
        page.fill("#input", "Can it add three numbers?")
        page.screenshot(path=SCREENSHOT)
    page.click(f"{first} >> .copy-code")
    assert page.evaluate("navigator.clipboard.readText()") == code
    # one rendered block per fenced block, the last one even where max_tokens cut it off
    fences = raw.count("```")
    assert page.eval_on_selector_all(".msg.assistant .code", "els => els.length") == (fences + 1) // 2
    stats = page.inner_text("#stats")
    assert "tokens/s" in stats, stats


def test_plain_text_without_assets(server, open_page):
    """Where marked and highlight.js are missing the page still works, showing plain text."""
    chat = stored_chat("c-plain", ("user", "Hi"), ("assistant", MARKDOWN))
    p = open_page(chats=[chat], block_assets=True)
    page = p.pg
    assert page.eval_on_selector(".msg.assistant .body", "e => e.classList.contains('plain')")
    assert p.texts(".msg.assistant .body") == [MARKDOWN]
    assert page.evaluate("window.__pwned") is None
    page.click(".msg.assistant .copy-msg")
    page.wait_for_function("document.querySelector('.msg.assistant .copy-msg').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == MARKDOWN


def test_regenerate_edit_and_settings(server, open_page):
    old = "OLD ANSWER that the model would never write 1234"
    chats = [stored_chat("c-regen", ("user", "Say hello."), ("assistant", old)),
             stored_chat("c-edit", ("user", "Name a color."), ("assistant", "Blue."),
                         ("user", "Name another."), ("assistant", "Red."))]
    settings = {"system": "You are brief.", "temperature": "0", "top_p": "0.9", "max_tokens": "12"}
    p = open_page(chats=chats, current="c-regen", settings=settings)
    page = p.pg
    # the settings came back from storage and go with the request
    assert [page.input_value(f"#{k}") for k in settings] == list(settings.values())
    assert p.texts(".msg .regen") == ["Regenerate"]  # on the last answer only

    page.click(".msg.assistant .regen")
    p.idle()
    req = p.bodies[-1]
    assert req["messages"] == [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Say hello."}]
    assert req["temperature"] == 0 and req["top_p"] == 0.9 and req["max_tokens"] == 12
    answers = p.texts(".msg.assistant .body")
    assert len(answers) == 1 and answers[0].strip() and old not in answers[0]
    regen = next(c for c in p.stored() if c["id"] == "c-regen")
    assert [m["role"] for m in regen["messages"]] == ["user", "assistant"]
    assert regen["messages"][1]["content"] != old

    # a setting changed here is kept for the next visit
    page.fill("#max_tokens", "10")
    p.reload()
    assert page.input_value("#max_tokens") == "10"
    assert p.texts(".msg.assistant .body") == answers  # and the regenerated answer stayed

    # edit the first question of the other conversation: what followed it goes, the answer is new
    page.click("#chats li[data-id='c-edit'] .title")
    assert p.texts(".msg.user .body") == ["Name a color.", "Name another."]
    page.click(".msg.user >> nth=0 >> .edit")
    page.fill(".edit-box", "Name a fruit.")
    page.click(".edit-send")
    p.idle()
    req = p.bodies[-1]
    assert req["messages"][1:] == [{"role": "user", "content": "Name a fruit."}]
    assert req["max_tokens"] == 10
    assert p.texts(".msg.user .body") == ["Name a fruit."]
    edited = next(c for c in p.stored() if c["id"] == "c-edit")
    assert [m["role"] for m in edited["messages"]] == ["user", "assistant"]
    assert edited["messages"][0]["content"] == "Name a fruit." and edited["title"] == "Name a fruit."
    assert "Name a fruit." in p.texts("#chats li .title")
    assert not [c for c in p.console if "pageerror" in c], p.console
