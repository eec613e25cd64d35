"""``lienthong demo``: the real command, as a user runs it, on a small province."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import lienthong
from lienthong.fhir.engine import FhirEngine
from lienthong.fhir.interactions.search import search
from lienthong.fhir.text import fold
from lienthong.identity.mpi import is_master
from lienthong.identity.verify_store import EXTENSION_URL, current_outcome
from lienthong.ingest.xml130.to_fhir import SOURCE as HOSPITAL_SOURCE
from lienthong.settings import Settings
from lienthong.storage.base import open_store
from lienthong.synth.fhir_sources import SOURCE_URI
from tests.pg_server import free_port

MASTER = "http://fhir.lienthong.vn/mpi|master"
SRC = Path(lienthong.__file__).resolve().parents[1]
# the demo switches the person index on; it runs in its own folder (where it writes
# lienthong.toml), so the sources under test are named by absolute paths
ENV = {
    **os.environ,
    "LIENTHONG_MPI": "false",
    "PYTHONPATH": os.pathsep.join((str(SRC), str(SRC.parent))),
}
TABLE_ROW = re.compile(r"^\s*([A-Za-z]+)\s+([\d,]+)\s*$")  # a plain table's row (not a tty)


def demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "lienthong.cli", "demo", *args]


def printed_database_table(out: str) -> dict[str, int]:
    """The rows of the 'In the database' table the demo printed: written to a pipe, a
    title line, a header line, then one line a row, up to the line after the total."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "In the database" in line)
    assert lines[start + 1].split() == ["resource", "type", "resources"], lines[start + 1]
    rows: dict[str, int] = {}
    for line in lines[start + 2 :]:
        m = TABLE_ROW.match(line)
        assert m, line  # every line up to the total is a row
        rows[m.group(1)] = int(m.group(2).replace(",", ""))
        if m.group(1) == "total":
            break
    return rows


def record_source(resource: dict[str, Any]) -> str:
    source = (resource.get("meta") or {}).get("source")
    return "hospital" if source == HOSPITAL_SOURCE else str(source or "?")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("demo")
    # a stale file of an earlier run must go: the database is replaced, saying so
    (folder / ".lienthong-demo").write_text("an earlier demo\n")
    (folder / "lienthong.db").write_bytes(b"not a database")
    done = subprocess.run(
        demo("--people", "240", "--seed", "3", "--dir", str(folder), "--no-serve"),
        cwd=folder,  # where it writes lienthong.toml
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return folder, done.stdout


def test_demo_database_matches_what_it_printed(built: tuple[Path, str]) -> None:
    folder, out = built
    assert "replacing the earlier demo" in out
    printed = printed_database_table(out)
    assert {"Patient", "Encounter", "Immunization", "Observation", "Claim"} <= set(printed)
    settings = Settings.from_env({}).model_copy(
        update={"database_url": f"sqlite:///{folder / 'lienthong.db'}", "mpi": True}
    )
    store = open_store(settings.database_url)
    try:
        engine = FhirEngine(store, settings)

        def total(rtype: str, *params: tuple[str, str]) -> int:
            body = search(engine, rtype, [*params, ("_summary", "count")]).json()
            assert body is not None
            return int(body["total"])

        for rtype, n in printed.items():
            if rtype == "total":
                continue
            if rtype == "Patient":
                masters = total("Patient", ("_tag", MASTER))
                assert total("Patient") + masters == n
            else:
                assert total(rtype) == n, rtype
        assert printed["total"] == sum(n for t, n in printed.items() if t != "total")

        # persons: the master Patients, and the source records they link
        masters = total("Patient", ("_tag", MASTER))
        sources = total("Patient")
        m = re.search(r"persons: (\d+) \(master Patients\) linking (\d+) source Patient", out)
        assert m is not None, out
        assert (int(m.group(1)), int(m.group(2))) == (masters, sources)
        assert 0 < masters < sources

        ids = [e["resource"]["id"] for e in _all(engine, "Patient")]
        ids += [e["resource"]["id"] for e in _all(engine, "Patient", ("_tag", MASTER))]
        with store.reader() as session:
            stored = session.read_many([("Patient", i) for i in ids])
            patients = [orjson.loads(s.content) for s in stored if s.content]
        assert len(patients) == masters + sources
    finally:
        store.close()
    by_id = {p["id"]: p for p in patients}
    # records of several sources link to one person
    sources_of_person = [
        {record_source(by_id[link["other"]["reference"][8:]]) for link in p.get("link") or []}
        for p in patients
        if any(t.get("code") == "master" for t in (p.get("meta") or {}).get("tag") or [])
    ]
    several = [s for s in sources_of_person if len(s) >= 2]
    assert several, "no person links records of two sources"
    assert any("hospital" in s and (set(SOURCE_URI.values()) & s) for s in several)
    assert {SOURCE_URI["immunization"], SOURCE_URI["commune_station"], "hospital"} <= set().union(
        *sources_of_person
    )

    # verification outcomes are on the Patients, counted as printed
    statuses: Counter[str] = Counter()
    for p in patients:
        if is_master(p):
            assert current_outcome(p) is None  # a person is not a record of any source
            continue
        ext = current_outcome(p)
        assert ext is not None and ext["url"] == EXTENSION_URL, p["id"]
        status = next(e["valueCode"] for e in ext["extension"] if e["url"] == "status")
        statuses[status] += 1
    line = next(x for x in out.splitlines() if x.startswith("Patients verified against"))
    printed_statuses = dict(
        (k, int(v)) for k, v in re.findall(r"(\w+): (\d+)", line.split("register:", 1)[1])
    )
    assert printed_statuses == dict(statuses)
    assert statuses["verified"] > 0 and len(statuses) >= 2


def _all(engine: FhirEngine, rtype: str, *params: tuple[str, str]) -> list[dict[str, Any]]:
    body = search(engine, rtype, [*params, ("_count", "1000"), ("_elements", "id")]).json()
    assert body is not None
    entries: list[dict[str, Any]] = body.get("entry", [])
    assert len(entries) == body["total"]  # one page holds them all
    return entries


def test_demo_leaves_a_database_it_did_not_make_alone(tmp_path: Path) -> None:
    data = tmp_path / "lienthong.db"
    data.write_bytes(b"someone's records")
    done = subprocess.run(
        demo("--people", "10", "--dir", str(tmp_path), "--no-serve"),
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--dir" in done.stderr and "did not make" in done.stderr
    assert data.read_bytes() == b"someone's records"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lienthong.db"]


def test_demo_files_and_sources(built: tuple[Path, str]) -> None:
    folder, out = built
    for path in ("population/register.csv", "population/records.csv", "demo-summary.json"):
        assert (folder / path).is_file(), path
    assert list((folder / "xml130").rglob("*.xml"))
    immunizations = folder / "fhir/immunization/3-immunizations.ndjson"
    vaccines = {
        c["code"]
        for line in immunizations.read_bytes().splitlines()
        for c in orjson.loads(line)["vaccineCode"]["coding"]
    }
    assert {"19", "102"} & vaccines and {"213"} & vaccines  # children's schedule and adults
    for step in ("population register", "hospital exports ingested", "verified against"):
        assert re.search(rf"{step}.*\(\d+\.\d s\)", out), step


def test_demo_builds_one_province(built: tuple[Path, str]) -> None:
    """Everyone in the register lives in the demo's province, every hospital export is
    from one of its facilities, and the run says which."""
    import csv

    from lienthong.identity.identifiers import check_facility_code
    from lienthong.synth.population import communes_of

    folder, out = built
    communes = {c.code for c in communes_of("01")}
    legacy = {c.legacy_province_code for c in communes_of("01")}
    with (folder / "population/register.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["province_code"] for r in rows} == {"01"}
    assert {r["commune_code"] for r in rows} <= communes
    summary = orjson.loads((folder / "demo-summary.json").read_bytes())
    assert summary["province"] == {"code": "01", "name": "Thành phố Hà Nội"}
    facilities = {p.parent.name for p in (folder / "xml130").rglob("*.xml")}
    assert facilities and facilities <= set(summary["facilities"])
    for code in summary["facilities"]:
        assert check_facility_code(code) == [] and code[:2] in legacy
    assert "province 01 Thành phố Hà Nội; hospitals: " in out
    # the stations of the commune-station source are the province's too
    stations = {
        orjson.loads(line)["id"]
        for path in (folder / "fhir/commune_station").glob("*.ndjson")
        for line in path.read_bytes().splitlines()
        if orjson.loads(line)["resourceType"] == "Organization"
    }
    assert stations and {s.removeprefix("tyt-") for s in stations} <= communes


def test_demo_refuses_an_unknown_province(tmp_path: Path) -> None:
    done = subprocess.run(
        demo("--province", "99", "--dir", str(tmp_path / "d"), "--no-serve"),
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--province: no province with code '99'" in done.stderr
    assert not (tmp_path / "d").exists()


def test_demo_serves_what_it_printed(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        demo("--people", "120", "--seed", "5", "--dir", str(tmp_path), "--port", str(port)),
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.time() + 240
        assert proc.stdout is not None
        while not any("serving the FHIR API" in line for line in lines):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise AssertionError("demo stopped:\n" + "".join(lines))
            lines.append(line)
            assert time.time() < deadline, "".join(lines)
        out = "".join(lines)
        tokens = dict(re.findall(r"^([A-Z]+)=(\S+)  # demo-", out, re.MULTILINE))
        assert set(tokens) == {"ADMIN", "CLINICIAN", "ANALYST", "CITIZEN"}
        gets = re.findall(r"^curl -H \"Authorization: Bearer \$([A-Z]+)\" '([^']+)'$", out, re.M)
        posts = re.findall(
            r"^curl -H \"Authorization: Bearer \$([A-Z]+)\" -H '([^']+)' -d '([^']+)' '([^']+)'$",
            out,
            re.M,
        )
        assert len(gets) >= 6 and len(posts) == 1
        urls = " ".join(url for _, url in gets)
        for part in ("Patient?family=", "$everything", "Immunization?", "AuditEvent", "$lookup"):
            assert part in urls, part
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                httpx.get(f"{base}/fhir/metadata", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.time() < deadline, "not listening"
                time.sleep(0.3)
        with httpx.Client(timeout=30) as client:
            for who, url in gets:
                r = client.get(url, headers={"Authorization": f"Bearer {tokens[who]}"})
                assert r.status_code == 200, (who, url, r.text[:500])
                assert r.headers["content-type"].startswith("application/fhir+json")
            everything = next(u for who, u in gets if "$everything" in u and who == "ADMIN")
            r = client.get(everything, headers={"Authorization": f"Bearer {tokens['ADMIN']}"})
            kinds = Counter(e["resource"]["resourceType"] for e in r.json().get("entry", []))
            assert kinds["Patient"] >= 3, kinds  # the person and their source records
            own = next(u for who, u in gets if "$everything" in u and who == "CITIZEN")
            r = client.get(own, headers={"Authorization": f"Bearer {tokens['CITIZEN']}"})
            assert r.json()["entry"], "the citizen sees nothing of their own record"
            citizen = {"Authorization": f"Bearer {tokens['CITIZEN']}"}
            person = everything.replace("/$everything", "")
            r = client.get(person, headers=citizen)
            assert r.status_code == 200, r.text[:500]  # linked to the person, they read it
            r = client.get(everything, headers=citizen)
            assert r.status_code == 200, r.text[:500]
            seen_kinds = Counter(e["resource"]["resourceType"] for e in r.json()["entry"])
            assert seen_kinds["Patient"] == kinds["Patient"]  # every source's record
            mine = {e["resource"]["id"] for e in r.json()["entry"]}
            family = next(url for _, url in gets if "family=" in url)
            r = client.get(family, headers={"Authorization": f"Bearer {tokens['ADMIN']}"})
            assert r.json()["total"] > 0
            others = [e["resource"]["id"] for e in r.json()["entry"]]
            others = [i for i in others if i not in mine and i != person.rsplit("/", 1)[1]]
            assert others, "the name search found only the citizen's own records"
            r = client.get(f"{base}/fhir/Patient/{others[0]}", headers=citizen)
            assert r.status_code == 404  # nobody else's record
            who, header, body, url = posts[0]
            r = client.post(
                url,
                content=body.encode(),
                headers={
                    "Authorization": f"Bearer {tokens[who]}",
                    header.split(": ")[0]: header.split(": ")[1],
                },
            )
            assert r.status_code == 200, r.text[:500]
            assert r.json()["entry"], "the person's own name and birth date found nobody"
            consented = next(u for who, u in gets if who == "CLINICIAN" and "?" not in u)
            assert consented.endswith(own.split("/")[-2])  # the citizen's hospital record
            r = client.get(consented, headers={"Authorization": f"Bearer {tokens['CLINICIAN']}"})
            assert r.status_code == 200, r.text[:300]  # the citizen consented to this hospital
            check_every_example(out, client, tokens, tmp_path)
            # authentication is on: no token, no data
            assert client.get(f"{base}/fhir/Patient").status_code == 401
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


EXAMPLE = re.compile(
    r"^# (?P<what>.+)\n"
    r"curl -H \"Authorization: Bearer \$(?P<who>[A-Z]+)\""
    r"(?: -H '(?P<header>[^']+)' -d '(?P<body>[^']+)')?"
    r" '(?P<url>[^']+)'$",
    re.M,
)


def printed_examples(out: str) -> list[dict[str, str]]:
    """Each example the demo printed under "Try": its comment, user, URL and POST body."""
    return [m.groupdict() for m in EXAMPLE.finditer(out.split("\nTry\n", 1)[1])]


def check_every_example(
    out: str, client: httpx.Client, tokens: dict[str, str], folder: Path
) -> None:
    """Run every printed example and check that the answer holds what its comment says.

    An example with no check here fails: a new example comes with its claim checked."""
    examples = printed_examples(out)
    assert len(examples) == len(re.findall(r"^curl ", out, re.M)), "an example not parsed"
    summary = orjson.loads((folder / "demo-summary.json").read_bytes())
    citizen = summary["users"]["demo-citizen"]
    person, own = citizen["person"], citizen["record"]
    records = set(citizen["records"])
    settings = Settings.from_env({}).model_copy(
        update={"database_url": f"sqlite:///{folder / 'lienthong.db'}", "mpi": True}
    )
    admin = {"Authorization": f"Bearer {tokens['ADMIN']}"}
    checked = []
    for ex in examples:
        what, headers = ex["what"], {"Authorization": f"Bearer {tokens[ex['who']]}"}
        if ex["body"]:
            name, value = ex["header"].split(": ")
            r = client.post(
                ex["url"], content=ex["body"].encode(), headers={**headers, name: value}
            )
        else:
            r = client.get(ex["url"], headers=headers)
        assert r.status_code == 200, (what, ex["url"], r.text[:300])
        body = r.json()
        entries = (
            [e["resource"] for e in body.get("entry", []) if e["search"]["mode"] != "outcome"]
            if body["resourceType"] == "Bundle"
            else []
        )
        ids = {e["id"] for e in entries}
        if what.startswith("Patients named "):
            family = fold(what.split(" named ")[1].split(" (")[0])
            assert body["total"] > 0 and entries, what
            for p in entries:
                assert any(family in fold(n.get("family", "")) for n in p["name"]), p["name"]
        elif what.startswith("one person's whole record"):
            patients = [p for p in entries if p["resourceType"] == "Patient"]
            assert patients[0]["id"] == person and is_master(patients[0])
            assert {p["id"] for p in patients[1:]} == records  # every source's record
            assert len({record_source(p) for p in patients[1:]}) >= 2, what
        elif what.startswith("the citizen's own hospital record"):
            assert entries[0]["id"] == own and len(entries) > 1, what
        elif what.startswith("a person (master) record and the source records it links"):
            matches = [e["resource"] for e in body["entry"] if e["search"]["mode"] == "match"]
            assert [m["id"] for m in matches] == [person] and is_master(matches[0]), what
            assert ids - {person} == records, what
        elif what.startswith("every source's encounters of one person"):
            everything = client.get(
                f"{ex['url'].split('/fhir/')[0]}/fhir/Patient/{person}/$everything", headers=admin
            ).json()
            expected = {
                e["resource"]["id"]
                for e in everything["entry"]
                if e["resource"]["resourceType"] == "Encounter"
            }
            assert expected and ids == expected and body["total"] == len(expected), what
            subjects = {e["subject"]["reference"][8:] for e in entries}
            assert subjects <= records and len(subjects) >= 1
        elif what.startswith("the records carrying an identifier, and their person"):
            system, value = ex["url"].split("identifier=", 1)[1].replace("%7C", "|").split("|")
            carrying = {
                p["id"]
                for p in entries
                if any(
                    i.get("system") == system and i.get("value") == value
                    for i in p.get("identifier") or []
                )
            }
            assert carrying and carrying <= records, what
            assert [p["id"] for p in entries if is_master(p)] == [person], what
        elif what.startswith("vaccinations with the measles-rubella vaccine (CVX 04)"):
            assert entries, what
            for imm in entries:
                assert {c["code"] for c in imm["vaccineCode"]["coding"]} == {"04"}, imm
        elif what.startswith("de-identified blood pressures"):
            assert entries, what
            for obs in entries:
                assert obs["code"]["coding"][0]["code"] == "85354-9"
                assert {s["code"] for s in obs["meta"]["security"]} >= {"REDACTED"}, obs["meta"]
        elif what.startswith("patients the hospital's clinician may see: treated there"):
            days = int(re.search(r"last (\d+) days", what).group(1))  # type: ignore[union-attr]
            recent = _recently_treated(
                settings, summary["users"]["demo-clinician"]["organization"], days
            )
            assert recent, "the hospital treated nobody of late: the visits are too old"
            r = client.get(ex["url"].replace("_count=5", "_count=1000"), headers=headers)
            assert recent <= {e["resource"]["id"] for e in r.json()["entry"]}
            assert body["total"] >= len(recent | {own}) and len(entries) == min(5, body["total"])
        elif what.startswith("the citizen's record: the hospital's clinician may read it"):
            assert body["resourceType"] == "Patient" and body["id"] == own
        elif what.startswith("who read the citizen's record"):
            assert entries and {e["resourceType"] for e in entries} == {"AuditEvent"}, what
        elif what.startswith("an ICD-10 code looked up"):
            params = {p["name"]: p for p in body["parameter"]}
            assert params["display"]["valueString"], body
        elif what.startswith("Patient/$match"):
            assert person in ids or ids & records, (what, ids)
        else:
            raise AssertionError(f"no check for the printed example {what!r}")
        checked.append(what)
    assert len(checked) >= 13, checked


def _recently_treated(settings: Settings, organization: str, days: int) -> set[str]:
    """Patients of the hospital's Encounters that ended in the last ``days`` days."""
    from datetime import UTC, datetime, timedelta

    since = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    store = open_store(settings.database_url)
    try:
        engine = FhirEngine(store, settings)
        found = search(
            engine,
            "Encounter",
            [
                ("service-provider", f"Organization/{organization}"),
                ("date", f"ge{since}"),
                ("_count", "1000"),
            ],
        ).json()
    finally:
        store.close()
    assert found is not None
    encounters = [orjson.loads(orjson.dumps(e["resource"])) for e in found.get("entry", [])]
    return {e["subject"]["reference"][8:] for e in encounters}


def test_fhir_sources_follow_the_records_and_the_schedule(tmp_path: Path) -> None:
    import csv
    from datetime import date, timedelta

    from lienthong.fhir.validate import validate_resource
    from lienthong.synth.fhir_sources import CHILD_SCHEDULE, generate_fhir_sources
    from lienthong.synth.population import generate

    today = date(2026, 3, 9)
    generate(300, 11, tmp_path / "pop", today=today)
    first = generate_fhir_sources(tmp_path / "pop", tmp_path / "a", seed=4, today=today)
    generate_fhir_sources(tmp_path / "pop", tmp_path / "b", seed=4, today=today)
    for source, paths in first.files.items():
        for path in paths:  # same seed, same files
            assert path.read_bytes() == (tmp_path / "b" / source / path.name).read_bytes()
    with (tmp_path / "pop/records.csv").open(encoding="utf-8", newline="") as fh:
        records = {r["record_id"]: r for r in csv.DictReader(fh)}
    with (tmp_path / "pop/truth.csv").open(encoding="utf-8", newline="") as fh:
        truth = {r["record_id"]: r["person_id"] for r in csv.DictReader(fh)}
    with (tmp_path / "pop/register.csv").open(encoding="utf-8", newline="") as fh:
        births = {r["cccd"]: date.fromisoformat(r["birth_date"]) for r in csv.DictReader(fh)}

    def load(source: str, stem: str) -> list[dict[str, Any]]:
        path = next(p for p in first.files[source] if p.stem.endswith(stem))
        return [orjson.loads(line) for line in path.read_bytes().splitlines()]

    for source in ("immunization", "commune_station"):
        patients = load(source, "patients")
        expected = {rid for rid, r in records.items() if r["source"] == source}
        assert {p["id"] for p in patients} == expected  # one Patient per source record
        for p in patients:
            validate_resource(p)
            row = records[p["id"]]
            assert p["name"][0]["text"] == " ".join(row["full_name"].split())  # as written
            assert p["meta"]["source"] == SOURCE_URI[source]
        assert sum(first.resources[source].values()) == sum(
            len(load(source, stem))
            for stem in ("organizations", "patients", "immunizations", "encounters")
            + ("observations",)
            if any(p.stem.endswith(stem) for p in first.files[source])
        )
    due = {(cvx, dose): days for cvx, _, _, dose, days in CHILD_SCHEDULE}
    children = 0
    for imm in load("immunization", "immunizations"):
        validate_resource(imm)
        record = imm["patient"]["reference"].split("/")[1]
        when = date.fromisoformat(imm["occurrenceDateTime"])
        assert when <= today
        birth = births.get(truth[record])
        code = imm["vaccineCode"]["coding"][0]["code"]
        dose = imm["protocolApplied"][0]["doseNumberPositiveInt"]
        if birth is not None and (today - birth).days < 6 * 365 and (code, dose) in due:
            children += 1  # never before the age the schedule gives, at most 20 days late
            assert birth + timedelta(days=due[(code, dose)]) <= when
            assert when <= birth + timedelta(days=due[(code, dose)] + 20)
    assert children > 0
    pressures = [
        o
        for o in load("commune_station", "observations")
        if o["code"]["coding"][0]["code"] == "85354-9"
    ]
    assert pressures
    for o in pressures:
        validate_resource(o)
        systolic, diastolic = (c["valueQuantity"]["value"] for c in o["component"])
        assert systolic > diastolic
