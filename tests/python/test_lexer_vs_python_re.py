"""The grammar lexer (src/grammar/lexer.h) against Python's `re`, an independent implementation.

Driver: the unit test binary `test_lexer --match` (built from tests/unit/test_lexer.c; each stdin
line is hex(pattern) hex(string), answered 1/0 for a whole-string match or "E message").

The reference is `re.fullmatch` over a translation of the ECMAScript pattern into Python syntax that
pins down where the two dialects differ, so the comparison stays within the common subset:
  - \\d \\w (and \\D \\W) are the ASCII sets of ECMAScript (Python's are Unicode): written as explicit
    code point ranges; \\s / \\S are ECMAScript's whitespace set (which has U+FEFF, Python's lacks it
    and has U+001C-U+001F, U+0085), also written out;
  - every literal and class member is written as a \\U escape (no Python-only class syntax such as
    nested-set warnings); `{` that is not an ECMAScript quantifier is a literal (Python reads
    `{,n}` as a quantifier); `[]` (nothing) and `[^]` (anything) are ECMAScript-only;
  - `$` is `\\Z` (Python's `$` also matches before a final newline); `^` is `\\A`;
  - `.` is any code point but \\n in both (lexer.h; ECMAScript also excludes \\r, U+2028, U+2029);
  - (?<name>...) becomes (?P<name>...); \\uD83D\\uDE00 pairs become one code point.
Invalid UTF-8 is covered by the unit test (Python strings cannot hold it).

Corpora: a few hundred generated patterns x generated strings, and every `pattern` (and
patternProperties key) of the MaskBench schemas in ../shared, tested against the strings of that
schema's valid/invalid instances plus random strings, both whole-string and as JSON Schema uses it
(unanchored: `[^]*(?:p)[^]*` against `re.search`). Patterns Python rejects are skipped; patterns the
lexer rejects are counted by feature and must be ones lexer.h says it rejects.
"""
import gzip
import json
import os
import pathlib
import random
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("PAGODA_BUILD", ROOT / "build"))
DRIVER = BUILD / "test_lexer"

if not DRIVER.exists():
    pytest.skip(f"{DRIVER} not built", allow_module_level=True)

MAXCP = 0x10FFFF
DIGIT = [(0x30, 0x39)]
WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
SPACE = [(9, 13), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029),
         (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF)]


class Untranslatable(Exception):
    pass


def complement(rs):
    out, nxt = [], 0
    for lo, hi in sorted(rs):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    if nxt <= MAXCP:
        out.append((nxt, MAXCP))
    return out


def py_class(rs, neg=False):
    if not rs:
        return "[^\\x00-\\U0010ffff]" if not neg else "[\\x00-\\U0010ffff]"
    body = "".join("\\U%08x" % lo if lo == hi else "\\U%08x-\\U%08x" % (lo, hi) for lo, hi in rs)
    return "[" + ("^" if neg else "") + body + "]"


ESC = {"n": 10, "t": 9, "r": 13, "f": 12, "v": 11}
CLASS_ESC = {"d": DIGIT, "w": WORD, "s": SPACE}
QUANT = re.compile(r"\{(\d+)(,(\d*))?\}")


def read_escape(p, i, in_class):
    """p[i] == '\\'. Returns (kind, value, next): kind 'cp' (code point) or 'cls' (ranges)."""
    if i + 1 >= len(p):
        raise Untranslatable("trailing backslash")
    c = p[i + 1]
    if c in CLASS_ESC:
        return "cls", CLASS_ESC[c], i + 2
    if c.lower() in CLASS_ESC:
        return "cls", complement(CLASS_ESC[c.lower()]), i + 2
    if c in ESC:
        return "cp", ESC[c], i + 2
    if c == "0" and not (i + 2 < len(p) and p[i + 2].isdigit()):
        return "cp", 0, i + 2
    if c == "b" and in_class:
        return "cp", 8, i + 2
    if c == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", p[i + 2:i + 4]):
        return "cp", int(p[i + 2:i + 4], 16), i + 4
    if c == "c" and i + 2 < len(p) and p[i + 2].isascii() and p[i + 2].isalpha():
        return "cp", ord(p[i + 2]) & 31, i + 3
    if c == "u":
        m = re.match(r"\{([0-9a-fA-F]+)\}", p[i + 2:])
        if m and int(m.group(1), 16) <= MAXCP:
            return "cp", int(m.group(1), 16), i + 2 + m.end()
        if re.fullmatch(r"[0-9a-fA-F]{4}", p[i + 2:i + 6]):
            v = int(p[i + 2:i + 6], 16)
            j = i + 6
            if 0xD800 <= v <= 0xDBFF and p[j:j + 2] == "\\u" and re.fullmatch(r"[0-9a-fA-F]{4}", p[j + 2:j + 6]):
                lo = int(p[j + 2:j + 6], 16)
                if 0xDC00 <= lo <= 0xDFFF:
                    return "cp", 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00), j + 6
            return "cp", v, j
        raise Untranslatable("bad \\u")
    if c.isascii() and c.isalnum():
        raise Untranslatable("escape \\" + c)
    return "cp", ord(c), i + 2


def read_class(p, i):
    """p[i] == '['. Returns (python class, next)."""
    j = i + 1
    neg = j < len(p) and p[j] == "^"
    if neg:
        j += 1
    rs = []
    while True:
        if j >= len(p):
            raise Untranslatable("unterminated class")
        if p[j] == "]":
            j += 1
            break
        if p[j] == "\\":
            k1, v1, j = read_escape(p, j, True)
        else:
            k1, v1, j = "cp", ord(p[j]), j + 1
        if j + 1 < len(p) and p[j] == "-" and p[j + 1] != "]":
            if p[j + 1] == "\\":
                k2, v2, j = read_escape(p, j + 1, True)
            else:
                k2, v2, j = "cp", ord(p[j + 1]), j + 2
            if k1 != "cp" or k2 != "cp" or v1 > v2:
                raise Untranslatable("bad range")
            rs.append((v1, v2))
        elif k1 == "cls":
            rs.extend(v1)
        else:
            rs.append((v1, v1))
    return py_class(sorted(rs), neg), j


def translate(p):
    out, i = [], 0
    while i < len(p):
        c = p[i]
        if c == "\\":
            kind, v, i = read_escape(p, i, False)
            out.append("\\U%08x" % v if kind == "cp" else py_class(v))
        elif c == "[":
            s, i = read_class(p, i)
            out.append(s)
        elif c == "(":
            m = re.match(r"\((\?(:|=|!|<=|<!|<[A-Za-z_$][A-Za-z0-9_$]*>))?", p[i:])
            if m.group(2) and m.group(2)[0] == "<" and m.group(2)[1] not in "=!":
                out.append("(?:")  # named group: capture is irrelevant, names may repeat here
            else:  # a plain group, or a form the lexer rejects (left to Python)
                out.append(m.group(0))
            i += m.end()
        elif c == "{":
            m = QUANT.match(p, i)
            out.append(m.group(0) if m else "\\{")
            i = m.end() if m else i + 1
        elif c == "}":
            out.append("\\}")
            i += 1
        elif c == "$":
            out.append("\\Z")
            i += 1
        elif c == "^":
            out.append("\\A")
            i += 1
        elif c in ".|)*+?":
            out.append(c)
            i += 1
        else:
            out.append("\\U%08x" % ord(c))
            i += 1
    return "".join(out)


def run_driver(pairs):
    """pairs: (pattern str, subject str) -> list of '1' / '0' / 'E msg'."""
    lines = "".join(f"{p.encode().hex()} {s.encode().hex()}\n" for p, s in pairs)
    r = subprocess.run([str(DRIVER), "--match"], input=lines, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert len(out) == len(pairs)
    return out


# ---- generated patterns ----

LITS = {"a": "a", "b": "b", "c": "c", "1": "1", "-": "-", " ": " ", "é": "é", "日": "日", "😀": "😀", "\\.": ".",
        "\\-": "-", "\\u00e9": "é", "\\u{1F600}": "😀", "\\x41": "A", "\\n": "\n", "\\ud83d\\ude01": "😁"}
CLASSES = ["[ab]", "[^a]", "[a-c]", "[α-ω]", "[^α-ω]", "[\\d]", "[\\w-]", "[^\\s]", "[é日]", "[😀-😂]", "[\\u0080-\\uffff]",
           "\\d", "\\D", "\\w", "\\W", "\\s", "\\S", ".", "[^\\D]", "[\\S\\d]", "[^\\W\\s]", "[^]", "[\\b]"]
QUANTS = {"*": (0, 3), "+": (1, 3), "?": (0, 1), "{2}": (2, 2), "{0,2}": (0, 2), "{1,}": (1, 3), "{1,3}": (1, 3),
          "*?": (0, 2), "+?": (1, 2), "??": (0, 1), "{2,3}?": (2, 3)}
ALPHABET = ["a", "b", "c", "1", "2", "-", " ", "\t", "\n", ".", "é", "λ", "日", "😀", "😁", "A", "_", "\u00a0", "\ufeff",
            "\b", "\u2028", "本"]


def gen_node(rng, depth=0):
    """A small random ECMAScript pattern as a tree: ('lit', es, text) | ('cls', es) | ('grp', open, alts)
    | ('rep', node, quantifier); alts is a list of sequences (lists of nodes)."""
    r = rng.random()
    if r < 0.4 or (r >= 0.75 and depth >= 2):
        k = rng.choice(list(LITS))
        node = ("lit", k, LITS[k])
    elif r < 0.75:
        node = ("cls", rng.choice(CLASSES))
    else:
        alts = [gen_seq(rng, depth + 1) for _ in range(rng.randint(1, 3))]
        node = ("grp", rng.choice(["(", "(?:", "(?<g%d>" % rng.randint(0, 99)]), alts)
    if rng.random() < 0.35:
        node = ("rep", node, rng.choice(list(QUANTS)))
    return node


def gen_seq(rng, depth):
    return [gen_node(rng, depth) for _ in range(rng.randint(1, 4))]


def es_text(n):
    if n[0] == "lit":
        return n[1]
    if n[0] == "cls":
        return n[1]
    if n[0] == "grp":
        return n[1] + "|".join("".join(map(es_text, seq)) for seq in n[2]) + ")"
    return es_text(n[1]) + n[2]


def sample(n, rng):
    """A string in the language of node n (or None where a class has no candidate)."""
    if n[0] == "lit":
        return n[2]
    if n[0] == "cls":
        rx = re.compile(translate(n[1]))
        cands = [c for c in ALPHABET if rx.fullmatch(c)]
        return rng.choice(cands) if cands else None
    if n[0] == "grp":
        parts = [sample(x, rng) for x in rng.choice(n[2])]
        return None if None in parts else "".join(parts)
    lo, hi = QUANTS[n[2]]
    parts = [sample(n[1], rng) for _ in range(rng.randint(lo, hi))]
    return None if None in parts else "".join(parts)


def gen_pattern(rng):
    """(ECMAScript pattern, a few strings it should match)"""
    seq = gen_seq(rng, 0)
    p = "".join(map(es_text, seq))
    samples = [s for s in ("".join(x or "" for x in [sample(n, rng) for n in seq]) for _ in range(6)) if s is not None]
    if rng.random() < 0.15:
        p = "^" + p
    if rng.random() < 0.15:
        p = p + "$"
    if rng.random() < 0.1:
        alt = gen_seq(rng, 1)
        p = p + "|" + "".join(map(es_text, alt))
    return p, samples


def gen_strings(rng, n):
    out = {""}
    while len(out) < n:
        out.add("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 7))))
    return sorted(out)


def mutate(s, rng):
    if not s or rng.random() < 0.3:
        i = rng.randint(0, len(s))
        return s[:i] + rng.choice(ALPHABET) + s[i:]
    i = rng.randrange(len(s))
    return s[:i] + (rng.choice(ALPHABET) if rng.random() < 0.5 else "") + s[i + 1:]


def compare(cases):
    """cases: list of (es pattern, python regex object, subject, search). Returns mismatches."""
    res = run_driver([(p, s) for p, _, s, _ in cases])
    bad = []
    for (p, rx, s, search), got in zip(cases, res):
        want = bool(rx.search(s) if search else rx.fullmatch(s))
        if got not in ("0", "1") or (got == "1") != want:
            bad.append((p, s, "search" if search else "fullmatch", got, want))
    return bad


def test_generated_patterns():
    rng = random.Random(1234)
    cases, n_pat = [], 0
    for _ in range(500):
        p, samples = gen_pattern(rng)
        try:
            rx = re.compile(translate(p))
        except (Untranslatable, re.error):
            continue
        n_pat += 1
        # strings: random ones, strings sampled from the pattern (mostly matches) and their mutations
        subjects = set(gen_strings(rng, 12)) | set(samples) | {mutate(s, rng) for s in samples for _ in range(2)}
        for s in sorted(subjects):
            if len(s) <= 16:  # Python's backtracking is exponential on some nested repetitions
                cases.append((p, rx, s, False))
    assert n_pat >= 400
    bad = compare(cases)
    n_match = sum(1 for p, rx, s, _ in cases if rx.fullmatch(s))
    print(f"\ngenerated: {n_pat} patterns, {len(cases)} checks ({n_match} matches), {len(bad)} mismatches")
    assert n_match > 1000, f"only {n_match} matching cases: the generator is too weak"
    assert not bad, f"{len(bad)} mismatches of {len(cases)}, e.g. {bad[:10]}"


# ---- MaskBench patterns ----

def schema_patterns(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "pattern" and isinstance(v, str):
                out.add(v)
            elif k == "patternProperties" and isinstance(v, dict):
                out.update(v.keys())
            schema_patterns(v, out)
    elif isinstance(node, list):
        for v in node:
            schema_patterns(v, out)


def instance_strings(node, out):
    if isinstance(node, str):
        out.add(node)
    elif isinstance(node, dict):
        for k, v in node.items():
            out.add(k)
            instance_strings(v, out)
    elif isinstance(node, list):
        for v in node:
            instance_strings(v, out)


def feature_of(err):
    for key in ("lookahead", "lookbehind", "backreference", "property", "word boundary", "unknown escape",
                "unsupported group", "octal", "too large", "UTF-8"):
        if key in err:
            return key
    return err.split(": ", 2)[-1]


def test_maskbench_patterns(shared):
    path = pathlib.Path(shared) / "data" / "maskbench" / "maskbench-visible.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} absent")
    per_pattern = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            rec = json.loads(line)
            pats = set()
            schema_patterns(rec["schema"], pats)
            if not pats:
                continue
            strs = set()
            for t in rec.get("tests", []):
                instance_strings(t.get("data"), strs)
            for p in pats:
                per_pattern.setdefault(p, set()).update(strs)
    assert len(per_pattern) > 100
    rng = random.Random(99)
    # which the lexer compiles
    verdicts = run_driver([(p, "") for p in per_pattern])
    failing = {p: v[2:] for p, v in zip(per_pattern, verdicts) if v.startswith("E ")}
    features = {}
    for p, e in failing.items():
        features.setdefault(feature_of(e), []).append(p)
    summary = {k: len(v) for k, v in sorted(features.items(), key=lambda kv: -len(kv[1]))}
    print(f"\nmaskbench: {len(per_pattern)} distinct patterns, {len(per_pattern) - len(failing)} compile, "
          f"{len(failing)} rejected: {summary}")
    for k, v in features.items():
        print(f"  {k}: {v[:3]}")
    # everything the lexer rejects is a feature lexer.h says it rejects (or a pattern Python rejects too)
    allowed = {"lookahead", "lookbehind", "backreference", "property", "word boundary", "too large"}
    for p, e in failing.items():
        if feature_of(e) in allowed:
            continue
        try:
            re.compile(p)
        except re.error:
            continue
        raise AssertionError(f"lexer rejects /{p}/ ({e}), which Python accepts")
    cases, skipped = [], 0
    for p, strs in sorted(per_pattern.items()):
        if p in failing:
            continue
        try:
            full = re.compile(translate(p))
        except (Untranslatable, re.error):
            skipped += 1
            continue
        subjects = sorted(strs)[:40] + gen_strings(rng, 8)
        for s in subjects:
            if len(s) > 300:
                continue
            cases.append((p, full, s, False))
            cases.append(("[^]*(?:" + p + ")[^]*", full, s, True))
    bad = compare(cases)
    n_match = sum(1 for _, rx, s, search in cases if (rx.search(s) if search else rx.fullmatch(s)))
    print(f"maskbench: {len(cases)} pattern/string checks ({n_match} matches), {skipped} patterns skipped "
          f"(Python rejects or not translatable)")
    assert not bad, f"{len(bad)} mismatches of {len(cases)}, e.g. {bad[:10]}"
