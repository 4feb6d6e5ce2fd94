"""Values for virtual keys the config file lists without a ``value`` (Bifrost generates one).

A generated value is written once to an owner-only file under the app directory and read
back on every later start, so it stays the same across restarts and worker processes. The
log names the file, never the value. With the PostgreSQL config store the value is
required instead (checked at load): nodes with their own app directories would each
generate a different one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from .model import new_value

log = logging.getLogger("rainbridge.governance")

DIRECTORY = "generated-virtual-keys"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class GeneratedValues:
    """Reads, or creates once, the value of a virtual key that has none in the file."""

    def __init__(self, app_dir: Path | str):
        self.directory = Path(app_dir) / DIRECTORY

    def path_for(self, vk_id: str) -> Path:
        # Ids are free text: keep the file name safe and distinct (the hash tells "a/b" from "a_b").
        safe = _UNSAFE.sub("_", vk_id)[:100]
        return self.directory / f"{safe}-{hashlib.sha256(vk_id.encode()).hexdigest()[:16]}"

    def value(self, vk_id: str, where: str) -> str:
        path = self.path_for(vk_id)
        existing = self._read(path)
        if existing:
            log.info("virtual key %r (%s) uses the generated value in %s", vk_id, where, path)
            return existing
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_value())
        try:
            os.link(tmp, path)  # atomic, and loses to a worker that got there first
            log.warning("virtual key %r (%s) has no value in the config: generated one; read it from %s", vk_id, where, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return self._read(path) or ""

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return ""
