"""The store changes nothing it was not asked to change.

An update with the current content writes no version, ``If-None-Match: *`` refuses
to overwrite, a DELETE of what is not there is a no-op, and every Synthea resource
posted in a transaction reads back as sent apart from ``id``, ``meta`` and the
references the transaction rewrote.
"""

from __future__ import annotations

import bz2
import time
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from lienthong.fhir.engine import FhirEngine
from lienthong.storage.base import ResourceStore
from tests.conftest import need_shared
from tests.factories import CCCD, patient
from tests.synthea_data import SYNTHEA, synthea_files

FHIR = {"Content-Type": "application/fhir+json"}


def history_total(client: TestClient, where: str) -> int:
    return int(client.get(f"/fhir/{where}/_history").json()["total"])


def test_update_with_the_current_content_writes_no_version(client: TestClient) -> None:
    p = {**patient(), "id": "same"}
    first = client.put("/fhir/Patient/same", json=p, headers=FHIR)
    assert first.status_code == 201 and first.headers["etag"] == 'W/"1"'
    # the body read back (with its meta) and the body as first sent are both "unchanged"
    for body in (
        first.json(),
        p,
        {**p, "meta": {"versionId": "7", "lastUpdated": "2020-01-01T00:00:00Z"}},
    ):
        r = client.put("/fhir/Patient/same", json=body, headers=FHIR)
        assert r.status_code == 200, r.text
        assert r.headers["etag"] == 'W/"1"'
        assert r.headers["last-modified"] == first.headers["last-modified"]
        assert r.json() == first.json()
    assert history_total(client, "Patient/same") == 1
    # a tag is content: it makes a version
    tagged = {**p, "meta": {"tag": [{"system": "http://example.org/t", "code": "x"}]}}
    r = client.put("/fhir/Patient/same", json=tagged, headers=FHIR)
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'
    r = client.put("/fhir/Patient/same", json={**p, "gender": "female"}, headers=FHIR)
    assert r.headers["etag"] == 'W/"3"' and history_total(client, "Patient/same") == 3


def test_conditional_and_transaction_updates_with_the_same_content(client: TestClient) -> None:
    p = patient(cccd="001090000021")
    url = f"Patient?identifier={CCCD}|001090000021"
    r = client.put(f"/fhir/{url}", json=p, headers=FHIR)
    assert r.status_code == 201
    pid = r.json()["id"]
    r = client.put(f"/fhir/{url}", json=p, headers=FHIR)
    assert r.status_code == 200 and r.headers["etag"] == 'W/"1"'
    entries = [
        {"resource": {**p, "id": pid}, "request": {"method": "PUT", "url": f"Patient/{pid}"}},
        {"resource": p, "request": {"method": "PUT", "url": url}},
    ]
    for entry in entries:
        b = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
        out = client.post("/fhir", json=b, headers=FHIR).json()["entry"][0]["response"]
        assert out["status"] == "200 OK" and out["etag"] == 'W/"1"', out
        assert out["location"] == f"Patient/{pid}/_history/1"
    assert history_total(client, f"Patient/{pid}") == 1


def test_put_if_none_match_star_creates_but_never_overwrites(client: TestClient) -> None:
    p = {**patient(), "id": "once"}
    star = {**FHIR, "If-None-Match": "*"}
    r = client.put("/fhir/Patient/once", json=p, headers=star)
    assert r.status_code == 201
    r = client.put("/fhir/Patient/once", json={**p, "gender": "female"}, headers=star)
    assert r.status_code == 412
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "If-None-Match" in outcome["issue"][0]["diagnostics"]
    # an ETag list: refused at the version named, allowed at another
    r = client.put(
        "/fhir/Patient/once",
        json={**p, "gender": "female"},
        headers={**FHIR, "If-None-Match": 'W/"1"'},
    )
    assert r.status_code == 412
    assert client.get("/fhir/Patient/once").json()["gender"] == p["gender"]
    r = client.put(
        "/fhir/Patient/once",
        json={**p, "gender": "female"},
        headers={**FHIR, "If-None-Match": 'W/"5"'},
    )
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'
    # inside a transaction: the entry's request.ifNoneMatch, and the whole bundle fails
    b = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": p, "request": {"method": "PUT", "url": "Patient/once", "ifNoneMatch": "*"}}
        ],
    }
    r = client.post("/fhir", json=b, headers=FHIR)
    assert r.status_code == 412
    assert client.get("/fhir/Patient/once").headers["etag"] == 'W/"2"'
    # a deleted resource does not exist: If-None-Match: * lets the PUT bring it back
    assert client.delete("/fhir/Patient/once").status_code == 204
    r = client.put("/fhir/Patient/once", json=p, headers=star)
    assert r.status_code == 201 and r.headers["etag"] == 'W/"4"'


def test_delete_of_what_is_not_there_is_204_and_writes_nothing(client: TestClient) -> None:
    for _ in range(2):
        r = client.delete("/fhir/Patient/never-was")
        assert r.status_code == 204 and "etag" not in r.headers
    assert client.get("/fhir/Patient/never-was").status_code == 404  # not 410: nothing written
    b = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "Patient/never-was"}}],
    }
    r = client.post("/fhir", json=b, headers=FHIR)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"] == {"status": "204 No Content"}
    assert client.get("/fhir/_history").json()["total"] == 0


# -- every Synthea resource reads back as sent ----------------------------------------


def differences(sent: Any, got: Any, rewritten: dict[str, str], path: str) -> list[str]:
    """Paths where ``got`` differs from ``sent``, a ``reference`` that became the
    ``rewritten`` target of what was sent (a bundle entry or a conditional reference)
    apart."""
    if isinstance(sent, dict) and isinstance(got, dict):
        out: list[str] = []
        for key in sorted(sent.keys() | got.keys()):
            where = f"{path}.{key}"
            if key not in sent or key not in got:
                out.append(where)
            elif key == "reference" and isinstance(sent[key], str) and sent[key] in rewritten:
                if got[key] != rewritten[sent[key]]:
                    out.append(where)
            else:
                out.extend(differences(sent[key], got[key], rewritten, where))
        return out
    if isinstance(sent, list) and isinstance(got, list):
        if len(sent) != len(got):
            return [path]
        return [
            d
            for i, (s, g) in enumerate(zip(sent, got, strict=True))
            for d in differences(s, g, rewritten, f"{path}[{i}]")
        ]
    return [] if sent == got and type(sent) is type(got) else [path]


@pytest.mark.slow
def test_every_synthea_resource_reads_back_as_sent(
    client: TestClient, engine: FhirEngine, store: ResourceStore
) -> None:
    files = synthea_files(need_shared(SYNTHEA))
    started = time.monotonic()
    loaded: list[tuple[dict[str, Any], str]] = []  # (sent entry, "Type/id")
    for path in files:
        raw = bz2.decompress(path.read_bytes())
        r = client.post("/fhir", content=raw, headers=FHIR)
        assert r.status_code == 200, (path.name, r.text[:500])
        sent_entries = orjson.loads(raw)["entry"]
        out = r.json()["entry"]
        assert len(out) == len(sent_entries), path.name
        for sent, got in zip(sent_entries, out, strict=True):
            assert got["response"]["status"] in ("200 OK", "201 Created"), (path.name, got)
            loaded.append((sent, got["response"]["location"].split("/_history")[0]))

    rewritten = {sent["fullUrl"]: where for sent, where in loaded if sent.get("fullUrl")}
    changed: dict[str, list[str]] = {}
    with store.reader() as session:
        for sent, where in loaded:
            for s in sent["resource"].get("identifier", ()):
                # what a conditional reference (Organization?identifier=s|v) names
                if "system" in s and "value" in s:
                    key = f"{where.split('/')[0]}?identifier={s['system']}|{s['value']}"
                    rewritten.setdefault(key, where)
        stored = {
            f"{s.res_type}/{s.res_id}": s
            for s in session.read_many([tuple(w.split("/")) for _, w in loaded])  # type: ignore[misc]
        }
    for sent, where in loaded:
        got = orjson.loads(stored[where].content or b"{}")
        want = dict(sent["resource"])
        assert got.pop("id") == where.split("/")[1]
        assert got.pop("meta")["versionId"]
        want.pop("id", None)
        want.pop("meta", None)
        diff = differences(want, got, rewritten, where.split("/")[0])
        if diff:
            changed[where] = diff
    elapsed = time.monotonic() - started
    print(
        f"\nSynthea round trip: {len(loaded)} resources from {len(files)} bundles, "
        f"{len(changed)} changed, {elapsed:.0f} s"
    )
    sample = dict(list(changed.items())[:5])
    assert not changed, f"{len(changed)} of {len(loaded)} resources came back changed: {sample}"
    assert len(loaded) == sum(
        len(orjson.loads(bz2.decompress(f.read_bytes()))["entry"]) for f in files
    )


def test_conditional_put_if_none_match_star_never_overwrites(client: TestClient) -> None:
    p = patient()
    system, value = p["identifier"][0]["system"], p["identifier"][0]["value"]
    url = f"/fhir/Patient?identifier={system}|{value}"
    star = {**FHIR, "If-None-Match": "*"}
    assert client.put(url, json=p, headers=star).status_code == 201
    r = client.put(url, json={**p, "gender": "female"}, headers=star)
    assert r.status_code == 412, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    found = client.get(url).json()
    assert found["total"] == 1 and found["entry"][0]["resource"]["gender"] == p["gender"]
