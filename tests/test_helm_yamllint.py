"""yamllint over everything the chart can render, not only the HA production file: every
seed file, the defaults (SQLite StatefulSet with its volume claim), and the optional objects
turned on (ServiceMonitor, test hook), with the rules tests/test_helm.py uses."""

from __future__ import annotations

import subprocess
import sys

from helm_support import CHART, SEED_FILES, helm, values_args

RULES = ("{extends: default, rules: {line-length: {max: 160}, document-start: disable, comments: {min-spaces-from-content: 1}, "
         "indentation: {spaces: consistent, indent-sequences: whatever}}}")


def test_every_render_of_the_chart_passes_yamllint(tmp_path):
    renders = [values_args(seed) for seed in SEED_FILES] + [[], ["--set", "serviceMonitor.enabled=true"]]
    files = []
    for i, args in enumerate(renders):
        path = tmp_path / f"render-{i}.yaml"
        path.write_text(helm("template", "bifrost", str(CHART), *args).stdout)
        files.append(str(path))
    result = subprocess.run([sys.executable, "-m", "yamllint", "-s", "-d", RULES, *files],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
