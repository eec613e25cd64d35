"""R4 search over HTTP on both stores: system-level and compartment search, canonical
``url|version``, ``Location?near``, long OR lists, lenient/strict handling of what is
not understood, and FHIRPath expressions in the OperationOutcomes."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from tests.factories import CCCD, observation, organization, patient
from tests.test_access import World, world  # noqa: F401  (the access fixture)

FHIR = {"Content-Type": "application/fhir+json"}
STRICT = {"Prefer": "handling=strict"}
TAGS = "http://example.org/tags"


def create(client: TestClient, resource: dict[str, Any]) -> str:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def matches(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in body.get("entry", [])
        if e["search"]["mode"] == "match"
    }


def get(client: TestClient, path: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
    r = client.get(path, params=params, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()


def tagged(resource: dict[str, Any], tag: str) -> dict[str, Any]:
    return {**resource, "meta": {"tag": [{"system": TAGS, "code": tag}]}}


@pytest.fixture
def mixed(client: TestClient) -> dict[str, str]:
    out = {
        "pat": create(client, tagged(patient("Lê", ["Văn", "Tám"], "001090000001"), "blue")),
        "pat2": create(client, patient("Phạm", ["Thị", "Mai"], "001090000002")),
        "org": create(client, tagged(organization(), "blue")),
    }
    out["obs"] = create(client, tagged(observation(f"Patient/{out['pat']}"), "blue"))
    out["obs2"] = create(client, observation(f"Patient/{out['pat2']}"))
    return out


# -- 1. system-level search ---------------------------------------------------------


def test_system_search_with_type_and_common_params(client: TestClient, mixed: dict) -> None:
    blue = {("Patient", mixed["pat"]), ("Observation", mixed["obs"])}
    body = get(client, "/fhir", _type="Patient,Observation", _tag=f"{TAGS}|blue")
    assert matches(body) == blue and body["total"] == 2
    # without _type: every type, here the Organization too
    assert matches(get(client, "/fhir", _tag=f"{TAGS}|blue")) == blue | {
        ("Organization", mixed["org"])
    }
    ids = ",".join([mixed["pat"], mixed["obs2"], mixed["org"]])
    assert matches(get(client, "/fhir", _type="Observation,Patient", _id=ids)) == {
        ("Patient", mixed["pat"]),
        ("Observation", mixed["obs2"]),
    }
    assert get(client, "/fhir", _type="Patient", _lastUpdated="gt2000-01-01")["total"] == 2
    assert get(client, "/fhir", _type="Patient", _lastUpdated="lt2000-01-01")["total"] == 0
    body = get(client, "/fhir", _type="Patient,Observation", _summary="count")
    assert body["total"] == 4 and "entry" not in body
    body = get(client, "/fhir", _type="Patient,Observation", _sort="-_lastUpdated", _count=1)
    assert matches(body) == {("Observation", mixed["obs2"])}  # the last one written
    assert body["total"] == 4 and "_type=Patient" in body["link"][0]["url"]
    # a Patient search parameter is not common to Observation
    r = client.get("/fhir", params={"_type": "Patient,Observation", "family": "le"}, headers=STRICT)
    assert r.status_code == 400 and "family" in r.json()["issue"][0]["diagnostics"]
    body = get(client, "/fhir", _type="Patient,Observation", family="le")
    assert body["total"] == 4 and any(e["search"]["mode"] == "outcome" for e in body["entry"])
    # _profile, _security and _source are common parameters as well
    profile = "http://example.org/StructureDefinition/vn-core"
    secure = {
        **observation(f"Patient/{mixed['pat2']}"),
        "meta": {
            "profile": [profile],
            "security": [{"system": TAGS, "code": "R"}],
            "source": "http://example.org/his#1",
        },
    }
    sid = create(client, secure)
    pid = create(client, {**patient("Hồ", ["Lan"], None), "meta": {"profile": [profile]}})
    both = {("Observation", sid), ("Patient", pid)}
    assert matches(get(client, "/fhir", _type="Patient,Observation", _profile=profile)) == both
    assert matches(get(client, "/fhir", _profile=profile)) == both
    assert matches(get(client, "/fhir", _security=f"{TAGS}|R")) == {("Observation", sid)}
    assert matches(get(client, "/fhir", _source="http://example.org/his#1")) == {
        ("Observation", sid)
    }
    assert matches(get(client, "/fhir", **{"_security:not": f"{TAGS}|R", "_profile": profile})) == {
        ("Patient", pid)
    }
    # a parameter every type listed shares is fine: clinical-patient
    body = get(client, "/fhir", _type="Observation", subject=f"Patient/{mixed['pat']}")
    assert matches(body) == {("Observation", mixed["obs"])}


def test_system_search_post_and_bad_type(client: TestClient, mixed: dict) -> None:
    r = client.post(
        "/fhir/_search",
        content=f"_type=Patient,Observation&_tag={TAGS}|blue",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    assert matches(r.json()) == {("Patient", mixed["pat"]), ("Observation", mixed["obs"])}
    r = client.get("/fhir", params={"_type": "Patient,Nonsense"})
    assert r.status_code == 400 and "Nonsense" in r.json()["issue"][0]["diagnostics"]


def test_capability_statement_declares_new_search(client: TestClient) -> None:
    cs = client.get("/fhir/metadata").json()
    rest = cs["rest"][0]
    assert {"code": "search-system"} in rest["interaction"]
    assert rest["compartment"] == ["http://hl7.org/fhir/CompartmentDefinition/patient"]
    assert {p["name"] for p in rest["searchParam"]} >= {"_type", "_id", "_lastUpdated", "_tag"}
    location = next(r for r in rest["resource"] if r["type"] == "Location")
    assert any(p["name"] == "near" for p in location["searchParam"])


def test_system_search_goes_through_the_gate(world: World) -> None:  # noqa: F811
    # a clinician sees the patients they treat (p1, p3), across types too
    body = world.get("doc-a", "/fhir", _type="Patient,Observation").json()
    seen = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in body["entry"]}
    assert seen == {
        ("Patient", "p1"),
        ("Patient", "p3"),
        ("Observation", world.obs["p1"]),
        ("Observation", world.obs["p3"]),
    }
    assert body["total"] == 4
    # without _type: only types the token may search; with a type it may not: 403
    token = world.token("doc-a", scopes="user/Observation.rs")
    h = {"Authorization": f"Bearer {token}"}
    body = world.client.get("/fhir", headers=h).json()
    assert {e["resource"]["resourceType"] for e in body["entry"]} == {"Observation"}
    r = world.client.get("/fhir", params={"_type": "Patient,Observation"}, headers=h)
    assert r.status_code == 403
    # and each of the three is audited as search-system, the refused one too
    r = world.get("aud", "/fhir/AuditEvent", agent="doc-a", _count="100")
    assert r.status_code == 200
    codes = [s["code"] for e in r.json()["entry"] for s in e["resource"]["subtype"]]
    assert codes.count("search-system") == 3


# -- 2. compartment search ----------------------------------------------------------


def test_patient_compartment_search(client: TestClient, mixed: dict) -> None:
    pat, pat2 = mixed["pat"], mixed["pat2"]
    performed = create(
        client,
        observation(f"Patient/{pat2}", performer=[{"reference": f"Patient/{pat}"}]),
    )
    body = get(client, f"/fhir/Patient/{pat}/Observation")
    # subject or performer: the OR over the compartment's Observation parameters
    assert matches(body) == {("Observation", mixed["obs"]), ("Observation", performed)}
    assert matches(get(client, f"/fhir/Patient/{pat}/Observation", _tag=f"{TAGS}|blue")) == {
        ("Observation", mixed["obs"])
    }
    assert matches(get(client, f"/fhir/Patient/{pat2}/Observation")) == {
        ("Observation", mixed["obs2"]),
        ("Observation", performed),
    }
    enc = create(
        client,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{pat}"},
        },
    )
    everything = matches(get(client, f"/fhir/Patient/{pat}/*"))
    assert everything == {
        ("Observation", mixed["obs"]),
        ("Observation", performed),
        ("Encounter", enc),
    }
    assert matches(get(client, f"/fhir/Patient/{pat}/*", _type="Encounter")) == {("Encounter", enc)}
    # Organization is not in the Patient compartment
    r = client.get(f"/fhir/Patient/{pat}/Organization")
    assert r.status_code == 400 and "compartment" in r.json()["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Patient/{pat}/Nonsense").status_code == 404


def test_compartment_search_goes_through_the_gate(world: World) -> None:  # noqa: F811
    r = world.get("doc-a", "/fhir/Patient/p1/Observation")
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {world.obs["p1"]}
    # a patient the clinician has no relationship with: nothing, not even a total
    r = world.get("doc-a", "/fhir/Patient/p5/Observation").json()
    assert r["total"] == 0 and "entry" not in r
    r = world.get("doc-a", "/fhir/Patient/p5/*").json()
    assert r["total"] == 0
    token = world.token("doc-a", scopes="user/Patient.rs")
    r = world.client.get(
        "/fhir/Patient/p1/Observation", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 403


def test_compartment_table_is_derived_from_the_definition() -> None:
    import json

    from lienthong.fhir.interactions.search import compartment_params
    from tests.conftest import SHARED, need_shared

    source = need_shared(SHARED / "standards/fhir-r4/compartmentdefinition-patient.json")
    definition = json.loads(source.read_text(encoding="utf-8"))
    expected = {r["code"]: tuple(r["param"]) for r in definition["resource"] if r.get("param")}
    assert compartment_params("Patient") == expected


# -- 3. canonical url|version --------------------------------------------------------


def value_set(url: str, version: str) -> dict[str, Any]:
    return {"resourceType": "ValueSet", "status": "active", "url": url, "version": version}


def test_canonical_url_with_version_and_below(client: TestClient) -> None:
    base = "http://example.org/fhir/ValueSet/gioi-tinh"
    v1 = create(client, value_set(base, "1.0"))
    v12 = create(client, value_set(base, "1.2"))
    v123 = create(client, value_set(base, "1.2.3"))
    v2 = create(client, value_set(base, "2.0"))
    other = create(client, value_set(base + "-khac", "1.2"))
    child = create(client, value_set("http://example.org/fhir/ValueSet/x/y", "1"))

    def vs(**params: str) -> set[str]:
        return {rid for _, rid in matches(get(client, "/fhir/ValueSet", **params))}

    assert vs(url=base) == {v1, v12, v123, v2}
    assert vs(url=f"{base}|1.2") == {v12}
    assert vs(url=f"{base}|1.2,{base}|2.0") == {v12, v2}
    assert vs(url=f"{base}|9") == set()
    assert vs(**{"url:below": f"{base}|1.2"}) == {v12, v123}
    assert vs(**{"url:below": f"{base}|1"}) == {v1, v12, v123}
    assert vs(**{"url:below": "http://example.org/fhir/ValueSet/"}) == {
        v1,
        v12,
        v123,
        v2,
        other,
        child,
    }
    q = {
        "resourceType": "Questionnaire",
        "status": "active",
        "url": "http://example.org/q/kham",
        "version": "3",
    }
    qid = create(client, q)
    found = get(client, "/fhir/Questionnaire", url="http://example.org/q/kham|3")
    assert matches(found) == {("Questionnaire", qid)}
    r = client.get("/fhir/ValueSet", params={"url:above": f"{base}|1"})
    assert r.status_code == 400


# -- 4. Location?near ------------------------------------------------------------------


def location(name: str, lat: float, lon: float) -> dict[str, Any]:
    return {
        "resourceType": "Location",
        "name": name,
        "position": {"latitude": lat, "longitude": lon},
    }


def test_location_near(client: TestClient) -> None:
    hoan_kiem = create(client, location("Hoàn Kiếm", 21.0285, 105.8542))
    bach_mai = create(client, location("Bạch Mai", 21.0012, 105.8412))  # ~3.3 km away
    hai_phong = create(client, location("Hải Phòng", 20.8449, 106.6881))  # ~89 km
    hcm = create(client, location("TP HCM", 10.7769, 106.7009))  # ~1,140 km
    create(client, {"resourceType": "Location", "name": "no position"})

    def near(value: str) -> set[str]:
        return {rid for _, rid in matches(get(client, "/fhir/Location", near=value))}

    here = "21.0285|105.8542"
    assert near(f"{here}|1|km") == {hoan_kiem}
    assert near(f"{here}|5|km") == {hoan_kiem, bach_mai}
    assert near(f"{here}|5") == {hoan_kiem, bach_mai}  # km by default
    assert near(f"{here}|3000|m") == {hoan_kiem}
    assert near(f"{here}|4000|m") == {hoan_kiem, bach_mai}
    assert near(f"{here}|100|km") == {hoan_kiem, bach_mai, hai_phong}
    assert near(f"{here}|80|[mi_i]") == {hoan_kiem, bach_mai, hai_phong}
    assert near(f"{here}|50|[mi_i]") == {hoan_kiem, bach_mai}
    assert near(f"{here}|2000|km") == {hoan_kiem, bach_mai, hai_phong, hcm}
    assert near(here) == {hoan_kiem, bach_mai}  # the default distance
    assert near("10.7769|106.7009|1") == {hcm}
    # nearest first
    found = get(client, "/fhir/Location", near="20.8449|106.6881|2000")
    assert [e["resource"]["id"] for e in found["entry"]] == [hai_phong, hoan_kiem, bach_mai, hcm]
    found = get(client, "/fhir/Location", near="10.7769|106.7009|2000")
    assert [e["resource"]["id"] for e in found["entry"]] == [hcm, hai_phong, bach_mai, hoan_kiem]
    for bad in ("abc|105", "21.0|105.8|5|parsec", "95|105|1", "21|105|-1"):
        r = client.get("/fhir/Location", params={"near": bad})
        assert r.status_code == 400, bad
        assert r.json()["issue"][0]["expression"] == ["near"]


# -- 5. long OR lists ------------------------------------------------------------------


def post_search(client: TestClient, res_type: str, **params: str) -> set[str]:
    """POST _search (long lists outgrow a URL), the matching ids."""
    r = client.post(
        f"/fhir/{res_type}/_search",
        content=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    return {rid for _, rid in matches(r.json())}


def test_thousands_of_or_values(client: TestClient) -> None:
    pats = [create(client, patient(f"Võ{i}", ["An"], f"07930100{i:04d}")) for i in range(3)]
    obs = [create(client, observation(f"Patient/{p}")) for p in pats]
    fake = [f"khong-co-{i}" for i in range(2000)]
    r = client.get("/fhir/Patient", params={"_id": ",".join([*fake, pats[1]])})
    assert r.status_code == 200, r.text
    assert {rid for _, rid in matches(r.json())} == {pats[1]}
    idents = [f"{CCCD}|99{i:010d}" for i in range(2000)] + [f"{CCCD}|079301000002"]
    assert post_search(client, "Patient", identifier=",".join(idents)) == {pats[2]}
    codes = [f"99{i:010d}" for i in range(2000)] + ["079301000000"]
    assert post_search(client, "Patient", identifier=",".join(codes)) == {pats[0]}
    names = [f"tên{i}" for i in range(1500)] + ["võ1"]
    assert post_search(client, "Patient", family=",".join(names)) == {pats[1]}
    exact = ",".join([*names, "Võ2"])
    assert post_search(client, "Patient", **{"family:exact": exact}) == {pats[2]}
    assert post_search(client, "Patient", **{"identifier:not": ",".join(codes)}) == {
        pats[1],
        pats[2],
    }
    refs = [f"Patient/{f}" for f in fake] + [f"Patient/{pats[0]}", pats[2]]
    assert post_search(client, "Observation", subject=",".join(refs)) == {obs[0], obs[2]}
    dates = ",".join(f"19{i % 100:02d}-01-0{1 + i % 9}" for i in range(1200))
    assert post_search(client, "Patient", birthdate=dates) == set()
    assert post_search(client, "Patient", birthdate=dates + ",1990-05-17") == set(pats)
    # and in a system-level search
    r = client.post(
        "/fhir/_search",
        content=urlencode({"_type": "Patient,Observation", "_id": ",".join([*fake, obs[1]])}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and matches(r.json()) == {("Observation", obs[1])}


# -- 6. unknown modifiers and parameters --------------------------------------------


def test_unknown_modifier_is_a_warning_unless_strict(client: TestClient, mixed: dict) -> None:
    body = get(client, "/fhir/Patient", **{"family:fuzzy": "le"})
    assert body["total"] == 2  # ignored: every patient
    outcome = [e for e in body["entry"] if e["search"]["mode"] == "outcome"]
    issue = outcome[0]["resource"]["issue"][0]
    assert issue["severity"] == "warning" and ":fuzzy" in issue["diagnostics"]
    body = get(client, "/fhir/Patient", {"Prefer": "handling=lenient"}, **{"gender:above": "x"})
    assert body["total"] == 2
    r = client.get("/fhir/Patient", params={"family:fuzzy": "le"}, headers=STRICT)
    assert r.status_code == 400 and ":fuzzy" in r.json()["issue"][0]["diagnostics"]
    r = client.get("/fhir/Patient", params={"tenbenhnhan": "le"}, headers=STRICT)
    assert r.status_code == 400
    # the understood parameters still apply beside an ignored one
    body = get(client, "/fhir/Patient", **{"family": "le", "family:fuzzy": "x"})
    assert matches(body) == {("Patient", mixed["pat"])}


# -- 7. FHIRPath expressions ------------------------------------------------------------

# FHIRPath paths (https://hl7.org/fhirpath/N1/): identifiers or `delimited identifiers`,
# each with an optional [index], joined by dots
_IDENT = r"(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)(?:\[[0-9]+\])?"
FHIRPATH = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")


def expressions(body: dict[str, Any]) -> list[str]:
    return [e for issue in body["issue"] for e in issue.get("expression", [])]


def test_expressions_are_fhirpath(client: TestClient) -> None:
    bad_resources = [
        ({"resourceType": "Patient", "name": [{"given": ["An", 5]}]}, "Patient.name[0].given[1]"),
        ({"resourceType": "Patient", "_birthDate": {"id": 5}}, "Patient.birthDate.id"),
        ({"resourceType": "Patient", "identifier": [{"use": "x"}]}, "Patient.identifier[0].use"),
        (
            {"resourceType": "Patient", "contact": [{"name": {"given": [1]}}]},
            "Patient.contact[0].name.given[0]",
        ),
    ]
    for resource, expected in bad_resources:
        r = client.post("/fhir/Patient", json=resource, headers=FHIR)
        assert r.status_code in (400, 422), resource
        found = expressions(r.json())
        assert expected in found, found
        assert all(FHIRPATH.fullmatch(e) for e in found), found
    bad_searches = [
        {"birthdate": "17/05/1990"},
        {"address-city:fuzzy": "x"},
        {"_count": "x"},
        {"identifier:missing": "maybe"},
        {"subject:Patient.name": "x"},
        {"general-practitioner:Nonsense": "x"},
    ]
    for params in bad_searches:
        r = client.get("/fhir/Patient", params=params, headers=STRICT)
        assert r.status_code == 400, params
        found = expressions(r.json())
        assert found and all(FHIRPATH.fullmatch(e) for e in found), (params, found)
    # the warnings of a lenient search too
    body = get(client, "/fhir/Patient", **{"address-city:fuzzy": "x"})
    outcome = next(e for e in body["entry"] if e["search"]["mode"] == "outcome")
    assert expressions(outcome["resource"]) == ["`address-city:fuzzy`"]
    # and inside a transaction
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": patient(),
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": "birthdate=17/05/1990",
                },
            },
            {
                "resource": {"resourceType": "Patient", "name": [{"given": [5]}]},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    r = client.post("/fhir", json=bundle, headers=FHIR)
    assert r.status_code in (400, 422)
    found = expressions(r.json())
    assert found and all(FHIRPATH.fullmatch(e) for e in found), found
