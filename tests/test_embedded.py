"""The embedded Redis of `gitops-bot up`: one per data dir."""

from __future__ import annotations

import pytest

from bot.embedded import RedisServer


def test_two_embedded_redis_servers_never_share_a_data_dir(tmp_path):
    first = RedisServer(tmp_path / "redis").start()
    try:
        with pytest.raises(RuntimeError, match="another Redis is running on"):
            RedisServer(tmp_path / "redis").start()
    finally:
        first.stop()
    RedisServer(tmp_path / "redis").start().stop()  # free again once the first has stopped
