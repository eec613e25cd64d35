"""Codes of required bindings checked against their value sets.

The ``fhir.resources`` models carry each coded element's allowed codes
(``enum_values``) but do not enforce them, so ``Patient.gender = "nam"`` would
pass structural validation. This module compiles, once per model class, the
paths that lead to such elements and checks a resource along those paths
only. Lists that the models mark as incomplete (a trailing ``"+"``) are not
enforced. https://hl7.org/fhir/R4/terminologies.html#required
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from lienthong.fhir.errors import Issue


@dataclass(frozen=True)
class _Step:
    json_name: str
    allowed: frozenset[str] | None
    child: Any  # model class to descend into, or None


def _child_model(annotation: Any) -> Any:
    """The model class an element annotation refers to, or None for primitives."""
    stack = [annotation]
    while stack:
        current = stack.pop()
        getter = getattr(current, "get_model_klass", None)
        if callable(getter):
            try:
                return getter()
            except Exception:  # an abstract type such as Resource has no single class
                return None
        stack.extend(typing.get_args(current))
    return None


@cache
def _edges(cls: Any) -> tuple[tuple[str, frozenset[str] | None, Any], ...]:
    """(JSON name, allowed codes of a complete required binding, child model) per element."""
    out = []
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra
        if not isinstance(extra, dict) or not extra.get("element_property"):
            continue
        if name in ("contained", "extension", "modifierExtension"):
            continue  # contained resources are whole resources; extensions are open
        enum = extra.get("enum_values")
        allowed = frozenset(enum) if enum and "+" not in enum else None
        out.append((info.alias or name, allowed, _child_model(info.annotation)))
    return tuple(out)


@cache
def _plan(cls: Any) -> tuple[_Step, ...]:
    """The steps from ``cls`` that lead to a checked code, found by a fixed point over
    the (cyclic) graph of element types reachable from it."""
    reachable, todo = {cls}, [cls]
    while todo:
        for _, _, child in _edges(todo.pop()):
            if child is not None and child not in reachable:
                reachable.add(child)
                todo.append(child)
    reaches = {c for c in reachable if any(allowed for _, allowed, _ in _edges(c))}
    changed = True
    while changed:
        changed = False
        for c in reachable - reaches:
            if any(child in reaches for _, _, child in _edges(c)):
                reaches.add(c)
                changed = True
    return tuple(
        _Step(name, allowed, child if child in reaches else None)
        for name, allowed, child in _edges(cls)
        if allowed is not None or child in reaches
    )


def check_codes(resource: dict[str, Any], cls: Any) -> list[Issue]:
    """Issues for every code outside its required value set."""
    issues: list[Issue] = []
    _check(resource, _plan(cls), resource["resourceType"], issues)
    return issues


def _check(node: dict[str, Any], steps: tuple[_Step, ...], path: str, issues: list[Issue]) -> None:
    for step in steps:
        value = node.get(step.json_name)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            where = f"{path}.{step.json_name}" + (f"[{i}]" if isinstance(value, list) else "")
            if step.allowed is not None and isinstance(item, str) and item not in step.allowed:
                issues.append(
                    Issue(
                        "code-invalid",
                        f"{where}: {item!r} is not one of {', '.join(sorted(step.allowed))}",
                        expression=(where,),
                    )
                )
            elif step.child is not None and isinstance(item, dict):
                _check(item, _plan(step.child), where, issues)
