"""Render the Helm chart with the real helm binary (deploy/helm/install-helm.sh puts the
pinned v3.17.1 into .venv/bin; CI runs it from .ci/run)."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "rainbridge"
SEEDS = Path(__file__).resolve().parent / "data" / "seed-values"
BASE = SEEDS / "cluster-values.yaml"
# Full values files render alone; the others are fragments of one concern (discovery,
# region, ...) that the seed layers on the basic cluster file (-f cluster-values.yaml -f it).
FULL = {"cluster-values.yaml", "ha-production-values.yaml"}
SEED_FILES = sorted(p.name for p in SEEDS.glob("*.yaml"))


def helm_binary() -> str:
    for candidate in (Path(sys.executable).parent / "helm", ROOT / ".venv" / "bin" / "helm"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("helm")
    if found:
        return found
    result = subprocess.run([str(ROOT / "deploy" / "helm" / "install-helm.sh"), str(Path(sys.executable).parent)],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"no helm binary and deploy/helm/install-helm.sh failed:\n{result.stderr}")
    return str(Path(sys.executable).parent / "helm")


def values_args(name: str) -> list[str]:
    files = [SEEDS / name] if name in FULL else [BASE, SEEDS / name]
    return [arg for f in files for arg in ("-f", str(f))]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "HELM_CACHE_HOME": "/tmp/rainbridge-helm-cache"})
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(*values: str, sets: tuple[str, ...] = (), release: str = "bifrost", namespace: str = "default") -> list[dict]:
    """Every object the chart renders for these values files (paths or seed names). Seed
    names alone render once per session (the chart and the seeds do not change during a
    run); each caller gets its own copy, so no test sees another's edits."""
    if all("/" not in v for v in values):
        return copy.deepcopy(_render_seeds(values, tuple(sets), release, namespace))
    return _render(values, sets, release, namespace)


@functools.cache
def _render_seeds(values: tuple[str, ...], sets: tuple[str, ...], release: str, namespace: str) -> list[dict]:
    return _render(values, sets, release, namespace)


def _render(values: tuple[str, ...], sets: tuple[str, ...], release: str, namespace: str) -> list[dict]:
    args: list[str] = []
    for v in values:
        args += values_args(v) if "/" not in v else ["-f", v]
    for s in sets:
        args += ["--set", s]
    out = helm("template", release, str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {[(o['kind'], o['metadata']['name']) for o in objects]}"
    return found[0]


def config_json(objects: list[dict]) -> str:
    return one(objects, "Secret", "bifrost-config")["stringData"]["config.json"]
