"""Hospital XML exports into the shared record: parse, validate, map, write.

Each valid visit is written as ONE transaction through the FHIR engine, so the
access policy of whoever sends it, the master person index and the audit
trail apply exactly as for any other write. A visit that fails validation is
reported (one line per problem) and not written; the valid visits of the same
file still go in. A file that cannot be read to its end (hostile, truncated,
bad base64) is refused before anything of it is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lienthong.fhir.engine import FhirEngine
from lienthong.fhir.errors import FhirError, Issue
from lienthong.fhir.interactions.transaction import process_bundle
from lienthong.ingest.xml130.model import Visit, Xml130Error
from lienthong.ingest.xml130.parse import DEFAULT_MAX_BYTES, parse
from lienthong.ingest.xml130.to_fhir import visit_bundle
from lienthong.ingest.xml130.validate import FileValidation, Problem
from lienthong.terminology.catalogue import Icd10Catalogue, icd10_catalogue


@dataclass
class IngestReport:
    """What one run did: visits written (new), updated (re-sent), rejected; resources by
    type; every problem; files refused whole."""

    files: int = 0
    visits_created: int = 0
    visits_updated: int = 0
    visits_rejected: int = 0
    resources: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    refused_files: list[str] = field(default_factory=list)
    patients: set[str] = field(default_factory=set)

    @property
    def visits_written(self) -> int:
        return self.visits_created + self.visits_updated

    def summary(self) -> str:
        refused = f", {len(self.refused_files)} files refused" if self.refused_files else ""
        return (
            f"{self.files} files: {self.visits_created} visits written, "
            f"{self.visits_updated} updated, {self.visits_rejected} rejected{refused}; "
            f"{sum(self.resources.values())} resources"
        )


class FacilityRefused(Exception):
    """A submitter sent visits of a facility other than its own; nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class Xml130Ingest:
    """Ingests exports into ``engine`` (which may be a user's guarded engine).

    ``facilities``, when given, are the only MA_CSKCB values the submitter may send: a
    file with another facility's visit is refused whole (:class:`FacilityRefused`).
    """

    def __init__(
        self,
        engine: FhirEngine,
        *,
        icd: Icd10Catalogue | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        facilities: frozenset[str] | None = None,
        on_visit: Callable[[Visit, bool], None] | None = None,
        mapper: Callable[[Visit, Icd10Catalogue], dict[str, Any]] = visit_bundle,
    ) -> None:
        self.engine = engine
        self.icd = icd if icd is not None else icd10_catalogue(engine)
        self.max_bytes = max_bytes
        self.facilities = facilities
        self.on_visit = on_visit
        self.mapper = mapper
        self.report = IngestReport()

    def ingest(self, source: str | Path | bytes, name: str | None = None) -> IngestReport:
        """Ingest one file (a path or its bytes); returns the run's report so far."""
        report = self.report
        report.files += 1
        label = name or (Path(source).name if not isinstance(source, bytes) else "<upload>")
        if not self._readable(source, label):
            return report
        check = FileValidation(source, icd=self.icd, name=label, max_bytes=self.max_bytes)
        for visit, problems in check:
            if problems:
                report.visits_rejected += 1
                report.problems.extend(problems)
            else:
                self._write(visit)
            if self.on_visit is not None:
                self.on_visit(visit, not problems)
        report.problems.extend(check.file_problems)
        return report

    def _readable(self, source: str | Path | bytes, label: str) -> bool:
        """Read the whole file once before writing any of it: truncation or bad base64 near
        the end must not leave half a file written. Also enforces the facility scope."""
        try:
            for visit in parse(source, name=label, max_bytes=self.max_bytes):
                facility = visit.ma_cskcb.strip()
                if self.facilities is not None and facility not in self.facilities:
                    raise FacilityRefused(
                        f"{label}: visit MA_LK {visit.ma_lk!r} is from facility "
                        f"{facility or '(none)'!r}; this sender may submit only visits of "
                        f"{', '.join(sorted(self.facilities))}"
                    )
        except Xml130Error as exc:
            self.report.refused_files.append(label)
            self.report.problems.append(Problem(label, "", "", "", "file", str(exc), ""))
            return False
        return True

    def _write(self, visit: Visit) -> None:
        report = self.report
        try:
            bundle = self.mapper(visit, self.icd)
            response = process_bundle(self.engine, bundle)
        except FhirError as exc:
            report.visits_rejected += 1
            for issue in exc.issues:
                report.problems.append(
                    Problem(
                        visit.file,
                        visit.ma_lk,
                        "",
                        ", ".join(issue.expression),
                        "fhir",
                        f"visit {visit.index}: not written: {issue.diagnostics}",
                        "",
                    )
                )
            return
        body = response.json() or {}
        created = True
        for sent, answer in zip(bundle["entry"], body.get("entry") or [], strict=False):
            rtype = sent["resource"]["resourceType"]
            status = str((answer.get("response") or {}).get("status", ""))
            if status.startswith("201") or sent["request"]["method"] == "PUT":
                report.resources[rtype] += 1  # not a facility that was already known
            location = str((answer.get("response") or {}).get("location", ""))
            if rtype == "Encounter":
                created = status.startswith("201")
            if rtype == "Patient" and location:
                report.patients.add(location.split("/_history")[0].rsplit("/", 2)[-1])
        if created:
            report.visits_created += 1
        else:
            report.visits_updated += 1


def report_outcome(report: IngestReport) -> tuple[int, dict[str, Any]]:
    """The HTTP answer: an OperationOutcome with one issue per problem and a summary.

    200 when every visit was written, 422 when none was and some were rejected (or the
    file was refused), 200 with error issues when some were written and some not."""
    issues = [
        Issue(
            "invalid" if p.rule != "fhir" else "processing",
            f"{p.file}: {p.ma_lk + ': ' if p.ma_lk else ''}{p.message}"
            + (f" (value {p.value!r})" if p.value else ""),
            expression=tuple(x for x in (f"{p.table}.{p.field}".strip(".") or "",) if x),
        )
        for p in report.problems
    ]
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


def submit(engine: FhirEngine, ctx: Any, body: bytes, max_bytes: int) -> Any:
    """``POST /xml130``: one export in the body; the sender's facility only."""
    from lienthong.access.policy import forbidden
    from lienthong.fhir.engine import FhirResponse

    facilities = sender_facilities(engine, ctx)
    ingest = Xml130Ingest(engine, max_bytes=max_bytes, facilities=facilities)
    try:
        ingest.ingest(body, name="upload.xml")
    except FacilityRefused as exc:
        raise forbidden(str(exc)) from None
    status, outcome = report_outcome(ingest.report)
    if ingest.report.refused_files:
        status = 400
    return FhirResponse(status, outcome)
