"""Mirrors: one per repository, never shared, and a stalled remote cannot hold one for long."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from bot.gitrepo import GitError, Mirror, Mirrors, mirror_name


def test_distinct_repositories_never_share_a_mirror(tmp_path):
    names = ["grp/sub/app", "grp__sub/app", "grp/sub__app", "grp/sub_app", "grp/sub%2Fapp", "Grp/Sub/App",
             "a" * 300, "a" * 299 + "b"]
    paths = {Mirrors(tmp_path).get("gitlab", name).path for name in names}
    assert len(paths) == len(names)
    assert all(p.parent == tmp_path / "mirrors" / "gitlab" and len(p.name) <= 205 for p in paths)
    assert mirror_name("acme/infra") == "acme%2Finfra"


@pytest.fixture
def stalled_remote():
    """An HTTP "remote" that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/acme/infra.git"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_stalled_remote_is_given_up_on_and_reported(tmp_path, stalled_remote):
    mirror = Mirror(tmp_path / "m.git", fetch_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(GitError) as caught:
        mirror.ensure(stalled_remote, ["a" * 40], ["+refs/heads/main:refs/heads/main"], refresh=True)
    assert time.monotonic() - started < 5  # one bounded fetch, not one per refspec and SHA
    assert str(caught.value) == "git fetch took longer than 1.5 s and was stopped"
    # The mirror's lock is free again: the next fetch is not held up behind the dead one.
    with pytest.raises(GitError):
        mirror.ensure(stalled_remote, [], ["+refs/heads/main:refs/heads/main"], refresh=True)
    assert time.monotonic() - started < 9

