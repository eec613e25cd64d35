#!/usr/bin/env python
"""Derive the Patient compartment table shipped with lienthong.

Usage::

    .venv/bin/python scripts/build_patient_compartment.py \
        /work/shared/standards/fhir-r4/compartmentdefinition-patient.json

Reads the official FHIR R4 CompartmentDefinition ``patient``
(https://hl7.org/fhir/R4/compartmentdefinition-patient.html) and writes
``src/lienthong/fhir/data/compartment_patient.json``: the definition's url and
version, and for every resource type that can be in the compartment the search
parameters that put it there (types the definition lists without parameters are
never in it and are left out). A compartment search
(https://hl7.org/fhir/R4/http.html#vsearch) ORs those parameters.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/lienthong/fhir/data/compartment_patient.json"


def compact(definition: dict[str, object]) -> dict[str, object]:
    if definition.get("resourceType") != "CompartmentDefinition":
        raise SystemExit("the input is not a CompartmentDefinition")
    resources = definition.get("resource")
    if not isinstance(resources, list):
        raise SystemExit("the CompartmentDefinition has no resource list")
    params = {
        r["code"]: list(r["param"]) for r in resources if isinstance(r, dict) and r.get("param")
    }
    return {
        "source": definition.get("url"),
        "version": definition.get("version"),
        "code": definition.get("code"),
        "resources": dict(sorted(params.items())),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("definition", type=Path, help="compartmentdefinition-patient.json (R4)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    table = compact(json.loads(args.definition.read_text(encoding="utf-8")))
    args.out.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(table['resources'])} resource types")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
