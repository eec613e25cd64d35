"""Plain R4 behaviours FHIR clients rely on, checked end to end over HTTP: CRUD and
conditional writes, history, batch and transaction, and the search parameters and
result parameters that bulk downloaders and query tools use."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.factories import CCCD, observation, patient

FHIR = {"Content-Type": "application/fhir+json"}


def create(client: TestClient, resource: dict[str, Any], **headers: str) -> dict[str, Any]:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR | headers)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def search(client: TestClient, path: str, status: int = 200) -> dict[str, Any]:
    r = client.get(f"/fhir/{path}")
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    return body


def ids(bundle: dict[str, Any], mode: str | None = "match") -> list[str]:
    return [
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if mode is None or e.get("search", {}).get("mode") == mode
    ]


def next_link(bundle: dict[str, Any]) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == "next"), None)


def follow(client: TestClient, bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Every entry of every page, following next links as a downloader does."""
    entries = list(bundle.get("entry", []))
    url = next_link(bundle)
    while url:
        parts = urlsplit(url)
        r = client.get(f"{parts.path}?{parts.query}")
        assert r.status_code == 200, r.text
        page = r.json()
        entries += page.get("entry", [])
        url = next_link(page)
    return entries


def outcome(r: Any, *statuses: int) -> dict[str, Any]:
    assert r.status_code in statuses, (r.status_code, r.text)
    body: dict[str, Any] = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] in ("error", "fatal")
    return body


# ------------------------------------------------------------------------ create/read


def test_create_answers_201_with_location_and_meta(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json=patient(), headers=FHIR)
    assert r.status_code == 201
    body = r.json()
    assert body["meta"]["versionId"] == "1" and body["meta"]["lastUpdated"]
    loc = r.headers["location"]
    assert f"/Patient/{body['id']}/_history/1" in loc
    assert r.headers["etag"] == 'W/"1"'
    read = client.get(f"/fhir/Patient/{body['id']}")
    assert read.status_code == 200 and read.json()["name"] == body["name"]


def test_update_as_create_with_id_zero(client: TestClient) -> None:
    r = client.put("/fhir/Patient/0", json=patient(id="0"), headers=FHIR)
    assert r.status_code == 201, r.text
    assert client.get("/fhir/Patient/0").json()["id"] == "0"
    assert search(client, "Patient?_id=0")["total"] == 1


def test_identical_update_keeps_the_version(client: TestClient) -> None:
    p = create(client, patient())
    body = {k: v for k, v in p.items() if k != "meta"}
    r = client.put(f"/fhir/Patient/{p['id']}", json=body, headers=FHIR)
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["versionId"] == "1"
    assert search(client, f"Patient/{p['id']}/_history")["total"] == 1


def test_ancient_birth_year_is_stored_and_searchable(client: TestClient) -> None:
    p = create(client, patient(birth="0900"))
    assert client.get(f"/fhir/Patient/{p['id']}").json()["birthDate"] == "0900"
    assert ids(search(client, "Patient?birthdate=0900")) == [p["id"]]
    assert ids(search(client, "Patient?birthdate=lt1000")) == [p["id"]]
    assert ids(search(client, "Patient?birthdate=gt1000")) == []


def test_control_character_in_a_string_is_refused_or_kept(client: TestClient) -> None:
    # R4 strings SHALL NOT hold code points below 32 other than tab, CR and LF.
    r = client.post(
        "/fhir/Observation",
        content=b'{"resourceType": "Observation", "status": "final",'
        b' "code": {"text": "x"}, "valueString": "a\\u0000b"}',
        headers=FHIR,
    )
    body = outcome(r, 400, 422)
    assert "valueString" in str(body)


def test_tab_and_newline_in_a_string_are_kept(client: TestClient) -> None:
    o = create(client, observation("Patient/x", valueString="a\tb\nc", valueQuantity=None))
    assert client.get(f"/fhir/Observation/{o['id']}").json()["valueString"] == "a\tb\nc"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"resourceType": "Patient", "gender": "unknownish"}', "gender"),
        (b'{"resourceType": "Patient", "birthDate": "17.05.1990"}', "birthDate"),
        (b'{"resourceType": "Patient", "foo": 1}', "foo"),
        (b'{"resourceType": "Patient"', "JSON"),
        (b'{"resourceType": "Observation"}', ""),
    ],
)
def test_invalid_resources_answer_an_operation_outcome(
    client: TestClient, body: bytes, field: str
) -> None:
    r = client.post(
        "/fhir/Observation" if b"Observation" in body else "/fhir/Patient",
        content=body,
        headers=FHIR,
    )
    oo = outcome(r, 400, 422)
    assert field.lower() in str(oo).lower()


def test_resource_type_must_match_the_url(client: TestClient) -> None:
    outcome(client.post("/fhir/Observation", json=patient(), headers=FHIR), 400, 422)
    outcome(client.post("/fhir/NoSuchType", json=patient(), headers=FHIR), 400, 404)


def test_contained_resources_of_different_types_are_preserved(client: TestClient) -> None:
    eob = {
        "resourceType": "ExplanationOfBenefit",
        "status": "active",
        "type": {"text": "professional"},
        "use": "claim",
        "patient": {"reference": "Patient/p1"},
        "created": "2024-01-01",
        "insurer": {"display": "BHXH"},
        "provider": {"display": "BV"},
        "outcome": "complete",
        "contained": [
            {
                "resourceType": "ServiceRequest",
                "id": "sr",
                "status": "completed",
                "intent": "order",
                "subject": {"reference": "Patient/p1"},
            },
            {
                "resourceType": "Coverage",
                "id": "cov",
                "status": "active",
                "type": {"text": "BHYT"},
                "beneficiary": {"reference": "Patient/p1"},
                "payor": [{"display": "BHXH"}],
            },
        ],
        "referral": {"reference": "#sr"},
        "insurance": [{"focal": True, "coverage": {"reference": "#cov"}}],
    }
    made = create(client, eob)
    back = client.get(f"/fhir/ExplanationOfBenefit/{made['id']}").json()
    by_type = {c["resourceType"]: c for c in back["contained"]}
    assert set(by_type) == {"ServiceRequest", "Coverage"}
    cov = by_type["Coverage"]
    assert cov["type"] == {"text": "BHYT"} and cov["payor"] and cov["beneficiary"]


# ------------------------------------------------------------------- conditional writes


def test_conditional_create(client: TestClient) -> None:
    crit = {"If-None-Exist": f"identifier={CCCD}|001090099999"}
    first = client.post("/fhir/Patient", json=patient(cccd="001090099999"), headers=FHIR | crit)
    assert first.status_code == 201
    again = client.post("/fhir/Patient", json=patient(cccd="001090099999"), headers=FHIR | crit)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    create(client, patient(cccd="001090099998", family="Trần"))
    create(client, patient(cccd="001090099997", family="Trần"))
    many = client.post(
        "/fhir/Patient", json=patient(), headers=FHIR | {"If-None-Exist": "family=Tr%E1%BA%A7n"}
    )
    outcome(many, 412)
    assert search(client, "Patient?_summary=count")["total"] == 3


def test_conditional_update_if_none_match(client: TestClient) -> None:
    url = f"/fhir/Patient?identifier={CCCD}|001090077777"
    star = FHIR | {"If-None-Match": "*"}
    made = client.put(url, json=patient(cccd="001090077777"), headers=star)
    assert made.status_code == 201, made.text
    outcome(client.put(url, json=patient(cccd="001090077777"), headers=star), 412)
    pid = made.json()["id"]
    body = patient(cccd="001090077777", id=pid)
    outcome(client.put(f"/fhir/Patient/{pid}", json=body, headers=star), 412)
    assert search(client, f"Patient/{pid}/_history")["total"] == 1


def test_conditional_delete_at_type_level(client: TestClient) -> None:
    keep = create(client, patient(cccd="001090000001"))
    gone = create(client, patient(cccd="001090000002", family="Lê"))
    r = client.delete("/fhir/Patient?family=Lê")
    assert r.status_code in (200, 204), r.text
    assert client.get(f"/fhir/Patient/{gone['id']}").status_code == 410
    assert client.get(f"/fhir/Patient/{keep['id']}").status_code == 200
    # nothing matching is not an error
    assert client.delete("/fhir/Patient?family=Nobody").status_code in (200, 204)


def test_conditional_delete_of_many_is_refused_when_declared_single(client: TestClient) -> None:
    cap = client.get("/fhir/metadata").json()
    patient_rest = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Observation")
    assert patient_rest["conditionalDelete"] == "single"
    a = create(client, observation("Patient/x"))
    b = create(client, observation("Patient/x"))
    outcome(client.delete("/fhir/Observation?subject=Patient/x"), 412)
    assert client.get(f"/fhir/Observation/{a['id']}").status_code == 200
    assert client.get(f"/fhir/Observation/{b['id']}").status_code == 200


def test_conditional_delete_without_criteria_is_refused(client: TestClient) -> None:
    create(client, observation("Patient/x"))
    r = client.delete("/fhir/Observation")
    assert r.status_code in (400, 412), r.text
    assert search(client, "Observation?_summary=count")["total"] == 1


def test_conditional_deletes_of_two_types_in_one_transaction(client: TestClient) -> None:
    p = create(client, patient())
    o = create(client, observation(f"Patient/{p['id']}"))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "DELETE", "url": f"Observation?_id={o['id']}"}},
            {"request": {"method": "DELETE", "url": f"Patient?_id={p['id']}"}},
        ],
    }
    r = client.post("/fhir", json=bundle, headers=FHIR)
    assert r.status_code == 200, r.text
    assert all(e["response"]["status"][:3] in ("200", "204") for e in r.json()["entry"])
    assert client.get(f"/fhir/Observation/{o['id']}").status_code == 410
    assert client.get(f"/fhir/Patient/{p['id']}").status_code == 410


# ------------------------------------------------------------------------ delete/history


def test_delete_then_read_is_gone_and_history_keeps_the_delete(client: TestClient) -> None:
    p = create(client, patient())
    pid = p["id"]
    assert client.delete(f"/fhir/Patient/{pid}").status_code in (200, 204)
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    assert client.delete(f"/fhir/Patient/{pid}").status_code in (200, 204)
    hist = search(client, f"Patient/{pid}/_history")
    assert hist["total"] == 2
    first = hist["entry"][0]
    assert first["request"]["method"] == "DELETE" and "resource" not in first
    assert first["response"]["status"].startswith("204") or first["response"]["status"][:3] in (
        "200",
        "410",
    )
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    assert search(client, "Patient?_summary=count")["total"] == 0


def test_history_newest_first_at_every_level(client: TestClient) -> None:
    p = create(client, patient())
    pid = p["id"]
    client.put(f"/fhir/Patient/{pid}", json=patient(id=pid, gender="female"), headers=FHIR)
    other = create(client, patient(cccd="001090000003"))
    inst = search(client, f"Patient/{pid}/_history")
    assert inst["type"] == "history" and inst["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in inst["entry"]] == ["2", "1"]
    typ = search(client, "Patient/_history")
    assert typ["total"] == 3 and typ["entry"][0]["resource"]["id"] == other["id"]
    sys = search(client, "_history")
    assert sys["total"] == 3


def test_history_pages_follow_a_snapshot(client: TestClient) -> None:
    for i in range(5):
        create(client, patient(cccd=f"00109000010{i}"))
    first = search(client, "Patient/_history?_count=2")
    assert len(first["entry"]) == 2 and first["total"] == 5
    create(client, patient(cccd="001090000199"))
    assert len(follow(client, first)) == 5


def test_delete_history_is_not_offered(client: TestClient) -> None:
    # R4 has no delete-history interaction; the server must say so rather than act.
    p = create(client, patient())
    r = client.delete(f"/fhir/Patient/{p['id']}/_history")
    assert r.status_code in (404, 405), r.text
    assert client.get(f"/fhir/Patient/{p['id']}").status_code == 200


# ---------------------------------------------------------------- batch and transaction


def test_batch_answers_each_entry_including_get_metadata(client: TestClient) -> None:
    p = create(client, patient())
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "metadata"}},
            {
                "resource": patient(cccd="001090000201"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": f"Patient/{p['id']}"}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
            {"request": {"method": "GET", "url": "Patient?gender=male&_summary=count"}},
        ],
    }
    r = client.post("/fhir", json=bundle, headers=FHIR)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "batch-response"
    e = out["entry"]
    assert e[0]["response"]["status"].startswith("200")
    assert e[0]["resource"]["resourceType"] == "CapabilityStatement"
    assert e[1]["response"]["status"].startswith("201") and e[1]["response"]["location"]
    assert e[2]["resource"]["id"] == p["id"]
    assert e[3]["response"]["status"].startswith("404")
    assert e[4]["resource"]["total"] == 2


def test_transaction_rewrites_urn_references_and_rolls_back(client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5b0c43e6-8b1e-4c3c-a6bb-0d2f4a8d0a11",
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": observation("urn:uuid:5b0c43e6-8b1e-4c3c-a6bb-0d2f4a8d0a11"),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    r = client.post("/fhir", json=bundle, headers=FHIR)
    assert r.status_code == 200, r.text
    pid = r.json()["entry"][0]["response"]["location"].split("/")[1]
    oid = r.json()["entry"][1]["response"]["location"].split("/")[1]
    obs = client.get(f"/fhir/Observation/{oid}").json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"
    # one bad entry: nothing of the transaction is written
    bad = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": patient(cccd="001090000301"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": None, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    outcome(client.post("/fhir", json=bad, headers=FHIR), 400, 422)
    assert search(client, "Patient?_summary=count")["total"] == 1


def test_transaction_reads_see_the_state_before_it(client: TestClient) -> None:
    p = create(client, patient())
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": patient(cccd="001090000401"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": f"Patient/{p['id']}"}},
        ],
    }
    r = client.post("/fhir", json=bundle, headers=FHIR)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][1]["resource"]["id"] == p["id"]


# --------------------------------------------------------------------------------- search


@pytest.fixture
def people(client: TestClient) -> dict[str, Any]:
    men = [create(client, patient(cccd=f"00109000050{i}")) for i in range(3)]
    women = [
        create(client, patient(cccd=f"00119000050{i}", gender="female", birth="1985-02-03"))
        for i in range(2)
    ]
    enc = create(
        client,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "IMP",
            },
            "subject": {"reference": f"Patient/{women[0]['id']}"},
            "period": {"start": "2010-04-01", "end": "2010-04-05"},
        },
    )
    obs = {
        "2010": create(
            client,
            observation(
                f"Patient/{men[0]['id']}",
                when="2010-06-01T10:00:00+07:00",
                encounter={"reference": f"Encounter/{enc['id']}"},
            ),
        ),
        "2020": create(client, observation(f"Patient/{women[0]['id']}", when="2020-01-15")),
        "2021": create(client, observation(f"Patient/{men[1]['id']}", when="2021-12-31")),
    }
    return {"men": men, "women": women, "enc": enc, "obs": obs}


def test_totals_and_summary_count(client: TestClient, people: dict[str, Any]) -> None:
    assert search(client, "Patient?gender=male")["total"] == 3
    count = search(client, "Patient?gender=female&_summary=count")
    assert count["total"] == 2 and "entry" not in count
    assert search(client, "Observation?_total=accurate")["total"] == 3


@pytest.mark.parametrize(
    ("value", "years"),
    [
        ("2020", {"2020"}),
        ("ne2020", {"2010", "2021"}),
        ("gt2010", {"2020", "2021"}),
        ("lt2020", {"2010"}),
        ("ge2020", {"2020", "2021"}),
        ("le2020", {"2010", "2020"}),
        ("sa2010", {"2020", "2021"}),
        ("eb2020", {"2010"}),
        ("2021-12", {"2021"}),
        ("ap2021-12-31", {"2021"}),
    ],
)
def test_date_prefixes(
    client: TestClient, people: dict[str, Any], value: str, years: set[str]
) -> None:
    want = {people["obs"][y]["id"] for y in years}
    assert set(ids(search(client, f"Observation?date={value}"))) == want


def test_sort_by_id_and_last_updated(client: TestClient, people: dict[str, Any]) -> None:
    made = [o["id"] for o in people["obs"].values()]
    assert ids(search(client, "Observation?_sort=_id")) == sorted(made)
    assert ids(search(client, "Observation?_sort=_lastUpdated")) == made
    assert ids(search(client, "Observation?_sort=-_lastUpdated")) == made[::-1]
    assert ids(search(client, "Observation?_sort=-date")) == made[::-1]


def test_chained_search(client: TestClient, people: dict[str, Any]) -> None:
    assert set(ids(search(client, "Observation?patient.gender=male"))) == {
        people["obs"]["2010"]["id"],
        people["obs"]["2021"]["id"],
    }
    assert ids(search(client, "Observation?encounter.class=IMP")) == [people["obs"]["2010"]["id"]]
    assert ids(search(client, "Observation?subject:Patient.birthdate=1985-02-03")) == [
        people["obs"]["2020"]["id"]
    ]


def test_has_reverse_chaining(client: TestClient, people: dict[str, Any]) -> None:
    q = "Patient?gender=female&_has:Encounter:patient:class=IMP&_has:Encounter:patient:date=2010"
    assert ids(search(client, q)) == [people["women"][0]["id"]]
    assert ids(search(client, "Patient?gender=male&_has:Encounter:patient:class=IMP")) == []


def test_summary_true_drops_non_summary_elements(
    client: TestClient, people: dict[str, Any]
) -> None:
    b = search(client, "Encounter?_summary=true")
    res = b["entry"][0]["resource"]
    # class and status are summary elements of Encounter, period is not
    assert "class" in res and "status" in res and "period" not in res
    obs = search(client, "Observation?_summary=true")["entry"][0]["resource"]
    assert "valueQuantity" in obs and "code" in obs
    tags = [t.get("code") for t in obs["meta"].get("tag", [])]
    assert "SUBSETTED" in tags
    cond = create(
        client,
        {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/x"},
            "category": [{"text": "problem-list-item"}],
            "code": {"text": "Tăng huyết áp"},
            "note": [{"text": "ghi chú"}],
        },
    )
    got = search(client, f"Condition?_id={cond['id']}&_summary=true")["entry"][0]["resource"]
    assert "note" not in got and "code" in got


def test_summary_at_system_level(client: TestClient, people: dict[str, Any]) -> None:
    b = search(client, "?_type=Observation&_summary=true")
    assert b["total"] == 3
    assert all("SUBSETTED" in str(e["resource"]["meta"]) for e in b["entry"])


def test_elements_keeps_only_the_named_elements(client: TestClient, people: dict[str, Any]) -> None:
    b = search(client, "Observation?_elements=subject")
    for e in b["entry"]:
        r = e["resource"]
        # mandatory elements may be kept (R4 search.html#elements)
        assert set(r) <= {"resourceType", "id", "meta", "subject", "status", "code"}
        assert "subject" in r


def test_include_and_iterate_and_revinclude(client: TestClient, people: dict[str, Any]) -> None:
    o2010 = people["obs"]["2010"]["id"]
    b = search(client, f"Observation?_id={o2010}&_include=Observation:patient")
    assert ids(b) == [o2010]
    assert ids(b, "include") == [people["men"][0]["id"]]
    b = search(
        client,
        f"Observation?_id={o2010}&_include=Observation:encounter"
        "&_include:iterate=Encounter:patient",
    )
    assert set(ids(b, "include")) == {people["enc"]["id"], people["women"][0]["id"]}
    b = search(
        client,
        f"Patient?_id={people['women'][0]['id']}&_revinclude=Observation:patient"
        "&_revinclude=Encounter:patient",
    )
    assert set(ids(b, "include")) == {people["obs"]["2020"]["id"], people["enc"]["id"]}


def test_paging_with_count_reaches_every_match_once(
    client: TestClient, people: dict[str, Any]
) -> None:
    first = search(client, "Patient?_count=2")
    assert len(first["entry"]) == 2 and first["total"] == 5
    # a write between pages does not shift or add to the result
    create(client, patient(cccd="001090000599"))
    got = [e["resource"]["id"] for e in follow(client, first)]
    assert len(got) == 5 and len(set(got)) == 5
    assert search(client, "Patient?_count=0")["total"] == 6


def test_paging_system_search(client: TestClient, people: dict[str, Any]) -> None:
    first = search(client, "?_type=Patient,Observation&_count=3")
    create(client, patient(cccd="001090000699"))
    got = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in follow(client, first)]
    assert len(set(got)) == 8


def test_ids_tag_profile_last_updated(client: TestClient, people: dict[str, Any]) -> None:
    tagged = create(
        client,
        patient(
            cccd="001090000701",
            meta={
                "tag": [{"system": "http://example.org/tags", "code": "vip"}],
                "profile": ["http://example.org/StructureDefinition/p"],
            },
        ),
    )
    assert ids(search(client, "Patient?_tag=http://example.org/tags|vip")) == [tagged["id"]]
    assert ids(search(client, "Patient?_profile=http://example.org/StructureDefinition/p")) == [
        tagged["id"]
    ]
    two = f"{people['men'][0]['id']},{people['women'][1]['id']}"
    assert len(ids(search(client, f"Patient?_id={two}"))) == 2
    stamp = tagged["meta"]["lastUpdated"]
    assert ids(search(client, f"Patient?_lastUpdated=ge{stamp}")) == [tagged["id"]]
    assert tagged["id"] not in ids(search(client, f"Patient?_lastUpdated=lt{stamp}"))


def test_compartment_search(client: TestClient, people: dict[str, Any]) -> None:
    w = people["women"][0]["id"]
    b = search(client, f"Patient/{w}/Observation")
    assert ids(b) == [people["obs"]["2020"]["id"]]
    assert ids(search(client, f"Patient/{w}/Encounter?class=IMP")) == [people["enc"]["id"]]


def test_unknown_search_parameter_and_bad_values(
    client: TestClient, people: dict[str, Any]
) -> None:
    outcome(client.get("/fhir/Observation?date=not-a-date"), 400)
    strict = client.get("/fhir/Patient?nonsense=1", headers={"Prefer": "handling=strict"})
    outcome(strict, 400)


# ----------------------------------------------------------------- operations and Binary


def test_everything_returns_the_patient_and_its_record(
    client: TestClient, people: dict[str, Any]
) -> None:
    w = people["women"][0]["id"]
    b = search(client, f"Patient/{w}/$everything")
    got = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in b["entry"]}
    assert got == {
        ("Patient", w),
        ("Observation", people["obs"]["2020"]["id"]),
        ("Encounter", people["enc"]["id"]),
    }
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404


def test_versions_operation(client: TestClient) -> None:
    b = search(client, "$versions")
    params = {p["name"]: p.get("valueCode", p.get("valueString")) for p in b["parameter"]}
    assert params["default"].startswith("4.0")


def test_binary_raw_round_trip_and_not_found(client: TestClient) -> None:
    r = client.post("/fhir/Binary", content=b"\x00\x01raw", headers={"Content-Type": "image/png"})
    assert r.status_code == 201, r.text
    bid = r.json()["id"] if r.content else r.headers["location"].split("/")[-3]
    raw = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "image/png"})
    assert raw.status_code == 200 and raw.content == b"\x00\x01raw"
    js = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "application/fhir+json"})
    assert js.json()["contentType"] == "image/png"
    assert client.get("/fhir/Binary/nope", headers={"Accept": "image/png"}).status_code == 404


def test_unacceptable_format_is_406(client: TestClient) -> None:
    r = client.get("/fhir/metadata", headers={"Accept": "text/csv"})
    assert r.status_code == 406


def test_capability_statement_elements(client: TestClient) -> None:
    r = client.get("/fhir/metadata?_elements=fhirVersion")
    assert r.status_code == 200
    body = r.json()
    assert body["fhirVersion"].startswith("4.0")
    assert "rest" not in body


def test_read_honours_summary_and_elements(client: TestClient) -> None:
    p = create(client, patient())
    full = client.get(f"/fhir/Patient/{p['id']}").json()
    assert "SUBSETTED" not in str(full["meta"])
    el = client.get(f"/fhir/Patient/{p['id']}?_elements=gender").json()
    assert set(el) == {"resourceType", "id", "meta", "gender"}
    assert "SUBSETTED" in str(el["meta"])
    text = client.get(f"/fhir/Patient/{p['id']}?_summary=true").json()
    assert "name" in text and "SUBSETTED" in str(text["meta"])
    outcome(client.get(f"/fhir/Patient/{p['id']}?_summary=bogus"), 400)


def test_read_ignores_unknown_parameters(client: TestClient) -> None:
    p = create(client, patient())
    assert client.get(f"/fhir/Patient/{p['id']}?__t=0").status_code == 200


def test_links_carry_non_ascii_values_percent_encoded(client: TestClient) -> None:
    for i in range(3):
        create(client, patient(family="Nguyễn", cccd=f"00109000080{i}"))
    first = search(client, "Patient?family=Nguy%E1%BB%85n&_count=2")
    self_link = next(x["url"] for x in first["link"] if x["relation"] == "self")
    assert "Nguy%E1%BB%85n" in self_link and "ễ" not in self_link
    url = next_link(first)
    assert url is not None and "ễ" not in url
    assert len(follow(client, first)) == 3
