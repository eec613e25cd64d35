"""``lienthong verify --store`` and ``--progress``: outcomes recorded on the Patients in
the store (SQLite and PostgreSQL), idempotently, and counted per source and facility."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from lienthong.access.audit import AuditLog
from lienthong.cli import app
from lienthong.fhir.engine import FhirEngine
from lienthong.fhir.interactions.create import create
from lienthong.fhir.interactions.delete import delete
from lienthong.fhir.interactions.update import update
from lienthong.identity.register import FileRegister
from lienthong.identity.verify_store import (
    EXTENSION_URL,
    current_outcome,
    progress,
    reason_kind,
    verify_patients,
)
from tests.factories import patient
from tests.test_verify import write_register


def add(engine: FhirEngine, resource: dict[str, Any]) -> str:
    resp = create(engine, "Patient", resource)
    assert resp.status == 201, resp.body
    body = resp.json()
    assert body is not None
    return str(body["id"])


def stored(engine: FhirEngine, pid: str) -> tuple[int, dict[str, Any]]:
    with engine.store.reader() as session:
        s = session.read("Patient", pid)
    assert s is not None and s.content is not None
    return s.version, orjson.loads(s.content)


def outcome(resource: dict[str, Any]) -> dict[str, list[Any]]:
    ext = current_outcome(resource)
    assert ext is not None
    parts: dict[str, list[Any]] = {}
    for p in ext["extension"]:
        value = next(v for k, v in p.items() if k.startswith("value"))
        parts.setdefault(p["url"], []).append(value)
    return parts


@pytest.fixture
def people(engine: FhirEngine) -> dict[str, str]:
    hospital = {"source": "http://his.bvbachmai.vn"}
    org = {"reference": "Organization/bv-bach-mai"}
    return {
        "hung": add(
            engine,
            patient(
                family="NGUYEN",
                given=["VAN", "HUNG"],
                cccd="001085001234",
                birth="1985-03-14",
                meta=hospital,
                managingOrganization=org,
            ),
        ),
        "mai_swapped": add(
            engine,
            patient(
                family="Trần",
                given=["Thị", "Mai"],
                cccd="001188004321",
                birth="1988-05-07",
                gender="female",
                meta=hospital,
                managingOrganization=org,
            ),
        ),
        "thu_mothers_number": add(
            engine,
            patient(
                family="Nguyễn",
                given=["Minh", "Thư"],
                cccd="001188004321",
                birth="2015-09-23",
                gender="female",
                meta={"source": "http://tiemchung.vn"},
            ),
        ),
        "no_number": add(
            engine,
            patient(
                family="Lê",
                given=["Văn", "Tâm"],
                cccd=None,
                birth="1970-11-02",
                meta={"source": "http://tiemchung.vn"},
            ),
        ),  # fmt: skip
    }


def test_outcomes_recorded_once(
    engine: FhirEngine, people: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    connector = FileRegister(write_register(tmp_path / "register.csv"))
    run = verify_patients(engine, connector)
    assert (run.patients, run.written, run.unchanged) == (4, 4, 0)

    version, hung = stored(engine, people["hung"])
    o = outcome(hung)
    assert o["status"] == ["verified"]
    assert o["registerVersion"] == [connector.version]
    assert "date" in o and "reason" not in o
    assert hung["identifier"][0]["value"] == "001085001234"  # nothing else touched

    o = outcome(stored(engine, people["mai_swapped"])[1])
    assert o["status"] == ["corrected"]
    assert any("day and month swapped" in r for r in o["reason"])

    o = outcome(stored(engine, people["thu_mothers_number"])[1])
    assert o["status"] == ["mismatch"]
    assert any("a parent's number" in r for r in o["reason"])
    assert o["suggestedCccd"] == ["001215006789"]

    o = outcome(stored(engine, people["no_number"])[1])
    assert o["status"] == ["missing_id"]
    assert o["suggestedCccd"] == ["079070222222"]
    assert 0 < o["score"][0] <= 1

    again = verify_patients(engine, connector)  # nothing changed: nothing written
    assert (again.written, again.unchanged) == (0, 4)
    assert stored(engine, people["hung"])[0] == version

    # the register changes (Hùng's commune): only his outcome is rewritten
    rows = [
        (r[0], r[1], r[2], r[3], r[4], "00008" if r[0] == "001085001234" else r[5], r[6])
        for r in _register_rows()
    ]
    changed = FileRegister(write_register(tmp_path / "register2.csv", rows))
    third = verify_patients(engine, changed)
    assert third.written == 4  # the register version is part of the outcome
    ext = [e for e in stored(engine, people["hung"])[1]["extension"] if e["url"] == EXTENSION_URL]
    assert len(ext) == 1  # replaced, not added


def test_patients_changed_during_the_run_are_left_for_the_next(
    engine: FhirEngine, people: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    connector = FileRegister(write_register(tmp_path / "register.csv"))
    edited, deleted = people["mai_swapped"], people["no_number"]
    done: list[int] = []

    def meanwhile(n: int) -> None:
        # after the first batch, someone edits one Patient and deletes another
        if not done:
            version, resource = stored(engine, edited)
            resource["telecom"] = [{"system": "phone", "value": "0901111111"}]
            assert update(engine, "Patient", edited, resource).status == 200
            assert delete(engine, "Patient", deleted).status in (200, 204)
        done.append(n)

    # one Patient a batch, in the order they were made: Hùng's batch comes first
    run = verify_patients(engine, connector, batch_size=1, on_batch=meanwhile)
    assert (run.written, run.moved_on) == (2, 2)
    _, now = stored(engine, edited)
    assert now["telecom"] == [{"system": "phone", "value": "0901111111"}]  # not reverted
    with engine.store.reader() as session:
        gone = session.read("Patient", deleted)
    assert gone is not None and gone.deleted  # not brought back
    again = verify_patients(engine, connector)
    assert again.moved_on == 0 and current_outcome(stored(engine, edited)[1]) is not None


def _register_rows() -> list[tuple[str, ...]]:
    from tests.test_verify import REGISTER

    return REGISTER


def test_progress_per_source_and_facility(
    engine: FhirEngine, people: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    before = progress(engine.store)
    assert sum(p.statuses["not verified"] for p in before.values()) == 4
    verify_patients(engine, FileRegister(write_register(tmp_path / "register.csv")))
    rows = progress(engine.store)
    his = rows[("http://his.bvbachmai.vn", "Organization/bv-bach-mai")]
    assert his.records == 2
    assert (his.statuses["verified"], his.statuses["corrected"]) == (1, 1)
    assert his.reasons == {"birth_date: day and month swapped": 1}
    tc = rows[("http://tiemchung.vn", "")]
    assert (tc.records, tc.statuses["mismatch"], tc.statuses["missing_id"]) == (2, 1, 1)
    assert tc.reasons["cccd: someone else's number"] == 1
    assert tc.reasons["cccd: absent from the record"] == 1


def test_reason_kinds_drop_values() -> None:
    assert reason_kind("full_name: a letter differs: the record has 'A', the register 'B'") == (
        "full_name: a letter differs"
    )
    assert reason_kind("birth_date: the record has 1985-03-15, the register 1985-03-14") == (
        "birth_date: differs"
    )
    assert reason_kind("cccd: 001 belongs to Trần Thị Mai (born 1988-07-05)") == (
        "cccd: someone else's number"
    )


def test_cli_store_and_progress(
    engine: FhirEngine,
    people: dict[str, str],
    store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    register = write_register(tmp_path / "register.csv")
    runner = CliRunner()
    result = runner.invoke(
        app, ["verify", "--store", "--register", str(register), "--database", store_url]
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps long lines
    assert "4 Patients verified" in said
    assert "outcome written on 4, 0 unchanged" in said
    result = runner.invoke(
        app, ["verify", "--store", "--register", str(register), "--database", store_url]
    )
    assert "outcome written on 0, 4 unchanged" in " ".join(result.output.split())
    log = AuditLog(store_url)  # the store door is audited, each run
    try:
        runs = [r.entry for r in log.search(user=f"cli:{getpass.getuser()}")[0]]
    finally:
        log.close()
    assert [(e.action, e.outcome) for e in runs] == [("verify-store", "success")] * 2
    assert "outcome written on 0, 4 unchanged" in runs[0].detail
    monkeypatch.setenv("COLUMNS", "250")  # a table this wide would wrap in 80 columns
    result = runner.invoke(app, ["verify", "--progress", "--database", store_url])
    assert result.exit_code == 0, result.output
    assert "http://his.bvbachmai.vn" in result.output
    assert "4 Patients in 2 source/facility groups" in " ".join(result.output.split())


def test_store_verified_through_the_register_service(
    engine: FhirEngine, people: dict[str, str], tmp_path: Path
) -> None:
    from lienthong.identity.register import HttpRegister
    from tests.register_service import RegisterService, read_register, running

    rows = read_register(write_register(tmp_path / "register.csv"))
    with running(RegisterService(rows)) as service:
        client = HttpRegister(service.url, rate_limit=0)
        try:
            run = verify_patients(engine, client, batch_size=2)
        finally:
            client.close()
    assert (run.patients, run.written) == (4, 4)
    assert run.by_status == {"verified": 1, "corrected": 1, "mismatch": 1, "missing_id": 1}
    o = outcome(stored(engine, people["thu_mothers_number"])[1])
    assert o["registerVersion"] == ["test-register-2026-11"]
    assert o["suggestedCccd"] == ["001215006789"]


def test_cli_store_when_the_service_fails(
    engine: FhirEngine, people: dict[str, str], store_url: str, tmp_path: Path
) -> None:
    from tests.register_service import RegisterService, read_register, running

    rows = read_register(write_register(tmp_path / "register.csv"))
    with running(RegisterService(rows)) as service:
        service.down_after(0)
        args = ["verify", "--store", "--register-url", service.url, "--retries", "1",
                "--rate-limit", "0", "--database", store_url]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1
        assert "register service failed" in " ".join(result.output.split())
        assert current_outcome(stored(engine, people["hung"])[1]) is None  # nothing half-written
        service.recover()
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert outcome(stored(engine, people["hung"])[1])["status"] == ["verified"]


def test_patient_record_carries_the_home_address_for_place() -> None:
    from lienthong.identity.verify_store import patient_record

    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"text": "Lê Văn Tâm"}],
        "address": [
            {"use": "work", "text": "Số 1, Phường Bến Thành, Thành phố Hồ Chí Minh"},
            {
                "use": "home",
                "line": ["Tổ 3"],
                "district": "Phường An Đông",
                "city": "Thành phố Hồ Chí Minh",
            },  # fmt: skip
        ],
    }
    assert patient_record(patient)["address"] == ("Tổ 3, Phường An Đông, Thành phố Hồ Chí Minh")
    assert patient_record({"id": "p2"})["address"] == ""
