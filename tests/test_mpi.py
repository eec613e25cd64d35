"""The master person index through the FHIR API: resolution on every door, $match,
$merge/$unmerge, review decisions, rollback, access; and pair scoring against Splink."""

from __future__ import annotations

import csv
import getpass
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lienthong.access.audit import AuditLog
from lienthong.access.auth import TokenIssuer, UserDirectory
from lienthong.cli import app as cli_app
from lienthong.identity.scoring import (
    CCCD_SYSTEM,
    DEFAULT_MODEL_PATH,
    PairScorer,
    patient_features,
    patient_from_record,
    record_features,
)
from lienthong.server.app import create_app
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore
from tests.conftest import BASE_URL
from tests.factories import SYNTH_DAY
from tests.live_server import live_server

MASTER = "http://fhir.lienthong.vn/mpi|master"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
HCM, TAN_AN_HOI, THU_DAU_MOT, PHU_LOI = "79", "27496", "25747", "25750"
FHIR = {"Content-Type": "application/fhir+json"}
runner = CliRunner()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lienthong.synth import generate

    out = tmp_path_factory.mktemp("mpi-pop")
    generate(1500, 23, out, today=SYNTH_DAY)
    return out


@pytest.fixture(scope="session")
def model_path(population: Path) -> Path:
    """The shipped linkage model; trained here on a generated population if absent."""
    if DEFAULT_MODEL_PATH.exists():
        return DEFAULT_MODEL_PATH
    from lienthong.identity.linkage import train

    path = population / "model.json"
    train(str(population / "records.csv")).save_model(path)
    return path


@pytest.fixture
def mpi_settings(store_url: str, model_path: Path) -> Settings:
    return Settings.from_env({}).model_copy(
        update={
            "database_url": store_url,
            "base_url": BASE_URL,
            "auth": "off",
            "mpi": True,
            "mpi_model": str(model_path),
        }
    )


@pytest.fixture
def api(store: ResourceStore, mpi_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(mpi_settings, store=store)) as c:
        yield c


def rec(name: str, birth: str, sex: str, **kw: str) -> dict[str, Any]:
    """A Patient as a source would send it (its own spelling, codes of its time)."""
    row = {"full_name": name, "birth_date": birth, "sex": sex, "province_code": HCM}
    row["commune_code"] = kw.pop("commune", TAN_AN_HOI)
    row.update(kw)
    return patient_from_record(row)


def post(api: TestClient, resource: dict[str, Any]) -> str:
    r = api.post("/fhir/Patient", json=resource, headers=FHIR)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def masters(api: TestClient) -> list[dict[str, Any]]:
    r = api.get("/fhir/Patient", params={"_tag": MASTER, "_count": "100"})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def links(master: dict[str, Any], kind: str = "seealso") -> set[str]:
    return {
        link["other"]["reference"].removeprefix("Patient/")
        for link in master.get("link", [])
        if link["type"] == kind
    }


def person_of(api: TestClient, pid: str) -> dict[str, Any]:
    found = [m for m in masters(api) if pid in links(m)]
    assert len(found) == 1, f"Patient/{pid} is under {len(found)} masters"
    return found[0]


def cccd_of(master: dict[str, Any]) -> str | None:
    values = [i["value"] for i in master.get("identifier", []) if i["system"] == CCCD_SYSTEM]
    return values[0] if values else None


def params(*items: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(items)}


def ref(name: str, pid: str) -> dict[str, Any]:
    return {"name": name, "valueReference": {"reference": f"Patient/{pid}"}}


# --------------------------------------------------------------------------- scoring


def test_pair_scores_equal_splink_for_every_blocked_pair(
    population: Path, model_path: Path
) -> None:
    from lienthong.identity.linkage import LinkageModel, _linker, prepare

    table = prepare(str(population / "records.csv"))
    rows = {r["record_id"]: r for r in table.to_pylist()}
    model = LinkageModel.load(model_path)
    settings = model.for_records(len(rows)) if hasattr(model, "for_records") else model.settings
    families = [r["family_key"] for r in rows.values() if r["family_key"]]
    tf = {k: n / len(families) for k, n in Counter(families).items()}
    scorer = PairScorer(settings, {"family_key": tf})
    predictions = (
        _linker(table, settings)
        .inference.predict(warning_mode="never")
        .as_duckdbpyrelation()
        .select("record_id_l, record_id_r, match_probability")
        .fetchall()
    )
    assert len(predictions) > 1000
    worst = max(abs(scorer.score(rows[a], rows[b]).probability - p) for a, b, p in predictions)
    assert worst < 1e-6
    # some pairs on each side of the match threshold, so the check means something
    assert {p >= 0.95 for _, _, p in predictions} == {True, False}


def test_features_of_a_patient_equal_the_linker_features(population: Path) -> None:
    from lienthong.identity.linkage import prepare

    with (population / "records.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))[:1500]
    expected = {r["record_id"]: r for r in prepare(rows).to_pylist()}
    for row in rows:
        direct = record_features(row)
        via_fhir = patient_features(patient_from_record(row))
        for col, value in expected[row["record_id"]].items():
            if col != "source":
                assert direct[col] == value, (row["record_id"], col)
                assert via_fhir[col] == value, (row["record_id"], col)


def test_a_model_with_other_comparisons_is_refused(model_path: Path) -> None:
    settings = orjson.loads(model_path.read_bytes())
    settings["comparisons"][0]["comparison_levels"].pop()
    with pytest.raises(ValueError, match="given_key"):
        PairScorer(settings)


# --------------------------------------------------------------------------- every door


NHUNG_CCCD = "079192004321"  # HCM, woman born in the 1900s, year 92


def test_one_person_through_rest_transaction_and_import(
    api: TestClient, tmp_path: Path, store_url: str, model_path: Path
) -> None:
    rest_id = post(
        api,
        rec("Phạm Thị Hồng Nhung", "1992-11-23", "F", cccd=NHUNG_CCCD, phone="0987654321"),
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f1c2b1e-8a7e-4c55-9d3a-0d2b7c9e1f01",
                "resource": rec("PHAM THI HONG NHUNG", "23/11/1992", "2", phone="+84 987 654 321"),
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    r = api.post("/fhir", json=bundle, headers=FHIR)
    assert r.status_code == 200, r.text
    tx_id = r.json()["entry"][0]["response"]["location"].split("/")[1]
    imported = {**rec("Pham Thi Hong Nhung", "1992", "Nữ", cccd=NHUNG_CCCD), "id": "imp-nhung"}
    other = {**rec("Lê Văn Tám", "1960-01-01", "M", commune=PHU_LOI), "id": "imp-tam"}
    path = tmp_path / "people.ndjson"
    path.write_bytes(orjson.dumps(imported) + b"\n" + orjson.dumps(other) + b"\n")
    env = {"LIENTHONG_MPI": "true", "LIENTHONG_MPI_MODEL": str(model_path)}
    result = runner.invoke(cli_app, ["import", str(path), "--database", store_url], env=env)
    assert result.exit_code == 0, result.stdout + result.stderr

    nhung = person_of(api, rest_id)
    assert links(nhung) == {rest_id, tx_id, "imp-nhung"}
    assert cccd_of(nhung) == NHUNG_CCCD
    assert nhung["birthDate"] == "1992-11-23"  # the most complete record speaks for it
    assert links(person_of(api, "imp-tam")) == {"imp-tam"}
    # ordinary searches list the four records, not the two persons
    r = api.get("/fhir/Patient", params={"_count": "50"})
    assert r.json()["total"] == 4
    assert all("meta" not in e["resource"] or "tag" not in e["resource"]["meta"]
               for e in r.json()["entry"])  # fmt: skip
    # a conditional create by CCCD finds the source record, not its master
    r = api.post(
        "/fhir/Patient",
        json=rec("Phạm Thị Hồng Nhung", "1992-11-23", "F", cccd=NHUNG_CCCD),
        headers={**FHIR, "If-None-Exist": f"identifier={CCCD_SYSTEM}|{NHUNG_CCCD}"},
    )
    assert r.status_code == 412  # two source records carry it; the master is not counted


def test_twins_namesakes_and_a_child_on_the_mothers_cccd_stay_apart(api: TestClient) -> None:
    bao = post(api, rec("Hoàng Gia Bảo", "2019-04-12", "M", phone="0912000111"))
    bao2 = post(api, rec("HOANG GIA BAO", "12/04/2019", "Nam", phone="+84 912 000 111"))
    huy = post(api, rec("Hoàng Gia Huy", "2019-04-12", "M", phone="0912000111"))
    an1 = post(api, rec("Nguyễn Văn An", "1985-03-02", "M", phone="0903111222",
                        commune=THU_DAU_MOT))  # fmt: skip
    an2 = post(api, rec("Nguyễn Văn An", "1985-07-19", "M", phone="0903999888", commune=PHU_LOI))
    mother_cccd = "079190123456"  # HCM, woman born in 1990
    mother = post(api, rec("Trần Thị Lan", "1990-02-14", "F", cccd=mother_cccd,
                           phone="0933444555"))  # fmt: skip
    child = post(api, rec("Lê Minh Khôi", "2015-06-01", "M", cccd=mother_cccd,
                          phone="0933444555"))  # fmt: skip

    assert links(person_of(api, bao)) == {bao, bao2}
    assert links(person_of(api, huy)) == {huy}
    assert links(person_of(api, an1)) == {an1}
    assert links(person_of(api, an2)) == {an2}
    assert links(person_of(api, mother)) == {mother}
    assert links(person_of(api, child)) == {child}
    assert cccd_of(person_of(api, mother)) == mother_cccd
    assert cccd_of(person_of(api, child)) is None  # never the mother's number
    assert len(masters(api)) == 6


def test_borrowed_numbers_and_chains_do_not_join_two_people(api: TestClient) -> None:
    """A namesake carrying another's CCCD, a twin's CCCD, a father's BHXH: the number
    alone joins nobody when the name or the birth date says otherwise; and a record is
    not attached to a person holding a record whose birth date no known error turns into
    its own, however well it matches another of that person's records."""
    hung_cccd = "079085004711"  # HCM, man born in 1985
    hung = post(api, rec("Lê Văn Hùng", "1985-06-10", "M", cccd=hung_cccd, phone="0901222333"))
    namesake = post(api, rec("Lê Văn Hùng", "1985-11-23", "M", cccd=hung_cccd))
    twin_cccd = "079219000123"  # HCM, boy born in 2019
    bao = post(api, rec("Hoàng Gia Bảo", "2019-04-12", "M", cccd=twin_cccd, phone="0912000111"))
    huy = post(api, rec("Hoàng Gia Huy", "2019-04-12", "M", cccd=twin_cccd, phone="0912000111"))
    father = post(api, rec("Đinh Văn Quý", "1970-01-30", "M", bhxh="7912340001"))
    son = post(api, rec("Đinh Văn Tùng", "2012-09-09", "M", bhxh="7912340001"))
    assert links(person_of(api, hung)) == {hung}
    assert links(person_of(api, namesake)) == {namesake}
    assert links(person_of(api, bao)) == {bao}
    assert links(person_of(api, huy)) == {huy}
    assert links(person_of(api, father)) == {father}
    assert links(person_of(api, son)) == {son}
    assert cccd_of(person_of(api, hung)) == hung_cccd

    # the chain: the year-only record agrees with both dates, which conflict
    hai = post(api, rec("Nguyen Van Hai", "1990", "M", phone="0966123123"))
    hai_march = post(api, rec("Nguyễn Văn Hải", "1990-03-05", "M", phone="0966123123"))
    assert links(person_of(api, hai)) == {hai, hai_march}
    hai_august = post(api, rec("Nguyễn Văn Hải", "1990-08-17", "M", phone="0966123123"))
    assert links(person_of(api, hai_august)) == {hai_august}
    r = api.post(
        "/fhir/Patient/$match",
        json=params({"name": "resource", "resource": rec("Nguyễn Văn Hải", "1990-08-17", "M",
                                                          phone="0966123123")}),
        headers=FHIR,
    )  # fmt: skip
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [person_of(api, hai_august)["id"]]


def test_keying_errors_still_join_one_person(api: TestClient) -> None:
    """Telex typed with the input method off, two CCCD digits swapped, a year-only birth
    date, the birth year off by one: each joins its person."""
    lan = post(api, rec("Trần Thị Lan", "21/07/1988", "Nữ", commune=PHU_LOI))
    lan_telex = post(api, rec("Traanf Thij Lan", "1988-07-21", "F", commune=PHU_LOI))
    son = post(api, rec("Trịnh Công Sơn", "1979-02-28", "M", cccd="079079123456"))
    son_swapped = post(api, rec("Trinh Cong Son", "1979", "Nam", cccd="079079124356",
                                commune=PHU_LOI))  # fmt: skip
    lua = post(api, rec("Đỗ Thị Lụa", "14/02/1948", "F", phone="0388444555"))
    lua_year = post(api, rec("Do Thi Lua", "1948", "Nữ", phone="0388 444 555"))
    tam = post(api, rec("Phan Văn Tám", "1962-05-17", "M", phone="0987654321",
                        cccd="079062000321"))  # fmt: skip
    tam_slip = post(api, rec("Phan Van Tam", "17/05/1963", "Nam", phone="0987654321"))
    assert links(person_of(api, lan)) == {lan, lan_telex}
    assert links(person_of(api, son)) == {son, son_swapped}
    assert cccd_of(person_of(api, son)) is None  # the records disagree on the number
    assert links(person_of(api, lua)) == {lua, lua_year}
    assert links(person_of(api, tam)) == {tam, tam_slip}


def test_update_moves_a_record_and_delete_removes_it(api: TestClient) -> None:
    a = post(api, rec("Võ Thị Hạnh", "1970-08-09", "F", phone="0911222333"))
    b = post(api, rec("Đỗ Văn Long", "1950-01-30", "M", phone="0977888999"))
    first = person_of(api, b)["id"]
    # b was mistyped: it is Hạnh after all
    fixed = {**rec("Vo Thi Hanh", "09/08/1970", "F", phone="0911222333"), "id": b}
    r = api.put(f"/fhir/Patient/{b}", json=fixed, headers=FHIR)
    assert r.status_code == 200, r.text
    assert links(person_of(api, a)) == {a, b}
    assert api.get(f"/fhir/Patient/{first}").status_code == 410  # its empty person went
    assert api.delete(f"/fhir/Patient/{b}").status_code in (200, 204)
    assert links(person_of(api, a)) == {a}


def test_a_person_keeps_its_master_through_updates(api: TestClient) -> None:
    a = post(api, rec("Tạ Văn Quang", "1962-12-12", "M"))
    master = person_of(api, a)["id"]
    for birth in ("1962-12-12", "1963-01-01"):  # re-sent, then corrected
        r = api.put(f"/fhir/Patient/{a}", json={**rec("Tạ Văn Quang", birth, "M"), "id": a},
                    headers=FHIR)  # fmt: skip
        assert r.status_code == 200
        assert person_of(api, a)["id"] == master
    assert person_of(api, a)["birthDate"] == "1963-01-01"  # the master follows its record
    assert len(masters(api)) == 1


def test_masters_are_the_index_s_own(api: TestClient) -> None:
    a = post(api, rec("Bùi Thị Thu", "1999-09-09", "F"))
    master = person_of(api, a)
    r = api.put(f"/fhir/Patient/{master['id']}", json={**master, "active": False}, headers=FHIR)
    assert r.status_code == 422 and "person index" in r.text
    forged = rec("Bùi Thị Thu", "1999-09-09", "F")
    forged["meta"] = {"tag": [{"system": "http://fhir.lienthong.vn/mpi", "code": "master"}]}
    r = api.post("/fhir/Patient", json=forged, headers=FHIR)
    assert r.status_code == 422
    assert len(masters(api)) == 1
    # nor deleted, so that its id cannot be taken over by a client's record afterwards
    r = api.delete(f"/fhir/Patient/{master['id']}")
    assert r.status_code == 422 and "person index" in r.text
    assert api.get(f"/fhir/Patient/{master['id']}").status_code == 200
    plain = {**rec("Bùi Thị Thu", "1999-09-09", "F"), "id": master["id"]}
    assert api.put(f"/fhir/Patient/{master['id']}", json=plain, headers=FHIR).status_code == 422
    assert person_of(api, a)["id"] == master["id"]


def test_searches_in_bundles_leave_masters_out_as_ordinary_searches_do(
    api: TestClient,
) -> None:
    a = post(api, rec("Đinh Văn Khoa", "1980-02-03", "M"))
    master = person_of(api, a)
    plain = api.get("/fhir/Patient", params={"birthdate": "1980-02-03"}).json()
    assert [e["resource"]["id"] for e in plain["entry"]] == [a]
    for kind in ("batch", "transaction"):
        bundle = {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [
                {"request": {"method": "GET", "url": "Patient?birthdate=1980-02-03"}},
                {
                    "request": {
                        "method": "GET",
                        "url": "Patient?_tag=http://fhir.lienthong.vn/mpi|master",
                    }
                },
            ],
        }
        r = api.post("/fhir", json=bundle, headers=FHIR)
        assert r.status_code == 200, r.text
        ordinary, tagged = (e["resource"] for e in r.json()["entry"])
        assert [e["resource"]["id"] for e in ordinary["entry"]] == [a], kind
        assert [e["resource"]["id"] for e in tagged["entry"]] == [master["id"]], kind


def test_a_failing_bundle_leaves_no_person_behind(api: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": rec("Ngô Văn Hải", "1980-10-10", "M"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                # fails only when it runs, after the Patient was written and resolved
                "resource": {
                    "resourceType": "Observation",
                    "id": "nope",
                    "status": "final",
                    "code": {"text": "Nhịp tim"},
                },
                "request": {"method": "PUT", "url": "Observation/nope", "ifMatch": 'W/"3"'},
            },
        ],
    }
    r = api.post("/fhir", json=bundle, headers=FHIR)
    assert r.status_code == 412 and "Bundle.entry[1]" in r.text
    assert masters(api) == []
    r = api.get("/fhir/Patient", params={"_tag": MASTER, "_total": "accurate"})
    assert r.json()["total"] == 0
    # and the index tables rolled back with it: a new record is alone, not matched to a ghost
    pid = post(api, rec("Ngô Văn Hải", "1980-10-10", "M"))
    assert links(person_of(api, pid)) == {pid}


# --------------------------------------------------------------------------- $match


def test_match_scores_and_grades(api: TestClient) -> None:
    hoa = post(api, rec("Đặng Thị Hoà", "1975-12-01", "F", cccd="079175000111",
                        phone="0909090909"))  # fmt: skip
    # a namesake: no known error turns 1 December into 30 April, so never a candidate
    post(api, rec("Đặng Thị Hoà", "1975-04-30", "F"))
    # the birth year off by one, in another commune: a candidate, not a certain one
    near = post(api, rec("Đặng Thị Hoà", "1976-12-01", "F", commune=PHU_LOI))
    post(api, rec("Lý Văn Phúc", "1940-05-05", "M"))
    query = rec("DANG THI HOA", "01/12/1975", "F", phone="0909 090 909")
    r = api.post(
        "/fhir/Patient/$match",
        json=params({"name": "resource", "resource": query}, {"name": "count", "valueInteger": 5}),
        headers=FHIR,
    )
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset"
    entries = bundle["entry"]
    top = entries[0]
    assert top["resource"]["id"] == person_of(api, hoa)["id"]
    assert top["search"]["score"] >= 0.95
    grades = [e["search"]["extension"][0] for e in entries]
    assert grades[0] == {"url": MATCH_GRADE, "valueCode": "certain"}
    scores = [e["search"]["score"] for e in entries]
    assert scores == sorted(scores, reverse=True)
    assert all(g["valueCode"] in ("certain", "probable", "possible") for g in grades)
    assert len(entries) == 2  # Phúc shares no blocking key and is not a candidate
    assert entries[1]["resource"]["id"] == person_of(api, near)["id"]
    assert entries[1]["search"]["extension"][0]["valueCode"] != "certain"

    r = api.post(
        "/fhir/Patient/$match",
        json=params(
            {"name": "resource", "resource": query},
            {"name": "onlyCertainMatches", "valueBoolean": True},
        ),
        headers=FHIR,
    )
    assert [e["search"]["extension"][0]["valueCode"] for e in r.json()["entry"]] == ["certain"]
    r = api.post(
        "/fhir/Patient/$match",
        json=params({"name": "resource", "resource": query}, {"name": "count", "valueInteger": 1}),
        headers=FHIR,
    )
    assert len(r.json()["entry"]) == 1

    bad = api.post("/fhir/Patient/$match", json=params(), headers=FHIR)
    assert bad.status_code == 400 and "Parameters.resource" in bad.text
    wrong = {**query, "birthDate": "1975-13-01"}
    bad = api.post(
        "/fhir/Patient/$match", json=params({"name": "resource", "resource": wrong}), headers=FHIR
    )
    assert bad.status_code == 422 and "birthDate" in bad.text


# --------------------------------------------------------------------------- merge, unmerge


def test_merge_then_unmerge_restores(api: TestClient) -> None:
    a = post(api, rec("Huỳnh Văn Nam", "1966-06-06", "M", cccd="079066000777"))
    b = post(api, rec("Huynh Nam", "1967", "M", commune=PHU_LOI))
    ma, mb = person_of(api, a), person_of(api, b)
    assert ma["id"] != mb["id"]
    r = api.post("/fhir/Patient/$merge", json=params(ref("source-patient", b),
                 ref("target-patient", a)), headers=FHIR)  # fmt: skip
    assert r.status_code == 200, r.text
    out = {p["name"]: p for p in r.json()["parameter"]}
    event = out["event"]["valueString"]
    assert links(out["result"]["resource"]) == {a, b}
    retired = api.get(f"/fhir/Patient/{mb['id']}").json()
    assert retired["active"] is False and links(retired, "replaced-by") == {ma["id"]}
    assert links(person_of(api, b)) == {a, b}
    # every version kept
    history = api.get(f"/fhir/Patient/{mb['id']}/_history").json()
    assert history["total"] == 2

    r = api.post("/fhir/Patient/$unmerge", json=params({"name": "event", "valueString": event}),
                 headers=FHIR)  # fmt: skip
    assert r.status_code == 200, r.text
    restored = api.get(f"/fhir/Patient/{mb['id']}").json()
    assert restored["active"] is True and links(restored) == {b}
    assert links(api.get(f"/fhir/Patient/{ma['id']}").json()) == {a}
    assert cccd_of(api.get(f"/fhir/Patient/{ma['id']}").json()) == "079066000777"
    # the unmerge sticks: re-sending b does not bring it back to a
    r = api.put(f"/fhir/Patient/{b}", json={**rec("Huỳnh Văn Nam", "1966-06-06", "M",
                cccd="079066000777"), "id": b}, headers=FHIR)  # fmt: skip
    assert r.status_code == 200
    assert person_of(api, b)["id"] != person_of(api, a)["id"]

    # an unknown event and a wrong reference are clear errors
    r = api.post("/fhir/Patient/$unmerge", json=params({"name": "event", "valueString": "nope"}),
                 headers=FHIR)  # fmt: skip
    assert r.status_code == 404
    r = api.post("/fhir/Patient/$merge", json=params(ref("source-patient", b),
                 {"name": "target-patient", "valueReference": {"reference": "Observation/1"}}),
                 headers=FHIR)  # fmt: skip
    assert r.status_code == 400 and "target-patient" in r.text


def test_split_one_record_out(api: TestClient) -> None:
    a = post(api, rec("Trịnh Thị Yến", "1988-03-03", "F", phone="0966777888"))
    b = post(api, rec("Trinh Thi Yen", "03/03/1988", "F", phone="0966777888"))
    assert links(person_of(api, a)) == {a, b}
    r = api.post("/fhir/Patient/$unmerge", json=params(ref("patient", b)), headers=FHIR)
    assert r.status_code == 200, r.text
    assert links(person_of(api, a)) == {a}
    assert links(person_of(api, b)) == {b}


def test_a_no_match_outweighs_a_match_with_another_record_of_the_person(
    api: TestClient, store_url: str, model_path: Path
) -> None:
    a = post(api, rec("Nguyễn Văn An", "1980-03-04", "M", cccd="079080001234"))
    c = post(api, rec("Nguyen Van An", "1980-03-04", "M", cccd="079080001234"))
    b = post(api, rec("Phạm Thị Bình", "1955-07-08", "F"))
    r = api.post("/fhir/Patient/$merge", json=params(ref("source-patient", b),
                 ref("target-patient", a)), headers=FHIR)  # fmt: skip
    assert r.status_code == 200, r.text
    assert links(person_of(api, a)) == {a, b, c}
    # the merge recorded "match" with each record of the person; a reviewer then says b
    # is not the person of one of them
    other = c
    code, out = cli("decide", f"{other}:{b}", "no-match", store_url=store_url,
                    model_path=model_path)  # fmt: skip
    assert code == 0, out
    assert links(person_of(api, b)) == {b}
    assert links(person_of(api, a)) == {a, c}


def test_a_merge_holds_when_one_record_of_the_target_is_split_out(api: TestClient) -> None:
    k0 = post(api, rec("Nguyễn Văn An", "1980-03-04", "M", cccd="079080001234"))
    k1 = post(api, rec("Nguyen Van An", "1980-03-04", "M", cccd="079080001234"))
    # not certain on its own: another commune, the middle name cut short, day and month
    # swapped
    x = post(api, rec("Nguyễn V. Ân", "1980-04-03", "M", commune=THU_DAU_MOT))
    assert x not in links(person_of(api, k0))
    r = api.post("/fhir/Patient/$merge", json=params(ref("source-patient", x),
                 ref("target-patient", k0)), headers=FHIR)  # fmt: skip
    assert r.status_code == 200, r.text
    for split in (k0, k1):  # whichever record of the target the merge is anchored on
        rest = k1 if split == k0 else k0
        r = api.post("/fhir/Patient/$unmerge", json=params(ref("patient", split)), headers=FHIR)
        assert r.status_code == 200, r.text
        assert links(person_of(api, rest)) == {rest, x}
        # an ordinary update re-resolves x: the administrator's merge still holds
        px = api.get(f"/fhir/Patient/{x}").json()
        px["telecom"] = [{"system": "email", "value": "x@example.vn"}]
        assert api.put(f"/fhir/Patient/{x}", json=px, headers=FHIR).status_code == 200
        assert links(person_of(api, rest)) == {rest, x}
        # put the split record back for the other round
        r = api.post("/fhir/Patient/$merge", json=params(ref("source-patient", split),
                     ref("target-patient", rest)), headers=FHIR)  # fmt: skip
        assert r.status_code == 200, r.text


def test_everything_on_a_master_spans_its_records(api: TestClient) -> None:
    a = post(api, rec("Lương Văn Tài", "1955-02-02", "M", phone="0944555666"))
    b = post(api, rec("LUONG VAN TAI", "02/02/1955", "M", phone="0944555666"))
    for pid in (a, b):
        obs = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "Nhịp tim"},
            "subject": {"reference": f"Patient/{pid}"},
        }
        assert api.post("/fhir/Observation", json=obs, headers=FHIR).status_code == 201
    master = person_of(api, a)
    r = api.get(f"/fhir/Patient/{master['id']}/$everything")
    assert r.status_code == 200
    found = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in r.json()["entry"]}
    assert {("Patient", a), ("Patient", b), ("Patient", master["id"])} <= found
    assert sum(t == "Observation" for t, _ in found) == 2
    # a source record's $everything is its own and does not drag the master in
    r = api.get(f"/fhir/Patient/{a}/$everything")
    ids = {e["resource"]["id"] for e in r.json()["entry"]}
    assert master["id"] not in ids and b not in ids


# --------------------------------------------------------------------------- review


def cli(*args: str, store_url: str, model_path: Path) -> tuple[int, str]:
    env = {"LIENTHONG_MPI_MODEL": str(model_path)}
    result = runner.invoke(cli_app, ["mpi", *args, "--database", store_url], env=env)
    return result.exit_code, result.stdout + result.stderr


def test_review_decisions_stick(api: TestClient, store_url: str, model_path: Path) -> None:
    # same name and birth year, one date only to the year, another commune: uncertain
    a = post(api, rec("Trần Thị Mai", "1990-05-17", "F"))
    b = post(api, rec("Trần Thị Mai", "1990", "F", commune=THU_DAU_MOT))
    assert person_of(api, a)["id"] != person_of(api, b)["id"]
    code, out = cli("review", store_url=store_url, model_path=model_path)
    assert code == 0, out
    pair = ":".join(sorted((a, b)))
    assert pair in out and "given_key" in out and "place" in out
    code, out = cli("stats", store_url=store_url, model_path=model_path)
    assert "records: 2" in out and "persons: 2" in out and "pending reviews: 1" in out

    code, out = cli("decide", pair, "match", store_url=store_url, model_path=model_path)
    assert code == 0, out
    assert links(person_of(api, a)) == {a, b}
    # re-sent later, b stays with a although its score alone would not link it
    r = api.put(f"/fhir/Patient/{b}", json={**rec("Trần Thị Mai", "1990", "F",
                commune=THU_DAU_MOT), "id": b}, headers=FHIR)  # fmt: skip
    assert r.status_code == 200
    assert links(person_of(api, a)) == {a, b}

    c = post(api, rec("Tran Thi Mai", "17/05/1990", "F"))  # certain on its own with a
    assert links(person_of(api, a)) == {a, b, c}
    code, out = cli("decide", f"{a}:{c}", "no-match", store_url=store_url, model_path=model_path)
    assert code == 0, out
    assert c not in links(person_of(api, a))
    code, out = cli("rebuild", store_url=store_url, model_path=model_path)
    assert code == 0, out
    assert "3 records resolved to 2 persons" in out
    assert links(person_of(api, a)) == {a, b}
    assert links(person_of(api, c)) == {c}
    # persons keep their master ids through a rebuild (citizens and consents name them)
    before = {pid: person_of(api, pid)["id"] for pid in (a, c)}
    code, out = cli("rebuild", store_url=store_url, model_path=model_path)
    assert code == 0, out
    assert "(0 earlier masters deleted)" in out
    assert {pid: person_of(api, pid)["id"] for pid in (a, c)} == before
    assert links(person_of(api, a)) == {a, b} and links(person_of(api, c)) == {c}
    code, out = cli("events", store_url=store_url, model_path=model_path)
    assert out.count(" decide ") == 2 and " merge " in out

    code, out = cli("decide", f"{a}:nobody", "match", store_url=store_url, model_path=model_path)
    assert code == 1 and "nobody" in out
    # every command-line change of persons is in the audit trail, the refused one too
    log = AuditLog(store_url)
    try:
        entries = [r.entry for r in log.search(user=f"cli:{getpass.getuser()}", count=100)[0]]
    finally:
        log.close()
    assert [(e.action, e.outcome) for e in reversed(entries)] == [
        ("mpi-decide", "success"),
        ("mpi-decide", "success"),
        ("mpi-rebuild", "success"),
        ("mpi-rebuild", "success"),
        ("mpi-decide", "error"),
    ]
    assert pair in entries[-1].detail and "nobody" in entries[0].detail
    code, out = cli("decide", "no-colon", "match", store_url=store_url, model_path=model_path)
    assert code == 2 and "ID:ID" in out


def test_a_record_like_two_persons_joins_them(
    api: TestClient, store_url: str, model_path: Path
) -> None:
    """A, then C unlike A (a year-only date, another commune: only a review pair), then
    B certain with both (A's CCCD, C's phone and commune): the two persons become one,
    under the earlier master, with a merge event naming B."""
    cccd = "079180001234"  # HCM, woman born in 1980
    a = post(api, rec("Nguyễn Thị Mai", "1980-05-12", "F", cccd=cccd))
    c = post(api, rec("Nguyen Thi Mai", "1980", "F", phone="0905123456", commune=PHU_LOI))
    ma, mc = person_of(api, a)["id"], person_of(api, c)["id"]
    assert ma != mc
    code, out = cli("review", store_url=store_url, model_path=model_path)
    assert ":".join(sorted((a, c))) in out
    b = post(api, rec("Nguyễn Thị Mai", "1980-05-12", "F", cccd=cccd, phone="0905123456",
                      commune=PHU_LOI))  # fmt: skip
    person = person_of(api, b)
    assert person["id"] == ma and links(person) == {a, b, c}
    retired = api.get(f"/fhir/Patient/{mc}").json()
    assert retired["active"] is False and links(retired, "replaced-by") == {ma}
    assert [m["id"] for m in masters(api) if m["active"]] == [ma]
    code, out = cli("review", store_url=store_url, model_path=model_path)
    assert "0 pairs to review" in out
    code, out = cli("events", store_url=store_url, model_path=model_path)
    assert " merge " in out and f"bridged by Patient/{b}" in out and mc in out
    # the bridge is undone as a merge is
    event = next(line.split()[3] for line in out.splitlines() if " merge " in line)
    r = api.post("/fhir/Patient/$unmerge", json=params({"name": "event", "valueString": event}),
                 headers=FHIR)  # fmt: skip
    assert r.status_code == 200, r.text
    assert links(api.get(f"/fhir/Patient/{mc}").json()) == {c}
    assert links(api.get(f"/fhir/Patient/{ma}").json()) == {a, b}


def test_a_record_like_two_persons_that_conflict_leaves_them_for_review(
    api: TestClient, store_url: str, model_path: Path
) -> None:
    """The bridging record (a year-only date) is certain with two persons whose birth
    dates no known error turns into each other: they stay apart, their pair goes on the
    review list."""
    cccd = "079180001234"
    a = post(api, rec("Nguyễn Thị Mai", "1980-05-12", "F", cccd=cccd))
    c = post(api, rec("Nguyen Thi Mai", "1980-09-30", "F", phone="0905123456", commune=PHU_LOI))
    b = post(api, rec("Nguyễn Thị Mai", "1980", "F", cccd=cccd, phone="0905123456",
                      commune=PHU_LOI))  # fmt: skip
    ma, mc = person_of(api, a)["id"], person_of(api, c)["id"]
    assert ma != mc and person_of(api, b)["id"] in (ma, mc)
    assert len(masters(api)) == 2
    code, out = cli("review", store_url=store_url, model_path=model_path)
    line = next(x for x in out.splitlines() if ":".join(sorted((a, c))) in x)
    assert f"bridged by Patient/{b}" in line
    code, out = cli("events", store_url=store_url, model_path=model_path)
    assert " merge " not in out


def test_a_weak_record_like_two_namesakes_joins_neither(
    api: TestClient, store_url: str, model_path: Path
) -> None:
    """Two namesakes born the same year, each with a full date, a commune and a phone of
    their own, then a record with the name and the year alone (no number, no place): it
    matches both, and so tells them apart from nothing. It must not join them, nor pick
    one of them; a record that also has one's phone goes to that one."""
    a = post(api, rec("Trần Văn Hùng", "1975-05-12", "M", phone="0905111222"))
    c = post(api, rec("Tran Van Hung", "1975-05-21", "M", phone="0913444555", commune=PHU_LOI))
    ma, mc = person_of(api, a)["id"], person_of(api, c)["id"]
    assert ma != mc
    w = post(api, rec("TRẦN VĂN HÙNG", "1975", "M", commune="", province_code=""))
    assert person_of(api, a)["id"] == ma and person_of(api, c)["id"] == mc
    assert links(person_of(api, a)) == {a} and links(person_of(api, c)) == {c}
    assert person_of(api, w)["id"] not in (ma, mc)
    code, out = cli("events", store_url=store_url, model_path=model_path)
    assert " merge " not in out
    p = post(api, rec("Trần Văn Hùng", "1975", "M", phone="0913444555", commune="",
                      province_code=""))  # fmt: skip
    assert person_of(api, p)["id"] == mc


# --------------------------------------------------------------------------- access


@pytest.fixture
def secured(store: ResourceStore, mpi_settings: Settings, store_url: str) -> Iterator[Any]:
    settings = mpi_settings.model_copy(update={"auth": "on"})
    users = UserDirectory(store_url)
    issuer = TokenIssuer(store_url, settings.token_issuer, settings.token_audience)
    roles = (("adm", "data_admin"), ("doc", "clinician"), ("aud", "auditor"), ("ana", "analyst"))
    for name, role in roles:
        users.add(name, role, organization="org-a" if role == "clinician" else None)

    def as_(name: str) -> dict[str, str]:
        user = users.get(name)
        assert user is not None
        return {"Authorization": f"Bearer {issuer.issue(user, None, 600)}", **FHIR}

    with TestClient(create_app(settings, store=store)) as client:
        yield client, as_
    users.close()
    issuer.close()


def test_operations_need_their_roles(secured: Any) -> None:
    client, as_ = secured
    pids = []
    for body in (rec("Mai Văn Đức", "1977-07-07", "M", phone="0922333444"),
                 rec("MAI VAN DUC", "07/07/1977", "M", phone="0922333444"),
                 rec("Phan Thị Vân", "1981-01-01", "F")):  # fmt: skip
        r = client.post("/fhir/Patient", json=body, headers=as_("adm"))
        assert r.status_code == 201, r.text
        pids.append(r.json()["id"])
    query = params({"name": "resource", "resource": rec("Mai Van Duc", "1977", "M")})
    # a clinician may search Patients, so may $match, but sees no one they do not treat
    r = client.post("/fhir/Patient/$match", json=query, headers=as_("doc"))
    assert r.status_code == 200 and r.json()["total"] == 0
    r = client.post("/fhir/Patient/$match", json=query, headers=as_("adm"))
    assert r.status_code == 200 and r.json()["total"] == 1
    # an auditor may not search Patients at all; an analyst may not single a person out
    assert client.post("/fhir/Patient/$match", json=query, headers=as_("aud")).status_code == 403
    assert client.post("/fhir/Patient/$match", json=query, headers=as_("ana")).status_code == 403
    merge = params(ref("source-patient", pids[2]), ref("target-patient", pids[0]))
    r = client.post("/fhir/Patient/$merge", json=merge, headers=as_("doc"))
    assert r.status_code == 403
    r = client.post("/fhir/Patient/$unmerge", json=params(ref("patient", pids[1])),
                    headers=as_("doc"))  # fmt: skip
    assert r.status_code == 403
    r = client.post("/fhir/Patient/$merge", json=merge, headers=as_("adm"))
    assert r.status_code == 200, r.text
    r = client.get("/fhir/AuditEvent", params={"_count": "100"}, headers=as_("aud"))
    actions = [e["resource"] for e in r.json().get("entry", [])]
    text = orjson.dumps(actions).decode()
    assert "$merge" in text and "$match" in text


def test_capability_statement_lists_the_operations(api: TestClient) -> None:
    patient = next(
        r for r in api.get("/fhir/metadata").json()["rest"][0]["resource"] if r["type"] == "Patient"
    )
    names = {op["name"] for op in patient["operation"]}
    assert {"everything", "match", "merge", "unmerge"} <= names


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture
def server(tmp_path: Path, model_path: Path) -> Iterator[str]:
    env = {
        "LIENTHONG_DATABASE_URL": f"sqlite:///{tmp_path / 'e2e.db'}",
        "LIENTHONG_AUTH": "off",
        "LIENTHONG_MPI": "true",
        "LIENTHONG_MPI_MODEL": str(model_path),
    }
    with live_server(env) as live:
        yield live.fhir


def test_person_index_over_a_real_server(server: str) -> None:
    with httpx.Client(base_url=server, headers=FHIR, timeout=30) as http:
        ids = []
        for body in (rec("Cao Thị Ngọc", "2001-09-02", "F", phone="0355666777"),
                     rec("CAO THI NGOC", "02/09/2001", "F", phone="+84355666777")):  # fmt: skip
            r = http.post("/Patient", json=body)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        r = http.get("/Patient", params={"_tag": MASTER})
        assert r.json()["total"] == 1
        assert links(r.json()["entry"][0]["resource"]) == set(ids)
        r = http.post("/Patient/$match", json=params(
            {"name": "resource", "resource": rec("Cao Thi Ngoc", "2001-09-02", "F")}))  # fmt: skip
        assert r.status_code == 200
        assert r.json()["entry"][0]["search"]["extension"][0]["valueCode"] == "certain"


def test_merge_and_unmerge_from_the_command_line(
    api: TestClient, store_url: str, model_path: Path
) -> None:
    a = post(api, rec("Kiều Thị Nga", "1958-08-08", "F", phone="0988111000"))
    b = post(api, rec("Kieu Nga", "1959", "F", commune=PHU_LOI))
    ma, mb = person_of(api, a)["id"], person_of(api, b)["id"]
    assert ma != mb
    code, out = cli("merge", b, a, store_url=store_url, model_path=model_path)
    assert code == 0, out
    assert f"merged Patient/{mb} into Patient/{ma}: 1 records moved" in out
    event = out.split("(event ")[1].split(")")[0]
    assert links(person_of(api, b)) == {a, b}
    code, out = cli("merge", a, b, store_url=store_url, model_path=model_path)
    assert code == 1 and "already one person" in out
    code, out = cli("unmerge", "--event", event, store_url=store_url, model_path=model_path)
    assert code == 0, out
    assert links(person_of(api, b)) == {b} and person_of(api, b)["id"] == mb
    code, out = cli("unmerge", store_url=store_url, model_path=model_path)
    assert code == 2 and "exactly one" in out
    code, out = cli("events", store_url=store_url, model_path=model_path)
    assert "cli:" in out and " merge " in out and " unmerge " in out
