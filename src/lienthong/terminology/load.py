"""Load an ICD-10 workbook into the store as the ICD-10 CodeSystem, through the engine.

The write is a conditional update on the CodeSystem's canonical URL, so loading a
newer list replaces the old one as a new version of the same resource — the
history keeps every list that was in force — and never leaves two ICD-10
CodeSystems for lookups to choose between.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import orjson

from lienthong.fhir.engine import FhirEngine
from lienthong.fhir.interactions.search import search
from lienthong.fhir.interactions.update import update
from lienthong.terminology.icd10 import (
    DEFAULT_VERSION,
    ICD10_SYSTEM,
    code_system,
    read_workbook,
)


@dataclass
class LoadResult:
    res_id: str
    version_id: str
    created: bool
    unchanged: bool
    """The list was loaded before with the same content: no new version was written."""
    concepts: int
    english: int


def load_icd10_workbook(
    engine: FhirEngine, path: Path, version: str = DEFAULT_VERSION
) -> LoadResult:
    concepts = read_workbook(path)
    resource = code_system(concepts, version, path.name)
    # the search's entries hold pre-serialised resources: read them back as JSON
    before = orjson.loads(orjson.dumps(search(engine, "CodeSystem", [("url", ICD10_SYSTEM)]).body))
    previous = {
        (e["resource"]["id"], e["resource"]["meta"]["versionId"])
        for e in before.get("entry", [])
        if e.get("search", {}).get("mode") == "match"
    }
    resp = update(engine, "CodeSystem", None, resource, f"url={quote(ICD10_SYSTEM, safe='')}")
    body = resp.json() or {}
    location = resp.headers.get("Location", "")
    parts = location.rstrip("/").split("/")
    res_id = str(body.get("id") or (parts[-3] if len(parts) >= 3 else ""))
    version_id = str((body.get("meta") or {}).get("versionId") or (parts[-1] if parts else ""))
    return LoadResult(
        res_id=res_id,
        version_id=version_id,
        created=resp.status == 201,
        unchanged=resp.status == 200 and (res_id, version_id) in previous,
        concepts=len(concepts),
        english=sum(1 for c in concepts if c.display_en),
    )
