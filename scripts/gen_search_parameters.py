#!/usr/bin/env python
"""Generate the search-parameter and element-type tables shipped with lienthong.

Usage::

    .venv/bin/python scripts/gen_search_parameters.py \
        /work/shared/standards/fhir-r4/search-parameters.json

Reads the official FHIR R4 SearchParameter bundle
(https://hl7.org/fhir/R4/searchparameter-registry.html) and writes two files that are
committed with the package, so the server never reads ``../shared`` nor imports the
pydantic models to compile its index extractors:

``src/lienthong/fhir/data/search_parameters.json``
    A compact list with, per SearchParameter, only what the registry and the extractor
    compiler need: ``id``, ``url``, ``code``, ``base``, ``type``, ``expression``,
    ``target`` and, for composites, ``component`` (each with the component's resolved
    search-parameter ``code`` and ``type`` plus its relative ``expression``).

``src/lienthong/fhir/data/element_types.json``
    For every model class of ``fhir.resources.R4B`` (resources, data types and backbone
    elements, keyed by class name, e.g. ``ObservationComponent``) the map
    ``element name -> [type, is_list]``. For a choice element (``value[x]``) ``type`` is
    a map ``json key -> type`` (``{"valueQuantity": "Quantity", ...}``), taken from the
    models' ``one_of_many`` metadata, so the compiler never guesses choice branches
    from key prefixes (``Encounter.class`` vs ``Encounter.classHistory``).
    Primitive types use their FHIR names (``dateTime``, ``code``, ``boolean`` ...).

After writing, every expression is compiled with
:class:`lienthong.fhir.search_index.IndexExtractor` and the ones that could not be
compiled are printed (the list is also kept in that module's docstring).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import sys
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "lienthong" / "fhir" / "data"

# Name of the pydantic metadata class of an ``Annotated[...]`` primitive -> FHIR type.
_PRIMITIVE_META = {
    "String": "string",
    "Code": "code",
    "Uri": "uri",
    "Id": "id",
    "DateTime": "dateTime",
    "Markdown": "markdown",
    "Canonical": "canonical",
    "PositiveInt": "positiveInt",
    "Decimal": "decimal",
    "Date": "date",
    "Integer": "integer",
    "Integer64": "integer64",
    "UnsignedInt": "unsignedInt",
    "Instant": "instant",
    "Time": "time",
    "Url": "url",
    "EncodedBytes": "base64Binary",
    "Base64Binary": "base64Binary",
    "Oid": "oid",
    "UuidVersion": "uuid",
    "Uuid": "uuid",
    "Xhtml": "xhtml",
}

# Search-parameter fields kept in the compact output.
_KEEP = ("id", "url", "code", "base", "type", "expression", "target")


def _fhir_type(annotation: Any) -> tuple[str, bool]:
    """Return (FHIR type name, is_list) for a pydantic field annotation."""
    is_list = False
    ann = annotation
    while True:
        origin = typing.get_origin(ann)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) != 1:
                raise TypeError(f"unexpected union {annotation!r}")
            ann = args[0]
        elif origin in (list, typing.List):  # noqa: UP006 - both spellings occur
            is_list = True
            (ann,) = typing.get_args(ann)
        elif origin is typing.Annotated:
            base, *meta = typing.get_args(ann)
            for m in meta:
                name = type(m).__name__
                if name in _PRIMITIVE_META:
                    return _PRIMITIVE_META[name], is_list
            raise TypeError(f"unknown primitive metadata in {annotation!r}")
        elif ann is bool:
            return "boolean", is_list
        elif inspect.isclass(ann) and ann.__name__.endswith("Type"):
            # fhir.resources' forward-declared types: abc.CodeableConceptType etc.
            return ann.__name__[: -len("Type")], is_list
        else:
            raise TypeError(f"unexpected annotation {annotation!r}")


def build_element_types() -> dict[str, Any]:
    """Introspect every ``fhir.resources.R4B`` model into the element-type table."""
    import fhir.resources.R4B as r4b

    classes: dict[str, Any] = {}
    for mod_info in pkgutil.iter_modules(r4b.__path__):
        if mod_info.name.startswith("fhirtypes") or mod_info.name == "tests":
            continue
        mod = importlib.import_module(f"fhir.resources.R4B.{mod_info.name}")
        for name, cls in vars(mod).items():
            if (
                inspect.isclass(cls)
                and cls.__module__ == mod.__name__
                and hasattr(cls, "model_fields")
            ):
                classes[name] = cls

    table: dict[str, dict[str, Any]] = {}
    resources: list[str] = []
    for name in sorted(classes):
        cls = classes[name]
        elements: dict[str, Any] = {}
        for field_name, field in cls.model_fields.items():
            extra = field.json_schema_extra
            if not isinstance(extra, dict) or not extra.get("element_property"):
                continue  # fhir_comments, ``_x`` primitive extension siblings
            json_key = field.alias or field_name
            type_name, is_list = _fhir_type(field.annotation)
            choice = extra.get("one_of_many")
            if isinstance(choice, str):
                entry = elements.setdefault(choice, [{}, is_list])
                entry[0][json_key] = type_name
            else:
                elements[json_key] = [type_name, is_list]
        table[name] = elements
        try:
            is_resource = bool(cls.has_resource_base()) and cls.get_resource_type() == name
        except Exception:  # noqa: BLE001 - non-resource models raise on these
            is_resource = False
        if is_resource and name not in ("Resource", "DomainResource"):
            resources.append(name)

    # Sanity check: every complex type referenced must be in the table.
    primitives = set(_PRIMITIVE_META.values()) | {"boolean"}
    missing = set()
    for elements in table.values():
        for type_spec, _ in elements.values():
            for t in type_spec.values() if isinstance(type_spec, dict) else [type_spec]:
                if t not in primitives and t not in table:
                    missing.add(t)
    if missing:
        raise SystemExit(f"element types reference unknown types: {sorted(missing)}")
    return {
        "fhirVersion": "4.3.0 (fhir.resources.R4B models)",
        "primitives": sorted(primitives),
        "resources": resources,
        "types": table,
    }


def build_search_parameters(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Compact the SearchParameter bundle; resolve composite components' code/type."""
    params = [e["resource"] for e in bundle["entry"] if "resource" in e]
    by_url = {p["url"]: p for p in params}
    out: list[dict[str, Any]] = []
    for p in params:
        item = {k: p[k] for k in _KEEP if k in p}
        if p.get("component"):
            comps = []
            for c in p["component"]:
                definition = c["definition"]
                target = by_url.get(definition)
                comps.append(
                    {
                        "definition": definition,
                        "code": target["code"] if target else None,
                        "type": target["type"] if target else None,
                        "expression": c["expression"],
                    }
                )
            item["component"] = comps
        if "multipleOr" in p:
            item["multipleOr"] = p["multipleOr"]
        if "multipleAnd" in p:
            item["multipleAnd"] = p["multipleAnd"]
        out.append(item)
    out.sort(key=lambda d: d["id"])
    return out


def _dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # One top-level item per line: small diffs, yet compact.
    with path.open("w", encoding="utf-8") as fh:
        if isinstance(data, list):
            fh.write("[\n")
            fh.write(
                ",\n".join(json.dumps(d, ensure_ascii=False, separators=(",", ":")) for d in data)
            )
            fh.write("\n]\n")
        else:
            fh.write("{\n")
            items = []
            for k, v in data.items():
                if k == "types":
                    inner = ",\n".join(
                        f"{json.dumps(t)}:{json.dumps(els, separators=(',', ':'))}"
                        for t, els in v.items()
                    )
                    items.append(f'"types":{{\n{inner}\n}}')
                else:
                    items.append(f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}")
            fh.write(",\n".join(items))
            fh.write("\n}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="FHIR R4 search-parameters.json bundle")
    parser.add_argument("--out", type=Path, default=DATA, help="output directory")
    args = parser.parse_args(argv)

    bundle = json.loads(args.bundle.read_text(encoding="utf-8"))
    params = build_search_parameters(bundle)
    element_types = build_element_types()
    _dump(args.out / "search_parameters.json", params)
    _dump(args.out / "element_types.json", element_types)
    print(
        f"wrote {len(params)} search parameters and "
        f"{len(element_types['types'])} element types to {args.out}"
    )

    # Compile everything with the freshly written tables and report what is not indexed.
    sys.path.insert(0, str(ROOT / "src"))
    from lienthong.fhir.search_index import IndexExtractor
    from lienthong.fhir.search_params import SearchParamRegistry

    registry = SearchParamRegistry.from_files(
        args.out / "search_parameters.json", args.out / "element_types.json"
    )
    extractor = IndexExtractor(registry)
    failures = [
        (rt, code, reason)
        for rt in registry.resource_types()
        for code, reason in extractor.failures(rt)
    ]
    notes = [
        (rt, code, note) for rt in registry.resource_types() for code, note in extractor.notes(rt)
    ]
    print(f"\n{len(failures)} (resource type, parameter) pairs not (fully) indexed:")
    for rt, code, reason in failures:
        print(f"  {rt}.{code}: {reason}")
    print(f"\n{len(notes)} parameters with choice branches that give no rows by design:")
    for rt, code, note in notes:
        print(f"  {rt}.{code}: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
