"""Verification of the Patients in the FHIR store, and how far each source has got.

`verify_store` reads every Patient through the store, verifies them against the
register like a records file, and records the outcome on each Patient as an extension
(`EXTENSION_URL`: status, date, register version, reasons, suggested number and score).
Writes go through the FHIR engine (validation, versioning, search index, the master
person index hook), one all-or-nothing write per batch, and only for Patients whose
outcome changed: a second run against the same register writes nothing.

`progress` reads the extensions back and counts, per source and facility, the records,
how many are verified, corrected, failing, not yet verified, and the commonest reasons.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.table import Table

from lienthong.identity.verify import RECORD_COLUMNS, STATUSES

if TYPE_CHECKING:
    from lienthong.fhir.engine import FhirEngine
    from lienthong.identity.register import FileRegister, HttpRegister
    from lienthong.storage.base import ResourceStore

EXTENSION_URL = "http://fhir.lienthong.vn/StructureDefinition/register-verification"
CCCD_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/citizen_id"
FAILING = ("mismatch", "not_found", "invalid_id", "missing_id")
PAGE = 1000
_GENDER = {"male": "M", "female": "F", "other": "O"}


def patient_record(resource: dict[str, Any]) -> dict[str, str]:
    """The identity fields of a Patient in the columns of a records file."""
    names = resource.get("name") or [{}]
    name = next((n for n in names if n.get("use") == "official"), names[0])
    full = name.get("text") or " ".join([name.get("family") or "", *(name.get("given") or [])])
    cccd = next(
        (
            str(i.get("value") or "")
            for i in resource.get("identifier") or []
            if i.get("system") == CCCD_SYSTEM
        ),
        "",
    )
    return {
        "record_id": str(resource.get("id", "")),
        "source": source_of(resource),
        "full_name": " ".join(full.split()),
        "birth_date": str(resource.get("birthDate") or ""),
        "sex": _GENDER.get(str(resource.get("gender") or ""), ""),
        "cccd": cccd,
        "province_code": "",
        "commune_code": "",
        "address": _address_text(resource),
    }


def _address_text(resource: dict[str, Any]) -> str:
    """The Patient's home address (else its first) as one line: its `text`, else its
    lines and units, comma-separated, smallest first (what verification reads for place)."""
    addresses = resource.get("address") or []
    if not addresses:
        return ""
    a = next((x for x in addresses if x.get("use") == "home"), addresses[0])
    if a.get("text"):
        return " ".join(str(a["text"]).split())
    parts = [*(a.get("line") or []), a.get("district"), a.get("city"), a.get("state")]
    return ", ".join(str(p).strip() for p in parts if p and str(p).strip())


def source_of(resource: dict[str, Any]) -> str:
    """The system a Patient came from: ``meta.source``, else "" (entered in the platform)."""
    return str((resource.get("meta") or {}).get("source") or "")


def facility_of(resource: dict[str, Any]) -> str:
    org = resource.get("managingOrganization") or {}
    return str(org.get("reference") or org.get("display") or "")


def outcome_extension(
    status: str,
    reasons: list[str],
    suggested: str | None,
    score: float | None,
    version: str,
    when: str,
) -> dict[str, Any]:
    """The extension that records one verification on a Patient."""
    parts: list[dict[str, Any]] = [
        {"url": "status", "valueCode": status},
        {"url": "date", "valueDateTime": when},
        {"url": "registerVersion", "valueString": version or "unknown"},
    ]
    parts += [{"url": "reason", "valueString": r} for r in reasons]
    if suggested:
        parts.append({"url": "suggestedCccd", "valueString": suggested})
    if score is not None:
        parts.append({"url": "score", "valueDecimal": score})
    return {"url": EXTENSION_URL, "extension": parts}


def _without_date(ext: dict[str, Any] | None) -> list[Any] | None:
    if ext is None:
        return None
    return [p for p in ext.get("extension", []) if p.get("url") != "date"]


def current_outcome(resource: dict[str, Any]) -> dict[str, Any] | None:
    return next((e for e in resource.get("extension") or [] if e.get("url") == EXTENSION_URL), None)


def _patients(store: ResourceStore) -> Iterator[dict[str, Any]]:
    """The source Patients: the master Patients the person index keeps are summaries of
    them, not records of any source, and only the index may write them."""
    from lienthong.identity.mpi import is_master
    from lienthong.storage.query import SearchQuery

    offset = 0
    while True:
        with store.reader() as session:
            page = session.search(
                SearchQuery(resource_type="Patient", count=PAGE, offset=offset, with_total=False)
            )
        for stored in page.matches:
            if stored.content is not None:
                resource = orjson.loads(stored.content)
                if not is_master(resource):
                    yield resource
        if len(page.matches) < PAGE:
            return
        offset += PAGE


@dataclass
class StoreRun:
    patients: int = 0
    written: int = 0
    unchanged: int = 0
    moved_on: int = 0  # changed or deleted by someone else during the run: next run's
    by_status: Counter[str] = field(default_factory=Counter)


def verify_patients(
    engine: FhirEngine,
    connector: FileRegister | HttpRegister,
    batch_size: int = 500,
    on_batch: Any = None,
) -> StoreRun:
    """Verify every Patient and record the outcome on those whose outcome changed."""
    import pyarrow as pa

    from lienthong.fhir.engine import etag
    from lienthong.fhir.interactions.update import update_in
    from lienthong.identity.register import FileRegister
    from lienthong.identity.verify import VerifyEngine

    patients = list(_patients(engine.store))
    run = StoreRun(patients=len(patients))
    verifier = VerifyEngine()
    try:
        if isinstance(connector, FileRegister):
            verifier.load_register(connector.path, cache=connector.cache_path())
        when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for start in range(0, len(patients), batch_size):
            batch = patients[start : start + batch_size]
            records = [patient_record(p) for p in batch]
            if not isinstance(connector, FileRegister):
                entries = connector.entries_for(records)
                verifier.load_register(entries, register_size=connector.register_size)
            table = pa.table(
                {
                    c: pa.array([r[c] for r in records], pa.string())
                    for c in (*RECORD_COLUMNS, "address")
                }
            )
            verifier.verify(table)
            findings = {
                row["record_id"]: row for row in verifier.report_table(order=False).to_pylist()
            }
            changed: list[dict[str, Any]] = []
            for resource in batch:
                f = findings[str(resource["id"])]
                run.by_status[f["status"]] += 1
                reasons = [r for r in (f["reasons"] or "").split("; ") if r]
                ext = outcome_extension(
                    f["status"], reasons, f["cccd_suggested"], f["score"], connector.version, when
                )
                if _without_date(current_outcome(resource)) == _without_date(ext):
                    run.unchanged += 1
                    continue
                others = [
                    e for e in resource.get("extension") or [] if e.get("url") != EXTENSION_URL
                ]
                resource["extension"] = [*others, ext]
                changed.append(resource)
            if changed:
                with engine.store.writer() as session:  # the batch commits whole or not at all
                    for resource in changed:
                        meta = resource.get("meta") or {}
                        read_version = str(meta.get("versionId") or "")
                        res_id = str(resource["id"])
                        # The outcome goes on the version that was verified: a Patient
                        # edited or deleted since it was read is left for the next run
                        # rather than overwritten with stale content or brought back.
                        current = session.read("Patient", res_id)
                        if (
                            current is None
                            or current.deleted
                            or (str(current.version) != read_version)
                        ):
                            run.moved_on += 1
                            continue
                        resource["meta"] = {
                            k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")
                        }
                        update_in(
                            engine, session, "Patient", res_id, resource,
                            if_match=etag(current.version),
                        )  # fmt: skip
                        run.written += 1
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        verifier.close()
    return run


def verify_store(
    database: str | None,
    connector: FileRegister | HttpRegister,
    console: Console,
    out_console: Console,
) -> None:
    from lienthong.cli_common import audit_run, settings_for, sized_progress
    from lienthong.fhir.engine import FhirEngine
    from lienthong.storage.base import open_store

    settings = settings_for(database)
    store = open_store(settings.database_url, settings.pg_pool_size)
    register = connector.version or "the register"
    try:
        engine = FhirEngine(store, settings)
        with sized_progress(console, "verifying Patients") as bar:
            task = bar.add_task("verify", total=None)
            run = verify_patients(engine, connector, on_batch=lambda n: bar.update(task, advance=n))
    except Exception as exc:
        # the store door is audited like the API, failed runs included
        audit_run(settings, "verify-store", [], f"against {register}: {exc}", ok=False,
                  resource_type="Patient")  # fmt: skip
        raise
    finally:
        store.close()
    counts = ", ".join(f"{run.by_status.get(s, 0):,} {s}" for s in STATUSES)
    summary = (
        f"{run.patients:,} Patients verified against {register} "
        f"({counts}); outcome written on {run.written:,}, {run.unchanged:,} unchanged"
        + (
            f", {run.moved_on:,} changed by others during the run (verified next time)"
            if run.moved_on
            else ""
        )
    )
    audit_run(settings, "verify-store", [], summary, ok=True, resource_type="Patient")
    out_console.print(summary)


_DIGITS = re.compile(r"\d+")


def reason_kind(reason: str) -> str:
    """A reason without its values, to count alike reasons together:
    "birth_date: day and month swapped: the record has ..." -> "birth_date: day and
    month swapped"; a number, a name or a date never makes two reasons differ."""
    field_name, _, rest = reason.partition(": ")
    if "belongs to" in rest:
        return f"{field_name}: someone else's number"
    if "parent's number" in rest:
        return f"{field_name}: a parent's number"
    kind = rest.split(": ", 1)[0] if ": " in rest else rest
    if "the record has" in kind or "'" in kind:
        kind = "differs"
    return f"{field_name}: {_DIGITS.sub('#', kind)}"


@dataclass
class SourceProgress:
    records: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


def progress(store: ResourceStore) -> dict[tuple[str, str], SourceProgress]:
    """Per (source, facility): records, outcomes and reasons, from the extensions."""
    out: dict[tuple[str, str], SourceProgress] = {}
    for resource in _patients(store):
        key = (source_of(resource), facility_of(resource))
        entry = out.setdefault(key, SourceProgress())
        entry.records += 1
        ext = current_outcome(resource)
        if ext is None:
            entry.statuses["not verified"] += 1
            continue
        parts = ext.get("extension", [])
        status = next((p.get("valueCode") for p in parts if p.get("url") == "status"), "")
        entry.statuses[str(status)] += 1
        for p in parts:
            if p.get("url") == "reason":
                entry.reasons[reason_kind(str(p.get("valueString", "")))] += 1
    return out


def print_progress(database: str | None, out_console: Console) -> None:
    from lienthong.cli_common import settings_for
    from lienthong.storage.base import open_store

    settings = settings_for(database)
    store = open_store(settings.database_url, settings.pg_pool_size)
    try:
        rows = progress(store)
    finally:
        store.close()
    table = Table(title="Verification against the population register, by source and facility")
    for col in (
        "source",
        "facility",
        "records",
        "verified",
        "corrected",
        "failing",
        "not verified",
    ):
        table.add_column(col, justify="right" if col not in ("source", "facility") else "left")
    table.add_column("commonest reasons")
    for (source, facility), p in sorted(rows.items()):
        failing = sum(p.statuses.get(s, 0) for s in FAILING)
        reasons = "; ".join(f"{k} ({n:,})" for k, n in p.reasons.most_common(3))
        table.add_row(
            source or "(none)",
            facility or "(none)",
            f"{p.records:,}",
            f"{p.statuses.get('verified', 0):,}",
            f"{p.statuses.get('corrected', 0):,}",
            f"{failing:,}",
            f"{p.statuses.get('not verified', 0):,}",
            reasons,
        )
    out_console.print(table)
    total = sum(p.records for p in rows.values())
    out_console.print(f"{total:,} Patients in {len(rows):,} source/facility groups")
