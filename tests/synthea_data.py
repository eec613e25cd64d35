"""The Synthea test bundles of ``../shared/testdata/synthea``, for tests and benchmarks."""

from __future__ import annotations

import bz2
from pathlib import Path
from typing import Any

import orjson

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "synthea"


def synthea_files(directory: Path = SYNTHEA) -> list[Path]:
    """The bundles in load order: hospitals, practitioners, then the patients."""
    files = sorted(directory.glob("*.json.bz2"))
    first = sorted(
        (f for f in files if f.name.startswith("0-")), key=lambda f: "hospital" not in f.name
    )
    return first + [f for f in files if not f.name.startswith("0-")]


def load_synthea(directory: Path) -> list[dict[str, Any]]:
    """Resources of all bundles, references rewritten as a transaction would."""
    resources_: list[dict[str, Any]] = []
    local: dict[str, str] = {}
    for path in sorted(directory.glob("*.json.bz2")):
        bundle = orjson.loads(bz2.decompress(path.read_bytes()))
        for entry in bundle.get("entry", ()):
            res = entry["resource"]
            target = f"{res['resourceType']}/{res['id']}"
            local[entry.get("fullUrl", target)] = target
            for ident in res.get("identifier", ()):
                if "system" in ident and "value" in ident:
                    key = f"{res['resourceType']}?identifier={ident['system']}|{ident['value']}"
                    local[key] = target
            resources_.append(res)

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref in local:
                node["reference"] = local[ref]
            for v in node.values():
                fix(v)
        elif isinstance(node, list):
            for v in node:
                fix(v)

    for res in resources_:
        fix(res)
    return resources_
