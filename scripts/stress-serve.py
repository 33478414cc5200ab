#!/usr/bin/env python3
"""Load and idle connections against a running `pagoda serve`: S concurrent streaming clients
(each sends streaming completions back to back) plus I idle connections (opened, one partial
header line, then silent) for D seconds. Prints what completed, every error by kind, and the
server's gauges and memory before and after, so one run shows whether the server held.

usage: scripts/stress-serve.py --url http://127.0.0.1:8080 [--streams 256] [--idle 1000]
       [--duration 60] [--max-tokens 32] [--pid PID] [--json OUT]
Exit status 0 when nothing but clean 429/503 answers failed and the gauges came back to idle."""
import argparse
import json
import resource
import socket
import sys
import threading
import time
import urllib.parse


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        name = name.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            pass
    return out


def exchange(host, port, request, timeout):
    """Sends request on a new connection and reads until the server closes it."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        buf = b""
        while True:
            c = s.recv(65536)
            if not c:
                return buf
            buf += c


def http_get(host, port, path, timeout=10):
    buf = exchange(host, port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), timeout)
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0], 16)
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2:]
        body = out
    return status, body


def rss_mib(pid):
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Tally:
    def __init__(self):
        self.mu = threading.Lock()
        self.completed = 0
        self.tokens = 0
        self.errors = {}

    def err(self, kind):
        with self.mu:
            self.errors[kind] = self.errors.get(kind, 0) + 1


def one_stream(host, port, model, max_tokens, tally, timeout):
    body = json.dumps({"model": model, "prompt": "Write a short poem about the sea.", "max_tokens": max_tokens,
                       "temperature": 0.7, "stream": True}).encode()
    try:
        buf = exchange(host, port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body, timeout)
    except OSError as e:
        tally.err(f"socket: {type(e).__name__}")
        return
    if not buf:
        tally.err("closed without an answer")
        return
    status = int(buf.split(b" ", 2)[1])
    if status in (429, 503):
        tally.err(f"clean {status}")
        return
    if status != 200:
        tally.err(f"status {status}")
        return
    if b"data: [DONE]" not in buf:
        tally.err("stream cut short")
        return
    with tally.mu:
        tally.completed += 1
        tally.tokens += buf.count(b'"text":')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--streams", type=int, default=256)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--pid", type=int, default=0, help="the server's pid, for its memory")
    ap.add_argument("--settle", type=float, default=30, help="seconds allowed for the gauges to return to idle")
    ap.add_argument("--json")
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    host, port = u.hostname, u.port or 80

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.streams + a.idle + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))

    _, body = http_get(host, port, "/v1/models")
    model = json.loads(body)["data"][0]["id"]
    _, m0 = http_get(host, port, "/metrics")
    before = parse_metrics(m0.decode())
    rss0 = rss_mib(a.pid)

    tally = Tally()
    stop = time.time() + a.duration

    idle = []
    for _ in range(a.idle):
        try:
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(b"GET /health HTTP/1.1\r\n")  # and nothing more
            idle.append(s)
        except OSError as e:
            tally.err(f"idle connect: {type(e).__name__}")

    def client():
        while time.time() < stop:
            one_stream(host, port, model, a.max_tokens, tally, timeout=a.duration + 120)

    print(f"stress: {a.streams} streaming clients and {len(idle)} idle connections for {a.duration:.0f} s",
          file=sys.stderr)
    threads = [threading.Thread(target=client, daemon=True) for _ in range(a.streams)]
    t0 = time.time()
    for t in threads:
        t.start()
    # a health check during the load: the server must still answer it promptly
    health = []
    while time.time() < stop:
        h0 = time.time()
        try:
            st, _ = http_get(host, port, "/health", timeout=10)
            health.append((st, time.time() - h0))
        except OSError:
            health.append((0, time.time() - h0))
        print(f"\rstress: {time.time() - t0:5.0f} s, {tally.completed} completed", end="", file=sys.stderr)
        time.sleep(1)
    for t in threads:
        t.join(a.duration + 180)
    print(file=sys.stderr)
    for s in idle:
        s.close()

    # back to idle?
    deadline = time.time() + a.settle
    after = {}
    while time.time() < deadline:
        _, m1 = http_get(host, port, "/metrics")
        after = parse_metrics(m1.decode())
        if after.get("pagoda:num_requests_running", 1) == 0 and after.get("pagoda:num_requests_waiting", 1) == 0 \
                and after.get("pagoda:kv_cache_blocks_used", 1) == before.get("pagoda:kv_cache_blocks_used", 0):
            break
        time.sleep(0.5)
    idle_again = (after.get("pagoda:num_requests_running") == 0 and after.get("pagoda:num_requests_waiting") == 0
                  and after.get("pagoda:kv_cache_blocks_used") == before.get("pagoda:kv_cache_blocks_used"))
    rss1 = rss_mib(a.pid)
    bad = {k: v for k, v in tally.errors.items() if not k.startswith("clean ")}
    worst_health = max((d for _, d in health), default=0)
    res = {"streams": a.streams, "idle": len(idle), "duration_s": a.duration, "completed": tally.completed,
           "errors": tally.errors, "unclean_errors": sum(bad.values()),
           "health_ok": sum(1 for st, _ in health if st == 200), "health_checks": len(health),
           "health_worst_s": worst_health, "idle_again": idle_again, "rss_before_mib": rss0, "rss_after_mib": rss1}
    print(json.dumps(res, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if not bad and idle_again else 1


if __name__ == "__main__":
    sys.exit(main())
