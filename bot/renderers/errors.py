"""The error every renderer raises for a problem the user can fix in their repository."""

from __future__ import annotations


class RenderError(Exception):
    """A user-facing render failure: which file, and what is wrong. Never a traceback."""

    def __init__(self, message: str, file: str | None = None) -> None:
        self.message = message
        self.file = file
        super().__init__(f"{file}: {message}" if file else message)

    @classmethod
    def too_large(cls, size: int, limit: int, file: str) -> "RenderError":
        return cls(f"file is {size:,} bytes, larger than the limit of {limit:,}", file)
