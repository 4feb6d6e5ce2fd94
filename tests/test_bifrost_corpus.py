"""Real Bifrost configurations (tests/data/bifrost/corpus.json, each with its source repo,
path and commit), each asserted accepted or refused as issue 14 says rainbridge must."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rainbridge.config.load import ConfigError, load_data

CORPUS = json.loads((Path(__file__).parent / "data" / "bifrost" / "corpus.json").read_text())["cases"]
ENV_REF = re.compile(r'"env\.([A-Za-z_][A-Za-z0-9_]*)"')


def env_for(case: dict) -> dict[str, str]:
    """Every env.VAR the config names, with a placeholder value (the case's own env wins)."""
    names = ENV_REF.findall(json.dumps(case["config"]))
    return {**{name: f"placeholder-{name.lower()}-0123456789" for name in names}, **case.get("env", {})}


def test_every_case_names_its_source():
    for case in CORPUS:
        assert set(case["source"]) == {"repo", "path", "commit"} and all(case["source"].values()), case["name"]


@pytest.mark.parametrize("case", [c for c in CORPUS if c["expect"]["outcome"] == "accepted"], ids=lambda c: c["name"])
def test_accepted_bifrost_config(case):
    loaded = load_data(case["config"], env_for(case))
    expect = case["expect"]
    skipped = {w.path.removeprefix("$.providers.") for w in loaded.warnings if "is not supported by rainbridge yet: skipped" in w.message}
    assert skipped == set(expect["skipped"])
    assert not set(expect["skipped"]) & set(loaded.config.providers)
    assert loaded.config.governance.is_vk_mandatory is expect["is_vk_mandatory"]


@pytest.mark.parametrize("case", [c for c in CORPUS if c["expect"]["outcome"] == "refused"], ids=lambda c: c["name"])
def test_refused_bifrost_config_names_the_paths(case):
    with pytest.raises(ConfigError) as caught:
        load_data(case["config"], env_for(case))
    assert {p.path for p in caught.value.errors} == set(case["expect"]["paths"])
