"""The CapabilityStatement promises only what the server does: every interaction,
search parameter and operation it lists is asked of the server and must be answered
(not refused as unknown or unsupported), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import patient

FHIR = {"Content-Type": "application/fhir+json"}
STRICT = {"Prefer": "handling=strict"}

# A value of each search parameter type that the parser must accept (the value need not
# match anything: a listed parameter answers 200 with a Bundle, an unknown one 400).
VALUES = {
    "string": "a",
    "token": "http://example.org|x",
    "date": "ge2020-01-01",
    "reference": "Patient/x",
    "number": "1",
    "quantity": "5.4|http://unitsofmeasure.org|mg",
    "uri": "http://example.org/x",
    "special": "10|20|5|km",
}
REFUSALS = (404, 405, 501)  # "no such route or interaction": what a listed one must not be


def _metadata(client: TestClient) -> dict[str, Any]:
    r = client.get("/fhir/metadata")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _composite_value(param: dict[str, Any]) -> str:
    # the components' values joined with "$"; two tokens or a token and a quantity
    if param["name"].endswith("-quantity"):
        return "http://loinc.org|8480-6$ge100"
    if param["name"].endswith("-date"):
        return "http://loinc.org|8480-6$ge2020"
    if param["name"].endswith("-string"):
        return "http://loinc.org|8480-6$a"
    return "http://loinc.org|8480-6$http://example.org|x"


def test_every_listed_search_parameter_answers(client: TestClient) -> None:
    rest = _metadata(client)["rest"][0]
    asked = 0
    failures = []
    for res in rest["resource"]:
        for param in res.get("searchParam", []):
            kind = param["type"]
            value = _composite_value(param) if kind == "composite" else VALUES[kind]
            r = client.get(f"/fhir/{res['type']}", params={param["name"]: value}, headers=STRICT)
            asked += 1
            if r.status_code != 200 or r.json().get("resourceType") != "Bundle":
                failures.append(
                    f"{res['type']}?{param['name']}={value}: {r.status_code} {r.text[:200]}"
                )
    assert asked > 1000  # every type's parameters, not a handful
    assert not failures, "\n".join(failures[:20])


def test_system_search_parameters_answer(client: TestClient) -> None:
    rest = _metadata(client)["rest"][0]
    codes = {i["code"] for i in rest.get("interaction", [])}
    for param in rest.get("searchParam", []):
        value = VALUES[param["type"]]
        if "search-system" in codes:
            r = client.get(
                "/fhir", params={param["name"]: value, "_type": "Patient"}, headers=STRICT
            )
            assert r.status_code == 200, (param, r.text)
            assert r.json()["resourceType"] == "Bundle"


def test_every_listed_interaction_answers(client: TestClient) -> None:
    """Each type's interactions on a resource of that type: the server answers each one
    with what the interaction is (a Bundle, a resource, an OperationOutcome for an id
    that is not there), never 'no such interaction'."""
    rest = _metadata(client)["rest"][0]
    by_type = {res["type"]: res for res in rest["resource"]}
    for rtype in ("Patient", "Observation", "Organization", "Encounter", "Binary"):
        assert rtype in by_type, rtype
    created = client.post("/fhir/Patient", json=patient(), headers=FHIR)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    for rtype, res in by_type.items():
        codes = {i["code"] for i in res["interaction"]}
        for code in codes:
            if code == "read":
                r = client.get(f"/fhir/{rtype}/nothing-here")
                assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
            elif code == "vread":
                r = client.get(f"/fhir/{rtype}/nothing-here/_history/1")
                assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
            elif code == "history-instance":
                r = client.get(f"/fhir/{rtype}/nothing-here/_history")
                assert r.status_code in (200, 404), (rtype, r.text)
            elif code in ("history-type", "search-type"):
                path = f"/fhir/{rtype}/_history" if code == "history-type" else f"/fhir/{rtype}"
                r = client.get(path)
                assert r.status_code == 200 and r.json()["resourceType"] == "Bundle", (rtype, code)
            elif code in ("create", "update"):
                # an empty resource of the wrong type is refused as content, not as a route
                url = f"/fhir/{rtype}" if code == "create" else f"/fhir/{rtype}/x1"
                call = client.post if code == "create" else client.put
                r = call(url, json={"resourceType": "Basic-not-a-type"}, headers=FHIR)
                assert r.status_code not in REFUSALS and r.status_code >= 400, (rtype, code)
                assert r.json()["resourceType"] == "OperationOutcome"
            elif code == "delete":
                r = client.delete(f"/fhir/{rtype}/nothing-here")
                assert r.status_code in (200, 204, 404), (rtype, r.text)
            else:
                pytest.fail(f"{rtype}: interaction {code} is listed but this test does not know it")
    # the Patient created above goes through every interaction for real
    p = client.get(f"/fhir/Patient/{pid}").json()
    p["gender"] = "female" if p.get("gender") != "female" else "male"
    assert client.put(f"/fhir/Patient/{pid}", json=p, headers=FHIR).status_code == 200
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 200
    assert client.get(f"/fhir/Patient/{pid}/_history").json()["total"] == 2
    assert client.delete(f"/fhir/Patient/{pid}").status_code in (200, 204)


def test_every_listed_system_interaction_and_operation_answers(client: TestClient) -> None:
    rest = _metadata(client)["rest"][0]
    for i in rest.get("interaction", []):
        code = i["code"]
        if code in ("transaction", "batch"):
            bundle = {"resourceType": "Bundle", "type": code, "entry": []}
            r = client.post("/fhir", json=bundle, headers=FHIR)
            assert r.status_code == 200 and r.json()["type"] == f"{code}-response", r.text
        elif code == "history-system":
            r = client.get("/fhir/_history")
            assert r.status_code == 200 and r.json()["resourceType"] == "Bundle"
        elif code == "search-system":
            r = client.get("/fhir", params={"_type": "Patient"})
            assert r.status_code == 200 and r.json()["resourceType"] == "Bundle"
        else:
            pytest.fail(f"system interaction {code} is listed but this test does not know it")
    for op in rest.get("operation", []):
        r = client.get(f"/fhir/${op['name']}")
        assert r.status_code not in REFUSALS, (op, r.text)
    created = client.post("/fhir/Patient", json=patient(), headers=FHIR).json()
    for res in rest["resource"]:
        for op in res.get("operation", []):
            name = op["name"]
            if res["type"] == "Patient" and name == "everything":
                r = client.get(f"/fhir/Patient/{created['id']}/$everything")
                assert r.status_code == 200 and r.json()["resourceType"] == "Bundle"
                continue
            # type-level operations: asked with an empty Parameters body they answer (an
            # OperationOutcome naming what is missing, or a result), never "no route"
            body = {"resourceType": "Parameters", "parameter": []}
            r = client.post(f"/fhir/{res['type']}/${name}", json=body, headers=FHIR)
            assert r.status_code not in REFUSALS, (res["type"], name, r.status_code, r.text)
            assert r.json()["resourceType"] in (
                "OperationOutcome",
                "Parameters",
                "Bundle",
                "Patient",
            )
