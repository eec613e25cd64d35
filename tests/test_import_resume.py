"""Imports that can be re-run: the import ledger, resuming after a kill, and worker
processes that die with the import that started them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from lienthong.cli import app
from lienthong.fhir.engine import FhirEngine
from lienthong.ingest.bulk import BulkImporter
from lienthong.settings import Settings
from lienthong.storage import ledger
from lienthong.storage.base import open_store
from tests.factories import observation, patient

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
OBS_PER_BUNDLE = 6


@pytest.fixture(autouse=True)
def _no_person_index(monkeypatch: pytest.MonkeyPatch) -> None:
    # exact counts: the person index would add master Patients beside the records
    monkeypatch.setenv("LIENTHONG_MPI", "false")


def ndjson(resources: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def bundle(i: int) -> dict[str, Any]:
    """A transaction: one Patient and its Observations, all POSTed without ids, so a
    bundle imported twice would show as duplicates."""
    pid = f"urn:uuid:{uuid.UUID(int=i)}"
    entries = [
        {
            "fullUrl": pid,
            "resource": patient(cccd=f"0010900{i:05d}"),
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    for _ in range(OBS_PER_BUNDLE):
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": observation(pid),
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def write_bundles(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        (folder / f"b{i:04d}.json").write_bytes(orjson.dumps(bundle(i)))
    return folder


def ledger_count(url: str, kind: str) -> int:
    store = open_store(url, 1)
    try:
        with store.reader() as session:
            rows = session.side(  # type: ignore[attr-defined]
                "SELECT COUNT(*) FROM import_ledger WHERE kind = ?", (kind,)
            )
        return int(rows[0][0])
    finally:
        store.close()


def subjects(url: str) -> tuple[int, Counter[str]]:
    """The Patients in the store, and how many Observations point at each."""
    store = open_store(url, 1)
    try:
        with store.reader() as session:
            rows = session.side(  # type: ignore[attr-defined]
                "SELECT v.content FROM resource r JOIN resource_version v "
                "ON v.pk = r.pk AND v.version = r.version WHERE r.res_type = 'Observation'"
            )
        counts = store.counts()
    finally:
        store.close()
    refs: Counter[str] = Counter()
    for (content,) in rows:
        doc = content if isinstance(content, dict) else orjson.loads(content)
        refs[doc["subject"]["reference"]] += 1
    return counts.get("Patient", 0), refs


def cli(url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "LIENTHONG_MPI": "false"}
    return subprocess.Popen(
        [sys.executable, "-m", "lienthong.cli", "import", *args, "--database", url],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the workers can be found by it
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


# -- the ledger, in process ---------------------------------------------------------


def test_rerun_skips_batches_and_files_and_resumes_a_refused_batch(
    tmp_path: Path, store_url: str
) -> None:
    people = [{**patient(cccd=f"0010900{i:05d}"), "id": f"p{i}"} for i in range(15)]
    bad = {**people[7], "birthDate": "1990-99-99"}
    f = tmp_path / "people.ndjson"
    f.write_bytes(ndjson(people[:7] + [bad] + people[8:]))  # batches of 5: the 2nd is refused
    code, out, _ = run("import", str(f), "--database", store_url, "--batch-size", "5")
    assert code == 1 and "10 resources loaded, 5 rejected" in out
    assert ledger_count(store_url, ledger.BATCH) == 2
    assert ledger_count(store_url, ledger.FILE) == 0  # a part was refused: not all in
    # the file fixed: only the refused batch goes in, the other two are skipped
    f.write_bytes(ndjson(people))
    code, out, _ = run("import", str(f), "--database", store_url, "--batch-size", "5")
    assert code == 0, out
    assert "5 resources loaded" in out and "skipped 2 batches already imported" in out
    assert ledger_count(store_url, ledger.FILE) == 1
    code, out, _ = run("import", str(f), "--database", store_url, "--batch-size", "5")
    assert code == 0 and "0 resources loaded" in out
    assert "skipped 1 file already imported" in out
    store = open_store(store_url)
    try:
        assert store.counts() == {"Patient": 15}
        with store.reader() as session:
            versions = {
                s.version for s in session.read_many([("Patient", f"p{i}") for i in range(15)])
            }
        assert versions == {1}  # nothing imported twice
    finally:
        store.close()


def test_the_ledger_row_commits_with_the_bundle_or_not_at_all(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_bundles(tmp_path / "in", 2)
    store = open_store(store_url)
    try:
        engine = FhirEngine(store, Settings(database_url=store_url, mpi=False))
        real = ledger.record

        def crash(*args: Any) -> None:
            real(*args)
            raise RuntimeError("power cut after the ledger row, before the commit")

        monkeypatch.setattr(ledger, "record", crash)
        with pytest.raises(RuntimeError):
            BulkImporter(engine).run(sorted(folder.iterdir()))
        assert store.counts() == {}  # the resources went with the ledger row
        monkeypatch.setattr(ledger, "record", real)
        assert ledger_count(store_url, ledger.BUNDLE) == 0
        # a refused bundle is not noted: it is tried again on the next run
        broken = bundle(9)
        broken["entry"][1]["resource"]["subject"] = {"reference": "urn:uuid:nowhere"}
        (folder / "broken.json").write_bytes(orjson.dumps(broken))
        report = BulkImporter(engine).run(sorted(folder.iterdir()))
        assert report.total_loaded == 2 * (1 + OBS_PER_BUNDLE) and report.rejected
        assert ledger_count(store_url, ledger.BUNDLE) == 2
        report = BulkImporter(engine).run(sorted(folder.iterdir()))
        assert report.skipped == {ledger.BUNDLE: 2} and report.total_loaded == 0
        assert report.rejected == 1 + OBS_PER_BUNDLE
        report = BulkImporter(engine, force=True).run(sorted(folder.iterdir())[:1])
        assert report.total_loaded == 1 + OBS_PER_BUNDLE and not report.skipped
        assert store.counts()["Patient"] == 3  # --force: POSTed again, as asked
    finally:
        store.close()


# -- killed mid-way, then resumed ---------------------------------------------------


def _wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _committed(url: str) -> int:
    try:
        return ledger_count(url, ledger.BUNDLE)
    except Exception:  # the first run may not have made the schema yet
        return 0


def test_an_import_killed_mid_way_resumes_exactly(tmp_path: Path, store_url: str) -> None:
    n = 300
    folder = write_bundles(tmp_path / "in", n)
    proc = cli(store_url, str(folder), "--workers", "1")
    try:
        done = _wait_for(lambda: _committed(store_url) >= 20 or proc.poll() is not None, 120, "")
        assert done and proc.poll() is None, "the import ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    before = _committed(store_url)
    assert 20 <= before < n
    patients, refs = subjects(store_url)
    # what the ledger names is in, whole, and nothing else is
    assert patients == before and len(refs) == before
    assert set(refs.values()) == {OBS_PER_BUNDLE}

    code, out, err = finish(cli(store_url, str(folder), "--workers", "1"))
    assert code == 0, err
    assert f"skipped {before} bundles already imported" in out
    assert f"{(n - before) * (1 + OBS_PER_BUNDLE)} resources loaded" in out
    patients, refs = subjects(store_url)
    assert patients == n and len(refs) == n and set(refs.values()) == {OBS_PER_BUNDLE}

    code, out, err = finish(cli(store_url, str(folder), "--workers", "0"))
    assert code == 0, err
    assert "0 resources loaded" in out and f"skipped {n} bundles already imported" in out
    assert subjects(store_url)[0] == n


def test_two_imports_of_the_same_input_at_once_write_each_bundle_once(
    tmp_path: Path, store_url: str
) -> None:
    n = 60
    folder = write_bundles(tmp_path / "in", n)
    open_store(store_url, 1).close()  # the schema, before both start
    procs = [cli(store_url, str(folder), "--workers", "0") for _ in range(2)]
    outs = [finish(p) for p in procs]
    assert all(code == 0 for code, _, _ in outs), outs
    loaded = skipped = 0
    for _, out, _ in outs:
        text = " ".join(out.split())
        loaded += int(text.split(" resources loaded")[0].rsplit(" ", 1)[-1])
        if "skipped" in text:
            skipped += int(text.split("skipped ")[1].split(" ")[0])
    assert loaded == n * (1 + OBS_PER_BUNDLE) and skipped == n
    patients, refs = subjects(store_url)
    assert patients == n and len(refs) == n and set(refs.values()) == {OBS_PER_BUNDLE}


# -- workers die with their parent --------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a live process; None when gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[0], int(fields[1]), int(fields[2])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pid:
                out.append(int(entry.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_when_the_import_is_killed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lienthong.db'}"
    folder = write_bundles(tmp_path / "in", 300)
    proc = cli(url, str(folder), "--workers", "2")
    try:
        workers = _wait_for(
            lambda: kids if len(kids := _children(proc.pid)) >= 2 else None, 60, "two workers"
        )
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone, not its process group
        proc.wait(timeout=30)  # (the workers would hold its output pipes open)
        _wait_for(lambda: all(_proc_stat(w) is None for w in workers), 5, "the workers to end")
    finally:
        with contextlib.suppress(ProcessLookupError):  # the import's group: it and its workers
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


# -- xml130 ingest ------------------------------------------------------------------


def test_xml130_ingest_skips_files_that_went_in_whole(tmp_path: Path, store_url: str) -> None:
    from lienthong.synth.xml130 import generate_xml130
    from tests.test_xml130_ingest import BLOCKING_DEFECTS, seeded_defects

    n = 16
    generate_xml130(n, tmp_path / "x", seed=5, visits_per_file=1, defects=0.5)
    blocked = {m for m, kind in seeded_defects(tmp_path / "x").items() if kind in BLOCKING_DEFECTS}
    assert blocked and len(list((tmp_path / "x").rglob("*.xml"))) == n
    whole = n - len(blocked)  # files whose one visit goes in

    def ingest(*extra: str) -> tuple[int, str]:
        args = ["xml130", "ingest", str(tmp_path / "x"), "-d", store_url, "--workers", "0"]
        result = runner.invoke(app, [*args, *extra])
        return result.exit_code, " ".join(result.stdout.split())

    code, first = ingest()
    assert code == 1 and f"{whole} visits written, 0 updated" in first
    assert f"{len(blocked)} rejected" in first and "skipped" not in first
    assert ledger_count(store_url, ledger.XML_FILE) == whole  # a refused visit: not noted
    store = open_store(store_url)
    try:
        counts = store.counts()
    finally:
        store.close()
    code, again = ingest()
    assert code == 1, again  # the files with a refused visit are read again
    assert f"skipped {whole} files already ingested" in again
    assert "0 visits written, 0 updated" in again and f"{len(blocked)} rejected" in again
    code, forced = ingest("--force")
    assert code == 1 and f"0 visits written, {whole} updated" in forced
    assert f"{whole} visits were stored already and were updated in place" in forced
    assert "skipped" not in forced
    store = open_store(store_url)
    try:
        assert store.counts() == counts  # updated in place, never duplicated
    finally:
        store.close()


LINK_POOL = """
import sys, time
from lienthong.identity.linkage import _Runner
runner = _Runner(2, 0, None)
busy = [runner.pool.submit(time.sleep, 120) for _ in range(2)]
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_link_workers_die_when_their_parent_is_killed() -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", LINK_POOL],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        workers = _wait_for(
            lambda: kids if len(kids := _children(proc.pid)) >= 2 else None, 60, "two workers"
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _wait_for(lambda: all(_proc_stat(w) is None for w in workers), 5, "the workers to end")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
