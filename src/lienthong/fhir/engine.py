"""The FHIR engine: what every door (REST, bundles, bulk import) writes and reads through.

It is framework-agnostic: interactions (one module each under
``lienthong.fhir.interactions``) take plain arguments and return a
:class:`FhirResponse`; the HTTP layer only translates. The engine owns the
steps every write shares — validation, id and ``meta`` assignment, search
index extraction — so no door can skip them.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

from lienthong.fhir.errors import FhirError, Issue, precondition_failed
from lienthong.fhir.links import LinkTypes
from lienthong.fhir.search_index import IndexExtractor
from lienthong.fhir.search_params import SearchParamRegistry
from lienthong.fhir.search_parse import SearchParser, SearchRequest
from lienthong.fhir.validate import validate_resource
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore, Session, Stored, WriteOp
from lienthong.storage.query import SearchQuery

FHIR_JSON = "application/fhir+json"


@dataclass
class FhirResponse:
    """An interaction's result: status, a JSON body (dict or pre-serialised bytes), headers."""

    status: int
    body: dict[str, Any] | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict[str, Any] | None:
        if isinstance(self.body, bytes):
            loaded: dict[str, Any] = orjson.loads(self.body)
            return loaded
        return self.body


def now_instant() -> str:
    """The current time as a FHIR instant with microseconds, UTC (``...Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def etag(version: int) -> str:
    return f'W/"{version}"'


def parse_etag(value: str) -> int | None:
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    return int(v) if v.isdigit() else None


def stored_headers(stored: Stored, base_url: str, location: bool = False) -> dict[str, str]:
    headers = {
        "ETag": etag(stored.version),
        "Last-Modified": _http_date(stored.last_updated),
    }
    if location:
        headers["Location"] = (
            f"{base_url}/{stored.res_type}/{stored.res_id}/_history/{stored.version}"
        )
    return headers


def _http_date(instant: str) -> str:
    dt = datetime.strptime(instant[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return dt.strftime("%a, %d %b %Y %H:%M:%S GMT")


class FhirEngine:
    """Binds a store to the FHIR rules; shared by the server, the CLI and the tests."""

    def __init__(
        self,
        store: ResourceStore,
        settings: Settings | None = None,
        registry: SearchParamRegistry | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or Settings.from_env({})
        self.registry = registry or SearchParamRegistry.default()
        self.extractor = IndexExtractor(self.registry)
        self.base_url = (self.settings.base_url or "").rstrip("/")
        self._mpi: Any = None
        self._links: LinkTypes | None = None

    @property
    def mpi(self) -> Any:
        """The master person index (``lienthong.identity.mpi``), None when switched off."""
        if self._mpi is None and self.settings.mpi:
            from lienthong.identity.mpi import MasterPersonIndex
            from lienthong.identity.scoring import PairScorer

            model = self.settings.mpi_model
            self._mpi = MasterPersonIndex(
                self,
                PairScorer.from_file(model) if model else PairScorer.default(),
                candidate_cap=self.settings.mpi_candidate_cap,
            )
        return self._mpi

    @property
    def links(self) -> LinkTypes:
        """Where each resource type holds links a transaction rewrites (built once)."""
        if self._links is None:
            self._links = LinkTypes(self.registry.element_types)
        return self._links

    def after_write(self, session: Session, ops: list[WriteOp]) -> None:
        """Steps that belong to the same transaction as a write: Patients are resolved to
        persons, so a write that fails later rolls their resolution back with it."""
        if self.settings.mpi and any(op.res_type == "Patient" for op in ops):
            self.mpi.on_written(session, ops)

    # -- the steps every write shares ----------------------------------------

    def new_id(self) -> str:
        return str(uuid.uuid4())

    def prepare(
        self,
        resource: dict[str, Any],
        res_id: str,
        version: int,
        last_updated: str,
        method: str,
        previous: Stored | None,
        validate: bool = True,
    ) -> WriteOp:
        """Validate, stamp id and meta, serialise and index one resource version."""
        rtype = validate_resource(resource) if validate else resource["resourceType"]
        resource["id"] = res_id
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = last_updated
        resource["meta"] = meta
        return WriteOp(
            res_type=rtype,
            res_id=res_id,
            version=version,
            last_updated=last_updated,
            method=method,
            content=orjson.dumps(resource),
            index=self.extractor.extract(resource),
            pk=previous.pk if previous is not None else None,
        )

    def deletion(self, previous: Stored, last_updated: str) -> WriteOp:
        return WriteOp(
            res_type=previous.res_type,
            res_id=previous.res_id,
            version=previous.version + 1,
            last_updated=last_updated,
            method="DELETE",
            content=None,
            index=None,
            pk=previous.pk,
        )

    # -- search helpers shared by conditional interactions -------------------

    def parse_search(
        self,
        res_type: str | None,
        params: list[tuple[str, str]],
        strict: bool = False,
        types: list[str] | None = None,
    ) -> SearchRequest:
        for name, value in params:
            if "\x00" in name or "\x00" in value:
                raise FhirError(
                    400,
                    [
                        Issue(
                            "value",
                            f"{name!r}: a search holds a NUL character, which no FHIR value may",
                        )
                    ],
                )
        parser = SearchParser(self.registry, self.base_url, self.unindexed)
        return parser.parse(
            res_type,
            params,
            strict=strict,
            default_count=self.settings.default_page_size,
            max_count=self.settings.max_page_size,
            types=types,
        )

    def match_conditional(
        self, session: Session, res_type: str, query_string: str, what: str
    ) -> list[Stored]:
        """Resources matching a conditional URL's criteria (strict: unknown params are errors).

        At most two are fetched: callers only distinguish none, one and several.
        """
        params = parse_qsl(query_string, keep_blank_values=True)
        if not params:
            raise precondition_failed(f"{what} has no search criteria")
        req = self.parse_search(res_type, params, strict=True)
        self.hide_masters(res_type, params, req.query)  # records only, no person search
        req.query.count = 2
        req.query.with_total = False
        return session.search(req.query).matches

    def hide_masters(
        self, res_type: str | None, params: list[tuple[str, str]], query: SearchQuery
    ) -> None:
        """Leave the person index's master Patients out of a Patient search (ordinary
        and conditional) unless the search asks for tags or names ids (a search by
        ``_id`` finds the Patient it names): they are not source records."""
        if res_type != "Patient" or not self.settings.mpi:
            return
        if any(k.split(":")[0] in ("_tag", "_id") for k, _ in params):
            return
        hide = self.parse_search("Patient", [("_tag:not", "http://fhir.lienthong.vn/mpi|master")])
        query.criteria.extend(hide.query.criteria)

    def resolve_persons(
        self,
        session: Session,
        res_type: str | None,
        params: list[tuple[str, str]],
        query: SearchQuery,
    ) -> None:
        """Person-level search (``:mdm``, masters found by identifier): see
        ``lienthong.identity.person_search``; run in the reader that runs ``query``."""
        from lienthong.identity.person_search import resolve_persons

        resolve_persons(self, session, res_type, params, query)

    def with_store(self, store: ResourceStore) -> FhirEngine:
        """The same engine over another view of the store (e.g. one user's guarded view);
        registry, compiled extractors and settings are shared."""
        clone = copy.copy(self)
        clone.store = store
        return clone

    def with_base_url(self, base_url: str) -> FhirEngine:
        """The same engine answering under another public base URL (the one a request
        came in on through a trusted proxy); a no-op when it is the engine's own."""
        base_url = base_url.rstrip("/")
        if base_url == self.base_url:
            return self
        clone = copy.copy(self)
        clone.base_url = base_url
        return clone

    def unindexed(self, res_type: str) -> dict[str, str]:
        """Parameters of ``res_type`` the index cannot answer, with the reason."""
        return dict(self.extractor.failures(res_type))

    def full_url(self, stored: Stored) -> str:
        return f"{self.base_url}/{stored.res_type}/{stored.res_id}"


def load_json(body: bytes | str) -> Any:
    """Parse a request body, turning a syntax error into a 400 OperationOutcome."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FhirError(400, [Issue("structure", f"the body is not valid JSON: {exc}")]) from None
