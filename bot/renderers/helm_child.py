"""The Helm SDK's child process: a render request as JSON on stdin, the outcome on stdout.

The outcome is one JSON line; after a rendering's line (`crds` and `templates`, each a list of
[name, size]) come those texts as UTF-8, in that order and of those sizes, so that the parent can
stop reading at its limit and never parses more than it takes. A rendering larger than the
request's `max_output` is not written at all: the line says `too_large` instead.

It runs in the renderer box (see sandbox.py) with only the standard library and `helm_python`,
whose directory's parent is its one argument, so it imports nothing else of the bot.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    reply = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the Go library prints must not corrupt the reply
    request = json.load(sys.stdin)
    limit = request.pop("max_output", None)
    write(reply, render(**request), limit)
    reply.close()


def write(reply: IO[bytes], outcome: dict[str, Any], limit: int | None) -> None:
    """The outcome's line, and after a rendering's line its texts."""
    texts: list[bytes] = []
    if "templates" in outcome:
        outcome, texts = frame(outcome["crds"], list(outcome["templates"].items()), limit)
    reply.write(json.dumps(outcome).encode() + b"\n")
    for data in texts:
        reply.write(data)


def frame(crds: list[tuple[str, str]], templates: list[tuple[str, str]],
          limit: int | None) -> tuple[dict[str, Any], list[bytes]]:
    """The line that announces a rendering's texts, and those texts as UTF-8; `too_large` and no
    text when line and texts together pass `limit` bytes."""
    too_large: tuple[dict[str, Any], list[bytes]] = ({"too_large": limit}, [])
    # A character is at least a byte: a rendering this long is too large before it is encoded.
    if limit is not None and sum(len(text) for _, text in crds + templates) > limit:
        return too_large
    encoded = [(name, text.encode()) for name, text in crds + templates]
    sizes = [[name, len(data)] for name, data in encoded]
    line = {"crds": sizes[:len(crds)], "templates": sizes[len(crds):]}
    texts = [data for _, data in encoded]
    if limit is not None and len(json.dumps(line)) + 1 + sum(map(len, texts)) > limit:
        return too_large
    return line, texts


def render(chart: str, release: str, namespace: str | None, values: list[list[str]]) -> dict[str, Any]:
    try:
        import helm_python as helm
    except Exception as err:  # HelmLibraryError, ImportError, OSError: no usable native library
        return {"unavailable": str(err)}
    merged: dict[str, Any] = {}
    for name, text in values:
        try:
            merged = merge(merged, helm.values_from_yaml(text))
        except helm.HelmError as err:
            return {"error": {"message": f"invalid values: {err}", "file": name}}
    try:
        helm.validate_release_name(release)
        with helm.Chart.load(chart) as loaded:
            return {"crds": [(c["filename"], c["data"]) for c in loaded.crds],
                    "templates": loaded.render(merged, name=release, namespace=namespace)}
    except helm.HelmError as err:
        return {"error": {"message": str(err), "file": None}}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of successive `-f` files: maps merge deeply, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


if __name__ == "__main__":
    main()
