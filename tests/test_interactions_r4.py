"""R4 interactions over HTTP: $everything's parameters and paging, $versions, Binary's
raw content, and 406 for formats the server cannot produce."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from lienthong.server.app import create_app
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore
from tests.factories import observation, organization, patient

FHIR = {"Content-Type": "application/fhir+json"}
PDF = b"%PDF-1.4\n% h\xc3\xb4 s\xc6\xa1 b\xe1\xbb\x87nh \xc3\xa1n\n\x00\x01\x02\xff"


def create(client: TestClient, resource: dict[str, Any]) -> str:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR)
    assert r.status_code == 201, r.text
    rid: str = r.json()["id"]
    return rid


def keys(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle.get("entry", [])]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((x["url"] for x in bundle["link"] if x["relation"] == relation), None)


def outcome(r: Any, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    diagnostics: str = body["issue"][0]["diagnostics"]
    return diagnostics


# ------------------------------------------------------------------------ $everything


@pytest.fixture
def record(client: TestClient) -> dict[str, str]:
    org = create(client, organization())
    gp = create(client, organization("Trạm y tế xã Tân Lập", "01001"))
    pid = create(
        client,
        patient(
            managingOrganization={"reference": f"Organization/{org}"},
            generalPractitioner=[{"reference": f"Organization/{gp}"}],
        ),
    )
    enc = create(
        client,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"},
            "period": {"start": "2020-06-01T08:00:00+07:00", "end": "2020-06-03T10:00:00+07:00"},
            "serviceProvider": {"reference": f"Organization/{org}"},
        },
    )
    obs21 = create(client, observation(f"Patient/{pid}", when="2021-03-10T09:00:00+07:00"))
    obs23 = create(client, observation(f"Patient/{pid}", when="2023-06-20T09:00:00+07:00"))
    cond = create(
        client,
        {
            "resourceType": "Condition",
            "subject": {"reference": f"Patient/{pid}"},
            "code": {"text": "Tăng huyết áp"},
            "onsetDateTime": "2022-01-15",
        },
    )
    # no care date: cannot be placed outside any range
    allergy = create(
        client,
        {
            "resourceType": "AllergyIntolerance",
            "patient": {"reference": f"Patient/{pid}"},
            "code": {"text": "Penicillin"},
        },
    )
    other = create(client, patient(cccd="001090000777"))
    create(client, observation(f"Patient/{other}", when="2021-03-10T09:00:00+07:00"))
    return {
        "patient": pid,
        "org": org,
        "gp": gp,
        "enc": enc,
        "obs21": obs21,
        "obs23": obs23,
        "cond": cond,
        "allergy": allergy,
        "other": other,
    }


def test_everything_whole_record_patient_first(client: TestClient, record: dict) -> None:
    r = client.get(f"/fhir/Patient/{record['patient']}/$everything")
    assert r.status_code == 200
    bundle = r.json()
    got = keys(bundle)
    assert got[0] == ("Patient", record["patient"])
    assert set(got) == {
        ("Patient", record["patient"]),
        ("Organization", record["org"]),
        ("Organization", record["gp"]),  # referenced by the patient alone
        ("Encounter", record["enc"]),
        ("Observation", record["obs21"]),
        ("Observation", record["obs23"]),
        ("Condition", record["cond"]),
        ("AllergyIntolerance", record["allergy"]),
    }
    assert len(got) == len(set(got)) == bundle["total"]
    assert ("Patient", record["other"]) not in got


def test_everything_start_end_are_care_dates(client: TestClient, record: dict) -> None:
    url = f"/fhir/Patient/{record['patient']}/$everything"
    got = set(keys(client.get(url, params={"start": "2021-01-01", "end": "2022-12-31"}).json()))
    clinical = {k for k in got if k[0] not in ("Patient", "Organization")}
    assert clinical == {
        ("Observation", record["obs21"]),
        ("Condition", record["cond"]),
        ("AllergyIntolerance", record["allergy"]),
    }
    assert ("Patient", record["patient"]) in got
    # only start: everything from then on; only end: everything up to then
    got = set(keys(client.get(url, params={"start": "2023"}).json()))
    assert ("Observation", record["obs23"]) in got and ("Condition", record["cond"]) not in got
    got = set(keys(client.get(url, params={"end": "2020-06-02"}).json()))
    assert ("Encounter", record["enc"]) in got  # the period overlaps the end
    assert ("Observation", record["obs21"]) not in got
    # the encounter's service provider comes with it, and goes when it is out of range
    got = set(keys(client.get(url, params={"start": "2024-01-01"}).json()))
    assert ("Encounter", record["enc"]) not in got


def test_everything_type_and_since(client: TestClient, record: dict) -> None:
    url = f"/fhir/Patient/{record['patient']}/$everything"
    got = keys(client.get(url, params={"_type": "Observation,Condition"}).json())
    assert sorted(got) == sorted(
        [
            ("Condition", record["cond"]),
            ("Observation", record["obs21"]),
            ("Observation", record["obs23"]),
        ]
    )
    got = keys(client.get(url + "?_type=Encounter&_type=Patient").json())
    assert set(got) == {("Encounter", record["enc"]), ("Patient", record["patient"])}
    # _since is meta.lastUpdated: update one resource, ask from its new time on
    cond = client.get(f"/fhir/Condition/{record['cond']}").json()
    cond["clinicalStatus"] = {"text": "active"}
    r = client.put(f"/fhir/Condition/{record['cond']}", json=cond, headers=FHIR)
    assert r.status_code == 200
    since = r.json()["meta"]["lastUpdated"]
    got = keys(client.get(url, params={"_since": since}).json())
    assert got == [("Condition", record["cond"])]


def test_everything_paging_links_carry_parameters(client: TestClient, record: dict) -> None:
    url = f"/fhir/Patient/{record['patient']}/$everything"
    whole = keys(client.get(url, params={"start": "2020-01-01"}).json())
    page = client.get(url, params={"start": "2020-01-01", "_count": "3"}).json()
    assert page["total"] == len(whole) and len(page["entry"]) == 3
    seen: list[tuple[str, str]] = []
    pages = 0
    while True:
        pages += 1
        seen += keys(page)
        nxt = link(page, "next")
        if nxt is None:
            break
        query = parse_qs(urlsplit(nxt).query)
        assert query["start"] == ["2020-01-01"] and query["_count"] == ["3"]
        r = client.get(nxt)
        assert r.status_code == 200, r.text
        page = r.json()
        assert link(page, "previous") is not None
    assert seen == whole and pages == -(-len(whole) // 3)
    # the type filter travels in the links too
    page = client.get(url, params={"_type": "Observation,Organization", "_count": "1"}).json()
    nxt = link(page, "next")
    assert nxt is not None and parse_qs(urlsplit(nxt).query)["_type"] == [
        "Observation,Organization"
    ]
    assert keys(client.get(nxt).json())[0][0] in ("Observation", "Organization")


def test_everything_post_parameters(client: TestClient, record: dict) -> None:
    url = f"/fhir/Patient/{record['patient']}/$everything"
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "start", "valueDate": "2021-01-01"},
            {"name": "end", "valueDate": "2022-12-31"},
            {"name": "_type", "valueCode": "Observation"},
            {"name": "_type", "valueCode": "Condition"},
        ],
    }
    r = client.post(url, json=body, headers=FHIR)
    assert r.status_code == 200, r.text
    expected = client.get(
        url, params={"start": "2021-01-01", "end": "2022-12-31", "_type": "Observation,Condition"}
    ).json()
    assert keys(r.json()) == keys(expected) and len(keys(expected)) == 2
    # no body at all is the whole record
    r = client.post(url)
    assert r.status_code == 200 and r.json()["total"] == len(keys(client.get(url).json()))


def test_everything_bad_parameters(client: TestClient, record: dict) -> None:
    url = f"/fhir/Patient/{record['patient']}/$everything"
    assert "start" in outcome(client.get(url, params={"start": "last year"}), 400)
    assert "_since" in outcome(client.get(url, params={"_since": "2021-13-01"}), 400)
    assert "Nope" in outcome(client.get(url, params={"_type": "Observation,Nope"}), 400)
    assert "_count" in outcome(client.get(url, params={"_count": "-1"}), 400)
    assert "Parameters" in outcome(client.post(url, json={"resourceType": "Patient"}), 400)
    bad = {"resourceType": "Parameters", "parameter": [{"name": "start"}]}
    assert "start" in outcome(client.post(url, json=bad, headers=FHIR), 400)
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404


# -------------------------------------------------------------------------- $versions


def test_versions(client: TestClient) -> None:
    r = client.get("/fhir/$versions")
    assert r.status_code == 200
    params = {p["name"]: p["valueCode"] for p in r.json()["parameter"]}
    assert r.json()["resourceType"] == "Parameters" and params == {
        "version": "4.0",
        "default": "4.0",
    }
    ok = {"Accept": "application/fhir+json; fhirVersion=4.0"}
    assert client.get("/fhir/$versions", headers=ok).status_code == 200
    assert client.get("/fhir/metadata", headers=ok).status_code == 200
    old = {"Accept": "application/fhir+json; fhirVersion=3.0"}
    assert "3.0" in outcome(client.get("/fhir/metadata", headers=old), 406)
    assert "3.0" in outcome(client.get("/fhir/Patient", headers=old), 406)
    either = {"Accept": "application/fhir+json; fhirVersion=3.0, application/fhir+json"}
    assert client.get("/fhir/Patient", headers=either).status_code == 200


# ----------------------------------------------------------------------------- Binary


def test_binary_raw_create_read_update_vread(client: TestClient) -> None:
    pid = create(client, patient())
    r = client.post(
        "/fhir/Binary",
        content=PDF,
        headers={"Content-Type": "application/pdf", "X-Security-Context": f"Patient/{pid}"},
    )
    assert r.status_code == 201, r.text
    bid = r.json()["id"]
    # raw content under its own type
    r = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "application/pdf"})
    assert r.status_code == 200 and r.content == PDF
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["x-security-context"] == f"Patient/{pid}" and r.headers["etag"] == 'W/"1"'
    assert client.get(f"/fhir/Binary/{bid}").content == PDF  # Accept: */*
    # the resource itself when a FHIR type is asked for
    as_fhir = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "application/fhir+json"})
    as_json = client.get(f"/fhir/Binary/{bid}", params={"_format": "json"})
    for r in (as_fhir, as_json):
        assert r.headers["content-type"].startswith("application/fhir+json")
        res = r.json()
        assert res["contentType"] == "application/pdf"
        assert base64.b64decode(res["data"]) == PDF
        assert res["securityContext"] == {"reference": f"Patient/{pid}"}
    assert "application/pdf" in outcome(
        client.get(f"/fhir/Binary/{bid}", headers={"Accept": "image/png"}), 406
    )
    assert "XML" in outcome(client.get(f"/fhir/Binary/{bid}", params={"_format": "xml"}), 406)
    # raw update, then vread of both versions
    r = client.put(f"/fhir/Binary/{bid}", content=b"plain", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    r = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "text/*"})
    assert r.content == b"plain" and r.headers["content-type"].startswith("text/plain")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get(f"/fhir/Binary/{bid}/_history/1").content == PDF
    assert client.get(f"/fhir/Binary/{bid}/_history/2").content == b"plain"
    # create-on-update with a client id
    r = client.put("/fhir/Binary/scan-1", content=b"\x89PNG", headers={"Content-Type": "image/png"})
    assert r.status_code == 201
    assert client.get("/fhir/Binary/scan-1", headers={"Accept": "image/png"}).content == b"\x89PNG"


def test_binary_json_still_works_and_bad_context(client: TestClient) -> None:
    data = base64.b64encode(b"hello").decode()
    r = client.post(
        "/fhir/Binary",
        json={"resourceType": "Binary", "contentType": "text/plain", "data": data},
        headers=FHIR,
    )
    assert r.status_code == 201, r.text
    assert client.get(f"/fhir/Binary/{r.json()['id']}").content == b"hello"
    r = client.post(
        "/fhir/Binary",
        content=b"x",
        headers={"Content-Type": "application/octet-stream", "X-Security-Context": "nobody"},
    )
    assert "X-Security-Context" in outcome(r, 400)
    # other types still refuse non-FHIR bodies
    r = client.post("/fhir/Patient", content=b"x", headers={"Content-Type": "application/pdf"})
    assert outcome(r, 415)


@pytest.fixture
def small_client(store: ResourceStore, settings: Settings) -> Iterator[TestClient]:
    tight = settings.model_copy(update={"body_max_bytes": 1000})
    with TestClient(create_app(tight, store=store)) as c:
        yield c


def test_body_size_limit(small_client: TestClient) -> None:
    big = b"\x00" * 1001
    r = small_client.post(
        "/fhir/Binary", content=big, headers={"Content-Type": "application/octet-stream"}
    )
    assert "1,000 bytes" in outcome(r, 413)
    r = small_client.post(
        "/fhir/Binary", content=big[:900], headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 201
    r = small_client.post(
        "/fhir/Patient", content=b" " * 1001 + b"{}", headers={"Content-Type": FHIR["Content-Type"]}
    )
    assert outcome(r, 413)


# -------------------------------------------------------------------------------- 406


@pytest.mark.parametrize(
    "path", ["/fhir/metadata", "/fhir/Patient", "/fhir/Patient/p1", "/fhir/_history"]
)
def test_formats_not_produced_are_406(client: TestClient, path: str) -> None:
    for fmt in ("xml", "application/fhir+xml", "text/xml", "ttl", "html", "yaml"):
        outcome(client.get(path, params={"_format": fmt}), 406)
    for accept in (
        "application/fhir+xml",
        "application/xml, text/xml",
        "text/turtle",
        "application/fhir+json;q=0, application/fhir+xml",
    ):
        assert "Accept" in outcome(client.get(path, headers={"Accept": accept}), 406)


def test_json_formats_are_answered(client: TestClient) -> None:
    pid = create(client, patient())
    for accept in (
        "*/*",
        "application/json",
        "application/fhir+json",
        "json",
        "",
        "application/fhir+xml;q=0.9, application/fhir+json",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ):
        r = client.get(f"/fhir/Patient/{pid}", headers={"Accept": accept})
        assert r.status_code == 200, (accept, r.text)
        assert r.headers["content-type"].startswith("application/fhir+json")
    # _format overrides Accept, in either direction; an unescaped + arrives as a space
    r = client.get(f"/fhir/Patient/{pid}?_format=application/fhir+json", headers={"Accept": "x/y"})
    assert r.status_code == 200
    assert client.get(f"/fhir/Patient/{pid}", params={"_format": "json"}).status_code == 200
    r = client.get(f"/fhir/Patient/{pid}", params={"_format": "xml"}, headers={"Accept": "*/*"})
    assert r.status_code == 406


def test_406_applies_before_writes_and_not_outside_fhir(client: TestClient) -> None:
    xml = {"Accept": "application/fhir+xml", **FHIR}
    assert client.post("/fhir/Patient", json=patient(), headers=xml).status_code == 406
    assert client.get("/fhir/Patient").json().get("total") == 0
    assert client.get("/", headers={"Accept": "application/xml"}).status_code == 200


def test_capability_statement_lists_the_additions(client: TestClient) -> None:
    cs = client.get("/fhir/metadata").json()
    rest = cs["rest"][0]
    assert {"name": "versions", "definition": (
        "http://hl7.org/fhir/OperationDefinition/CapabilityStatement-versions"
    )} in rest["operation"]  # fmt: skip
    by_type = {res["type"]: res for res in rest["resource"]}
    everything = next(o for o in by_type["Patient"]["operation"] if o["name"] == "everything")
    for param in ("start", "end", "_since", "_type", "_count"):
        assert param in everything["documentation"]
    assert "raw content" in by_type["Binary"]["documentation"]
    assert {"read", "create", "update"} <= {i["code"] for i in by_type["Binary"]["interaction"]}
