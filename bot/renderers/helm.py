"""Render a Helm chart offline, like `helm template`, with Helm's own Go SDK (helm-python-sdk).

The chart is untrusted input: its values files and symlinks must stay inside the repository,
its dependencies must be vendored under `charts/` (nothing is fetched), and the SDK runs in a
child process (helm_child.py) in the renderer box (sandbox.py), so it reads nothing but the tree
and a template that never ends can be killed. The parent never loads the Go library itself: a
Go runtime does not survive `fork`, which the bot's workers use. Without the SDK, a `helm`
binary on PATH is used instead, in the same box. Helm's errors are reduced (errors.reduce):
they can quote values, and a `tpl` error quotes a whole values string.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

from bot.renderers.errors import Known, RenderError, error_lines, reduce
from bot.renderers.kustomize import resolve_inside
from bot.renderers.sandbox import Box, OutputTooLarge, memory_words, module_directory, python_programs
from bot.yamlio import DEFAULT_LIMITS, Limits, parse_documents

MAX_FILE_BYTES = 1024 * 1024
CHILD = Path(__file__).resolve().with_name("helm_child.py")
_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)  # a document marker on its own line
_VERSIONED_ARCHIVE = re.compile(r"^(?P<name>.+?)-v?\d+\.\d+\.\d+.*\.tgz$")
_ACTION = re.compile(r"{{-?(.*?)-?}}", re.DOTALL)
_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"|`([^`]*)`')
_CODE_TOKEN = re.compile(r"[^\s()|,]+")


def is_chart(directory: Path) -> bool:
    """Whether `directory` is a Helm chart."""
    return (directory / "Chart.yaml").is_file()


def render_helm(root: Path, path: str, *, release: str, namespace: str | None,
                values: list[str], timeout: float = 60.0, sandbox: bool = True,
                max_output: int = DEFAULT_LIMITS.max_file_bytes) -> str:
    """The chart at `root/path` rendered as multi-document YAML: CRDs first, then templates by path.

    `values` are files relative to the chart directory, merged in order over the chart's defaults.
    With `sandbox`, Helm runs in the renderer box (see sandbox.py), or not at all. Helm's output is
    refused, and Helm stopped, once it passes `max_output` bytes.
    """
    root = root.resolve()
    chart = resolve_inside(root, root / path)
    if chart is None or not is_chart(chart):
        raise RenderError("no Chart.yaml in this directory inside the repository", path)
    _check_symlinks(root, chart)
    name = _check_dependencies(chart, path)
    files = [_values_file(root, chart, v, f"{path}/{v}") for v in values]
    request = {"chart": str(chart), "release": release, "namespace": namespace,
               "values": [(f"{path}/{v}", f.read_text("utf-8", "replace"))
                          for v, f in zip(values, files)], "max_output": max_output}
    known = chart_known(root, chart, name, [text for _, text in request["values"]])
    reply = _run_sdk(root, request, timeout, path, sandbox, known)
    if "unavailable" in reply:
        return _render_with_binary(root, chart, request, files, timeout, path, sandbox, known)
    if "error" in reply:
        raise _template_error(reply["error"], name, path, root, known)
    if "too_large" in reply:
        raise too_large(max_output, path)
    return assemble(reply["crds"], reply["templates"])


def too_large(limit: int, path: str) -> RenderError:
    return RenderError(f"helm output is larger than the limit of {limit:,} bytes", path)


def out_of_memory(box: Box, path: str) -> RenderError:
    return RenderError(f"helm render needed more than {memory_words(box.cap)} of memory and was stopped", path)


def assemble(crds: list[list[str]], templates: dict[str, str]) -> str:
    """`helm template`-style output: one `# Source:` comment per document, empty ones dropped."""
    sources = sorted(crds) + [(k, templates[k]) for k in sorted(templates)
                              if Path(k).name != "NOTES.txt"]
    return "".join(f"---\n# Source: {source}\n{doc}\n"
                   for source, text in sources for doc in _documents(text))


def _documents(text: str) -> list[str]:
    docs = (d.strip() for d in _SPLIT.split(text))
    return [d for d in docs if any(line.strip() and not line.lstrip().startswith("#")
                                   for line in d.splitlines())]


def _check_symlinks(root: Path, chart: Path) -> None:
    """Refuse symlinks out of the repository: Helm's loader follows them and would read the target."""
    pending, seen = [chart], set()
    while pending:
        directory = pending.pop()
        if directory.resolve() in seen:
            continue
        seen.add(directory.resolve())
        for entry in os.scandir(directory):
            entry_path = Path(entry.path)
            if entry.is_symlink() and resolve_inside(root, entry_path) is None:
                raise RenderError("symlink points outside the repository",
                                  entry_path.relative_to(root).as_posix())
            if entry.is_dir():
                pending.append(entry_path)


def _check_dependencies(chart: Path, path: str) -> str:
    """The chart's name, once every declared dependency is found vendored under `charts/`.

    The SDK itself renders a chart with missing dependencies silently, so this is the only check.
    """
    metadata = _load_yaml(chart / "Chart.yaml", f"{path}/Chart.yaml")
    vendored = {_check_dependencies(sub.parent, f"{path}/charts/{sub.parent.name}")
                for sub in chart.glob("charts/*/Chart.yaml")}
    vendored |= {m["name"] for archive in chart.glob("charts/*.tgz")
                 if (m := _VERSIONED_ARCHIVE.match(archive.name))}
    dependencies = metadata.get("dependencies") or []
    if not isinstance(dependencies, list):
        raise RenderError("`dependencies` must be a list", f"{path}/Chart.yaml")
    for dependency in dependencies:
        name = dependency.get("name") if isinstance(dependency, dict) else dependency
        if not isinstance(name, str):
            raise RenderError("each dependency needs a `name`", f"{path}/Chart.yaml")
        if name not in vendored:
            raise RenderError(f"dependency {name} is not vendored in charts/; "
                              "run helm dependency build and commit it", f"{path}/Chart.yaml")
    return str(metadata.get("name") or chart.name)


def _load_yaml(file: Path, name: str) -> dict[str, Any]:
    size = file.stat().st_size
    if size > MAX_FILE_BYTES:
        raise RenderError.too_large(size, MAX_FILE_BYTES, name)
    docs = parse_documents(file.read_bytes(), name, Limits(max_file_bytes=MAX_FILE_BYTES))
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise RenderError("expected a mapping", name)
    return docs[0]


def _values_file(root: Path, chart: Path, value: str, name: str) -> Path:
    file = resolve_inside(root, chart / value)
    if file is None:
        raise RenderError("values file is outside the repository", name)
    if not file.is_file():
        raise RenderError("values file does not exist", name)
    if file.stat().st_size > MAX_FILE_BYTES:
        raise RenderError(f"values file is larger than {MAX_FILE_BYTES:,} bytes", name)
    return file


def _run_sdk(root: Path, request: dict[str, Any], timeout: float, path: str, sandbox: bool,
             known: Known) -> dict[str, Any]:
    env = {k: os.environ[k] for k in ("HELM_C_LIB",) if k in os.environ}
    package = module_directory("helm_python")
    argv = [str(python_programs()[0]), "-I", "-S", "-B", str(CHILD),
            str(package.parent if package else CHILD.parent)]
    box = Box(root, sdk_programs(), sandbox)
    try:
        proc = box.run(argv, timeout=timeout, env=env, input=json.dumps(request).encode(),
                       max_output=request["max_output"])
    except subprocess.TimeoutExpired:
        raise RenderError(f"helm render timed out after {timeout:g}s", path) from None
    except OutputTooLarge as err:
        raise too_large(err.limit, path) from None
    except OSError as err:
        raise RenderError(f"could not run the Helm SDK: {err.strerror}", path) from None
    try:
        return read_reply(proc.stdout)
    except ValueError:  # the child crashed or was killed
        if box.exhausted(proc):
            raise out_of_memory(box, path) from None
        last = proc.stderr.strip().splitlines()[-1:]
        detail = reduce(last[0], known, [str(root)]) if last else f"exit status {proc.returncode}"
        raise RenderError(f"helm render failed: {detail}", path) from None


def read_reply(stdout: bytes) -> dict[str, Any]:
    """The child's outcome (see helm_child.py), a rendering's texts read from after its line.
    Raises ValueError for anything else."""
    end = stdout.index(b"\n")
    reply: dict[str, Any] = json.loads(stdout[:end])
    if "templates" not in reply:
        return reply
    body, position, texts = memoryview(stdout)[end + 1:], 0, []
    for name, size in [*reply["crds"], *reply["templates"]]:
        texts.append([name, str(body[position:position + size], "utf-8")])
        position += size
    if position != len(body):
        raise ValueError("the reply's texts are not the sizes its line gives")
    crds = texts[:len(reply["crds"])]
    return {"crds": crds, "templates": dict(texts[len(crds):])}


def sdk_programs() -> tuple[Path, ...]:
    """What the SDK's child needs in the box: Python, its entry script, helm_python and the
    library HELM_C_LIB names, if any. Not the bot, not the virtualenv."""
    package = module_directory("helm_python")
    library = os.environ.get("HELM_C_LIB")
    return (*python_programs(), CHILD, *([package] if package else []),
            *([Path(library).resolve()] if library else []))


def chart_known(root: Path, chart: Path, name: str, values: list[str]) -> Known:
    """What a Helm error about this chart may show (its paths, the tokens and literals of its
    template code) and what it must not (every scalar of its values files and given values)."""
    known = Known(names={name})
    for file in _chart_files(chart):
        relative = file.relative_to(chart).as_posix()
        known.add_path(file.relative_to(root).as_posix())
        known.add_path(f"{name}/{relative}")
        if (archive := _VERSIONED_ARCHIVE.match(file.name)) and file.parent.name == "charts":
            known.names.add(archive["name"])  # Helm names its templates by the chart's name
        if file.stat().st_size > MAX_FILE_BYTES:
            continue
        if file.name == "values.yaml":
            values = [*values, file.read_text("utf-8", "replace")]
        elif relative.startswith(("templates/", "charts/")) and file.suffix != ".tgz":
            for action in _ACTION.findall(file.read_text("utf-8", "replace")):
                known.names.update(_CODE_TOKEN.findall(action))
                for literal in _LITERAL.finditer(action):
                    text = literal[1] if literal[1] is not None else literal[2]
                    known.messages.add(text.replace('\\"', '"'))
                    known.names.add(text)
    for text in values:
        known.values.update(_scalars(text))
    known.names -= known.values
    return known


def _chart_files(chart: Path) -> Iterator[Path]:
    """Every regular file of the chart; symlinks are not followed (they were checked to stay in)."""
    for directory, subdirectories, names in os.walk(chart):
        subdirectories.sort()
        for name in sorted(names):
            file = Path(directory) / name
            if file.is_file() and not file.is_symlink():
                yield file


def _scalars(text: str) -> set[str]:
    """Every scalar of a values file, as text; for a file that does not parse, each line's value."""
    try:
        docs = parse_documents(text.encode(), "values", Limits(max_file_bytes=MAX_FILE_BYTES))
    except RenderError:
        lines = (line.partition(":")[2].strip().strip("\"'") for line in text.splitlines())
        return {line for line in lines if line}
    found: set[str] = set()
    pending: list[Any] = list(docs)
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif value is not None and not isinstance(value, bool):
            found.add(str(value))
    return found


def _template_error(error: dict[str, Any], chart_name: str, path: str, root: Path,
                    known: Known) -> RenderError:
    """Helm's message, reduced, with the template it names mapped to a repository path."""
    message = reduce(error["message"], known, [str(root)])
    if error["file"]:
        return RenderError(message, error["file"])
    named = re.search(rf"\b{re.escape(chart_name)}/((?:charts/[^/\s]+/)*templates/[^\s:()\"']+)",
                      message)
    return RenderError(message, f"{path}/{named[1]}" if named else path)


def _render_with_binary(root: Path, chart: Path, request: dict[str, Any], files: list[Path],
                        timeout: float, path: str, sandbox: bool, known: Known) -> str:
    helm = shutil.which("helm")
    if helm is None:
        raise RenderError("rendering Helm charts needs helm-python-sdk or a helm binary", path)
    argv = [helm, "template", request["release"], str(chart), "--include-crds"]
    argv += ["--namespace", request["namespace"]] if request["namespace"] else []
    argv += [arg for f in files for arg in ("-f", str(f))]
    box = Box(root, (Path(helm).resolve(),), sandbox)
    try:
        proc = box.run(argv, timeout=timeout, max_output=request["max_output"])
    except subprocess.TimeoutExpired:
        raise RenderError(f"helm render timed out after {timeout:g}s", path) from None
    except OutputTooLarge as err:
        raise too_large(err.limit, path) from None
    except OSError as err:
        raise RenderError(f"could not run helm: {err.strerror}", path) from None
    if box.exhausted(proc):
        raise out_of_memory(box, path)
    if proc.returncode != 0:
        message = reduce(error_lines(proc.stderr), known, [str(root)])
        raise RenderError(message or f"helm exited with {proc.returncode}", path)
    return proc.stdout.decode("utf-8", "replace")
