"""Hospital XML exports into the shared record: parse, validate, map, write.

Each visit that can be stored faithfully is written as ONE transaction through
the FHIR engine, so the access policy of whoever sends it, the master person
index and the audit trail apply exactly as for any other write. A visit with a
*blocking* problem (no MA_LK, no patient name or birth date, an unreadable
table, ...; see :data:`rules.BLOCKING_PROBLEMS`) is reported and not written;
a visit with only *conformance* problems is written as sent, and its problems
go with it: an ``OperationOutcome`` (id derived from facility and MA_LK, one
``warning`` issue per problem) and a ``meta.tag`` on its Encounter
(:data:`CONFORMANCE_TAG`) that points to it, so a vendor finds them with
``Encounter?_tag=...`` or ``OperationOutcome?_tag=...``. Re-sending the visit
updates the OperationOutcome, re-sending it clean deletes it. ``strict`` keeps
every visit with any problem out. A file that cannot be read to its end
(hostile, truncated, bad base64) is refused before anything of it is written.

A check-in (XML0 alone, sent at admission) writes the visit's Encounter ``in-progress``
under the full visit's identifier; the full visit then updates it. A check-in that comes
after its full visit was stored (re-sent, or late) would roll that visit back: in its
transaction the stored Encounter is read, and when it is no check-in's any more nothing of
the check-in is written (counted apart, ``checkins_superseded``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lienthong.fhir.engine import FhirEngine
from lienthong.fhir.errors import FhirError, Issue
from lienthong.fhir.interactions.transaction import process_bundle
from lienthong.fhir.validate import validate_resource
from lienthong.ingest.xml130.model import Visit, Xml130Error
from lienthong.ingest.xml130.parse import (
    DEFAULT_MAX_BYTES,
    BareGroup,
    GroupReader,
    group_inputs,
    parse,
)
from lienthong.ingest.xml130.to_fhir import CHECKIN_TAG, LT, record_id, visit_bundle
from lienthong.ingest.xml130.validate import DECIMAL_COMMA, FileValidation, Problem, blocking
from lienthong.storage.base import Session, WriteSession
from lienthong.terminology.catalogue import Icd10Catalogue, icd10_catalogue

CONFORMANCE_SYSTEM = f"{LT}/CodeSystem/xml130-conformance"
"""Tag system of visits stored with conformance problems (and of their OperationOutcome)."""
CONFORMANCE_TAG = {
    "system": CONFORMANCE_SYSTEM,
    "code": "nonconformant",
    "display": "stored with XML 130 conformance problems (see its OperationOutcome)",
}
CONFORMANCE_OUTCOME_EXTENSION = f"{LT}/StructureDefinition/xml130-conformance-outcome"
"""Encounter extension whose valueReference is the visit's OperationOutcome."""
CONFORMANCE_PART = "conformance"  # record_id(facility, MA_LK, part) of the OperationOutcome


@dataclass
class IngestReport:
    """What one run did: visits written (new), updated (re-sent), written with conformance
    problems (counted in those two as well), rejected; resources by type; the problems of
    rejected visits and refused files (``problems``) and those stored with written visits
    (``stored_problems``); files refused whole."""

    files: int = 0
    visits_created: int = 0
    visits_updated: int = 0
    visits_rejected: int = 0
    visits_nonconformant: int = 0
    resources: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    stored_problems: list[Problem] = field(default_factory=list)
    refused_files: list[str] = field(default_factory=list)
    patients: set[str] = field(default_factory=set)
    # check-ins that came after their visit's XML1 was stored: nothing written, the stored
    # visit is the newer record (not counted as written, updated or rejected)
    checkins_superseded: int = 0
    # files (or bare-table groups) the import ledger holds as ingested whole: not read again
    skipped: int = 0
    # how the inputs were read where it matters (bare-table files left apart, and why)
    notes: list[str] = field(default_factory=list)

    @property
    def visits_written(self) -> int:
        return self.visits_created + self.visits_updated

    def summary(self) -> str:
        refused = f", {len(self.refused_files)} files refused" if self.refused_files else ""
        late = (
            f", {self.checkins_superseded} check-ins left out (their visit is stored)"
            if self.checkins_superseded
            else ""
        )
        skipped = f", {self.skipped} files skipped (already ingested)" if self.skipped else ""
        return (
            f"{self.files} files: {self.visits_created} visits written, "
            f"{self.visits_updated} updated ({self.visits_nonconformant} of them with "
            f"conformance problems), {self.visits_rejected} rejected{refused}{late}"
            f"{skipped}; {sum(self.resources.values())} resources"
        )


class FacilityRefused(Exception):
    """A submitter sent visits of a facility other than its own; nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


@dataclass
class _Outcome:
    """What writing one visit did, counted into the report once its batch commits."""

    problems: list[Problem]  # why it was not written (empty when it was)
    created: bool = True
    superseded: bool = False  # a check-in after its full visit: nothing written
    resources: Counter[str] = field(default_factory=Counter)
    patients: set[str] = field(default_factory=set)


@dataclass
class PreparedVisit:
    """A visit made ready for the writer: its problems, and its transaction Bundle
    (serialised, structurally validated) unless they keep it out; a visit written with
    problems carries them in the Bundle's OperationOutcome."""

    file: str
    ma_lk: str
    problems: list[Problem]
    bundle: bytes | None = None


@dataclass
class PreparedFile:
    label: str
    visits: list[PreparedVisit] = field(default_factory=list)
    refused: Problem | None = None  # the file cannot be read: nothing of it is written
    foreign: str | None = None  # a visit of a facility the sender may not submit for
    file_problems: list[Problem] = field(default_factory=list)
    files: int = 1  # files read (a group of bare-table files is several)


def _fhir_problems(file: str, ma_lk: str, exc: FhirError, lead: str) -> list[Problem]:
    """One problem per FHIR issue that kept a visit out of the store, whether the models
    refused it while preparing or the engine refused the transaction; `lead` says which."""
    return [
        Problem(
            file, ma_lk, "", ", ".join(issue.expression), "fhir", f"{lead}{issue.diagnostics}", ""
        )
        for issue in exc.issues
    ]


def conformance_outcome(visit: Visit, problems: list[Problem]) -> dict[str, Any]:
    """The OperationOutcome stored with a visit written despite conformance problems: one
    ``warning`` issue per problem (code ``value`` for a value that breaks its field's rule,
    ``invalid`` otherwise), the message as diagnostics, ``XML1.FIELD`` as expression."""
    facility, ma_lk = visit.ma_cskcb.strip(), visit.ma_lk.strip()
    issues = []
    for p in problems:
        issue: dict[str, Any] = {
            "severity": "warning",
            "code": "value" if p.value else "invalid",
            "details": {"coding": [{"system": CONFORMANCE_SYSTEM, "code": p.rule}]},
            "diagnostics": p.message + (f" (value {p.value!r})" if p.value else ""),
        }
        where = ".".join(x for x in (p.table, p.field) if x)
        if where:
            issue["expression"] = [where]
        issues.append(issue)
    return {
        "resourceType": "OperationOutcome",
        "id": record_id(facility, ma_lk, CONFORMANCE_PART),
        "meta": {"tag": [dict(CONFORMANCE_TAG)]},
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">'
            + f"{len(problems)} conformance problems of visit MA_LK {_html(ma_lk)} "
            + f"of facility {_html(facility)}</div>",
        },
        "issue": issues,
    }


def _html(value: str) -> str:
    from html import escape

    return escape(value, quote=True)


def add_conformance(bundle: dict[str, Any], visit: Visit, problems: list[Problem]) -> None:
    """Attach a visit's conformance problems to its transaction: the OperationOutcome (PUT
    under its derived id) and, on the Encounter, the tag and an extension pointing to it."""
    outcome = conformance_outcome(visit, problems)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Encounter":
            meta = resource.setdefault("meta", {})
            meta["tag"] = [*meta.get("tag", []), dict(CONFORMANCE_TAG)]
            resource["extension"] = [
                *resource.get("extension", []),
                {
                    "url": CONFORMANCE_OUTCOME_EXTENSION,
                    "valueReference": {"reference": f"OperationOutcome/{outcome['id']}"},
                },
            ]
    bundle["entry"].append(
        {
            "fullUrl": f"urn:uuid:{outcome['id']}",
            "resource": outcome,
            "request": {"method": "PUT", "url": f"OperationOutcome/{outcome['id']}"},
        }
    )


def read_decimal_commas(visit: Visit, problems: list[Problem]) -> Visit:
    """The visit as it is meant: in the fields reported for a decimal comma, ``12500,5``
    becomes ``12500.5``, so the stored amounts are the numbers the facility meant (the
    OperationOutcome keeps what was sent). The visit itself is not changed."""
    from dataclasses import replace

    fields = {(p.table, p.field) for p in problems if p.rule == "decimal_comma"}
    if not fields:
        return visit
    tables = dict(visit.tables)
    for table, name in fields:
        tables[table] = [
            {**row, name: row[name].replace(",", ".")}
            if DECIMAL_COMMA.fullmatch(row.get(name) or "")
            else row
            for row in tables.get(table, [])
        ]
    return replace(visit, tables=tables)


def _visits_of(
    source: str | Path | bytes | BareGroup, label: str, max_bytes: int
) -> Iterator[Visit]:
    if isinstance(source, BareGroup):
        return (visit for visit, _sources in GroupReader(source, max_bytes=max_bytes))
    return parse(source, name=label, max_bytes=max_bytes)


def prepare_visits(
    source: str | Path | bytes | BareGroup,
    label: str,
    icd: Icd10Catalogue,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    facilities: frozenset[str] | None = None,
    mapper: Callable[[Visit, Icd10Catalogue], dict[str, Any]] = visit_bundle,
    strict: bool = False,
) -> tuple[PreparedFile, Iterator[PreparedVisit]]:
    """Check a file can be read to its end (and holds only the sender's facilities), then
    stream its visits: validated against the standard, mapped (with their conformance
    problems attached, see :func:`add_conformance`), and their resources validated
    against the FHIR models — everything but the write, so it can run in a worker
    process. A visit with a blocking problem — any problem when ``strict`` — is not
    mapped. When the file is refused the iterator is empty.

    ``source`` may be a :class:`BareGroup`, the bare-table files of one folder read as
    one export: a file of it that cannot be read is never a refusal of the group, it
    costs the visits whose tables it holds (blocking) and nothing else."""
    prepared = PreparedFile(label)
    if isinstance(source, BareGroup):
        prepared.files = len(source.files)
    # a group is never refused whole: it is read ahead only for the sender's facilities
    ahead = not isinstance(source, BareGroup) or facilities is not None
    try:
        for visit in _visits_of(source, label, max_bytes) if ahead else ():
            facility = visit.ma_cskcb.strip()
            if facilities is not None and facility not in facilities:
                prepared.foreign = (
                    f"{label}: visit MA_LK {visit.ma_lk!r} is from facility "
                    f"{facility or '(none)'!r}; this sender may submit only visits of "
                    f"{', '.join(sorted(facilities))}"
                )
                return prepared, iter(())
    except Xml130Error as exc:
        prepared.refused = Problem(label, "", "", "", "file", str(exc), "")
        return prepared, iter(())

    def visits() -> Iterator[PreparedVisit]:
        check = FileValidation(source, icd=icd, name=label, max_bytes=max_bytes)
        for visit, problems in check:
            if problems and (strict or blocking(problems)):
                yield PreparedVisit(visit.file, visit.ma_lk, problems)
                continue
            try:
                bundle = mapper(read_decimal_commas(visit, problems), icd)
                if problems:
                    add_conformance(bundle, visit, problems)
            except FhirError as exc:
                yield PreparedVisit(
                    visit.file,
                    visit.ma_lk,
                    _fhir_problems(
                        visit.file, visit.ma_lk, exc, f"visit {visit.index}: not written: "
                    ),
                )
                continue
            failed: list[Problem] = []
            for i, entry in enumerate(bundle["entry"]):
                try:
                    validate_resource(entry["resource"])
                except FhirError as exc:
                    failed.extend(
                        _fhir_problems(
                            visit.file,
                            visit.ma_lk,
                            exc,
                            f"visit {visit.index}: not written: Bundle.entry[{i}]: ",
                        )
                    )
            if failed:
                yield PreparedVisit(visit.file, visit.ma_lk, [*failed, *problems])
            else:
                yield PreparedVisit(visit.file, visit.ma_lk, problems, orjson.dumps(bundle))
        prepared.file_problems.extend(check.file_problems)

    return prepared, visits()


# -- worker processes: everything but the write -----------------------------------------

_worker_args: dict[str, Any] = {}


def _worker_init(icd: Icd10Catalogue, max_bytes: int, strict: bool = False) -> None:
    import gc

    gc.set_threshold(100_000, 50, 100)
    _worker_args.update(icd=icd, max_bytes=max_bytes, strict=strict)


def _prepare_in_worker(path: str | BareGroup) -> PreparedFile:
    prepared, visits = prepare_visits(
        path,
        path.label if isinstance(path, BareGroup) else Path(path).name,
        _worker_args["icd"],
        max_bytes=_worker_args["max_bytes"],
        strict=_worker_args["strict"],
    )
    prepared.visits = list(visits)
    return prepared


class Xml130Ingest:
    """Ingests exports into ``engine`` (which may be a user's guarded engine).

    ``facilities``, when given, are the only MA_CSKCB values the submitter may send: a
    file with another facility's visit is refused whole (:class:`FacilityRefused`).
    ``strict`` refuses every visit with any problem, conformance problems included.
    """

    def __init__(
        self,
        engine: FhirEngine,
        *,
        icd: Icd10Catalogue | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        facilities: frozenset[str] | None = None,
        on_visit: Callable[[str, bool], None] | None = None,
        mapper: Callable[[Visit, Icd10Catalogue], dict[str, Any]] = visit_bundle,
        batch: int = 50,
        strict: bool = False,
    ) -> None:
        self.engine = engine
        self.strict = strict
        self.batch = max(1, batch)
        self.icd = icd if icd is not None else icd10_catalogue(engine)
        self.max_bytes = max_bytes
        self.facilities = facilities
        self.on_visit = on_visit
        self.mapper = mapper
        self.report = IngestReport()

    def ingest(
        self, source: str | Path | bytes | BareGroup, name: str | None = None
    ) -> IngestReport:
        """Ingest one file (a path or its bytes), or one group of bare-table files, in this
        process; returns the run's report so far."""
        if isinstance(source, BareGroup):
            label = name or source.label
        else:
            label = name or (Path(source).name if not isinstance(source, bytes) else "<upload>")
        self._take(*self._prepare(source, label))
        return self.report

    def _prepare(
        self, source: str | Path | bytes | BareGroup, label: str
    ) -> tuple[PreparedFile, Iterator[PreparedVisit]]:
        """Parse, validate and map one job in this process, as this ingest is set up."""
        return prepare_visits(
            source,
            label,
            self.icd,
            max_bytes=self.max_bytes,
            facilities=self.facilities,
            mapper=self.mapper,
            strict=self.strict,
        )

    def ingest_paths(
        self, paths: list[Path], workers: int = 0, resume: bool = False
    ) -> IngestReport:
        """Ingest files; with ``workers`` > 0, processes parse, validate and map files ahead
        of this one, which only writes (as bulk import does). Bare-table files of one
        folder are read as one export, one job (:func:`parse.group_inputs`).

        With ``resume``, a file (or group) that went in whole, with no problem, is noted in
        the import ledger by the sha256 of its bytes, in the transaction of its last
        visits, and is skipped when the ledger holds it. Visits are idempotent without it
        (their resources are PUT under ids derived from facility and MA_LK: a re-sent
        visit updates them); the ledger saves reading and rewriting them."""
        jobs, notes = group_inputs(list(paths), self.max_bytes)
        self.report.notes.extend(notes)
        keys: dict[int, str] = {}
        if resume:
            jobs, keys = self._unseen(jobs)
        if workers <= 0 or len(jobs) < 2 or self.facilities is not None:
            for i, job in enumerate(jobs):
                label = job.label if isinstance(job, BareGroup) else Path(job).name
                prepared, visits = self._prepare(job, label)
                self._take(prepared, visits, keys.get(i))
            return self.report
        from concurrent.futures import Future

        from lienthong.workers import worker_pool

        with worker_pool(
            workers, initializer=_worker_init, initargs=(self.icd, self.max_bytes, self.strict)
        ) as pool:
            pending: list[Future[PreparedFile]] = []
            queue: list[str | BareGroup] = [j if isinstance(j, BareGroup) else str(j) for j in jobs]
            taken = 0
            while queue or pending:
                while queue and len(pending) < workers + 1:
                    pending.append(pool.submit(_prepare_in_worker, queue.pop(0)))
                prepared = pending.pop(0).result()
                self._take(prepared, iter(prepared.visits), keys.get(taken))
                taken += 1
        return self.report

    def _unseen(
        self, jobs: list[Path | BareGroup]
    ) -> tuple[list[Path | BareGroup], dict[int, str]]:
        """The jobs the import ledger does not hold, and their ledger keys by position."""
        from lienthong.storage import ledger

        keyed: list[tuple[Path | BareGroup, str]] = []
        for job in jobs:
            try:
                if isinstance(job, BareGroup):
                    parts = [ledger.file_digest(f).encode() for f in job.files]
                    keyed.append((job, ledger.digest(b"bare-group", *parts)))
                else:
                    keyed.append((job, ledger.file_digest(job)))
            except OSError:
                keyed.append((job, ""))  # unreadable: its refusal is reported as usual
        with self.engine.store.reader() as session:
            held = ledger.recorded(session, [k for _, k in keyed if k])
        out: list[Path | BareGroup] = []
        keys: dict[int, str] = {}
        for job, key in keyed:
            if key and key in held:
                self.report.skipped += 1
                continue
            if key:
                keys[len(out)] = key
            out.append(job)
        return out, keys

    def _take(
        self, prepared: PreparedFile, visits: Iterator[PreparedVisit], key: str | None = None
    ) -> None:
        report = self.report
        rejected = report.visits_rejected
        report.files += prepared.files
        if prepared.foreign is not None:
            raise FacilityRefused(prepared.foreign)
        if prepared.refused is not None:
            report.refused_files.append(prepared.label)
            report.problems.append(prepared.refused)
            return
        batch: list[PreparedVisit] = []
        for visit in visits:
            if visit.bundle is None:
                report.visits_rejected += 1
                report.problems.extend(visit.problems)
                if self.on_visit is not None:
                    self.on_visit(visit.file, False)
                continue
            batch.append(visit)
            if len(batch) >= self.batch:
                self._write_batch(batch)
                batch = []
        # the file's ledger row goes with its last visits, when nothing of it was refused
        note = (
            (key, prepared.label)
            if key and not prepared.file_problems and report.visits_rejected == rejected
            else None
        )
        if batch or note:
            self._write_batch(batch, note)
        report.problems.extend(prepared.file_problems)

    def _write_batch(self, batch: list[PreparedVisit], note: tuple[str, str] | None = None) -> None:
        """Visits in one database commit, each in a savepoint of its own: a visit the
        engine refuses is undone alone and the others of the batch go in. The report
        counts a batch only once it is committed. ``note`` (a ledger key and the file's
        name) is recorded in the same commit when every visit of the batch went in."""
        outcomes: list[_Outcome] = []
        with self.engine.store.writer() as session:
            for visit in batch:
                outcomes.append(self._write(visit, session))
            if note is not None and not any(o.problems for o in outcomes):
                from lienthong.storage import ledger

                ledger.record(session, note[0], ledger.XML_FILE, note[1], len(batch))
        report = self.report
        for visit, outcome in zip(batch, outcomes, strict=True):
            if outcome.problems:
                report.visits_rejected += 1
                report.problems.extend(outcome.problems)
                report.problems.extend(visit.problems)
                if self.on_visit is not None:
                    self.on_visit(visit.file, False)
                continue
            if outcome.superseded:
                report.checkins_superseded += 1
                if self.on_visit is not None:
                    self.on_visit(visit.file, True)
                continue
            if outcome.created:
                report.visits_created += 1
            else:
                report.visits_updated += 1
            if visit.problems:
                report.visits_nonconformant += 1
                report.stored_problems.extend(visit.problems)
            report.resources.update(outcome.resources)
            report.patients.update(outcome.patients)
            if self.on_visit is not None:
                self.on_visit(visit.file, True)

    def _write(self, visit: PreparedVisit, session: WriteSession) -> _Outcome:
        assert visit.bundle is not None
        bundle = orjson.loads(visit.bundle)
        try:
            if self._superseded_checkin(bundle, session):
                return _Outcome([], created=False, superseded=True)
            bundle["entry"].extend(self._dropped_parts(bundle, session))
            response = process_bundle(self.engine, bundle, validated=True, session=session)
        except FhirError as exc:
            return _Outcome(_fhir_problems(visit.file, visit.ma_lk, exc, "not written: "))
        outcome = _Outcome([])
        body = response.json() or {}
        for sent, answer in zip(bundle["entry"], body.get("entry") or [], strict=False):
            if "resource" not in sent:
                continue  # a part of an earlier version of the visit, deleted
            rtype = sent["resource"]["resourceType"]
            status = str((answer.get("response") or {}).get("status", ""))
            if status.startswith("201") or sent["request"]["method"] == "PUT":
                outcome.resources[rtype] += 1  # not a facility that was already known
            location = str((answer.get("response") or {}).get("location", ""))
            if rtype == "Encounter":
                outcome.created = status.startswith("201")
            if rtype == "Patient" and location:
                outcome.patients.add(location.split("/_history")[0].rsplit("/", 2)[-1])
        return outcome

    def _superseded_checkin(self, bundle: dict[str, Any], session: Session) -> bool:
        """True for a check-in's transaction when its visit's Encounter is stored and is no
        check-in's (an XML1 wrote it): writing the check-in would undo the full visit."""
        encounter = next(
            (e for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"), None
        )
        if encounter is None or not _is_checkin(encounter["resource"]):
            return False
        query = encounter["request"]["url"].split("?", 1)[1]
        found = self.engine.match_conditional(session, "Encounter", query, "the check-in")
        return any(
            stored.content is not None and not _is_checkin(orjson.loads(stored.content))
            for stored in found
        )

    def _dropped_parts(self, bundle: dict[str, Any], session: Session) -> list[dict[str, Any]]:
        """DELETE entries for what an earlier version of a re-sent visit had and this one
        has not (a drug line taken out, a diagnosis corrected away), so the record after a
        re-send is the visit as last sent. Found through the record identifier and the
        Encounter; nothing when the visit is new. The OperationOutcome of an earlier
        nonconformant version goes too when this one is clean."""
        entries = bundle["entry"]
        encounter = next((e for e in entries if e["resource"]["resourceType"] == "Encounter"), None)
        parts = [
            e for e in entries if e["request"]["method"] == "PUT" and "?" not in e["request"]["url"]
        ]
        records = [e for e in parts if e["resource"].get("identifier")]
        if encounter is None or not records:
            return []
        record = records[0]["resource"]["identifier"][0]["system"]
        keep = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in parts}
        query = encounter["request"]["url"].split("?", 1)[1]
        engine = self.engine
        drop: list[dict[str, Any]] = []
        found = engine.match_conditional(session, "Encounter", query, "the re-sent visit")
        if len(found) != 1:
            return []
        if not any(rtype == "OperationOutcome" for rtype, _ in keep):
            outcome = _outcome_id(found[0].content)
            if outcome is not None:
                stored = session.read("OperationOutcome", outcome)
                if stored is not None and not stored.deleted:
                    drop.append(
                        {"request": {"method": "DELETE", "url": f"OperationOutcome/{outcome}"}}
                    )
        for rtype in _PART_TYPES:
            req = engine.parse_search(
                rtype,
                [("encounter", f"Encounter/{found[0].res_id}"), ("identifier", f"{record}|")],
            )
            req.query.count = 1000
            req.query.with_total = False
            for stored in session.search(req.query).matches:
                if (rtype, stored.res_id) not in keep:
                    drop.append(
                        {"request": {"method": "DELETE", "url": f"{rtype}/{stored.res_id}"}}
                    )
        return drop


def _is_checkin(encounter: dict[str, Any]) -> bool:
    """An Encounter written from a check-in (tagged :data:`to_fhir.CHECKIN_TAG`)."""
    return any(
        tag.get("system") == CHECKIN_TAG["system"] and tag.get("code") == CHECKIN_TAG["code"]
        for tag in (encounter.get("meta") or {}).get("tag") or []
    )


# resource types made from parts of a visit that point at its Encounter
_PART_TYPES = (
    "Condition",
    "Observation",
    "MedicationRequest",
    "ServiceRequest",
    "Procedure",
    "DiagnosticReport",
    "ClinicalImpression",
)


def report_outcome(report: IngestReport) -> tuple[int, dict[str, Any]]:
    """The HTTP answer: an OperationOutcome with one issue per problem and a summary —
    ``error`` for the problems of visits not written, ``warning`` for the conformance
    problems of visits written with them.

    200 when every visit was written, 422 when none was and some were rejected (or the
    file was refused), 200 with error issues when some were written and some not."""

    def issue(p: Problem, severity: str) -> Issue:
        return Issue(
            "invalid" if p.rule != "fhir" else "processing",
            f"{p.file}: {p.ma_lk + ': ' if p.ma_lk else ''}{p.message}"
            + (f" (value {p.value!r})" if p.value else ""),
            severity=severity,
            expression=tuple(x for x in (f"{p.table}.{p.field}".strip(".") or "",) if x),
        )

    issues = [issue(p, "error") for p in report.problems]
    issues += [issue(p, "warning") for p in report.stored_problems]
    issues.append(Issue("informational", report.summary(), severity="information"))
    status = 200
    if report.visits_written == 0 and (report.visits_rejected or report.refused_files):
        status = 422
    return status, {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def sender_facilities(engine: FhirEngine, ctx: Any) -> frozenset[str] | None:
    """The MA_CSKCB codes a sender may submit visits for: None (any) for data
    administrators and the local operator; for a ``system`` client, its organization —
    the token's organization is the facility code itself or the id of an Organization
    carrying the facility's VN Core provider code. Anyone else may not submit."""
    from lienthong.access.policy import forbidden
    from lienthong.ingest.xml130.to_fhir import PROVIDER_CODE

    principal = ctx.principal
    if principal.role == "data_admin":
        return None
    if principal.role != "system":
        raise forbidden(
            f"role {principal.role!r} may not submit hospital exports; a facility submits "
            "with a system token"
        )
    org = principal.organization
    if not org:
        raise forbidden("this system token names no organization, so no facility to submit for")
    codes = {org}
    with engine.store.reader() as session:
        stored = session.read("Organization", org)
    if stored is not None and stored.content is not None:
        import orjson

        resource = orjson.loads(stored.content)
        for ident in resource.get("identifier") or []:
            if ident.get("system") == PROVIDER_CODE and ident.get("value"):
                codes.add(str(ident["value"]))
    return frozenset(codes)


def submit(
    engine: FhirEngine, ctx: Any, body: bytes, max_bytes: int, *, strict: bool = False
) -> Any:
    """``POST /xml130``: one export in the body; the sender's facility only. ``strict``
    refuses every visit with any problem, as ``--strict`` does."""
    from lienthong.access.policy import forbidden
    from lienthong.fhir.engine import FhirResponse

    facilities = sender_facilities(engine, ctx)
    ingest = Xml130Ingest(engine, max_bytes=max_bytes, facilities=facilities, strict=strict)
    try:
        ingest.ingest(body, name="upload.xml")
    except FacilityRefused as exc:
        raise forbidden(str(exc)) from None
    status, outcome = report_outcome(ingest.report)
    if ingest.report.refused_files:
        status = 400
    return FhirResponse(status, outcome)


def _outcome_id(encounter: bytes | None) -> str | None:
    """The id of the OperationOutcome a stored Encounter points to, if it does."""
    if encounter is None:
        return None
    for ext in orjson.loads(encounter).get("extension") or []:
        if ext.get("url") == CONFORMANCE_OUTCOME_EXTENSION:
            reference = str((ext.get("valueReference") or {}).get("reference", ""))
            if reference.startswith("OperationOutcome/"):
                return reference.split("/", 1)[1]
    return None
