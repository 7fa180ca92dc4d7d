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
  on a time-out ends every process in it;
- bounded work: its output is read as it comes and the box is killed once stdout passes the
  caller's limit (`OutputTooLarge`), so the worker never holds more than that limit plus one read;
  only the first and last `STDERR_KEPT` bytes of its stderr are kept; and its memory is capped by
  `RLIMIT_DATA` (`MEMORY_LIMIT`, set through util-linux's `prlimit`, which every Debian and Ubuntu
  image has: without it there is no cap), which counts every writable private mapping (heap, Go
  arenas, thread stacks) but not the address space Go only reserves. A renderer past the cap fails
  to allocate and dies; the caller reports it (`Box.exhausted`).

Where the box cannot be made (no bwrap; user namespaces refused, as in a container with the
default seccomp profile; macOS), rendering fails with `SandboxUnavailable`, a one-line RenderError
saying what to install, unless the caller runs unboxed (`sandbox=False`: `render.sandbox: false`
in the server config, or `gitops-bot diff` on a developer's own checkout, which warns once).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.util
import os
import resource
import select
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Sequence

from bot.renderers.errors import RenderError

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
BOX_HOME = "/tmp"
SYSTEM_LIBRARIES = ("/lib", "/lib32", "/lib64", "/libx32", "/usr/lib", "/usr/lib32", "/usr/lib64",
                    "/usr/libx32")
"""The C library and the dynamic loader live here: the Python interpreter needs them."""
MEMORY_LIMIT = 1024 ** 3
"""Bytes of writable memory (RLIMIT_DATA) one renderer may map: 1 GiB. A render that stays under
the 4 MiB output limit needs a tenth of it; the Helm SDK's child needs about 200 MiB to start."""
GO_GC_PERCENT = 400
"""GOGC for renderers written in Go (kubectl, the Helm SDK): a render lives for a fraction of a
second, so collecting a fifth as often saves a tenth of its CPU for a few MiB; GOMEMLIMIT, at three
quarters of the memory cap, makes the collector work harder well before the cap is reached."""
GO_MAX_PROCS = "1"
"""GOMAXPROCS for Go renderers: a render is one goroutine's work, and renders already run side by
side, one per core (render_concurrency); more threads each only contend for the cores (a sixth
less time for fifty kustomize builds, two at a time on two cores)."""
STDERR_KEPT = 64 * 1024
"""Bytes of a renderer's stderr kept: the first and the last half. Its error is at one end."""
READ_CHUNK = 64 * 1024
"""Bytes read from a renderer's pipe at a time: the most its output can overshoot a limit by."""
OUT_OF_MEMORY = (b"out of memory", b"MemoryError", b"cannot allocate memory", b"pthread_create failed",
                 b"failed to reserve")
"""How Go's runtime, Python and the C library say an allocation failed."""
INSTALL = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) or set "
           "`render: {sandbox: false}` in the server config")


class SandboxUnavailable(RenderError):
    """The box cannot be made on this machine; the message says what to install or allow."""


class OutputTooLarge(subprocess.SubprocessError):
    """The renderer wrote more than the caller's limit to stdout, and was killed for it."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"output passed the limit of {limit:,} bytes")
        self.limit = limit


@dataclass(frozen=True)
class Box:
    """How to run one renderer: the tree it reads, the program files it needs, boxed or not."""

    tree: Path
    """The exported repository: the only repository content the renderer sees, read-only."""
    programs: tuple[Path, ...] = ()
    """Files and directories of the renderer itself, bound read-only at their own paths."""
    sandbox: bool = True
    """False runs the renderer as a plain child process (minimal environment, scratch HOME)."""
    memory: int | None = field(default_factory=lambda: MEMORY_LIMIT)
    """Bytes of writable memory the renderer may map (RLIMIT_DATA), boxed or not; None for no cap."""

    def run(self, argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None,
            input: bytes | None = None, max_output: int | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run `argv` in the tree with a minimal environment; on timeout, or once its stdout passes
        `max_output` bytes, kill its process group.

        Raises subprocess.TimeoutExpired, OutputTooLarge, OSError when the program cannot start,
        and SandboxUnavailable. The whole group is killed because a wrapper's children would
        otherwise keep the output pipes, and so this call, alive.
        """
        limit, env = _prlimit(self.cap), {**_go_runtime(self.cap), **(env or {})}
        if not self.sandbox:
            with tempfile.TemporaryDirectory(prefix="render-home-") as home:
                return _communicate([*limit, *argv], self.tree, _environment(home, env), input, timeout,
                                    max_output=max_output)
        status, report = os.pipe()
        try:
            command = [*limit, *_bwrap(check(), self.tree, self.programs, report), *argv]
            proc = _communicate(command, self.tree, _environment(BOX_HOME, env), input, timeout, report,
                                max_output)
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

    @property
    def cap(self) -> int | None:
        """The memory cap the renderer runs under, if any (see memory_cap)."""
        return memory_cap(self.memory)

    def exhausted(self, proc: subprocess.CompletedProcess[bytes]) -> bool:
        """Whether a failed renderer died for want of memory under this box's cap: it said so, or
        it died of SIGSEGV, as a Go runtime does that cannot map even its first arena."""
        segfault = proc.returncode in (-signal.SIGSEGV, 128 + signal.SIGSEGV)  # bwrap: 128 + the signal
        return (self.cap is not None and proc.returncode != 0
                and (segfault or any(sign in proc.stderr for sign in OUT_OF_MEMORY)))


def memory_words(limit: int | None) -> str:
    """`1 GiB`, for an error message."""
    gib, mib = (limit or 0) / 1024 ** 3, (limit or 0) / 1024 ** 2
    return f"{gib:g} GiB" if gib >= 1 else f"{mib:g} MiB"


@functools.lru_cache(maxsize=8)
def memory_cap(limit: int | None) -> int | None:
    """The cap a renderer asked to keep under `limit` bytes runs under: `limit`, within this
    process's own hard limit; None where there is no limit, or no prlimit to set it."""
    if limit is None or shutil.which("prlimit", path=SAFE_PATH) is None:
        return None
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    return limit if hard == resource.RLIM_INFINITY else min(limit, hard)


def _prlimit(cap: int | None) -> list[str]:
    """The command prefix that caps what follows at `cap` bytes of writable memory."""
    executable = shutil.which("prlimit", path=SAFE_PATH)
    return [executable, f"--data={cap}", "--"] if cap is not None and executable else []


def _go_runtime(cap: int | None) -> dict[str, str]:
    return {"GOGC": str(GO_GC_PERCENT), "GOMAXPROCS": GO_MAX_PROCS,
            **({"GOMEMLIMIT": str(cap * 3 // 4)} if cap else {})}


def _environment(home: str, extra: dict[str, str] | None) -> dict[str, str]:
    return {"PATH": SAFE_PATH, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", **(extra or {})}


def _communicate(argv: list[str], cwd: Path, env: dict[str, str], input: bytes | None,
                 timeout: float, report: int | None = None,
                 max_output: int | None = None) -> subprocess.CompletedProcess[bytes]:
    deadline = time.monotonic() + timeout
    with subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True,
                          pass_fds=(report,) if report is not None else (),
                          stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            out, err = _exchange(proc, input, deadline, max_output)
            proc.wait(max(0.0, deadline - time.monotonic()))
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _exchange(proc: subprocess.Popen[bytes], input: bytes | None, deadline: float,
              max_output: int | None) -> tuple[bytes, bytes]:
    """Feed `input` and read both pipes until they close, holding at most `max_output` bytes of
    stdout (plus one read) and `STDERR_KEPT` of stderr. Raises TimeoutExpired and OutputTooLarge.

    Stdout comes back as the bytearray it was read into: a copy would double it."""
    assert proc.stdout and proc.stderr
    out, err = bytearray(), _Ends(STDERR_KEPT)
    pending = memoryview(input or b"")
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        if proc.stdin:
            selector.register(proc.stdin, selectors.EVENT_WRITE)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(proc.args, 0)
            for key, _ in selector.select(remaining):
                if key.data is None:  # stdin: a pipe takes PIPE_BUF bytes without blocking
                    pending = _feed(selector, key.fileobj, pending)  # type: ignore[arg-type]
                    continue
                chunk, buffer = os.read(key.fd, READ_CHUNK), key.data
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer += chunk
                if buffer is out and max_output is not None and len(out) > max_output:
                    raise OutputTooLarge(max_output)
    return out, err.bytes()  # type: ignore[return-value]


def _feed(selector: selectors.BaseSelector, pipe: IO[bytes], pending: memoryview) -> memoryview:
    """Write the next piece of `pending` to the renderer's stdin; close it when all is written or
    the renderer stopped reading."""
    try:
        written = os.write(pipe.fileno(), pending[:select.PIPE_BUF])
    except BrokenPipeError:
        written = len(pending)
    pending = pending[written:]
    if not pending:
        selector.unregister(pipe)
        pipe.close()
    return pending


class _Ends:
    """The first and last `size / 2` bytes written to it."""

    def __init__(self, size: int) -> None:
        self.half, self.head, self.tail, self.cut = size // 2, bytearray(), bytearray(), False

    def __iadd__(self, chunk: bytes) -> "_Ends":
        room = self.half - len(self.head)
        self.head += chunk[:room]
        self.tail += chunk[room:] if room > 0 else chunk
        if len(self.tail) > self.half:
            del self.tail[:len(self.tail) - self.half]
            self.cut = True
        return self

    def bytes(self) -> bytes:
        return bytes(self.head + (b"\n...\n" if self.cut else b"") + self.tail)


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
