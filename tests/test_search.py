"""Search (https://hl7.org/fhir/R4/search.html): every parameter type and modifier."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import CCCD, LOINC, observation, organization, patient

FHIR = {"Content-Type": "application/fhir+json"}


def create(client: TestClient, resource: dict[str, Any]) -> str:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def ids(client: TestClient, path: str, **params: Any) -> set[str]:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return {
        e["resource"]["id"]
        for e in r.json().get("entry", [])
        if e.get("search", {}).get("mode") == "match"
    }


@pytest.fixture
def people(client: TestClient) -> dict[str, str]:
    return {
        "an": create(
            client,
            patient(
                "Nguyễn",
                ["Văn", "An"],
                "001090012345",
                "1990-05-17",
                telecom=[{"system": "phone", "value": "+84912345678"}],
                address=[{"city": "Hà Nội", "line": ["12 Phố Huế"]}],
            ),
        ),
        "hoa": create(
            client, patient("Trần", ["Thị", "Hoà"], "079301000222", "2001-11-02", gender="female")
        ),
        "duc": create(
            client, patient("Đặng", ["Minh", "Đức"], "048085000333", "1985-01-30", active=False)
        ),
        "nguyet": create(client, patient("Nguyễn Thị", ["Nguyệt"], None, "1975", gender="female")),
    }


def test_string_prefix_is_case_and_accent_insensitive(client: TestClient, people: dict) -> None:
    assert ids(client, "/fhir/Patient", family="nguyen") == {people["an"], people["nguyet"]}
    assert ids(client, "/fhir/Patient", family="NGUYỄN") == {people["an"], people["nguyet"]}
    assert ids(client, "/fhir/Patient", family="dang") == {people["duc"]}  # đ folds to d
    assert ids(client, "/fhir/Patient", given="duc") == {people["duc"]}
    assert ids(client, "/fhir/Patient", given="hoa") == {people["hoa"]}  # hoà
    assert ids(client, "/fhir/Patient", given="hòa") == {people["hoa"]}  # other tone placement
    assert ids(client, "/fhir/Patient", name="ngu") == {people["an"], people["nguyet"]}
    assert ids(client, "/fhir/Patient", address="ha noi") == {people["an"]}


def test_string_exact_and_contains(client: TestClient, people: dict) -> None:
    assert ids(client, "/fhir/Patient", **{"family:exact": "Nguyễn"}) == {people["an"]}
    assert ids(client, "/fhir/Patient", **{"family:exact": "nguyễn"}) == set()
    assert ids(client, "/fhir/Patient", **{"family:contains": "thi"}) == {people["nguyet"]}
    assert ids(client, "/fhir/Patient", **{"given:contains": "uye"}) == {people["nguyet"]}


def test_string_or_values_and_and_params(client: TestClient, people: dict) -> None:
    assert ids(client, "/fhir/Patient", family="tran,dang") == {people["hoa"], people["duc"]}
    r = client.get("/fhir/Patient", params=[("family", "nguyen"), ("given", "an")])
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {people["an"]}


def test_token_system_code_forms(client: TestClient, people: dict) -> None:
    assert ids(client, "/fhir/Patient", identifier=f"{CCCD}|001090012345") == {people["an"]}
    assert ids(client, "/fhir/Patient", identifier="001090012345") == {people["an"]}
    assert ids(client, "/fhir/Patient", identifier="http://other|001090012345") == set()
    assert ids(client, "/fhir/Patient", identifier="|001090012345") == set()  # has a system
    assert ids(client, "/fhir/Patient", identifier=f"{CCCD}|") == {
        people["an"],
        people["hoa"],
        people["duc"],
    }
    assert ids(client, "/fhir/Patient", gender="female") == {people["hoa"], people["nguyet"]}
    assert ids(client, "/fhir/Patient", active="false") == {people["duc"]}
    assert ids(client, "/fhir/Patient", phone="+84912345678") == {people["an"]}
    assert ids(client, "/fhir/Patient", telecom="phone|+84912345678") == {people["an"]}


def test_token_not_text_missing(client: TestClient, people: dict) -> None:
    assert ids(client, "/fhir/Patient", **{"gender:not": "female"}) == {people["an"], people["duc"]}
    assert ids(client, "/fhir/Patient", **{"identifier:missing": "true"}) == {people["nguyet"]}
    assert len(ids(client, "/fhir/Patient", **{"identifier:missing": "false"})) == 3
    pid = people["an"]
    oid = create(client, observation(f"Patient/{pid}"))
    assert ids(client, "/fhir/Observation", **{"code:text": "nhip tim"}) == {oid}
    assert ids(client, "/fhir/Observation", **{"code:text": "heart"}) == {oid}


def test_date_prefixes_and_precision(client: TestClient, people: dict) -> None:
    pat = "/fhir/Patient"
    assert ids(client, pat, birthdate="1990-05-17") == {people["an"]}
    assert ids(client, pat, birthdate="1990-05") == {people["an"]}
    assert ids(client, pat, birthdate="1990") == {people["an"]}
    assert ids(client, pat, birthdate="1975-06-01") == set()  # stored year-only is wider
    assert ids(client, pat, birthdate="1975") == {people["nguyet"]}
    assert ids(client, pat, birthdate="gt1990") == {people["hoa"]}
    assert ids(client, pat, birthdate="ge1990") == {people["an"], people["hoa"]}
    assert ids(client, pat, birthdate="lt1985-01-30") == {people["nguyet"]}
    assert ids(client, pat, birthdate="le1985-01-30") == {people["nguyet"], people["duc"]}
    assert ids(client, pat, birthdate="ne1990-05-17") == {
        people["hoa"],
        people["duc"],
        people["nguyet"],
    }
    assert ids(client, pat, birthdate="sa1990-05-17") == {people["hoa"]}
    assert ids(client, pat, birthdate="eb1985-01-30") == {people["nguyet"]}
    r = client.get("/fhir/Patient", params=[("birthdate", "ge1980"), ("birthdate", "lt1995")])
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {people["an"], people["duc"]}


def test_date_with_time_zone(client: TestClient, people: dict) -> None:
    # 08:30 in Hanoi is 01:30 UTC
    oid = create(client, observation(f"Patient/{people['an']}", when="2025-03-01T08:30:00+07:00"))
    obs_url = "/fhir/Observation"
    assert ids(client, obs_url, date="2025-03-01") == {oid}
    assert ids(client, obs_url, date="gt2025-03-01T01:00:00Z") == {oid}
    assert ids(client, obs_url, date="lt2025-03-01T01:00:00Z") == set()
    assert ids(client, obs_url, date="ap2025-03-01") == {oid}


def test_quantity_and_number(client: TestClient, people: dict) -> None:
    s = f"Patient/{people['an']}"
    lo = create(client, observation(s, value=60))
    hi = create(client, observation(s, value=101.5))
    obs_url = "/fhir/Observation"
    assert ids(client, obs_url, **{"value-quantity": "60"}) == {lo}
    assert ids(client, obs_url, **{"value-quantity": "gt100"}) == {hi}
    assert ids(client, obs_url, **{"value-quantity": "le60|http://unitsofmeasure.org|/min"}) == {lo}
    assert ids(client, obs_url, **{"value-quantity": "60|http://unitsofmeasure.org|mg"}) == set()
    assert ids(client, obs_url, **{"value-quantity": "60||/min"}) == {lo}
    assert ids(client, obs_url, **{"value-quantity": "ap100"}) == {hi}
    assert ids(client, obs_url, **{"value-quantity": "ne60"}) == {hi}
    # number: RiskAssessment.prediction.probability
    ra = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": s},
        "prediction": [{"probabilityDecimal": 0.25}],
    }
    rid = create(client, ra)
    assert ids(client, "/fhir/RiskAssessment", probability="0.25") == {rid}
    assert ids(client, "/fhir/RiskAssessment", probability="gt0.2") == {rid}
    assert ids(client, "/fhir/RiskAssessment", probability="lt0.2") == set()
    # 0.3 means [0.25, 0.35) by its precision, so 0.25 matches; 0.4 does not
    assert ids(client, "/fhir/RiskAssessment", probability="0.3") == {rid}
    assert ids(client, "/fhir/RiskAssessment", probability="0.4") == set()


def test_reference_forms(client: TestClient, people: dict) -> None:
    pid = people["an"]
    oid = create(client, observation(f"Patient/{pid}"))
    other = create(client, observation(f"Patient/{people['hoa']}"))
    obs_url = "/fhir/Observation"
    assert ids(client, obs_url, subject=f"Patient/{pid}") == {oid}
    assert ids(client, obs_url, subject=pid) == {oid}
    assert ids(client, obs_url, **{"subject:Patient": pid}) == {oid}
    assert ids(client, obs_url, patient=f"Patient/{pid}") == {oid}
    assert ids(client, obs_url, subject=f"http://testserver/fhir/Patient/{pid}") == {oid}
    assert ids(client, obs_url, subject=f"Patient/{pid},Patient/{people['hoa']}") == {oid, other}
    assert ids(client, obs_url, **{"subject:missing": "true"}) == set()


def test_uri_and_below(client: TestClient) -> None:
    vs = {
        "resourceType": "ValueSet",
        "status": "active",
        "url": "http://fhir.ehealth.gov.vn/core/ValueSet/vn-core-sex",
    }
    vid = create(client, vs)
    assert ids(client, "/fhir/ValueSet", url=vs["url"]) == {vid}
    assert ids(client, "/fhir/ValueSet", **{"url:below": "http://fhir.ehealth.gov.vn/core"}) == {
        vid
    }
    assert ids(client, "/fhir/ValueSet", url="http://fhir.ehealth.gov.vn/core") == set()


def test_composite_code_value_quantity(client: TestClient, people: dict) -> None:
    s = f"Patient/{people['an']}"
    hr = create(client, observation(s, code="8867-4", value=72))
    create(client, observation(s, code="9279-1", value=72))
    obs_url = "/fhir/Observation"
    assert ids(client, obs_url, **{"code-value-quantity": f"{LOINC}|8867-4$72"}) == {hr}
    assert ids(client, obs_url, **{"code-value-quantity": "8867-4$gt70"}) == {hr}
    assert ids(client, obs_url, **{"code-value-quantity": "8867-4$lt70"}) == set()
    bp = observation(s, code="85354-9")
    del bp["valueQuantity"]
    bp["component"] = [
        {
            "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
            "valueQuantity": {"value": 140, "unit": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
            "valueQuantity": {"value": 90, "unit": "mm[Hg]"},
        },
    ]
    bid = create(client, bp)
    assert ids(client, obs_url, **{"component-code-value-quantity": "8480-6$gt130"}) == {bid}
    # the components are matched pairwise: systolic is not 90
    assert ids(client, obs_url, **{"component-code-value-quantity": "8480-6$90"}) == set()


def test_id_and_last_updated(client: TestClient, people: dict) -> None:
    assert ids(client, "/fhir/Patient", _id=people["an"]) == {people["an"]}
    assert ids(client, "/fhir/Patient", _id=f"{people['an']},{people['duc']}") == {
        people["an"],
        people["duc"],
    }
    assert len(ids(client, "/fhir/Patient", _lastUpdated="gt2000-01-01")) == 4
    assert ids(client, "/fhir/Patient", _lastUpdated="lt2000-01-01") == set()


def test_chain_and_has(client: TestClient, people: dict) -> None:
    oid = create(client, observation(f"Patient/{people['an']}"))
    create(client, observation(f"Patient/{people['hoa']}", code="2339-0"))
    obs_url = "/fhir/Observation"
    assert ids(client, obs_url, **{"subject:Patient.identifier": "001090012345"}) == {oid}
    assert ids(client, obs_url, **{"subject.family": "nguyen"}) == {oid}
    assert ids(client, obs_url, **{"patient.birthdate": "lt1980"}) == set()
    assert ids(client, "/fhir/Patient", **{"_has:Observation:patient:code": "8867-4"}) == {
        people["an"]
    }
    assert ids(client, "/fhir/Patient", **{"_has:Observation:subject:code": "2339-0"}) == {
        people["hoa"]
    }
    r = client.get(obs_url, params={"subject.x.y": "1"})
    assert r.status_code == 400


def test_include_and_revinclude(client: TestClient, people: dict) -> None:
    org = create(client, organization())
    p = patient(cccd="001099000001", managingOrganization={"reference": f"Organization/{org}"})
    pid = create(client, p)
    oid = create(client, observation(f"Patient/{pid}"))
    r = client.get(
        "/fhir/Observation", params={"_id": oid, "_include": "Observation:subject"}
    ).json()
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in r["entry"]}
    assert modes == {("Observation", "match"), ("Patient", "include")}
    assert r["total"] == 1
    r = client.get(
        "/fhir/Patient",
        params={
            "_id": pid,
            "_revinclude": "Observation:subject",
            "_include": "Patient:organization",
        },
    ).json()
    got = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in r["entry"]}
    assert got == {("Patient", "match"), ("Observation", "include"), ("Organization", "include")}
    r = client.get("/fhir/Observation", params={"_id": oid, "_include": "*"}).json()
    assert {e["resource"]["resourceType"] for e in r["entry"]} == {"Observation", "Patient"}


def test_sort_count_paging_and_total(client: TestClient, people: dict) -> None:
    r = client.get("/fhir/Patient", params={"_sort": "birthdate", "_count": 2}).json()
    assert [e["resource"]["id"] for e in r["entry"]] == [people["nguyet"], people["duc"]]
    assert r["total"] == 4
    nxt = next(link["url"] for link in r["link"] if link["relation"] == "next")
    r2 = client.get(nxt.replace("http://testserver", "")).json()
    assert [e["resource"]["id"] for e in r2["entry"]] == [people["an"], people["hoa"]]
    assert any(link["relation"] == "previous" for link in r2["link"])
    assert not any(link["relation"] == "next" for link in r2["link"])
    r = client.get("/fhir/Patient", params={"_sort": "-birthdate"}).json()
    assert [e["resource"]["id"] for e in r["entry"]][0] == people["hoa"]
    r = client.get("/fhir/Patient", params={"_sort": "family,-given"}).json()
    assert [e["resource"]["id"] for e in r["entry"]][0] == people["duc"]
    r = client.get("/fhir/Patient", params={"_count": 1, "_total": "accurate"}).json()
    assert r["total"] == 4 and len(r["entry"]) == 1
    r = client.get("/fhir/Patient", params={"_count": 1, "_total": "none"}).json()
    assert "total" not in r


def test_summary_count_and_elements(client: TestClient, people: dict) -> None:
    r = client.get("/fhir/Patient", params={"_summary": "count", "family": "nguyen"}).json()
    assert r["total"] == 2 and "entry" not in r
    r = client.get("/fhir/Patient", params={"_id": people["an"], "_elements": "name"}).json()
    res = r["entry"][0]["resource"]
    assert set(res) == {"resourceType", "id", "meta", "name"}
    assert any(t["code"] == "SUBSETTED" for t in res["meta"]["tag"])
    r = client.get("/fhir/Patient", params={"_id": people["an"], "_summary": "true"}).json()
    res = r["entry"][0]["resource"]
    assert "name" in res and "birthDate" in res and "text" not in res


def test_unknown_parameter_strict_and_lenient(client: TestClient, people: dict) -> None:
    r = client.get("/fhir/Patient", params={"hovaten": "x"}, headers={"Prefer": "handling=strict"})
    assert r.status_code == 400
    assert "hovaten" in r.json()["issue"][0]["diagnostics"]
    r = client.get("/fhir/Patient", params={"hovaten": "x"}, headers={"Prefer": "handling=lenient"})
    assert r.status_code == 200
    body = r.json()
    outcome = [e for e in body["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and "hovaten" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert body["total"] == 4


def test_bad_values_are_400_naming_parameter(client: TestClient) -> None:
    for params in (
        {"birthdate": "17/05/1990"},
        {"_count": "x"},
        {"family:fuzzy": "a"},
        {"identifier:missing": "maybe"},
        {"_sort": "nonsense"},
    ):
        # an unsupported modifier is refused under strict handling only (lenient: a warning)
        strict = {"Prefer": "handling=strict"} if "family:fuzzy" in params else {}
        r = client.get("/fhir/Patient", params=params, headers=strict)
        assert r.status_code == 400, params
        assert r.json()["issue"][0]["expression"], params


def test_elements_keeps_choice_elements_by_base_name(client: TestClient, people: dict) -> None:
    oid = create(client, observation(f"Patient/{people['an']}"))
    r = client.get("/fhir/Observation", params={"_id": oid, "_elements": "value,subject"}).json()
    res = r["entry"][0]["resource"]
    assert "valueQuantity" in res and "subject" in res and "effectiveDateTime" not in res
    assert res["status"] == "final"  # mandatory elements stay


def test_parameters_the_index_cannot_answer_are_reported(client: TestClient) -> None:
    name = "chromosome-variant-coordinate"
    r = client.get(
        "/fhir/MolecularSequence", params={name: "1$lt5"}, headers={"Prefer": "handling=strict"}
    )
    assert r.status_code == 400 and "not supported" in r.json()["issue"][0]["diagnostics"]
    cs = client.get("/fhir/metadata").json()
    ms = next(x for x in cs["rest"][0]["resource"] if x["type"] == "MolecularSequence")
    names = {p["name"] for p in ms["searchParam"]}
    assert name not in names and "chromosome" in names


def test_post_search_equals_get(client: TestClient, people: dict) -> None:
    r = client.post("/fhir/Patient/_search", data={"family": "nguyen"})
    assert r.status_code == 200
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {people["an"], people["nguyet"]}


def test_everything_returns_compartment_and_referenced(client: TestClient) -> None:
    org = create(client, organization())
    pid = create(client, patient(managingOrganization={"reference": f"Organization/{org}"}))
    oid = create(
        client, observation(f"Patient/{pid}", performer=[{"reference": f"Organization/{org}"}])
    )
    other = create(client, patient(cccd="001090000777"))
    create(client, observation(f"Patient/{other}"))
    r = client.get(f"/fhir/Patient/{pid}/$everything")
    assert r.status_code == 200
    got = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in r.json()["entry"]}
    assert got == {("Patient", pid), ("Observation", oid), ("Organization", org)}
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404
