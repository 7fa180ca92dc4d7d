"""Kustomize's own schema of the built-in kinds, handed to it in the form it reads fastest.

A strategic-merge patch needs the OpenAPI schema of the kind it patches: which lists merge, and by
which key. `kubectl kustomize` carries the schema of Kubernetes v1.21.2 as protobuf, and converts
and indexes all of it on the first such patch of every run: about 55 ms of a 90 ms render. Given
the same definitions as JSON, through a kustomization's `openapi: {path: ...}` field, it reads them
in about 20 ms and merges exactly as before.

`data/kustomize-openapi-v1.21.2.json.gz` is kustomize's own compiled bundle of those definitions
(kyaml/openapi, Apache-2.0), converted by kustomize from that same protobuf (its sha256 is
SOURCE_SHA256), unchanged. The schema file adds one API path per built-in kind, which is where
kustomize reads whether a kind is namespaced, as it reads its own; the paths say what the bundle
says.

The bot hands the schema over only where it cannot change a build (see kustomize.prepare_build):
- the kubectl's kustomize is one whose built-in schema is this one (KUSTOMIZE_VERSIONS);
- no kustomization in the tree has an `openapi` field of its own: once the root of a build sets a
  schema, kustomize ignores the ones below it, so one anywhere keeps every build as it is;
- the directory is not also a Helm chart, whose `.Files` would see the file.
And it hands it over only to a build with a strategic-merge patch: kustomize reads its own copy for
little else, while it reads a schema file for any kind it does not know by heart (20 ms more for a
build with a custom resource and no such patch).
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

BUNDLE = Path(__file__).parent / "data" / "kustomize-openapi-v1.21.2.json.gz"
SOURCE_SHA256 = "5d171b55e9601912807a870d73ffe70bb306f5889a00e76986042a0f2d7b6bc2"
"""The protobuf schema that every kustomize from v5.0.0 to v5.8.1 embeds, which the bundle names as
its source (checked by the tests)."""
KUSTOMIZE_VERSIONS = ((5, 0), (5, 8))
"""The kustomize releases (major, minor), first and last, whose built-in schema is that one."""
SCHEMA_FILE = ".gitops-bot-openapi.json"
"""Its name in a kustomization's directory of the render's own copy of the tree."""
GVK = "x-kubernetes-group-version-kind"


@functools.cache
def schema() -> bytes:
    """The OpenAPI document kustomize reads in place of its built-in one."""
    bundle = json.loads(gzip.decompress(BUNDLE.read_bytes()))
    paths = {}
    for resource in bundle["resources"]:
        scope = resource.get("scope")
        if scope is None:
            continue
        api_version, kind = resource["apiVersion"], resource["kind"]
        group, _, version = api_version.rpartition("/")
        namespace = "/namespaces/{namespace}" if scope == "Namespaced" else ""
        paths[f"/{api_version}{namespace}/{kind}"] = {"get": {GVK: {"group": group, "version": version, "kind": kind}}}
    document = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.21.2"},
                "paths": paths, "definitions": bundle["definitions"]}
    return json.dumps(document, separators=(",", ":")).encode()


def write(directory: Path) -> Path:
    """The schema as a file in `directory` (a workspace's own), written by the first caller."""
    path = directory / "kustomize-openapi.json"
    if not path.exists():
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".kustomize-openapi-")
        with os.fdopen(handle, "wb") as out:
            out.write(schema())
        os.replace(temporary, path)  # whole, for a render that reads it meanwhile
    return path


def place(master: Path, directory: Path) -> bool:
    """Put the schema file `master` into a kustomization's `directory`, as SCHEMA_FILE: a hard link,
    or a copy where the file system has none. False where that name is taken."""
    target = directory / SCHEMA_FILE
    try:
        os.link(master, target)
    except FileExistsError:
        return False
    except OSError:
        try:
            with open(target, "xb") as out:
                out.write(master.read_bytes())
        except OSError:
            return False
    return True


@functools.lru_cache(maxsize=8)
def reads_this_schema(kubectl: str, mtime_ns: int) -> bool:
    """Whether the kustomize inside `kubectl` has this schema built in (`mtime_ns`: the binary's, so
    that a replaced binary is asked again)."""
    try:
        proc = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                              timeout=30, env={"PATH": os.defpath})
        version = json.loads(proc.stdout).get("kustomizeVersion", "")
    except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError):
        return False
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version if isinstance(version, str) else "")
    if not match:
        return False
    first, last = KUSTOMIZE_VERSIONS
    return first <= (int(match[1]), int(match[2])) <= last
