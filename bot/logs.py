"""Structured logs: one JSON object per line, with delivery and job ids, secrets masked."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Iterable

import orjson

# Token shapes of the forges, and credentials inside URLs: masked even when not configured here.
TOKEN_PATTERNS = re.compile(
    r"(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,}"
    r"|(?<=://)[^/@\s:]+:[^/@\s]+(?=@))")
TOKEN_HINTS = re.compile(r"gh[pousr]_|github_pat_|glpat-|://")
"""What every match of `TOKEN_PATTERNS` contains: a text without any needs no pass of the full
pattern, which tries each of its branches at every character (4 µs for a web request's line)."""
MASK = "***"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_AS_JSON_MODULE = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
"""Keys and values as `json.dumps(default=str)` writes them: dataclasses and datetimes by `str()`."""


class Masker:
    """Replaces known secret values and token-shaped strings."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return TOKEN_PATTERNS.sub(MASK, text) if TOKEN_HINTS.search(text) else text


class JsonFormatter(logging.Formatter):
    """Values JSON cannot hold are written as `str()` gives them. The web process writes a line per
    delivery, so the line is made with orjson, and the time's seconds are formatted once a second."""

    def __init__(self, masker: Masker):
        super().__init__()
        self.mask = masker
        self._second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        second, stamp = self._second
        if int(record.created) != second:
            second = int(record.created)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, stamp)
        entry: dict[str, Any] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        try:
            line = orjson.dumps(entry, default=str, option=_AS_JSON_MODULE).decode()
        except TypeError:  # what orjson refuses (an integer past 64 bits), the json module writes
            line = json.dumps(entry, default=str)
        return self.mask(line)


class JobContext(logging.Filter):
    """Adds the RQ job id (and the delivery that queued it) to records logged inside a job."""

    def __init__(self) -> None:
        super().__init__()
        from rq import get_current_job  # once, not per record: a package's `from` import is slow

        self.current_job = get_current_job

    def filter(self, record: logging.LogRecord) -> bool:
        job = self.current_job()
        if job is not None and not hasattr(record, "job"):
            record.job = job.id
            delivery = (job.meta or {}).get("delivery")
            if delivery and not hasattr(record, "delivery"):
                record.delivery = delivery
        return True


def setup(secrets: Iterable[str] = (), level: int = logging.INFO) -> None:
    """Route every logger (RQ's and gunicorn's included) through one masked JSON handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(Masker(secrets)))
    handler.addFilter(JobContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # No line shows where it was logged from: skip walking the stack for it on every record (the
    # logging HOWTO's way), a third of logging a delivery.
    logging._srcfile = None
    for name in ("rq.worker", "rq.scheduler", "gunicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
