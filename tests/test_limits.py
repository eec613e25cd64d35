"""The request and response limits: each answers 413 (400 for depth, 414 for the URL) with
an OperationOutcome naming its LIENTHONG_* setting, and the setting moves it."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from lienthong.server.app import create_app
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore
from tests.factories import patient
from tests.live_server import live_server

FHIR = {"Content-Type": "application/fhir+json"}
ClientFor = Callable[..., TestClient]


def refused(r: httpx.Response, status: int, setting: str) -> dict[str, Any]:
    """The one issue of an OperationOutcome answered with ``status`` naming ``setting``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    issue: dict[str, Any] = body["issue"][0]
    assert issue["code"] == "too-costly"
    assert setting in issue["diagnostics"], issue
    return issue


@pytest.fixture
def client_for(store: ResourceStore, settings: Settings) -> Iterator[ClientFor]:
    """A client of an app whose limits come from ``LIENTHONG_*`` variables, as a server's do."""
    clients: list[TestClient] = []

    def make(**env: str) -> TestClient:
        limited = Settings.from_env({f"LIENTHONG_{k.upper()}": v for k, v in env.items()})
        merged = settings.model_copy(update={k: getattr(limited, k) for k in env} if env else {})
        c = TestClient(create_app(merged, store=store), raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def padded_patient(size: int) -> bytes:
    """A valid Patient body of exactly ``size`` bytes."""
    body = orjson.dumps({"resourceType": "Patient", "name": [{"family": ""}]})
    pad = size - len(body)
    assert pad >= 0
    return body.replace(b'"family":""', b'"family":"' + b"x" * pad + b'"')


def bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post_entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def get_entry(url: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": url}}


def patient_total(c: TestClient) -> int:
    total: int = c.get("/fhir/Patient", params={"_summary": "count"}).json()["total"]
    return total


# ----------------------------------------------------------------------------- body size


def test_resource_body_limit(client_for: ClientFor) -> None:
    c = client_for(resource_max_bytes="2000")
    assert c.post("/fhir/Patient", content=padded_patient(2000), headers=FHIR).status_code == 201
    r = c.post("/fhir/Patient", content=padded_patient(2001), headers=FHIR)
    assert "2,000 bytes" in refused(r, 413, "LIENTHONG_RESOURCE_MAX_BYTES")["diagnostics"]
    r = c.put("/fhir/Patient/p1", content=padded_patient(2001), headers=FHIR)
    refused(r, 413, "LIENTHONG_RESOURCE_MAX_BYTES")
    # an operation's body has the same limit
    r = c.post("/fhir/Patient/$match", content=padded_patient(2001), headers=FHIR)
    refused(r, 413, "LIENTHONG_RESOURCE_MAX_BYTES")


def test_a_body_without_length_is_refused_as_it_streams(settings: Settings) -> None:
    """Driven at the ASGI level, where the chunks the app asks for can be counted."""
    app = create_app(settings.model_copy(update={"resource_max_bytes": 2000}))
    asked: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        asked.append(1)  # 1 MB offered, in 1 kB chunks, with no Content-Length
        return {"type": "http.request", "body": b" " * 1000, "more_body": len(asked) < 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/fhir/Patient",
        "raw_path": b"/fhir/Patient",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/fhir+json"), (b"host", b"testserver")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 413
    assert b"LIENTHONG_RESOURCE_MAX_BYTES" in b"".join(m.get("body", b"") for m in sent[1:])
    assert len(asked) <= 4  # it stopped reading past the limit


def test_declared_length_is_refused_before_reading(client_for: ClientFor) -> None:
    c = client_for(resource_max_bytes="2000")
    r = c.post(
        "/fhir/Patient",
        content=b"{}",
        headers={**FHIR, "Content-Length": "5000000"},
    )
    refused(r, 413, "LIENTHONG_RESOURCE_MAX_BYTES")


def test_bundle_body_limit(client_for: ClientFor) -> None:
    c = client_for(resource_max_bytes="1000", bundle_max_bytes="6000")
    # a bundle may be larger than a resource
    entries = [post_entry(patient("Trần", ["An"], f"07930100{i:04d}")) for i in range(4)]
    body = orjson.dumps(bundle("transaction", entries))
    assert 1000 < len(body) <= 6000
    assert c.post("/fhir", content=body, headers=FHIR).status_code == 200
    big = orjson.dumps(bundle("batch", entries * 8))
    assert len(big) > 6000
    r = c.post("/fhir", content=big, headers=FHIR)
    refused(r, 413, "LIENTHONG_BUNDLE_MAX_BYTES")


def test_binary_has_the_larger_limit_and_the_ceiling_caps_all(client_for: ClientFor) -> None:
    c = client_for(resource_max_bytes="1000", body_max_bytes="8000")
    raw = {"Content-Type": "application/octet-stream"}
    assert c.post("/fhir/Binary", content=b"\x01" * 5000, headers=raw).status_code == 201
    as_json = {"resourceType": "Binary", "contentType": "text/plain"}
    as_json["data"] = base64.b64encode(b"\x02" * 4000).decode()
    assert c.post("/fhir/Binary", json=as_json, headers=FHIR).status_code == 201
    r = c.post("/fhir/Binary", content=b"\x01" * 8001, headers=raw)
    refused(r, 413, "LIENTHONG_BODY_MAX_BYTES")
    # a resource limit above the ceiling gives way to it
    c = client_for(resource_max_bytes="100000", body_max_bytes="3000")
    r = c.post("/fhir/Patient", content=padded_patient(3001), headers=FHIR)
    refused(r, 413, "LIENTHONG_BODY_MAX_BYTES")


# ------------------------------------------------------------------------- JSON shape


def test_string_length_limit(client_for: ClientFor) -> None:
    c = client_for(string_max_chars="100")
    ok = patient("N" * 100, ["An"], "079301000001")
    assert c.post("/fhir/Patient", json=ok, headers=FHIR).status_code == 201
    long = patient("N" * 101, ["An"], "079301000001")
    issue = refused(c.post("/fhir/Patient", json=long, headers=FHIR), 413, "STRING_MAX_CHARS")
    assert issue["expression"] == ["Patient.name[0].family"]
    assert "101 characters" in issue["diagnostics"]
    # object keys count too
    r = c.post("/fhir/Patient", json={"resourceType": "Patient", "k" * 101: 1}, headers=FHIR)
    refused(r, 413, "LIENTHONG_STRING_MAX_CHARS")
    # base64 data is bounded by the body size only
    data = base64.b64encode(b"\x03" * 300).decode()
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": data}
    assert c.post("/fhir/Binary", json=binary, headers=FHIR).status_code == 201
    # inside a bundle, the expression leads through the entry
    r = c.post("/fhir", json=bundle("batch", [post_entry(long)]), headers=FHIR)
    issue = refused(r, 413, "LIENTHONG_STRING_MAX_CHARS")
    assert issue["expression"] == ["Bundle.entry[0].resource.name[0].family"]


def test_array_length_limit(client_for: ClientFor) -> None:
    c = client_for(array_max_items="5")
    names = [{"family": f"F{i}"} for i in range(5)]
    ok = {"resourceType": "Patient", "name": names}
    assert c.post("/fhir/Patient", json=ok, headers=FHIR).status_code == 201
    over = {"resourceType": "Patient", "name": [*names, {"family": "F5"}]}
    issue = refused(c.post("/fhir/Patient", json=over, headers=FHIR), 413, "ARRAY_MAX_ITEMS")
    assert issue["expression"] == ["Patient.name"]
    # a Bundle's entry list has its own limit
    entries = [post_entry(patient("Lê", ["An"], f"07930100{i:04d}")) for i in range(6)]
    assert c.post("/fhir", json=bundle("batch", entries), headers=FHIR).status_code == 200


def test_depth_limit(client_for: ClientFor) -> None:
    def nested(levels: int) -> bytes:
        # Patient (1) > extension (2) > {} (3) > extension (4) ...
        inner = b'{"url":"http://example.org/x","valueString":"v"}'
        for _ in range(levels - 1):
            inner = b'{"url":"http://example.org/x","extension":[' + inner + b"]}"
        return b'{"resourceType":"Patient","extension":[' + inner + b"]}"

    c = client_for(json_max_depth="9")
    assert c.post("/fhir/Patient", content=nested(4), headers=FHIR).status_code == 201  # depth 9
    issue = refused(c.post("/fhir/Patient", content=nested(5), headers=FHIR), 400, "JSON_MAX_DEPTH")
    assert issue["expression"][0].startswith("Patient.extension[0].extension[0]")
    # at the default, the extension nested 500 deep that once made a 500
    c = client_for()
    refused(c.post("/fhir/Patient", content=nested(500), headers=FHIR), 400, "JSON_MAX_DEPTH")
    # past orjson's own limit (1024) the body is not JSON it reads
    deep = b'{"resourceType":"Patient","x":' + b"[" * 1100 + b"]" * 1100 + b"}"
    assert c.post("/fhir/Patient", content=deep, headers=FHIR).status_code == 400


def test_bundle_entries_limit(client_for: ClientFor) -> None:
    c = client_for(bundle_max_entries="3")
    entries = [get_entry("Patient?family=x") for _ in range(4)]
    assert c.post("/fhir", json=bundle("batch", entries[:3]), headers=FHIR).status_code == 200
    r = c.post("/fhir", json=bundle("transaction", entries), headers=FHIR)
    issue = refused(r, 413, "LIENTHONG_BUNDLE_MAX_ENTRIES")
    assert issue["expression"] == ["Bundle.entry"]


# --------------------------------------------------------------------- response size


def test_transaction_over_the_response_limit_is_refused_whole(client_for: ClientFor) -> None:
    seed = client_for()
    big = orjson.loads(padded_patient(3000))
    assert seed.post("/fhir/Patient", json=big, headers=FHIR).status_code == 201
    entries = [post_entry(patient("Phạm", ["Bình"], "079301000777"))]
    entries += [get_entry("Patient?family=" + "x" * 2970) for _ in range(2)]
    entries += [get_entry("Patient") for _ in range(10)]  # ~3 kB each
    c = client_for(response_max_bytes="20000")
    before = patient_total(c)
    r = c.post("/fhir", json=bundle("transaction", entries), headers=FHIR)
    assert "nothing was written" in refused(r, 413, "LIENTHONG_RESPONSE_MAX_BYTES")["diagnostics"]
    assert patient_total(c) == before  # the POST was rolled back with the rest
    # under a larger limit the same transaction runs
    c = client_for(response_max_bytes="200000")
    r = c.post("/fhir", json=bundle("transaction", entries), headers=FHIR)
    assert r.status_code == 200, r.text
    assert patient_total(c) == before + 1


def test_batch_entries_past_the_response_limit_tell_the_client(client_for: ClientFor) -> None:
    seed = client_for()
    big = orjson.loads(padded_patient(3000))
    assert seed.post("/fhir/Patient", json=big, headers=FHIR).status_code == 201
    entries = [get_entry("Patient") for _ in range(10)]
    entries.append(post_entry(patient("Võ", ["Cường"], "079301000888")))
    c = client_for(response_max_bytes="10000")
    before = patient_total(c)
    r = c.post("/fhir", json=bundle("batch", entries), headers=FHIR)
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    answered = statuses.index("413")
    assert 1 <= answered < 10 and statuses[:answered] == ["200 OK"] * answered
    assert set(statuses[answered:]) == {"413"}
    issue = r.json()["entry"][-1]["response"]["outcome"]["issue"][0]
    assert "LIENTHONG_RESPONSE_MAX_BYTES" in issue["diagnostics"]
    assert "_count" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[10]"]
    assert patient_total(c) == before  # the write past the limit was not run
    assert len(r.content) < 10000 + 4000


# ------------------------------------------------------------------------------- URL


def test_url_length_limit(client_for: ClientFor) -> None:
    c = client_for(url_max_chars="1000")
    path = "/fhir/Patient?family="
    assert c.get(path + "x" * (1000 - len(path))).status_code == 200
    r = c.get(path + "x" * (1001 - len(path)))
    issue = refused(r, 414, "LIENTHONG_URL_MAX_CHARS")
    assert "POST [type]/_search" in issue["diagnostics"]
    # the same search as POST _search is not limited by it
    form = {"family": "x" * 2000}
    r = c.post("/fhir/Patient/_search", data=form)
    assert r.status_code == 200, r.text


def test_default_url_takes_an_or_list_of_hundreds_of_codes(client_for: ClientFor) -> None:
    c = client_for()
    codes = ",".join(f"http://loinc.org|{1000 + i}-{i % 10}" for i in range(600))
    r = c.get("/fhir/Observation", params={"code": codes})
    assert r.status_code == 200, r.text
    assert len(str(r.url)) > 16 * 1024


def test_count_above_the_ceiling_is_clamped(client_for: ClientFor) -> None:
    c = client_for(max_page_size="2")
    for i in range(3):
        body = patient("Đỗ", ["An"], f"07930100{i:04d}")
        assert c.post("/fhir/Patient", json=body, headers=FHIR).status_code == 201
    r = c.get("/fhir/Patient", params={"_count": "5000"})
    assert r.status_code == 200, r.text
    assert len(r.json()["entry"]) == 2


# --------------------------------------------------------------------- abstract types


@pytest.mark.parametrize("abstract", ["Resource", "DomainResource"])
def test_abstract_types_are_client_errors(client_for: ClientFor, abstract: str) -> None:
    c = client_for()
    body = {"resourceType": abstract}
    assert c.post(f"/fhir/{abstract}", json=body, headers=FHIR).status_code == 404
    assert c.get(f"/fhir/{abstract}").status_code == 404
    r = c.put("/fhir/Patient/a1", json=body, headers=FHIR)
    assert r.status_code == 400, r.text
    entry = {"resource": body, "request": {"method": "POST", "url": abstract}}
    r = c.post("/fhir", json=bundle("transaction", [entry]), headers=FHIR)
    assert r.status_code == 400, r.text
    r = c.post("/fhir", json=bundle("batch", [entry]), headers=FHIR)
    assert r.json()["entry"][0]["response"]["status"] == "400"


# ----------------------------------------------------------------- the real server


def test_real_server_takes_long_urls_and_refuses_longer(tmp_path: Path) -> None:
    env = {
        "LIENTHONG_DATABASE_URL": f"sqlite:///{tmp_path / 'limits.db'}",
        "LIENTHONG_AUTH": "off",
        "LIENTHONG_URL_MAX_CHARS": "40000",
    }
    with live_server(env) as server:
        # past h11's default 16 kB request head, within the limit
        r = httpx.get(f"{server.fhir}/Patient", params={"family": "x" * 30000})
        assert r.status_code == 200, r.text
        r = httpx.get(f"{server.fhir}/Patient", params={"family": "x" * 45000})
        refused(r, 414, "LIENTHONG_URL_MAX_CHARS")
        r = httpx.post(
            f"{server.fhir}/Patient",
            content=b'{"resourceType":"Patient","x":' + b"[" * 600 + b"]" * 600 + b"}",
            headers=FHIR,
        )
        refused(r, 400, "LIENTHONG_JSON_MAX_DEPTH")
        assert httpx.get(f"{server.fhir}/metadata").status_code == 200


@pytest.mark.parametrize(
    ("contained", "problem", "at"),
    [
        (
            {"resourceType": "Nope", "id": "c"},
            "'Nope' is an unknown resource type",
            ".resourceType",
        ),
        ({"resourceType": "", "id": "c"}, "must name its resourceType", ""),
        ({"id": "c"}, "must name its resourceType", ""),
        (
            {"resourceType": "DomainResource", "id": "c"},
            "'DomainResource' is an abstract resource type",
            ".resourceType",
        ),
    ],
)
def test_nested_resources_of_no_concrete_type_are_refused(
    client_for: ClientFor, contained: dict[str, Any], problem: str, at: str
) -> None:
    """These made a KeyError (500) in the models, or were stored as sent."""
    c = client_for()
    body = {"resourceType": "Patient", "contained": [contained]}
    r = c.post("/fhir/Patient", json=body, headers=FHIR)
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == [f"Patient.contained[0]{at}"]
    assert problem in issue["diagnostics"]
    entry = {"resource": contained, "request": {"method": "POST", "url": "Bundle"}}
    document = {"resourceType": "Bundle", "type": "collection", "entry": [entry]}
    r = c.post("/fhir/Bundle", json=document, headers=FHIR)
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"] == [f"Bundle.entry[0].resource{at}"]


def test_nul_characters_in_urls_are_client_errors(client_for: ClientFor) -> None:
    """PostgreSQL refuses NUL in text; these made a 500 there."""
    c = client_for()
    for url in ["/fhir/Patient?name=a%00b", "/fhir/Patient/a%00b/Observation", "/fhir/Patient/%00"]:
        r = c.get(url)
        assert r.status_code == 400, (url, r.text)
        assert "NUL" in r.json()["issue"][0]["diagnostics"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = c.post("/fhir/Patient/_search", content=b"name=a%00b", headers=form)
    assert r.status_code == 400, r.text
    r = c.post("/fhir", json=bundle("batch", [get_entry("Patient/a\x00b")]), headers=FHIR)
    assert r.json()["entry"][0]["response"]["status"] == "400"
