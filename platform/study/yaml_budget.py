"""Read the user's YAML (studies, search spaces, guidance profiles) within a fixed budget.

``yaml.safe_load`` runs no code, but it is not cheap on hostile input: a few hundred bytes of
nested aliases ("billion laughs") load as a small shared graph that expands to billions of
values as soon as anything walks it (validation, ``deepcopy``, the ``repr`` an error message
prints); deep nesting overflows the Python stack (``RecursionError``); ``/dev/zero`` never ends.
So the platform reads YAML only through :func:`load_yaml_file`, which refuses, while loading and
before anything walks the result:

- files over ``max_bytes`` (read at most that much, so a device or endless pipe cannot stall it);
- nesting deeper than ``max_depth``, counted as the parser builds the document (before Python's
  stack can overflow) and again after aliases are expanded;
- documents whose alias-expanded size exceeds ``max_nodes`` nodes, and aliases that refer to a
  collection containing themselves.

Aliases within the budget keep working (a study file needs none, but ``&defaults``/``*defaults``
is cheap to allow). Every refusal is a :class:`~salient.platform.errors.StudyError` naming the
file, the line and the limit.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml
from salient.platform.errors import StudyError

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "YamlBudgetError", "expanded_size", "load_yaml_file"]

#: Largest YAML file read (bytes). Study files are a few kB.
MAX_YAML_BYTES = 1 << 20
#: Deepest nesting allowed (a study's deepest key path has about 6 levels).
MAX_YAML_DEPTH = 32
#: Most nodes a document may hold once every alias is expanded.
MAX_YAML_NODES = 100_000


class YamlBudgetError(yaml.MarkedYAMLError):
    """A YAML document is over the size, depth or alias budget."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def expanded_size(root: yaml.Node, max_nodes: int) -> tuple[int, int]:
    """``(nodes, depth)`` of a composed document with every alias expanded, capped at ``max_nodes + 1``.

    Each distinct node is visited once (aliased nodes are shared, so the walk is linear in the
    file), without recursion.

    Args:
        root: the document's root node, as the composer returns it.
        max_nodes: counts are clipped just above this (no huge integers for an alias bomb).

    Raises:
        YamlBudgetError: an alias refers to a collection that contains it (infinite expansion).
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            kids = _children(node)
            size[key] = min(max_nodes + 1, 1 + sum(size[id(k)] for k in kids))
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            continue
        if key in size:
            continue
        if key in on_path:
            raise YamlBudgetError(
                problem="an alias refers to a collection that contains it (infinite expansion)",
                problem_mark=node.start_mark,
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
    return size[id(root)], depth[id(root)]


class _BudgetLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts nesting while composing and checks the expanded size after."""

    def __init__(self, stream: str, max_depth: int, max_nodes: int):
        super().__init__(stream)
        self._max_depth = max_depth
        self._max_nodes = max_nodes
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # Composing recurses once per level: stop at the limit, long before the stack does.
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                raise YamlBudgetError(
                    problem=f"nested more than {self._max_depth} levels deep (the limit)",
                    problem_mark=self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is None:
            return None
        nodes, depth = expanded_size(node, self._max_nodes)
        if nodes > self._max_nodes:
            raise YamlBudgetError(
                problem=f"expands to more than {self._max_nodes} values (aliases); the limit is {self._max_nodes}",
                problem_mark=node.start_mark,
            )
        if depth > self._max_depth:
            raise YamlBudgetError(
                problem=f"nested {depth} levels deep once aliases are expanded (the limit is {self._max_depth})",
                problem_mark=node.start_mark,
            )
        return node


def _read_bounded(path: Path, max_bytes: int) -> str:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise StudyError.single(path, "", str(path), "file not found") from None
    except OSError as exc:
        raise StudyError.single(path, "", str(path), f"cannot be read: {exc.strerror or exc}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise StudyError.single(path, "", str(path), "not a regular file")
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise StudyError.single(path, "", str(path), f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise StudyError.single(path, "", str(path), f"larger than {max_bytes} bytes, the limit for a YAML file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StudyError.single(
            path, "", str(path), f"cannot be read: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None


def load_yaml_file(
    path: Path,
    *,
    max_bytes: int = MAX_YAML_BYTES,
    max_depth: int = MAX_YAML_DEPTH,
    max_nodes: int = MAX_YAML_NODES,
) -> Any:
    """Read one YAML document with the safe loader, within the budget.

    Args:
        path: the file.
        max_bytes: largest file read.
        max_depth: deepest nesting, before and after alias expansion.
        max_nodes: most nodes after alias expansion.

    Raises:
        StudyError: the file is missing, unreadable, over a limit or not valid YAML; the issue
            names the file and, where known, the line and column.
    """
    for name, value in (("max_bytes", max_bytes), ("max_depth", max_depth), ("max_nodes", max_nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    text = _read_bounded(path, max_bytes)
    loader: _BudgetLoader | None = None
    try:
        loader = _BudgetLoader(text, max_depth, max_nodes)  # the reader refuses control characters here
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if isinstance(exc, yaml.reader.ReaderError):  # a control character: no line, a position
            where = f"character {exc.position + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        lines = text.splitlines()
        shown = lines[mark.line] if mark and mark.line < len(lines) else ""
        what = "refused" if isinstance(exc, YamlBudgetError) else "not valid YAML"
        raise StudyError.single(path, where, shown, f"{what}: {problem}") from None
    except ValueError as exc:  # a scalar the constructor cannot convert (a 5000-digit int, month 13)
        raise StudyError.single(path, "", str(path), f"not valid YAML: {exc}") from None
    except RecursionError:  # not expected within max_depth; still the input's doing
        raise StudyError.single(path, "", str(path), "nested too deeply to parse") from None
    except MemoryError:
        raise StudyError.single(path, "", str(path), "too large to parse (ran out of memory)") from None
    finally:
        if loader is not None:
            loader.dispose()
