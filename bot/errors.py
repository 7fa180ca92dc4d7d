"""The two kinds of failure a job can meet, as kopf has them: worth another try, or not."""

from __future__ import annotations


class TemporaryError(Exception):
    """Worth trying again: after `delay` seconds when it is known, else after the job's own back-off."""

    def __init__(self, message: str, delay: float | None = None):
        super().__init__(message)
        self.delay = delay


class PermanentError(Exception):
    """Trying again cannot help (a setting is missing, a config is broken): fail once and say why."""
