"""Bounded YAML and JSON parsing: strict UTF-8, size and expansion limits, errors that name the place."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

import yaml

from bot.renderers.errors import RenderError

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one input may cost."""

    max_file_bytes: int = 4 * 1024 * 1024
    """A larger file is refused before it is parsed."""

    max_nodes: int = 2_000_000
    """Values after alias expansion, per file: this is what stops a "billion laughs" document."""

    max_depth: int = 100
    """Nesting depth; real manifests stay far below it."""


DEFAULT_LIMITS = Limits()


def parse_documents(data: bytes, source: str, limits: Limits = DEFAULT_LIMITS) -> list[Any]:
    """Every document of a YAML (or JSON, by file name) file, empty ones dropped."""
    if len(data) > limits.max_file_bytes:
        raise RenderError(f"file is {len(data):,} bytes, over the limit of {limits.max_file_bytes:,}", source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RenderError(f"not valid UTF-8 (byte {err.start})", source) from None
    try:
        if source.endswith(".json"):
            docs = [json.loads(text)] if text.strip() else []
        else:
            docs = [d for d in yaml.load_all(text, Loader=Loader) if d is not None]
    except yaml.MarkedYAMLError as err:
        raise RenderError(_describe(err), source) from None
    except (yaml.YAMLError, ValueError) as err:
        # json/yaml messages can quote the input; keep only the position-free problem.
        raise RenderError(f"invalid {'JSON' if source.endswith('.json') else 'YAML'}: "
                          f"{type(err).__name__}", source) from None
    except RecursionError:
        raise RenderError(f"nested deeper than {limits.max_depth} levels", source) from None
    check_bounds(docs, source, limits)
    return docs


def _describe(err: yaml.MarkedYAMLError) -> str:
    """The problem and its position, without the snippet of source PyYAML would quote.

    The snippet could be a Secret's value, so it is never shown.
    """
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = err.problem or err.context or "invalid YAML"
    if err.context and err.problem:
        problem = f"{err.context}, {err.problem}"
    return f"{where}{problem}"


def check_bounds(docs: Iterable[Any], source: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse documents whose aliases expand too far or that nest too deep.

    Aliases share one Python object, so sizes are memoised by identity: the walk costs the
    size of the file, not of its expansion.
    """
    sizes: dict[int, int] = {}
    total = 0
    for doc in docs:
        total += _expanded_size(doc, sizes, source, limits)
        if total > limits.max_nodes:
            raise RenderError(f"expands to more than {limits.max_nodes:,} values "
                              "(a YAML alias bomb?)", source)


def _expanded_size(root: Any, sizes: dict[int, int], source: str, limits: Limits) -> int:
    # Iterative post-order walk: deep input must not exhaust Python's stack.
    stack: list[tuple[Any, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, visited = stack.pop()
        if not isinstance(node, (dict, list)) or id(node) in sizes:
            continue
        children = list(node.values()) if isinstance(node, dict) else node
        if visited:
            size = 1 + sum(sizes.get(id(c), 1) for c in children)
            if size > limits.max_nodes:
                raise RenderError(f"expands to more than {limits.max_nodes:,} values "
                                  "(a YAML alias bomb?)", source)
            sizes[id(node)] = size
            continue
        if depth > limits.max_depth:
            raise RenderError(f"nested deeper than {limits.max_depth} levels", source)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if isinstance(c, (dict, list)))
    return sizes.get(id(root), 1)


def dump(value: Any) -> str:
    """Stable YAML for people: sorted keys, block style, no line folding."""
    return yaml.dump(value, Dumper=Dumper, sort_keys=True, default_flow_style=False,
                     allow_unicode=True, width=1_000_000)
