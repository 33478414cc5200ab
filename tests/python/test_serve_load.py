"""Many streams plus idle connections against the real server (scripts/stress-serve.py, a smaller
count than its default figure of 256 streams + 1,000 idle connections for 60 s): no error other
than clean 429/503, /health answers throughout, gauges back to idle afterwards."""
import json
import subprocess
import sys
from pathlib import Path

from serve_harness import running

ROOT = Path(__file__).resolve().parents[2]


def test_streams_and_idle_connections(pagoda_bin, builtin_model, tmp_path):
    for s in running(pagoda_bin, builtin_model, "--kv-mem", "128M", "-t", "2", "--max-waiting", "64"):
        out = tmp_path / "stress.json"
        r = subprocess.run([sys.executable, str(ROOT / "scripts" / "stress-serve.py"), "--url", s.url,
                            "--streams", "48", "--idle", "300", "--duration", "12", "--max-tokens", "16",
                            "--pid", str(s.proc.pid), "--json", str(out)],
                           capture_output=True, text=True, timeout=300)
        res = json.loads(out.read_text()) if out.exists() else {}
        assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:], s.text()[-2000:])
        assert res["completed"] > 0 and res["unclean_errors"] == 0, res
        assert res["health_ok"] == res["health_checks"] and res["health_worst_s"] < 5, res
        assert res["idle_again"], res
