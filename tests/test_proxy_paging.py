"""Behind a reverse proxy (RFC 7239 ``Forwarded``, ``X-Forwarded-*``), the ``Link`` header
(RFC 8288), and paging that holds still while the data changes, across server processes."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from lienthong.access.audit import AuditLog
from lienthong.server.app import create_app
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore
from lienthong.storage.paging import OwnedSnapshots, PagingSnapshots
from tests.conftest import fresh_postgres_url
from tests.factories import observation, patient
from tests.live_server import live_server
from tests.pg_server import PostgresServer
from tests.test_access import World, consent
from tests.test_access import world as access_world

FHIR = {"Content-Type": "application/fhir+json"}
PROXY = ("10.1.2.3", 41000)  # the address TestClient's requests come from, as a proxy
PUBLIC = "https://fhir.example.vn/api/fhir"


@pytest.fixture
def proxied(store: ResourceStore, settings: Settings) -> Iterator[TestClient]:
    """The API behind a proxy at 10.1.0.0/16 that it trusts."""
    trusting = settings.model_copy(update={"trusted_proxies": "192.0.2.1, 10.1.0.0/16"})
    with TestClient(create_app(trusting, store=store), client=PROXY) as c:
        yield c


@pytest.fixture
def untrusted(store: ResourceStore, settings: Settings) -> Iterator[TestClient]:
    """The same proxy's requests, to an API that trusts another network only."""
    other = settings.model_copy(update={"trusted_proxies": "10.9.0.0/16"})
    with TestClient(create_app(other, store=store), client=PROXY) as c:
        yield c


def make(client: TestClient, resource: dict, **headers: str) -> httpx.Response:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers={**FHIR, **headers})
    assert r.status_code == 201, r.text
    return r


def links(bundle: dict) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


def link_header(value: str) -> dict[str, str]:
    """``<url>; rel="next", <url>; rel="self"`` -> {rel: url}."""
    found = re.findall(r'<([^>]*)>\s*;\s*rel="([^"]*)"', value)
    assert ", ".join(f'<{u}>; rel="{r}"' for u, r in found) == value  # nothing else in it
    return {rel: url for url, rel in found}


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


FORWARDED = {
    "Forwarded": 'for=203.0.113.7;proto=https;host="fhir.example.vn"',
    "X-Forwarded-Prefix": "/api",
}
X_FORWARDED = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Host": "fhir.example.vn",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/api/",
}


# -- behind a proxy --------------------------------------------------------------------


@pytest.mark.parametrize("headers", [FORWARDED, X_FORWARDED], ids=["forwarded", "x-forwarded"])
def test_trusted_proxy_headers_make_every_url_public(
    proxied: TestClient, settings: Settings, headers: dict[str, str]
) -> None:
    r = make(proxied, patient(), **headers)
    pid = r.json()["id"]
    assert r.headers["location"] == f"{PUBLIC}/Patient/{pid}/_history/1"
    make(proxied, patient(family="Trần", cccd="001090012346"), **headers)
    r = proxied.get("/fhir/Patient", params={"_count": 1}, headers=headers)
    bundle = r.json()
    assert all(url.startswith(f"{PUBLIC}/Patient?") for url in links(bundle).values())
    assert {"self", "first", "next", "last"} <= set(links(bundle))
    assert bundle["entry"][0]["fullUrl"].startswith(f"{PUBLIC}/Patient/")
    assert link_header(r.headers["link"]) == {
        {"previous": "prev"}.get(k, k): v for k, v in links(bundle).items()
    }
    # the next page, asked through the proxy again, links under the public URL too
    # (the proxy takes its /api prefix off the path it passes on)
    page2 = proxied.get(local(links(bundle)["next"]).removeprefix("/api"), headers=headers)
    page2 = page2.json()
    assert page2["entry"][0]["fullUrl"].startswith(f"{PUBLIC}/Patient/")
    assert links(page2)["previous"].startswith(f"{PUBLIC}/Patient?")
    history = proxied.get(f"/fhir/Patient/{pid}/_history", headers=headers).json()
    assert history["entry"][0]["fullUrl"] == f"{PUBLIC}/Patient/{pid}"
    meta = proxied.get("/fhir/metadata", headers=headers).json()
    assert meta["implementation"]["url"] == PUBLIC
    assert proxied.get("/", headers=headers).json()["fhir"] == PUBLIC
    # a reference written with the public base is a local one
    make(proxied, observation(f"{PUBLIC}/Patient/{pid}"), **headers)
    found = proxied.get(
        "/fhir/Observation", params={"subject": f"{PUBLIC}/Patient/{pid}"}, headers=headers
    ).json()
    assert found["total"] == 1
    # the audit trail names the client the proxy served, not the proxy
    log = AuditLog(settings.database_url)
    try:
        records, _ = log.search(count=200)
    finally:
        log.close()
    assert records and all(rec.entry.source_ip == "203.0.113.7" for rec in records)


def test_untrusted_peer_forwarding_headers_are_ignored(
    untrusted: TestClient, settings: Settings
) -> None:
    r = make(untrusted, patient(), **FORWARDED)
    pid = r.json()["id"]
    assert r.headers["location"] == f"http://testserver/fhir/Patient/{pid}/_history/1"
    r = make(untrusted, patient(family="Trần", cccd="001090012346"), **X_FORWARDED)
    bundle = untrusted.get("/fhir/Patient", params={"_count": 1}, headers=X_FORWARDED).json()
    assert all(url.startswith("http://testserver/fhir/Patient?") for url in links(bundle).values())
    assert bundle["entry"][0]["fullUrl"].startswith("http://testserver/fhir/Patient/")
    meta = untrusted.get("/fhir/metadata", headers=FORWARDED).json()
    assert meta["implementation"]["url"] == "http://testserver/fhir"
    log = AuditLog(settings.database_url)
    try:
        records, _ = log.search(count=200)
    finally:
        log.close()
    assert records and all(rec.entry.source_ip == PROXY[0] for rec in records)


def test_default_trusts_no_proxy(settings: Settings) -> None:
    assert Settings.from_env({}).trusted_proxies == ""
    with TestClient(create_app(settings, store=None), client=PROXY) as c:
        r = make(c, patient(), **FORWARDED)
    assert r.headers["location"].startswith("http://testserver/fhir/Patient/")


def test_a_chain_of_proxies_is_believed_only_up_to_the_first_untrusted_hop(
    proxied: TestClient,
) -> None:
    # the client forged an element; the outer trusted proxy appended what it saw
    forged = {"Forwarded": "host=evil.example, for=198.51.100.1;host=fhir.example.vn;proto=https"}
    r = make(proxied, patient(), **forged)
    assert r.headers["location"].startswith("https://fhir.example.vn/fhir/Patient/")
    # two trusted proxies: the outer one (192.0.2.1) saw the client, the inner one the outer
    chain = {
        "Forwarded": "for=198.51.100.1;host=fhir.example.vn;proto=https, "
        "for=192.0.2.1;host=inner.local:8080;proto=http",
    }
    r = make(proxied, patient(family="Lê", cccd="001090012347"), **chain)
    assert r.headers["location"].startswith("https://fhir.example.vn/fhir/Patient/")
    # X-Forwarded-Port alone replaces the port of the Host the proxy passed on
    r = make(
        proxied,
        patient(family="Phạm", cccd="001090012348"),
        **{"X-Forwarded-Proto": "https", "X-Forwarded-Port": "8443", "Host": "gw.example.vn"},
    )
    assert r.headers["location"].startswith("https://gw.example.vn:8443/fhir/Patient/")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Forwarded", "host=fhir.example.vn;proto=gopher"),
        ("Forwarded", 'host="evil.example/path"'),
        ("Forwarded", "for=1.2.3.4;;=x"),
        ("X-Forwarded-Port", "99999"),
        ("X-Forwarded-Prefix", "api"),
    ],
)
def test_malformed_header_from_a_trusted_proxy_is_a_clear_400(
    proxied: TestClient, header: str, value: str
) -> None:
    r = proxied.get("/fhir/Patient", headers={header: value, "X-Forwarded-Host": "a.example"})
    assert r.status_code == 400
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["diagnostics"].startswith(header)


def test_bad_trusted_proxies_setting_stops_the_start(settings: Settings) -> None:
    with pytest.raises(ValueError, match="LIENTHONG_TRUSTED_PROXIES: '10.0.0.0/33'"):
        create_app(settings.model_copy(update={"trusted_proxies": "10.0.0.1,10.0.0.0/33"}))
    with pytest.raises(ValueError, match="paging_max_ids"):
        Settings.from_env({"LIENTHONG_PAGING_MAX_IDS": "0"})


# -- links -----------------------------------------------------------------------------


def test_summary_count_has_no_next_link(client: TestClient) -> None:
    for i in range(3):
        make(client, patient(family=f"Võ{i}", cccd=f"00109001234{i}"))
    r = client.get("/fhir/Patient", params={"_summary": "count"})
    bundle = r.json()
    assert bundle["total"] == 3 and "entry" not in bundle
    assert set(links(bundle)) == {"self"}
    assert link_header(r.headers["link"]) == {"self": links(bundle)["self"]}
    # _count=0 likewise
    bundle = client.get("/fhir/Patient", params={"_count": 0}).json()
    assert bundle["total"] == 3 and set(links(bundle)) == {"self"}


def test_link_header_on_search_and_history_pages(client: TestClient) -> None:
    ids = [make(client, patient(family=f"Hồ{i}", cccd=None)).json()["id"] for i in range(5)]
    r = client.get("/fhir/Patient", params={"_count": 2})
    assert set(link_header(r.headers["link"])) == {"self", "first", "next", "last"}
    r2 = client.get(local(link_header(r.headers["link"])["next"]))
    rels = link_header(r2.headers["link"])
    assert set(rels) == {"self", "first", "prev", "next", "last"}
    assert rels == {{"previous": "prev"}.get(k, k): v for k, v in links(r2.json()).items()}
    last = client.get(local(rels["last"])).json()
    assert [e["resource"]["id"] for e in last["entry"]] == ids[4:]
    assert "next" not in links(last)
    h = client.get("/fhir/Patient/_history", params={"_count": 2})
    assert set(link_header(h.headers["link"])) == {"self", "first", "next", "last"}
    single = client.get(f"/fhir/Patient/{ids[0]}/_history")
    assert set(link_header(single.headers["link"])) == {"self"}
    meta = client.get("/fhir/metadata").json()
    assert "_snapshot=" in meta["rest"][0]["documentation"]


# -- stable paging ---------------------------------------------------------------------


def pages(client: TestClient, first: dict) -> list[dict]:
    out = [first]
    while "next" in links(out[-1]):
        r = client.get(local(links(out[-1])["next"]))
        assert r.status_code == 200, r.text
        out.append(r.json())
        assert len(out) < 50
    return out


def match_ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_pages_hold_still_while_resources_change(client: TestClient) -> None:
    ids = [
        make(client, patient(family="Bùi", given=[f"Tên{i}"], cccd=None)).json()["id"]
        for i in range(7)
    ]
    first = client.get("/fhir/Patient", params={"family": "bui", "_count": 3}).json()
    assert match_ids(first) == ids[:3] and first["total"] == 7
    # meanwhile: one created (it would sort first), one on page 2 deleted, one on page 3
    # changed so that it no longer matches, one on page 1 deleted (page 2 would shift)
    make(client, patient(family="Bùi", given=["Mới"], cccd=None))
    assert client.delete(f"/fhir/Patient/{ids[4]}").status_code in (200, 204)
    changed = {**patient(family="Khác", cccd=None), "id": ids[6]}
    assert client.put(f"/fhir/Patient/{ids[6]}", json=changed, headers=FHIR).status_code == 200
    assert client.delete(f"/fhir/Patient/{ids[0]}").status_code in (200, 204)
    got = pages(client, first)
    assert [match_ids(p) for p in got] == [ids[:3], ids[3:6], ids[6:]]
    assert all(p["total"] == 7 for p in got)
    # entries show the version the search matched: the changed one as it was
    last = got[-1]["entry"][0]["resource"]
    assert last["meta"]["versionId"] == "1" and last["name"][0]["family"] == "Bùi"
    assert got[1]["entry"][1]["resource"]["id"] == ids[4]  # deleted since, still listed
    # a page link asked again answers the same page
    again = client.get(local(links(got[0])["next"])).json()
    assert match_ids(again) == ids[3:6]
    # a new search sees the data as it is now
    now = client.get("/fhir/Patient", params={"family": "bui", "_count": 3}).json()
    assert now["total"] == 5 and ids[0] not in match_ids(now)


def test_includes_and_totals_on_every_page(client: TestClient) -> None:
    people = [
        make(client, patient(family=f"Đặng{i}", cccd=f"07930100{i:04d}")).json()["id"]
        for i in range(4)
    ]
    obs = [
        make(client, observation(f"Patient/{p}", value=60 + i)).json()["id"]
        for i, p in enumerate(people)
    ]
    first = client.get(
        "/fhir/Observation", params={"_count": 2, "_include": "Observation:subject"}
    ).json()
    got = pages(client, first)
    assert [match_ids(p) for p in got] == [obs[:2], obs[2:]]
    for n, page in enumerate(got):
        assert page["total"] == 4
        included = [e["resource"]["id"] for e in page["entry"] if e["search"]["mode"] == "include"]
        assert sorted(included) == sorted(people[2 * n : 2 * n + 2])
    back = client.get(
        "/fhir/Patient", params={"_count": 3, "_revinclude": "Observation:subject"}
    ).json()
    p2 = client.get(local(links(back)["next"])).json()
    assert match_ids(p2) == people[3:]
    assert [e["resource"]["id"] for e in p2["entry"] if e["search"]["mode"] == "include"] == [
        obs[3]
    ]
    summary = client.get("/fhir/Patient", params={"_count": 2, "_elements": "gender"}).json()
    p2 = client.get(local(links(summary)["next"])).json()
    assert all("name" not in e["resource"] for e in p2["entry"])  # _elements kept too


def test_history_pages_hold_still(client: TestClient) -> None:
    pid = make(client, patient(cccd=None)).json()["id"]
    for i in range(4):
        body = {**patient(family=f"Lần{i}", cccd=None), "id": pid}
        assert client.put(f"/fhir/Patient/{pid}", json=body, headers=FHIR).status_code == 200
    first = client.get(f"/fhir/Patient/{pid}/_history", params={"_count": 2}).json()
    versions = [e["resource"]["meta"]["versionId"] for e in first["entry"]]
    assert versions == ["5", "4"] and first["total"] == 5
    body = {**patient(family="Sau", cccd=None), "id": pid}
    client.put(f"/fhir/Patient/{pid}", json=body, headers=FHIR)  # version 6 meanwhile
    got = pages(client, first)
    assert [[e["response"]["etag"] for e in p["entry"]] for p in got] == [
        ['W/"5"', 'W/"4"'],
        ['W/"3"', 'W/"2"'],
        ['W/"1"'],
    ]
    assert all(p["total"] == 5 for p in got)
    typed = client.get("/fhir/Patient/_history", params={"_count": 4}).json()
    make(client, patient(family="Khác", cccd=None))
    p2 = client.get(local(links(typed)["next"])).json()
    assert [e["response"]["etag"] for e in p2["entry"]] == ['W/"2"', 'W/"1"']


def test_unknown_expired_and_foreign_snapshots_are_gone(
    store: ResourceStore, settings: Settings
) -> None:
    short = settings.model_copy(update={"paging_ttl": 1})
    with TestClient(create_app(short, store=store)) as client:
        for i in range(3):
            make(client, patient(family=f"Lý{i}", cccd=None))
        make(client, observation("Patient/x"))
        first = client.get("/fhir/Patient", params={"_count": 1}).json()
        nxt = local(links(first)["next"])
        assert client.get(nxt).status_code == 200
        # the id on another type's search, or on a history, is not that search
        other = client.get(nxt.replace("/fhir/Patient?", "/fhir/Observation?"))
        assert other.status_code == 410
        assert (
            client.get(nxt.replace("/fhir/Patient?", "/fhir/Patient/_history?")).status_code == 410
        )
        unknown = client.get("/fhir/Patient", params={"_snapshot": "no-such-id"})
        assert unknown.status_code == 410
        outcome = unknown.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "no-such-id" in outcome["issue"][0]["diagnostics"]
        mixed = client.get(nxt + "&family=ly")
        assert mixed.status_code == 400 and "family" in mixed.json()["issue"][0]["diagnostics"]
        time.sleep(1.2)
        expired = client.get(nxt)
        assert expired.status_code == 410
        assert "expired" in expired.json()["issue"][0]["diagnostics"]


def test_a_snapshot_answers_only_its_owner(store_url: str) -> None:
    snapshots = PagingSnapshots(store_url)
    try:
        mine = OwnedSnapshots(snapshots, "lienthong|bs.an")
        theirs = OwnedSnapshots(snapshots, "lienthong|bs.binh")
        snap = mine.save(
            kind="search",
            target="Patient",
            params=[],
            keys=[(1, 1), (2, 3)],
            total=2,
            complete=True,
            ttl=60,
        )
        assert mine.load(snap.id) is not None
        assert theirs.load(snap.id) is None
        assert snapshots.load(snap.id) is None  # nor to a caller without a user
        assert mine.keys(snap, 1, 5) == [(2, 3)]
    finally:
        snapshots.close()


def test_snapshot_keys_span_chunks(store_url: str) -> None:
    snapshots = PagingSnapshots(store_url)
    try:
        keys = [(pk, pk % 7 + 1) for pk in range(1, 2600)]
        snap = snapshots.save(
            kind="search",
            target="Observation",
            params=[("code", "x")],
            keys=keys,
            total=5000,
            complete=False,
            ttl=60,
        )
        loaded = snapshots.load(snap.id)
        assert loaded is not None and loaded.size == 2599 and not loaded.complete
        assert loaded.params == [("code", "x")] and loaded.total == 5000
        assert snapshots.keys(loaded, 995, 1005) == keys[995:1005]
        assert snapshots.keys(loaded, 2590, 2700) == keys[2590:]
    finally:
        snapshots.close()


def test_past_the_bound_pages_run_the_search_again(
    store: ResourceStore, settings: Settings
) -> None:
    bounded = settings.model_copy(update={"paging_max_ids": 4})
    with TestClient(create_app(bounded, store=store)) as client:
        ids = [make(client, patient(family=f"Mai{i}", cccd=None)).json()["id"] for i in range(7)]
        first = client.get("/fhir/Patient", params={"_count": 2}).json()
        assert first["total"] == 7
        got = pages(client, first)
        assert [i for p in got for i in match_ids(p)] == ids
        assert "_snapshot" in links(got[1])["self"]
        assert "_snapshot" not in links(got[2])["self"] and "_offset=4" in links(got[2])["self"]
        assert "_offset=6" in links(first)["last"]


# -- across server processes -----------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return fresh_postgres_url(server)


def test_two_server_processes_share_the_pages(shared_database: str) -> None:
    env = {
        "LIENTHONG_DATABASE_URL": shared_database,
        "LIENTHONG_AUTH": "off",
        "LIENTHONG_MPI": "false",
        "LIENTHONG_TRUSTED_PROXIES": "127.0.0.1",
    }
    with live_server(env) as a, live_server(env) as b:
        ids = []
        for i in range(5):
            r = httpx.post(
                f"{a.fhir}/Patient", json=patient(family=f"Chu{i}", cccd=None), headers=FHIR
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        first = httpx.get(f"{a.fhir}/Patient", params={"_count": 2}).json()
        httpx.delete(f"{b.fhir}/Patient/{ids[2]}")  # meanwhile, through the other process
        httpx.post(f"{b.fhir}/Patient", json=patient(family="Chu", cccd=None), headers=FHIR)
        got, url = [match_ids(first)], links(first)["next"]
        while True:
            # each page asked of the other process than the one that made the link
            server = b if url.startswith(a.root) else a
            page = httpx.get(server.root + local(url)).json()
            assert page["total"] == 5
            got.append(match_ids(page))
            if "next" not in links(page):
                break
            url = links(page)["next"]
        assert got == [ids[:2], ids[2:4], ids[4:]]
        # the real server, behind a proxy on loopback, links under the public address
        r = httpx.get(
            f"{a.fhir}/Patient",
            params={"_count": 2},
            # with uvicorn's own rewrite the peer would be 198.51.100.9, untrusted
            headers={
                "X-Forwarded-For": "198.51.100.9",
                "X-Forwarded-Host": "fhir.example.vn",
                "X-Forwarded-Proto": "https",
            },
        )
        assert links(r.json())["next"].startswith("https://fhir.example.vn/fhir/Patient?")
        assert link_header(r.headers["link"])["next"] == links(r.json())["next"]


world = access_world  # the users, tokens and patients of the access tests


def test_a_page_link_answers_only_the_user_whose_search_made_it(world: World) -> None:
    r = world.get("doc-a", "/fhir/Observation", _count=1)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["total"] == 2  # p1 (a recent visit) and p3 (consent)
    nxt = local(links(first)["next"])
    for other in ("doc-b", "adm"):
        gone = world.client.get(nxt, headers=world.as_(other))
        assert gone.status_code == 410 and gone.json()["resourceType"] == "OperationOutcome"
    page2 = world.client.get(nxt, headers=world.as_("doc-a")).json()
    assert [e["resource"]["subject"]["reference"] for e in page2["entry"]] == ["Patient/p3"]
    # the consent is withdrawn: the page still answers, without what is no longer visible
    world.put(consent("p3", "Organization/org-a", status="inactive"), "c3")
    page2 = world.client.get(nxt, headers=world.as_("doc-a")).json()
    assert page2["total"] == 2 and "entry" not in page2


@pytest.mark.parametrize("kind", ["system", "compartment", "compartment-all"])
def test_system_and_compartment_pages_hold_still(client: TestClient, kind: str) -> None:
    """The same snapshot paging serves a system-level search and a compartment search:
    their page links go to their own routes and keep their result set while data change."""
    pid = make(client, patient(family="Lý", cccd=None)).json()["id"]
    obs = [make(client, observation(f"Patient/{pid}", value=60 + i)).json()["id"] for i in range(5)]
    url, params = {
        "system": ("/fhir", {"_type": "Observation", "_count": 2, "_sort": "_id"}),
        "compartment": (f"/fhir/Patient/{pid}/Observation", {"_count": 2, "_sort": "_id"}),
        "compartment-all": (
            f"/fhir/Patient/{pid}/*",
            {"_type": "Observation", "_count": 2, "_sort": "_id"},
        ),
    }[kind]
    first = client.get(url, params=params)
    assert first.status_code == 200, first.text
    body = first.json()
    expected = sorted(obs)
    assert match_ids(body) == expected[:2] and body["total"] == 5
    nxt = links(body)["next"]
    assert "_snapshot=" in nxt and urlsplit(nxt).path == url  # back to the same route
    # meanwhile one on page 2 is deleted and a new one is made
    assert client.delete(f"/fhir/Observation/{expected[2]}").status_code in (200, 204)
    make(client, observation(f"Patient/{pid}", value=99))
    got = pages(client, body)
    assert [match_ids(p) for p in got] == [expected[:2], expected[2:4], expected[4:]]
    assert all(p["total"] == 5 for p in got)
    # a snapshot of one route is not a page of another
    snap = re.search(r"_snapshot=([^&]+)", nxt)
    assert snap is not None
    other = "/fhir/Observation" if kind != "system" else f"/fhir/Patient/{pid}/Observation"
    assert client.get(other, params={"_snapshot": snap.group(1)}).status_code == 410
