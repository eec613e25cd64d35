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
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace

from lienthong.access.policy import (
    IDENTIFYING_PARAMS,
    PUBLIC_TYPES,
    AccessContext,
    Policy,
    Visibility,
    consent_patient,
    deidentify,
    forbidden,
)
from lienthong.fhir.errors import FhirError
from lienthong.fhir.search_index import IndexExtractor, IndexRows
from lienthong.storage.base import (
    HistoryPage,
    KeyList,
    ResourceStore,
    SearchPage,
    Session,
    Stored,
    WriteOp,
    WriteSession,
)
from lienthong.storage.paging import Key, OwnedSnapshots, PagingSnapshots
from lienthong.storage.query import Criterion, SearchQuery

RELATIONSHIP_TYPES = {"Encounter", "Consent"}
# the person operations ($merge, $unmerge) are a data administrator's, and they write
# masters through the index's own session, past this guard: any write transaction of
# this role may have moved records between persons
PERSON_OPERATORS = {"data_admin"}


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
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.policy = policy
        self.ctx = ctx
        self.extractor = extractor
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
        changed = persons = False
        with self.inner.writer() as session:
            guarded = GuardedSession(session, self)
            yield guarded
            changed = guarded.relationship_written
            persons = guarded.patient_written or self.ctx.role in PERSON_OPERATORS
        if changed:
            self.policy.relationship_changed()
        if persons:
            # a Patient written is resolved into a person in the same transaction
            self.policy.persons_changed()

    def paging(self) -> PagingSnapshots:
        """The store's snapshots as this user's: a page link answers only the user whose
        search made it (the issuer and subject of the token)."""
        principal = self.ctx.principal
        return OwnedSnapshots(self.inner.paging(), f"{principal.issuer or ''}|{principal.name}")

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
        self.patient_written = False
        # keys this session's own guarded search just returned: current and visible
        self._matched: set[Key] = set()

    # -- helpers ----------------------------------------------------------------

    def _vis(self) -> Visibility:
        return self.store.visibility(self.inner)

    def _is_patient_data(self, res_type: str | None) -> bool:
        return res_type not in PUBLIC_TYPES

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
        if not vis.sees(compartment, target.res_type):
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
            if vis.sees(comps[s.pk], s.res_type):
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
            for s in page.entries:
                before = s
                if s.deleted:
                    before = self.inner.vread(s.res_type, s.res_id, s.version - 1) or s
                self.ctx.touched.update(self._compartment(before))
            return HistoryPage([self._shown(s) for s in page.entries], page.total)
        self._require(res_type, "r")
        page = self.inner.history(res_type, res_id, since, at, count, offset)
        if not all(self._visible_versions(s) for s in page.entries):
            return HistoryPage([], 0)
        return HistoryPage([self._shown(s) for s in page.entries], page.total)

    def _check_criteria(self, criteria: list[Criterion], vis: Visibility) -> None:
        """Every type a search looks at needs the search permission, and analysts may
        not single out a person by what identifies them."""
        for crit in criteria:
            if vis.deidentify and (
                crit.code in IDENTIFYING_PARAMS or crit.chain or crit.has is not None
            ):
                self.policy_deny(
                    f"de-identified access cannot search by {crit.code}"
                    + (" through a chain or _has" if crit.chain or crit.has else "")
                )
            for sub in crit.chain:
                self._require(sub.resource_type, "s")
            if crit.has is not None and crit.has_source_type:
                self._require(crit.has_source_type, "s")
                self._check_criteria([crit.has], vis)
            self._check_criteria(crit.chain, vis)

    def _may(self, res_type: str, perm: str) -> bool:
        try:
            self._require(res_type, perm)
        except FhirError:
            self.ctx.denied = None  # a type left out of a search is no denial
            return False
        return True

    def _permitted(self, query: SearchQuery) -> SearchQuery:
        """``query`` as this user may run it: the types checked (or narrowed), the
        criteria checked, the rows limited to what they may see."""
        vis = self._vis()
        if query.resource_type is None and query.resource_types is not None:
            # a system-level or compartment search over several types: each type is
            # checked as its type search would be; the visibility condition the store
            # applies to every row does not depend on the type
            if query.any_permitted_type:
                allowed = tuple(t for t in query.resource_types if self._may(t, "s"))
                if not allowed:
                    self._require(None, "s")
                    self.policy_deny("the token's scopes allow searching no resource type")
                query = replace(query, resource_types=allowed, any_permitted_type=False)
            else:
                for t in query.resource_types or ():
                    self._require(t, "s")
        else:
            self._require(query.resource_type, "s")
            if query.resource_type is None and vis.patients is not None:
                raise forbidden("searching across all types needs access to every patient's data")
        self._check_criteria(query.criteria, vis)
        return replace(query, visible_patients=vis.patients, public_types=PUBLIC_TYPES)

    def search(self, query: SearchQuery) -> SearchPage:
        page = self.inner.search(self._permitted(query))
        comps = self.inner.compartments(page.matches)
        for c in comps.values():
            self.ctx.touched.update(c)
        return SearchPage([self._shown(s) for s in page.matches], page.total)

    def search_keys(self, query: SearchQuery, limit: int) -> KeyList:
        found = self.inner.search_keys(self._permitted(query), limit)
        self._matched.update(found.keys)
        return found

    def history_keys(
        self,
        res_type: str | None,
        res_id: str | None,
        since: str | None,
        at: str | None,
        limit: int,
    ) -> KeyList:
        if res_id is None:
            self._require(res_type, "s")
            if self._vis().patients is not None:
                raise forbidden("history across resources needs access to every patient's data")
            return self.inner.history_keys(res_type, res_id, since, at, limit)
        self._require(res_type, "r")
        found = self.inner.history_keys(res_type, res_id, since, at, limit)
        if self._vis().patients is not None and not all(
            self._visible_versions(s) for s in self.inner.versions(found.keys)
        ):
            return KeyList([], 0)
        return found

    def versions(self, keys: list[Key]) -> list[Stored]:
        """Versions named by a paging snapshot, as this user may see them now: types
        they may not search and versions outside their patients are left out. Keys this
        session's own search just matched are current and visible already."""
        found = self.inner.versions(keys)
        allowed: set[str] = set()
        for rtype in {s.res_type for s in found}:
            try:
                self._require(rtype, "s")
                allowed.add(rtype)
            except Exception:
                self.ctx.denied = None  # left out, as an include would be
        found = [s for s in found if s.res_type in allowed]
        matched = [s for s in found if (s.pk, s.version) in self._matched]
        comps = self.inner.compartments(matched)
        out = []
        for s in found:
            if (s.pk, s.version) in self._matched:
                self.ctx.touched.update(comps[s.pk])
            elif not self._visible_versions(s):
                continue
            out.append(self._shown(s))
        return out

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
            replace(query, visible_patients=self._vis().patients, public_types=PUBLIC_TYPES),
            ref_code,
            target_type,
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
            if op.res_type == "Patient":
                self.patient_written = True
        return self.inner.write(ops)

    def savepoint(self) -> AbstractContextManager[None]:
        assert isinstance(self.inner, WriteSession)
        return self.inner.savepoint()

    def flush(self) -> None:
        flush = getattr(self.inner, "flush", None)
        if flush is not None:
            flush()

    def _check_write(self, op: WriteOp) -> None:
        perm = "c" if op.pk is None else ("d" if op.content is None else "u")
        self._require(op.res_type, perm)
        if op.pk is None and self.inner.read(op.res_type, op.res_id) is not None:
            # an update of a resource this user cannot see reached us as a create; the
            # answer is the one any refused write gets, naming nothing new
            self.policy_deny(f"not permitted to write {op.res_type}/{op.res_id}")
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
        consent_for = None
        if op.res_type == "Consent" and op.content is not None:
            import orjson

            consent_for = consent_patient(orjson.loads(op.content))
            if consent_for is None or consent_for not in new:
                self.policy_deny("Consent.patient must be a reference of the form Patient/<id>")
        if role == "citizen":
            # their person: the master and its records as the index links them now
            own = self._vis().patients or frozenset()
            if (
                op.res_type == "Consent"
                and own
                and (new | old) <= own
                and (consent_for in own or op.content is None)
            ):
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
                    # the visit that starts a treatment relationship: allowed, and said
                    # in the audit entry so reviewers can tell it from break-the-glass
                    self.ctx.note = (
                        f"started a treatment relationship with {', '.join(sorted(new))}"
                    )
                    return
            self.policy_deny("no treatment relationship or consent covers this patient for writing")
        self.policy_deny(f"role {role} may not write {op.res_type}")

    def policy_deny(self, reason: str) -> None:
        self.ctx.denied = reason
        raise forbidden(reason)
