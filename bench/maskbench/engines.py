"""The reference grammar engines behind one small interface, for the MaskBench harness.

An engine is made once per tokenizer (Engine(tokenizer_json_text, eos_id)); per schema,
compile(schema) returns a Session (or raises CompileError); a Session walks tokens:
  reset()            back to the start state
  mask()             compute the allowed-token mask for the next step (the timed call)
  allowed(tok)       whether tok is in the last computed mask
  consume(tok)       commit tok; False when the engine refuses it
Both engines get the same JSON options: compact separators ("," and ":"), no free whitespace
between tokens, and additional properties allowed where the schema does not forbid them (JSON
Schema's own rule; XGrammar's strict_mode is turned off for it).
"""
import json
import sys
import types

ENGINES = ("llguidance", "xgrammar")


class CompileError(Exception):
    pass


class EngineMissing(Exception):
    pass


# ---------------------------------------------------------------- llguidance

class _LlgSession:
    def __init__(self, matcher):
        self.m = matcher
        self.buf = None

    def reset(self):
        self.m.reset()

    def mask(self):
        self.buf = self.m.compute_bitmask()

    def allowed(self, tok):
        b = self.buf
        return 0 <= tok < len(b) * 8 and (b[tok >> 3] >> (tok & 7)) & 1 == 1

    def consume(self, tok):
        return bool(self.m.consume_token(tok)) and not self.m.is_error()


class Llguidance:
    name = "llguidance"

    def __init__(self, tokenizer_json, eos_id):
        try:
            import llguidance
        except ImportError as e:
            raise EngineMissing(f"llguidance is not installed ({e})")
        self.llg = llguidance
        self.version = getattr(llguidance, "__version__", None) or _dist_version("llguidance")
        self.tok = llguidance.LLTokenizer(tokenizer_json, eos_token=eos_id)
        self.vocab_size = self.tok.vocab_size
        self.eos = eos_id if eos_id is not None else self.tok.eos_token

    def compile(self, schema):
        M = self.llg.LLMatcher
        try:
            grammar = M.grammar_from_json_schema(
                json.dumps(schema),
                overrides={"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"})
        except Exception as e:  # noqa: BLE001 - any refusal is a compile error
            raise CompileError(str(e)[:300])
        m = M(self.tok, grammar, log_level=0)
        if m.is_error():
            raise CompileError(m.get_error()[:300])
        return _LlgSession(m)


# ---------------------------------------------------------------- xgrammar

def _torch_stand_in():
    """XGrammar's Python package imports torch at load time only to name a dtype and build a
    full-mask constant; its matcher fills any int32 DLPack array (numpy here). Where torch is not
    installed (CI avoids a multi-GB install), a stand-in with just those names lets it load; it is
    put in sys.modules only while xgrammar is imported, and removed afterwards."""
    mod = types.ModuleType("torch")

    class Tensor:  # only used in annotations
        pass

    mod.Tensor = Tensor
    mod.int32 = "int32"
    mod.dtype = str
    mod.tensor = lambda *a, **k: None
    mod.full = lambda *a, **k: None
    # other names only appear in annotations (torch.LongTensor, ...): a placeholder class each
    mod.__getattr__ = lambda name: type(name, (), {})
    return mod


def _import_xgrammar():
    try:
        import torch  # noqa: F401
        import xgrammar
        return xgrammar
    except ImportError:
        pass
    # these look for torch themselves: let them find none before the stand-in appears
    import transformers  # noqa: F401
    import tvm_ffi  # noqa: F401
    sys.modules["torch"] = _torch_stand_in()
    try:
        import xgrammar
    finally:
        del sys.modules["torch"]
    return xgrammar


class _XgrSession:
    def __init__(self, engine, compiled):
        import numpy as np
        self.np = np
        self.xgr = engine.xgr
        self.compiled = compiled
        self.m = engine.xgr.GrammarMatcher(compiled, terminate_without_stop_token=False)
        self.buf = np.full((1, (engine.vocab_size + 31) // 32), -1, dtype=np.int32)

    def reset(self):
        self.m.reset()

    def mask(self):
        self.m.fill_next_token_bitmask(self.buf, 0)

    def allowed(self, tok):
        w = int(self.buf[0, tok >> 5]) & 0xFFFFFFFF
        return (w >> (tok & 31)) & 1 == 1

    def consume(self, tok):
        return bool(self.m.accept_token(tok))


class Xgrammar:
    name = "xgrammar"

    def __init__(self, tokenizer_json, eos_id):
        try:
            xgr = _import_xgrammar()
        except ImportError as e:
            raise EngineMissing(f"xgrammar is not installed or cannot load ({e})")
        from transformers import PreTrainedTokenizerFast
        import tokenizers
        self.xgr = xgr
        self.version = getattr(xgr, "__version__", None) or _dist_version("xgrammar")
        hf = PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer.from_str(tokenizer_json))
        self.vocab_size = hf.backend_tokenizer.get_vocab_size(with_added_tokens=True)
        stop = [eos_id] if eos_id is not None else None
        info = xgr.TokenizerInfo.from_huggingface(hf, vocab_size=self.vocab_size, stop_token_ids=stop)
        self.eos = eos_id if eos_id is not None else info.stop_token_ids[0]
        # single-threaded, no cache across schemas: each compile is measured cold
        self.compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)

    def compile(self, schema):
        try:
            compiled = self.compiler.compile_json_schema(
                json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=False)
        except Exception as e:  # noqa: BLE001
            raise CompileError(str(e)[:300])
        return _XgrSession(self, compiled)


def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001
        return None


def make(name, tokenizer_json, eos_id):
    if name == "llguidance":
        return Llguidance(tokenizer_json, eos_id)
    if name == "xgrammar":
        return Xgrammar(tokenizer_json, eos_id)
    raise ValueError(f"unknown engine {name!r} (one of {', '.join(ENGINES)})")
