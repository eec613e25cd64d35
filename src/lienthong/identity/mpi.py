"""The master person index: every Patient, whatever door it came in by, tied to a person.

A *person* is a master Patient (tagged ``http://fhir.lienthong.vn/mpi|master``) that
carries the demographics of its most complete record, the 12-digit personal
identification number (CCCD) when its records agree on one, and a ``Patient.link`` of
type ``seealso`` to every source Patient. Source Patients are left as their senders
wrote them: a link back would put the master into each source's patient compartment
and so change who may see it.

Resolution runs inside the write that stored the Patient (REST, transaction and batch
entries, bulk import), so a failed write leaves no trace in the index either:

1. the record's matching features are those of `lienthong link` (names folded and split,
   dates, sex, valid CCCD/BHXH, phone, current administrative unit);
2. candidates come from the same blocking keys as the linkage model (given name + birth
   year, family name + birth date, phone, commune + birth year, CCCD, BHXH, and for a
   year off by one, an unknown place or a name split otherwise: family + given name +
   commune, family + given name + day and month, full name + birth year, birth date +
   commune, family name + commune + birth year, family and middle name + birth date,
   the name's words in any order + birth year), kept in ``mpi_key``; however many
   records share a birth date or a common name, at most ``candidate_cap`` are scored,
   those sharing the most keys with this one first (`MasterPersonIndex.candidates`);
3. each candidate person is scored by its best record pair (`scoring.PairScorer`, the
   linkage model's Fellegi-Sunter weights); a person holding a record this one can never
   be (`scoring.conflicting`: another CCCD or BHXH number not one mistyped digit away, a
   birth date no known error explains), or whose best record has a clearly different
   given name (twins), is never linked;
4. a person holding a record that shares this one's valid CCCD or BHXH number, nothing
   else contradicting it (`scoring.contradicted`: another name, a birth date no known
   error explains), is certain (probability 1.0, as the linker's identifier pass);
5. the record joins the best person at or above ``MATCH_THRESHOLD``, or becomes a new
   person; persons in the uncertain band ``[REVIEW_THRESHOLD, MATCH_THRESHOLD)`` go to
   the review list (``mpi_pair``);
6. a record at or above ``MATCH_THRESHOLD`` for two or more persons bridges them: those
   that can be one person (no record of one conflicting with a record of another, no
   reviewer's "no-match" across them) are joined under the earliest master, as `merge`
   does (the later masters retired with ``replaced-by``, a ``merge`` event "bridged by
   Patient/X" that ``$unmerge`` undoes), in the write that stored the record; those
   that conflict stay apart and their pair goes on the review list.

Human decisions (`decide`, `merge`, `unmerge`) are stored as pair decisions and win over
scores in every later resolution, including `rebuild`. Each is logged in ``mpi_event``
with who and when, and every master version is kept in the store's history.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from lienthong.fhir.engine import now_instant
from lienthong.fhir.errors import FhirError, Issue, bad_request, not_found
from lienthong.identity.linkage import MATCH_THRESHOLD
from lienthong.identity.scoring import (
    CCCD_SYSTEM,
    PairScore,
    PairScorer,
    conflicting,
    contradicted,
    patient_features,
)
from lienthong.identity.scoring import (
    IDENTIFIER_COLUMNS as IDS,
)
from lienthong.storage.base import Session, Stored, WriteOp
from lienthong.storage.sql import SqlSession

if TYPE_CHECKING:
    from lienthong.fhir.engine import FhirEngine

__all__ = [
    "MASTER_TAG",
    "MPI_SYSTEM",
    "REVIEW_THRESHOLD",
    "Candidate",
    "MasterPersonIndex",
    "is_master",
    "masters_of",
    "person_patients",
    "raw_session",
]

MPI_SYSTEM = "http://fhir.lienthong.vn/mpi"
MASTER_TAG = {"system": MPI_SYSTEM, "code": "master", "display": "master person record"}
REVIEW_THRESHOLD = 0.5
"""Below the match threshold but at least this: a person for a human to look at."""
CANDIDATE_CAP = 200
"""The most records scored against one Patient written (`MasterPersonIndex.candidates`)."""
MPI_LOCK = 0x6D7069  # PostgreSQL advisory lock key of resolution ("mpi")
POSSIBLE_THRESHOLD = 0.05
"""The least probability `$match` reports (grade ``possible``)."""


def is_master(resource: Mapping[str, Any]) -> bool:
    tags = (resource.get("meta") or {}).get("tag") or []
    return any(t.get("system") == MPI_SYSTEM and t.get("code") == "master" for t in tags)


def raw_session(session: Session) -> SqlSession:
    """The store's own session under any access guard.

    Resolution must see every record (a clinician's view would hide the very duplicates
    the index exists to find) and writes master Patients on the platform's behalf; what
    a user gets back from the operations is filtered through their guarded session.
    """
    inner: Any = session
    while not isinstance(inner, SqlSession):
        inner = getattr(inner, "inner", None)
        if inner is None:
            raise TypeError("the person index needs a SQL store session")
    return inner


def pending_review_count(session: Session) -> int:
    """Pairs waiting on the review list (one count over ``mpi_pair``'s status index)."""
    rows = raw_session(session).side("SELECT COUNT(*) FROM mpi_pair WHERE status = 'review'")
    return int(rows[0][0])


def person_patients(session: Session, patient_id: str) -> frozenset[str]:
    """Every Patient id of the person ``patient_id`` stands for, as the index links them now.

    ``patient_id`` may be a source record or a master; a master retired by a merge is
    followed along its ``replaced-by`` link to the person it went into. The answer holds
    the id itself, the masters on the way, the current master and its source records; an
    id the index does not know stands for itself alone. Read-only: the access policy
    asks this to learn whose records one person may see.
    """
    raw = raw_session(session)
    out = {patient_id}
    rows = raw.side("SELECT master_id FROM mpi_record WHERE res_id = ?", (patient_id,))
    master = str(rows[0][0]) if rows else None
    if master is None:
        current = patient_id
        for _ in range(16):  # merges chain; a loop would be a broken index, not a person
            stored = raw.read("Patient", current)
            resource = orjson.loads(stored.content) if stored and stored.content else {}
            if not is_master(resource):
                return frozenset(out)
            out.add(current)
            if raw.side("SELECT 1 FROM mpi_record WHERE master_id = ? LIMIT 1", (current,)):
                master = current
                break
            nxt = [
                str((link.get("other") or {}).get("reference", ""))[len("Patient/") :]
                for link in resource.get("link") or []
                if link.get("type") == "replaced-by"
                and str((link.get("other") or {}).get("reference", "")).startswith("Patient/")
            ]
            if not nxt or nxt[0] in out:
                return frozenset(out)
            current = nxt[0]
        if master is None:
            return frozenset(out)
    out.add(master)
    out.update(
        str(r[0]) for r in raw.side("SELECT res_id FROM mpi_record WHERE master_id = ?", (master,))
    )
    return frozenset(out)


def masters_of(session: Session, ids: list[str]) -> dict[str, str]:
    """The current master of each of the source Patients ``ids`` the index links (ids it
    does not link are left out). Read-only, as :func:`person_patients`."""
    raw = raw_session(session)
    out: dict[str, str] = {}
    for chunk in _chunks(ids, 500):
        for rid, master in raw.side(
            f"SELECT res_id, master_id FROM mpi_record WHERE res_id IN ({_marks(chunk)})",
            chunk,
        ):
            out[str(rid)] = str(master)
    return out


def blocking_keys(f: Mapping[str, Any]) -> list[str]:
    """The linkage model's blocking rules as keys: records sharing a key are compared."""
    keys: list[str] = []
    year, month, day = f.get("birth_year"), f.get("birth_month"), f.get("birth_day")
    if year is not None and f.get("given_key"):
        keys.append(f"gy|{f['given_key']}|{year}")
    if f.get("family_key") and year is not None and month is not None and day is not None:
        keys.append(f"fd|{f['family_key']}|{year}-{month}-{day}")
    if f.get("phone"):
        keys.append(f"p|{f['phone']}")
    if f.get("commune") and year is not None:
        keys.append(f"cy|{f['commune']}|{year}")
    family, given = f.get("family_key"), f.get("given_key")
    # the year off by one, the place unknown on one side, the name split otherwise
    if family and given and f.get("commune"):
        keys.append(f"fgc|{family}|{given}|{f['commune']}")
    if family and given and month is not None and day is not None:
        keys.append(f"fgd|{family}|{given}|{month}-{day}")
    if family and given and f.get("middle_key") and year is not None:
        keys.append(f"fmgy|{family}|{f['middle_key']}|{given}|{year}")
    if f.get("commune") and year is not None and month is not None and day is not None:
        keys.append(f"dc|{f['commune']}|{year}-{month}-{day}")
    if family and f.get("commune") and year is not None:
        keys.append(f"fcy|{family}|{f['commune']}|{year}")
    if family and f.get("middle_key") and year is not None and month is not None and day:
        keys.append(f"fmd|{family}|{f['middle_key']}|{year}-{month}-{day}")
    if f.get("name_words") and year is not None:
        keys.append(f"wy|{f['name_words']}|{year}")
    if f.get("cccd"):
        keys.append(f"c|{f['cccd']}")
    if f.get("bhxh"):
        keys.append(f"b|{f['bhxh']}")
    return keys


def _chunks(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _marks(items: list[Any]) -> str:
    return ", ".join("?" for _ in items)


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


@dataclass(frozen=True)
class Candidate:
    """A person scored against a record: its master, best record pair and grade."""

    master_id: str
    record_id: str
    score: PairScore
    grade: str  # certain | probable | possible
    eligible: bool  # may be linked automatically (no identifier conflict, given names agree)


class MasterPersonIndex:
    """Resolution and the person operations, over one engine's store."""

    def __init__(
        self,
        engine: FhirEngine,
        scorer: PairScorer | None = None,
        match_threshold: float = MATCH_THRESHOLD,
        review_threshold: float = REVIEW_THRESHOLD,
        candidate_cap: int = CANDIDATE_CAP,
    ) -> None:
        self.engine = engine
        self.scorer = scorer or PairScorer.default()
        self.match_threshold = match_threshold
        self.review_threshold = review_threshold
        self.candidate_cap = candidate_cap
        self.last_scored = 0  # records the latest resolution or $match scored
        self.scored_total = 0
        self._earlier_masters: dict[str, str] = {}  # record -> its master before a rebuild
        self._retired: set[str] = set()  # masters a bridge retired during a rebuild

    # ------------------------------------------------------------------ the write hook

    def on_written(self, session: Session, ops: list[WriteOp]) -> None:
        """Resolve Patients just written in ``session`` (called by the engine's writes)."""
        raw = raw_session(session)
        self.lock(raw)
        actor = _actor(session)
        dirty: set[str] = set()
        for op in ops:
            if op.res_type != "Patient":
                continue
            resource = orjson.loads(op.content) if op.content is not None else None
            # Masters are written by the index itself, never through the engine: a client
            # may not make one, change one, delete one, nor reuse the id of a retired one.
            if (resource is not None and is_master(resource)) or self._was_master(
                raw, op.res_id, op.version - 1
            ):
                raise FhirError(
                    422,
                    [
                        Issue(
                            "business-rule",
                            f"Patient/{op.res_id}: master person records are kept by the "
                            "person index; use Patient/$merge or $unmerge",
                            expression=("Patient.meta.tag",),
                        )
                    ],
                )
            if resource is None:
                self._detach(raw, op.res_id, op.last_updated, dirty)
                continue
            self.resolve(raw, op.res_id, resource, op.last_updated, dirty, actor)
        if dirty:
            self._write_masters(raw, dirty, max(op.last_updated for op in ops))

    def lock(self, raw: SqlSession) -> None:
        """Serialise resolutions until the transaction ends. SQLite has one writer anyway;
        on PostgreSQL two transactions resolving the same new person at once would each
        make a master for it."""
        if raw.dialect.name == "postgresql":
            raw.side("SELECT pg_advisory_xact_lock(?)", (MPI_LOCK,))

    def _was_master(self, raw: SqlSession, res_id: str, version: int) -> bool:
        """Whether the Patient's last version with content, at or before ``version``, is a
        master record (a deletion in between, by a client or by the index retiring the
        master, does not make the id a source record's)."""
        for v in range(version, 0, -1):
            stored = raw.vread("Patient", res_id, v)
            if stored is not None and stored.content:
                return is_master(orjson.loads(stored.content))
        return False

    # ------------------------------------------------------------------ resolution

    def resolve(
        self,
        raw: SqlSession,
        res_id: str,
        resource: Mapping[str, Any],
        now: str | None = None,
        dirty: set[str] | None = None,
        actor: tuple[str, Any] | None = None,
    ) -> str:
        """Link one source Patient to its person (made if new); returns the master id.

        With ``dirty``, the masters to rewrite are added to it for the caller to write in
        one go (`_write_masters`) instead of one by one. ``actor``: who the write runs for
        and their access context, should the record bridge two persons (`_bridge`)."""
        now = now or now_instant()
        pending: set[str] = set() if dirty is None else dirty
        features = patient_features(resource)
        features["record_id"] = res_id
        previous = self._master_of(raw, res_id)
        decisions = self._decisions(raw, res_id)
        candidates = self.candidates(raw, features, exclude=res_id, extra=set(decisions))
        masters_of = self._masters_of(raw, list(decisions))
        refused = {
            masters_of[o] for o, d in decisions.items() if d == "no-match" and o in masters_of
        }
        # A "no-match" with any record of a person outweighs a "match" with another of
        # its records: a wrong merge shows one person's history to another.
        forced = next(
            (
                masters_of[o]
                for o, d in sorted(decisions.items())
                if d == "match" and o in masters_of and masters_of[o] not in refused
            ),
            None,
        )
        target = forced
        if target is None:
            for c in candidates:
                if (
                    c.eligible
                    and c.master_id not in refused
                    and c.score.probability >= self.match_threshold
                ):
                    target = c.master_id
                    break
        # the review list: uncertain persons other than the one chosen (a record not in
        # the index yet has no pending pairs to clear)
        if previous is not None:
            raw.side("DELETE FROM mpi_pair WHERE status = 'review' AND (a_id = ? OR b_id = ?)",
                     (res_id, res_id))  # fmt: skip
        joined: set[str] = set()
        if target is not None:
            bridged = [
                c
                for c in candidates
                if c.master_id != target
                and c.eligible
                and c.master_id not in refused
                and c.score.probability >= self.match_threshold
            ]
            if bridged:
                target, joined = self._bridge(
                    raw, res_id, target, candidates, bridged, pending, actor or _actor(raw), now
                )
        for c in candidates:
            if (
                c.master_id == target
                or c.master_id in joined
                or c.master_id in refused
                or not c.eligible
            ):
                continue
            if self.review_threshold <= c.score.probability:
                self._put_review(raw, res_id, c)
        if target is None and previous is not None:
            alone = not raw.side(
                "SELECT 1 FROM mpi_record WHERE master_id = ? AND res_id <> ? LIMIT 1",
                (previous, res_id),
            )
            if alone:
                target = previous  # a person of one record keeps its master (and its id)
        how = "decision" if forced else ("auto" if target else "new")
        best = next((c for c in candidates if c.master_id == target), None)
        score = 1.0 if forced else (best.score.probability if best else None)
        if previous is not None and previous != target and previous not in joined:
            self._set_record(raw, res_id, None, features, None, how)
            pending.add(previous)
        if target is None:
            target = self._reusable_id(raw, res_id) or self.engine.new_id()
        known = previous is not None and (previous == target or previous in joined)
        self._set_record(raw, res_id, target, features, score, how, known)
        pending.add(target)
        if dirty is None:
            self._write_masters(raw, pending, now)
        return target

    def _bridge(
        self,
        raw: SqlSession,
        res_id: str,
        target: str,
        candidates: list[Candidate],
        bridged: list[Candidate],
        pending: set[str],
        actor: tuple[str, Any],
        now: str,
    ) -> tuple[str, set[str]]:
        """The record is a certain match for ``target`` and for each of ``bridged``: join
        the persons that can be one (no record of one conflicts with a record of another,
        no reviewer kept them apart) under the earliest master, as `merge` would, and put
        the others on the review list. Returns the master the record goes to and the
        masters retired into it."""
        by_master = {c.master_id: c for c in candidates}
        members = self._members(raw, [target, *(c.master_id for c in bridged)])
        group = [target]
        kept = dict(members[target])
        for c in bridged:
            theirs = members[c.master_id]
            if not theirs:
                continue
            if self._kept_apart(raw, kept, theirs):
                mine = by_master.get(target)
                if mine is not None:
                    self._put_bridge_review(raw, res_id, mine.record_id, c.record_id)
                continue
            group.append(c.master_id)
            kept.update(theirs)
        if len(group) == 1:
            return target, set()
        first = min(group, key=lambda m: self._created(raw, m))
        who, ctx = actor
        for master in sorted(group):
            if master == first:
                continue
            moved = sorted(members[master])
            raw.side(
                "UPDATE mpi_record SET master_id = ?, how = 'bridge' WHERE master_id = ?",
                (first, master),
            )
            others = [r for m in group if m != master for r in members[m]]
            for a, b in (_pair(x, y) for x in moved for y in others):
                raw.side(
                    "DELETE FROM mpi_pair WHERE status = 'review' AND a_id = ? AND b_id = ?",
                    (a, b),
                )
            stored = raw.read("Patient", master)
            if stored is not None and stored.content is not None:
                self._write_master(raw, master, now, replaced_by=first)
            pending.discard(master)
            if self._earlier_masters:  # a rebuild: the id must not be reused
                self._retired.add(master)
            self._log(
                raw, who, "merge",
                {"source": master, "target": first, "records": moved, "decisions": [],
                 "reason": f"bridged by Patient/{res_id}"},
            )  # fmt: skip
            if ctx is not None:
                ctx.touched.update([master, *moved])
        pending.add(first)
        return first, set(group) - {first}

    def _kept_apart(
        self,
        raw: SqlSession,
        left: Mapping[str, Mapping[str, Any]],
        right: Mapping[str, Mapping[str, Any]],
    ) -> bool:
        """Whether two persons can never be one: a record of one conflicts with a record
        of the other (`scoring.conflicting`), or a reviewer decided a pair across them is
        no match."""
        if any(conflicting(a, b) for a in left.values() for b in right.values()):
            return True
        ids = sorted({*left, *right})
        if len(ids) > 1000:  # two large persons: ask pair by pair
            return any(
                raw.side(
                    "SELECT 1 FROM mpi_pair WHERE status = 'no-match' AND a_id = ? AND b_id = ?",
                    _pair(a, b),
                )
                for a in left
                for b in right
            )
        rows = raw.side(
            "SELECT a_id, b_id FROM mpi_pair WHERE status = 'no-match' "
            f"AND a_id IN ({_marks(ids)}) AND b_id IN ({_marks(ids)})",
            [*ids, *ids],
        )
        return any((a in left and b in right) or (a in right and b in left) for a, b in rows)

    def _created(self, raw: SqlSession, master_id: str) -> tuple[int, int, str]:
        """Sort key: masters already stored by the order of their first version, then
        those made in this write (not stored yet) by id."""
        first = raw.vread("Patient", master_id, 1)
        return (0, first.pk, master_id) if first is not None else (1, 0, master_id)

    def _put_bridge_review(self, raw: SqlSession, res_id: str, a_id: str, b_id: str) -> None:
        """Two persons a record matches but that can never be one: their two records the
        record matched best go on the review list."""
        a, b = _pair(a_id, b_id)
        if raw.side("SELECT status FROM mpi_pair WHERE a_id = ? AND b_id = ?", (a, b)):
            return
        features = dict(
            (rid, orjson.loads(f))
            for rid, f in raw.side(
                "SELECT res_id, features FROM mpi_record WHERE res_id IN (?, ?)", (a, b)
            )
        )
        score = (
            self.scorer.score(features[a], features[b]) if a in features and b in features else None
        )
        detail: dict[str, Any] = {"bridged_by": f"Patient/{res_id}", "conflict": True}
        if score is not None:
            detail.update(
                {"agree": list(score.agree), "disagree": list(score.disagree),
                 "levels": score.levels}
            )  # fmt: skip
        raw.side(
            "INSERT INTO mpi_pair (a_id, b_id, score, status, detail) "
            "VALUES (?, ?, ?, 'review', ?)",
            (a, b, score.probability if score is not None else 0.0, orjson.dumps(detail).decode()),
        )

    def _reusable_id(self, raw: SqlSession, res_id: str) -> str | None:
        """During a rebuild, the master id the record's person had before, unless another
        person of the rebuild has taken it: citizens, consents and merge events name
        persons by these ids."""
        hint = self._earlier_masters.get(res_id)
        if (
            hint
            and hint not in self._retired
            and not raw.side("SELECT 1 FROM mpi_record WHERE master_id = ? LIMIT 1", (hint,))
        ):
            return hint
        return None

    def candidates(
        self,
        raw: SqlSession,
        features: Mapping[str, Any],
        exclude: str | None = None,
        extra: set[str] | None = None,
    ) -> list[Candidate]:
        """Persons sharing a blocking key with ``features``, best first.

        Bounded however many records share a birth date or a common name: the records
        holding a key of this one are ranked by how many keys they share (a CCCD or BHXH
        key counts as a hundred) and at most ``candidate_cap`` records are scored, taken
        person by person in that order (a person's other records too, while the cap
        allows). A true duplicate shares most of its keys, so it ranks first; a block as
        large as "Nguyễn born on this day" only fills the tail. ``last_scored`` and
        ``scored_total`` count the records scored."""
        keys = blocking_keys(features)
        extra_ids = sorted(extra or ())
        ranked = [i for i in extra_ids if i != exclude] + self._ranked(raw, keys, exclude)
        if not ranked:
            self.last_scored = 0
            return []
        ranked = list(dict.fromkeys(ranked))
        rows = []
        for chunk in _chunks(ranked, 500):
            rows += raw.side(
                "SELECT res_id, master_id, features FROM mpi_record WHERE master_id IN "
                f"(SELECT master_id FROM mpi_record WHERE res_id IN ({_marks(chunk)}))",
                chunk,
            )
        everyone: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for rid, master, blob in rows:
            if rid != exclude:
                everyone[master][rid] = orjson.loads(blob)
        master_of = {rid: m for m, recs in everyone.items() for rid in recs}
        # persons in the order of their best-ranked record, within the cap
        budget = self.candidate_cap
        members: dict[str, dict[str, dict[str, Any]]] = {}
        for rid in ranked:
            master = master_of.get(rid)
            if master is None or master in members or budget <= 0:
                continue
            records = everyone[master]
            if len(records) > budget:  # the ranked records of this person only
                own = [r for r in ranked if master_of.get(r) == master][:budget]
                records = {r: records[r] for r in own}
            members[master] = records
            budget -= len(records)
        self.last_scored = self.candidate_cap - budget
        self.scored_total += self.last_scored
        out: list[Candidate] = []
        for master_id, records in members.items():
            records = {rid: f for rid, f in records.items() if rid != exclude}
            if not records:
                continue
            scored = [(self.scorer.score(features, f), rid) for rid, f in sorted(records.items())]
            pairs_ok = [(s, rid) for s, rid in scored if not s.given_differs]
            pool = pairs_ok or scored
            best_score, best_id = max(pool, key=lambda x: x[0].probability)
            # never a person holding a record this one cannot be: another CCCD or BHXH
            # number, a birth date no known error explains (however its records were
            # chained together)
            eligible = bool(pairs_ok) and not any(
                conflicting(features, f) for f in everyone[master_id].values()
            )
            # as the linker's identifier pass: a record sharing this one's valid CCCD or
            # BHXH number, nothing else contradicting it, is the same person
            identified = next(
                (
                    rid
                    for rid, f in sorted(records.items())
                    if any(features.get(k) and features.get(k) == f.get(k) for k in IDS)
                    and not contradicted(features, f)
                ),
                None,
            )
            identified = identified if eligible else None
            if identified:
                best_id = identified
                best_score = dataclasses.replace(
                    self.scorer.score(features, records[identified]), probability=1.0
                )
            out.append(
                Candidate(
                    master_id, best_id, best_score, self.grade(best_score.probability), eligible
                )
            )
        out.sort(key=lambda c: (-c.score.probability, c.master_id))
        return out

    def _ranked(self, raw: SqlSession, keys: list[str], exclude: str | None) -> list[str]:
        """The records holding any of ``keys`` (not ``exclude``), most keys shared first,
        at most ``candidate_cap``."""
        if not keys:
            return []
        strong = [k for k in keys if k.startswith(("c|", "b|"))]
        weight = (
            f"SUM(CASE WHEN key IN ({_marks(strong)}) THEN 100 ELSE 1 END)"
            if strong
            else "COUNT(*)"
        )
        rows = raw.side(
            f"SELECT res_id FROM mpi_key WHERE key IN ({_marks(keys)}) AND res_id <> ? "
            f"GROUP BY res_id ORDER BY {weight} DESC, res_id LIMIT ?",
            [*keys, exclude or "", *strong, self.candidate_cap],
        )
        return [str(r[0]) for r in rows]

    def grade(self, probability: float) -> str:
        if probability >= self.match_threshold:
            return "certain"
        if probability >= self.review_threshold:
            return "probable"
        return "possible"

    def match(
        self, session: Session, resource: Mapping[str, Any], count: int, only_certain: bool
    ) -> list[Candidate]:
        """`Patient/$match`: candidate persons for a Patient that need not be stored."""
        raw = raw_session(session)
        features = patient_features(resource)
        out = [
            c
            for c in self.candidates(raw, features)
            if c.eligible and c.score.probability >= POSSIBLE_THRESHOLD
        ]
        if only_certain:
            out = [c for c in out if c.grade == "certain"]
        return out[:count]

    # ------------------------------------------------------------------ the index tables

    def _master_of(self, raw: SqlSession, res_id: str) -> str | None:
        rows = raw.side("SELECT master_id FROM mpi_record WHERE res_id = ?", (res_id,))
        return str(rows[0][0]) if rows else None

    def _masters_of(self, raw: SqlSession, ids: list[str]) -> dict[str, str]:
        return masters_of(raw, ids)

    def _members(self, raw: SqlSession, masters: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in masters}
        for chunk in _chunks(masters, 500):
            for rid, master, features in raw.side(
                "SELECT res_id, master_id, features FROM mpi_record "
                f"WHERE master_id IN ({_marks(chunk)})",
                chunk,
            ):
                out[master][rid] = orjson.loads(features)
        return out

    def _decisions(self, raw: SqlSession, res_id: str) -> dict[str, str]:
        rows = raw.side(
            "SELECT a_id, b_id, status FROM mpi_pair WHERE status IN ('match', 'no-match') "
            "AND (a_id = ? OR b_id = ?)",
            (res_id, res_id),
        )
        return {(b if a == res_id else a): status for a, b, status in rows}

    def _set_record(
        self,
        raw: SqlSession,
        res_id: str,
        master_id: str | None,
        features: Mapping[str, Any],
        score: float | None,
        how: str,
        known: bool = True,
    ) -> None:
        """Replace the record's row and blocking keys (``known=False``: it has none yet)."""
        if known:
            raw.side("DELETE FROM mpi_record WHERE res_id = ?", (res_id,))
            raw.side("DELETE FROM mpi_key WHERE res_id = ?", (res_id,))
        if master_id is None:
            return
        raw.side(
            "INSERT INTO mpi_record (res_id, master_id, features, score, how) "
            "VALUES (?, ?, ?, ?, ?)",
            (res_id, master_id, orjson.dumps(dict(features)).decode(), score, how),
        )
        keys = blocking_keys(features)
        if keys:  # one statement, one round trip
            raw.side(
                f"INSERT INTO mpi_key (key, res_id) VALUES {', '.join('(?, ?)' for _ in keys)}",
                [x for k in keys for x in (k, res_id)],
            )

    def _put_review(self, raw: SqlSession, res_id: str, c: Candidate) -> None:
        a, b = _pair(res_id, c.record_id)
        if raw.side("SELECT status FROM mpi_pair WHERE a_id = ? AND b_id = ?", (a, b)):
            return  # decided already (pending rows of this record were just cleared)
        detail = {"agree": list(c.score.agree), "disagree": list(c.score.disagree),
                  "levels": c.score.levels}  # fmt: skip
        raw.side(
            "INSERT INTO mpi_pair (a_id, b_id, score, status, detail) "
            "VALUES (?, ?, ?, 'review', ?)",
            (a, b, c.score.probability, orjson.dumps(detail).decode()),
        )

    def _log(self, raw: SqlSession, who: str, action: str, detail: Mapping[str, Any]) -> str:
        event_id = str(uuid.uuid4())
        raw.side(
            "INSERT INTO mpi_event (id, at, who, action, detail) VALUES (?, ?, ?, ?, ?)",
            (event_id, now_instant(), who, action, orjson.dumps(dict(detail)).decode()),
        )
        return event_id

    # ------------------------------------------------------------------ master records

    def _write_master(
        self, raw: SqlSession, master_id: str, now: str, replaced_by: str | None = None
    ) -> None:
        """Write one master's next version (retired with a ``replaced-by`` link when merged
        away)."""
        if replaced_by is None:
            self._write_masters(raw, {master_id}, now)
            return
        previous = raw.read("Patient", master_id)
        assert previous is not None and previous.content is not None
        content = orjson.loads(previous.content)
        content["active"] = False
        content["link"] = [
            {"other": {"reference": f"Patient/{replaced_by}"}, "type": "replaced-by"}
        ]
        op = self.engine.prepare(
            content, master_id, previous.version + 1, now, "PUT", previous, validate=False
        )
        raw.write([op])

    def _write_masters(self, raw: SqlSession, master_ids: set[str], now: str) -> None:
        """Write the next version of each master from its current records, all in one
        write (deleted when no record remains)."""
        ids = sorted(master_ids)
        previous = {
            s.res_id: s for s in raw.read_many([("Patient", m) for m in ids], include_deleted=True)
        }
        members = self._members(raw, ids)
        wanted = [("Patient", r) for m in ids for r in members[m]]
        sources = {s.res_id: s for s in raw.read_many(wanted)}
        ops: list[WriteOp] = []
        for master_id in ids:
            prev = previous.get(master_id)
            if not members[master_id]:
                if prev is not None and not prev.deleted:
                    ops.append(self.engine.deletion(prev, now))
                continue
            content = self._master_content(members[master_id], sources)
            version = prev.version + 1 if prev is not None else 1
            method = "PUT" if prev is not None else "POST"
            ops.append(
                self.engine.prepare(content, master_id, version, now, method, prev, validate=False)
            )
        if ops:
            raw.write(ops)

    def _master_content(
        self, members: Mapping[str, Mapping[str, Any]], sources: Mapping[str, Stored]
    ) -> dict[str, Any]:
        ids = sorted(members)
        best_id = max(
            ids,
            key=lambda i: (
                _completeness(members[i]),
                sources[i].last_updated if i in sources else "",
                i,
            ),
        )
        best = orjson.loads(sources[best_id].content or b"{}") if best_id in sources else {}
        master: dict[str, Any] = {
            "resourceType": "Patient",
            "meta": {"tag": [MASTER_TAG]},
            "active": True,
        }
        # the CCCD only when the records agree on it: each was checked against its own
        # record's sex and birth year, so a child filed under the mother's number counts
        # for nothing here
        cccds = {members[i].get("cccd") for i in ids} - {None}
        if len(cccds) == 1:
            master["identifier"] = [
                {
                    "use": "official",
                    "system": CCCD_SYSTEM,
                    "value": cccds.pop(),
                }
            ]
        for key in ("name", "gender", "birthDate", "telecom", "address"):
            if best.get(key):
                master[key] = best[key]
        master["link"] = [{"other": {"reference": f"Patient/{i}"}, "type": "seealso"} for i in ids]
        return master

    def _detach(self, raw: SqlSession, res_id: str, now: str, dirty: set[str]) -> None:
        """A source Patient was deleted: it leaves its person."""
        master = self._master_of(raw, res_id)
        if master is None:
            return
        self._set_record(raw, res_id, None, {}, None, "deleted")
        raw.side("DELETE FROM mpi_pair WHERE status = 'review' AND (a_id = ? OR b_id = ?)",
                 (res_id, res_id))  # fmt: skip
        dirty.add(master)

    # ------------------------------------------------------------------ operations

    def person_of(self, session: Session, patient_id: str) -> str:
        """The master of a Patient id, which may be a master itself."""
        raw = raw_session(session)
        master = self._master_of(raw, patient_id)
        if master is not None:
            return master
        current = raw.read("Patient", patient_id)
        if current is not None and self._was_master(raw, patient_id, current.version):
            return patient_id
        raise not_found(f"Patient/{patient_id} is not in the person index")

    def records_of(self, session: Session, master_id: str) -> list[str]:
        raw = raw_session(session)
        return sorted(self._members(raw, [master_id])[master_id])

    def merge(self, session: Session, source: str, target: str, who: str) -> dict[str, Any]:
        """Merge the person of ``source`` into the person of ``target`` (Patient ids of a
        record or a master). The source master is retired (``active=false``,
        ``replaced-by``); the decision sticks through later resolutions."""
        raw = raw_session(session)
        self.lock(raw)
        src, tgt = self.person_of(raw, source), self.person_of(raw, target)
        if src == tgt:
            raise bad_request(f"Patient/{source} and Patient/{target} are already one person")
        members = self._members(raw, [src, tgt])
        moved, kept = sorted(members[src]), sorted(members[tgt])
        if not moved or not kept:
            raise bad_request("a retired person cannot be merged", "source-patient")
        now = now_instant()
        for rid in moved:
            raw.side(
                "UPDATE mpi_record SET master_id = ?, how = 'merge', score = 1.0 WHERE res_id = ?",
                (tgt, rid),
            )
        # A match with every record of the target person, not one: splitting any one of
        # them out later must not leave the moved records without a decision (they would
        # then be re-scored on their next update and could leave the merged person).
        decided = []
        for rid, other in ((r, k) for r in moved for k in kept):
            a, b = _pair(rid, other)
            self._decide_pair(raw, a, b, "match", who, now)
            decided.append([a, b])
        for a, b in ((x, y) for x in moved for y in kept):
            raw.side(
                "DELETE FROM mpi_pair WHERE status = 'review' AND a_id = ? AND b_id = ?",
                _pair(a, b),
            )
        self._write_master(raw, tgt, now)
        self._write_master(raw, src, now, replaced_by=tgt)
        event = self._log(
            raw, who, "merge",
            {"source": src, "target": tgt, "records": moved, "decisions": decided},
        )  # fmt: skip
        return {"event": event, "source": src, "target": tgt, "records": moved}

    def unmerge(
        self, session: Session, who: str, event_id: str | None = None, record: str | None = None
    ) -> dict[str, Any]:
        """Undo a merge event (its records go back to the restored source person), or split
        one record out into a person of its own; either way the records are kept apart
        from then on."""
        raw = raw_session(session)
        self.lock(raw)
        now = now_instant()
        if event_id is not None:
            rows = raw.side("SELECT action, detail FROM mpi_event WHERE id = ?", (event_id,))
            if not rows or rows[0][0] != "merge":
                raise not_found(f"no merge event {event_id}")
            detail = orjson.loads(rows[0][1])
            src, tgt, moved = detail["source"], detail["target"], detail["records"]
            current = self._masters_of(raw, moved)
            if any(current.get(r) != tgt for r in moved):
                raise FhirError(
                    409,
                    [
                        Issue(
                            "conflict",
                            f"the records of merge {event_id} have moved since; "
                            "unmerge them one by one",
                        )
                    ],
                )
            for a, b in detail["decisions"]:
                raw.side("DELETE FROM mpi_pair WHERE a_id = ? AND b_id = ?", (a, b))
            for rid in moved:
                raw.side(
                    "UPDATE mpi_record SET master_id = ?, how = 'unmerge' WHERE res_id = ?",
                    (src, rid),
                )
            kept = sorted(self._members(raw, [tgt])[tgt])
            for a, b in ((x, y) for x in moved for y in kept):
                self._decide_pair(raw, *_pair(a, b), "no-match", who, now)
            self._write_master(raw, src, now)
            self._write_master(raw, tgt, now)
            event = self._log(
                raw,
                who,
                "unmerge",
                {"merge": event_id, "source": src, "target": tgt, "records": moved},
            )
            return {"event": event, "source": src, "target": tgt, "records": moved}
        if record is None:
            raise bad_request("unmerge needs a merge event or a record to split out")
        master = self._master_of(raw, record)
        if master is None:
            raise not_found(f"Patient/{record} is not a record in the person index")
        others = sorted(r for r in self._members(raw, [master])[master] if r != record)
        if not others:
            raise bad_request(f"Patient/{record} is alone in its person already")
        for other in others:
            self._decide_pair(raw, *_pair(record, other), "no-match", who, now)
        new_master = self.engine.new_id()
        raw.side(
            "UPDATE mpi_record SET master_id = ?, how = 'unmerge', score = NULL WHERE res_id = ?",
            (new_master, record),
        )
        self._write_master(raw, master, now)
        self._write_master(raw, new_master, now)
        event = self._log(raw, who, "split", {"record": record, "from": master, "to": new_master})
        return {"event": event, "source": master, "target": new_master, "records": [record]}

    def _decide_pair(
        self, raw: SqlSession, a: str, b: str, status: str, who: str, now: str
    ) -> None:
        rows = raw.side("SELECT score FROM mpi_pair WHERE a_id = ? AND b_id = ?", (a, b))
        if rows:
            raw.side(
                "UPDATE mpi_pair SET status = ?, decided_by = ?, decided_at = ? "
                "WHERE a_id = ? AND b_id = ?",
                (status, who, now, a, b),
            )
        else:
            raw.side(
                "INSERT INTO mpi_pair (a_id, b_id, score, status, decided_by, decided_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (a, b, self._pair_score(raw, a, b), status, who, now),
            )

    def _pair_score(self, raw: SqlSession, a: str, b: str) -> float:
        rows = dict(
            (rid, orjson.loads(f))
            for rid, f in raw.side(
                "SELECT res_id, features FROM mpi_record WHERE res_id IN (?, ?)", (a, b)
            )
        )
        if a in rows and b in rows:
            return self.scorer.score(rows[a], rows[b]).probability
        return 0.0

    def decide(self, session: Session, a: str, b: str, decision: str, who: str) -> dict[str, Any]:
        """A reviewer's decision on a pair; applied now and kept for every later resolution."""
        if decision not in ("match", "no-match"):
            raise bad_request(f"a decision is match or no-match, not {decision!r}")
        raw = raw_session(session)
        self.lock(raw)
        masters = self._masters_of(raw, [a, b])
        for rid in (a, b):
            if rid not in masters:
                raise not_found(f"Patient/{rid} is not a record in the person index")
        first, second = _pair(a, b)
        result: dict[str, Any] = {"pair": f"{first}:{second}", "decision": decision}
        now = now_instant()
        if decision == "match" and masters[a] != masters[b]:
            result.update(self.merge(raw, b, a, who))
        self._decide_pair(raw, first, second, decision, who, now)
        if decision == "no-match" and masters[a] == masters[b]:
            # b (the record named second) leaves; resolved again, it cannot rejoin a
            stored = raw.read("Patient", b)
            assert stored is not None and stored.content is not None
            target = self.resolve(raw, b, orjson.loads(stored.content), now)
            result.update({"source": masters[a], "target": target, "records": [b]})
        self._log(raw, who, "decide", {"a": first, "b": second, "decision": decision})
        return result

    # ------------------------------------------------------------------ reporting

    def review(self, session: Session, limit: int = 100) -> list[dict[str, Any]]:
        raw = raw_session(session)
        rows = raw.side(
            "SELECT a_id, b_id, score, detail FROM mpi_pair WHERE status = 'review' "
            "ORDER BY score DESC, a_id, b_id LIMIT ?",
            (limit,),
        )
        return [
            {"pair": f"{a}:{b}", "a": a, "b": b, "score": float(s), **orjson.loads(d or "{}")}
            for a, b, s, d in rows
        ]

    def stats(self, session: Session) -> dict[str, int]:
        raw = raw_session(session)
        records = raw.side("SELECT COUNT(*), COUNT(DISTINCT master_id) FROM mpi_record")[0]
        counts = dict(raw.side("SELECT status, COUNT(*) FROM mpi_pair GROUP BY status"))
        events = raw.side(
            "SELECT COUNT(*) FROM mpi_event WHERE action IN ('merge', 'unmerge', 'split')"
        )
        return {
            "records": int(records[0]),
            "persons": int(records[1]),
            "pending_reviews": int(counts.get("review", 0)),
            "decided_match": int(counts.get("match", 0)),
            "decided_no_match": int(counts.get("no-match", 0)),
            "merge_events": int(events[0][0]),
        }

    def events(self, session: Session, limit: int = 100) -> list[dict[str, Any]]:
        raw = raw_session(session)
        rows = raw.side(
            "SELECT id, at, who, action, detail FROM mpi_event ORDER BY at DESC, id LIMIT ?",
            (limit,),
        )
        return [
            {"id": i, "at": at, "who": who, "action": action, **orjson.loads(d)}
            for i, at, who, action, d in rows
        ]

    def rebuild(
        self, progress: Callable[[int, int], None] | None = None, batch: int = 500
    ) -> dict[str, int]:
        """Re-resolve every source Patient from scratch; decisions are kept and win again.

        Runs in batches (each all-or-nothing); the first one retires every master, and a
        person remade keeps the master id its first record had where no other has taken it.
        """
        store = self.engine.store
        with store.writer() as session:
            raw = raw_session(session)
            self.lock(raw)
            now = now_instant()
            earlier = dict(raw.side("SELECT res_id, master_id FROM mpi_record"))
            masters = sorted(set(earlier.values()))
            raw.side("DELETE FROM mpi_record")
            raw.side("DELETE FROM mpi_key")
            raw.side("DELETE FROM mpi_pair WHERE status = 'review'")
            for chunk in _chunks(sorted(masters), 500):
                for stored in raw.read_many([("Patient", m) for m in chunk]):
                    raw.write([self.engine.deletion(stored, now)])
            ids = [
                r[0]
                for r in raw.side(
                    "SELECT res_id FROM resource WHERE res_type = 'Patient' AND deleted = 0 "
                    "ORDER BY pk"
                )
            ]
        sources = 0
        self._earlier_masters = earlier
        self._retired = set()
        try:
            for chunk in _chunks(ids, batch):
                with store.writer() as session:
                    raw = raw_session(session)
                    self.lock(raw)
                    dirty: set[str] = set()
                    now = now_instant()
                    for stored in raw.read_many([("Patient", i) for i in chunk]):
                        resource = orjson.loads(stored.content or b"{}")
                        if is_master(resource):
                            continue
                        self.resolve(raw, stored.res_id, resource, now, dirty)
                        sources += 1
                    self._write_masters(raw, dirty, now)
                if progress is not None:
                    progress(len(chunk), len(ids))
        finally:
            self._earlier_masters = {}
            self._retired = set()
        with store.reader() as session:
            raw = raw_session(session)
            kept = {r[0] for r in raw.side("SELECT DISTINCT master_id FROM mpi_record")}
            retired = len(set(masters) - kept)
            return {**self.stats(session), "resolved": sources, "masters_retired": retired}


def _actor(session: Any) -> tuple[str, Any]:
    """Who the write runs for (the access context of a guarded session, if any), for the
    event log and the audit of what a bridge touched."""
    inner = session
    while inner is not None:
        ctx = getattr(inner, "ctx", None)
        if ctx is not None and getattr(ctx, "principal", None) is not None:
            return str(ctx.principal.name), ctx
        inner = getattr(inner, "inner", None)
    return "person-index", None


def _completeness(f: Mapping[str, Any]) -> int:
    return sum(
        f.get(k) is not None
        for k in ("given_key", "family_key", "middle_key", "birth_month", "birth_day", "sex",
                  "cccd", "bhxh", "phone", "commune")
    )  # fmt: skip
