"""pagoda bench serve --workload multiturn: conversations that share system prompts by tenant group
send their turns in order with the growing history.

Against a fake chat server that records every request (headers and body) the histories are checked
exactly: each turn repeats the earlier user messages and the answers the server actually streamed,
conversation c uses system prompt c % K, and the session id is stable per conversation (header and
`user` field). A turn that fails ends its conversation. Against a real `pagoda serve` the prompts
grow turn by turn and later turns are served partly from the prefix cache."""
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serve_harness import Server, metric

PROBE_PROMPT = "pagoda bench serve probe"


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fail=None):
        super().__init__(("127.0.0.1", 0), Handler)
        self.fail = fail  # (session, turn): answer that request with HTTP 500
        self.lock = threading.Lock()
        self.requests = []  # (headers dict, body)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "fake-chat", "object": "model"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        msgs = req["messages"]
        if msgs[-1]["content"] == PROBE_PROMPT:
            return self.stream(["ok"], 1)
        user_turns = sum(1 for m in msgs if m["role"] == "user")
        with self.server.lock:
            self.server.requests.append(({k.lower(): v for k, v in self.headers.items()}, req))
        if self.server.fail == (req.get("user"), user_turns):
            body = b'{"error": {"message": "boom", "type": "server_error"}}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        # an answer that names its request, streamed in two pieces
        self.stream([f"Answer to {req.get('user')}", f" turn {user_turns}."], sum(len(m["content"]) for m in msgs))

    def stream(self, pieces, prompt_tokens):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for p in pieces:
            chunk = {"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        usage = {"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces)}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture
def chat_server():
    servers = []

    def make(**kw):
        s = ChatServer(**kw)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


def bench(pagoda_bin, url, *args, timeout=60):
    return subprocess.run([pagoda_bin, "bench", "serve", "--url", url, "--workload", "multiturn", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_histories_sessions_and_tenants(pagoda_bin, chat_server, tmp_path):
    s = chat_server()
    out = tmp_path / "mt.json"
    md = tmp_path / "mt.md"
    r = bench(pagoda_bin, s.url, "--concurrency", 3, "--conversations", 5, "--turns", 3, "--system-prompts", 2,
              "--system-len", 40, "--user-len", 6, "--max-tokens", 2, "--seed", 7, "--json", out, "--markdown", md)
    assert r.returncode == 0, r.stderr
    j = json.loads(out.read_text())
    assert (j["num_requests"], j["completed"], j["failed"], j["not_sent"]) == (15, 15, 0, 0)
    assert [t["completed"] for t in j["per_turn"]] == [5, 5, 5]
    assert j["total_output_tokens"] == 30 and j["mean_ttft_ms"] > 0
    assert len(s.requests) == 15
    by_session = {}
    for headers, body in s.requests:
        assert headers["x-session-id"] == body["user"]
        assert body["stream"] is True and body["max_tokens"] == 2
        by_session.setdefault(body["user"], []).append(body["messages"])
    assert sorted(by_session) == [f"bench-s7-c{c}" for c in range(1, 6)]
    systems = {}
    for c in range(1, 6):
        turns = sorted(by_session[f"bench-s7-c{c}"], key=len)
        assert [len(m) for m in turns] == [2, 4, 6]  # system + (user, answer) * k + user
        for t, msgs in enumerate(turns):
            assert msgs[0]["role"] == "system"
            systems.setdefault((c - 1) % 2, set()).add(msgs[0]["content"])
            if t + 1 < len(turns):  # the next turn extends this one
                assert turns[t + 1][:len(msgs)] == msgs
            for k in range(t):  # the answers the server streamed, in the history
                assert msgs[2 + 2 * k] == {"role": "assistant", "content": f"Answer to bench-s7-c{c} turn {k + 1}."}
            assert msgs[-1]["role"] == "user" and msgs[-1]["content"].startswith(f"Conversation {c}, question {t + 1}:")
            assert len(msgs[-1]["content"].split()) == 4 + 6
    assert len(systems) == 2 and all(len(v) == 1 for v in systems.values())  # one system prompt per tenant
    assert systems[0] != systems[1] and len(next(iter(systems[0])).split()) >= 40
    text = md.read_text()
    assert "| 5 x 3 | 3 | 15/0/0 |" in text and "| 3 | 5 | 0 |" in text
    # the same seed gives the same conversations
    s2 = chat_server()
    r = bench(pagoda_bin, s2.url, "--concurrency", 5, "--conversations", 5, "--turns", 3, "--system-prompts", 2,
              "--system-len", 40, "--user-len", 6, "--max-tokens", 2, "--seed", 7, "--session-header", "X-Routing-Key")
    assert r.returncode == 0, r.stderr
    assert sorted(json.dumps(b, sort_keys=True) for _, b in s2.requests) == \
        sorted(json.dumps(b, sort_keys=True) for _, b in s.requests)
    assert all(h["x-routing-key"] == b["user"] for h, b in s2.requests)


def test_failed_turn_ends_its_conversation(pagoda_bin, chat_server, tmp_path):
    s = chat_server(fail=("bench-s0-c2", 2))
    out = tmp_path / "mt.json"
    r = bench(pagoda_bin, s.url, "--concurrency", 2, "--conversations", 3, "--turns", 4, "--system-prompts", 1,
              "--system-len", 8, "--user-len", 4, "--max-tokens", 2, "--json", out)
    assert r.returncode == 0, r.stderr
    j = json.loads(out.read_text())
    assert (j["num_requests"], j["completed"], j["failed"], j["not_sent"]) == (10, 9, 1, 2)
    bad = [q for q in j["requests"] if not q["success"]]
    assert [(q["conversation"], q["turn"]) for q in bad] == [(2, 2)] and "500" in bad[0]["error"]
    assert "conversation 2 turn 2 failed" in r.stderr


def test_bad_options(pagoda_bin, chat_server):
    url = chat_server().url
    cases = [(["--request-rate", "2"], "does not take --request-rate"),
             ([], "needs --concurrency"),
             (["--concurrency", "2", "--conversations", "2", "--system-prompts", "3"], "more than the 2 conversations"),
             (["--concurrency", "2", "--session-header", "X: y"], "--session-header needs a header name"),
             (["--concurrency", "2", "--turns", "0"], "--turns"),
             (["--concurrency", "2", "--num-requests", "5"], "does not take --duration/--num-requests")]
    for args, msg in cases:
        r = bench(pagoda_bin, url, *args)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)
    r = subprocess.run([pagoda_bin, "bench", "serve", "--url", url, "--concurrency", "2", "--turns", "3"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "belong to --workload multiturn" in r.stderr
    r = bench(pagoda_bin, "http://127.0.0.1:9", "--concurrency", "2", timeout=30)
    assert r.returncode == 1 and "cannot reach the server" in r.stderr


def test_against_pagoda_serve(pagoda_bin, builtin_model, tmp_path):
    """Prompts grow by the previous turn (question + the model's answer), and later turns reuse
    the conversation's prefix from the server's prefix cache."""
    srv = Server(pagoda_bin, builtin_model, "--kv-mem", "64M", "-t", "1")
    try:
        before = srv.metrics()
        out = tmp_path / "mt.json"
        r = bench(pagoda_bin, srv.url, "--concurrency", 2, "--conversations", 3, "--turns", 3, "--system-prompts", 1,
                  "--system-len", 48, "--user-len", 8, "--max-tokens", 6, "--json", out, timeout=120)
        assert r.returncode == 0, r.stderr + srv.text()[-3000:]
        after = srv.metrics()
    finally:
        srv.close()
    j = json.loads(out.read_text())
    assert (j["num_requests"], j["completed"], j["failed"]) == (9, 9, 0)
    reqs = {(q["conversation"], q["turn"]): q for q in j["requests"]}
    for c in range(1, 4):
        for t in (2, 3):
            prev, cur = reqs[(c, t - 1)], reqs[(c, t)]
            assert cur["prompt_tokens"] >= prev["prompt_tokens"] + prev["completion_tokens"] + 8, (prev, cur)
    assert j["per_turn"][0]["mean_prompt_tokens"] < j["per_turn"][1]["mean_prompt_tokens"] < \
        j["per_turn"][2]["mean_prompt_tokens"]
    hits = metric(after, "pagoda:prefix_cache_hits_total") - metric(before, "pagoda:prefix_cache_hits_total")
    reused = sum(reqs[(c, t - 1)]["prompt_tokens"] for c in range(1, 4) for t in (2, 3))
    assert hits >= reused // 2, (hits, reused)
