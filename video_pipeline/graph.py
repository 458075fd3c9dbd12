"""Dependency order of experts: a stable topological sort and dependency closures."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


class CycleError(ValueError):
    """The dependencies form a cycle; `cycle` lists it, first name repeated at the end."""

    def __init__(self, cycle: list[str]):
        super().__init__("dependency cycle: " + " -> ".join(cycle))
        self.cycle = cycle


def topological_order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Names ordered so every name comes after its dependencies; ties keep the mapping's order.

    `deps` maps each name to the names it depends on (all keys of `deps`). Raises CycleError.
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise CycleError(path[path.index(name):] + [name])
        state[name] = 1
        for dep in deps[name]:
            visit(dep, path + [name])
        state[name] = 2
        order.append(name)

    for name in deps:
        visit(name, [])
    return order


def closure(names: Iterable[str], deps: Mapping[str, Sequence[str]]) -> set[str]:
    """`names` plus everything they depend on, transitively."""
    out: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in out:
            out.add(name)
            stack.extend(deps[name])
    return out


def dependents(deps: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Reverse edges: name -> the names that depend on it directly."""
    out: dict[str, list[str]] = {name: [] for name in deps}
    for name, ds in deps.items():
        for d in ds:
            out[d].append(name)
    return out
