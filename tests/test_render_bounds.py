"""What one renderer may cost the worker: its stdout is read up to a limit and the renderer killed past
it, its stderr is kept only at both ends, and its memory is capped, boxed or not."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest

from bot.renderers.sandbox import STDERR_KEPT, Box, OutputTooLarge, memory_words, python_programs

PYTHON = str(python_programs()[0])
MiB = 1024 * 1024


def run_python(tmp_path: Path, code: str, boxed: bool, **options):
    box = Box(tmp_path, python_programs(), boxed, **options.pop("box", {}))
    return box, box.run([PYTHON, "-I", "-S", "-c", code], timeout=60, **options)


@pytest.mark.parametrize("boxed", [True, False], ids=["boxed", "unboxed"])
def test_endless_output_is_cut_at_the_limit_and_the_renderer_killed(tmp_path, boxed):
    pidfile = tmp_path / "pid"  # the box's tree is read-only: only an unboxed writer leaves its PID
    code = (f"import os\ntry: open({str(pidfile)!r}, 'w').write(str(os.getpid()))\nexcept OSError: pass\n"
            "chunk = b'x' * 65536\nwhile True: os.write(1, chunk)\n")
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(OutputTooLarge) as caught:
            run_python(tmp_path, code, boxed, max_output=4 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 10
    assert str(caught.value) == "output passed the limit of 4,194,304 bytes"
    assert peak < 5 * MiB  # the limit, one read and the buffer's growth: never the whole output
    if not boxed:  # boxed, the writer has a PID of its own namespace; its box dies with bwrap
        pid = int(pidfile.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_output_within_the_limit_and_a_large_input_pass_whole(tmp_path):
    data = os.urandom(3 * MiB)
    box = Box(tmp_path, python_programs(), False)
    proc = box.run([PYTHON, "-I", "-S", "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
                   timeout=60, input=data, max_output=len(data))
    assert proc.returncode == 0 and proc.stdout == data


def test_stderr_keeps_its_beginning_and_its_end(tmp_path):
    code = ("import sys\nsys.stderr.write('first line\\n')\n"
            "for i in range(200_000): sys.stderr.write(f'noise {i}\\n')\n"
            "sys.stderr.write('Error: the real reason\\n'); sys.exit(1)\n")
    _, proc = run_python(tmp_path, code, False)
    assert proc.returncode == 1
    assert len(proc.stderr) <= STDERR_KEPT + 8
    assert proc.stderr.startswith(b"first line\n") and proc.stderr.endswith(b"Error: the real reason\n")


@pytest.mark.parametrize("boxed", [True, False], ids=["boxed", "unboxed"])
def test_memory_is_capped(tmp_path, boxed):
    code = "x = bytearray(512 * 1024 * 1024)\nprint('allocated')\n"
    box, proc = run_python(tmp_path, code, boxed, box={"memory": 128 * MiB})
    assert proc.returncode != 0 and b"allocated" not in proc.stdout
    assert box.exhausted(proc)
    _, proc = run_python(tmp_path, code, boxed, box={"memory": None})
    assert proc.returncode == 0 and proc.stdout == b"allocated\n"


def test_go_renderers_collect_before_the_cap(tmp_path):
    code = "import os; print(os.environ['GOGC'], os.environ['GOMEMLIMIT'], os.environ['GOMAXPROCS'])"
    _, proc = run_python(tmp_path, code, True, box={"memory": 256 * MiB})
    assert proc.stdout.split() == [b"400", str(192 * MiB).encode(), b"1"]


def test_memory_is_named_for_people():
    assert memory_words(1024 ** 3) == "1 GiB"
    assert memory_words(384 * MiB) == "384 MiB"
