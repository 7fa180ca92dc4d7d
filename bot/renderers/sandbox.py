"""The box every renderer runs in: the exported tree and its own program, nothing else.

A renderer (`kubectl kustomize`, the Helm SDK's child process, a `helm` binary) reads untrusted
repository content, so the operating system keeps it in, through bubblewrap (`bwrap`, Linux):

- new user, mount, network, PID, IPC, UTS and cgroup namespaces: no network (a loopback of its
  own, so a server on the host's 127.0.0.1 is out of reach too), no other process to see;
- a file system of its own: the exported tree read-only at its own path, the program's files
  read-only (its binary; for Python, the interpreter, its standard library, `helm_python` and
  the child's entry script), the system's shared libraries, and an empty /tmp as HOME. No data
  dir, no mirrors, no HOME, no project checkout, no /etc, no /proc;
- a new session and PID namespace that end with the parent, so killing the box's process group
  on a time-out ends every process in it.

Where the box cannot be made (no bwrap; user namespaces refused, as in a container with the
default seccomp profile; macOS), rendering fails with `SandboxUnavailable`, a one-line RenderError
saying what to install, unless the caller runs unboxed (`sandbox=False`: `render.sandbox: false`
in the server config, or `gitops-bot diff` on a developer's own checkout, which warns once).
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from bot.renderers.errors import RenderError

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
BOX_HOME = "/tmp"
SYSTEM_LIBRARIES = ("/lib", "/lib32", "/lib64", "/libx32", "/usr/lib", "/usr/lib32", "/usr/lib64",
                    "/usr/libx32")
"""The C library and the dynamic loader live here: the Python interpreter needs them."""
INSTALL = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) or set "
           "`render: {sandbox: false}` in the server config")


class SandboxUnavailable(RenderError):
    """The box cannot be made on this machine; the message says what to install or allow."""


@dataclass(frozen=True)
class Box:
    """How to run one renderer: the tree it reads, the program files it needs, boxed or not."""

    tree: Path
    """The exported repository: the only repository content the renderer sees, read-only."""
    programs: tuple[Path, ...] = ()
    """Files and directories of the renderer itself, bound read-only at their own paths."""
    sandbox: bool = True
    """False runs the renderer as a plain child process (minimal environment, scratch HOME)."""

    def run(self, argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None,
            input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run `argv` in the tree with a minimal environment; on timeout, kill its process group.

        Raises subprocess.TimeoutExpired, OSError when the program cannot start, and
        SandboxUnavailable. The whole group is killed because a wrapper's children would
        otherwise keep the output pipes, and so this call, alive.
        """
        if not self.sandbox:
            with tempfile.TemporaryDirectory(prefix="render-home-") as home:
                return _communicate(list(argv), self.tree, _environment(home, env), input, timeout)
        status, report = os.pipe()
        try:
            command = [*_bwrap(check(), self.tree, self.programs, report), *argv]
            proc = _communicate(command, self.tree, _environment(BOX_HOME, env), input, timeout, report)
        finally:
            os.close(report)
            with os.fdopen(status, "rb") as reader:
                started = b'"exit-code"' in reader.read()
        if not started:  # bwrap itself failed: its complaint, never the renderer's output
            complaint = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = complaint[0] if complaint else f"bwrap exited with {proc.returncode}"
            if reason.startswith("bwrap: execvp "):
                raise OSError(errno.ENOENT, f"{reason.rpartition(': ')[2]} in the renderer box")
            raise unavailable(reason)
        return proc


def _environment(home: str, extra: dict[str, str] | None) -> dict[str, str]:
    return {"PATH": SAFE_PATH, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", **(extra or {})}


def _communicate(argv: list[str], cwd: Path, env: dict[str, str], input: bytes | None,
                 timeout: float, report: int | None = None) -> subprocess.CompletedProcess[bytes]:
    with subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True,
                          pass_fds=(report,) if report is not None else (),
                          stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _bwrap(executable: str, tree: Path, programs: Iterable[Path], report: int | None) -> list[str]:
    """The bwrap command line that boxes a renderer (see the module's docstring). bwrap writes
    `exit-code` to `report` only when the program in the box ran."""
    argv = [executable, "--unshare-all", "--die-with-parent", "--new-session"]
    argv += ["--json-status-fd", str(report)] if report is not None else []
    for library in SYSTEM_LIBRARIES:
        if os.path.islink(library):
            argv += ["--symlink", os.readlink(library), library]
        elif os.path.isdir(library):
            argv += ["--ro-bind", library, library]
    argv += ["--tmpfs", BOX_HOME]
    for program in dict.fromkeys(programs):
        argv += ["--ro-bind", str(program), str(program)]
        for packages in (program / "site-packages", program / "dist-packages"):
            if packages.is_dir():  # a standard library's installed packages: the bot itself, in an image
                argv += ["--tmpfs", str(packages)]
    # After the tmpfs: an exported tree usually lives under /tmp itself.
    return argv + ["--ro-bind", str(tree), str(tree), "--chdir", str(tree), "--"]


def check() -> str:
    """The bwrap executable, once a box is proven to work here; else SandboxUnavailable."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(f"renderers run in a bubblewrap box, which needs Linux ({sys.platform} "
                                 "has no such namespaces): set `render: {sandbox: false}` in the server config")
    executable = shutil.which("bwrap")
    if executable is None:
        raise SandboxUnavailable(f"renderers run in a bubblewrap box, and bwrap is not on PATH: {INSTALL}")
    problem = _probe(executable)
    if problem:
        raise unavailable(problem)
    return executable


def sandbox_or_warn() -> bool:
    """For `gitops-bot diff` on a developer's own checkout: the box where it can be made, else one
    warning on stderr and no box (the worker never falls back: see ServerConfig.render_sandbox)."""
    try:
        check()
        return True
    except SandboxUnavailable as err:
        print(f"gitops-bot diff: warning: rendering without a box: {err}", file=sys.stderr)
        return False


def unavailable(reason: str) -> SandboxUnavailable:
    return SandboxUnavailable(f"the renderer box cannot be made here ({reason.removeprefix('bwrap: ')}): "
                              f"allow unprivileged user namespaces, or {INSTALL}")


@functools.lru_cache(maxsize=8)
def _probe(executable: str) -> str | None:
    """Why bwrap cannot make a box here (its first line of complaint), or None when it can."""
    with tempfile.TemporaryDirectory(prefix="render-probe-") as tree:
        argv = [*_bwrap(executable, Path(tree), [Path(executable)], None), executable, "--version"]
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=30, env={"PATH": SAFE_PATH})
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"bwrap did not run: {err}"
    if proc.returncode == 0:
        return None
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[0] if lines else f"bwrap exited with {proc.returncode}"


def python_programs() -> tuple[Path, ...]:
    """What a boxed Python interpreter needs: itself, its shared library and its standard library.

    Only the base installation: a virtualenv's site-packages is not needed (and `helm_python` is
    bound on its own), and the project checkout a virtualenv often sits in must stay out.
    """
    executable = Path(os.path.realpath(sys.executable))
    paths = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
             "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix}
    stdlib = {Path(sysconfig.get_path(name, vars=paths)) for name in ("stdlib", "platstdlib")}
    shared = []
    library = sysconfig.get_config_var("INSTSONAME") if sysconfig.get_config_var("Py_ENABLE_SHARED") else None
    if library:
        candidate = Path(sysconfig.get_config_var("LIBDIR") or "") / library
        if candidate.exists():
            shared.append(candidate)
    return (executable, *shared, *sorted(p for p in stdlib if p.is_dir()))


def module_directory(name: str) -> Path | None:
    """Where package `name` is installed, found without importing it."""
    spec = importlib.util.find_spec(name)
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None
