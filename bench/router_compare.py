"""Routers in front of pagoda replicas on loopback, compared on one multi-turn chat workload.

Starts N `pagoda serve` replicas of one model, then for each front end (vllm-router or
sglang-router with cache-aware routing and with round robin, nginx round robin, nginx
`hash $http_x_session_id consistent`) flushes the replicas' prefix caches, starts the router and
runs `pagoda bench serve --workload multiturn` through it. Per front end it reports the prefix-cache
hit rate over all replicas (deltas of pagoda:prefix_cache_hits_total / _queries_total from their
/metrics), how the requests spread over the replicas, TTFT (mean, p50, p99; turn 1 and later
turns), throughput and errors. --kill-one SIGKILLs one replica mid-run and reports which requests
failed (in flight on it, or sent after the kill) and that the survivors served the rest; the
killed replica is started again before the next front end.

Usage: .venv/bin/python bench/router_compare.py [--kill-one] [--routers a,b,...] [--out DIR]
Writes DIR/NAME.json and DIR/NAME.md (NAME: routers, or routers-kill with --kill-one)."""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from router_harness import HEALTH_FAST, Router, free_port, nginx_exe, program, sglang_cmd, vllm_cmd, start_nginx  # noqa: E402
from serve_harness import Server, metric  # noqa: E402

FRONT_ENDS = {
    # name: (description, kind, policy / nginx balancing directive)
    "vllm-cache": ("vllm-router 0.1.17, cache_aware", "vllm-router", "cache_aware"),
    "vllm-rr": ("vllm-router 0.1.17, round_robin", "vllm-router", "round_robin"),
    "vllm-session": ("vllm-router 0.1.17, consistent_hash", "vllm-router", "consistent_hash"),
    "sglang-cache": ("sglang-router 0.3.2, cache_aware", "sglang-router", "cache_aware"),
    "sglang-rr": ("sglang-router 0.3.2, round_robin", "sglang-router", "round_robin"),
    "nginx-rr": ("nginx, round robin", "nginx", ""),
    "nginx-session": ("nginx, hash $http_x_session_id consistent", "nginx", "hash $http_x_session_id consistent;"),
}
DEFAULT = "vllm-cache,vllm-rr,nginx-rr,nginx-session"


def post(url, timeout=30):
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status


def snapshot(ws):
    out = []
    for w in ws:
        try:
            m = w.metrics()
        except (OSError, AssertionError):
            out.append(None)
            continue
        out.append({"requests": metric(m, "pagoda:request_success_total"),
                    "hits": metric(m, "pagoda:prefix_cache_hits_total"),
                    "queries": metric(m, "pagoda:prefix_cache_queries_total")})
    return out


def deltas(before, after):
    """Per replica {requests, hits, queries} from before to after (after None: the replica died;
    its counts are unknown past the last snapshot given as `before`)."""
    return [{k: (a[k] - b[k]) if a and b else 0 for k in ("requests", "hits", "queries")}
            for b, a in zip(before, after)]


def healthy(w):
    if w.proc.poll() is not None:
        return False
    try:
        return w.get("/health", timeout=5)[0] == 200
    except OSError:
        return False


def ensure_replicas(ws, args, serve_args):
    """Replaces replicas that died or stopped answering /health (the killed one of --kill-one, or
    one that something else on this shared machine stopped); returns the indices replaced."""
    replaced = []
    for i, w in enumerate(ws):
        if not healthy(w):
            why = f"exited ({w.proc.returncode})" if w.proc.poll() is not None else \
                f"does not answer /health; its log ends:\n{w.text()[-600:]}"
            print(f"router_compare: replica {i + 1} {why}; starting a new one", file=sys.stderr)
            w.kill()
            w.close()
            ws[i] = Server(args.pagoda, args.model, *serve_args)
            replaced.append(i)
    return replaced


def start_router(name, ws, args):
    _, kind, policy = FRONT_ENDS[name]
    if kind == "nginx":
        conf = "nginx-hash.conf" if policy else "nginx-least-conn.conf"
        r = start_nginx(conf, ws, balance=policy)
        if r is None:
            raise RuntimeError("nginx not installed (apt-get install nginx)")
        return r
    exe = program(kind)
    if not exe:
        raise RuntimeError(f"{kind} not installed (pip install -r scripts/requirements-test.txt)")
    port = free_port()
    cmd = sglang_cmd if kind == "sglang-router" else vllm_cmd
    return Router(cmd(exe, ws, port, *HEALTH_FAST, policy=policy), port)


def bench_cmd(args, url, model, json_path):
    return [args.pagoda, "bench", "serve", "--url", url, "--model", model, "--workload", "multiturn",
            "--concurrency", str(args.concurrency), "--conversations", str(args.conversations),
            "--turns", str(args.turns), "--system-prompts", str(args.system_prompts),
            "--system-len", str(args.system_len), "--user-len", str(args.user_len),
            "--max-tokens", str(args.max_tokens), "--seed", str(args.seed), "--timeout", "300",
            "--json", json_path]


def run_one(name, ws, args, log):
    model = ws[0].model_name
    load0 = os.getloadavg()[0]  # the machine is shared: how busy it was
    r = start_router(name, ws, args)
    p = None
    try:
        r.wait_ready(model)
        for w in ws:  # every run starts with cold caches
            post(w.url + "/flush_cache")
        before = snapshot(ws)
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            jpath = f.name
        t_start = time.time()
        p = subprocess.Popen(bench_cmd(args, r.url, model, jpath), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
        kill = None
        if args.kill_one:
            victim = len(ws) - 1
            deadline = t_start + args.kill_after
            while time.time() < deadline and p.poll() is None:
                time.sleep(0.1)
            at_kill = snapshot(ws)
            ws[victim].kill()
            kill = {"replica": victim, "t_unix": time.time(), "at_kill": at_kill}
        out, _ = p.communicate(timeout=args.run_timeout)
        log.write(f"===== {name}\n{out}\n")
        after = snapshot(ws)
        try:
            with open(jpath) as f:
                res = json.load(f)
        finally:
            os.unlink(jpath)
    finally:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        r.close()
    if kill:
        v = kill["replica"]
        per = deltas(before, [a if i != v else kill["at_kill"][i] for i, a in enumerate(after)])
        after_kill = deltas(kill["at_kill"], after)
    else:
        per, after_kill = deltas(before, after), None
    hits, queries = sum(d["hits"] for d in per), sum(d["queries"] for d in per)
    row = {
        "front_end": name, "description": FRONT_ENDS[name][0],
        "requests": res["num_requests"], "completed": res["completed"], "failed": res["failed"],
        "not_sent": res["not_sent"], "duration_s": res["duration"],
        "prefix_hit_rate": hits / queries if queries else 0.0, "prefix_hit_tokens": hits, "prompt_tokens": queries,
        "prompt_tokens_computed": queries - hits, "loadavg_1m": [load0, os.getloadavg()[0]],
        "requests_per_replica": [d["requests"] for d in per],
        "mean_ttft_ms": res["mean_ttft_ms"], "median_ttft_ms": res["median_ttft_ms"], "p99_ttft_ms": res["p99_ttft_ms"],
        "mean_first_turn_ttft_ms": res["mean_first_turn_ttft_ms"],
        "mean_later_turns_ttft_ms": res["mean_later_turns_ttft_ms"],
        "mean_tpot_ms": res["mean_tpot_ms"], "request_throughput": res["request_throughput"],
        "output_throughput": res["output_throughput"],
        "errors": sorted({q["error"] for q in res["requests"] if q.get("error")}),
    }
    if kill:
        tk = kill["t_unix"] - res["start_unix"]  # the kill, on the bench's clock
        failed = [q for q in res["requests"] if not q["success"]]
        in_flight = [q for q in failed if q["start_s"] <= tk]
        row["kill"] = {
            "replica": kill["replica"], "at_s": tk,
            "failed_in_flight_at_kill": len(in_flight),
            "failed_sent_after_kill": len(failed) - len(in_flight),
            "sent_after_kill": sum(1 for q in res["requests"] if q["start_s"] > tk),
            "ok_after_kill": sum(1 for q in res["requests"] if q["start_s"] > tk and q["success"]),
            "survivor_requests_after_kill": [d["requests"] for i, d in enumerate(after_kill) if i != kill["replica"]],
            "failed_start_s": [round(q["start_s"], 2) for q in failed],
        }
    return row


def median(v):
    v = sorted(v)
    n = len(v)
    return (v[n // 2] + v[(n - 1) // 2]) / 2 if n else float("nan")


SUMMED = ("prefix_hit_rate", "prompt_tokens_computed", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms",
          "mean_first_turn_ttft_ms", "mean_later_turns_ttft_ms", "mean_tpot_ms", "request_throughput",
          "output_throughput")


def summarize(rows, names):
    """Per front end: the median over its passes of each figure; failures summed."""
    out = []
    for n in names:
        ok = [r for r in rows if r["front_end"] == n and "error" not in r]
        if not ok:
            out.append(next(r for r in rows if r["front_end"] == n))
            continue
        s = {"front_end": n, "description": FRONT_ENDS[n][0], "passes": len(ok)}
        for k in SUMMED:
            s[k] = median([r[k] for r in ok])
        for k in ("completed", "failed", "not_sent"):
            s[k] = sum(r[k] for r in ok)
        s["requests_per_replica"] = ok[0]["requests_per_replica"] if len(ok) == 1 else \
            [" ".join(str(int(x)) for x in r["requests_per_replica"]) for r in ok]
        s["loadavg_1m"] = [r["loadavg_1m"] for r in ok]
        s["errors"] = sorted({e for r in ok for e in r["errors"]})
        if any("kill" in r for r in ok):
            s["kill"] = [r["kill"] for r in ok]
        out.append(s)
    return out


def spread(x):
    return " / ".join(str(int(v)) for v in x) if x and not isinstance(x[0], str) else "; ".join(x)


def markdown(rows, args, kill):
    cfg = (f"{args.replicas} replicas (`pagoda serve -t {args.threads} --kv-mem {args.kv_mem}`), "
           f"{args.conversations} conversations x {args.turns} turns, {args.concurrency} at a time, "
           f"{args.system_prompts} system prompts of {args.system_len} words, user messages of {args.user_len} words, "
           f"{args.max_tokens}-token answers, seed {args.seed}")
    lines = [f"Workload: {cfg}."]
    if args.repeat > 1:
        lines.append(f"{args.repeat} passes over the front ends, alternating their order; figures are the median "
                     "over the passes, requests per replica per pass, ok/failed summed over the passes.")
    lines += ["", "| front end | prefix-cache hit rate | prompt tokens computed | requests per replica | "
              "ok / failed / not sent | TTFT mean / p50 / p99 ms | TTFT turn 1 / later ms | TPOT mean ms | req/s | "
              "output tok/s |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['description']} | - | - | - | - | {r['error']} | | | | |")
            continue
        lines.append(f"| {r['description']} | {100 * r['prefix_hit_rate']:.1f}% | {r['prompt_tokens_computed']:.0f} | "
                     f"{spread(r['requests_per_replica'])} | "
                     f"{r['completed']} / {r['failed']} / {r['not_sent']} | "
                     f"{r['mean_ttft_ms']:.0f} / {r['median_ttft_ms']:.0f} / {r['p99_ttft_ms']:.0f} | "
                     f"{r['mean_first_turn_ttft_ms']:.0f} / {r['mean_later_turns_ttft_ms']:.0f} | {r['mean_tpot_ms']:.1f} | "
                     f"{r['request_throughput']:.2f} | {r['output_throughput']:.1f} |")
    if kill:
        lines += ["", f"Replica {args.replicas} SIGKILLed {args.kill_after:g} s into each run:", "",
                  "| front end | failed: in flight at the kill | failed: sent after the kill | sent after the kill (ok) "
                  "| survivors' requests after the kill | errors |", "|---|---:|---:|---:|---|---|"]
        for r in rows:
            errs = "; ".join(e[:80] for e in r.get("errors", [])[:3]) or "-"
            for k in ([r["kill"]] if isinstance(r.get("kill"), dict) else r.get("kill", [])):
                lines.append(f"| {r['description']} | {k['failed_in_flight_at_kill']} | {k['failed_sent_after_kill']} | "
                             f"{k['sent_after_kill']} ({k['ok_after_kill']}) | "
                             f"{spread(k['survivor_requests_after_kill'])} | {errs} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pagoda", default=str(ROOT / "build" / "pagoda"))
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="-t of each replica")
    ap.add_argument("--kv-mem", default="96M", help="--kv-mem of each replica")
    ap.add_argument("--routers", default=DEFAULT, help=f"comma list of {', '.join(FRONT_ENDS)} (default {DEFAULT})")
    ap.add_argument("--conversations", type=int, default=24)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--system-prompts", type=int, default=4)
    ap.add_argument("--system-len", type=int, default=256)
    ap.add_argument("--user-len", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="passes over the front ends (alternating order); medians")
    ap.add_argument("--kill-one", action="store_true", help="SIGKILL the last replica --kill-after s into each run")
    ap.add_argument("--kill-after", type=float, default=15.0)
    ap.add_argument("--run-timeout", type=float, default=900.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "routers"))
    args = ap.parse_args()
    names = [n.strip() for n in args.routers.split(",") if n.strip()]
    bad = [n for n in names if n not in FRONT_ENDS]
    if bad or not names:
        ap.error(f"unknown front end(s) {bad}; choose from {', '.join(FRONT_ENDS)}")
    if args.replicas < 2:
        ap.error("--replicas must be at least 2")
    for p in (args.pagoda, args.model):
        if not os.path.exists(p):
            sys.exit(f"router_compare: {p} not found")
    if any(FRONT_ENDS[n][1] == "nginx" for n in names) and not nginx_exe():
        sys.exit("router_compare: nginx not installed (apt-get install nginx)")
    os.makedirs(args.out, exist_ok=True)
    tag = "routers-kill" if args.kill_one else "routers"
    log_path = Path(args.out) / f"{tag}.log"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # replicas and routers are closed on the way out
    serve_args = ("--kv-mem", args.kv_mem, "-t", str(args.threads))
    ws = [Server(args.pagoda, args.model, *serve_args) for _ in range(args.replicas)]
    rows = []
    t0 = time.time()
    try:
        order = [n for p in range(args.repeat) for n in (names if p % 2 == 0 else names[::-1])]
        with open(log_path, "w") as log:
            for n in order:
                print(f"router_compare: {FRONT_ENDS[n][0]} ...", file=sys.stderr, flush=True)
                replaced = ensure_replicas(ws, args, serve_args)
                try:
                    row = run_one(n, ws, args, log)
                except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
                    row = {"front_end": n, "description": FRONT_ENDS[n][0], "error": str(e).splitlines()[0][:200]}
                    print(f"router_compare: {n}: {e}", file=sys.stderr)
                if replaced:
                    row["replicas_replaced_before"] = replaced
                rows.append(row)
                log.flush()
                if "error" not in row:
                    print(f"router_compare: {n}: hit rate {100 * row['prefix_hit_rate']:.1f}%, TTFT mean "
                          f"{row['mean_ttft_ms']:.0f} ms, {row['failed']} failed, per replica "
                          f"{row['requests_per_replica']}", file=sys.stderr, flush=True)
    finally:
        for w in ws:
            w.close()
    cfg = {k: getattr(args, k) for k in ("replicas", "threads", "kv_mem", "conversations", "turns", "system_prompts",
                                         "system_len", "user_len", "max_tokens", "concurrency", "seed", "kill_one",
                                         "kill_after", "repeat")}
    cfg["machine"] = f"{os.cpu_count()} CPUs, shared with other jobs (load average in each run's loadavg_1m)"
    cfg["model"] = os.path.basename(args.model)
    cfg["wall_s"] = time.time() - t0
    with open(Path(args.out) / f"{tag}.json", "w") as f:
        json.dump({"config": cfg, "summary": summarize(rows, names), "runs": rows}, f, indent=1)
    md = markdown(summarize(rows, names), args, args.kill_one)
    (Path(args.out) / f"{tag}.md").write_text(md)
    print(md)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
