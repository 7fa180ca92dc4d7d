"""The renderer box, with the real bwrap, kubectl and Helm SDK: a renderer reaches neither the
network nor any file outside the exported tree, and where the box cannot be made, rendering
says what to install, unless the operator turned the box off."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from bot.config import Environment, parse_server_config
from bot.gitrepo import Mirror
from bot.pipeline import diff_snapshots
from bot.renderers import sandbox
from bot.renderers.errors import RenderError
from bot.renderers.helm import sdk_programs
from bot.renderers.kustomize import render_kustomize
from bot.renderers.sandbox import Box, SandboxUnavailable, python_programs
from bot.render import render
from tests.conftest import GitRemote

PYTHON = str(python_programs()[0])
KUBECTL = str((Path(sys.executable).parent / "kubectl").resolve())
SECRET = "sentinel-0c4f"
CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: '{value}'}}\n"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """An exported tree, with a data dir (mirrors, Redis) beside it as a worker has."""
    write(tmp_path / "data" / "mirrors", {"other.git/secret.yaml": CM.format(name="stolen", value=SECRET)})
    return write(tmp_path / "tree", {"app/kustomization.yaml": "resources: [cm.yaml]\n",
                                     "app/cm.yaml": CM.format(name="mine", value="1")})


def python_in_box(tree: Path, code: str, programs: tuple[Path, ...] | None = None,
                  boxed: bool = True) -> subprocess.CompletedProcess[bytes]:
    box = Box(tree, python_programs() if programs is None else programs, boxed)
    return box.run([PYTHON, "-I", "-S", "-c", code], timeout=30)


def can_read(tree: Path, path: Path | str, programs: tuple[Path, ...] | None = None) -> bool:
    proc = python_in_box(tree, f"open({str(path)!r}, 'rb').read(1)", programs)
    return proc.returncode == 0


def test_the_box_reads_the_tree_and_nothing_beside_it(tree: Path) -> None:
    secret = tree.parent / "data/mirrors/other.git/secret.yaml"
    assert can_read(tree, tree / "app/cm.yaml")
    assert not can_read(tree, secret)
    assert python_in_box(tree, f"open({str(secret)!r}).read()", boxed=False).returncode == 0  # unboxed, it can


@pytest.mark.parametrize("path", [
    Path.home() / ".bashrc", "/etc/passwd", "/etc/hostname", Path(__file__), Path(sys.prefix) / "pyvenv.cfg",
    Path(sandbox.__file__), Path.cwd() / "pyproject.toml", "/proc/self/environ",
])
def test_the_helm_box_shows_neither_home_nor_etc_nor_the_project(tree: Path, path: Path | str) -> None:
    if not Path(path).exists():
        pytest.skip(f"{path} does not exist on this machine")
    assert not can_read(tree, path, sdk_programs())


def test_the_helm_box_holds_only_what_the_sdk_needs(tree: Path) -> None:
    listing = python_in_box(tree, f"import os; print(sorted(os.listdir({str(sandbox.__file__.rpartition('/')[0])!r})))",
                            sdk_programs())
    assert listing.stdout.decode().strip() == "['helm_child.py']"  # the rest of the bot is not there


@pytest.fixture
def listener() -> Iterator[tuple[int, list[str]]]:
    """An HTTP server on 127.0.0.1, serving a ConfigMap, and the paths asked of it."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = CM.format(name="fetched", value=SECRET).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], asked
    server.shutdown()


def test_the_box_has_no_network(tree: Path, listener: tuple[int, list[str]]) -> None:
    port, asked = listener
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
    assert python_in_box(tree, code, boxed=False).returncode == 0
    connected = len(asked)
    proc = python_in_box(tree, code)
    assert proc.returncode != 0 and b"ConnectionRefusedError" in proc.stderr  # its own loopback has no server
    assert len(asked) == connected


def test_kustomize_in_the_box_reaches_no_url_and_no_directory_beside_the_tree(
        tree: Path, listener: tuple[int, list[str]]) -> None:
    """The box alone, with no check before it, stops what a disguised field could ask for."""
    port, asked = listener
    for resources in [f"http://127.0.0.1:{port}/cm.yaml", "../../data/mirrors/other.git"]:
        write(tree, {"app/kustomization.yaml": f"resources: ['{resources}']\n",
                     "../data/mirrors/other.git/kustomization.yaml": "resources: [secret.yaml]\n"})
        argv = [KUBECTL, "kustomize", str(tree / "app")]
        assert SECRET.encode() in Box(tree, (Path(KUBECTL),), False).run(argv, timeout=60).stdout
        boxed = Box(tree, (Path(KUBECTL),)).run(argv, timeout=60)
        assert boxed.returncode != 0 and SECRET.encode() not in boxed.stdout + boxed.stderr
    assert asked == ["/cm.yaml"]  # once, unboxed


def test_a_time_out_kills_everything_in_the_box(tree: Path) -> None:
    marker = "box-grandchild-5e2"
    code = f"import os, time; os.fork(); time.sleep(60)  # {marker}"
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        Box(tree, python_programs()).run([PYTHON, "-I", "-S", "-c", code], timeout=1)
    assert time.monotonic() - started < 5
    time.sleep(0.2)
    alive = [p for p in Path("/proc").iterdir() if p.name.isdigit() and marker in _cmdline(p)]
    assert not alive


def _cmdline(process: Path) -> str:
    try:
        return (process / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_kustomize_renders_the_same_boxed_and_unboxed(tree: Path) -> None:
    boxed = render_kustomize(tree, "app")
    assert boxed == render_kustomize(tree, "app", sandbox=False)
    assert "name: mine" in boxed


# -- where the box cannot be made ------------------------------------------------------------------

@pytest.fixture
def no_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with git (and nothing else): no bwrap."""
    bin_dir = tmp_path / "bin-without-bwrap"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip())
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_without_bwrap_rendering_says_what_to_install(tree: Path, no_bwrap: Path) -> None:
    with pytest.raises(RenderError) as caught:
        render_kustomize(tree, "app")
    assert str(caught.value) == ("renderers run in a bubblewrap box, and bwrap is not on PATH: install bubblewrap "
                                 "(Debian/Ubuntu: apt-get install bubblewrap) or set `render: {sandbox: false}` "
                                 "in the server config")
    assert "name: mine" in render_kustomize(tree, "app", sandbox=False)


def test_refused_user_namespaces_say_so(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refusing = tmp_path / "bin-refusing" / "bwrap"
    refusing.parent.mkdir()
    refusing.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    refusing.chmod(0o755)
    monkeypatch.setenv("PATH", f"{refusing.parent}:/usr/bin:/bin")
    with pytest.raises(SandboxUnavailable) as caught:
        render_kustomize(tree, "app")
    assert str(caught.value).startswith("the renderer box cannot be made here (setting up uid map: Permission "
                                        "denied): allow unprivileged user namespaces, or install bubblewrap")
    assert "\n" not in str(caught.value)


def test_elsewhere_than_linux_rendering_says_the_box_needs_linux(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(SandboxUnavailable, match=r"needs Linux \(darwin .*`render: \{sandbox: false\}`"):
        render_kustomize(tree, "app")


def diff_kustomization(remote: GitRemote, tmp_path: Path, sandbox_on: bool):
    base = remote.commit("main", {".gitops.yaml": "environments: {k: {branch: main, path: app}}\n",
                                  "app/kustomization.yaml": "resources: [cm.yaml]\n",
                                  "app/cm.yaml": CM.format(name="a", value="1")})
    head = remote.commit("pr", {"app/cm.yaml": CM.format(name="a", value="2")}, parent=base)
    mirror = Mirror(tmp_path / "mirror")
    mirror.ensure(remote.url, [base, head], ["+refs/heads/*:refs/heads/*"])
    return diff_snapshots(mirror.snapshot(base), mirror.snapshot(head), config_snapshot=mirror.snapshot(base),
                          base_sha=base, head_sha=head, branch="main", default_branch="main",
                          changed=mirror.changed_paths(base, head), sandbox=sandbox_on)


def test_the_worker_never_renders_unboxed_unless_the_operator_says_so(remote: GitRemote, tmp_path: Path,
                                                                      no_bwrap: Path) -> None:
    report = diff_kustomization(remote, tmp_path, parse_server_config(b"repos: ['*']\n").render_sandbox)
    assert "bwrap is not on PATH: install bubblewrap" in report.environments[0].error
    off = parse_server_config(b"repos: ['*']\nrender: {sandbox: false}\n").render_sandbox
    report = diff_kustomization(remote, tmp_path, off)
    assert not report.failed and report.counts.changed == 1


def test_gitops_bot_diff_on_a_checkout_warns_once_and_renders_unboxed(remote: GitRemote, no_bwrap: Path) -> None:
    remote.commit("main", {".gitops.yaml": "environments: {k: {branch: main, path: app}}\n",
                           "app/kustomization.yaml": "resources: [cm.yaml]\n",
                           "app/cm.yaml": CM.format(name="a", value="1")})
    write(remote.work, {"app/cm.yaml": CM.format(name="a", value="2")})
    proc = subprocess.run([sys.executable, "-m", "bot", "diff", "--repo", str(remote.work), "main"],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 1, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert warnings == ["gitops-bot diff: warning: rendering without a box: renderers run in a bubblewrap box, "
                        "and bwrap is not on PATH: install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) "
                        "or set `render: {sandbox: false}` in the server config"]


def test_a_plain_tree_needs_no_box(remote: GitRemote, tmp_path: Path, no_bwrap: Path) -> None:
    sha = remote.commit("main", {"app/cm.yaml": CM.format(name="a", value="1")})
    mirror = Mirror(tmp_path / "mirror")
    mirror.ensure(remote.url, [sha], ["+refs/heads/*:refs/heads/*"])
    manifests = render(mirror.snapshot(sha), Environment("plain", "main", "app"))
    assert [m.doc["metadata"]["name"] for m in manifests] == ["a"]



def test_the_standard_library_comes_without_its_installed_packages(tree: Path) -> None:
    """In an image, the bot is installed in the standard library's site-packages."""
    import sysconfig
    packages = Path(sysconfig.get_path("purelib", vars={"base": sys.base_prefix}))
    listing = python_in_box(tree, f"import os; print(os.listdir({str(packages)!r}))", sdk_programs())
    assert listing.returncode == 0 and listing.stdout.decode().strip() in ("[]", "['helm_python']")
