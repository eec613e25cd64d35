"""Hospital XML exports into FHIR: round trip from generated exports back to the fields,
re-sending, valid and invalid visits side by side, refused files, the CLI, and
``POST /xml130`` end to end over a real server with facility tokens."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from lienthong.access.audit import AuditLog
from lienthong.access.auth import TokenIssuer, UserDirectory
from lienthong.cli import app
from lienthong.fhir.engine import FhirEngine
from lienthong.identity.scoring import patient_features
from lienthong.ingest.xml130 import STANDARD_4210, Visit, parse
from lienthong.ingest.xml130.ingest import CONFORMANCE_SYSTEM, CONFORMANCE_TAG, Xml130Ingest
from lienthong.ingest.xml130.to_fhir import (
    ADMINISTRATIVE_ADDRESS,
    CITIZEN_ID,
    INSURANCE_NUMBER,
    PATIENT_INTERNAL_ID,
    PROVIDER_CODE,
    SOURCE,
    birth_date,
    local_datetime,
    number,
    record_id,
    record_system,
    visit_system,
)
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore, open_store
from lienthong.synth.xml130 import envelope_xml, generate_xml130
from lienthong.terminology import ICD10_SYSTEM, normalize_icd10
from tests.live_server import live_server


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated exports of 40 visits (QĐ 130 and 4210), no defects."""
    out = tmp_path_factory.mktemp("exports")
    generate_xml130(40, out / "clean", seed=7, visits_per_file=10)
    return out / "clean"


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.xml"))


def visits_of(folder: Path) -> list[Visit]:
    return [v for f in files_of(folder) for v in parse(f)]


def find(store: ResourceStore, rtype: str, **params: str) -> list[dict[str, Any]]:
    engine = FhirEngine(store)
    with store.reader() as session:
        req = engine.parse_search(rtype, list(params.items()))
        req.query.count = 1000
        page = session.search(req.query)
    return [orjson.loads(s.content) for s in page.matches if s.content is not None]


def one(store: ResourceStore, rtype: str, **params: str) -> dict[str, Any]:
    found = find(store, rtype, **params)
    assert len(found) == 1, (rtype, params, len(found))
    return found[0]


def field(visit: Visit, name_130: str, name_4210: str | None = None) -> str:
    name = name_4210 if visit.standard == STANDARD_4210 and name_4210 else name_130
    return visit.summary.get(name, "").strip()


def test_round_trip_from_generated_exports(exports: Path, engine: FhirEngine) -> None:
    ingest = Xml130Ingest(engine)
    for f in files_of(exports):
        ingest.ingest(f)
    report = ingest.report
    visits = visits_of(exports)
    assert {v.standard for v in visits} == {"130", "4210"}  # both field sets side by side
    assert report.problems == [] and report.visits_rejected == 0
    assert report.visits_created == len(visits) == 40 and report.visits_updated == 0
    store = engine.store
    for v in visits:
        fac = v.ma_cskcb
        enc = one(store, "Encounter", identifier=f"{visit_system(fac)}|{v.ma_lk}")
        pid = enc["subject"]["reference"].split("/")[1]
        patient = one(store, "Patient", _id=pid)
        ids = {(i["system"], i["value"]) for i in patient["identifier"]}
        assert (PATIENT_INTERNAL_ID, field(v, "MA_BN")) in ids
        if field(v, "SO_CCCD"):
            assert (CITIZEN_ID, field(v, "SO_CCCD")) in ids
        for card in filter(None, field(v, "MA_THE_BHYT", "MA_THE").split(";")):
            assert (INSURANCE_NUMBER, card) in ids
        assert patient["name"][0]["text"] == " ".join(field(v, "HO_TEN").split())
        assert patient["meta"]["source"] == SOURCE
        assert (
            patient["gender"] == {"1": "male", "2": "female", "3": "unknown"}[field(v, "GIOI_TINH")]
        )
        assert patient.get("birthDate") == birth_date(field(v, "NGAY_SINH"))
        address = patient["address"][0]
        assert address["text"] == field(v, "DIA_CHI")
        want = {"state": field(v, "MATINH_CU_TRU"), "ward": field(v, "MAXA_CU_TRU")}
        if v.standard == STANDARD_4210:
            assert "extension" not in address  # the 4210 summary has no unit codes
        else:
            assert all(want.values())
            (units,) = address["extension"]
            assert units["url"] == ADMINISTRATIVE_ADDRESS
            got = {u["url"]: u["valueCodeableConcept"]["coding"][0] for u in units["extension"]}
            assert {k: got[k]["code"] for k in want} == want
            assert "district" not in got  # MAHUYEN_CU_TRU 000: no district since 2025
            # the person index takes the place from the codes, not from the text
            features = patient_features({"address": [{"extension": address["extension"]}]})
            assert patient_features(patient)["province"] == features["province"]
            codes_only = {"address": [{"state": want["state"], "city": want["ward"]}]}
            by_codes = patient_features(codes_only)
            assert features["province"] is not None
            assert (features["province"], features["commune"]) == (
                by_codes["province"],
                by_codes["commune"],
            )
        # the facility
        org = one(store, "Organization", _id=enc["serviceProvider"]["reference"].split("/")[1])
        assert {"system": PROVIDER_CODE, "value": fac} in org["identifier"]
        # the visit
        assert enc["period"]["start"] == local_datetime(field(v, "NGAY_VAO"))
        assert enc["period"].get("end") == local_datetime(field(v, "NGAY_RA"))
        kind = field(v, "MA_LOAI_KCB")
        assert enc["type"][0]["coding"][0]["code"] == kind
        inpatient = kind in ("3", "03")
        assert enc["class"]["code"] == ("IMP" if inpatient else "AMB")
        # diagnoses: main first, then the secondary codes
        conditions = find(store, "Condition", encounter=f"Encounter/{enc['id']}")
        by_rank = {d["rank"]: d["condition"]["reference"] for d in enc["diagnosis"]}
        codes = {c["id"]: c["code"]["coding"][0] for c in conditions}
        main = codes[by_rank[1].split("/")[1]]
        assert main["system"] == ICD10_SYSTEM and main["display"]
        assert main["code"] == normalize_icd10(field(v, "MA_BENH_CHINH", "MA_BENH"))
        secondary = {
            normalize_icd10(c)
            for c in field(v, "MA_BENH_KT", "MA_BENHKHAC").split(";")
            if c.strip()
        } - {main["code"]}
        assert {c["code"] for c in codes.values()} == {main["code"], *secondary}
        # drugs
        drugs = find(store, "MedicationRequest", encounter=f"Encounter/{enc['id']}")
        sent = sorted(r["MA_THUOC"] for r in v.rows("XML2"))
        assert sorted(d["medicationCodeableConcept"]["coding"][0]["code"] for d in drugs) == sent
        # lab results with their values and units
        results = find(
            store, "Observation", encounter=f"Encounter/{enc['id']}", category="laboratory"
        )
        assert len(results) == len(v.rows("XML4"))
        got = sorted(
            (
                r["code"]["coding"][0]["code"],
                r.get("valueQuantity", {}).get("value", r.get("valueString")),
                r.get("valueQuantity", {}).get("unit"),
            )
            for r in results
        )
        want = sorted(
            (
                row["MA_CHI_SO"],
                number(row["GIA_TRI"]) if number(row["GIA_TRI"]) is not None else row["GIA_TRI"],
                row.get("DON_VI_DO") or None,
            )
            for row in v.rows("XML4")
        )
        assert got == want
        reports = find(store, "DiagnosticReport", encounter=f"Encounter/{enc['id']}")
        assert sum(len(r["result"]) for r in reports) == len(results)
        notes = find(store, "ClinicalImpression", encounter=f"Encounter/{enc['id']}")
        assert len(notes) == len(v.rows("XML5"))
        # money: one Claim item per drug and service line, the visit total
        claim = one(store, "Claim", identifier=f"{record_system(fac)}|{v.ma_lk}#claim")
        assert len(claim["item"]) == len(v.rows("XML2")) + len(v.rows("XML3"))
        total = number(field(v, "T_TONGCHI_BV", "T_TONGCHI"))
        assert claim["total"] == {"value": total, "currency": "VND"}
        nets = [i["net"]["value"] for i in claim["item"]]
        assert abs(sum(nets) - float(total or 0)) < 0.01 * max(1, len(nets))


def test_resending_updates_and_never_duplicates(exports: Path, engine: FhirEngine) -> None:
    files = files_of(exports)[:2]
    sent = [v for f in files for v in parse(f)]
    first = Xml130Ingest(engine)
    for f in files:
        first.ingest(f)
    counts = engine.store.counts()
    assert first.report.visits_created == len(sent) > 1
    again = Xml130Ingest(engine)
    for f in files:
        again.ingest(f)
    assert again.report.visits_updated == len(sent) and again.report.visits_created == 0
    assert engine.store.counts() == counts  # no new resources
    v = sent[0]
    enc = one(engine.store, "Encounter", identifier=f"{visit_system(v.ma_cskcb)}|{v.ma_lk}")
    # the same content again writes no version (a changed visit does: see below)
    assert enc["meta"]["versionId"] == "1"


def test_the_same_visit_number_at_two_facilities_is_two_visits(engine: FhirEngine) -> None:
    v = visits_of_one_file()
    tables = v.tables
    a = envelope_xml(v.ma_cskcb, date(2025, 1, 1), [tables])
    other = "01001" if v.ma_cskcb != "01001" else "79024"
    moved = {t: [{**r, **({"MA_CSKCB": other} if "MA_CSKCB" in r else {})} for r in rows]
             for t, rows in tables.items()}  # fmt: skip
    b = envelope_xml(other, date(2025, 1, 1), [moved])
    ingest = Xml130Ingest(engine)
    ingest.ingest(a, name="a.xml")
    ingest.ingest(b, name="b.xml")
    assert ingest.report.problems == []
    assert ingest.report.visits_created == 2
    assert engine.store.counts()["Encounter"] == 2
    assert engine.store.counts()["Organization"] == 2


_ONE: list[Visit] = []


def visits_of_one_file() -> Visit:
    if not _ONE:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            generate_xml130(1, Path(tmp), seed=3)
            _ONE.extend(visits_of(Path(tmp)))
    return _ONE[0]


# seeded defects (lienthong.synth.xml130.DEFECT_KINDS) that keep a visit out of the store
BLOCKING_DEFECTS = {"missing_name", "bad_admission_time", "orphan_row"}


def seeded_defects(folder: Path) -> dict[str, str]:
    """MA_LK -> the defect seeded into that visit."""
    with (folder / "defects.csv").open(encoding="utf-8") as fh:
        return {row["ma_lk"]: row["defect"] for row in csv.DictReader(fh)}


def test_blocking_visits_are_refused_and_the_others_stored_with_their_problems(
    tmp_path: Path, engine: FhirEngine
) -> None:
    generate_xml130(60, tmp_path / "mixed", seed=11, defects=0.3, visits_per_file=30)
    seeded = seeded_defects(tmp_path / "mixed")
    blocked = {m for m, kind in seeded.items() if kind in BLOCKING_DEFECTS}
    stored_bad = set(seeded) - blocked
    assert blocked and stored_bad  # the generator seeded both kinds
    ingest = Xml130Ingest(engine)
    for f in files_of(tmp_path / "mixed"):
        ingest.ingest(f)
    report = ingest.report
    assert {p.ma_lk for p in report.problems} == blocked
    assert all(p.file and p.rule and p.message for p in report.problems)
    assert any(p.severity == "blocking" for p in report.problems)
    assert {p.ma_lk for p in report.stored_problems} == stored_bad
    assert {p.severity for p in report.stored_problems} == {"conformance"}
    assert report.visits_rejected == len(blocked)
    assert report.visits_created == 60 - len(blocked)
    assert report.visits_nonconformant == len(stored_bad)
    assert f"({len(stored_bad)} of them with conformance problems)" in report.summary()
    tagged = find(engine.store, "Encounter", _tag=f"{CONFORMANCE_SYSTEM}|nonconformant")
    outcomes = find(engine.store, "OperationOutcome", _tag=f"{CONFORMANCE_SYSTEM}|nonconformant")
    assert len(tagged) == len(outcomes) == len(stored_bad)
    for v in visits_of(tmp_path / "mixed"):
        found = find(engine.store, "Encounter", identifier=f"{visit_system(v.ma_cskcb)}|{v.ma_lk}")
        if v.ma_lk in blocked:
            assert found == []
            continue
        assert len(found) == 1
        encounter = found[0]
        tags = (encounter.get("meta") or {}).get("tag") or []
        links = [e for e in encounter.get("extension") or [] if e["url"].endswith("outcome")]
        if v.ma_lk not in stored_bad:
            assert tags == [] and links == []
            continue
        assert tags == [CONFORMANCE_TAG]
        (link,) = links
        outcome_id = link["valueReference"]["reference"].split("/")[1]
        assert outcome_id == record_id(v.ma_cskcb, v.ma_lk, "conformance")
        outcome = one(engine.store, "OperationOutcome", _id=outcome_id)
        mine = [p for p in report.stored_problems if p.ma_lk == v.ma_lk]
        assert len(outcome["issue"]) == len(mine)
        for issue, p in zip(outcome["issue"], mine, strict=True):
            assert issue["severity"] == "warning" and issue["code"] in ("invalid", "value")
            assert issue["diagnostics"].startswith(p.message)
            assert issue["expression"] == [f"{p.table}.{p.field}"]
            assert issue["details"]["coding"][0]["code"] == p.rule


def test_strict_refuses_every_visit_with_a_problem(tmp_path: Path, engine: FhirEngine) -> None:
    generate_xml130(60, tmp_path / "mixed", seed=11, defects=0.3, visits_per_file=30)
    seeded = set(seeded_defects(tmp_path / "mixed"))
    ingest = Xml130Ingest(engine, strict=True)
    for f in files_of(tmp_path / "mixed"):
        ingest.ingest(f)
    report = ingest.report
    assert {p.ma_lk for p in report.problems} == seeded
    assert report.visits_rejected == len(seeded) and report.visits_nonconformant == 0
    assert report.visits_created == 60 - len(seeded) and report.stored_problems == []
    for v in visits_of(tmp_path / "mixed"):
        found = find(engine.store, "Encounter", identifier=f"{visit_system(v.ma_cskcb)}|{v.ma_lk}")
        assert len(found) == (0 if v.ma_lk in seeded else 1)
    assert find(engine.store, "OperationOutcome") == []


def test_a_resent_visit_updates_its_problems_and_a_clean_resend_deletes_them(
    exports: Path, engine: FhirEngine
) -> None:
    v = next(v for v in visits_of(exports) if v.standard != STANDARD_4210 and v.rows("XML2"))
    bad = {
        **v.tables,
        "XML1": [{**v.summary, "GIOI_TINH": "9"}],
        "XML2": [{**r, "SO_LUONG": r["SO_LUONG"] + ",0"} for r in v.rows("XML2")],
    }
    ingest = Xml130Ingest(engine)
    outcome_id = record_id(v.ma_cskcb, v.ma_lk, "conformance")
    by_key = {"identifier": f"{visit_system(v.ma_cskcb)}|{v.ma_lk}"}

    ingest.ingest(envelope_xml(v.ma_cskcb, date(2025, 1, 1), [bad]), name="first.xml")
    assert ingest.report.visits_created == 1 and ingest.report.visits_nonconformant == 1
    first = one(engine.store, "OperationOutcome", _id=outcome_id)
    assert {i["details"]["coding"][0]["code"] for i in first["issue"]} == {
        "code",
        "decimal_comma",
    }
    assert len(first["issue"]) == 2  # the comma once, however many drug lines
    comma = next(i for i in first["issue"] if i["expression"] == ["XML2.SO_LUONG"])
    assert f"on {len(v.rows('XML2'))} line" in comma["diagnostics"]

    only_sex = {**v.tables, "XML1": [{**v.summary, "GIOI_TINH": "9"}]}
    ingest.ingest(envelope_xml(v.ma_cskcb, date(2025, 1, 2), [only_sex]), name="second.xml")
    second = one(engine.store, "OperationOutcome", _id=outcome_id)
    assert second["meta"]["versionId"] == "2" and len(second["issue"]) == 1
    assert len(find(engine.store, "OperationOutcome")) == 1

    ingest.ingest(envelope_xml(v.ma_cskcb, date(2025, 1, 3), [v.tables]), name="third.xml")
    assert ingest.report.visits_updated == 2 and ingest.report.problems == []
    assert find(engine.store, "OperationOutcome") == []
    encounter = one(engine.store, "Encounter", **by_key)
    assert "tag" not in (encounter.get("meta") or {}) and "extension" not in encounter
    assert find(engine.store, "Encounter", _tag=f"{CONFORMANCE_SYSTEM}|nonconformant") == []
    with engine.store.reader() as session:
        gone = session.read("OperationOutcome", outcome_id)
    assert gone is not None and gone.deleted  # history keeps what was reported

    ingest.ingest(envelope_xml(v.ma_cskcb, date(2025, 1, 4), [only_sex]), name="fourth.xml")
    assert one(engine.store, "OperationOutcome", _id=outcome_id)["issue"][0]["expression"] == [
        "XML1.GIOI_TINH"
    ]
    assert one(engine.store, "Encounter", **by_key)["meta"]["tag"] == [CONFORMANCE_TAG]


def test_a_real_world_export_is_stored_with_its_decimal_commas_noted(engine: FhirEngine) -> None:
    """The hand-written delivery visit (decimal commas, no district, a DS card of the
    Defence office, results without indicator name, a birth certificate without note)
    goes in; its amounts are the numbers the commas stand for."""
    from tests.test_xml130_validate import real_world_export

    ingest = Xml130Ingest(engine)
    ingest.ingest(real_world_export(), name="real.xml")
    report = ingest.report
    assert report.problems == [] and report.visits_created == 1
    assert report.visits_nonconformant == 1
    assert {p.rule for p in report.stored_problems} == {"decimal_comma"}
    encounter = one(engine.store, "Encounter", _tag=f"{CONFORMANCE_SYSTEM}|nonconformant")
    claim = one(engine.store, "Claim")
    assert claim["total"]["value"] == pytest.approx(1561302.6)
    patient = one(engine.store, "Patient")
    cards = [i["value"] for i in patient["identifier"] if i["system"] == INSURANCE_NUMBER]
    assert cards and cards[0].startswith("DS497")
    outcome = one(engine.store, "OperationOutcome")
    assert encounter["extension"][-1]["valueReference"]["reference"] == (
        f"OperationOutcome/{outcome['id']}"
    )
    assert {i["expression"][0] for i in outcome["issue"]} >= {"XML2.DON_GIA", "XML1.CAN_NANG"}


def test_a_file_that_breaks_off_is_refused_whole(exports: Path, engine: FhirEngine) -> None:
    data = files_of(exports)[0].read_bytes()
    cut = data[: int(len(data) * 0.8)]  # the first visits are complete, the file is not
    ingest = Xml130Ingest(engine)
    ingest.ingest(cut, name="cut.xml")
    assert ingest.report.refused_files == ["cut.xml"]
    assert ingest.report.problems[0].rule == "file"
    assert engine.store.counts() == {}
    hostile = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><GIAMDINHHS>&e;</GIAMDINHHS>'
    ingest.ingest(hostile, name="dtd.xml")
    assert ingest.report.refused_files == ["cut.xml", "dtd.xml"]
    assert engine.store.counts() == {}


def test_cli_ingest_prints_counts_problems_and_is_audited(tmp_path: Path) -> None:
    generate_xml130(16, tmp_path / "x", seed=5, defects=0.5)
    seeded = seeded_defects(tmp_path / "x")
    blocked = {m for m, kind in seeded.items() if kind in BLOCKING_DEFECTS}
    assert blocked and set(seeded) - blocked
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    result = CliRunner().invoke(
        app, ["xml130", "ingest", str(tmp_path / "x"), "--database", url, "--batch", "5"]
    )
    assert result.exit_code == 1, result.stderr
    written = 16 - len(blocked)
    nonconformant = len(seeded) - len(blocked)
    assert (
        f"{written} visits written, 0 updated ({nonconformant} of them with conformance "
        f"problems), {len(blocked)} rejected"
    ) in " ".join(result.stdout.split())
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    for ma_lk in seeded:
        kind = "[blocking, not written]" if ma_lk in blocked else "[conformance, stored]"
        assert any(ma_lk in line and kind in line for line in lines), ma_lk
    store = open_store(url)
    try:
        assert store.counts()["Encounter"] == written
        assert store.counts()["OperationOutcome"] == nonconformant
    finally:
        store.close()
    log = AuditLog(url)
    try:
        records, total = log.search(count=5)
    finally:
        log.close()
    assert total == 1 and records[0].entry.action == "xml130-ingest"
    missing = CliRunner().invoke(app, ["xml130", "ingest", str(tmp_path / "none.xml"), "-d", url])
    assert missing.exit_code == 2 and "no such file" in missing.stderr

    strict_url = f"sqlite:///{tmp_path / 'strict.sqlite'}"
    strict = CliRunner().invoke(
        app, ["xml130", "ingest", str(tmp_path / "x"), "-d", strict_url, "--strict"]
    )
    assert strict.exit_code == 1, strict.stderr
    assert f"{16 - len(seeded)} visits written, 0 updated (0 of them" in strict.stdout
    store = open_store(strict_url)
    try:
        assert store.counts()["Encounter"] == 16 - len(seeded)
        assert "OperationOutcome" not in store.counts()
    finally:
        store.close()


# -- POST /xml130 over a real server ------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``lienthong serve`` with authentication on; tokens for two facilities' systems,
    a clinician and an administrator."""
    url = f"sqlite:///{tmp_path / 'srv.db'}"
    settings = Settings.from_env({}).model_copy(update={"database_url": url})
    users = UserDirectory(url)
    issuer = TokenIssuer(url, settings.token_issuer, settings.token_audience)
    tokens: dict[str, str] = {}
    try:
        for name, role, org in (
            ("his-01012", "system", "01012"),
            ("his-79024", "system", "79024"),
            ("his-ha-dong", "system", "bv-ha-dong"),  # an Organization id, not a code
            ("doctor", "clinician", "01012"),
            ("admin", "data_admin", None),
        ):
            user = users.add(name, role, organization=org)
            tokens[name] = issuer.issue(user, None, 600)
    finally:
        users.close()
        issuer.close()
    with live_server({"LIENTHONG_DATABASE_URL": url, "LIENTHONG_AUTH": "on"}) as live:
        yield live.root, tokens


def post(base: str, token: str, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{base}/xml130",
        content=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/xml"},
        timeout=60,
    )


def test_post_xml130_end_to_end_with_facility_tokens(
    tmp_path: Path, server: tuple[str, dict[str, str]]
) -> None:
    base, tokens = server
    generate_xml130(30, tmp_path / "h", seed=21)
    mine = [f for f in files_of(tmp_path / "h") if f.parent.name == "01012"]
    theirs = [f for f in files_of(tmp_path / "h") if f.parent.name == "79024"]
    assert mine and theirs
    data = mine[0].read_bytes()
    sent = list(parse(data))
    auth = {"Authorization": f"Bearer {tokens['admin']}"}

    def encounters() -> int:
        r = httpx.get(f"{base}/fhir/Encounter", params={"_summary": "count"}, headers=auth)
        assert r.status_code == 200, r.text
        return int(r.json()["total"])

    # another facility's system may not send these visits: nothing is written
    refused = post(base, tokens["his-79024"], data)
    assert refused.status_code == 403, refused.text
    assert "01012" in refused.json()["issue"][0]["diagnostics"]
    assert encounters() == 0
    # nor may a clinician
    assert post(base, tokens["doctor"], data).status_code == 403
    # the facility is registered as an Organization; a token naming it (by id) submits
    # for the facility code it carries, and ingested visits point at it
    ha_dong = {
        "resourceType": "Organization",
        "id": "bv-ha-dong",
        "identifier": [{"system": PROVIDER_CODE, "value": "01012"}],
        "name": "Bệnh viện Đa khoa Hà Đông",
    }
    assert post(base, tokens["his-ha-dong"], data).status_code == 403  # not yet known
    r = httpx.put(
        f"{base}/fhir/Organization/bv-ha-dong",
        content=orjson.dumps(ha_dong),
        headers={**auth, "Content-Type": "application/fhir+json"},
    )
    assert r.status_code == 201, r.text
    # the facility's own system may
    r = post(base, tokens["his-01012"], data)
    assert r.status_code == 200, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    summary = outcome["issue"][-1]["diagnostics"]
    assert f"{len(sent)} visits written, 0 updated (0 of them with conformance" in summary
    assert "problems), 0 rejected" in summary
    assert encounters() == len(sent)
    v = sent[0]
    found = httpx.get(
        f"{base}/fhir/Encounter",
        params={"identifier": f"{visit_system(v.ma_cskcb)}|{v.ma_lk}"},
        headers=auth,
    ).json()
    assert found["total"] == 1
    assert found["entry"][0]["resource"]["serviceProvider"]["reference"] == (
        "Organization/bv-ha-dong"
    )
    # sending again updates
    r = post(base, tokens["his-01012"], data)
    assert r.status_code == 200 and f"0 visits written, {len(sent)} updated" in r.text
    r = post(base, tokens["his-ha-dong"], data)
    assert r.status_code == 200 and f"0 visits written, {len(sent)} updated" in r.text
    assert encounters() == len(sent)
    # a visit with a conformance problem goes in with it, unless the sender asks ?strict=true
    v = sent[0]
    odd = {**v.tables, "XML1": [{**v.summary, "GIOI_TINH": "9"}]}
    odd_data = envelope_xml(v.ma_cskcb, date(2025, 1, 2), [odd])
    r = httpx.post(
        f"{base}/xml130",
        params={"strict": "true"},
        content=odd_data,
        headers={"Authorization": f"Bearer {tokens['his-01012']}", "Content-Type": "text/xml"},
        timeout=60,
    )
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["severity"] == "error" and "GIOI_TINH" in r.text
    r = post(base, tokens["his-01012"], odd_data)
    assert r.status_code == 200, r.text
    warnings = [i for i in r.json()["issue"] if i["severity"] == "warning"]
    assert [i["expression"] for i in warnings] == [["XML1.GIOI_TINH"]]
    tagged = httpx.get(
        f"{base}/fhir/Encounter",
        params={"_tag": f"{CONFORMANCE_SYSTEM}|nonconformant"},
        headers=auth,
    ).json()
    assert tagged["total"] == 1
    assert tagged["entry"][0]["resource"]["identifier"][0]["value"] == v.ma_lk
    outcomes = httpx.get(
        f"{base}/fhir/OperationOutcome",
        params={"_tag": f"{CONFORMANCE_SYSTEM}|nonconformant"},
        headers=auth,
    ).json()
    assert outcomes["total"] == 1
    assert (
        httpx.post(
            f"{base}/xml130", params={"strict": "maybe"}, content=odd_data, headers=auth
        ).status_code
        == 400
    )
    # a broken upload is refused with a reason
    r = post(base, tokens["his-01012"], b"<GIAMDINHHS><THONGTINHOSO>")
    assert r.status_code == 400 and ("not well-formed" in r.text or "no visit" in r.text)
    # the submissions are in the audit trail
    r = httpx.get(f"{base}/fhir/AuditEvent", params={"_count": "50"}, headers=auth)
    assert r.status_code == 200
    assert "xml130-ingest" in r.text


def test_the_same_person_at_two_facilities_resolves_to_one_master(
    store: ResourceStore, settings: Settings
) -> None:
    """With the master person index on, each facility's Patient stays its own record and
    both are tied to one person (they carry the same CCCD)."""
    from lienthong.identity.mpi import MASTER_TAG

    engine = FhirEngine(store, settings.model_copy(update={"mpi": True}))
    v = visits_of_one_file()
    assert v.summary.get("SO_CCCD")
    other = "01001" if v.ma_cskcb != "01001" else "79024"
    moved = {
        t: [{**r, **({"MA_CSKCB": other} if "MA_CSKCB" in r else {})} for r in rows]
        for t, rows in v.tables.items()
    }
    ingest = Xml130Ingest(engine)
    ingest.ingest(envelope_xml(v.ma_cskcb, date(2025, 1, 1), [v.tables]), name="a.xml")
    ingest.ingest(envelope_xml(other, date(2025, 1, 1), [moved]), name="b.xml")
    assert ingest.report.problems == [] and ingest.report.visits_created == 2
    masters = find(store, "Patient", _tag=f"{MASTER_TAG['system']}|{MASTER_TAG['code']}")
    records = [p for p in find(store, "Patient") if p not in masters]
    assert len(records) == 2 and len(masters) == 1
    linked = {link["other"]["reference"] for link in masters[0]["link"]}
    assert linked == {f"Patient/{p['id']}" for p in records}


def test_a_corrected_resend_drops_what_the_visit_no_longer_has(
    exports: Path, engine: FhirEngine
) -> None:
    v = next(
        v
        for v in visits_of(exports)
        if field(v, "MA_BENH_KT", "MA_BENHKHAC") and len(v.rows("XML4")) >= 2
    )
    key = "MA_BENHKHAC" if v.standard == STANDARD_4210 else "MA_BENH_KT"
    ingest = Xml130Ingest(engine)
    ingest.ingest(envelope_xml(v.ma_cskcb, date(2025, 1, 1), [v.tables]), name="first.xml")
    enc = one(engine.store, "Encounter", identifier=f"{visit_system(v.ma_cskcb)}|{v.ma_lk}")
    at = f"Encounter/{enc['id']}"
    assert len(find(engine.store, "Condition", encounter=at)) > 1
    results = len(find(engine.store, "Observation", encounter=at, category="laboratory"))
    corrected = {
        **v.tables,
        "XML1": [{**v.summary, key: ""}],  # the secondary diagnoses were a mistake
        "XML4": v.rows("XML4")[:-1],  # and so was the last result
    }
    ingest.ingest(envelope_xml(v.ma_cskcb, date(2025, 1, 2), [corrected]), name="second.xml")
    assert ingest.report.problems == [] and ingest.report.visits_updated == 1
    conditions = find(engine.store, "Condition", encounter=at)
    assert [c["code"]["coding"][0]["code"] for c in conditions] == [
        normalize_icd10(field(v, "MA_BENH_CHINH", "MA_BENH"))
    ]
    after = find(engine.store, "Observation", encounter=at, category="laboratory")
    assert len(after) == results - 1
    assert len(one(engine.store, "Encounter", _id=enc["id"])["diagnosis"]) == 1


def test_a_visit_refused_by_the_engine_is_undone_alone_within_its_batch(
    exports: Path, store: ResourceStore, settings: Settings
) -> None:
    """Visits share database commits (``batch``), each in a savepoint: a visit whose
    transaction fails after it has written its Patient (and resolved it to a person) is
    undone whole, and the visits before and after it in the same commit stay."""
    from lienthong.ingest.xml130.to_fhir import visit_bundle

    engine = FhirEngine(store, settings.model_copy(update={"mpi": True}))
    file = files_of(exports)[0]
    sent = list(parse(file))
    assert len(sent) >= 3
    doomed = sent[1].ma_lk

    def mapper(visit: Visit, icd: Any) -> dict[str, Any]:
        bundle = visit_bundle(visit, icd)
        if visit.ma_lk == doomed:  # a PUT processed after the visit's own: stale If-Match
            bundle["entry"].append(
                {
                    "resource": {"resourceType": "Basic", "id": "late", "code": {"text": "x"}},
                    "request": {"method": "PUT", "url": "Basic/late", "ifMatch": 'W/"4"'},
                }
            )
        return bundle

    ingest = Xml130Ingest(engine, mapper=mapper, batch=len(sent))
    ingest.ingest(file)
    report = ingest.report
    assert report.visits_rejected == 1 and report.visits_created == len(sent) - 1
    assert {p.ma_lk for p in report.problems} == {doomed}
    assert any("If-Match" in p.message for p in report.problems)
    for v in sent:
        found = find(store, "Encounter", identifier=f"{visit_system(v.ma_cskcb)}|{v.ma_lk}")
        assert len(found) == (0 if v.ma_lk == doomed else 1)
    patients = {p["id"] for p in find(store, "Patient", _tag="http://fhir.lienthong.vn/mpi|master")}
    with store.reader() as session:
        stats = engine.mpi.stats(session)
    sources = store.counts()["Patient"] - len(patients)
    assert stats["records"] == sources == len(report.patients)
    assert len(report.patients) == len({v.summary.get("MA_BN") for v in sent if v.ma_lk != doomed})


def test_a_visit_with_an_unreadable_table_is_refused_and_the_others_go_in(
    exports: Path, engine: FhirEngine
) -> None:
    """A table the reader could not read (here: NOIDUNGFILE that is not base64) is a
    blocking problem of its visit only."""
    sent = [v for v in visits_of(exports) if v.ma_cskcb == "01012" and v.rows("XML2")][:2]
    assert len(sent) == 2
    data = envelope_xml("01012", date(2025, 1, 1), [v.tables for v in sent])
    marker = b"<LOAIHOSO>XML2</LOAIHOSO><NOIDUNGFILE>"
    at = data.index(marker) + len(marker)  # the first visit's drug table
    data = data[:at] + b"%%not base64%%" + data[data.index(b"</NOIDUNGFILE>", at) :]
    ingest = Xml130Ingest(engine)
    ingest.ingest(data, name="broken.xml")
    report = ingest.report
    assert report.refused_files == [] and report.visits_rejected == 1
    assert report.visits_created == 1
    broken = [p for p in report.problems if p.rule == "broken"]
    assert [(p.ma_lk, p.table, p.severity) for p in broken] == [(sent[0].ma_lk, "XML2", "blocking")]
    for v, stored in zip(sent, (0, 1), strict=True):
        found = find(engine.store, "Encounter", identifier=f"{visit_system(v.ma_cskcb)}|{v.ma_lk}")
        assert len(found) == stored


# -- bare-table files of one folder ----------------------------------------------------


def bare_envelope(folder: Path, tables: tuple[str, ...]) -> bytes:
    """The tables of a bare-table folder packed in one gateway envelope, as the gateway
    would receive the same visit."""
    import base64

    files = "".join(
        f"<FILEHOSO><LOAIHOSO>{t}</LOAIHOSO><NOIDUNGFILE>"
        + base64.b64encode((folder / f"{t}.xml").read_bytes()).decode("ascii")
        + "</NOIDUNGFILE></FILEHOSO>"
        for t in tables
    )
    return (
        "<GIAMDINHHS><THONGTINDONVI><MACSKCB>01012</MACSKCB></THONGTINDONVI><THONGTINHOSO>"
        "<NGAYLAP>20250816</NGAYLAP><SOLUONGHOSO>1</SOLUONGHOSO><DANHSACHHOSO><HOSO>"
        f"{files}</HOSO></DANHSACHHOSO></THONGTINHOSO></GIAMDINHHS>"
    ).encode()


def test_a_folder_of_bare_tables_is_stored_as_one_visit(tmp_path: Path, engine: FhirEngine) -> None:
    """XML1 ... XML4 as separate files: one clean visit with its drug lines and results,
    the same resources the gateway envelope of those tables makes (re-sent as an
    envelope, it updates them and adds none)."""
    from tests.test_xml130_validate import BARE_MA_LK, bare_copy

    tables = ("XML1", "XML2", "XML3", "XML4")
    folder = bare_copy(tmp_path / "01012", tables)
    ingest = Xml130Ingest(engine)
    report = ingest.ingest_paths(files_of(folder))
    assert report.problems == [] and report.stored_problems == [] and report.notes == []
    assert (report.files, report.visits_created, report.visits_rejected) == (4, 1, 0)
    encounter = one(engine.store, "Encounter", identifier=f"{visit_system('01012')}|{BARE_MA_LK}")
    assert "meta" not in encounter or "tag" not in encounter["meta"]
    drugs = find(engine.store, "MedicationRequest")
    xml2 = (folder / "XML2.xml").read_text(encoding="utf-8")
    assert len(drugs) == xml2.count("<CHI_TIET_THUOC>") == 3
    results = find(engine.store, "Observation")
    xml4 = (folder / "XML4.xml").read_text(encoding="utf-8")
    assert len(results) >= xml4.count("<CHI_TIET_CLS>") == 3
    counts = engine.store.counts()
    again = Xml130Ingest(engine)
    again.ingest(bare_envelope(folder, tables), name="envelope.xml")
    assert again.report.visits_updated == 1 and again.report.visits_created == 0
    assert engine.store.counts() == counts


def test_a_bare_visit_whose_xml2_file_is_broken_is_refused_and_the_other_stored(
    tmp_path: Path, engine: FhirEngine
) -> None:
    from tests.test_xml130_validate import BARE_MA_LK, bare_copy, second_visit

    folder = bare_copy(tmp_path / "batch")
    other = second_visit(folder, break_xml2=True)
    ingest = Xml130Ingest(engine)
    report = ingest.ingest_paths(files_of(folder))
    assert report.refused_files == [] and report.files == 6
    assert (report.visits_created, report.visits_rejected) == (1, 1)
    assert [(p.ma_lk, p.table, p.rule, p.file) for p in report.problems] == [
        (other, "XML2", "broken", f"{folder}/{other}_XML2.xml")
    ]
    for ma_lk, stored in ((BARE_MA_LK, 1), (other, 0)):
        found = find(engine.store, "Encounter", identifier=f"{visit_system('01012')}|{ma_lk}")
        assert len(found) == stored
    assert len(find(engine.store, "MedicationRequest")) == 3  # the first visit's only


def test_bare_groups_are_prepared_in_worker_processes(tmp_path: Path, engine: FhirEngine) -> None:
    from tests.test_xml130_validate import bare_copy, second_visit

    bare_copy(tmp_path / "a")
    second_visit(bare_copy(tmp_path / "b"), break_xml2=False)
    ingest = Xml130Ingest(engine)
    report = ingest.ingest_paths(files_of(tmp_path), workers=2)
    assert report.problems == [] and report.files == 10
    # a/ and b/ hold the same first visit: written once, then updated
    assert (report.visits_created, report.visits_updated, report.visits_rejected) == (2, 1, 0)
    assert len(find(engine.store, "Encounter")) == 2


def test_cli_ingests_a_folder_of_bare_tables_as_one_export(tmp_path: Path) -> None:
    from tests.test_xml130_validate import FIXTURES

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    result = CliRunner().invoke(
        app, ["xml130", "ingest", str(FIXTURES), "--database", url, "--workers", "0"]
    )
    assert result.exit_code == 0, result.stderr
    summary = " ".join(result.stdout.split())
    assert "5 files: 1 visits written, 0 updated (1 of them with conformance problems)" in summary
    assert "money.total" not in result.stderr and "link" not in result.stderr
    assert f"{FIXTURES}/XML2.xml {'01012.2508.0001234'}: [conformance, stored]" in result.stderr


# -- the check-in message (XML0): a visit that has begun ---------------------------------


def _full_visit_130(exports: Path) -> Visit:
    return next(v for v in visits_of(exports) if v.standard == "130" and v.rows("XML2"))


def test_a_check_in_then_its_full_visit_then_the_check_in_again(
    exports: Path, engine: FhirEngine
) -> None:
    """Admission: Patient and an in-progress Encounter. The full visit: the same Encounter
    finished, with its parts, one Patient. The check-in re-sent: nothing rolled back."""
    from lienthong.ingest.xml130.to_fhir import CHECKIN_TAG, patient_system
    from lienthong.synth.xml130 import table_xml
    from tests.test_xml130_validate import checkin_row

    full = _full_visit_130(exports)
    fac, store = full.ma_cskcb, engine.store
    by_visit = {"identifier": f"{visit_system(fac)}|{full.ma_lk}"}
    by_patient = {"identifier": f"{patient_system(fac)}|{full.summary['MA_BN']}"}
    checkin = table_xml("XML0", [checkin_row(full)])

    first = Xml130Ingest(engine)
    first.ingest(checkin, name="XML0.xml")
    report = first.report
    assert report.problems == [] and report.stored_problems == []
    assert (report.visits_created, report.visits_updated, report.visits_rejected) == (1, 0, 0)
    assert report.resources == {"Organization": 1, "Patient": 1, "Encounter": 1}
    begun = one(store, "Encounter", **by_visit)
    assert begun["status"] == "in-progress" and begun["meta"]["tag"][0]["code"] == "check-in"
    assert begun["period"] == {"start": local_datetime(full.summary["NGAY_VAO"])}
    tagged = find(store, "Encounter", _tag=f"{CHECKIN_TAG['system']}|check-in")
    assert [e["id"] for e in tagged] == [begun["id"]]
    patient = one(store, "Patient", **by_patient)
    assert begun["subject"]["reference"] == f"Patient/{patient['id']}"

    second = Xml130Ingest(engine)
    second.ingest(envelope_xml(fac, date(2025, 1, 1), [full.tables]), name="full.xml")
    assert second.report.problems == [] and second.report.visits_updated == 1
    done = one(store, "Encounter", **by_visit)
    assert done["id"] == begun["id"] and done["status"] == "finished"
    assert "tag" not in done.get("meta", {})
    assert find(store, "Encounter", _tag=f"{CHECKIN_TAG['system']}|check-in") == []
    assert one(store, "Patient", **by_patient)["id"] == patient["id"]  # one Patient
    drugs = find(store, "MedicationRequest", encounter=f"Encounter/{done['id']}")
    assert len(drugs) == len(full.rows("XML2"))
    claim = one(store, "Claim", _id=record_id(fac, full.ma_lk, "claim"))
    assert claim["item"][0]["encounter"] == [{"reference": f"Encounter/{done['id']}"}]
    counts = store.counts()

    third = Xml130Ingest(engine)
    third.ingest(checkin, name="XML0.xml")
    assert third.report.problems == [] and third.report.checkins_superseded == 1
    assert (third.report.visits_created, third.report.visits_updated) == (0, 0)
    assert "1 check-ins left out" in third.report.summary()
    again = one(store, "Encounter", **by_visit)
    assert again == done  # still finished, not even a new version
    assert store.counts() == counts
    assert len(find(store, "MedicationRequest", encounter=f"Encounter/{done['id']}")) == len(drugs)


def test_a_re_sent_check_in_updates_the_visit_it_began(exports: Path, engine: FhirEngine) -> None:
    """Before the full visit a check-in is the newest word: sent again corrected (here
    without a first service, a conformance problem), it updates the Encounter and carries
    its problems; the clean full visit then drops them."""
    from lienthong.synth.xml130 import table_xml
    from tests.test_xml130_validate import checkin_row

    full = _full_visit_130(exports)
    fac = full.ma_cskcb
    by_visit = {"identifier": f"{visit_system(fac)}|{full.ma_lk}"}
    row = checkin_row(full)
    Xml130Ingest(engine).ingest(table_xml("XML0", [row]), name="XML0.xml")
    row.update(MA_DICH_VU="", TEN_DICH_VU="", MA_LOAI_KCB="04")
    ingest = Xml130Ingest(engine)
    ingest.ingest(table_xml("XML0", [row]), name="XML0.xml")
    assert ingest.report.visits_updated == 1 and ingest.report.visits_nonconformant == 1
    assert {p.rule for p in ingest.report.stored_problems} == {"conditional"}
    encounter = one(engine.store, "Encounter", **by_visit)
    assert encounter["status"] == "in-progress" and encounter["class"]["code"] == "SS"
    assert {t["code"] for t in encounter["meta"]["tag"]} == {"check-in", "nonconformant"}
    assert len(find(engine.store, "OperationOutcome")) == 1
    Xml130Ingest(engine).ingest(envelope_xml(fac, date(2025, 1, 1), [full.tables]))
    encounter = one(engine.store, "Encounter", **by_visit)
    assert encounter["status"] == "finished" and "tag" not in encounter.get("meta", {})
    assert find(engine.store, "OperationOutcome") == []


def test_a_check_in_without_a_name_is_refused(exports: Path, engine: FhirEngine) -> None:
    from lienthong.synth.xml130 import table_xml
    from tests.test_xml130_validate import checkin_row

    row = {**checkin_row(_full_visit_130(exports)), "HO_TEN": ""}
    ingest = Xml130Ingest(engine)
    ingest.ingest(table_xml("XML0", [row]), name="XML0.xml")
    assert ingest.report.visits_rejected == 1 and ingest.report.visits_written == 0
    assert {(p.table, p.field, p.rule) for p in ingest.report.problems} == {
        ("XML0", "HO_TEN", "required")
    }
    assert engine.store.counts().get("Encounter", 0) == 0


def test_the_check_in_fixture_is_stored_with_its_problems(engine: FhirEngine) -> None:
    """A HIS's bare check-in file: both visits stored in progress, with the fields they
    left out noted, none refused."""
    fixture = Path(__file__).resolve().parent / "fixtures" / "xml130" / "bare_checkin_xml0.xml"
    ingest = Xml130Ingest(engine)
    ingest.ingest(fixture)
    report = ingest.report
    assert report.problems == [] and report.visits_rejected == 0
    assert report.visits_created == report.visits_nonconformant == 2
    encounters = find(engine.store, "Encounter")
    assert {e["status"] for e in encounters} == {"in-progress"}
    assert {e["identifier"][0]["value"] for e in encounters} == {
        "01012260203000201",
        "01012260203000202",
    }
    assert all(e["serviceProvider"]["reference"].startswith("Organization/") for e in encounters)
