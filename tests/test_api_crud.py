"""The REST interactions of https://hl7.org/fhir/R4/http.html, request in, response out."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import CCCD, patient

FHIR = {"Content-Type": "application/fhir+json"}


def create(client: TestClient, resource: dict, **headers: str) -> dict:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers={**FHIR, **headers})
    assert r.status_code in (200, 201), r.text
    return r.json()


def test_metadata_lists_types_params_and_interactions(client: TestClient) -> None:
    r = client.get("/fhir/metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    by_type = {res["type"]: res for res in rest["resource"]}
    patient_params = {p["name"]: p["type"] for p in by_type["Patient"]["searchParam"]}
    assert patient_params["family"] == "string" and patient_params["identifier"] == "token"
    assert patient_params["birthdate"] == "date" and "near" not in patient_params
    obs_params = {p["name"]: p["type"] for p in by_type["Observation"]["searchParam"]}
    assert obs_params["code-value-quantity"] == "composite"
    assert {i["code"] for i in rest["interaction"]} == {
        "transaction",
        "batch",
        "history-system",
        "search-system",
    }
    assert by_type["Patient"]["operation"][0]["name"] == "everything"


def test_create_read_returns_location_etag_and_meta(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json=patient(), headers=FHIR)
    assert r.status_code == 201
    body = r.json()
    pid = body["id"]
    assert r.headers["location"] == f"http://testserver/fhir/Patient/{pid}/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert body["meta"]["versionId"] == "1" and body["meta"]["lastUpdated"].endswith("Z")
    got = client.get(f"/fhir/Patient/{pid}")
    assert got.status_code == 200 and got.headers["etag"] == 'W/"1"'
    assert got.json()["name"][0]["family"] == "Nguyễn"
    assert "last-modified" in got.headers


def test_create_ignores_client_id(client: TestClient) -> None:
    body = create(client, {**patient(), "id": "chosen-by-client"})
    assert body["id"] != "chosen-by-client"


def test_update_versions_and_vread(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    changed = {**patient(family="Trần"), "id": pid}
    r = client.put(f"/fhir/Patient/{pid}", json=changed, headers=FHIR)
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'
    v1 = client.get(f"/fhir/Patient/{pid}/_history/1").json()
    v2 = client.get(f"/fhir/Patient/{pid}/_history/2").json()
    assert v1["name"][0]["family"] == "Nguyễn" and v2["name"][0]["family"] == "Trần"
    assert client.get(f"/fhir/Patient/{pid}/_history/3").status_code == 404


def test_update_creates_with_client_id(client: TestClient) -> None:
    r = client.put("/fhir/Patient/vn-001", json={**patient(), "id": "vn-001"}, headers=FHIR)
    assert r.status_code == 201
    assert r.headers["location"].endswith("/Patient/vn-001/_history/1")
    assert client.get("/fhir/Patient/vn-001").status_code == 200


def test_update_id_mismatch_is_400_naming_id(client: TestClient) -> None:
    r = client.put("/fhir/Patient/a1", json={**patient(), "id": "b2"}, headers=FHIR)
    assert r.status_code == 400
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Patient.id"]


def test_if_match_conflict_is_412(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    body = {**patient(family="Lê"), "id": pid}
    ok = client.put(f"/fhir/Patient/{pid}", json=body, headers={**FHIR, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = client.put(f"/fhir/Patient/{pid}", json=body, headers={**FHIR, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"2"'


def test_delete_is_logical_410_and_history_kept(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    r = client.delete(f"/fhir/Patient/{pid}")
    assert r.status_code == 204
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410
    hist = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert hist["type"] == "history" and hist["total"] == 2
    assert [e["request"]["method"] for e in hist["entry"]] == ["DELETE", "POST"]
    assert client.get("/fhir/Patient", params={"_id": pid}).json()["total"] == 0
    # deleting again changes nothing; updating brings it back as version 3
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    r = client.put(f"/fhir/Patient/{pid}", json={**patient(), "id": pid}, headers=FHIR)
    assert r.status_code == 201 and r.headers["etag"] == 'W/"3"'


def test_read_unknown_is_404_and_unknown_type_is_404(client: TestClient) -> None:
    assert client.get("/fhir/Patient/nope").status_code == 404
    r = client.get("/fhir/Patientx/1")
    assert r.status_code == 404 and "Patientx" in r.json()["issue"][0]["diagnostics"]


def test_wrong_method_is_405_outcome(client: TestClient) -> None:
    r = client.patch("/fhir/Patient/1", json={})
    assert r.status_code == 405
    assert r.json()["resourceType"] == "OperationOutcome"


def test_invalid_resource_is_422_naming_element(client: TestClient) -> None:
    bad = patient()
    bad["birthDate"] = "17/05/1990"
    r = client.post("/fhir/Patient", json=bad, headers=FHIR)
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Patient.birthDate"]
    unknown = {**patient(), "hoTen": "x"}
    r = client.post("/fhir/Patient", json=unknown, headers=FHIR)
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Patient.hoTen"]
    assert client.get("/fhir/Patient").json()["total"] == 0


def test_code_outside_required_binding_is_422(client: TestClient) -> None:
    bad = patient(gender="nam")
    bad["identifier"][0]["use"] = "chinh"
    r = client.post("/fhir/Patient", json=bad, headers=FHIR)
    assert r.status_code == 422
    issues = r.json()["issue"]
    assert [i["expression"] for i in issues] == [["Patient.gender"], ["Patient.identifier[0].use"]]
    assert all(i["code"] == "code-invalid" for i in issues)
    assert "'nam' is not one of female, male, other, unknown" in issues[0]["diagnostics"]


def test_malformed_json_and_type_mismatch_are_400(client: TestClient) -> None:
    r = client.post("/fhir/Patient", content=b"{not json", headers=FHIR)
    assert r.status_code == 400 and "JSON" in r.json()["issue"][0]["diagnostics"]
    r = client.post("/fhir/Observation", json=patient(), headers=FHIR)
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["resourceType"]


def test_unsupported_content_type_is_415(client: TestClient) -> None:
    r = client.post(
        "/fhir/Patient", content=b"<Patient/>", headers={"Content-Type": "application/xml"}
    )
    assert r.status_code == 415


def test_conditional_create(client: TestClient) -> None:
    cond = f"identifier={CCCD}|001090012345"
    first = client.post("/fhir/Patient", json=patient(), headers={**FHIR, "If-None-Exist": cond})
    assert first.status_code == 201
    again = client.post("/fhir/Patient", json=patient(), headers={**FHIR, "If-None-Exist": cond})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    create(client, patient(cccd="001090099999", family="Nguyễn"))
    many = client.post(
        "/fhir/Patient", json=patient(), headers={**FHIR, "If-None-Exist": "family=nguyen"}
    )
    assert many.status_code == 412


def test_conditional_update_and_delete(client: TestClient) -> None:
    url = f"/fhir/Patient?identifier={CCCD}|079200000001"
    r = client.put(url, json=patient(cccd="079200000001"), headers=FHIR)
    assert r.status_code == 201
    pid = r.json()["id"]
    r = client.put(url, json=patient(cccd="079200000001", family="Phạm"), headers=FHIR)
    assert r.status_code == 200 and r.json()["id"] == pid and r.headers["etag"] == 'W/"2"'
    create(client, patient(cccd="079200000002", family="Phạm"))
    assert client.put("/fhir/Patient?family=pham", json=patient(), headers=FHIR).status_code == 412
    assert client.delete(url).status_code == 204
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    assert client.delete("/fhir/Patient?family=pham").status_code == 204  # one left


def test_prefer_return_minimal_and_outcome(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json=patient(), headers={**FHIR, "Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b"" and "location" in r.headers
    r = client.post(
        "/fhir/Patient", json=patient(), headers={**FHIR, "Prefer": "return=OperationOutcome"}
    )
    assert r.json()["resourceType"] == "OperationOutcome"


def test_history_type_and_system_with_paging(client: TestClient) -> None:
    ids = [create(client, patient(cccd=None, family=f"H{i}"))["id"] for i in range(3)]
    client.put(f"/fhir/Patient/{ids[0]}", json={**patient(family="Đỗ"), "id": ids[0]}, headers=FHIR)
    h = client.get("/fhir/Patient/_history", params={"_count": 2}).json()
    assert h["total"] == 4 and len(h["entry"]) == 2
    assert h["entry"][0]["resource"]["name"][0]["family"] == "Đỗ"
    nxt = [link["url"] for link in h["link"] if link["relation"] == "next"][0]
    page2 = client.get(nxt.replace("http://testserver", "")).json()
    assert len(page2["entry"]) == 2
    system = client.get("/fhir/_history").json()
    assert system["total"] == 4


def test_if_none_match_gives_304(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    r = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304
