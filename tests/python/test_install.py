"""The installed packages (cmake --install): the current build tree is installed into a temporary
prefix, then a program outside the tree (tests/install/app.c, public API only) is built three ways
-- pkg-config (libpagoda.so), pkg-config --static (libpagoda.a) and a CMake project with
find_package(pagoda CONFIG) -- and each binary must print the header's version and the same greedy
tokens as the installed `pagoda run --temp 0` on the same prompt."""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "install"
PROMPT = "The capital of France is"
N_TOKENS = 6


def _build_dir():
    if os.environ.get("PAGODA_BUILD"):
        return pathlib.Path(os.environ["PAGODA_BUILD"])
    if os.environ.get("PAGODA_BIN"):
        return pathlib.Path(os.environ["PAGODA_BIN"]).resolve().parent
    return ROOT / "build"


def _header_version():
    h = (ROOT / "include" / "pagoda.h").read_text()
    parts = [int(re.search(rf"#define PAGODA_VERSION_{p} (\d+)", h).group(1)) for p in ("MAJOR", "MINOR", "PATCH")]
    return parts, re.search(r'#define PAGODA_VERSION_STRING "([^"]+)"', h).group(1)


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def _needed(binary):
    """DT_NEEDED entries of an ELF file (readelf), or None without binutils."""
    if not shutil.which("readelf"):
        return None
    out = _run(["readelf", "-d", str(binary)]).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


@pytest.fixture(scope="module")
def tools():
    missing = [t for t in ("cc", "pkg-config", "cmake") if not shutil.which(t)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found: the installed packages cannot be built against here")


@pytest.fixture(scope="module")
def prefix(tools, tmp_path_factory):
    build = _build_dir()
    if not (build / "libpagoda.so").exists() or not (build / "libpagoda.a").exists():
        pytest.skip(f"libpagoda.so / libpagoda.a not built in {build} (cmake --build {build})")
    p = tmp_path_factory.mktemp("prefix")
    _run(["cmake", "--install", str(build), "--prefix", str(p)])
    return p


@pytest.fixture(scope="module")
def model(shared):
    m = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if m.exists():
        return m
    m = shared / "fixtures" / "gguf" / "tiny-llama-q4_0.gguf"
    if not m.exists():
        pytest.skip("neither the built-in model nor the tiny GGUF fixture is present")
    return m


def _parse(out):
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in out.strip().splitlines())
    return lines["version"], lines["prompt"].split(), lines["tokens"].split()


def test_layout(prefix):
    (major, minor, patch), vstr = _header_version()
    lib = prefix / "lib"
    assert (prefix / "bin" / "pagoda").is_file()
    assert sorted(p.name for p in (prefix / "include").iterdir()) == ["pagoda.h"], "only the public header"
    real = lib / f"libpagoda.so.{vstr}"
    assert real.is_file() and not real.is_symlink()
    assert os.readlink(lib / f"libpagoda.so.{major}") == real.name
    assert os.readlink(lib / "libpagoda.so") == f"libpagoda.so.{major}"
    assert (lib / "libpagoda.a").is_file()
    assert (lib / "pkgconfig" / "pagoda.pc").is_file()
    for f in ("pagodaConfig.cmake", "pagodaConfigVersion.cmake", "pagodaTargets.cmake"):
        assert (lib / "cmake" / "pagoda" / f).is_file(), f
    r = _run([str(prefix / "bin" / "pagoda"), "--version"])
    assert vstr in r.stdout + r.stderr
    if shutil.which("readelf"):
        dyn = _run(["readelf", "-d", str(real)]).stdout
        assert f"Library soname: [libpagoda.so.{major}]" in dyn
        # the Debian libraries the modules use are linked into the shared library
        needed = " ".join(_needed(real))
        for dep in ("libjansson", "libpcre2-8", "libmicrohttpd", "libyaml", "libgomp"):
            assert dep in needed, f"{dep} not in NEEDED of libpagoda.so: {needed}"
    if shutil.which("nm"):
        syms = _run(["nm", "-D", "--defined-only", str(real)]).stdout.split("\n")
        names = [s.split()[-1].split("@")[0] for s in syms if s.strip() and s.split()[1] in "TDBRVW"]
        assert "pagoda_engine_create" in names and "pagoda_version_string" in names
        internal = [n for n in names if not n.startswith("pagoda_")]
        assert not internal, f"libpagoda.so exports internal symbols: {internal[:10]}"
    if shutil.which("ar"):
        members = set(_run(["ar", "t", str(lib / "libpagoda.a")]).stdout.split())
        # one object of every module: the archive holds the whole library
        for obj in ("log.c.o", "gguf.c.o", "jinja_eval.c.o", "bpe.c.o", "block_pool.c.o", "scheduler.c.o",
                    "forward.c.o", "engine.c.o", "server.c.o", "version.c.o"):
            assert obj in members, f"{obj} missing from libpagoda.a"
    pc = (lib / "pkgconfig" / "pagoda.pc").read_text()
    assert f"Version: {vstr}" in pc


def _check_app(binary, model, prefix, env=None):
    r = _run([str(binary), str(model), PROMPT, str(N_TOKENS)], env=env, timeout=120)
    version, prompt, tokens = _parse(r.stdout)
    (major, minor, patch), vstr = _header_version()
    assert version == f"{vstr} {major}.{minor}.{patch} {major * 10000 + minor * 100 + patch} library {vstr}"
    assert len(tokens) == N_TOKENS
    ref = _run([str(prefix / "bin" / "pagoda"), "run", "-m", str(model), "--prompt-ids", ",".join(prompt),
                "-n", str(N_TOKENS), "--temp", "0", "--ignore-eos"], timeout=120)
    assert ref.stdout.split() == tokens, f"app {tokens} vs pagoda run {ref.stdout.split()}"
    return prompt, tokens


def _pkg_env(prefix):
    env = dict(os.environ)
    env["PKG_CONFIG_PATH"] = str(prefix / "lib" / "pkgconfig")
    return env


def test_pkg_config_shared(prefix, model, tmp_path):
    env = _pkg_env(prefix)
    flags = _run(["pkg-config", "--cflags", "--libs", "pagoda"], env=env).stdout.split()
    exe = tmp_path / "app_shared"
    _run(["cc", "-std=c11", "-Wall", "-Werror", str(APP / "app.c"), "-o", str(exe), *flags])
    needed = _needed(exe)
    if needed is not None:
        assert "libpagoda.so.0" in needed
    env["LD_LIBRARY_PATH"] = str(prefix / "lib")
    _check_app(exe, model, prefix, env)


def test_pkg_config_static(prefix, model, tmp_path):
    env = _pkg_env(prefix)
    flags = _run(["pkg-config", "--static", "--cflags", "--libs", "pagoda"], env=env).stdout.split()
    assert "-lpagoda" in flags
    # libpagoda.so lies beside libpagoda.a: name the archive so the linker cannot take the .so
    flags = [str(prefix / "lib" / "libpagoda.a") if f == "-lpagoda" else f for f in flags]
    exe = tmp_path / "app_static"
    _run(["cc", "-std=c11", "-Wall", "-Werror", str(APP / "app.c"), "-o", str(exe), *flags])
    needed = _needed(exe)
    if needed is not None:
        assert not any("pagoda" in n for n in needed), needed
    _check_app(exe, model, prefix)


def test_cmake_find_package(prefix, model, tmp_path):
    b = tmp_path / "b"
    _run(["cmake", "-S", str(APP), "-B", str(b), f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release"])
    _run(["cmake", "--build", str(b), "-j2"])
    # pagoda::pagoda: the build tree's RPATH finds libpagoda.so without LD_LIBRARY_PATH
    needed = _needed(b / "app")
    if needed is not None:
        assert "libpagoda.so.0" in needed
        assert not any("pagoda" in n for n in _needed(b / "app_static"))
    p1, t1 = _check_app(b / "app", model, prefix)
    p2, t2 = _check_app(b / "app_static", model, prefix)
    assert (p1, t1) == (p2, t2)
