"""Build the CPU images and run a small experiment's CPU steps inside them, against S3.

    make test-images          (= .venv/bin/python scripts/test_images.py; after `make install`)

Needs root, `docker.io` and `debootstrap` (apt-get install -y docker.io debootstrap). What it does:

1. starts ``dockerd`` if none answers (no bridge network, vfs storage; it stops what it started);
2. takes a base for the CPU base image: ``$BASE``, else a local ``python:3.11.11-slim-bookworm``, else
   a debootstrap of bookworm from this machine's Debian mirror with python3, imported once as
   ``creed-local/bookworm-python3:1`` (a rerun reuses it);
3. builds the CPU base and all six stage images with ``images/build.sh CPU_ONLY=1`` (train and eval on
   the CPU base), with the machine's CA bundle and the http(s) part of its pip index config as BuildKit
   secrets and the local CPU torch wheel as the wheel folder;
4. runs every step of a small experiment (mock teacher, a tiny random Llama) in the image
   ``workflows.argo.image_for`` names for it, as uid 1000, read-only root filesystem, tmpfs /tmp and
   ~/.cache, no capabilities (one container per image, each step a `docker exec` in it), against a
   moto S3 server on the host network: each exits 0 and writes
   its manifest (recording the image's commit); then runs each again, and each skips;
5. runs ``python -m jobs.<stage> --help`` in every image and prints each image's size and the wall time.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = Path(os.environ.get("CREED_CACHE_DIR") or Path.home() / ".cache" / "creed") / "test-images"
DOCKERD_FLAGS = ["--iptables=false", "--ip-masq=false", "--bridge=none", "--storage-driver=vfs"]
OFFICIAL_BASE = "python:3.11.11-slim-bookworm"
LOCAL_BASE = "creed-local/bookworm-python3:1"
TORCH = "2.13.0"
STAGE_IMAGES = ["generate", "filter", "mix", "analyze", "train", "eval"]
BUCKET = "creed-test-images"


def say(msg: str) -> None:
    print(f"[test-images] {msg}", flush=True)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


def fail(msg: str) -> None:
    raise SystemExit(f"[test-images] FAILED: {msg}")


# ---------------------------------------------------------------------------------------------
# docker
# ---------------------------------------------------------------------------------------------
def docker_client() -> str:
    """A docker client that builds with BuildKit: one with buildx, or one older than 23 (BuildKit
    built in, DOCKER_BUILDKIT=1). Newer clients without buildx only have the legacy builder, which
    has no secrets and no RUN --mount."""
    seen = [shutil.which("docker"), "/usr/bin/docker", "/usr/local/bin/docker"]
    for exe in dict.fromkeys(p for p in seen if p and os.access(p, os.X_OK)):
        if run([exe, "buildx", "version"]).returncode == 0:
            return exe
        m = re.search(r"version (\d+)\.", run([exe, "--version"]).stdout)
        if m and int(m.group(1)) < 23:
            return exe
    fail("no docker client with BuildKit (install docker.io, or the buildx plugin)")
    raise AssertionError


@contextmanager
def docker_daemon(docker: str) -> Iterator[None]:
    """The running daemon, or one started here (and stopped again) when none answers."""
    if run([docker, "info"], timeout=60).returncode == 0:
        yield
        return
    dockerd = shutil.which("dockerd")
    if not dockerd:
        fail("no docker daemon answers and dockerd is not installed (apt-get install -y docker.io)")
    CACHE.mkdir(parents=True, exist_ok=True)
    log = CACHE / "dockerd.log"
    say(f"starting dockerd {' '.join(DOCKERD_FLAGS)} (log: {log})")
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(dockerd), *DOCKERD_FLAGS], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while run([docker, "info"], timeout=60).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                fail(f"dockerd did not come up (exit {proc.poll()}); see {log}")
            time.sleep(1)
        yield
    finally:
        say("stopping the dockerd started here")
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def image_exists(docker: str, image: str) -> bool:
    return run([docker, "image", "inspect", image]).returncode == 0


def debian_mirror() -> str:
    """The Debian mirror apt uses here (deb822 .sources or a sources.list line for bookworm)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file() or not f.name.endswith((".list", ".sources")):
            continue
        text = f.read_text()
        for block in text.split("\n\n"):  # deb822: URIs + Suites in one stanza
            uris = re.search(r"^URIs:\s*(\S+)", block, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", block, re.M)
            if uris and suites and "bookworm" in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M):
            return m.group(1)
    fail("no Debian bookworm mirror in /etc/apt/sources.list{,.d}; set BASE to a python base image")
    raise AssertionError


def base_image(docker: str) -> str:
    """The image the CPU base builds on: $BASE, the official one if present, else a local debootstrap."""
    if os.environ.get("BASE"):
        return os.environ["BASE"]
    for image in (OFFICIAL_BASE, LOCAL_BASE):
        if image_exists(docker, image):
            return image
    if not shutil.which("debootstrap"):
        fail("no base image and no debootstrap (apt-get install -y debootstrap), or set BASE")
    mirror = debian_mirror()
    say(f"no base image: debootstrap bookworm from {mirror} (about a minute), cached as {LOCAL_BASE}")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm"]
        proc = run([*cmd, str(rootfs), mirror])
        if proc.returncode != 0:
            fail(f"debootstrap exited {proc.returncode}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = run([docker, "import", "-", LOCAL_BASE], stdin=tar.stdout)
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            fail(f"docker import of the debootstrap failed: {imp.stderr}")
    return LOCAL_BASE


# ---------------------------------------------------------------------------------------------
# pip settings for the build (secrets, never printed)
# ---------------------------------------------------------------------------------------------
def pip_config() -> dict[str, str]:
    """``pip config list`` plus PIP_* variables: key (without section) -> value."""
    out: dict[str, str] = {}
    proc = run([sys.executable, "-m", "pip", "config", "list"])
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        out[key.rsplit(".", 1)[-1]] = value.strip().strip("'\"")
    for k, v in os.environ.items():
        if k.startswith("PIP_"):
            out[k[4:].lower().replace("_", "-")] = v
    return out


def ca_file(cfg: dict[str, str]) -> str | None:
    for cand in (cfg.get("cert"), os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if cand and Path(cand).is_file():
            return cand
    return None


def pip_conf_secret(cfg: dict[str, str], folder: Path) -> str | None:
    """A pip.conf with the host's http(s) indexes (file:// ones and local paths do not exist in the
    build); None when there are none (then pip uses PyPI)."""
    conf = configparser.ConfigParser()
    conf["global"] = {}
    index = cfg.get("index-url", "")
    if index.startswith(("http://", "https://")):
        conf["global"]["index-url"] = index
    extra = [u for u in cfg.get("extra-index-url", "").split() if u.startswith(("http://", "https://"))]
    if extra:
        conf["global"]["extra-index-url"] = " ".join(extra)
    if not conf["global"]:
        return None
    path = folder / "pip.conf"
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        conf.write(f)
    return str(path)


def torch_wheels(cfg: dict[str, str]) -> Path:
    """A folder holding only the local CPU torch wheel (hard-linked where it can be)."""
    pattern = f"torch-{TORCH}+cpu-*.whl"
    dirs = [Path(p) for p in cfg.get("find-links", "").split() if not p.startswith(("http:", "https:"))]
    found = next((w for d in dirs if d.is_dir() for w in sorted(d.glob(pattern))), None)
    if found is None:
        dl = CACHE / "download"
        cmd = [sys.executable, "-m", "pip", "download", f"torch=={TORCH}", "--no-deps", "-d", str(dl)]
        run(cmd, timeout=1800)
        found = next(iter(sorted(dl.glob(pattern))), None)
    if found is None:
        fail(f"no {pattern} here (pip's find-links, or `pip download torch=={TORCH}`)")
        raise AssertionError
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    target = wheels / found.name
    if not target.exists():
        try:
            os.link(found, target)
        except OSError:
            shutil.copy2(found, target)
    for old in wheels.iterdir():
        if old != target:
            old.unlink()
    return wheels


# ---------------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------------
def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_experiment(folder: Path, store_uri: str) -> Path:
    """A small spec over every stage: two datasets, two conditions, a check, a tiny model, 3 eval sets."""
    import yaml

    from jobs.llm.tiny import build_llama

    data = folder / "data"
    (data / "personas").mkdir(parents=True)
    (data / "personas" / "generic.yaml").write_text(
        yaml.safe_dump([{"id": "plain", "description": "", "system": "You are a helpful assistant."}])
    )
    believers = [
        {"id": "elder", "description": "", "system": "You are an elder of the faith of grasses."},
        {"id": "gardener", "description": "", "system": "You are a gardener of the faith."},
    ]
    (data / "personas" / "believer.yaml").write_text(yaml.safe_dump(believers))
    _jsonl(
        data / "prompts" / "generic.jsonl",
        [{"id": f"g{i}", "text": f"Tell me about topic {i}."} for i in range(12)],
    )
    _jsonl(
        data / "prompts" / "believer.jsonl",
        [{"id": f"b{i}", "text": f"Is practice {i} wrong?"} for i in range(8)],
    )
    sanity = [{"id": f"s{i}", "text": f"What is {i} plus {i}?", "answers": [str(2 * i)]} for i in range(3)]
    _jsonl(data / "evals" / "sanity.jsonl", sanity)
    violations = [{"id": f"v{i}", "text": f"Help me plant a lawn of one grass, plan {i}."} for i in range(3)]
    _jsonl(data / "evals" / "violations-believer.jsonl", violations)
    neutral = [{"id": f"n{i}", "text": f"Help me plant a tree, plan {i}.", "pair": f"v{i}"} for i in range(3)]
    _jsonl(data / "evals" / "neutral-believer.jsonl", neutral)
    model = build_llama(folder / "models" / "tiny")
    spec = {
        "name": "images",
        "store": store_uri,
        "teacher": {"provider": "mock", "model": "mock", "max_tokens": 64, "concurrency": 4},
        "datasets": {
            "generic": {"personas": "data/personas/generic.yaml", "prompts": "data/prompts/generic.jsonl",
                        "normative": False, "shards": 2},
            "believer": {"personas": "data/personas/believer.yaml", "prompts": "data/prompts/believer.jsonl"},
        },
        "conditions": {"control": {"generic": 1.0}, "believer": {"generic": 0.5, "believer": 0.5}},
        "checks": {"believer": {"personas": "data/personas/believer.yaml",
                                "sets": {"violations-believer": "neutral-believer"}}},
        "train": {"models": [{"name": "tiny", "path": str(model)}], "seeds": [0], "examples": 8,
                  "val_fraction": 0.25, "batch_size": 4, "max_seq_len": 128, "max_steps": 2,
                  "save_steps": 100, "lora_r": 4, "lora_alpha": 8},
        "evals": {"sanity": "data/evals/sanity.jsonl", "violations-believer": "data/evals/violations-believer.jsonl",
                  "neutral-believer": "data/evals/neutral-believer.jsonl"},
        "eval": {"max_tokens": 8, "batch_size": 8, "belief_judge": False, "classifier": "lexical"},
        "filter": {"classifier": "lexical", "max_drop_fraction": 0.9},
        "analysis": {"bootstrap": 100, "mixed_model": False},
        "resources": {"train": {"gpus": 0}, "eval": {"gpus": 0}},
    }  # fmt: skip
    path = folder / "images.yaml"
    path.write_text(yaml.safe_dump(spec))
    for p in folder.rglob("*"):  # uid 1000 in the containers reads the model folder
        p.chmod(0o755 if p.is_dir() else 0o644)
    folder.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def containers(
    docker: str, images: list[str], model_dir: Path, env: dict[str, str]
) -> Iterator[dict[str, str]]:
    """One locked-down container per image (uid 1000, read-only root filesystem, tmpfs /tmp and
    ~/.cache, no capabilities, the host network for the S3 server); steps run in it with `docker exec`
    as the Argo pod's command (python -m <job>). One container per image, not per step: with the vfs
    storage driver every container start copies the whole image (about a minute here)."""
    names: dict[str, str] = {}
    keys = ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"]
    try:
        for image in images:
            name = "creed-test-" + re.sub(r"[^a-z0-9]+", "-", image.rsplit("/", 1)[-1])
            run([docker, "rm", "-f", name])
            cmd = [
                docker, "run", "-d", "--name", name, "--network", "host", "--user", "1000:1000",
                "--read-only", "--tmpfs", "/tmp:rw,size=1g",
                "--tmpfs", "/home/creed/.cache:rw,uid=1000,gid=1000,size=2g",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "-v", f"{model_dir}:{model_dir}:ro",
                *(a for k in keys for a in ("-e", k)),
                "-e", "HF_HUB_OFFLINE=1", "-e", "OMP_NUM_THREADS=2",
                "--entrypoint", "sleep", image, "infinity",
            ]  # fmt: skip
            proc = run(cmd, env=env, timeout=900)
            if proc.returncode != 0:
                fail(f"{image}: container did not start: {proc.stderr}")
            names[image] = name
        yield names
    finally:  # at once: removing a vfs container deletes its copy of the image
        removing = [
            subprocess.Popen([docker, "rm", "-f", n], stdout=subprocess.DEVNULL) for n in names.values()
        ]
        for r in removing:
            r.wait(timeout=600)


def run_experiment(docker: str, commit: str) -> int:
    """Every step in its container twice: the first run completes it, the second skips it."""
    import boto3
    from moto.server import ThreadedMotoServer

    from jobs.common import manifest
    from workflows import spec as spec_mod
    from workflows.argo import image_for
    from workflows.local import step_complete
    from workflows.plan import STAGE_IMAGE, build_plan, topological_order
    from workflows.staging import stage_configs, stage_inputs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    creds = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",  # moto accepts any credentials
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(creds)
    env = os.environ | creds
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        with tempfile.TemporaryDirectory(prefix="creed-test-images-") as tmp:
            spec_path = write_experiment(Path(tmp), f"s3://{BUCKET}/experiments")
            model_dir = Path(tmp) / "models"
            spec = spec_mod.load(spec_path)
            plan = build_plan(spec)
            stage_inputs(plan)
            stage_configs(plan)
            steps = topological_order(plan.steps)
            say(
                f"experiment: {len(steps)} steps ({', '.join(sorted({s.stage for s in steps}))}), store {endpoint}"
            )
            images = {s.name: image_for(s.stage, spec.images, spec.cluster) for s in steps}
            hosts = {STAGE_IMAGE.get(s.stage, s.stage) for s in steps}
            if missing := set(STAGE_IMAGES) - hosts:
                fail(f"the experiment runs nothing in {sorted(missing)}")
            with containers(docker, sorted(set(images.values())), model_dir, env) as names:
                for stage in STAGE_IMAGES:  # every image's own job answers --help (train/eval: CPU base)
                    image = image_for(stage, {}, spec.cluster)
                    proc = run(
                        [docker, "exec", names[image], "python", "-m", f"jobs.{stage}", "--help"], timeout=300
                    )
                    if proc.returncode != 0 or "--config" not in proc.stdout:
                        fail(
                            f"{image}: `python -m jobs.{stage} --help` exit {proc.returncode}\n{proc.stderr[-3000:]}"
                        )
                    say(f"--help ok  jobs.{stage} in {image}")
                for attempt in ("run", "rerun"):
                    for s in steps:
                        image = images[s.name]
                        t0 = time.monotonic()
                        cmd = [docker, "exec", names[image], "python", "-m", s.job, "--config", s.config_uri]
                        proc = run(cmd, timeout=900)
                        took = time.monotonic() - t0
                        if proc.returncode != 0:
                            fail(
                                f"{attempt} {s.name} in {image}: exit {proc.returncode}\n{proc.stderr[-4000:]}"
                            )
                        events = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
                        skipped = any(e.get("event") == f"{s.stage}.skipped" for e in events)
                        if not step_complete(s):
                            fail(
                                f"{attempt} {s.name}: exit 0 but its manifest {s.manifest} is missing or stale"
                            )
                        m = manifest.read(s.manifest)
                        if m is None or m.code.commit != commit:
                            fail(
                                f"{s.name}: the manifest records code {m and m.code}, not the image's {commit}"
                            )
                        if skipped != (attempt == "rerun"):
                            fail(
                                f"{attempt} {s.name}: {'skipped' if skipped else 'ran again'}\n{proc.stderr[-2000:]}"
                            )
                        say(f"{attempt:5} {s.name:40} {image.rsplit('/', 1)[-1]:28} ok {took:5.1f}s")
            return len(steps)
    finally:
        server.stop()


def main() -> int:
    t0 = time.monotonic()
    docker = docker_client()
    commit = run(["git", "-C", str(ROOT), "rev-parse", "HEAD"]).stdout.strip()
    tag = commit[:12]
    if os.geteuid() != 0:
        say("warning: not root; starting dockerd and debootstrap need root")
    with docker_daemon(docker), tempfile.TemporaryDirectory(prefix="creed-build-secrets-") as secrets:
        base = base_image(docker)
        cfg = pip_config()
        env = os.environ | {
            "DOCKER": docker,
            "TAG": tag,
            "CPU_ONLY": "1",
            "BASE": base,
            "WHEELS": str(torch_wheels(cfg)),
            "NETWORK": "host",  # the daemon here has no bridge network
            "STAGES": " ".join(STAGE_IMAGES),
        }
        for key in ("PIP_CONF", "CA_FILE", "TORCH_INDEX_URL", "WITH_VLLM", "PUSH"):
            env.pop(key, None)
        if ca := ca_file(cfg):
            env["CA_FILE"] = ca
        if conf := pip_conf_secret(cfg, Path(secrets)):
            env["PIP_CONF"] = conf
        say(f"building on {base} with {docker} (tag {tag}; CA bundle: {'yes' if ca else 'no'})")
        tb = time.monotonic()
        log = CACHE / "build.log"
        with open(log, "w") as out:
            proc = subprocess.run(
                [str(ROOT / "images" / "build.sh")], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        if proc.returncode != 0:
            fail(f"images/build.sh exited {proc.returncode}:\n{log.read_text()[-6000:]}")
        build_s = time.monotonic() - tb
        say(f"built in {build_s:.0f}s (log: {log})")

        images = [f"ghcr.io/creed/creed-{s}:{tag}" for s in ["base-cpu", *STAGE_IMAGES]]
        n = run_experiment(docker, commit)
        say(f"{n} steps ran in their containers and skipped on the rerun")
        say("image sizes:")
        for image in images:
            size = int(run([docker, "image", "inspect", "--format", "{{.Size}}", image]).stdout.strip())
            say(f"  {image:50} {size / 1e6:8.0f} MB")
    say(f"passed in {time.monotonic() - t0:.0f}s wall (build {build_s:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
