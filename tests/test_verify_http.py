"""The HTTP register connector against a real local register service that fails on
demand: batched look-ups, retries with back-off honouring Retry-After, timeouts, and
no record lost or reported twice when the service dies in the middle of a run."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lienthong.cli import app
from lienthong.identity.register import HttpRegister, RegisterUnavailable, RetryPolicy
from tests.factories import SYNTH_DAY
from tests.register_service import RegisterService, read_register, running

runner = CliRunner()


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lienthong.synth.population import generate

    out = tmp_path_factory.mktemp("http-population")
    generate(600, seed=9, out_dir=out, today=SYNTH_DAY)
    return out


@pytest.fixture
def service(population: Path) -> Iterator[RegisterService]:
    with running(RegisterService(read_register(population / "register.csv"))) as svc:
        yield svc


def report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_http_findings_equal_file_findings(
    population: Path, service: RegisterService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    records = population / "records.csv"
    by_file = tmp_path / "file.csv"
    by_http = tmp_path / "http.csv"
    result = runner.invoke(
        app,
        [
            "verify",
            str(records),
            "--register",
            str(population / "register.csv"),
            "-o",
            str(by_file),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        ["verify", str(records), "--register-url", service.url, "-o", str(by_http),
         "--batch-size", "100", "--rate-limit", "0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "test-register-2026-11" in result.output  # the service's register version
    file_rows, http_rows = report(by_file), report(by_http)
    assert len(http_rows) == len(file_rows) > 500
    assert sorted(http_rows, key=lambda r: r["record_id"]) == sorted(
        file_rows, key=lambda r: r["record_id"]
    )
    assert service.calls >= 2 * (len(file_rows) // 100)


def test_name_counts_are_the_whole_registers(population: Path, service: RegisterService) -> None:
    """A batch's entries carry the service's name counts and the register's size, so a
    name is as common in HTTP mode as in the extract (not as rare as the few entries a
    batch brings back make it look)."""
    from lienthong.identity.verify import VerifyEngine

    names = Counter(" ".join(sorted(r["full_name"].split())) for r in service.rows)
    common = max(service.rows, key=lambda r: names[" ".join(sorted(r["full_name"].split()))])
    client = HttpRegister(service.url, rate_limit=0)
    try:
        entries = client.entries_for([{"record_id": "X", "cccd": common["cccd"]}])
    finally:
        client.close()
    assert entries.num_rows == 1
    assert client.register_size == len(service.rows)
    engine = VerifyEngine()
    try:
        engine.load_register(entries, register_size=client.register_size)
        batch = engine.con.execute("SELECT n_full FROM reg").fetchall()[0][0]
        engine.load_register(population / "register.csv")
        whole = engine.con.execute(
            "SELECT n_full FROM reg WHERE cccd = ?", [common["cccd"]]
        ).fetchall()[0][0]
    finally:
        engine.close()
    assert batch == whole > 1


def test_retries_honour_retry_after_then_succeed(service: RegisterService) -> None:
    waits: list[float] = []
    client = HttpRegister(
        service.url,
        rate_limit=0,
        retry=RetryPolicy(attempts=4, base_delay=0.01),
        sleep=waits.append,
    )
    try:
        service.fail_next(503, 429, retry_after=7)
        person = service.rows[0]
        entries = client.entries_for([{"record_id": "X", "cccd": person["cccd"]}])
    finally:
        client.close()
    assert person["cccd"] in entries.column("cccd").to_pylist()
    assert waits == [7.0, 7.0]  # the service said how long to wait
    assert client.retries == 2
    assert client.version == "test-register-2026-11"


def test_back_off_doubles_without_retry_after(service: RegisterService) -> None:
    waits: list[float] = []
    client = HttpRegister(
        service.url, rate_limit=0, retry=RetryPolicy(attempts=4, base_delay=0.5), sleep=waits.append
    )
    try:
        service.fail_next(502, 500, 504)
        client.entries_for([{"record_id": "X", "cccd": service.rows[0]["cccd"]}])
    finally:
        client.close()
    assert len(waits) == 3
    assert [round(w, 1) for w in waits] == pytest.approx([0.5, 1.0, 2.0], rel=0.11)


def test_timeouts_are_retried(service: RegisterService) -> None:
    client = HttpRegister(
        service.url, rate_limit=0, retry=RetryPolicy(attempts=3, base_delay=0.01, timeout=0.3)
    )
    try:
        service.fail_next("slow")
        entries = client.entries_for([{"record_id": "X", "cccd": service.rows[0]["cccd"]}])
    finally:
        client.close()
    assert entries.num_rows >= 1
    assert client.retries == 1


def test_gives_up_after_the_last_attempt_and_on_client_errors(service: RegisterService) -> None:
    client = HttpRegister(service.url, rate_limit=0, retry=RetryPolicy(attempts=3, base_delay=0.01))
    try:
        service.fail_next(503, 503, 503)
        with pytest.raises(RegisterUnavailable, match="no answer after 3 attempts"):
            client.entries_for([{"record_id": "X", "cccd": "001085001234"}])
        service.fail_next(400)
        with pytest.raises(RegisterUnavailable, match="HTTP 400"):
            client.entries_for([{"record_id": "X", "cccd": "001085001234"}])
        assert client.retries == 2  # a 400 is not retried
    finally:
        client.close()


def test_rate_limit_spaces_calls() -> None:
    from lienthong.identity.register import _RateLimiter

    slept: list[float] = []
    limiter = _RateLimiter(per_second=4, sleep=slept.append)  # the fake sleep takes no time
    for _ in range(5):
        limiter.wait()
    # the first call goes at once, each later one waits its quarter-second turn
    assert slept == pytest.approx([0.25, 0.5, 0.75, 1.0], abs=0.05)


def test_service_dies_mid_run_then_resume_loses_and_repeats_nothing(
    population: Path, service: RegisterService, tmp_path: Path
) -> None:
    records = population / "records.csv"
    out = tmp_path / "report.csv"
    args = [
        "verify", str(records), "--register-url", service.url, "-o", str(out),
        "--batch-size", "50", "--rate-limit", "0", "--retries", "2",
    ]  # fmt: skip
    service.down_after(7)  # three batches and a half, then only 503s
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "register service failed" in result.output and "--resume" in result.output
    partial = report(out)
    assert len(partial) == 150  # the three finished batches, each appended whole
    with records.open(encoding="utf-8", newline="") as fh:
        ids = [r["record_id"] for r in csv.DictReader(fh)]
    assert [r["record_id"] for r in partial] == ids[:150]

    service.recover()
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    final = report(out)
    counts = Counter(r["record_id"] for r in final)
    assert set(counts) == set(ids)  # nothing lost
    assert max(counts.values()) == 1  # nothing twice
    assert f"{len(ids):,} records verified" in result.output


def test_resume_cuts_a_torn_last_line(
    population: Path, service: RegisterService, tmp_path: Path
) -> None:
    records = population / "records.csv"
    out = tmp_path / "report.csv"
    args = ["verify", str(records), "--register-url", service.url, "-o", str(out),
            "--batch-size", "200", "--rate-limit", "0"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    whole = out.read_text(encoding="utf-8").splitlines()
    # a crash while writing: the header, 10 rows, and half of the 11th
    out.write_text("\n".join(whole[:11]) + "\n" + whole[11][:15], encoding="utf-8")
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    rows = report(out)
    assert len(rows) == len(whole) - 1
    assert len({r["record_id"] for r in rows}) == len(rows)
