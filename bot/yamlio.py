"""Bounded YAML and JSON parsing: strict UTF-8, size and expansion limits, errors that name the place."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

import yaml

from bot.renderers.errors import RenderError

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# Where a block collection can start on a line: after the indentation and any compact indicators
# (`- - `, `? `, `: `, `--- `) or node properties (`&anchor `, `!tag `).
_BLOCK_START = re.compile(r"^[ \t]*(?:(?:---|[-?:]|[&!][^ \t\n]*)[ \t]+)*", re.MULTILINE)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one input may cost."""

    max_file_bytes: int = 4 * 1024 * 1024
    """A larger file is refused before it is read."""

    max_nodes: int = 2_000_000
    """Values after alias expansion, per file: this is what stops a "billion laughs" document."""

    max_depth: int = 100
    """Nesting depth; real manifests stay far below it."""


DEFAULT_LIMITS = Limits()


def parse_documents(data: bytes, source: str, limits: Limits = DEFAULT_LIMITS,
                    loader: type = Loader) -> list[Any]:
    """Every document of a YAML (or JSON, by file name) file, empty ones dropped."""
    if len(data) > limits.max_file_bytes:
        raise RenderError.too_large(len(data), limits.max_file_bytes, source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RenderError(f"not valid UTF-8 (byte {err.start})", source) from None
    shallow = nesting_bound(text) <= limits.max_depth
    is_json = source.endswith(".json")
    try:
        if is_json:
            docs = [json.loads(text)] if text.strip() else []
        else:
            if not shallow:
                _check_depth(text, source, limits, loader)
            docs = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except yaml.MarkedYAMLError as err:
        raise RenderError(_describe(err), source) from None
    except (yaml.YAMLError, ValueError) as err:
        # json/yaml messages can quote the input; keep only the position-free problem.
        raise RenderError(f"invalid {'JSON' if is_json else 'YAML'}: {type(err).__name__}",
                          source) from None
    except RecursionError:
        raise RenderError(f"nested deeper than {limits.max_depth} levels", source) from None
    except (LookupError, AttributeError, TypeError):
        # How PyYAML's constructors fail on a value that does not fit its explicit tag (`!!bool maybe`).
        raise RenderError("invalid YAML: a value does not fit its tag (such as !!bool or !!timestamp)",
                          source) from None
    if not shallow or "&" in text:  # without anchors there are no aliases to expand
        check_bounds(docs, source, limits)
    return docs


def nesting_bound(text: str) -> int:
    """An upper bound on how deep collections in `text` nest, found without parsing it.

    Flow collections each need a `[` or `{`. A nested block collection starts further right than
    its parent, except a sequence directly under a mapping key, so block nesting is at most
    twice the rightmost column where a block collection can start.
    """
    column = max(map(len, _BLOCK_START.findall(text)), default=0)
    return text.count("[") + text.count("{") + 2 * (column + 1)


def _check_depth(text: str, source: str, limits: Limits, loader: type) -> None:
    """Refuse deep nesting from the event stream, before libyaml's composer recurses into it.

    The composer recurses on the C stack, so a document nested some 30,000 deep crashes the
    process instead of raising.
    """
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > limits.max_depth:
                raise RenderError(f"nested deeper than {limits.max_depth} levels", source)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _describe(err: yaml.MarkedYAMLError) -> str:
    """The problem and its position, without the snippet of source PyYAML would quote.

    The snippet could be a Secret's value, so it is never shown.
    """
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = err.problem or err.context or "invalid YAML"
    if err.context and err.problem:
        problem = f"{err.context}, {err.problem}"
    return f"invalid YAML: {where}{problem}"


def check_bounds(docs: Iterable[Any], source: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse documents whose aliases expand too far or that nest too deep.

    Aliases share one Python object, so each container is measured once, by identity: the walk
    costs the size of the file, not of its expansion. Depth is measured the same way, so an
    alias to a deep anchor counts as deep wherever it is used.
    """
    measured: dict[int, tuple[int, int]] = {}
    total = 0
    for doc in docs:
        size, height = _measure(doc, measured, source, limits)
        total += size
        if total > limits.max_nodes:
            raise _bomb(source, limits)


def _measure(root: Any, measured: dict[int, tuple[int, int]], source: str,
             limits: Limits) -> tuple[int, int]:
    """(values after expansion, nesting height) of `root`, memoised in `measured` by identity."""
    # An iterative depth-first walk: deep input must not exhaust Python's stack. A container
    # whose children are being walked is on the current path, so meeting it again is a cycle.
    walking: dict[int, list[Any]] = {}
    stack = [root]
    while stack:
        node = stack[-1]
        if id(node) in measured or not isinstance(node, (dict, list)):
            stack.pop()
            continue
        children = walking.get(id(node))
        if children is None:
            children = walking[id(node)] = [c for c in (node.values() if isinstance(node, dict) else node)
                                            if isinstance(c, (dict, list))]
            if any(id(c) in walking for c in children):
                raise RenderError("an alias refers to a collection that contains it", source)
            stack.extend(children)
            continue
        stack.pop()
        del walking[id(node)]
        size = 1 + len(node) - len(children) + sum(measured[id(c)][0] for c in children)
        height = 1 + max((measured[id(c)][1] for c in children), default=0)
        if size > limits.max_nodes:
            raise _bomb(source, limits)
        if height > limits.max_depth:
            raise RenderError(f"nested deeper than {limits.max_depth} levels", source)
        measured[id(node)] = (size, height)
    return measured.get(id(root), (1, 0))


def _bomb(source: str, limits: Limits) -> RenderError:
    return RenderError(f"expands to more than {limits.max_nodes:,} values (a YAML alias bomb?)", source)


def dump(value: Any) -> str:
    """Stable YAML for people: sorted keys, block style, no line folding."""
    return yaml.dump(value, Dumper=Dumper, sort_keys=True, default_flow_style=False,
                     allow_unicode=True, width=1_000_000)
