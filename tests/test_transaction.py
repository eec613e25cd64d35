"""batch and transaction bundles (https://hl7.org/fhir/R4/http.html#transaction)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from lienthong.fhir.engine import FhirEngine
from lienthong.storage.base import ResourceStore
from tests.factories import CCCD, observation, organization, patient

FHIR = {"Content-Type": "application/fhir+json"}
ORG_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/provider-code"


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        e["fullUrl"] = full_url
    return e


def total(client: TestClient, rtype: str) -> int:
    return int(client.get(f"/fhir/{rtype}", params={"_summary": "count"}).json()["total"])


def test_transaction_resolves_urn_uuid_references(client: TestClient) -> None:
    p_url = "urn:uuid:5d1e4a3c-0000-4000-8000-000000000001"
    b = bundle(
        "transaction",
        post(observation(p_url), "urn:uuid:5d1e4a3c-0000-4000-8000-000000000002"),
        post(patient(), p_url),
    )
    r = client.post("/fhir", json=b, headers=FHIR)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    obs_loc, pat_loc = (e["response"]["location"] for e in out["entry"])
    assert obs_loc.startswith("Observation/") and pat_loc.startswith("Patient/")
    pid = pat_loc.split("/")[1]
    obs = client.get("/fhir/" + obs_loc.rsplit("/_history", 1)[0]).json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"


def test_transaction_is_atomic(client: TestClient) -> None:
    bad = patient()
    bad["gender"] = 42
    b = bundle("transaction", post(organization()), post(patient(cccd="001090000001")), post(bad))
    r = client.post("/fhir", json=b, headers=FHIR)
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[2].resource.gender"]
    assert total(client, "Patient") == 0 and total(client, "Organization") == 0


def test_transaction_failing_late_rolls_back_earlier_writes(client: TestClient) -> None:
    existing = client.post("/fhir/Patient", json=patient(), headers=FHIR).json()["id"]
    b = bundle(
        "transaction",
        {"request": {"method": "DELETE", "url": f"Patient/{existing}"}},
        post(organization()),
        {
            "resource": {**patient(family="Vũ"), "id": "p2"},
            "request": {"method": "PUT", "url": "Patient/p2", "ifMatch": 'W/"7"'},
        },
    )
    r = client.post("/fhir", json=b, headers=FHIR)
    assert r.status_code == 412
    assert client.get(f"/fhir/Patient/{existing}").status_code == 200
    assert total(client, "Organization") == 0


def test_transaction_if_none_exist_and_conditional_reference(client: TestClient) -> None:
    org = organization()
    cond = f"identifier={ORG_SYSTEM}|01929"
    first = client.post(
        "/fhir", json=bundle("transaction", post(org, ifNoneExist=cond)), headers=FHIR
    ).json()
    org_id = first["entry"][0]["response"]["location"].split("/")[1]
    p = patient(managingOrganization={"reference": f"Organization?identifier={ORG_SYSTEM}|01929"})
    b = bundle("transaction", post(organization(), ifNoneExist=cond), post(p))
    r = client.post("/fhir", json=b, headers=FHIR).json()
    assert r["entry"][0]["response"]["status"] == "200 OK"
    assert r["entry"][0]["response"]["location"].split("/")[1] == org_id
    pid = r["entry"][1]["response"]["location"].split("/")[1]
    assert client.get(f"/fhir/Patient/{pid}").json()["managingOrganization"]["reference"] == (
        f"Organization/{org_id}"
    )
    assert total(client, "Organization") == 1
    missing = patient(managingOrganization={"reference": f"Organization?identifier={ORG_SYSTEM}|x"})
    r = client.post("/fhir", json=bundle("transaction", post(missing)), headers=FHIR)
    assert r.status_code == 400 and "matches no resource" in r.text


def test_transaction_processing_order(client: TestClient) -> None:
    """DELETE before POST before PUT before GET, whatever the entry order."""
    client.put("/fhir/Patient/keep", json={**patient(), "id": "keep"}, headers=FHIR)
    client.put(
        "/fhir/Patient/old", json={**patient(cccd="001090000002"), "id": "old"}, headers=FHIR
    )
    b = bundle(
        "transaction",
        {"request": {"method": "GET", "url": "Patient?family=nguyen"}},
        {
            "resource": {**patient(family="Hồ"), "id": "keep"},
            "request": {"method": "PUT", "url": "Patient/keep"},
        },
        post(patient(cccd="001090000003")),
        {"request": {"method": "DELETE", "url": "Patient/old"}},
    )
    r = client.post("/fhir", json=b, headers=FHIR)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    assert [e["response"]["status"] for e in out] == [
        "200 OK",
        "200 OK",
        "201 Created",
        "204 No Content",
    ]
    found = {e["resource"]["id"] for e in out[0]["resource"].get("entry", [])}
    # the GET ran last: it sees the new patient, not the deleted one nor the renamed one
    assert "old" not in found and "keep" not in found and len(found) == 1


def test_transaction_conditional_put_by_identifier(client: TestClient) -> None:
    url = f"Patient?identifier={CCCD}|001090012345"
    b = bundle(
        "transaction",
        {
            "resource": patient(),
            "request": {"method": "PUT", "url": url},
            "fullUrl": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001",
        },
        post(observation("urn:uuid:aaaaaaaa-0000-4000-8000-000000000001")),
    )
    first = client.post("/fhir", json=b, headers=FHIR).json()
    second = client.post("/fhir", json=b, headers=FHIR).json()
    assert second["entry"][0]["response"]["status"] == "200 OK"
    assert (
        first["entry"][0]["response"]["location"].split("/")[1]
        == second["entry"][0]["response"]["location"].split("/")[1]
    )
    assert total(client, "Patient") == 1 and total(client, "Observation") == 2


def test_batch_entries_succeed_or_fail_alone(client: TestClient) -> None:
    bad = patient()
    bad["birthDate"] = "1990-02-30x"
    b = bundle(
        "batch",
        post(patient()),
        post(bad),
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"method": "PATCH", "url": "Patient/x"}},
    )
    r = client.post("/fhir", json=b, headers=FHIR)
    assert r.status_code == 200
    out = r.json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses[0] == "201 Created" and statuses[1] == "422" and statuses[2] == "404"
    assert statuses[3] == "405"
    issue = out["entry"][1]["response"]["outcome"]["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.birthDate"]
    assert total(client, "Patient") == 1


def test_bundle_errors(client: TestClient) -> None:
    r = client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"}, headers=FHIR)
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["Bundle.type"]
    r = client.post("/fhir", json=bundle("transaction", {"resource": patient()}), headers=FHIR)
    assert r.status_code == 400 and "request" in r.json()["issue"][0]["diagnostics"]
    dangling = observation("urn:uuid:99999999-0000-4000-8000-000000000000")
    r = client.post("/fhir", json=bundle("transaction", post(dangling)), headers=FHIR)
    assert r.status_code == 404 and total(client, "Observation") == 0


def test_a_transaction_may_change_each_resource_once(client: TestClient) -> None:
    one = {**patient(), "id": "twice"}
    b = bundle(
        "transaction",
        {"resource": one, "request": {"method": "PUT", "url": "Patient/twice"}},
        {
            "resource": {**one, "gender": "male"},
            "request": {"method": "PUT", "url": "Patient/twice"},
        },
    )
    r = client.post("/fhir", json=b, headers=FHIR)
    assert r.status_code == 400
    assert "Patient/twice is written by entries 0 and 1" in r.json()["issue"][0]["diagnostics"]
    assert total(client, "Patient") == 0


def test_transactions_in_savepoints_of_one_commit_fail_alone(
    engine: FhirEngine, store: ResourceStore
) -> None:
    """Several transaction bundles in one write session: one that fails after it has
    written is undone alone (its buffered and its flushed writes), the others commit."""
    from lienthong.fhir.errors import FhirError
    from lienthong.fhir.interactions.transaction import process_bundle

    def visit(n: int, late_failure: bool) -> dict[str, Any]:
        entries: list[dict[str, Any]] = [
            post(organization(), f"urn:uuid:00000000-0000-4000-8000-00000000000{n}"),
            {
                "resource": {**patient(family=f"Họ{n}"), "id": f"p{n}"},
                "request": {"method": "PUT", "url": f"Patient/p{n}"},
            },
        ]
        if late_failure:  # processed after the writes above: a stale If-Match
            entries.append(
                {
                    "resource": {**observation(f"Patient/p{n}"), "id": f"o{n}"},
                    "request": {"method": "PUT", "url": f"Observation/o{n}", "ifMatch": 'W/"3"'},
                }
            )
        return bundle("transaction", *entries)

    failed = []
    with store.writer() as session:
        for n in range(1, 5):
            try:
                process_bundle(engine, visit(n, n == 2), validated=False, session=session)
            except FhirError as exc:
                failed.append((n, exc.status))
    assert failed == [(2, 412)]
    with store.reader() as session:
        kept = {s.res_id for s in session.read_many([("Patient", f"p{n}") for n in range(1, 5)])}
    assert kept == {"p1", "p3", "p4"}
    assert store.counts() == {"Organization": 3, "Patient": 3}


def _read(client: TestClient, entry: dict[str, Any]) -> dict[str, Any]:
    where = entry["response"]["location"].split("/_history")[0]
    r = client.get(f"/fhir/{where}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_only_reference_uri_and_narrative_links_are_rewritten(client: TestClient) -> None:
    """bundle.html#references: Reference.reference, uri/url/uuid/oid elements and
    narrative <a href>/<img src> that name an entry change; canonical and string
    elements (an Identifier.value, a valueString, narrative text) stay as sent."""
    p_url = "urn:uuid:5d1e4a3c-0000-4000-8000-0000000000a1"
    org_url = "urn:oid:1.2.840.99999.1"
    div = (
        f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{p_url}">patient</a>'
        f'<img src="{p_url}"/><p>{p_url}</p><a href="urn:uuid:elsewhere">x</a></div>'
    )
    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "_status": {
            "extension": [
                {"url": "http://example.org/fhir/ext/by", "valueReference": {"reference": p_url}}
            ]
        },
        "text": {"status": "generated", "div": div},
        "meta": {"profile": [p_url]},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": p_url}],
        "extension": [
            {"url": "http://example.org/fhir/ext/uri", "valueUri": p_url},
            {"url": "http://example.org/fhir/ext/canonical", "valueCanonical": p_url},
            {"url": "http://example.org/fhir/ext/string", "valueString": p_url},
        ],
        "subject": {"reference": p_url, "identifier": {"value": p_url}},
        "custodian": {"reference": org_url},
        "contained": [
            {
                "resourceType": "Patient",
                "id": "c1",
                "link": [{"other": {"reference": p_url}, "type": "seealso"}],
            }
        ],
        "context": {"related": [{"reference": "#c1"}]},
        "content": [
            {
                "attachment": {"contentType": "text/plain", "url": p_url},
                "format": {"system": "urn:oid:1.2.840.99999.2", "code": "x"},
            }
        ],
    }
    # a link in a single-quoted attribute, the resource's only mention of the entry
    note = {
        "resourceType": "Basic",
        "code": {"text": "note"},
        "text": {
            "status": "generated",
            "div": f"<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href='{p_url}'>p</a></div>",
        },
    }
    b = bundle(
        "transaction",
        post(doc, "urn:uuid:5d1e4a3c-0000-4000-8000-0000000000a2"),
        post(patient(), p_url),
        post(organization(), org_url),
        post(note),
    )
    r = client.post("/fhir", json=b, headers=FHIR)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    pid = "Patient/" + out[1]["response"]["location"].split("/")[1]
    oid = "Organization/" + out[2]["response"]["location"].split("/")[1]
    got = _read(client, out[0])
    assert got["subject"] == {"reference": pid, "identifier": {"value": p_url}}
    assert got["custodian"]["reference"] == oid
    assert got["_status"]["extension"][0]["valueReference"]["reference"] == pid
    assert got["contained"][0]["link"][0]["other"]["reference"] == pid
    assert got["context"]["related"][0]["reference"] == "#c1"
    assert got["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": p_url}]
    assert got["meta"]["profile"] == [p_url]
    assert [
        e.get("valueUri") or e.get("valueCanonical") or e["valueString"] for e in got["extension"]
    ] == [pid, p_url, p_url]
    assert got["content"][0]["attachment"]["url"] == pid
    assert got["content"][0]["format"]["system"] == "urn:oid:1.2.840.99999.2"  # no entry
    assert got["text"]["div"] == (
        f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{pid}">patient</a>'
        f'<img src="{pid}"/><p>{p_url}</p><a href="urn:uuid:elsewhere">x</a></div>'
    )
    assert _read(client, out[3])["text"]["div"] == (
        f"<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href='{pid}'>p</a></div>"
    )


def test_batch_keeps_urn_strings_and_refuses_urn_references(client: TestClient) -> None:
    urn = "urn:uuid:5d1e4a3c-0000-4000-8000-0000000000b1"
    p = patient(cccd="001090000011")
    p["identifier"].append({"system": "urn:ietf:rfc:3986", "value": urn})
    b = bundle("batch", post(p), post(observation(urn)))
    out = client.post("/fhir", json=b, headers=FHIR).json()["entry"]
    assert out[0]["response"]["status"] == "201 Created"
    assert _read(client, out[0])["identifier"][-1]["value"] == urn
    assert out[1]["response"]["status"] == "400"
    assert urn in out[1]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert total(client, "Observation") == 0


def test_references_to_restful_full_urls_follow_the_created_id(client: TestClient) -> None:
    """An entry POSTed with fullUrl [base]/Patient/tmp-9 gets a server id; references
    to it (absolute, or relative from an entry of the same base or of no RESTful base)
    follow it, not the Patient/tmp-9 the server already holds."""
    r = client.put("/fhir/Patient/tmp-9", json={**patient(), "id": "tmp-9"}, headers=FHIR)
    assert r.status_code == 201
    base = "http://example.org/fhir"
    b = bundle(
        "transaction",
        post(observation("Patient/tmp-9"), "urn:uuid:5d1e4a3c-0000-4000-8000-0000000000c1"),
        post(observation(f"{base}/Patient/tmp-9")),
        post(observation("Patient/tmp-9"), f"{base}/Observation/o3"),
        post(observation("Patient/tmp-9"), "http://other.example.org/fhir/Observation/o4"),
        post({**patient(cccd="001090000012"), "id": "tmp-9"}, f"{base}/Patient/tmp-9"),
    )
    r = client.post("/fhir", json=b, headers=FHIR)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    new = out[4]["response"]["location"].split("/")[1]
    assert new != "tmp-9"
    subjects = [_read(client, e)["subject"]["reference"] for e in out[:4]]
    assert subjects == [f"Patient/{new}"] * 3 + ["Patient/tmp-9"]


def test_batch_and_transaction_answer_get_metadata(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    for kind in ("batch", "transaction"):
        b = bundle(kind, {"request": {"method": "GET", "url": "metadata"}}, post(patient()))
        r = client.post("/fhir", json=b, headers=FHIR)
        assert r.status_code == 200, r.text
        first = r.json()["entry"][0]
        assert first["response"]["status"] == "200 OK"
        assert first["resource"] == statement
