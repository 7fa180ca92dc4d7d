"""Render a Helm chart offline, like `helm template`, with Helm's own Go SDK (helm-python-sdk).

The chart is untrusted input: its values files and symlinks must stay inside the repository,
its dependencies must be vendored under `charts/` (nothing is fetched), and the SDK runs in a
child process with a minimal environment so a template that never ends can be killed. The
parent never loads the Go library itself: a Go runtime does not survive `fork`, which the
bot's workers use. Without the SDK, a `helm` binary on PATH is used instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bot.renderers.errors import RenderError
from bot.renderers.kustomize import concise, resolve_inside, run_isolated
from bot.yamlio import Limits, parse_documents

MAX_FILE_BYTES = 1024 * 1024
_PROJECT = Path(__file__).resolve().parents[2]
_WORKER = (f"import sys; sys.path.insert(0, {str(_PROJECT)!r}); "
           "import bot.renderers.helm as h; h._worker()")
_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)  # a document marker on its own line
_VERSIONED_ARCHIVE = re.compile(r"^(?P<name>.+?)-v?\d+\.\d+\.\d+.*\.tgz$")


def is_chart(directory: Path) -> bool:
    """Whether `directory` is a Helm chart."""
    return (directory / "Chart.yaml").is_file()


def render_helm(root: Path, path: str, *, release: str, namespace: str | None,
                values: list[str], timeout: float = 60.0) -> str:
    """The chart at `root/path` rendered as multi-document YAML: CRDs first, then templates by path.

    `values` are files relative to the chart directory, merged in order over the chart's defaults.
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
                          for v, f in zip(values, files)]}
    reply = _run_sdk(root, request, timeout, path)
    if "unavailable" in reply:
        return _render_with_binary(root, chart, request, files, timeout, path)
    if "error" in reply:
        raise _template_error(reply["error"], name, path, root)
    return assemble(reply["crds"], reply["templates"])


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


def _run_sdk(root: Path, request: dict[str, Any], timeout: float, path: str) -> dict[str, Any]:
    env = {k: os.environ[k] for k in ("HELM_C_LIB",) if k in os.environ}
    try:
        proc = run_isolated([sys.executable, "-I", "-c", _WORKER], cwd=root, timeout=timeout,
                            env=env, input=json.dumps(request))
    except subprocess.TimeoutExpired:
        raise RenderError(f"helm render timed out after {timeout:g}s", path) from None
    try:
        reply: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:  # the child crashed or was killed
        last = proc.stderr.strip().splitlines()[-1:]
        detail = concise(last[0], root) if last else f"exit status {proc.returncode}"
        raise RenderError(f"helm render failed: {detail}", path) from None
    return reply


def _worker() -> None:
    """Child-process entry: a request as JSON on stdin, the outcome as JSON on stdout."""
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the Go library prints must not corrupt the reply
    json.dump(_sdk_render(**json.load(sys.stdin)), reply)
    reply.close()


def _sdk_render(chart: str, release: str, namespace: str | None,
                values: list[list[str]]) -> dict[str, Any]:
    try:
        import helm_python as helm
    except Exception as err:  # HelmLibraryError, ImportError, OSError: no usable native library
        return {"unavailable": str(err)}
    merged: dict[str, Any] = {}
    for name, text in values:
        try:
            merged = _merge(merged, helm.values_from_yaml(text))
        except helm.HelmError as err:
            return {"error": {"message": f"invalid values: {err}", "file": name}}
    try:
        helm.validate_release_name(release)
        with helm.Chart.load(chart) as loaded:
            return {"crds": [[c["filename"], c["data"]] for c in loaded.crds],
                    "templates": loaded.render(merged, name=release, namespace=namespace)}
    except helm.HelmError as err:
        return {"error": {"message": str(err), "file": None}}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of successive `-f` files: maps merge deeply, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _template_error(error: dict[str, Any], chart_name: str, path: str, root: Path) -> RenderError:
    """Helm's message, with the template it names mapped to a repository path."""
    message = concise(error["message"], root)
    if error["file"]:
        return RenderError(message, error["file"])
    named = re.search(rf"\b{re.escape(chart_name)}/((?:charts/[^/\s]+/)*templates/[^\s:()\"']+)",
                      message)
    return RenderError(message, f"{path}/{named[1]}" if named else path)


def _render_with_binary(root: Path, chart: Path, request: dict[str, Any], files: list[Path],
                        timeout: float, path: str) -> str:
    helm = shutil.which("helm")
    if helm is None:
        raise RenderError("rendering Helm charts needs helm-python-sdk or a helm binary", path)
    argv = [helm, "template", request["release"], str(chart), "--include-crds"]
    argv += ["--namespace", request["namespace"]] if request["namespace"] else []
    argv += [arg for f in files for arg in ("-f", str(f))]
    try:
        proc = run_isolated(argv, cwd=root, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RenderError(f"helm render timed out after {timeout:g}s", path) from None
    if proc.returncode != 0:
        raise RenderError(concise(proc.stderr, root) or f"helm exited with {proc.returncode}", path)
    return proc.stdout
