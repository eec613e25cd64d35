"""The write-path check lienthong used before the R4 structure validator, kept as the
reference the equivalence tests and ``bench/bench_validate.py`` compare against:
``fhir.resources`` R4B pydantic models (``model_validate``), then the codes of required
bindings taken from the models' ``enum_values`` (which the models carry but do not
enforce; lists marked incomplete with a trailing ``"+"`` are not enforced), and strings
free of control characters.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

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


@cache
def model(resource_type: str) -> Any:
    """The R4B model of a resource type, or None (data types share the lookup)."""
    try:
        cls = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None
    fields = getattr(cls, "model_fields", {})
    return cls if "meta" in fields and "implicitRules" in fields else None


_ALLOWED_CONTROL = frozenset("\t\r\n")


def _control_character(value: Any) -> bool:
    if isinstance(value, str):
        return any(c < " " and c not in _ALLOWED_CONTROL for c in value)
    if isinstance(value, dict):
        return any(_control_character(v) for v in value.values())
    if isinstance(value, list):
        return any(_control_character(v) for v in value)
    return False


def reference_errors(resource: dict[str, Any]) -> list[str]:
    """Why the former check refused ``resource`` (pydantic error locations, code issues);
    empty when it accepted it."""
    rtype = resource.get("resourceType")
    cls = model(rtype) if isinstance(rtype, str) else None
    if cls is None:
        return ["unknown resource type"]
    if _control_character(resource):
        return ["control character"]
    try:
        cls.model_validate(resource)
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    except (ValueError, TypeError) as exc:
        return [str(exc)]
    return [i.diagnostics for i in check_codes(resource, cls)]
