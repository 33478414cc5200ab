"""deploy/: Dockerfiles, the systemd unit, Kubernetes manifests and the Helm chart, checked without
docker, helm or a cluster: every YAML parses; probes ask /health on the container's port; the
pods get longer than the server's drain to stop; the HPA scales the Deployment on a queue metric
that src/serve/metrics.c really exports; the PDB and the Service select the Deployment's pods; the
Dockerfiles install the Debian packages scripts/setup.sh installs; the chart's templates only use
values that values.yaml defines."""
import configparser
import pathlib
import re

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (scripts/requirements-test.txt)")

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CHART = DEPLOY / "helm" / "pagoda"


def _default_grace():
    """pagoda serve's default --grace, from its source"""
    src = (ROOT / "tools" / "cmd_serve.c").read_text()
    m = re.search(r"float grace = ([0-9.]+);", src)
    assert m, "tools/cmd_serve.c: the default of --grace not found"
    h = re.search(r"--grace SECONDS .*\(default ([0-9.]+)\)", src)
    assert h and float(h.group(1)) == float(m.group(1)), "--grace help and default disagree"
    return float(m.group(1))


def _exported_metrics():
    """metric names GET /metrics writes: the prefixed common ones and the literal ones"""
    src = (ROOT / "src" / "serve" / "metrics.c").read_text()
    names = set()
    for base in re.findall(r'NAME\("(\w+)"\)', src):
        names |= {"pagoda:" + base, "vllm:" + base}
    names |= set(re.findall(r'"((?:pagoda|vllm):\w+)"', src))
    assert "pagoda:num_requests_waiting" in names, sorted(names)
    return names


def _docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s_objects(variant):
    objs = []
    for f in sorted((K8S / "common").glob("*.yaml")) + sorted((K8S / variant).glob("*.yaml")):
        for d in _docs(f):
            if "kind" in d:
                objs.append(d)
    return objs


def _one(objs, kind):
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def test_every_yaml_parses():
    files = [f for f in DEPLOY.rglob("*.yaml") if "templates" not in f.parts] + list(DEPLOY.rglob("*.yml"))
    assert len(files) >= 8
    for f in files:
        assert _docs(f), f"{f} is empty"


def _check_pod(spec, grace_default, prestop_default=0):
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    args = [str(a) for a in c["args"]]
    port = int(args[args.index("--port") + 1])
    assert port in ports.values(), f"--port {port} is not a container port {ports}"
    assert "0.0.0.0" == args[args.index("--host") + 1], "the server must listen beyond the pod's loopback"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/health", probe
        p = get["port"]
        assert (ports[p] if isinstance(p, str) else p) == port, f"{probe} asks port {p}, the server listens on {port}"
    grace = float(args[args.index("--grace") + 1]) if "--grace" in args else grace_default
    prestop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = float(prestop[1]) if prestop[:1] == ["sleep"] else prestop_default
    assert pod["terminationGracePeriodSeconds"] > grace + sleep, \
        f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} <= drain {grace} + preStop {sleep}"
    assert pod["terminationGracePeriodSeconds"] > grace_default
    res = c["resources"]
    assert res["requests"]["cpu"] and res["limits"]["memory"]
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] != 0
    return c


def _check_tp_pod(pod, c, n):
    """a pod of n tensor-parallel ranks, threads of the one server process (the image's entrypoint
    unchanged), with a memory-backed /dev/shm for NCCL"""
    assert "command" not in c
    args = [str(a) for a in c["args"]]
    assert args[args.index("--tensor-parallel-size") + 1] == str(n)
    for name in ("Dockerfile", "Dockerfile.cuda"):  # the multi-process alternative ships too
        assert "COPY deploy/pagoda-mpi-serve /usr/local/bin/pagoda-mpi-serve" in (DEPLOY / name).read_text()
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert any(v["name"] == "dshm" and v["emptyDir"].get("medium") == "Memory" for v in pod["volumes"])


@pytest.mark.parametrize("variant", ["cpu", "gpu", "gpu-tp2"])
def test_k8s_manifests(variant):
    grace = _default_grace()
    objs = _k8s_objects(variant)
    dep = _one(objs, "Deployment")
    c = _check_pod(dep["spec"], grace)
    if variant.startswith("gpu"):
        # one replica per GPU, or per 2 GPUs with tensor parallelism over them
        n = 2 if variant == "gpu-tp2" else 1
        assert c["resources"]["limits"]["nvidia.com/gpu"] == n
        assert c["resources"]["requests"].get("nvidia.com/gpu", n) == n
        assert "cuda" in c["args"]
        if n > 1:
            _check_tp_pod(dep["spec"]["template"]["spec"], c, n)
        else:
            assert "--tensor-parallel-size" not in c["args"]
    else:
        assert "nvidia.com/gpu" not in c["resources"]["limits"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = dep["spec"]["selector"]["matchLabels"]
    assert sel.items() <= pod_labels.items()

    svc = _one(objs, "Service")
    assert svc["spec"]["selector"].items() <= pod_labels.items(), "the Service selects no pod"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for p in svc["spec"]["ports"]:
        assert p["targetPort"] in ports or p["targetPort"] in ports.values()

    pdb = _one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), "the PDB selects no pod"

    exported = _exported_metrics()
    hpa = _one(objs, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"])
    (m,) = hpa["spec"]["metrics"]
    assert m["type"] == "Pods"
    hpa_metric = m["pods"]["metric"]["name"]
    # the Prometheus adapter rule that names this pods metric reads a series /metrics exports
    rules = _docs(K8S / "common" / "prometheus-adapter-rules.yaml")[0]["rules"]["custom"]
    rule = [r for r in rules if r["name"]["as"] == hpa_metric]
    assert rule, f"no adapter rule makes {hpa_metric}"
    series = re.match(r"'?([\w:]+)", rule[0]["seriesQuery"]).group(1)
    assert series in exported and "num_requests_waiting" in series
    assert re.fullmatch(rule[0]["name"]["matches"], series)

    keda = _one(objs, "ScaledObject")
    assert keda["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    q = keda["spec"]["triggers"][0]["metadata"]["query"]
    assert any(n in q for n in exported if "num_requests_waiting" in n)
    assert hpa["spec"]["maxReplicas"] == keda["spec"]["maxReplicaCount"]

    claim = dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert _one(objs, "PersistentVolumeClaim")["metadata"]["name"] == claim


def _setup_packages():
    src = (ROOT / "scripts" / "setup.sh").read_text()
    m = re.search(r"pkgs=\(([^)]*)\)", src, re.S)
    return set(m.group(1).split())


def _apt_stages(dockerfile):
    """the apt-get install package lists of each stage, in order"""
    text = dockerfile.read_text().replace("\\\n", " ")
    stages = []
    for line in text.splitlines():
        if line.startswith("FROM "):
            stages.append((line.split()[1], set()))
        m = re.search(r"apt-get install ([^&]*)", line)
        if m:
            stages[-1][1].update(w for w in m.group(1).split() if not w.startswith("-"))
    return stages


# the runtime library of each -dev package the build installs (Debian bookworm / Ubuntu jammy names)
RUNTIME_OF = {"libjansson-dev": "libjansson4", "libpcre2-dev": "libpcre2-8-0", "libmicrohttpd-dev": "libmicrohttpd12",
              "libcurl4-openssl-dev": "libcurl4", "libyaml-dev": "libyaml-0-2", "libopenmpi-dev": "libopenmpi3"}


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile(name):
    f = DEPLOY / name
    text = f.read_text()
    stages = _apt_stages(f)
    assert len(stages) == 2, "multi-stage: build, then runtime"
    (build_img, build_pkgs), (run_img, run_pkgs) = stages
    setup = _setup_packages()
    # the build installs what setup.sh installs for the C build (not the test tools: clang,
    # chromium, python), and nothing setup.sh does not know
    assert build_pkgs <= setup, f"not in scripts/setup.sh: {build_pkgs - setup}"
    c_build = {p for p in setup if p.endswith("-dev") and p not in ("libomp-dev", "libclang-rt-dev")
               and not p.startswith("golang-")}  # the Go libraries of the chart renderer (tests only)
    c_build |= {"build-essential", "cmake", "pkg-config", "libjs-marked", "libjs-highlight.js"}
    assert c_build <= build_pkgs, f"build stage lacks {c_build - build_pkgs}"
    # the runtime stage: the shared libraries only (and curl for HEALTHCHECK)
    assert not any(p.endswith("-dev") for p in run_pkgs), run_pkgs
    want = {RUNTIME_OF[p] for p in build_pkgs if p in RUNTIME_OF} | {"libgomp1", "curl"}
    assert want <= run_pkgs, f"runtime stage lacks {want - run_pkgs}"
    assert not run_pkgs & {"build-essential", "cmake", "libjs-marked", "libjs-highlight.js"}
    if name == "Dockerfile":
        assert build_img.startswith("debian:bookworm") and run_img.startswith("debian:bookworm")
        assert "-DPAGODA_CUDA=OFF" in text
    else:
        assert build_img.startswith("nvidia/cuda:") and "-devel-" in build_img
        assert run_img.startswith("nvidia/cuda:") and "-runtime-" in run_img
        assert "-DPAGODA_CUDA=ON" in text
    assert re.search(r"^USER (?!0\b|root\b)\S+", text, re.M), "runs as a non-root user"
    assert re.search(r"^EXPOSE 8080\b", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*127\.0\.0\.1:8080/health", text, re.M)
    assert re.search(r'^ENTRYPOINT \["pagoda", "serve"\]', text, re.M)
    cmd = re.search(r"^CMD (\[.*\])", text, re.M).group(1)
    assert '"--host", "0.0.0.0"' in cmd and '"--port", "8080"' in cmd
    # every COPY source exists (the build context is the repository root)
    for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"


def test_systemd_unit():
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read_string((DEPLOY / "systemd" / "pagoda.service").read_text())
    s = cp["Service"]
    assert s["Type"] == "simple"
    assert s.get("DynamicUser") == "yes" or s.get("User") not in (None, "root")
    assert s["EnvironmentFile"].lstrip("-") == "/etc/pagoda/pagoda.env"
    assert "${PAGODA_MODEL}" in s["ExecStart"] and "serve" in s["ExecStart"]
    assert s["Restart"] == "on-failure"
    env = dict(line.split("=", 1) for line in (DEPLOY / "systemd" / "pagoda.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert "PAGODA_MODEL" in env
    grace = max(_default_grace(), float(env.get("PAGODA_GRACE", 0)))
    assert float(s["TimeoutStopSec"]) > grace
    for opt in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectKernelTunables", "RestrictAddressFamilies"):
        assert opt in s, f"hardening option {opt} missing"
    assert cp["Install"]["WantedBy"] == "multi-user.target"


def _value_paths(d, prefix=()):
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _value_paths(v, prefix + (k,))


def test_helm_chart():
    chart = _docs(CHART / "Chart.yaml")[0]
    assert chart["apiVersion"] == "v2" and chart["name"] == "pagoda"
    h = (ROOT / "include" / "pagoda.h").read_text()
    assert chart["appVersion"] == re.search(r'#define PAGODA_VERSION_STRING "([^"]+)"', h).group(1)
    values = _docs(CHART / "values.yaml")[0]
    defined = {".".join(p) for p in _value_paths(values)}
    templates = list((CHART / "templates").glob("*"))
    kinds = set()
    for t in templates:
        text = t.read_text()
        # actions balanced, blocks closed
        assert text.count("{{") == text.count("}}"), t.name
        opens = len(re.findall(r"\{\{-?\s*(?:if|with|range|define)\b", text))
        ends = len(re.findall(r"\{\{-?\s*end\b", text))
        assert opens == ends, f"{t.name}: {opens} blocks opened, {ends} closed"
        for ref in re.findall(r"\.Values\.([\w.]+)", text):
            assert ref in defined, f"{t.name}: .Values.{ref} is not in values.yaml"
        kinds |= set(re.findall(r"^kind: (\w+)", text, re.M))
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    dep = (CHART / "templates" / "deployment.yaml").read_text()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert re.search(probe + r":\s*\n\s*httpGet:\s*\n\s*path: /health\s*\n\s*port: http\b", dep), probe
    assert "containerPort: {{ .Values.server.port }}" in dep and "- --port\n            - {{ .Values.server.port | quote }}" in dep
    assert "nvidia.com/gpu" in dep
    # the defaults leave the drain its time
    grace = max(_default_grace(), values["server"]["grace"])
    assert values["terminationGracePeriodSeconds"] > grace + values["preStopSleepSeconds"]
    assert values["autoscaling"]["metricName"] == "pagoda_num_requests_waiting"
    # the chart's pod selector matches its Service's and PDB's (one helper for all three)
    for name in ("service.yaml", "pdb.yaml", "deployment.yaml"):
        assert 'include "pagoda.selectorLabels"' in (CHART / "templates" / name).read_text()
    assert 'name: {{ include "pagoda.fullname" . }}' in (CHART / "templates" / "hpa.yaml").read_text()


# ---- against the Kubernetes schemas (PyPI kubernetes-validate) ----

def _kv():
    return pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed "
                               "(scripts/requirements-test.txt)")


def _validate(kv, doc, where):
    """strict: unknown fields are errors too. Custom resources (KEDA's ScaledObject) have no schema
    in kubernetes-validate and are skipped."""
    try:
        kv.validate(doc, kv.latest_version(), strict=True)
    except kv.SchemaNotFoundError:
        assert "." in doc["apiVersion"].split("/")[0], f"{where}: no schema for core kind {doc['kind']}"
        return False
    except kv.ValidationError as e:
        raise AssertionError(f"{where}: {doc['kind']} {doc['metadata'].get('name')}: {e}") from None
    return True


@pytest.mark.parametrize("variant", ["cpu", "gpu", "gpu-tp2"])
def test_k8s_manifests_validate(variant):
    kv = _kv()
    kinds = {o["kind"] for o in _k8s_objects(variant) if _validate(kv, o, variant)}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "PersistentVolumeClaim"} <= kinds


HELM_RENDER = ROOT / "tests" / "helpers" / "helm_render"


@pytest.fixture(scope="module")
def helm_render(tmp_path_factory):
    """helm itself is not packaged for Debian; tests/helpers/helm_render renders the chart as
    `helm template` does (Go text/template with sprig and helm's include/toYaml/fail/required/tpl),
    built from Debian's golang-go and golang-github-masterminds-sprig-dev"""
    import shutil
    import subprocess
    go = shutil.which("go")
    if not go or not pathlib.Path("/usr/share/gocode/src/github.com/Masterminds/sprig").is_dir():
        pytest.skip("no go / sprig (apt-get install golang-go golang-github-masterminds-sprig-dev "
                    "golang-gopkg-yaml.v3-dev): the chart is not rendered")
    out = tmp_path_factory.mktemp("helm") / "helm_render"
    env = {"PATH": "/usr/bin:/bin", "GO111MODULE": "off", "GOPATH": "/usr/share/gocode",
           "GOCACHE": str(out.parent / "cache"), "HOME": str(out.parent)}
    r = subprocess.run([go, "build", "-o", str(out), "."], cwd=HELM_RENDER, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr

    def render(*sets):
        args = [str(out), str(CHART), "--release", "pagoda"]
        for kv in sets:
            args += ["--set", kv]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        return r
    return render


@pytest.mark.parametrize("sets,gpus,tp", [
    ((), 0, 1),
    (("gpu.enabled=true", "image.tag=cuda"), 1, 1),
    (("gpu.enabled=true", "image.tag=cuda", "tensorParallelSize=2"), 2, 2),
    (("tensorParallelSize=2", "autoscaling.enabled=false", "podDisruptionBudget.enabled=false"), 0, 2),
])
def test_helm_rendered_output_validates(helm_render, sets, gpus, tp):
    kv = _kv()
    r = helm_render(*sets)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    for d in docs:
        assert _validate(kv, d, f"helm template {' '.join(sets)}")
    kinds = [d["kind"] for d in docs]
    autoscaled = "autoscaling.enabled=false" not in sets
    assert sorted(kinds) == sorted(["Deployment", "Service"] + (["HorizontalPodAutoscaler",
                                   "PodDisruptionBudget"] if autoscaled else []))
    dep = _one(docs, "Deployment")
    c = _check_pod(dep["spec"], _default_grace())
    assert c["resources"]["limits"].get("nvidia.com/gpu", 0) == gpus
    if tp > 1:
        _check_tp_pod(dep["spec"]["template"]["spec"], c, tp)
    else:
        assert "--tensor-parallel-size" not in c["args"]


def test_helm_render_refuses_a_short_grace(helm_render):
    # the chart's own check: the pod must outlive the drain
    r = helm_render("terminationGracePeriodSeconds=10")
    assert r.returncode != 0 and "terminationGracePeriodSeconds must exceed" in r.stderr
