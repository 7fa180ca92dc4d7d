"""The Helm SDK's child process: a render request as JSON on stdin, the outcome as JSON on stdout.

It runs in the renderer box (see sandbox.py) with only the standard library and `helm_python`,
whose directory's parent is its one argument, so it imports nothing else of the bot.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the Go library prints must not corrupt the reply
    json.dump(render(**json.load(sys.stdin)), reply)
    reply.close()


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
            return {"crds": [[c["filename"], c["data"]] for c in loaded.crds],
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
