"""``lienthong import``: NDJSON and Bundle files, plain or compressed, through the engine."""

from __future__ import annotations

import bz2
import gzip
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from lienthong.access.audit import AuditLog
from lienthong.cli import app
from lienthong.fhir.engine import FhirEngine
from lienthong.storage.base import open_store
from tests.conftest import need_shared
from tests.factories import observation, patient
from tests.synthea_data import SYNTHEA, synthea_files

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_person_index(monkeypatch: pytest.MonkeyPatch) -> None:
    # These tests count what the import wrote exactly; the person index would add master
    # Patients beside the records. Import with the index on is tested in test_mpi.
    monkeypatch.setenv("LIENTHONG_MPI", "false")


def ndjson(resources: list[dict]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_ndjson_plain_gz_bz2_load_with_counts(tmp_path: Path, store_url: str) -> None:
    people = [{**patient(cccd=f"0010900{i:05d}"), "id": f"p{i}"} for i in range(30)]
    obs = [observation(f"Patient/p{i}") for i in range(30)]
    (tmp_path / "a.ndjson").write_bytes(ndjson(people[:10]))
    (tmp_path / "b.ndjson.gz").write_bytes(gzip.compress(ndjson(people[10:])))
    (tmp_path / "c.ndjson.bz2").write_bytes(bz2.compress(ndjson(obs)))
    code, out, err = run("import", str(tmp_path), "--database", store_url, "--batch-size", "7")
    assert code == 0, err
    assert "60 resources loaded, 0 rejected" in out
    assert "Patient" in out and "Observation" in out
    s = open_store(store_url)
    try:
        assert s.counts() == {"Patient": 30, "Observation": 30}
        engine = FhirEngine(s)
        with s.reader() as session:
            page = session.search(
                engine.parse_search("Observation", [("subject", "Patient/p3")]).query
            )
        assert len(page.matches) == 1
    finally:
        s.close()
    # the import door is audited like the API
    log = AuditLog(store_url)
    try:
        records, total = log.search(count=10)
        assert total == 1 and records[0].entry.action == "import"
        assert records[0].entry.user.startswith("cli:")
        assert records[0].entry.detail == "60 resources loaded, 0 rejected"
    finally:
        log.close()
    # importing again skips what the import ledger holds; --force updates (new versions),
    # never duplicates
    code, out, _ = run("import", str(tmp_path / "a.ndjson"), "--database", store_url)
    assert code == 0
    assert "0 resources loaded" in out and "skipped 1 file already imported" in out
    for force, version in (([], 1), (["--force"], 2)):
        if force:
            code, out, _ = run(
                "import", str(tmp_path / "a.ndjson"), "--database", store_url, "--force"
            )
            assert code == 0 and "10 resources loaded" in out and "skipped" not in out
        s = open_store(store_url)
        try:
            assert s.counts()["Patient"] == 30
            with s.reader() as session:
                stored = session.read("Patient", "p0")
                assert stored is not None and stored.version == version
        finally:
            s.close()


def test_bad_lines_reject_their_batch_and_are_reported(tmp_path: Path, store_url: str) -> None:
    good = [{**patient(), "id": f"g{i}"} for i in range(6)]
    bad = patient()
    bad["birthDate"] = "1990-99-99"
    lines = ndjson(good[:2]) + orjson.dumps(bad) + b"\n" + b"{broken\n" + ndjson(good[2:])
    f = tmp_path / "mixed.ndjson"
    f.write_bytes(lines)
    code, out, err = run("import", str(f), "--database", store_url, "--batch-size", "4")
    assert code == 1
    assert "mixed.ndjson:3: " in err and "Patient.birthDate" in err
    assert "mixed.ndjson:4: not valid JSON" in err
    # lines 1-4 were one batch: nothing of it was written; lines 5-8 were loaded
    assert "4 resources loaded, 4 rejected" in out
    s = open_store(store_url)
    try:
        assert s.counts() == {"Patient": 4}
        with s.reader() as session:
            assert session.read("Patient", "g0") is None
            assert session.read("Patient", "g5") is not None
    finally:
        s.close()


def test_transaction_bundle_file_is_atomic(tmp_path: Path, store_url: str) -> None:
    bad = patient()
    bad["gender"] = ["x"]
    doc = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"resource": bad, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    f = tmp_path / "tx.json"
    f.write_bytes(orjson.dumps(doc))
    code, out, err = run("import", str(f), "--database", store_url)
    assert code == 1 and "transaction rejected" in err and "entry[1]" in err
    s = open_store(store_url)
    try:
        assert s.counts() == {}
    finally:
        s.close()


def test_missing_file_and_unknown_kind(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    code, _, err = run("import", str(tmp_path / "nope.ndjson"), "--database", db)
    assert code == 2 and "no such file" in err
    (tmp_path / "data.csv").write_text("a,b\n")
    code, _, err = run("import", str(tmp_path / "data.csv"), "--database", db)
    assert code == 1 and "not an .ndjson or .json file" in err


@pytest.mark.slow
def test_cli_imports_synthea_subset_as_a_process(tmp_path: Path) -> None:
    files = synthea_files(need_shared(SYNTHEA))[:5]  # hospitals, practitioners, 3 patients
    db = tmp_path / "synthea.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lienthong.cli",
            "import",
            *map(str, files),
            "--database",
            f"sqlite:///{db}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 rejected" in proc.stdout and db.exists()
