"""The error every renderer raises, and the reduction of a renderer's own error text to what cannot
carry a value from the repository."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

ELLIPSIS = "…"
MAX_MESSAGE = 2000
MIN_VALUE = 4
"""Given values shorter than this are not masked one by one: they would mask ordinary words
(`web`, `true`), and words that short are caught by the word rules below anyway."""


class RenderError(Exception):
    """A user-facing render failure: which file, and what is wrong. Never a traceback."""

    def __init__(self, message: str, file: str | None = None) -> None:
        self.message = message
        self.file = file
        super().__init__(f"{file}: {message}" if file else message)

    @classmethod
    def too_large(cls, size: int, limit: int, file: str) -> "RenderError":
        return cls(f"file is {size:,} bytes, larger than the limit of {limit:,}", file)


@dataclass
class Known:
    """What one render's error text may show, and what it must not.

    Everything else in the text is judged by its shape in `reduce`.
    """

    names: set[str] = field(default_factory=set)
    """Strings proven not to be values: repository paths and their parts, field names, strings a
    kustomization names (bases, patch files, targets), tokens of Helm template code."""
    values: set[str] = field(default_factory=set)
    """What the renderer was given as data (generator literals, env files, Helm values): never shown,
    even where the text's shape would allow it."""
    messages: set[str] = field(default_factory=set)
    """String literals of template code: a `fail` or `required` message equal to one is shown."""

    def update(self, other: "Known") -> None:
        self.names |= other.names
        self.values |= other.values
        self.messages |= other.messages

    def add_path(self, path: str) -> None:
        self.names.add(path)
        self.names.update(p for p in path.split("/") if p)

    def is_path(self, text: str) -> bool:
        """Whether every part of `text` is a known name: a path in (or built from) the repository."""
        parts = text.split("/")
        return "/" in text and all(p in self.names or p in ("", ".", "..") for p in parts)


# Spans whose content is judged as one value: Go's %q strings and raw strings, and kustomize's
# '%s' (a quote only opens after a non-word and closes before one, so "can't" is no span and
# nested 'err='…'' quotes pair up from the inside).
_SPAN = re.compile(r'''"(?:[^"\\\n]|\\.)*"|`[^`]*`|(?<![\w'])'[^'\n]*'(?![\w'])|\[(?!noNs\])[^\[\]\n]*\]|<[^<>\n]*>''')
_WORD = re.compile(r"\S+")
_EDGE = "\"'`([{<)]}>,;:.!?"
_VOCABULARY = re.compile(r"[A-Za-z]+(?:['’_.-][A-Za-z]+)*")  # English, and Go's type and field names
_NUMBER = re.compile(r"\d{1,7}")  # line, column, byte offset, exit status
_POSITION = re.compile(r"(?P<at>.*?)((?::\d{1,7})+)")  # `file:12:3`, `gotpl:1`
_API_VERSION = re.compile(r"(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*/)?v\d+(?:(?:alpha|beta)\d+)?")
_RES_ID = re.compile(r"[A-Za-z]+\.v\d+(?:(?:alpha|beta)\d+)?\.[a-z0-9.-]*/[a-z0-9.-]+\.(?:\[noNs\]?|[a-z0-9-]+)")
_EXECUTION = re.compile(r"(execution error at \([^()\n]*\)): (.*)$", re.DOTALL)
_DUMPS = ("node contents:",)  # kustomize prints a whole YAML node after these
_FIXED = {"gotpl", "utf8", "base64", "key=value"}  # the renderers' own words that a rule below would hide
_PREFIXES = ("err=",)  # kustomize's `accumulation err='…'`: the quote it opens is judged on its own


def reduce(text: str | bytes, known: Known, roots: Iterable[str] = ()) -> str:
    """A renderer's error output as one line that cannot carry a value from the repository.

    The renderer's fixed wording stays, and so do repository paths, line and column numbers and the
    names in `known`. Everything a value could hide in becomes `…`:
    - a quoted string, raw string, list or template action that is not a known name or path;
    - a word that is not plain English, a known name, a number or a position (`key=value`,
      `key:value` and random-looking tokens all fall here);
    - the rest of a line from the first byte that is not UTF-8, and any YAML node kustomize dumps;
    - a Helm `fail`/`required` message that is not a literal of the chart's template code;
    - anything holding one of `known.values`.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = _relative(text, roots)
    for dump in _DUMPS:
        if dump in text:
            text = text[:text.index(dump) + len(dump)] + f" {ELLIPSIS}"
    text = "\n".join(_before_undecodable(line) for line in text.splitlines())
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    text = "".join(c if c.isprintable() else " " for c in text)
    for value in known.values:
        if len(value) >= MIN_VALUE and any(c.isspace() for c in value):
            text = text.replace(value.strip(), ELLIPSIS)  # a value of several words: the words alone pass
    execution = _EXECUTION.search(text)
    if execution:
        message = execution[2].strip()
        kept = message if message in known.messages and not _holds_value(message, known) else ELLIPSIS
        text = text[:execution.start()] + _spans(execution[1], known) + f": {kept}"
    else:
        text = _spans(text, known)
    text = re.sub(rf"{ELLIPSIS}(?:[\s,;:]*{ELLIPSIS})+", ELLIPSIS, text)
    return text[:MAX_MESSAGE]


def error_lines(stderr: bytes) -> bytes:
    """A CLI's error without its `Error:` prefixes, and without the warnings printed before it."""
    lines = stderr.splitlines()
    first = next((i for i, line in enumerate(lines) if line.lower().startswith(b"error:")), 0)
    return b"\n".join(re.sub(rb"^error:\s*", b"", line, flags=re.IGNORECASE) for line in lines[first:])


def _relative(text: str, roots: Iterable[str]) -> str:
    """Paths under a render root made repository-relative (`.` for the root itself)."""
    for root in sorted({r.rstrip("/") for r in roots if r.strip("/")}, key=len, reverse=True):
        text = text.replace(root + "/", "").replace(root, ".")
    return text


def _before_undecodable(line: str) -> str:
    """`line` up to the part (after Go's `: ` separator) that holds its first byte that is not
    UTF-8: what that part quotes (an env file's line, say) can be shown by no rule."""
    bad = line.find("\ufffd")
    if bad < 0:
        return line
    cut = line.rfind(": ", 0, bad)
    return f"{line[:cut + 1]} {ELLIPSIS}" if cut >= 0 else ELLIPSIS


def _spans(text: str, known: Known) -> str:
    out, last = [], 0
    for span in _SPAN.finditer(text):
        out.append(_words(text[last:span.start()], known))
        out.append(_span(span[0], known))
        last = span.end()
    out.append(_words(text[last:], known))
    return "".join(out)


def _span(span: str, known: Known) -> str:
    opening, content, closing = span[0], span[1:-1], span[-1]
    if opening == "'" and any(c.isspace() for c in content):
        return opening + _spans(content, known) + closing  # kustomize nests whole messages in '…'
    if opening in "[<":
        items = content.split()
        if opening == "[" and any(_NUMBER.fullmatch(i) for i in items):
            return f"[{ELLIPSIS}]"  # a list of numbers is how Go prints bytes
        return opening + " ".join(i if _safe_word(i, known) else ELLIPSIS for i in items) + closing
    if not content.strip(_EDGE + " ") or _safe_name(content, known) or _RES_ID.fullmatch(content):
        return span
    return opening + ELLIPSIS + closing


def _words(text: str, known: Known) -> str:
    return _WORD.sub(lambda m: _word(m[0], known), text)


def _word(word: str, known: Known) -> str:
    prefix = next((p for p in _PREFIXES if word.startswith(p)), "")
    if prefix:
        return prefix + _word(word[len(prefix):], known)
    core = word.strip(_EDGE)
    if not core or _safe_word(core, known):
        return word
    start = word.index(core)
    return word[:start] + ELLIPSIS + word[start + len(core):]


def _safe_word(word: str, known: Known) -> bool:
    """Whether a bare word may be shown: a name or path (with a position), a number or a plain word,
    holding no value. (`user:1234` is no position: only a known name takes one.)"""
    word = word.strip(_EDGE)
    if not word.strip("{}[]().*") or _safe_name(word, known):
        return True
    if _holds_value(word, known):
        return False
    return bool(_VOCABULARY.fullmatch(word.strip("{}[]().*")) or _NUMBER.fullmatch(word)
                or _API_VERSION.fullmatch(word) or _RES_ID.fullmatch(word))


def _safe_name(text: str, known: Known) -> bool:
    """Whether `text` as a whole is a known name or path (with a position), or Helm's own name."""
    position = _POSITION.fullmatch(text)
    text = position["at"] if position else text
    if text in _FIXED or known.is_path(text):
        return True
    return text in known.names and not _holds_value(text, known)


def _holds_value(text: str, known: Known) -> bool:
    return any(len(v) >= MIN_VALUE and v in text for v in known.values)
