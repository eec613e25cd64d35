"""A new user's first hour: the demo, then the commands they run next in the same folder;
the dates of synthetic data; tables in a pipe; person-level search; a query typed with
Vietnamese letters and sent unencoded."""

from __future__ import annotations

import csv
import os
import re
import socket
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

import lienthong
from lienthong.identity.mpi import is_master
from lienthong.settings import Settings
from tests.live_server import live_server
from tests.test_mpi import model_path, mpi_settings, person_of, population, post, rec

__all__ = ["model_path", "mpi_settings", "population"]  # fixtures this module uses

SRC = Path(lienthong.__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "LIENTHONG_MPI": "false",  # the demo switches it on
    "PYTHONPATH": os.pathsep.join((str(SRC), str(SRC.parent))),
    "COLUMNS": "40",  # a narrow setting: output to a pipe must still not fold
}
FHIR = {"Content-Type": "application/fhir+json"}


def lienthong_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lienthong.cli", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- after the demo


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    here = tmp_path_factory.mktemp("first-hour")
    done = lienthong_cli("demo", "--people", "60", "--seed", "4", "--no-serve", cwd=here)
    assert done.returncode == 0, done.stdout + done.stderr
    return here, done.stdout


def test_commands_after_the_demo_open_its_database(demo_folder: tuple[Path, str]) -> None:
    here, out = demo_folder
    database = f"sqlite:///{here / 'lienthong-data/demo/lienthong.db'}"
    settings_file = here / "lienthong.toml"
    assert f'database_url = "{database}"' in settings_file.read_text(encoding="utf-8")
    assert f"settings: {settings_file}" in out
    assert "lienthong token NAME)" in out  # no --database needed any more
    said = f"database: {database} (lienthong.toml)"

    token = lienthong_cli("token", "demo-admin", cwd=here)
    assert token.returncode == 0, token.stderr
    assert token.stderr.splitlines()[0] == said
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+\n", token.stdout)  # the token alone

    review = lienthong_cli("mpi", "review", cwd=here)
    assert review.returncode == 0, review.stderr
    assert review.stderr.splitlines()[0] == said
    users = lienthong_cli("user", "list", cwd=here)
    assert users.stderr.splitlines()[0] == said
    for name in ("demo-admin", "demo-clinician", "demo-analyst", "demo-citizen"):
        assert name in users.stdout

    # --database and the environment win over the file, and say so
    other = here / "other"
    other.mkdir()
    url = f"sqlite:///{other / 'lienthong.db'}"
    alone = lienthong_cli("token", "demo-admin", "--database", url, cwd=here)
    assert alone.returncode == 1 and "unknown user 'demo-admin'" in alone.stderr
    assert alone.stderr.splitlines()[0] == f"database: {url} (--database)"
    # elsewhere, without a settings file, the default database, named as such
    fresh = lienthong_cli("token", "demo-admin", cwd=other)
    assert fresh.stderr.splitlines()[0] == (
        "database: sqlite:///./lienthong-data/lienthong.db (default)"
    )


def test_a_settings_file_of_ones_own_is_left_alone(tmp_path: Path) -> None:
    own = '# mine\ndatabase_url = "sqlite:///./mine.db"\n'
    (tmp_path / "lienthong.toml").write_text(own, encoding="utf-8")
    done = lienthong_cli("demo", "--people", "10", "--no-serve", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "lienthong.toml").read_text(encoding="utf-8") == own
    assert "is not the demo's: left alone" in done.stdout
    assert "lienthong token NAME --database sqlite:///" in done.stdout


def test_settings_file_environment_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('database_url = "sqlite:///a.db"\nport = 9000\n', encoding="utf-8")
    s = Settings.from_env({"LIENTHONG_CONFIG": str(path), "LIENTHONG_PORT": "9100"})
    assert (s.database_url, s.port) == ("sqlite:///a.db", 9100)  # the environment wins
    assert s.origin("database_url") == str(path) and s.origin("port") == "LIENTHONG_PORT"
    assert s.model_copy(update={"host": "0.0.0.0"}).origin("database_url") == str(path)
    assert Settings.from_env({}).origin("database_url") == "default"
    path.write_text('database_url = "sqlite:///a.db"\ndatabse = 1\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"site.toml: unknown setting 'databse'"):
        Settings.from_env({"LIENTHONG_CONFIG": str(path)})
    path.write_text('port = "many"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"port \(from .*site.toml\)"):
        Settings.from_env({"LIENTHONG_CONFIG": str(path)})
    path.write_text("port = \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"site.toml: not valid TOML"):
        Settings.from_env({"LIENTHONG_CONFIG": str(path)})
    with pytest.raises(ValueError, match=r"settings file .*missing.toml"):
        Settings.from_env({"LIENTHONG_CONFIG": str(tmp_path / "missing.toml")})
    # a command with a broken settings file exits 2 saying why
    (tmp_path / "lienthong.toml").write_text("databse = 1\n", encoding="utf-8")
    done = lienthong_cli("mpi", "review", cwd=tmp_path)
    assert done.returncode == 2 and "unknown setting 'databse'" in done.stderr


def test_tables_in_a_pipe_are_plain_aligned_text(demo_folder: tuple[Path, str]) -> None:
    """Captured (not a terminal) with COLUMNS=40, every table row is one line of the table's
    natural width: no box, no cell folded."""
    _, out = demo_folder
    assert not set("│┃━─┏└") & set(out)
    lines = out.splitlines()
    start = lines.index("Time per step")
    header = lines[start + 1]
    assert header.split() == ["step", "seconds"]
    rows = lines[start + 2 : start + 9]
    for row in rows:
        m = re.fullmatch(r" (\S.*?\S) +(\d+\.\d) ", row)
        assert m, row
        assert len(row) == len(header)  # aligned: every line as wide as the header
    assert any(r.startswith(" hospital exports ingested (validated, mapped, persons resolved)")
               for r in rows)  # fmt: skip
    verification = next(i for i, x in enumerate(lines) if x.startswith("Verification against"))
    assert lines[verification + 1].split()[:3] == ["source", "facility", "records"]
    assert re.match(r" http://fhir\.lienthong\.vn/source/\S+ +\S+ +\d+ ", lines[verification + 2])


# --------------------------------------------------------------------------- dates


def test_synthetic_dates_follow_the_day(tmp_path: Path) -> None:
    def make(name: str, day: str | None) -> Path:
        out = tmp_path / name
        when = ["--today", day] if day else []
        for command in (
            ["population", "-n", "300", "-s", "6", "-o", str(out / "pop"), "--province", "01"],
            ["xml130", "-n", "120", "-s", "6", "-o", str(out / "xml"), "--population"]
            + [str(out / "pop"), "--province", "01"],
        ):
            done = lienthong_cli("synth", *command, *when, cwd=tmp_path)
            assert done.returncode == 0, done.stdout + done.stderr
        return out

    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.*"))}

    a, b, c = make("a", "2026-02-10"), make("b", "2026-02-10"), make("c", "2026-08-10")
    assert files(a) == files(b)  # same seed and day, same data
    assert files(a) != files(c)

    def visits(folder: Path) -> list[date]:
        from lienthong.ingest.xml130.parse import parse

        found = []
        for path in (folder / "xml").rglob("*_130_*.xml"):
            for visit in parse(path):
                ra = visit.tables["XML1"][0]["NGAY_RA"]
                found.append(datetime.strptime(ra[:8], "%Y%m%d").date())
        return found

    for folder, day in ((a, date(2026, 2, 10)), (c, date(2026, 8, 10))):
        seen = visits(folder)
        assert seen and max(seen) < day and min(seen) >= day - timedelta(days=100)
        with (folder / "pop/register.csv").open(encoding="utf-8", newline="") as fh:
            births = [date.fromisoformat(r["birth_date"]) for r in csv.DictReader(fh)]
        assert max(births) <= day
    # without --today: dated back from the calendar's today
    today = make("today", None)
    seen = visits(today)
    assert max(seen) < date.today() and max(seen) >= date.today() - timedelta(days=45)

    done = lienthong_cli("synth", "population", "-n", "5", "--today", "2020-01-01", cwd=tmp_path)
    assert done.returncode == 2 and "--today: 2020-01-01 is before 2025-07-01" in done.stderr


def test_fhir_sources_are_dated_back_from_the_day(tmp_path: Path) -> None:
    from lienthong.synth import generate
    from lienthong.synth.fhir_sources import generate_fhir_sources

    day = date(2026, 5, 20)
    generate(200, 3, tmp_path / "pop", today=day)
    summary = generate_fhir_sources(tmp_path / "pop", tmp_path / "fhir", seed=3, today=day)
    dates = []
    for paths in summary.files.values():
        for path in paths:
            for line in path.read_bytes().splitlines():
                r = orjson.loads(line)
                when = r.get("occurrenceDateTime") or (r.get("period") or {}).get("start")
                if when:
                    dates.append(date.fromisoformat(when[:10]))
    assert dates and max(dates) <= day and max(dates) >= day - timedelta(days=60)


# --------------------------------------------------------------------------- person search


def _encounter(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{pid}"},
    }


@pytest.fixture
def api(store: Any, mpi_settings: Settings) -> Any:
    from lienthong.server.app import create_app

    with TestClient(create_app(mpi_settings, store=store)) as c:
        yield c


def test_person_level_search(api: TestClient) -> None:
    mrn = "http://his.example.vn/mrn"
    first = rec("Đặng Thị Hồng", "1971-04-09", "F", phone="0912333444")
    first.setdefault("identifier", []).append({"system": mrn, "value": "BN-77"})
    a = post(api, first)
    b = post(api, rec("DANG THI HONG", "09/04/1971", "F", phone="0912333444"))
    other = post(api, rec("Vũ Văn Khánh", "1990-01-01", "M", phone="0977000111"))
    master = person_of(api, a)["id"]
    assert master not in (a, b) and person_of(api, b)["id"] == master
    encounters = {}
    for pid in (a, b, other):
        r = api.post("/fhir/Encounter", json=_encounter(pid), headers=FHIR)
        assert r.status_code == 201, r.text
        encounters[pid] = r.json()["id"]

    def ids(url: str, **params: str) -> set[str]:
        r = api.get(url, params=params)
        assert r.status_code == 200, r.text
        return {e["resource"]["id"] for e in r.json().get("entry", [])}

    # nothing refers to the master itself
    assert ids("/fhir/Encounter", patient=master) == set()
    person = {encounters[a], encounters[b]}
    assert ids("/fhir/Encounter", **{"patient:mdm": f"Patient/{master}"}) == person
    assert ids("/fhir/Encounter", **{"patient:mdm": a}) == person  # a source stands for it
    assert ids("/fhir/Encounter", **{"subject:mdm": f"Patient/{b}"}) == person
    both = f"Patient/{master},Patient/{other}"
    assert ids("/fhir/Encounter", **{"patient:mdm": both}) == set(encounters.values())
    r = api.get("/fhir/Encounter", params={"patient:mdm": f"Patient/{master}", "_summary": "count"})
    assert r.json()["total"] == 2

    for params, says in (
        ({"patient:mdm": "Group/g1"}, "not a Group"),
        ({"service-provider:mdm": "Organization/o1"}, ":mdm needs a parameter that refers"),
    ):
        r = api.get("/fhir/Encounter", params=params)
        assert r.status_code == 400, r.text
        issue = r.json()["issue"][0]
        # the parameter named as FHIRPath: a delimited identifier, as ":" is not a name
        assert says in issue["diagnostics"] and issue["expression"] == [f"`{next(iter(params))}`"]

    # a search by _id finds the master it names, and its source records with _include
    assert ids("/fhir/Patient", _id=master) == {master}
    assert ids("/fhir/Patient", _id=master, _include="Patient:link") == {master, a, b}
    assert ids("/fhir/Patient") == {a, b, other}  # masters stay out of ordinary searches

    # by identifier: the record that carries it and its person, whose master lacks it
    r = api.get(f"/fhir/Patient/{master}")
    assert "BN-77" not in r.text
    found = api.get("/fhir/Patient", params={"identifier": f"{mrn}|BN-77"}).json()
    assert {e["resource"]["id"] for e in found["entry"]} == {a, master}
    assert found["total"] == 2
    assert [e["resource"]["id"] for e in found["entry"] if is_master(e["resource"])] == [master]
    assert ids("/fhir/Patient", identifier=f"{mrn}|BN-78") == set()
    # in a batch as in a search
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Encounter?patient:mdm=Patient/{master}"}},
            {"request": {"method": "GET", "url": f"Patient?identifier={mrn}|BN-77"}},
        ],
    }
    r = api.post("/fhir", json=batch, headers=FHIR)
    assert r.status_code == 200, r.text
    got = [
        {e["resource"]["id"] for e in entry["resource"].get("entry", [])}
        for entry in r.json()["entry"]
    ]
    assert got == [person, {a, master}]


def test_mdm_without_the_person_index_names_the_patient_alone(client: TestClient) -> None:
    a = post(client, rec("Hồ Thị Lan", "1980-01-01", "F"))
    r = client.post("/fhir/Encounter", json=_encounter(a), headers=FHIR)
    found = client.get("/fhir/Encounter", params={"patient:mdm": f"Patient/{a}"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [r.json()["id"]]


# --------------------------------------------------------------------------- raw UTF-8


def _raw(port: int, *targets: bytes) -> list[bytes]:
    """Send GET requests with these targets, unencoded, on one connection; the answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        answers = []
        for i, target in enumerate(targets):
            last = i == len(targets) - 1
            conn.sendall(
                b"GET "
                + target
                + b" HTTP/1.1\r\nHost: x\r\n"
                + (b"Connection: close\r\n" if last else b"")
                + b"\r\n"
            )
            answers.append(_read_response(conn))
        return answers


def _read_response(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_query_with_raw_utf8_is_read_as_utf8(tmp_path: Path) -> None:
    env = {"LIENTHONG_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "LIENTHONG_AUTH": "off",
           "LIENTHONG_MPI": "false"}  # fmt: skip
    with live_server(env) as server:
        import httpx

        patient = {"resourceType": "Patient", "name": [{"family": "Nguyễn", "given": ["An"]}]}
        r = httpx.post(f"{server.fhir}/Patient", json=patient, headers=FHIR)
        assert r.status_code == 201, r.text
        httpx.post(f"{server.fhir}/Patient", json={"resourceType": "Patient",
                   "name": [{"family": "Nguyên"}]}, headers=FHIR)  # fmt: skip
        port = int(server.root.rsplit(":", 1)[1])
        plain, raw, encoded = _raw(
            port,
            b"/fhir/Patient?family:exact=Nguy%E1%BB%85n",
            "/fhir/Patient?family:exact=Nguyễn".encode(),  # as curl sends what was typed
            b"/fhir/Patient?family:exact=Nguy%E1%BB%85n",  # on the same connection after it
        )
        for answer in (plain, raw, encoded):
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), answer
            bundle = orjson.loads(body)
            assert [e["resource"]["name"][0]["family"] for e in bundle["entry"]] == ["Nguyễn"]
        (latin,) = _raw(port, b"/fhir/Patient?family=Nguy\xe9n")  # not UTF-8
        head, _, body = latin.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"application/fhir+json" in head
        outcome = orjson.loads(body)
        assert outcome["resourceType"] == "OperationOutcome"
        assert "percent-encode" in outcome["issue"][0]["diagnostics"]
