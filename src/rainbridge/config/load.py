"""Read a config file (JSON or YAML), resolve ``env.VAR`` values, validate, build ``Config``.

Every problem is collected with its JSON path; errors stop the load, warnings (unknown keys,
suspicious values) are returned with the config so ``serve`` can log them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import orjson
import yaml

from . import bifrost
from .bifrost import NOTE
from .checks import semantic_problems
from .schema import Config
from .validate import Problem, check, child

_ENV_REF = re.compile(r"env\.([A-Za-z_][A-Za-z0-9_]*)")
_TYPE_INFO = msgspec.inspect.type_info(Config)

# Older Bifrost documents spell some fields differently; both spellings load.
_NETWORK_ALIASES = {
    "retry_backoff_initial_ms": "retry_backoff_initial",
    "retry_backoff_max_ms": "retry_backoff_max",
}


class ConfigError(Exception):
    """The configuration has errors; ``problems`` lists all of them (and the warnings)."""

    def __init__(self, problems: list[Problem], source: str | None = None):
        self.problems = problems
        self.source = source
        errors = [p for p in problems if p.severity == "error"]
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{len(errors)} configuration error(s)")

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


@dataclass(slots=True)
class LoadedConfig:
    config: Config
    warnings: list[Problem] = field(default_factory=list)
    source: str | None = None
    notes: list[Problem] = field(default_factory=list)  # Bifrost forms used (config check prints them)


def parse_text(text: str, source: str = "<config>") -> Any:
    """Parse JSON, or YAML for ``.yaml``/``.yml`` files or text that is not JSON."""
    if source.endswith((".yaml", ".yml")):
        return _parse_yaml(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if text.lstrip().startswith(("{", "[")):
            raise ConfigError([Problem("$", f"invalid JSON: {exc}")], source) from None
        return _parse_yaml(text)


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([Problem("$", f"invalid YAML: {exc}")]) from None


def resolve_env(value: Any, env: Mapping[str, str], path: str, out: list[Problem]) -> Any:
    """Replace every ``"env.NAME"`` string with the variable's value (a missing one is an error)."""
    if isinstance(value, str):
        m = _ENV_REF.fullmatch(value)
        if m is None:
            return value
        name = m.group(1)
        resolved = env.get(name)
        if resolved is None:
            out.append(Problem(path, f"environment variable {name} is not set"))
            return ""
        return resolved
    if isinstance(value, dict):
        return {k: resolve_env(v, env, child(path, str(k)), out) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, env, child(path, i), out) for i, v in enumerate(value)]
    return value


def _resolve_header_values(raw: dict[str, Any], env: Mapping[str, str], out: list[Problem]) -> None:
    """``client.required_headers`` entries ``Name=env.VAR`` (Bifrost): the value a request's
    header must carry comes from the environment; an unset variable stops start-up (Bifrost
    would refuse every request)."""
    client = raw.get("client")
    headers = client.get("required_headers") if isinstance(client, dict) else None
    if not isinstance(headers, list):
        return
    for i, entry in enumerate(headers):
        if not isinstance(entry, str):
            continue
        name, sep, value = entry.partition("=")
        m = _ENV_REF.fullmatch(value.strip()) if sep else None
        if m is None:
            continue
        resolved = env.get(m.group(1))
        if resolved is None:
            out.append(Problem(child("$.client.required_headers", i), f"environment variable {m.group(1)} is not set"))
        else:
            headers[i] = f"{name}={resolved}"


def _apply_aliases(raw: dict[str, Any]) -> None:
    providers = raw.get("providers")
    if not isinstance(providers, dict):
        return
    for provider in providers.values():
        network = provider.get("network_config") if isinstance(provider, dict) else None
        if not isinstance(network, dict):
            continue
        for old, new in _NETWORK_ALIASES.items():
            if old in network and new not in network:
                network[new] = network.pop(old)


def load_data(
    raw: Any, env: Mapping[str, str] | None = None, source: str | None = None
) -> LoadedConfig:
    """Validate parsed config data and build the typed ``Config``; raise ``ConfigError``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([Problem("$", "expected a JSON object at the top level")], source)
    problems: list[Problem] = []
    raw = resolve_env(raw, os.environ if env is None else env, "$", problems)
    _apply_aliases(raw)
    bifrost.fold(raw, problems)
    _resolve_header_values(raw, os.environ if env is None else env, problems)
    check(raw, _TYPE_INFO, "$", problems)
    if any(p.severity == "error" for p in problems):
        raise ConfigError(problems, source)
    config = msgspec.convert(raw, Config)
    problems.extend(semantic_problems(config))
    if any(p.severity == "error" for p in problems):
        raise ConfigError(problems, source)
    warnings = [p for p in problems if p.severity != NOTE]
    return LoadedConfig(config, warnings, source, [p for p in problems if p.severity == NOTE])


def load_file(path: str | Path, env: Mapping[str, str] | None = None) -> LoadedConfig:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem("$", f"cannot read file: {exc.strerror}")], source) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem("$", "file is not UTF-8 text")], source) from None
    try:
        raw = parse_text(text, source)
    except ConfigError as exc:
        raise ConfigError(exc.problems, source) from None
    return load_data(raw, env, source)


def empty_config() -> LoadedConfig:
    """The configuration used when no file exists: no providers, SQLite store."""
    return load_data({}, {}, None)
