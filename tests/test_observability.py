"""Health probes, Prometheus metrics, request ids and logs, and the offline API docs."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from lienthong.server.app import create_app
from lienthong.server.logs import JsonFormatter, RequestIdFilter
from lienthong.server.observability import redacted_query
from lienthong.settings import Settings
from lienthong.storage.base import open_store
from tests.factories import CCCD, patient
from tests.live_server import live_server

LOOPBACK = ("127.0.0.1", 50000)
ELSEWHERE = ("203.0.113.7", 50000)  # a documentation address: only a scope value here
CITIZEN_ID = "079301004242"
NAME = "Nguyễn Thị Hồng"


def make_settings(store_url: str, **update: object) -> Settings:
    base = Settings.from_env({}).model_copy(
        update={"database_url": store_url, "base_url": "http://testserver/fhir", "mpi": False}
    )
    return base.model_copy(update=update)


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The (labels, value) of every sample called ``name`` in a Prometheus scrape."""
    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def scrape(client: TestClient) -> str:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


# -- health --------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["on", "off"])
def test_health_answers_without_a_token(store_url: str, auth: str) -> None:
    app = create_app(make_settings(store_url, auth=auth))
    with TestClient(app, client=ELSEWHERE) as client:
        assert client.get("/fhir/Patient").status_code == (401 if auth == "on" else 200)
        live = client.get("/health/live")
        assert live.status_code == 200
        assert live.json() == {"status": "ok", "checks": {"process": "ok"}}
        ready = client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ok"
        assert body["checks"]["store"] == "ok"
        assert set(body["checks"]) == {"store", "schema"}
        assert ready.headers["cache-control"] == "no-store"


def test_ready_is_503_when_the_store_is_closed(store_url: str) -> None:
    store = open_store(store_url)
    app = create_app(make_settings(store_url, auth="off"), store=store)
    with TestClient(app, client=LOOPBACK) as client:
        assert client.get("/health/ready").status_code == 200
        store.close()
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["store"].startswith("unavailable")
        # the process itself still answers
        assert client.get("/health/live").status_code == 200


def test_ready_checks_a_schema_version_the_store_records(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    store = open_store(url)
    app = create_app(make_settings(url, auth="off"), store=store)
    try:
        with TestClient(app, client=LOOPBACK) as client:
            # the version the store was opened (and migrated) at is this release's
            ready = client.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["checks"]["schema"] == "ok"
            store.schema_version = 1  # type: ignore[misc]  # an older database
            ready = client.get("/health/ready")
            assert ready.status_code == 503 and "version 1" in ready.json()["checks"]["schema"]
            store.schema_version = lambda: 999  # type: ignore[attr-defined]
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            assert "999" in ready.json()["checks"]["schema"]
    finally:
        store.close()


# -- metrics -------------------------------------------------------------------------------


@pytest.fixture
def loopback(store_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(store_url, auth="off")), client=LOOPBACK) as c:
        yield c


def test_metrics_count_requests_by_route_template(loopback: TestClient) -> None:
    created = loopback.post("/fhir/Patient", json=patient("Nguyễn", ["Thị", "Hồng"], CITIZEN_ID))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert loopback.get(f"/fhir/Patient/{pid}").status_code == 200
    assert loopback.get(f"/fhir/Patient/{pid}").status_code == 200
    query = f"identifier={CCCD}|{CITIZEN_ID}&name={quote(NAME)}"
    assert loopback.get(f"/fhir/Patient?{query}").status_code == 200
    assert loopback.get(f"/no/such/{CITIZEN_ID}").status_code == 404
    text = scrape(loopback)
    # no ids, identifiers or names in any label
    for value in (pid, CITIZEN_ID, "Nguy", quote(NAME)):
        assert value not in text
    requests = samples(text, "lienthong_http_requests_total")
    reads = [
        v
        for labels, v in requests
        if labels["route"] == "/fhir/{res_type}/{res_id}" and labels["method"] == "GET"
    ]
    assert reads == [2.0]
    post = {"method": "POST", "route": "/fhir/{res_type}", "resource_type": "Patient"}
    assert ({**post, "status": "201"}, 1.0) in requests
    assert any(
        labels["route"] == "(unmatched)" and labels["status"] == "404" for labels, _ in requests
    )
    counts = samples(text, "lienthong_http_request_duration_seconds_count")
    assert ({"method": "GET", "route": "/fhir/{res_type}/{res_id}"}, 2.0) in counts
    assert samples(text, "lienthong_http_requests_in_progress") == [({}, 1.0)]  # the scrape


def test_metrics_audit_chain_length_follows_the_log(loopback: TestClient) -> None:
    before = samples(scrape(loopback), "lienthong_audit_chain_length")
    assert len(before) == 1
    for _ in range(3):
        assert loopback.get("/fhir/Patient").status_code == 200
    after = samples(scrape(loopback), "lienthong_audit_chain_length")
    assert after[0][1] == before[0][1] + 3  # one entry per FHIR interaction, none per scrape


def test_metrics_review_queue_is_reported_with_the_person_index(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mpi.db'}"
    for mpi, expected in ((True, [({}, 0.0)]), (False, [])):
        app = create_app(make_settings(url, auth="off", mpi=mpi))
        with TestClient(app, client=LOOPBACK) as client:
            assert samples(scrape(client), "lienthong_mpi_review_pending") == expected


def test_metrics_need_the_scrape_token_off_loopback(store_url: str) -> None:
    with TestClient(create_app(make_settings(store_url)), client=ELSEWHERE) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 403
        assert "LIENTHONG_METRICS_TOKEN" in refused.text
    token = "scrape-secret-1234"
    app = create_app(make_settings(store_url, metrics_token=token))
    with TestClient(app, client=ELSEWHERE) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        assert token not in wrong.text
        good = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert good.status_code == 200
        assert "lienthong_http_requests_total" in good.text
    with TestClient(app, client=LOOPBACK) as client:
        assert client.get("/metrics").status_code == 200
        # a proxy on the same machine forwarding for someone else is not a local client
        forwarded = client.get("/metrics", headers={"X-Forwarded-For": "198.51.100.4"})
        assert forwarded.status_code == 401


# -- request ids and logs ------------------------------------------------------------------


def test_request_id_is_echoed_or_made(loopback: TestClient) -> None:
    given = loopback.get("/health/live", headers={"X-Request-ID": "abc-123.def"})
    assert given.headers["x-request-id"] == "abc-123.def"
    for bad in ("has spaces in it", "x" * 200, "<script>"):
        made = loopback.get("/health/live", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    one, two = loopback.get("/fhir/metadata"), loopback.get("/fhir/metadata")
    assert one.headers["x-request-id"] != two.headers["x-request-id"]


def test_redacted_query_keeps_names_only() -> None:
    query = f"identifier={CCCD}|{CITIZEN_ID}&name={quote(NAME)}&_count=5&name:contains=An"
    assert redacted_query(query) == "identifier=*&name=*&_count=*&name:contains=*"
    assert redacted_query(f"{CITIZEN_ID}") == "?=*"  # a name that is no parameter name
    assert redacted_query(b"") is None


def test_request_log_lines_are_json_without_query_values(
    loopback: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lienthong.request")
    query = f"identifier={CITIZEN_ID}&name={quote(NAME)}"
    r = loopback.get(f"/fhir/Patient?{query}", headers={"X-Request-ID": "req-42"})
    assert r.status_code == 200
    formatter, stamp = JsonFormatter(), RequestIdFilter()
    lines = []
    for record in caplog.records:
        if record.name == "lienthong.request":
            stamp.filter(record)
            lines.append(json.loads(formatter.format(record)))
    [line] = [x for x in lines if x["request_id"] == "req-42"]
    assert line["level"] == "INFO"
    assert line["logger"] == "lienthong.request"
    assert line["method"] == "GET" and line["route"] == "/fhir/{res_type}"
    assert line["status"] == 200 and line["duration_ms"] >= 0
    assert line["query"] == "identifier=*&name=*"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert CITIZEN_ID not in json.dumps(line) and "Nguy" not in json.dumps(line)


def test_settings_refuse_an_unknown_log_format() -> None:
    with pytest.raises(ValueError, match=r"log_format \(from LIENTHONG_LOG_FORMAT\)"):
        Settings.from_env({"LIENTHONG_LOG_FORMAT": "xml"})
    assert Settings.from_env({"LIENTHONG_LOG_FORMAT": "TEXT"}).log_format == "text"
    assert Settings.from_env({}).log_format == "json"


def test_the_real_server_logs_no_personal_data(tmp_path: Path) -> None:
    env = {
        "LIENTHONG_DATABASE_URL": f"sqlite:///{tmp_path / 'logs.db'}",
        "LIENTHONG_AUTH": "off",
        "LIENTHONG_LOG_FORMAT": "json",
    }
    request_ids = ["search-7f3a", "create-91bc"]
    with live_server(env) as server:
        body = patient("Nguyễn", ["Thị", "Hồng"], CITIZEN_ID)
        created = httpx.post(
            f"{server.fhir}/Patient", json=body, headers={"X-Request-ID": request_ids[1]}
        )
        assert created.status_code == 201, created.text
        found = httpx.get(
            f"{server.fhir}/Patient",
            params={"identifier": f"{CCCD}|{CITIZEN_ID}", "name": NAME},
            headers={"X-Request-ID": request_ids[0]},
        )
        assert found.status_code == 200
        assert found.headers["x-request-id"] == request_ids[0]
        by_number = httpx.get(
            f"{server.fhir}/Patient", params={"identifier": CITIZEN_ID, "family": "Nguyễn"}
        )
        # such values do reach the server: the record, and (person index on) its person
        found_ids = {e["resource"]["id"] for e in by_number.json().get("entry", [])}
        assert created.json()["id"] in found_ids and by_number.json()["total"] == 2
    output = server.output
    for secret in (CITIZEN_ID, NAME, "Nguyễn", quote(NAME), quote("Nguyễn")):
        assert secret not in output
    lines = [json.loads(x) for x in output.splitlines() if x.startswith("{")]
    by_id = {x["request_id"]: x for x in lines if x.get("logger") == "lienthong.request"}
    assert by_id[request_ids[0]]["route"] == "/fhir/{res_type}"
    assert by_id[request_ids[0]]["query"] == "identifier=*&name=*"
    assert by_id[request_ids[0]]["status"] == 200
    assert by_id[request_ids[1]]["method"] == "POST"
    assert by_id[request_ids[1]]["status"] == 201


# -- offline docs --------------------------------------------------------------------------


@pytest.mark.parametrize(("page", "kinds"), [("/docs", {"js", "css"}), ("/redoc", {"js"})])
def test_docs_load_only_local_assets(loopback: TestClient, page: str, kinds: set[str]) -> None:
    html = loopback.get(page)
    assert html.status_code == 200
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
    urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", html.text)
    assert urls
    assert not re.search(r"https?://", html.text), "the page must not load anything remote"
    seen = set()
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        got = loopback.get(url)
        assert got.status_code == 200, url
        ctype = got.headers["content-type"]
        if url.endswith(".js"):
            assert "javascript" in ctype and len(got.content) > 100_000
            seen.add("js")
        elif url.endswith(".css"):
            assert ctype.startswith("text/css") and len(got.content) > 10_000
            seen.add("css")
    assert kinds <= seen
    assert loopback.get("/openapi.json").json()["openapi"].startswith("3.")
