#!/usr/bin/env bash
# Slowloris against `pagoda serve`: N connections (default 4100, over the default --max-connections
# 4096) each send a request head one byte every 3 s, and reopen when the server closes them, for
# D seconds. Meanwhile a prober asks /health every second and a one-token chat every 3 s (2 s and
# 5 s client timeouts). Prints, per build: how many probes were answered and their worst latency,
# how many slow connections the server closed (and their median life) and refused at once.
# usage: scripts/bench-hostile.sh [-n CONNS] [-d SECONDS] [-s SOURCE_ADDR] PAGODA[:"SERVE FLAGS"] ...
#   e.g. scripts/bench-hostile.sh /work/main/build/pagoda build/pagoda \
#          'build/pagoda:--per-ip-limit-loopback' -s 127.0.0.2
# (-s: the attackers' source address; 127.0.0.2 is another loopback client than the prober's
# 127.0.0.1, which is what the per-address limit tells apart.)
set -euo pipefail
cd "$(dirname "$0")/.."
conns=4100 dur=30 src=127.0.0.1
while getopts "n:d:s:" o; do
    case $o in n) conns=$OPTARG ;; d) dur=$OPTARG ;; s) src=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { sed -n 2,11p "$0"; exit 2; }
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || { echo "no $model: run scripts/setup.sh" >&2; exit 1; }
py=${PYTHON:-python3}
[ -x .venv/bin/python ] && py=.venv/bin/python
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
ulimit -n "$(ulimit -Hn)"

printf '| build | flags | /health ok | /health worst s | chat ok | chat worst s | closed by server (median life s) | refused at once |\n'
printf '|---|---|---|---|---|---|---|---|\n'
port=18190
for spec in "$@"; do
    bin=${spec%%:*} flags=""
    [ "$spec" != "$bin" ] && flags=${spec#*:}
    port=$((port + 1))
    # shellcheck disable=SC2086
    "$bin" serve -m "$model" --port "$port" --kv-mem 128M -t 2 $flags >"$tmp/serve.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
    row=$("$py" - "$port" "$conns" "$dur" "$src" <<'EOF'
import json, selectors, socket, statistics, sys, threading, time, urllib.request
port, n, dur, src = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
url = f"http://127.0.0.1:{port}"
stop = time.monotonic() + dur
probes = {"health": [], "chat": []}

def probe():
    chat = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode()
    k = 0
    while time.monotonic() < stop:
        for name, req, to in [("health", urllib.request.Request(url + "/health"), 2)] + (
                [("chat", urllib.request.Request(url + "/v1/chat/completions", chat,
                                                 {"Content-Type": "application/json"}), 5)] if k % 3 == 0 else []):
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(req, timeout=to) as r:
                    r.read()
                    probes[name].append(time.monotonic() - t0)
            except Exception:
                probes[name].append(None)
        k += 1
        time.sleep(max(0.0, 1 - (time.monotonic() - t0)))

sel = selectors.DefaultSelector()
state, lives, refused = {}, [], 0

def open_one():
    global refused
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        s.send(head[:1])
    except OSError:
        s.close()
        refused += 1
        return
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    state[s] = [1, time.monotonic()]

th = threading.Thread(target=probe)
for _ in range(n):
    open_one()
th.start()
next_byte = time.monotonic() + 3
while time.monotonic() < stop:
    for key, _ in sel.select(timeout=0.2):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if data:
            continue
        i, t = state.pop(s)
        sel.unregister(s)
        s.close()
        if i <= 1 and time.monotonic() - t < 1:
            refused += 1
        else:
            lives.append(time.monotonic() - t)
    for _ in range(min(200, n - len(state))):  # reopen what the server closed (200 per pass at most)
        before = len(state)
        open_one()
        if len(state) == before:
            break
    if time.monotonic() >= next_byte:
        for s, st in state.items():
            try:
                s.send(head[st[0] % len(head):st[0] % len(head) + 1])
                st[0] += 1
            except OSError:
                pass
        next_byte += 3
th.join()
for s in state:
    s.close()

def summary(xs):
    ok = [x for x in xs if x is not None]
    return f"{len(ok)}/{len(xs)} | {max(ok):.3f}" if ok else f"0/{len(xs)} | -"

med = f"{statistics.median(lives):.1f}" if lives else "-"
print(f"{summary(probes['health'])} | {summary(probes['chat'])} | {len(lives)} ({med}) | {refused}")
EOF
)
    printf '| %s | %s | %s |\n' "$bin" "${flags:--}" "$row"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
