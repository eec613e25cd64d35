"""The Synthea bundles load completely and every resource reads back as sent.

"As sent" apart from ``id``, ``meta`` and the references the server rewrote:
``urn:uuid:`` entries become ``Type/id`` and conditional references such as
``Organization?identifier=...`` become the matching resource. Strings that spell an
entry's ``urn:uuid:`` (``DocumentReference.identifier.value``) stay as sent.
"""

from __future__ import annotations

import bz2
import copy
import re
from typing import Any

import orjson
import pytest

from lienthong.fhir.engine import FhirEngine
from lienthong.fhir.interactions.transaction import process_bundle
from tests.conftest import need_shared
from tests.synthea_data import SYNTHEA, synthea_files

COND = re.compile(r"^[A-Z][A-Za-z]+\?")


def expected_form(node: Any, ids: dict[str, str], resolve: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if isinstance(v, str) and k == "reference" and COND.match(v):
                out[k] = resolve(v)
            elif isinstance(v, str) and k == "reference" and v in ids:
                out[k] = ids[v]
            else:
                out[k] = expected_form(v, ids, resolve)
        return out
    if isinstance(node, list):
        return [expected_form(v, ids, resolve) for v in node]
    return node


@pytest.mark.slow
def test_synthea_loads_completely_and_reads_back(engine: FhirEngine) -> None:
    files = synthea_files(need_shared(SYNTHEA))
    loaded: list[tuple[dict[str, Any], str]] = []  # (original, "Type/id")
    for path in files:
        with bz2.open(path) as fh:
            doc = orjson.loads(fh.read())
        original = copy.deepcopy(doc)
        resp = process_bundle(engine, doc)
        assert resp.status == 200, path
        out = (resp.json() or {})["entry"]
        assert len(out) == len(original["entry"])
        for sent, got in zip(original["entry"], out, strict=True):
            status = got["response"]["status"]
            assert status in ("200 OK", "201 Created"), (path.name, status, got)
            loaded.append((sent, got["response"]["location"].split("/_history")[0]))
    assert len(loaded) >= 49_000

    ids = {sent["fullUrl"]: where for sent, where in loaded if sent.get("fullUrl")}
    resolved: dict[str, str] = {}

    with engine.store.reader() as session:

        def resolve(ref: str) -> str:
            if ref not in resolved:
                rtype, query = ref.split("?", 1)
                matches = engine.match_conditional(session, rtype, query, ref)
                assert len(matches) == 1, ref
                resolved[ref] = f"{rtype}/{matches[0].res_id}"
            return resolved[ref]

        checked = 0
        for sent, where in loaded:
            rtype, rid = where.split("/")
            stored = session.read(rtype, rid)
            assert stored is not None and not stored.deleted, where
            got = orjson.loads(stored.content or b"{}")
            want = expected_form(copy.deepcopy(sent["resource"]), ids, resolve)
            assert got.pop("id") == rid
            assert got.pop("meta")["versionId"]
            want.pop("id", None)
            want.pop("meta", None)
            assert got == want, where
            checked += 1
    assert checked == len(loaded)
    counts = engine.store.counts()
    # the batch files use ifNoneExist: each organization and practitioner exists once
    assert counts["Organization"] == 194 and counts["Practitioner"] == 195
    assert counts["Patient"] == 60 and sum(counts.values()) == 49_722
