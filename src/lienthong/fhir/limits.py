"""Limits on what a request may hold and what a response may grow to.

Every limit is a setting (``LIENTHONG_*``, :class:`lienthong.settings.Settings`) and every
refusal is an OperationOutcome naming the setting, so a client (or its operator) knows
which limit it met and what to change:

- body sizes (``LIENTHONG_BODY_MAX_BYTES`` for Binary content and as the ceiling,
  ``LIENTHONG_BUNDLE_MAX_BYTES``, ``LIENTHONG_RESOURCE_MAX_BYTES``): 413, checked by the
  HTTP layer while the body streams in;
- the shape of a JSON body (:func:`check_document`): string length, array length, nesting
  depth and entries per Bundle, in one pass over the parsed body;
- the size of a batch or transaction response (:class:`ResponseBudget`).

orjson refuses documents nested deeper than 1024 levels itself; ``LIENTHONG_JSON_MAX_DEPTH``
is checked well below that, before the resource models (which recurse) see the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from lienthong.fhir.errors import FhirError, Issue, fhirpath_step
from lienthong.settings import Settings

BASE64_KEYS = frozenset({"data"})
"""Keys of base64Binary elements (``Attachment.data``, ``Binary.data``, ``Signature.data``):
their strings are bounded by the body size, not by ``LIENTHONG_STRING_MAX_CHARS``."""


def setting_name(field: str) -> str:
    return f"LIENTHONG_{field.upper()}"


def too_costly(status: int, message: str, field: str, *expression: str) -> FhirError:
    """A refusal naming the limit's setting."""
    return FhirError(
        status,
        [
            Issue(
                "too-costly",
                f"{message} ({setting_name(field)})",
                expression=tuple(e for e in expression if e),
            )
        ],
    )


@dataclass(frozen=True)
class Limits:
    """The limits of one server, read from its settings."""

    body_max_bytes: int
    bundle_max_bytes: int
    resource_max_bytes: int
    string_max_chars: int
    array_max_items: int
    json_max_depth: int
    bundle_max_entries: int
    response_max_bytes: int
    url_max_chars: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})

    def body_limit(self, kind: str) -> tuple[int, str]:
        """The largest body of a ``kind`` ("binary", "bundle" or "resource") request and
        the setting that sets it (the lower of the kind's own and the ceiling)."""
        field = {"binary": "body_max_bytes", "bundle": "bundle_max_bytes"}.get(
            kind, "resource_max_bytes"
        )
        own: int = getattr(self, field)
        if own >= self.body_max_bytes:
            return self.body_max_bytes, "body_max_bytes"
        return own, field


class _Exceeded(Exception):
    """A shape limit met; ``path`` collects the steps to the element, innermost first."""

    def __init__(self, field: str, message: str, status: int = 413) -> None:
        self.field, self.message, self.status = field, message, status
        self.path: list[str | int] = []


def check_document(document: Any, limits: Limits) -> None:
    """Refuse a parsed JSON body whose strings, arrays, nesting or Bundle entries go past
    the limits: 413 (400 for the depth) naming the setting and the element's FHIRPath.

    One pass, without building paths unless a limit is met (the path is collected as the
    refusal unwinds). A Bundle's own ``entry`` list is counted against
    ``LIENTHONG_BUNDLE_MAX_ENTRIES`` rather than ``LIENTHONG_ARRAY_MAX_ITEMS``."""
    if type(document) is not dict:
        if type(document) is list:
            try:
                _Walker(limits).list(document, 1)
            except _Exceeded as exc:
                raise _refusal(exc, "") from None
        return
    root = document.get("resourceType")
    root_name = root if isinstance(root, str) and root.isidentifier() else ""
    walker = _Walker(limits)
    entries = document.get("entry") if root == "Bundle" else None
    try:
        if type(entries) is list:
            if len(entries) > limits.bundle_max_entries:
                raise too_costly(
                    413,
                    f"the Bundle has {len(entries):,} entries, more than "
                    f"{limits.bundle_max_entries:,}; send them in several bundles",
                    "bundle_max_entries",
                    "Bundle.entry",
                )
            walker.dict({k: v for k, v in document.items() if k != "entry"}, 1)
            for i, entry in enumerate(entries):
                try:
                    walker.item(entry, 3)
                except _Exceeded as exc:
                    exc.path.extend((i, "entry"))
                    raise
        else:
            walker.dict(document, 1)
    except _Exceeded as exc:
        raise _refusal(exc, root_name) from None


def _refusal(exc: _Exceeded, root: str) -> FhirError:
    where = root
    for step in reversed(exc.path):
        if isinstance(step, int):
            where += f"[{step}]"
        else:
            name = step[1:] if step.startswith("_") and len(step) > 1 else step
            where = f"{where}.{fhirpath_step(name)}" if where else fhirpath_step(name)
    message = f"{where}: {exc.message}" if where else exc.message
    return too_costly(exc.status, message, exc.field, where)


class _Walker:
    """The recursive pass of :func:`check_document`; its depth is bounded by the limit."""

    def __init__(self, limits: Limits) -> None:
        self.max_chars = limits.string_max_chars
        self.max_items = limits.array_max_items
        self.max_depth = limits.json_max_depth

    def _deeper(self, depth: int) -> None:
        if depth > self.max_depth:
            raise _Exceeded(
                "json_max_depth",
                f"objects and arrays are nested more than {self.max_depth} deep",
                400,
            )

    def _long(self, length: int) -> _Exceeded:
        return _Exceeded(
            "string_max_chars",
            f"a string of {length:,} characters is longer than {self.max_chars:,}",
        )

    def item(self, value: Any, depth: int) -> None:
        kind = type(value)
        if kind is dict:
            self.dict(value, depth)
        elif kind is list:
            self.list(value, depth)
        elif kind is str and len(value) > self.max_chars:
            raise self._long(len(value))

    def dict(self, value: dict[str, Any], depth: int) -> None:
        self._deeper(depth)
        max_chars = self.max_chars
        for key, item in value.items():
            if len(key) > max_chars:
                raise self._long(len(key))
            kind = type(item)
            if kind is str:
                if len(item) > max_chars and key not in BASE64_KEYS:
                    exc = self._long(len(item))
                    exc.path.append(key)
                    raise exc
            elif kind is dict or kind is list:
                try:
                    self.dict(item, depth + 1) if kind is dict else self.list(item, depth + 1)
                except _Exceeded as exc:
                    exc.path.append(key)
                    raise

    def list(self, value: list[Any], depth: int) -> None:
        self._deeper(depth)
        if len(value) > self.max_items:
            raise _Exceeded(
                "array_max_items",
                f"an array of {len(value):,} items is longer than {self.max_items:,}",
            )
        for i, item in enumerate(value):
            kind = type(item)
            if kind is str or kind is dict or kind is list:
                try:
                    self.item(item, depth + 1)
                except _Exceeded as exc:
                    exc.path.append(i)
                    raise


class ResponseBudget:
    """The bytes a batch or transaction response may still grow by
    (``LIENTHONG_RESPONSE_MAX_BYTES``), counted entry by entry as each is answered."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.exhausted = False

    @staticmethod
    def size(entry: dict[str, Any]) -> int:
        return len(orjson.dumps(entry))

    def fits(self, entry: dict[str, Any]) -> bool:
        """Count ``entry`` in when it fits; once one does not, none does any more."""
        if self.exhausted:
            return False
        size = self.size(entry)
        if self.used + size > self.limit:
            self.exhausted = True
            return False
        self.used += size
        return True

    def refuse_transaction(self) -> FhirError:
        return too_costly(
            413,
            f"the transaction's response would be over {self.limit:,} bytes; nothing was "
            "written: split the transaction, or page its searches (_count)",
            "response_max_bytes",
        )

    def not_answered(self, index: int) -> dict[str, Any]:
        """The answer of a batch entry past the budget (not run, or its result dropped)."""
        err = too_costly(
            413,
            f"Bundle.entry[{index}]: not answered, the batch's response reached "
            f"{self.limit:,} bytes; send this entry again in another batch, or page the "
            "searches (_count)",
            "response_max_bytes",
            f"Bundle.entry[{index}]",
        )
        return {"response": {"status": "413", "outcome": err.outcome()}}
