"""The hash-chained audit log: appends, tamper detection, concurrency, search, AuditEvent.

Runs on a real SQLite file and on a real PostgreSQL server (``store_url``).
Tampering is done the way an intruder would: straight SQL on the tables.
"""

from __future__ import annotations

import base64
import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from fhir.resources.R4B import get_fhir_model_class
from typer.testing import CliRunner

from lienthong.access import audit
from lienthong.access.audit import (
    GENESIS_HASH,
    AuditChainError,
    AuditLog,
    AuditRecord,
    entry_hash,
)
from lienthong.access.cli_audit import audit_app
from tests.factories import audit_entry

T0 = datetime(2024, 5, 1, 3, 0, tzinfo=UTC)


entry = audit_entry


def _sqlite_path(url: str) -> Path:
    main = Path(url[len("sqlite:///") :])
    return main.with_name(f"{main.stem}-audit{main.suffix}")


def raw(url: str, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run SQL on the audit tables directly, bypassing AuditLog (as an intruder would)."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(_sqlite_path(url))
        try:
            rows = conn.execute(sql, args).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True) as pg:
        cur = pg.execute(sql.replace("?", "%s"), args)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def log(store_url: str) -> Iterator[AuditLog]:
    lg = AuditLog(store_url)
    try:
        yield lg
    finally:
        lg.close()


def fill(lg: AuditLog, n: int, start: datetime = T0) -> list[AuditRecord]:
    return [
        lg.append(entry(user=f"u{i % 3}", patients=(f"p{i}",)), recorded=start + timedelta(i))
        for i in range(1, n + 1)
    ]


# --- the chain -----------------------------------------------------------------------


def test_chain_is_intact_after_many_appends_and_reopening(
    store_url: str, log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "VERIFY_PAGE", 7)  # walk many pages
    records = fill(log, 40)
    assert [r.seq for r in records] == list(range(1, 41))
    assert records[0].prev_hash == GENESIS_HASH
    for before, after in zip(records, records[1:], strict=False):
        assert after.prev_hash == before.hash
    for r in records:
        assert r.hash == entry_hash(r.seq, r.recorded, r.prev_hash, r.entry.canonical())
    assert log.verify() == audit.VerifyResult(True, 40)
    assert log.head() == (40, records[-1].hash)
    # another instance (a restarted server) continues the same chain
    again = AuditLog(store_url)
    try:
        nxt = again.append(entry())
        assert nxt.seq == 41 and nxt.prev_hash == records[-1].hash
        assert again.verify().ok and again.verify().checked == 41
        # and the first instance notices the other's append (its cached head is stale)
        third = log.append(entry())
        assert third.seq == 42 and third.prev_hash == nxt.hash
    finally:
        again.close()
    assert log.verify() == audit.VerifyResult(True, 42)
    stored = log.read(3)
    assert stored == records[2]
    assert log.read(999) is None


def test_empty_log_verifies(log: AuditLog) -> None:
    assert log.verify() == audit.VerifyResult(True, 0)
    assert log.head() == (0, GENESIS_HASH)


def test_recorded_keeps_microseconds_in_utc(log: AuditLog) -> None:
    local = datetime(2024, 5, 1, 10, 0, 0, 123456).astimezone()  # any aware time
    r = log.append(entry(), recorded=local)
    assert r.recorded == local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.123456Z")
    with pytest.raises(ValueError):
        log.append(entry(), recorded=datetime(2024, 5, 1, 10, 0))  # naive: ambiguous
    with pytest.raises(ValueError):
        entry(outcome="maybe")
    assert log.verify().checked == 1  # the rejected appends left nothing behind


def test_vietnamese_text_round_trips_and_verifies(log: AuditLog) -> None:
    r = log.append(entry(user="bs.nguyễn.thị.hoa", detail="từ chối: không có đồng ý"))
    got = log.read(r.seq)
    assert got is not None and got.entry.user == "bs.nguyễn.thị.hoa"
    assert got.entry.detail == "từ chối: không có đồng ý"
    assert log.verify().ok
    assert log.search(user="bs.nguyễn.thị.hoa")[1] == 1


# --- tampering -----------------------------------------------------------------------


def test_update_of_content_is_detected_at_that_row(store_url: str, log: AuditLog) -> None:
    fill(log, 10)
    raw(store_url, "UPDATE audit_log SET content = REPLACE(content, 'p4', 'p9') WHERE seq = 4")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 4 and result.checked == 3
    assert result.reason is not None and "altered" in result.reason


def test_rewritten_row_with_recomputed_hash_is_detected_at_the_next_row(
    store_url: str, log: AuditLog
) -> None:
    fill(log, 10)
    seq, recorded, content, prev = raw(
        store_url, "SELECT seq, recorded, content, prev_hash FROM audit_log WHERE seq = 4"
    )[0]
    forged = content.replace('"outcome":"success"', '"outcome":"denied"')
    raw(
        store_url,
        "UPDATE audit_log SET content = ?, outcome = 'denied', hash = ? WHERE seq = 4",
        (forged, entry_hash(seq, recorded, prev, forged)),
    )
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert result.reason is not None and "prev_hash" in result.reason


def test_update_of_recorded_or_hash_is_detected(store_url: str, log: AuditLog) -> None:
    fill(log, 6)
    raw(store_url, "UPDATE audit_log SET recorded = '2020-01-01T00:00:00.000000Z' WHERE seq = 2")
    assert log.verify().first_bad_seq == 2
    raw(store_url, "UPDATE audit_log SET hash = ? WHERE seq = 1", ("f" * 64,))
    assert log.verify().first_bad_seq == 1


def test_delete_of_a_middle_row_reports_the_missing_seq(store_url: str, log: AuditLog) -> None:
    fill(log, 10)
    raw(store_url, "DELETE FROM audit_log WHERE seq = 5")
    raw(store_url, "DELETE FROM audit_patient WHERE seq = 5")
    result = log.verify()
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 5, 4)
    assert result.reason == "entry 5 is missing"


def test_delete_of_the_last_rows_is_detected_by_the_head(store_url: str, log: AuditLog) -> None:
    fill(log, 10)
    raw(store_url, "DELETE FROM audit_log WHERE seq >= 9")
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 9)
    assert result.reason is not None and "last entries removed" in result.reason
    raw(store_url, "DELETE FROM audit_log")
    assert log.verify().first_bad_seq == 1


def test_patient_lookup_tampering_is_detected(store_url: str, log: AuditLog) -> None:
    fill(log, 5)
    raw(store_url, "DELETE FROM audit_patient WHERE seq = 3")  # hides entry 3 from the patient
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 3)
    raw(store_url, "INSERT INTO audit_patient (seq, patient_id) VALUES (3, 'p3')")
    raw(store_url, "UPDATE audit_log SET user_name = 'someone-else' WHERE seq = 2")
    assert log.verify().first_bad_seq == 2


def _forge(store_url: str, seq: int, prev_hash: str) -> str:
    """Insert a row with a hash consistent with its own content; returns that hash."""
    recorded = "2024-06-01T00:00:00.000000Z"
    content = entry(user="intruder").canonical()
    forged_hash = entry_hash(seq, recorded, prev_hash, content)
    raw(
        store_url,
        "INSERT INTO audit_log (seq, recorded, user_name, outcome, content, prev_hash, hash) "
        "VALUES (?, ?, 'intruder', 'success', ?, ?, ?)",
        (seq, recorded, content, prev_hash, forged_hash),
    )
    raw(store_url, "INSERT INTO audit_patient (seq, patient_id) VALUES (?, 'p1')", (seq,))
    return forged_hash


def test_forged_rows_are_detected(store_url: str, log: AuditLog) -> None:
    records = fill(log, 10)
    # appended after the end with a chain-breaking prev_hash, head untouched
    forged = _forge(store_url, 11, "a" * 64)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 11)
    assert result.reason is not None and "beyond the head" in result.reason
    # the intruder also moves the head onto it: now the broken link shows
    raw(store_url, "UPDATE audit_head SET seq = 11, hash = ?", (forged,))
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 11)
    assert result.reason is not None and "prev_hash" in result.reason
    # a row numbered before the chain starts
    raw(store_url, "UPDATE audit_head SET seq = 10, hash = ?", (records[9].hash,))
    raw(store_url, "UPDATE audit_log SET seq = 0 WHERE seq = 11")
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 0)
    raw(store_url, "UPDATE audit_log SET seq = 11 WHERE seq = 0")
    raw(store_url, "UPDATE audit_head SET seq = 11, hash = ?", (forged,))
    # a row replaced in the middle, linked to its predecessor: the successor's link breaks
    raw(store_url, "DELETE FROM audit_log WHERE seq = 11")
    raw(store_url, "DELETE FROM audit_patient WHERE seq = 11")
    raw(store_url, "UPDATE audit_head SET seq = 10, hash = ?", (records[9].hash,))
    assert log.verify().ok
    raw(store_url, "DELETE FROM audit_log WHERE seq = 6")
    raw(store_url, "DELETE FROM audit_patient WHERE seq = 6")
    _forge(store_url, 6, records[4].hash)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 7)


def test_a_consistent_rewrite_needs_the_key_or_an_anchor(store_url: str) -> None:
    """Without a key, truncating the tail and moving the head back verifies (a limit)."""
    keyed = AuditLog(store_url, anchor_key="secret kept outside the database")
    plain = AuditLog(store_url)
    try:
        records = fill(keyed, 10)
        assert keyed.verify().ok
        anchor = keyed.head()
        raw(store_url, "DELETE FROM audit_log WHERE seq >= 9")
        raw(store_url, "DELETE FROM audit_patient WHERE seq >= 9")
        raw(store_url, "UPDATE audit_head SET seq = 8, hash = ?", (records[7].hash,))
        assert plain.verify().ok  # undetectable without the key
        result = keyed.verify()
        assert (result.ok, result.first_bad_seq) == (False, 8)
        assert result.reason is not None and "keyed head anchor" in result.reason
        result = plain.verify(anchor=anchor)  # an anchor noted earlier also catches it
        assert (result.ok, result.first_bad_seq) == (False, 9)
        # a forged row linked correctly at the end, head moved onto it
        forged = _forge(store_url, 9, records[7].hash)
        raw(store_url, "UPDATE audit_head SET seq = 9, hash = ?", (forged,))
        assert plain.verify().ok
        assert keyed.verify().first_bad_seq == 9
        assert plain.verify(anchor=(5, records[4].hash)).ok  # the history before is intact
    finally:
        keyed.close()
        plain.close()


def test_keyed_chain_survives_appends_from_several_instances(store_url: str) -> None:
    a = AuditLog(store_url, anchor_key=b"k")
    b = AuditLog(store_url, anchor_key=b"k")
    try:
        for i in range(6):
            (a if i % 2 else b).append(entry(patients=(f"p{i}",)))
        assert a.verify() == audit.VerifyResult(True, 6)
        wrong = AuditLog(store_url, anchor_key=b"not the key")
        try:
            assert wrong.verify().first_bad_seq == 6
        finally:
            wrong.close()
    finally:
        a.close()
        b.close()


def test_a_reset_to_an_unsigned_head_is_not_blessed_by_later_appends(store_url: str) -> None:
    keyed = AuditLog(store_url, anchor_key="k")
    plain = AuditLog(store_url)
    try:
        assert keyed.verify() == audit.VerifyResult(True, 0)  # signed from genesis
        records = fill(keyed, 10)
        raw(store_url, "DELETE FROM audit_log WHERE seq >= 9")
        raw(store_url, "DELETE FROM audit_patient WHERE seq >= 9")
        raw(
            store_url,
            "UPDATE audit_head SET seq = 8, hash = ?, mac = '', mac_from = NULL",
            (records[7].hash,),
        )
        assert plain.verify().ok
        assert keyed.verify().first_bad_seq == 8
        other = AuditLog(store_url, anchor_key="k")  # e.g. after a restart
        try:
            assert other.append(entry()).seq == 9
        finally:
            other.close()
        keyed.append(entry())
        result = keyed.verify()
        assert (result.ok, result.first_bad_seq) == (False, 10)
        assert result.reason is not None and "not signed" in result.reason
        # wiping everything back to an unsigned genesis is caught as well
        raw(store_url, "DELETE FROM audit_log")
        raw(store_url, "DELETE FROM audit_patient")
        raw(store_url, "UPDATE audit_head SET seq = 0, hash = ?", (GENESIS_HASH,))
        assert plain.verify() == audit.VerifyResult(True, 0)
        assert keyed.verify().first_bad_seq == 1
    finally:
        keyed.close()
        plain.close()


def test_enable_anchor_key_on_an_existing_log(store_url: str) -> None:
    plain = AuditLog(store_url)
    keyed = AuditLog(store_url, anchor_key=b"k")
    try:
        records = fill(plain, 5)
        assert not keyed.verify().ok  # predates the key
        with pytest.raises(ValueError):
            plain.enable_anchor_key()
        assert keyed.enable_anchor_key() == audit.VerifyResult(True, 5)
        assert keyed.enable_anchor_key() == audit.VerifyResult(True, 5)  # idempotent
        more = [keyed.append(entry()) for _ in range(3)]
        assert keyed.verify() == audit.VerifyResult(True, 8)
        raw(store_url, "DELETE FROM audit_log WHERE seq = 8")
        raw(store_url, "DELETE FROM audit_patient WHERE seq = 8")
        raw(store_url, "UPDATE audit_head SET seq = 7, hash = ?", (more[1].hash,))
        assert plain.verify().ok
        assert keyed.verify().first_bad_seq == 7
        # a broken chain is not signed over
        raw(store_url, "UPDATE audit_log SET hash = ? WHERE seq = 2", ("0" * 64,))
        raw(store_url, "UPDATE audit_head SET mac = '', mac_from = NULL")
        result = keyed.enable_anchor_key()
        assert (result.ok, result.first_bad_seq) == (False, 2)
        assert raw(store_url, "SELECT mac FROM audit_head") == [("",)]
        assert records[1].seq == 2
    finally:
        plain.close()
        keyed.close()


def test_missing_head_stops_appends(store_url: str, log: AuditLog) -> None:
    fill(log, 3)
    raw(store_url, "DELETE FROM audit_head")
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 1)
    fresh = AuditLog(store_url)  # a restart must not re-create a genesis head
    try:
        with pytest.raises(AuditChainError):
            fresh.append(entry())
    finally:
        fresh.close()


# --- concurrency ---------------------------------------------------------------------


def test_two_threads_with_their_own_connections_form_one_chain(store_url: str) -> None:
    logs = [AuditLog(store_url), AuditLog(store_url)]
    errors: list[BaseException] = []

    def work(lg: AuditLog, user: str) -> None:
        try:
            for i in range(60):
                lg.append(entry(user=user, patients=(f"{user}-{i}",)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lg, f"t{i}")) for i, lg in enumerate(logs)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert logs[0].verify() == audit.VerifyResult(True, 120)
        assert logs[0].search(user="t0")[1] == 60 and logs[1].search(user="t1")[1] == 60
    finally:
        for lg in logs:
            lg.close()


def test_one_instance_shared_by_threads(log: AuditLog) -> None:
    threads = [
        threading.Thread(target=lambda: [log.append(entry()) for _ in range(40)]) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.verify() == audit.VerifyResult(True, 120)


def _append_in_process(url: str, user: str, n: int) -> None:
    lg = AuditLog(url)
    try:
        for i in range(n):
            lg.append(entry(user=user, patients=(f"{user}-{i}",)))
    finally:
        lg.close()


def test_two_processes_on_sqlite_form_one_chain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lienthong.db'}"
    parent = AuditLog(url)
    try:
        parent.append(entry(user="parent"))  # caches the head
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_append_in_process, args=(url, f"w{i}", 80)) for i in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0]
        last = parent.append(entry(user="parent"))  # stale cache: must re-read the head
        assert last.seq == 162
        assert parent.verify() == audit.VerifyResult(True, 162)
        assert parent.search(user="w0")[1] == 80 and parent.search(user="w1")[1] == 80
    finally:
        parent.close()


# --- search --------------------------------------------------------------------------


def test_search_by_patient_user_time_outcome_with_totals(log: AuditLog) -> None:
    day = timedelta(days=1)
    log.append(entry(user="a", patients=("p1", "p2")), recorded=T0)
    log.append(entry(user="b", patients=("Patient/p1",)), recorded=T0 + day)
    log.append(entry(user="a", patients=("p3",), outcome="denied"), recorded=T0 + 2 * day)
    log.append(entry(user="a", patients=()), recorded=T0 + 3 * day)
    log.append(entry(user="c", patients=("p1",)), recorded=T0 + 4 * day)

    records, total = log.search(patient="p1")
    assert total == 3 and [r.seq for r in records] == [5, 2, 1]  # newest first
    assert log.search(patient="Patient/p1")[1] == 3
    assert log.search(patient="p2")[1] == 1
    assert log.search(patient="nobody") == ([], 0)

    records, total = log.search(user="a")
    assert total == 3 and [r.seq for r in records] == [4, 3, 1]
    records, total = log.search(user="a", count=2, offset=1)
    assert total == 3 and [r.seq for r in records] == [3, 1]

    assert [r.seq for r in log.search(since="2024-05-03")[0]] == [5, 4, 3]
    assert [r.seq for r in log.search(until="2024-05-02")[0]] == [2, 1]  # whole day
    assert (
        log.search(since="2024-05-02T03:00:00+00:00", until="2024-05-03T10:00:00+07:00")[1] == 2
    )  # both inclusive; 10:00+07:00 is 03:00Z
    assert log.search(since="2024", until="2024-05")[1] == 5  # any FHIR date precision
    with pytest.raises(ValueError):
        log.search(since="last tuesday")
    assert [r.seq for r in log.search(outcome="denied")[0]] == [3]
    assert log.search(user="a", patient="p1", since="2024-05-01")[1] == 1
    assert log.search(count=0) == ([], 5)


# --- FHIR AuditEvent -----------------------------------------------------------------


def _validate(event: dict[str, Any]) -> None:
    get_fhir_model_class("AuditEvent").model_validate(event)


def test_to_fhir_is_a_valid_r4_audit_event(log: AuditLog) -> None:
    search = log.append(
        entry(
            action="search-type",
            resource_type="Observation",
            resource_id=None,
            query="subject=Patient/p1&code=8867-4",
            patients=("p1", "p2"),
        )
    )
    event = search.to_fhir("http://example.org/fhir/")
    _validate(event)
    assert event["resourceType"] == "AuditEvent" and event["id"] == str(search.seq)
    assert event["type"]["code"] == "rest"
    assert event["subtype"] == [
        {"system": "http://hl7.org/fhir/restful-interaction", "code": "search-type"}
    ]
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["recorded"] == search.recorded
    agent = event["agent"][0]
    assert agent["who"]["identifier"]["value"] == "u1" and agent["requestor"] is True
    assert agent["network"] == {"address": "10.1.2.3", "type": "2"}
    assert agent["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    assert agent["extension"][0]["valueReference"]["reference"] == (
        "http://example.org/fhir/Practitioner/pr1"
    )
    patients = [e for e in event["entity"] if e["role"]["code"] == "1"]
    assert [e["what"]["reference"] for e in patients] == [
        "http://example.org/fhir/Patient/p1",
        "http://example.org/fhir/Patient/p2",
    ]
    query = [e for e in event["entity"] if e["role"]["code"] == "24"][0]
    assert base64.b64decode(query["query"]).decode() == "subject=Patient/p1&code=8867-4"
    chain = {x["url"]: x for x in event["extension"][0]["extension"]}
    assert chain["hash"]["valueString"] == search.hash
    assert chain["previousHash"]["valueString"] == search.prev_hash

    glass = log.append(
        entry(
            action="operation:$everything",
            outcome="denied",
            purpose="ETREAT",
            break_glass="cấp cứu: bệnh nhân bất tỉnh",
            detail="no treatment relationship",
            on_behalf_of=None,
            source_ip=None,
        )
    )
    event = glass.to_fhir()
    _validate(event)
    assert event["outcome"] == "4" and event["action"] == "E"
    assert event["subtype"][0]["code"] == "operation"
    assert "no treatment relationship" in event["outcomeDesc"]
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    reasons = [x.get("valueString") for x in event["extension"]]
    assert "cấp cứu: bệnh nhân bất tỉnh" in reasons
    assert [e["what"]["reference"] for e in event["entity"]] == ["Patient/p1"]

    for other in (
        entry(action="import", resource_type=None, resource_id=None, patients=(), purpose=None),
        entry(action="update", resource_type="Observation", resource_id="o1", outcome="error"),
        entry(action="transaction", resource_type=None, resource_id=None, patients=("a", "b")),
        entry(action="delete", resource_type="Condition", resource_id="c1"),
    ):
        record = log.append(other)
        _validate(record.to_fhir())
        _validate(record.to_fhir("http://example.org/fhir"))
    assert log.read(glass.seq) == glass


# --- command line --------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(audit_app, name="audit")

    @app.command()
    def version() -> None:  # a second command keeps "audit" a sub-command
        typer.echo("test")

    return app


def test_cli_verify_exit_codes_and_list(store_url: str, log: AuditLog) -> None:
    runner = CliRunner()
    app = _cli()
    fill(log, 3)
    result = runner.invoke(app, ["audit", "verify", "--database", store_url])
    assert result.exit_code == 0, result.output
    assert "audit chain intact: 3 entries" in result.stdout
    result = runner.invoke(app, ["audit", "list", "--user", "u1", "--database", store_url])
    assert result.exit_code == 0, result.output
    assert "1 matching entries" in result.stdout
    result = runner.invoke(
        app, ["audit", "list", "--patient", "p2", "--count", "5", "--database", store_url]
    )
    assert result.exit_code == 0 and "1 matching entries" in result.stdout
    raw(store_url, "UPDATE audit_log SET content = REPLACE(content, 'p2', 'p7') WHERE seq = 2")
    result = runner.invoke(app, ["audit", "verify", "--database", store_url])
    assert result.exit_code == 1
    assert "broken at entry 2" in result.stdout


def test_cli_verify_refuses_a_missing_sqlite_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'typo.db'}"
    result = CliRunner().invoke(_cli(), ["audit", "verify", "--database", url])
    assert result.exit_code == 2 and "no audit log" in result.stderr
    assert not (tmp_path / "typo-audit.db").exists()
