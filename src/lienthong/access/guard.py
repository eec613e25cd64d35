"""The store as one user may see it.

:class:`GuardedStore` wraps the real store for the length of one request; its
sessions apply :class:`~lienthong.access.policy.Policy` to every read and
write the FHIR engine makes. Because the engine reaches data only through
sessions, no interaction — read, vread, search (with its chains, ``_has``,
totals and paging), ``_include``/``_revinclude``, history, ``$everything``,
conditional matching inside bundles — can go around it.

Resources a user may not see are indistinguishable from resources that do
not exist: reads answer 404 (never 403 or 410, and without an ETag), searches
leave them out of the results and the totals.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from lienthong.access.policy import AccessContext, Policy, Visibility, deidentify, forbidden
from lienthong.fhir.search_index import IndexExtractor, IndexRows
from lienthong.fhir.search_params import SearchParamRegistry
from lienthong.storage.base import (
    HistoryPage,
    ResourceStore,
    SearchPage,
    Session,
    Stored,
    WriteOp,
    WriteSession,
)
from lienthong.storage.query import SearchQuery

RELATIONSHIP_TYPES = {"Encounter", "Consent"}


def patient_data_types(registry: SearchParamRegistry) -> frozenset[str]:
    """Types that can sit in a patient's compartment: Patient and every type with a
    reference parameter that may point at a Patient."""
    out = {"Patient"}
    for rtype in registry.resource_types():
        if any("Patient" in sp.targets for sp in registry.for_type(rtype).values()):
            out.add(rtype)
    return frozenset(out)


def compartment_of(res_type: str, res_id: str, rows: IndexRows) -> frozenset[str]:
    patients = {target_id for _, t, target_id, _ in rows.reference if t == "Patient" and target_id}
    if res_type == "Patient":
        patients.add(res_id)
    return frozenset(patients)


class GuardedStore(ResourceStore):
    def __init__(
        self,
        inner: ResourceStore,
        policy: Policy,
        ctx: AccessContext,
        extractor: IndexExtractor,
        patient_types: frozenset[str],
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.policy = policy
        self.ctx = ctx
        self.extractor = extractor
        self.patient_types = patient_types
        self._visibility: Visibility | None = None

    def visibility(self, session: Session) -> Visibility:
        if self._visibility is None:
            self._visibility = self.policy.visibility(self.ctx, session)
        return self._visibility

    @contextmanager
    def reader(self) -> Iterator[Session]:
        with self.inner.reader() as session:
            yield GuardedSession(session, self)

    @contextmanager
    def writer(self) -> Iterator[WriteSession]:
        changed = False
        with self.inner.writer() as session:
            guarded = GuardedSession(session, self)
            yield guarded
            changed = guarded.relationship_written
        if changed:
            self.policy.relationship_changed()

    def close(self) -> None:  # the request does not own the store
        pass

    def counts(self) -> dict[str, int]:
        raise forbidden("store-wide counts are not available through the API")

    def optimize(self) -> None:
        pass


class GuardedSession(WriteSession):
    def __init__(self, inner: Session, store: GuardedStore) -> None:
        self.inner = inner
        self.store = store
        self.ctx = store.ctx
        self.policy = store.policy
        self.relationship_written = False

    # -- helpers ----------------------------------------------------------------

    def _vis(self) -> Visibility:
        return self.store.visibility(self.inner)

    def _is_patient_data(self, res_type: str | None) -> bool:
        return res_type is None or res_type in self.store.patient_types

    def _require(self, res_type: str | None, perm: str) -> None:
        self.policy.require(self.ctx, res_type, perm, self._is_patient_data(res_type))

    def _compartment(self, stored: Stored) -> frozenset[str]:
        if stored.content is None:
            return frozenset()
        import orjson

        rows = self.store.extractor.extract(orjson.loads(stored.content))
        return compartment_of(stored.res_type, stored.res_id, rows)

    def _shown(self, stored: Stored) -> Stored:
        if self._vis().deidentify and stored.content is not None:
            return replace(stored, content=deidentify(stored.content))
        return stored

    def _visible_versions(self, stored: Stored) -> bool:
        """Whether one version may be seen; a deletion marker is judged by the version
        it deleted, so a deletion reveals nothing either."""
        vis = self._vis()
        target = stored
        if stored.deleted:
            if vis.patients is None:
                return True
            before = self.inner.vread(stored.res_type, stored.res_id, stored.version - 1)
            if before is None:
                return False
            target = before
        compartment = self._compartment(target)
        if not vis.sees(compartment):
            return False
        self.ctx.touched.update(compartment)
        return True

    def _filter_current(self, found: list[Stored], perm: str = "r") -> list[Stored]:
        """Current resources the user may see, without raising (for includes)."""
        allowed_types = set()
        for rtype in {s.res_type for s in found}:
            try:
                self._require(rtype, perm)
                allowed_types.add(rtype)
            except Exception:
                self.ctx.denied = None  # a silently dropped include is no denial
        found = [s for s in found if s.res_type in allowed_types]
        comps = self.inner.compartments(found)
        vis = self._vis()
        out = []
        for s in found:
            if vis.sees(comps[s.pk]):
                self.ctx.touched.update(comps[s.pk])
                out.append(self._shown(s))
        return out

    # -- reads ------------------------------------------------------------------

    def read(self, res_type: str, res_id: str) -> Stored | None:
        self._require(res_type, "r")
        stored = self.inner.read(res_type, res_id)
        if stored is None or not self._visible_versions(stored):
            return None
        return self._shown(stored)

    def vread(self, res_type: str, res_id: str, version: int) -> Stored | None:
        self._require(res_type, "r")
        stored = self.inner.vread(res_type, res_id, version)
        if stored is None or not self._visible_versions(stored):
            return None
        return self._shown(stored)

    def history(
        self,
        res_type: str | None,
        res_id: str | None,
        since: str | None,
        at: str | None,
        count: int,
        offset: int,
    ) -> HistoryPage:
        if res_id is None:
            self._require(res_type, "s")
            if self._vis().patients is not None:
                raise forbidden("history across resources needs access to every patient's data")
            page = self.inner.history(res_type, res_id, since, at, count, offset)
            return HistoryPage([self._shown(s) for s in page.entries], page.total)
        self._require(res_type, "r")
        page = self.inner.history(res_type, res_id, since, at, count, offset)
        if not all(self._visible_versions(s) for s in page.entries):
            return HistoryPage([], 0)
        return HistoryPage([self._shown(s) for s in page.entries], page.total)

    def search(self, query: SearchQuery) -> SearchPage:
        self._require(query.resource_type, "s")
        vis = self._vis()
        if query.resource_type is None and vis.patients is not None:
            raise forbidden("searching across all types needs access to every patient's data")
        guarded = replace(query, visible_patients=vis.patients)
        page = self.inner.search(guarded)
        comps = self.inner.compartments(page.matches)
        for c in comps.values():
            self.ctx.touched.update(c)
        return SearchPage([self._shown(s) for s in page.matches], page.total)

    def read_many(self, keys: list[tuple[str, str]], include_deleted: bool = False) -> list[Stored]:
        return self._filter_current(self.inner.read_many(keys, include_deleted))

    def referenced(self, pks: list[int], ref_params: list[tuple[str, str]] | None) -> list[Stored]:
        return self._filter_current(self.inner.referenced(pks, ref_params))

    def referencing(
        self, targets: list[tuple[str, str]], ref_params: list[tuple[str, str]] | None
    ) -> list[Stored]:
        return self._filter_current(self.inner.referencing(targets, ref_params))

    def references_from(self, query: SearchQuery, ref_code: str, target_type: str) -> set[str]:
        self._require(query.resource_type, "s")
        return self.inner.references_from(
            replace(query, visible_patients=self._vis().patients), ref_code, target_type
        )

    def compartments(self, stored: list[Stored]) -> dict[int, frozenset[str]]:
        return self.inner.compartments(stored)

    # -- writes -----------------------------------------------------------------

    def write(self, ops: list[WriteOp]) -> list[int]:
        assert isinstance(self.inner, WriteSession)
        for op in ops:
            self._check_write(op)
            if op.res_type in RELATIONSHIP_TYPES:
                self.relationship_written = True
        return self.inner.write(ops)

    def flush(self) -> None:
        flush = getattr(self.inner, "flush", None)
        if flush is not None:
            flush()

    def _check_write(self, op: WriteOp) -> None:
        if op.pk is None and self.inner.read(op.res_type, op.res_id) is not None:
            # an update of a resource this user cannot see reached us as a create
            self.policy_deny(f"not permitted to write {op.res_type}/{op.res_id}")
        perm = "c" if op.pk is None else ("d" if op.content is None else "u")
        self._require(op.res_type, perm)
        new = compartment_of(op.res_type, op.res_id, op.index) if op.index else frozenset()
        old: frozenset[str] = frozenset()
        if op.pk is not None:
            probe = Stored(
                op.pk, op.res_type, op.res_id, op.version - 1, op.last_updated, False, None
            )
            old = self.inner.compartments([probe])[op.pk]
        self.ctx.touched.update(new | old)
        role = self.ctx.role
        if role in ("data_admin", "system"):
            return
        if role == "citizen":
            own = self.ctx.principal.patient
            if op.res_type == "Consent" and own and (new | old) <= {own} and new:
                return
            self.policy_deny("a citizen may only write their own Consents")
        if role in ("clinician", "commune_staff"):
            ctx_no_glass = replace(self.ctx, break_glass=None)
            visible = self.policy.visibility(ctx_no_glass, self.inner).patients
            if visible is None or (new | old) <= visible:
                return
            if op.pk is None and op.res_type == "Patient":
                return  # registering a new patient
            if op.pk is None and op.res_type == "Encounter" and op.index is not None:
                org = self.ctx.principal.organization
                providers = {
                    (t, i) for code, t, i, _ in op.index.reference if code == "service-provider"
                }
                if org and ("Organization", org) in providers:
                    return  # the visit that starts a treatment relationship
            self.policy_deny("no treatment relationship or consent covers this patient for writing")
        self.policy_deny(f"role {role} may not write {op.res_type}")

    def policy_deny(self, reason: str) -> None:
        self.ctx.denied = reason
        raise forbidden(reason)
