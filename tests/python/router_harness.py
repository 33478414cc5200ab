"""Routers in front of pagoda workers, for tests/python/test_routers.py and bench/router_compare.py:
sglang-router and vllm-router (PyPI, the venv's bin) and nginx (deploy/routers/*.conf with the
workers' ports written in), each a process on a free loopback port with its output in a file."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: sglang-router, vllm-router


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def program(name):
    p = BIN / name
    return str(p) if p.exists() else shutil.which(name)


def nginx_exe():
    return program("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


class Router:
    """A router process on a free port; stdout+stderr to a file shown on failure."""

    def __init__(self, cmd, port, cwd=None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.prefix = None  # nginx: its temporary prefix directory
        self.log = tempfile.NamedTemporaryFile(prefix="router-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd,
                                     start_new_session=True)

    def text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()[-6000:]

    def client(self):
        import openai
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", timeout=120, max_retries=0)

    def chat(self, model, content, max_tokens=1, timeout=60):
        """One chat request through the router; raises on an error status or a transport error."""
        body = json.dumps({"model": model, "max_tokens": max_tokens,
                           "messages": [{"role": "user", "content": content}]}).encode()
        req = urllib.request.Request(self.url + "/v1/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def wait_ready(self, model, timeout=60):
        """Until a chat request through the router succeeds (workers registered and healthy)."""
        deadline, err = time.time() + timeout, None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited with {self.proc.returncode}:\n{self.text()}")
            try:
                self.chat(model, "ready?")
                return
            except (OSError, http.client.HTTPException, ValueError) as e:  # not up yet
                err = e
                time.sleep(0.3)
        raise RuntimeError(f"router not ready in {timeout} s ({err}):\n{self.text()}")

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        os.unlink(self.log.name)
        if self.prefix:
            shutil.rmtree(self.prefix, ignore_errors=True)


def sglang_cmd(exe, ws, port, *extra, policy="cache_aware"):
    return [exe, "launch", "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
            "--prometheus-port", str(free_port()), "--prometheus-host", "127.0.0.1", "--log-level", "warn",
            "--worker-urls", *[w.url for w in ws], *extra]


def vllm_cmd(exe, ws, port, *extra, policy="cache_aware"):
    return [exe, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
            "--prometheus-port", str(free_port()), "--prometheus-host", "127.0.0.1", "--log-level", "warning",
            "--worker-urls", *[w.url for w in ws], *extra]


HEALTH_FAST = ["--health-check-interval-secs", "1", "--health-failure-threshold", "1",
               "--health-check-timeout-secs", "2"]

_SERVERS = re.compile(r"(?:^[ \t]*server 127\.0\.0\.1:800\d[^\n]*\n)+", re.M)
_BALANCE = re.compile(r"^[ \t]*(?:least_conn|hash [^;\n]*);[ \t]*\n", re.M)


def nginx_conf(name, ws, port, prefix, balance=None):
    """deploy/routers/NAME with one `server` line per worker, listening on port, written to
    PREFIX/nginx.conf. balance: the upstream's balancing directive instead of the file's ("" for
    nginx's default, round robin; e.g. "hash $http_x_session_id consistent;")."""
    text = (ROOT / "deploy" / "routers" / name).read_text()
    m = _SERVERS.search(text)
    if not m:
        raise ValueError(f"{name}: no 'server 127.0.0.1:800N' lines to replace")
    indent = re.match(r"[ \t]*", m.group(0)).group(0)
    lines = "".join(f"{indent}server 127.0.0.1:{w.port} max_fails=1 fail_timeout=10s;\n" for w in ws)
    text = text[:m.start()] + lines + text[m.end():]
    if balance is not None:
        text, n = _BALANCE.subn(f"{indent}{balance}\n" if balance else "", text)
        if n != 1:
            raise ValueError(f"{name}: expected one balancing directive, found {n}")
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};").replace("worker_processes auto;", "worker_processes 1;")
    if os.geteuid() == 0:  # workers as root: the temporary prefix is ours
        text = "user root;\n" + text
    path = Path(prefix) / "nginx.conf"
    path.write_text(text)
    return path


def start_nginx(name, ws, balance=None, exe=None):
    """nginx with deploy/routers/NAME in front of ws; None when nginx is not installed."""
    exe = exe or nginx_exe()
    if not exe:
        return None
    prefix = tempfile.mkdtemp(prefix="nginx-pagoda-")
    port = free_port()
    conf = nginx_conf(name, ws, port, prefix, balance)
    r = Router([exe, "-p", prefix + "/", "-c", str(conf), "-g", "daemon off;"], port)
    r.prefix = prefix
    return r
