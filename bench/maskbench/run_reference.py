#!/usr/bin/env python3
"""MaskBench with a reference engine (llguidance or XGrammar): one JSON line per schema.

  run_reference.py --engine llguidance --tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf \
      [--data ../shared/data/maskbench/maskbench-visible.jsonl.gz] [--limit N] [--ids A,B] [--stride K]
      [--timeout 60] [--out FILE] [--no-tbm-list]

--tokenizer is a Hugging Face tokenizer.json (or a folder holding one; the eos token is read from
a tokenizer_config.json beside it) or a GGUF file (converted once with transformers' GGUF support
and cached under build/tmp/maskbench/, never committed). --eos overrides the end token id.

Method (MaskBench's): per schema, compile it and compute the first mask (TTFM); then for each test
instance serialize it compactly, json.dumps(data, separators=(",", ":"), ensure_ascii=False) -- the
grammars are compiled for exactly that layout: "," and ":" separators, no free whitespace -- and
tokenize the text (no special tokens). Walk the tokens: at each step the last mask must allow the
next token; the token is consumed and the next mask computed (the pair is one TBM sample: the time
between two masks). After the last token the mask must allow the end (eos) token.
A valid instance must pass the walk (else a validation error: the engine masked a valid token);
an invalid one must fail it somewhere (else an invalidation error). Single-threaded.

Output line (the shape `pagoda bench grammar` writes too; compare.py reads both):
  {"id": str, "engine": str, "engine_version": str, "tokenizer": str, "features": [str],
   "status": "passing"|"compile_error"|"validation_error"|"invalidation_error"|"timeout"|"crash",
   "error": str (compile error text, first failure, or null),
   "ttfm_us": float|null, "n_tests": int, "n_valid": int, "n_tokens": int,
   "n_validation_errors": int, "n_invalidation_errors": int,
   "tbm_us": [float, ...] (every TBM sample, 0.1 us; omitted with --no-tbm-list),
   "tbm_summary": {"n": int, "p50": float, "p90": float, "p99": float, "max": float, "sum": float}}
status: compile_error when the engine refuses the schema; validation_error when any valid instance
failed (even if an invalid one also passed); invalidation_error when only invalid ones passed;
timeout when compile + all walks took over --timeout seconds; crash when the engine process died.
"""
import argparse
import gzip
import json
import math
import multiprocessing as mp
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import engines  # noqa: E402
import gguf_tokenizer  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "maskbench" / "maskbench-visible.jsonl.gz"
CACHE = ROOT / "build" / "tmp" / "maskbench"


def percentile(xs, q):
    """Nearest-rank percentile of a list (q in 0..100); None for an empty list."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


def summary(xs):
    if not xs:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "sum": 0.0}
    return {"n": len(xs), "p50": percentile(xs, 50), "p90": percentile(xs, 90),
            "p99": percentile(xs, 99), "max": max(xs), "sum": round(sum(xs), 1)}


def serialize(data):
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def resolve_tokenizer(arg, eos_override):
    """(tokenizer.json text, eos id or None, display name)."""
    p = pathlib.Path(arg)
    eos = None
    if p.is_dir():
        cfg = p / "tokenizer_config.json"
        p = p / "tokenizer.json"
    else:
        cfg = p.parent / "tokenizer_config.json"
    if not p.exists():
        raise SystemExit(f"tokenizer not found: {p}")
    if p.suffix == ".gguf":
        js = gguf_tokenizer.tokenizer_json_from_gguf(p, CACHE)
        eos = gguf_tokenizer.eos_of_cached(js)
        text = js.read_text()
    else:
        text = p.read_text()
        if cfg.exists():
            name = json.loads(cfg.read_text()).get("eos_token")
            if isinstance(name, dict):
                name = name.get("content")
            if name:
                import tokenizers
                eos = tokenizers.Tokenizer.from_str(text).token_to_id(name)
    if eos_override is not None:
        eos = eos_override
    display = p.stem if p.suffix == ".gguf" else (p.parent.name if p.name == "tokenizer.json" else p.name)
    return text, eos, display


def run_schema(engine, tok, rec):
    """Everything for one schema record; returns the output dict minus run-level fields."""
    tests = rec.get("tests") or []
    out = {"id": rec["id"], "features": rec.get("features", []), "status": None, "error": None,
           "ttfm_us": None, "n_tests": len(tests), "n_valid": sum(1 for t in tests if t.get("valid")),
           "n_tokens": 0, "n_validation_errors": 0, "n_invalidation_errors": 0, "tbm_us": []}
    ns = time.perf_counter_ns
    t0 = ns()
    try:
        sess = engine.compile(rec["schema"])
        sess.mask()
    except engines.CompileError as e:
        out["status"] = "compile_error"
        out["error"] = str(e) or "refused"
        return out
    out["ttfm_us"] = round((ns() - t0) / 1000.0, 1)
    tbm = out["tbm_us"]
    first_failure = None
    for ti, test in enumerate(tests):
        if ti > 0:
            sess.reset()
            sess.mask()
        ids = tok.encode(serialize(test["data"]), add_special_tokens=False).ids
        out["n_tokens"] += len(ids)
        rejected_at = None
        for i, t in enumerate(ids):
            if not sess.allowed(t):
                rejected_at = i
                break
            a = ns()
            ok = sess.consume(t)
            if ok:
                sess.mask()
            b = ns()
            if not ok:
                rejected_at = i
                break
            tbm.append(round((b - a) / 1000.0, 1))
        accepted = rejected_at is None and sess.allowed(engine.eos)
        if test.get("valid") and not accepted:
            out["n_validation_errors"] += 1
            where = (f"token {rejected_at} {tok.id_to_token(ids[rejected_at])!r}" if rejected_at is not None
                     else "end (eos) not allowed")
            msg = f"valid test {ti} rejected at {where}"
        elif not test.get("valid") and accepted:
            out["n_invalidation_errors"] += 1
            msg = f"invalid test {ti} accepted"
        else:
            continue
        if first_failure is None:
            first_failure = msg
    if out["n_validation_errors"]:
        out["status"] = "validation_error"
    elif out["n_invalidation_errors"]:
        out["status"] = "invalidation_error"
    else:
        out["status"] = "passing"
    out["error"] = first_failure
    return out


def _worker(conn, engine_name, tok_text, eos):
    import tokenizers
    try:
        engine = engines.make(engine_name, tok_text, eos)
    except engines.EngineMissing as e:
        conn.send({"fatal": str(e)})
        return
    tok = tokenizers.Tokenizer.from_str(tok_text)
    conn.send({"ready": True, "version": engine.version, "eos": engine.eos})
    while True:
        rec = conn.recv()
        if rec is None:
            return
        conn.send(run_schema(engine, tok, rec))


class Worker:
    """The engine in a child process, so that a schema past its time can be stopped."""

    def __init__(self, engine_name, tok_text, eos):
        self.args = (engine_name, tok_text, eos)
        self.start()

    def start(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child,) + self.args, daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(300):
            raise SystemExit("engine did not start within 300 s")
        try:
            hello = self.conn.recv()
        except EOFError:
            self.proc.join(10)
            raise engines.EngineMissing(f"the {self.args[0]} engine process died while starting "
                                        f"(exit {self.proc.exitcode}; its error is above)")
        if "fatal" in hello:
            raise engines.EngineMissing(hello["fatal"])
        self.version, self.eos = hello["version"], hello["eos"]

    def stop(self):
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(10)

    def run(self, rec, timeout):
        self.conn.send(rec)
        try:
            if self.conn.poll(timeout):
                return self.conn.recv()
            status, err = "timeout", f"over {timeout:g} s"
        except (EOFError, ConnectionError):
            status, err = "crash", f"engine process died (exit {self.proc.exitcode})"
        self.stop()
        self.start()
        tests = rec.get("tests") or []
        return {"id": rec["id"], "features": rec.get("features", []), "status": status, "error": err,
                "ttfm_us": None, "n_tests": len(tests), "n_valid": sum(1 for t in tests if t.get("valid")),
                "n_tokens": 0, "n_validation_errors": 0, "n_invalidation_errors": 0, "tbm_us": []}


def read_records(path, ids=None, limit=None, stride=1):
    opener = gzip.open if str(path).endswith(".gz") else open
    n = 0
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip() or i % stride:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{i + 1}: not JSON ({e})")
            if not isinstance(rec, dict) or "id" not in rec or "schema" not in rec:
                raise SystemExit(f"{path}:{i + 1}: not a MaskBench record (needs id, schema, tests)")
            if ids is not None and rec["id"] not in ids:
                continue
            yield rec
            n += 1
            if limit is not None and n >= limit:
                return


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", required=True, choices=engines.ENGINES)
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json, a folder with one, or a .gguf")
    ap.add_argument("--eos", type=int, default=None, help="end token id (default: from the tokenizer files)")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--limit", type=int, default=None, help="first N schemas only")
    ap.add_argument("--ids", default=None, help="comma-separated schema ids")
    ap.add_argument("--stride", type=int, default=1, help="every K-th schema of the file only (a spread sample)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per schema (compile + walks)")
    ap.add_argument("--out", default="-", help="output JSON lines (default stdout)")
    ap.add_argument("--no-tbm-list", action="store_true", help="write tbm_summary only, not every sample")
    ap.add_argument("--progress", type=int, default=0, help="print progress to stderr every N schemas")
    args = ap.parse_args(argv)

    if not pathlib.Path(args.data).exists():
        raise SystemExit(f"data not found: {args.data}")
    tok_text, eos, tok_name = resolve_tokenizer(args.tokenizer, args.eos)
    try:
        worker = Worker(args.engine, tok_text, eos)
    except engines.EngineMissing as e:
        print(f"run_reference: {e}", file=sys.stderr)
        return 3
    ids = set(args.ids.split(",")) if args.ids else None
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    counts = {}
    start = time.time()
    try:
        for n, rec in enumerate(read_records(args.data, ids, args.limit, max(1, args.stride)), 1):
            res = worker.run(rec, args.timeout)
            res["tbm_summary"] = summary(res["tbm_us"])
            if args.no_tbm_list:
                del res["tbm_us"]
            line = {"id": res.pop("id"), "engine": args.engine, "engine_version": worker.version,
                    "tokenizer": tok_name}
            line.update(res)
            out.write(json.dumps(line) + "\n")
            out.flush()
            counts[line["status"]] = counts.get(line["status"], 0) + 1
            if args.progress and n % args.progress == 0:
                print(f"[{args.engine}/{tok_name}] {n} schemas, {time.time() - start:.0f} s: {counts}",
                      file=sys.stderr, flush=True)
    finally:
        try:
            worker.conn.send(None)
        except (OSError, ValueError):
            pass
        worker.stop()
        if out is not sys.stdout:
            out.close()
    print(f"[{args.engine}/{tok_name}] done: {sum(counts.values())} schemas in {time.time() - start:.0f} s: "
          f"{counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
