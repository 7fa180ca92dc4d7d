"""What a worker process builds once: settings, server config, Redis, forge clients, mirrors."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

import redis

from bot.config import ServerConfig, load_server_config
from bot.errors import PermanentError
from bot.forges import make_forge
from bot.forges.base import Forge
from bot.gitrepo import Mirrors
from bot.queue import Store
from bot.render_cache import RenderCache
from bot.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    server: ServerConfig
    store: Store
    _forges: dict[str, Forge] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Runtime":
        if not settings.redis_url:
            raise ValueError("REDIS_URL is not set")
        connection = redis.Redis.from_url(settings.redis_url)
        return cls(settings, load_server_config(settings.config_path), Store(connection, settings.name))

    def forge(self, name: str) -> Forge:
        if name not in self._forges:
            try:
                self._forges[name] = make_forge(name, self.settings)
            except ValueError as err:  # a setting is missing: no retry brings it
                raise PermanentError(str(err)) from None
        return self._forges[name]

    def forges(self) -> dict[str, Forge]:
        """The forge clients this process has made so far."""
        return dict(self._forges)

    @cached_property
    def mirrors(self) -> Mirrors:
        return Mirrors(self.settings.data_dir, self.server.fetch_timeout)

    @cached_property
    def render_cache(self) -> RenderCache:
        return RenderCache(self.settings.data_dir / "renders")


_current: Runtime | None = None
_lock = threading.Lock()


def current() -> Runtime:
    """The process's runtime, built from the environment on first use (never at import)."""
    global _current
    with _lock:
        if _current is None:
            _current = Runtime.from_settings(Settings.from_env())
        return _current


def install(runtime: Runtime | None) -> None:
    """Use this runtime in this process (tests and `gitops-bot up` build their own)."""
    global _current
    with _lock:
        _current = runtime
