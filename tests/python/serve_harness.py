"""Starts `pagoda serve` as a subprocess on a free port for the test_serve*.py files.

The server is asked for port 0 and its "serving ... at http://HOST:PORT/" line on stderr gives the
port it bound, so parallel runs never race for a port. stderr goes to a file (the per-request log
lines must never block the server on a full pipe) and is shown when a test fails."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


MPIRUN = shutil.which("mpirun")


def mpi_launcher(n):
    """The mpirun command for an n-rank job on this machine (None without Open MPI)."""
    return [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(n)] if MPIRUN else None


def mpi_missing(pagoda_bin):
    """Why tensor/pipeline parallelism over MPI cannot run here (None when it can): no mpirun, or a
    pagoda built without MPI (its `--version` says which)."""
    if MPIRUN is None:
        return "mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
    r = subprocess.run([str(pagoda_bin), "--version"], capture_output=True, text=True, timeout=60)
    return None if "\nmpi: built" in r.stdout else "pagoda was built without MPI"


def mpi_ranks(launcher_pid):
    """{rank: pid} of the processes mpirun started (its children; the rank from their environment)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != launcher_pid:
                continue
            with open(f"/proc/{d}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if b"OMPI_COMM_WORLD_RANK" in env:
            out[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(d)
    return out


def pid_alive(pid):
    """True while pid runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Server:
    def __init__(self, pagoda_bin, model, *args, env=None, startup_timeout=90, positional=False, launcher=(),
                 n_ranks=1):
        """launcher: a command the server runs under (mpirun ... for tensor parallelism) whose n_ranks
        processes are found as self.ranks ({rank: pid}); stop() then signals rank 0, the server."""
        self.n_ranks = n_ranks
        self.ranks = {}
        self.log = tempfile.NamedTemporaryFile(prefix="pagoda-serve-", suffix=".log", delete=False)
        model_args = [str(model)] if positional else ["-m", str(model)]  # `pagoda serve MODEL` or -m MODEL
        cmd = [*map(str, launcher), str(pagoda_bin), "serve", *model_args, "--port", "0", *map(str, args)]
        full_env = dict(os.environ)
        full_env.pop("PAGODA_API_KEY", None)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        self.url = None
        deadline = time.time() + startup_timeout
        while time.time() < deadline:
            m = re.search(r"serving '([^']*)' at (http://\S+?)/ ", self.text())
            if m:
                self.model_name, self.url = m.group(1), m.group(2)
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"pagoda serve exited with {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.05)
        if not self.url:
            self.kill()
            raise RuntimeError(f"pagoda serve did not start in {startup_timeout} s:\n{self.text()}")
        self.port = int(self.url.rsplit(":", 1)[1])
        while launcher and len(self.ranks) < n_ranks and time.time() < deadline:
            self.ranks = mpi_ranks(self.proc.pid)
            time.sleep(0.05)
        if launcher and sorted(self.ranks) != list(range(n_ranks)):
            self.kill()
            raise RuntimeError(f"the {n_ranks} ranks under {launcher[0]} were not found:\n{self.text()}")
        while time.time() < deadline:  # /health answers once the daemon runs (it already does)
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("pagoda serve: /health never answered:\n" + self.text())

    def text(self):
        with open(self.log.name, "r", errors="replace") as f:
            return f.read()

    def request(self, method, path, body=None, headers=None, timeout=60):
        """Returns (status, headers, bytes); HTTP errors are returned, not raised."""
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def metrics(self):
        status, _, body = self.get("/metrics")
        assert status == 200
        return parse_prometheus(body.decode())

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            if self.ranks:  # rank 0 drains, then its engine stops the other ranks and mpirun exits
                try:
                    os.kill(self.ranks[0], sig)
                except ProcessLookupError:
                    pass
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        self.stop()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


def running(pagoda_bin, model, *args, **kw):
    """For fixtures (`yield from running(...)`): a started server that must exit 0 on SIGTERM."""
    s = Server(pagoda_bin, model, *args, **kw)
    try:
        yield s
        rc = s.stop()
        assert rc == 0, s.text()
    finally:
        s.close()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """Prometheus text format 0.0.4 -> {name: [(labels dict, value)]}, plus {"#TYPE": {name: type}}.
    Raises AssertionError on any line that is not a comment or a well-formed sample."""
    out = {"#TYPE": {}}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            assert len(parts) >= 3 and parts[1] in ("HELP", "TYPE"), f"bad comment line: {line!r}"
            if parts[1] == "TYPE":
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                out["#TYPE"][parts[2]] = parts[3]
            continue
        m = _SAMPLE.match(line)
        assert m, f"bad sample line: {line!r}"
        labels = dict(_LABEL.findall(m.group(3) or ""))
        value = float(m.group(4))
        out.setdefault(m.group(1), []).append((labels, value))
    return out


def metric(parsed, name, **labels):
    """Sum of the samples of name whose labels include the given ones (0 if none)."""
    return sum(v for l, v in parsed.get(name, []) if all(l.get(k) == str(x) for k, x in labels.items()))


def sse_events(lines):
    """Decoded JSON of each `data:` line of an SSE stream (iterable of str lines); "[DONE]" kept as is."""
    out = []
    for line in lines:
        if line.startswith("data:"):
            data = line[5:].strip()
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def dechunk_body(body):
    """The payload of a body sent with Transfer-Encoding: chunked (bytes after the head)."""
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += body[:size]
        body = body[size + 2:]
    return out
