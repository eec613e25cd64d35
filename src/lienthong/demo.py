"""``lienthong demo``: synthetic health records built, loaded, linked, verified and served.

One command shows the whole platform on a fresh checkout, on the embedded SQLite
default: the population register extract and the noisy records of every source
(``synth population``), several hospitals' XML exports (``synth xml130``), the
immunization registry's and the commune stations' FHIR exports (``synth/fhir_sources``);
then each source through its own door into the FHIR engine with the master person
index on (``xml130 ingest``, ``import``), every Patient verified against the register
(``verify --store``), demo users with tokens, and the API served with authentication on.

Nothing here is a shortcut: every step calls the code the stand-alone commands call, so
what the demo shows is what those commands do. ``--no-serve`` stops after loading; a
summary of the run is written to ``DIR/demo-summary.json`` beside the database, and
``./lienthong.toml`` names the database so that the commands run next in the same folder
(``lienthong mpi review``, ``token``, ``serve``) open it. The records are dated back from
the day the demo runs (``--today`` pins the day: same seed and day, same data).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from lienthong import __version__
from lienthong.cli_common import cli_console
from lienthong.settings import Settings
from lienthong.synth.cli_synth import TodayOpt, synth_day

console = cli_console(soft_wrap=True)
err_console = cli_console(stderr=True, soft_wrap=True)

DEFAULT_DIR = Path("lienthong-data/demo")
DEFAULT_PROVINCE = "01"
"""The demo's synthetic province: Hà Nội."""
DEMO_USERS = ("demo-admin", "demo-clinician", "demo-analyst", "demo-citizen")
TOKEN_TTL = 12 * 3600  # long enough to try the API for an afternoon
SOURCE_LABELS = {
    "hospital": "hospitals (XML 130/4210)",
    "immunization": "immunization registry (FHIR)",
    "commune_station": "commune health stations (FHIR)",
}


class _Bar:
    """One step's progress bar."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.task = progress, task

    def advance(self, n: int = 1) -> None:
        self.progress.update(self.task, advance=n)

    def imported(self, path: Path, n: int) -> None:
        self.progress.update(self.task, advance=n)

    def to(self, n: int) -> None:
        self.progress.update(self.task, completed=n)


class DemoRun:
    """What one run did, step by step; written as ``demo-summary.json``."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.loaded: dict[str, dict[str, int]] = {}
        self.database: dict[str, int] = {}
        self.persons: dict[str, int] = {}
        self.verification: dict[str, int] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.files: dict[str, str] = {}
        self.icd10 = ""
        self.province: dict[str, str] = {}
        self.facilities: dict[str, str] = {}  # MA_CSKCB -> name

    @contextmanager
    def step(self, name: str, unit: str = "", total: int | None = None) -> Iterator[_Bar]:
        """Time a step and show its progress (``unit`` counted; none: a spinner-less bar)."""
        started = time.perf_counter()
        with Progress(
            TextColumn(f"[bold]{name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as progress:
            yield _Bar(progress, progress.add_task(name, total=total))
        seconds = time.perf_counter() - started
        self.steps.append({"step": name, "seconds": round(seconds, 2)})
        console.print(f"[green]✓[/] {name} ({seconds:.1f} s)")

    def as_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "loaded": self.loaded,
            "database": self.database,
            "persons": self.persons,
            "verification": self.verification,
            "users": self.users,
            "files": self.files,
            "icd10": self.icd10,
            "province": self.province,
            "facilities": self.facilities,
        }


MARKER = ".lienthong-demo"
"""Written first into a demo folder: only a folder holding it is ever emptied."""


class NotADemoFolder(Exception):
    """The folder holds a database the demo did not make: it is left alone."""


def _fresh_dir(folder: Path) -> list[Path]:
    """Remove what an earlier demo left in ``folder``: its databases and generated files.

    A folder with a lienthong database but without the demo's marker is someone's data
    (``--dir ./lienthong-data`` by mistake): :class:`NotADemoFolder`, nothing removed."""
    removed: list[Path] = []
    if not folder.exists():
        return removed
    if not (folder / MARKER).exists() and any(folder.glob("lienthong*.db")):
        raise NotADemoFolder(
            f"--dir: {folder} holds a lienthong database the demo did not make; "
            "choose another folder (the demo replaces the database in its folder)"
        )
    for path in sorted(folder.glob("lienthong*.db*")):
        path.unlink()
        removed.append(path)
    for sub in ("population", "xml130", "fhir"):
        if (folder / sub).exists():
            shutil.rmtree(folder / sub)
            removed.append(folder / sub)
    summary = folder / "demo-summary.json"
    if summary.exists():
        summary.unlink()
    return removed


def build(
    folder: Path,
    people: int,
    seed: int,
    settings: Settings,
    workers: int | None = None,
    province: str = DEFAULT_PROVINCE,
    today: date | None = None,
) -> DemoRun:
    """Generate one province's population and records, load, link and verify them into
    ``settings.database_url``."""
    from lienthong.fhir.engine import FhirEngine
    from lienthong.identity.register import FileRegister
    from lienthong.identity.verify_store import verify_patients
    from lienthong.ingest.bulk import BulkImporter
    from lienthong.ingest.xml130.cli_ingest import _xml_files
    from lienthong.ingest.xml130.ingest import Xml130Ingest
    from lienthong.storage.base import open_store
    from lienthong.synth.fhir_sources import generate_fhir_sources
    from lienthong.synth.population import communes_of, generate
    from lienthong.synth.xml130 import generate_xml130, province_facilities

    workers = (os.cpu_count() or 1) if workers is None else workers
    run = DemoRun()
    run.province = {"code": province, "name": communes_of(province)[0].province_name}
    run.facilities = dict(province_facilities(province))
    population, exports, fhir = folder / "population", folder / "xml130", folder / "fhir"
    visits = max(10, people // 4)

    with run.step(f"population register and source records of {people:,} people", "people",
                  people) as bar:  # fmt: skip
        summary = generate(
            people, seed, population, progress=bar.to, province=province, today=today
        )
    run.files.update({k: str(v) for k, v in summary.files.items()})
    with run.step(f"hospital XML exports of {visits:,} visits", "visits", visits) as bar:
        generate_xml130(
            visits,
            exports,
            seed=seed,
            population=population,
            progress=bar.to,
            province=province,
            today=today,
        )
    run.files["hospital exports"] = str(exports)
    with run.step("immunization registry and commune station FHIR exports"):
        sources = generate_fhir_sources(population, fhir, seed, today)
    for source in sources.files:
        run.files[f"{source} exports"] = str(fhir / source)

    store = open_store(settings.database_url, settings.pg_pool_size)
    try:
        engine = FhirEngine(store, settings)
        files = _xml_files([exports])
        with run.step(
            "hospital exports ingested (validated, mapped, persons resolved)", "visits", visits
        ) as bar:
            on_visit = bar.advance
            ingest = Xml130Ingest(
                engine,
                max_bytes=settings.xml130_max_bytes,
                on_visit=lambda file, ok: on_visit(),
            )
            ingest.ingest_paths(files, workers)
        report = ingest.report
        if report.problems:
            for problem in report.problems[:20]:
                err_console.print(f"{problem.file} {problem.ma_lk}: {problem.message}")
            raise RuntimeError(f"hospital exports: {report.summary()}")
        run.icd10 = str(getattr(ingest.icd, "source", "ICD-10"))
        run.loaded["hospital"] = dict(sorted(report.resources.items()))
        for source, paths in sources.files.items():
            total = sum(sources.resources[source].values())
            with run.step(f"{SOURCE_LABELS[source]} imported", "resources", total) as bar:
                importer = BulkImporter(
                    engine,
                    settings.import_batch_size,
                    workers=workers,
                    on_progress=bar.imported,
                )
                imported = importer.run(paths)
            if imported.rejected:
                for bulk_problem in imported.problems[:20]:
                    err_console.print(str(bulk_problem))
                raise RuntimeError(f"{source}: {imported.rejected} resources rejected")
            run.loaded[source] = dict(sorted(imported.loaded.items()))
        connector = FileRegister(population / "register.csv")
        try:
            with run.step("Patients verified against the population register", "Patients") as bar:
                verified = verify_patients(engine, connector, on_batch=bar.advance)
        finally:
            connector.close()
        run.verification = dict(sorted(verified.by_status.items()))
        with store.reader() as session:
            run.persons = engine.mpi.stats(session)
        store.optimize()
    finally:
        store.close()
    run.database = database_counts(settings)
    return run


def _sqlite(settings: Settings) -> sqlite3.Connection:
    path = settings.sqlite_path()
    if path is None:
        raise ValueError("the demo runs on the embedded SQLite database")
    return sqlite3.connect(path)


def database_counts(settings: Settings) -> dict[str, int]:
    """Current (not deleted) resources per type in the database."""
    with _sqlite(settings) as conn:
        rows = conn.execute(
            "SELECT res_type, COUNT(*) FROM resource WHERE deleted = 0 GROUP BY res_type"
        ).fetchall()
    return {str(t): int(n) for t, n in sorted(rows)}


def _linked_person(settings: Settings) -> tuple[str, list[str]]:
    """The person whose records come from the most sources (then the most records): the
    demo citizen, whose ``$everything`` shows linkage at work."""
    with _sqlite(settings) as conn:
        rows = conn.execute("SELECT master_id, res_id FROM mpi_record").fetchall()
    members: dict[str, list[str]] = {}
    for master, record in rows:
        members.setdefault(str(master), []).append(str(record))

    def kinds(records: list[str]) -> int:
        return len({r[:3] if r.startswith("TYT") else r[:2] for r in records})

    best = max(sorted(members), key=lambda m: (kinds(members[m]), len(members[m])))
    return best, sorted(members[best])


def _own_record(records: list[str]) -> str:
    """A hospital record when there is one (ids the hospital door gave), else the first."""
    hospital = [r for r in records if not r.startswith(("TC", "TYT"))]
    return (hospital or records)[0]


def _hospital(settings: Settings) -> tuple[str, str]:
    """The Organization id and provider code of the hospital whose clinicians have the
    most patients to see now (Encounters ended within the treatment window), then the
    one with the most visits."""
    from lienthong.ingest.xml130.to_fhir import PROVIDER_CODE

    with _sqlite(settings) as conn:
        rows = conn.execute(
            "SELECT r.res_id, v.content FROM resource r JOIN resource_version v"
            " ON v.pk = r.pk AND v.version = r.version"
            " WHERE r.res_type = 'Organization' AND r.deleted = 0"
        ).fetchall()
        encounters = conn.execute(
            "SELECT v.content FROM resource r JOIN resource_version v"
            " ON v.pk = r.pk AND v.version = r.version"
            " WHERE r.res_type = 'Encounter' AND r.deleted = 0"
        ).fetchall()
    codes: dict[str, str] = {}
    for res_id, content in rows:
        resource = json.loads(content)
        for ident in resource.get("identifier") or []:
            if ident.get("system") == PROVIDER_CODE:
                codes[str(res_id)] = str(ident.get("value"))
    since = datetime.now(UTC) - timedelta(days=settings.treatment_window_days)
    seen: Counter[str] = Counter()
    recent: dict[str, set[str]] = {}
    for (content,) in encounters:
        encounter = json.loads(content)
        ref = str((encounter.get("serviceProvider") or {}).get("reference", ""))
        if ref.startswith("Organization/") and ref[13:] in codes:
            seen[ref[13:]] += 1
            end = str((encounter.get("period") or {}).get("end") or "")
            when = datetime.fromisoformat(end) if end else None
            if when is not None and when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            if when is not None and when >= since:
                patient = str((encounter.get("subject") or {}).get("reference", ""))
                recent.setdefault(ref[13:], set()).add(patient)
    org = max(sorted(codes), key=lambda o: (len(recent.get(o, ())), seen[o]))
    return org, codes[org]


def record_consent(settings: Settings, patient: str, organization: str) -> str:
    """The citizen's consent that the hospital's clinicians see their record for
    treatment, whenever their last visit there was."""
    from lienthong.fhir.engine import FhirEngine
    from lienthong.fhir.interactions.update import update
    from lienthong.storage.base import open_store

    consent = {
        "resourceType": "Consent",
        "id": "demo-consent",
        "status": "active",
        "scope": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
            "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0",
                                  "display": "Patient Consent"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "dateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "provision": {
            "type": "permit",
            "actor": [{
                "role": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "PRCP"}]},
                "reference": {"reference": f"Organization/{organization}"}}],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                         "code": "TREAT"}],
        },
    }  # fmt: skip
    store = open_store(settings.database_url, settings.pg_pool_size)
    try:
        response = update(FhirEngine(store, settings), "Consent", "demo-consent", consent)
    finally:
        store.close()
    if response.status not in (200, 201):
        raise RuntimeError(f"the demo consent was not stored: {response.json()}")
    return "demo-consent"


def create_users(settings: Settings, run: DemoRun) -> dict[str, str]:
    """The four demo users and a token for each (name -> token)."""
    from lienthong.access.auth import TokenIssuer, UserDirectory

    person, records = _linked_person(settings)
    own = _own_record(records)
    org, code = _hospital(settings)
    consent = record_consent(settings, own, org)
    users = UserDirectory(settings.database_url)
    try:
        for name in DEMO_USERS:
            users.remove(name)
        added = [
            users.add("demo-admin", "data_admin"),
            users.add("demo-clinician", "clinician", organization=org),
            users.add("demo-analyst", "analyst"),
            # the person (master) record: the citizen sees the records every source
            # holds of them, as the person index links them
            users.add("demo-citizen", "citizen", patient=person),
        ]
    finally:
        users.close()
    issuer = TokenIssuer(settings.database_url, settings.issuer(), settings.token_audience)
    tokens: dict[str, str] = {}
    try:
        for user in added:
            tokens[user.name] = issuer.issue(user, None, TOKEN_TTL)
            run.users[user.name] = {
                "role": user.role,
                "organization": user.organization,
                "patient": user.patient,
            }
    finally:
        issuer.close()
    run.users["demo-clinician"]["provider_code"] = code
    run.users["demo-citizen"]["consent"] = f"Consent/{consent}"
    run.users["demo-citizen"]["person"] = person
    run.users["demo-citizen"]["record"] = own
    run.users["demo-citizen"]["records"] = records
    return tokens


def _a_family_name(settings: Settings) -> str:
    """The commonest family name among the stored Patients, as a source wrote it."""
    with _sqlite(settings) as conn:
        rows = conn.execute(
            "SELECT v.content FROM resource r JOIN resource_version v"
            " ON v.pk = r.pk AND v.version = r.version"
            " WHERE r.res_type = 'Patient' AND r.deleted = 0 LIMIT 2000"
        ).fetchall()
    names: Counter[str] = Counter()
    for (content,) in rows:
        for name in json.loads(content).get("name") or []:
            if name.get("family"):
                names[str(name["family"])] += 1
    return names.most_common(1)[0][0] if names else "Nguyễn"


def _an_identifier(settings: Settings, records: list[str], person: str) -> str | None:
    """``system|value`` of an identifier one of ``records`` carries and the person
    ``person`` does not (a card number, a hospital's patient code): found by identifier,
    the person comes back with the record. None when the records carry none."""
    with _sqlite(settings) as conn:
        rows = conn.execute(
            "SELECT r.res_id, v.content FROM resource r JOIN resource_version v"
            " ON v.pk = r.pk AND v.version = r.version"
            f" WHERE r.res_type = 'Patient' AND r.res_id IN ({','.join('?' * (len(records) + 1))})",
            (*records, person),
        ).fetchall()
    contents = {str(i): json.loads(c) for i, c in rows}

    def idents(resource: dict[str, Any]) -> list[str]:
        return [
            f"{i['system']}|{i['value']}"
            for i in resource.get("identifier") or []
            if i.get("system") and i.get("value")
        ]

    own = set(idents(contents.get(person, {})))
    found = [x for r in records for x in idents(contents.get(r, {}))]
    return next((x for x in found if x not in own), found[0] if found else None)


def try_urls(base: str, run: DemoRun, settings: Settings) -> list[tuple[str, str, str]]:
    """(what, user, URL) to try against the served API; each ``what`` says what the
    answer holds (the demo's tests check every one)."""
    from lienthong.synth.population import strip_diacritics

    person = run.users["demo-citizen"]["person"]
    own = run.users["demo-citizen"]["record"]
    records = run.users["demo-citizen"]["records"]
    family = _a_family_name(settings)
    match = quote(f"{base}/fhir/Patient/$match", safe=":/$")
    identifier = _an_identifier(settings, records, person)
    urls = [
        (
            f"Patients named {family} (written with or without accents)",
            "demo-admin",
            f"{base}/fhir/Patient?family={quote(strip_diacritics(family).lower())}&_count=5",
        ),
        (
            "one person's whole record, every source ($everything of the person)",
            "demo-admin",
            f"{base}/fhir/Patient/{person}/$everything",
        ),
        (
            "the citizen's own hospital record",
            "demo-citizen",
            f"{base}/fhir/Patient/{own}/$everything",
        ),
        (
            "a person (master) record and the source records it links",
            "demo-admin",
            f"{base}/fhir/Patient?_id={person}&_include=Patient:link",
        ),
        (
            "every source's encounters of one person (:mdm: the person and its records)",
            "demo-admin",
            f"{base}/fhir/Encounter?patient:mdm=Patient/{person}",
        ),
    ]
    if identifier is not None:
        urls.append(
            (
                "the records carrying an identifier, and their person (master) record",
                "demo-admin",
                f"{base}/fhir/Patient?identifier={quote(identifier, safe=':/|')}",
            )
        )
    urls += [
        ("vaccinations with the measles-rubella vaccine (CVX 04)", "demo-admin",
         f"{base}/fhir/Immunization?vaccine-code=http://hl7.org/fhir/sid/cvx|04&_count=5"),
        ("de-identified blood pressures for statistics", "demo-analyst",
         f"{base}/fhir/Observation?code=http://loinc.org|85354-9&_count=5"),
        (f"patients the hospital's clinician may see: treated there in the last "
         f"{settings.treatment_window_days} days", "demo-clinician",
         f"{base}/fhir/Patient?_count=5"),
        ("the citizen's record: the hospital's clinician may read it, the citizen consented",
         "demo-clinician", f"{base}/fhir/Patient/{own}"),
        ("who read the citizen's record (the audit trail)", "demo-citizen",
         f"{base}/fhir/AuditEvent?_count=5"),
        ("an ICD-10 code looked up", "demo-admin",
         f"{base}/fhir/CodeSystem/$lookup?system=http://hl7.org/fhir/sid/icd-10&code=J18.9"),
        ("Patient/$match (POST a Patient in a Parameters resource)", "demo-admin", match),
    ]  # fmt: skip
    return urls


SETTINGS_MARK = "# written by lienthong demo"


def write_settings_file(folder: Path, database_url: str) -> Path | None:
    """``folder/lienthong.toml`` naming the demo's database, so that the commands run
    next in ``folder`` open it; None (nothing written) when a settings file there is
    someone's own (it lacks the demo's first line)."""
    from lienthong.settings import CONFIG_FILE

    path = folder / CONFIG_FILE
    if path.exists() and not path.read_text(encoding="utf-8").startswith(SETTINGS_MARK):
        return None
    path.write_text(
        f"{SETTINGS_MARK}: lienthong commands run in this folder open the demo's database\n"
        "# (pass --database, set LIENTHONG_DATABASE_URL or delete this file for another)\n"
        f"database_url = {json.dumps(database_url)}\n",
        encoding="utf-8",
    )
    return path


def print_run(run: DemoRun, folder: Path, settings: Settings) -> None:
    console.print(
        f"province {run.province['code']} {run.province['name']}; hospitals: "
        + ", ".join(f"{code} {name}" for code, name in run.facilities.items())
    )
    loaded = Table(title="Loaded, by source (resources written)")
    types = sorted({t for counts in run.loaded.values() for t in counts})
    loaded.add_column("resource type")
    for source in run.loaded:
        loaded.add_column(SOURCE_LABELS.get(source, source), justify="right")
    for rtype in types:
        loaded.add_row(rtype, *(f"{run.loaded[s].get(rtype, 0):,}" for s in run.loaded))
    console.print(loaded)
    db = Table(title=f"In the database {settings.sqlite_path()}")
    db.add_column("resource type")
    db.add_column("resources", justify="right")
    for rtype, n in run.database.items():
        db.add_row(rtype, str(n))
    db.add_row("[bold]total[/]", f"[bold]{sum(run.database.values())}[/]")
    console.print(db)
    p = run.persons
    console.print(
        f"persons: {p.get('persons', 0)} (master Patients) linking {p.get('records', 0)} "
        f"source Patient records; {p.get('pending_reviews', 0)} pairs to review "
        "(lienthong mpi review)"
    )
    statuses = ", ".join(f"{s}: {n}" for s, n in run.verification.items())
    console.print(f"Patients verified against the register: {statuses}")
    from lienthong.identity.verify_store import print_progress

    print_progress(settings.database_url, console)
    # the catalogue names a loaded list by its CodeSystem, the fallback by its package
    loaded_list = run.icd10.startswith("CodeSystem/")
    hint = "" if loaded_list else " (load the Ministry's list with: lienthong terminology load)"
    console.print(f"ICD-10: {run.icd10}{hint}")
    steps = Table(title="Time per step")
    steps.add_column("step")
    steps.add_column("seconds", justify="right")
    for s in run.steps:
        steps.add_row(s["step"], f"{s['seconds']:.1f}")
    console.print(steps)
    console.print(f"files: {folder}")
    for name, path in run.files.items():
        console.print(f"  {name}: {path}")
    console.print(f"  database: {settings.sqlite_path()}")
    console.print(f"  summary: {folder / 'demo-summary.json'}")


def demo_command(
    people: Annotated[int, typer.Option("--people", "-n", min=10, help="synthetic people")] = 2000,
    seed: Annotated[int, typer.Option("--seed", "-s", help="same seed, same data")] = 1,
    folder: Annotated[
        Path, typer.Option("--dir", help="where the files and the database go (replaced)")
    ] = DEFAULT_DIR,
    port: Annotated[int, typer.Option(help="port to serve on")] = 8080,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="serve the API after loading")
    ] = True,
    workers: Annotated[
        int | None,
        typer.Option(help="processes preparing input ahead of the writer (default: CPU count)"),
    ] = None,
    province: Annotated[
        str,
        typer.Option(help="the synthetic province: a current two-digit province code"),
    ] = DEFAULT_PROVINCE,
    today: TodayOpt = None,
) -> None:
    """Build a synthetic province's health records, load, link and verify them, and serve
    the API."""
    from lienthong.synth.population import communes_of

    day = synth_day(today)
    try:
        province_name = communes_of(province)[0].province_name
    except ValueError as exc:
        err_console.print(f"--province: {exc}")
        raise typer.Exit(2) from None
    folder = folder.resolve()
    database_url = f"sqlite:///{folder / 'lienthong.db'}"
    settings = Settings.from_env().model_copy(
        update={
            "database_url": database_url,
            "mpi": True,  # records link to persons as they arrive
            "auth": "on",
            "host": host,
            "port": port,
        }
    )
    try:
        removed = _fresh_dir(folder)
    except NotADemoFolder as exc:
        err_console.print(str(exc))
        raise typer.Exit(2) from None
    if removed:
        console.print(f"replacing the earlier demo in {folder} ({len(removed)} items removed)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by lienthong demo; the demo replaces this folder's data\n")
    console.print(
        f"lienthong {__version__} demo: {province_name} ({province}), {people:,} people, "
        f"seed {seed}, in {folder}"
    )
    try:
        run = build(folder, people, seed, settings, workers, province, day)
    except (RuntimeError, ValueError, OSError) as exc:
        err_console.print(f"demo failed: {exc}")
        raise typer.Exit(1) from None
    tokens = create_users(settings, run)
    (folder / "demo-summary.json").write_text(
        json.dumps(run.as_json(), ensure_ascii=False, indent=1), encoding="utf-8"
    )
    print_run(run, folder, settings)
    written = write_settings_file(Path.cwd(), database_url)
    if written is not None:
        console.print(f"  settings: {written} (lienthong commands run in {written.parent} "
                      "open this database)")  # fmt: skip
        database_opt = ""
    else:
        console.print(f"  settings: {Path.cwd() / 'lienthong.toml'} is not the demo's: left "
                      "alone; pass --database to the commands")  # fmt: skip
        database_opt = f" --database {database_url}"
    base = f"http://{host}:{port}"
    console.print("\n[bold]Demo users[/] (tokens valid 12 h; a new one: lienthong token NAME"
                  f"{database_opt})")  # fmt: skip
    for name, token in tokens.items():
        info = run.users[name]
        extra = ", ".join(f"{k}={v}" for k, v in info.items() if k in ("organization", "patient"))
        var = name.replace("demo-", "").upper()
        console.print(f"{var}={token}  # {name}: {info['role']}{', ' + extra if extra else ''}")
    console.print("\n[bold]Try[/]")
    for what, user, url in try_urls(base, run, settings):
        var = user.replace("demo-", "").upper()
        console.print(f"# {what}")
        if "$match" in url:
            body = _match_body(settings, run.users["demo-citizen"]["person"])
            console.print(
                f'curl -H "Authorization: Bearer ${var}" '
                f"-H 'Content-Type: application/fhir+json' -d '{body}' '{url}'"
            )
        else:
            console.print(f"curl -H \"Authorization: Bearer ${var}\" '{url}'")
    if not serve:
        console.print(f"\nnot serving (--no-serve); serve later with: LIENTHONG_MPI=true "
                      f"lienthong serve{database_opt}")  # fmt: skip
        return
    _serve(settings)


def _match_body(settings: Settings, person: str) -> str:
    """A ``$match`` request for the demo citizen's person as a hospital would ask."""
    with _sqlite(settings) as conn:
        row = conn.execute(
            "SELECT v.content FROM resource r JOIN resource_version v"
            " ON v.pk = r.pk AND v.version = r.version"
            " WHERE r.res_type = 'Patient' AND r.res_id = ?",
            (person,),
        ).fetchone()
    master = json.loads(row[0]) if row else {}
    name = ((master.get("name") or [{}])[0]).get("text") or "Nguyễn Văn An"
    patient = {"resourceType": "Patient", "name": [{"text": name}]}
    if master.get("birthDate"):
        patient["birthDate"] = master["birthDate"]
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}]}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _serve(settings: Settings) -> None:
    import uvicorn

    for name, value in settings.model_dump().items():
        if value is not None:
            os.environ[f"LIENTHONG_{name.upper()}"] = str(value)
    console.print(
        f"\nserving the FHIR API at [bold]http://{settings.host}:{settings.port}/fhir[/] "
        "(authentication on; Ctrl-C stops)"
    )
    from lienthong.server.http_protocol import Utf8TargetProtocol

    uvicorn.run(
        "lienthong.server.app:create_app",
        factory=True,
        http=Utf8TargetProtocol,
        host=settings.host,
        port=settings.port,
        log_level="warning",
    )
