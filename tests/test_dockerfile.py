"""The Dockerfile cannot be built here (no registry for base images), so what it must agree
on is checked against the things it serves: the chart (user, ports, app dir, entrypoint
arguments), the discovery registry (each type's client library is an extra the image
installs) and pyproject (every extra it names exists)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from helm_support import one, render
from rainbridge.cluster.discovery.registry import EXTRAS

ROOT = Path(__file__).resolve().parent.parent
LINES = [line.strip() for line in re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text()).splitlines()]
STAGES: list[list[str]] = []
for line in LINES:
    if line.startswith("FROM "):
        STAGES.append([])
    if STAGES and line and not line.startswith("#"):
        STAGES[-1].append(line)
FINAL = STAGES[-1]


def instruction(name: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in FINAL if line.split(" ", 1)[0] == name]


def image_extras() -> set[str]:
    (arg,) = [a for a in instruction("ARG") if a.startswith("EXTRAS=")]
    return set(arg.removeprefix("EXTRAS=").split(","))


def test_the_image_installs_every_discovery_client_and_only_extras_that_exist():
    needed = {extra for extra in EXTRAS.values() if extra}
    assert needed <= image_extras(), f"missing: {needed - image_extras()}"
    defined = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert image_extras() <= defined - {"test"}


def test_the_final_stage_is_slim_python_without_build_tools_running_as_the_charts_user():
    assert re.fullmatch(r"FROM python:\$\{PYTHON_VERSION\}-slim", FINAL[0])
    text = " ".join(FINAL).lower()
    for tool in ("apt-get", "gcc", "build-essential", "make ", "git "):
        assert tool not in text, tool
    (user,) = instruction("USER")
    uid, gid = (int(x) for x in user.split(":"))
    pod = one(render("cluster-values.yaml"), "Deployment")["spec"]["template"]["spec"]
    assert (uid, gid) == (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"])
    assert uid != 0


def test_ports_entrypoint_and_app_dir_match_the_chart():
    objects = render("cluster-values.yaml")
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    exposed = {p for e in instruction("EXPOSE") for p in e.split()}
    wanted = {f"{p['containerPort']}/{p['protocol'].lower()}" for p in container["ports"]}
    assert wanted <= {p if "/" in p else f"{p}/tcp" for p in exposed}
    (entrypoint,) = instruction("ENTRYPOINT")
    assert entrypoint == '["rainbridge"]'
    assert container["args"][0] == "serve"  # the chart's args follow that entrypoint
    (cmd,) = instruction("CMD")
    assert cmd.startswith('["serve"')
    app_dir = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--app-dir="))
    assert f'"{app_dir}"' in cmd and app_dir in {m["mountPath"] for m in container["volumeMounts"]}
    workdir = instruction("WORKDIR")[-1]
    assert app_dir.startswith(workdir)


def test_the_wheel_install_line_uses_the_extras_argument():
    runs = " ".join(instruction("RUN"))
    assert '"${wheel}[${EXTRAS}]"' in runs
    assert "rm -rf /wheels" in runs  # no wheel left in the final image
