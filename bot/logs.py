"""Structured logs: one JSON object per line, with delivery and job ids, secrets masked."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Iterable

# Token shapes of the forges, and credentials inside URLs: masked even when not configured here.
TOKEN_PATTERNS = re.compile(
    r"(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,}"
    r"|(?<=://)[^/@\s:]+:[^/@\s]+(?=@))")
MASK = "***"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class Masker:
    """Replaces known secret values and token-shaped strings."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return TOKEN_PATTERNS.sub(MASK, text)


class JsonFormatter(logging.Formatter):
    def __init__(self, masker: Masker):
        super().__init__()
        self.mask = masker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return self.mask(json.dumps(entry, default=str))


class JobContext(logging.Filter):
    """Adds the RQ job id (and the delivery that queued it) to records logged inside a job."""

    def filter(self, record: logging.LogRecord) -> bool:
        from rq import get_current_job

        job = get_current_job()
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
    for name in ("rq.worker", "rq.scheduler", "gunicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
