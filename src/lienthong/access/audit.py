"""The tamper-evident audit trail: one hash-chained row per interaction with the API.

Vietnam's rules on personal (health) data require that every access be recorded
and that the operator can later monitor, investigate and *prove* what happened.
A plain log table proves little: whoever can write to the database can edit it.
So each row carries ``hash = sha256(seq, recorded, prev_hash, content)`` where
``prev_hash`` is the previous row's hash: changing, removing or inserting a row
breaks the chain from that point on, and :meth:`AuditLog.verify` finds where.

Rows are exported as FHIR R4 AuditEvent resources
(https://hl7.org/fhir/R4/auditevent.html) by :meth:`AuditRecord.to_fhir`.

Hash construction (version 1)::

    content = JSON of the AuditEntry fields, keys sorted, separators (",", ":"),
              ASCII only (non-ASCII as \\uXXXX escapes), so one line of ASCII
    hash    = sha256(b"lienthong-audit-v1\\n" + f"{seq}\\n{recorded}\\n{prev_hash}\\n"
                     + content).hexdigest()

``recorded`` is the UTC instant ``YYYY-MM-DDThh:mm:ss.ffffffZ`` and the first
row's ``prev_hash`` is 64 zeros. The stored ``content`` text is hashed as it is
(never re-serialised), so verification does not depend on the JSON library.

The head anchor: a one-row table ``audit_head`` holds the newest (seq, hash),
updated in the same transaction as each append. It lets :meth:`AuditLog.verify`
notice rows removed from or forged onto the *end* of the chain, which the chain
alone cannot show. When the log is given a secret ``anchor_key``, the head also
holds a running HMAC over every (seq, hash) from the genesis (or from the entry
where :meth:`AuditLog.enable_anchor_key` started it); the key lives outside the
database, so even someone who rewrites the whole table and the head
consistently cannot produce a matching HMAC. What :meth:`AuditLog.verify` can
and cannot detect is listed in its docstring.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from lienthong.fhir.search_index import date_range
from lienthong.storage.side_tables import SideDB

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
HASH_DOMAIN = b"lienthong-audit-v1\n"
OUTCOMES = ("success", "denied", "error")
VERIFY_PAGE = 1000

EXT_HASH_CHAIN = "urn:lienthong:StructureDefinition:audit-hash-chain"
EXT_BREAK_GLASS = "urn:lienthong:StructureDefinition:audit-break-glass-reason"
EXT_ON_BEHALF_OF = "http://hl7.org/fhir/StructureDefinition/auditevent-OnBehalfOf"
SYS_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
SYS_INTERACTION = "http://hl7.org/fhir/restful-interaction"
SYS_ACTION = "urn:lienthong:audit-action"
SYS_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SYS_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SYS_RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
SYS_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SYS_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"

RESTFUL_INTERACTIONS = frozenset(
    {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history",
        "history-instance",
        "history-type",
        "history-system",
        "create",
        "search",
        "search-type",
        "search-system",
        "capabilities",
        "transaction",
        "batch",
        "operation",
    }
)
_OUTCOME_CODE = {"success": "0", "denied": "4", "error": "8"}


class AuditChainError(RuntimeError):
    """The log cannot be appended to safely (its head anchor was removed)."""


@dataclass(frozen=True)
class AuditEntry:
    """What the caller records about one interaction, allowed or denied."""

    user: str
    role: str
    on_behalf_of: str | None
    action: str
    resource_type: str | None
    resource_id: str | None
    query: str | None
    patients: tuple[str, ...]
    outcome: str
    status: int
    purpose: str | None
    break_glass: str | None
    source_ip: str | None
    detail: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.patients, tuple):
            object.__setattr__(self, "patients", tuple(self.patients))
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")

    def canonical(self) -> str:
        """The exact text that is stored and hashed (see the module docstring)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, content: str) -> AuditEntry:
        data = json.loads(content)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["patients"] = tuple(values.get("patients") or ())
        return cls(**values)


def patient_id(ref: str) -> str:
    """``Patient/123`` and ``123`` both name patient ``123`` in the look-up table."""
    return ref[len("Patient/") :] if ref.startswith("Patient/") else ref


def entry_hash(seq: int, recorded: str, prev_hash: str, content: str) -> str:
    """sha256 over the canonical serialisation of one row (see the module docstring)."""
    h = hashlib.sha256(HASH_DOMAIN)
    h.update(f"{seq}\n{recorded}\n{prev_hash}\n".encode("ascii"))
    h.update(content.encode("utf-8"))
    return h.hexdigest()


def format_instant(moment: datetime) -> str:
    """A UTC instant with microseconds; fixed width, so text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("recorded must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_instant(text: str) -> datetime:
    """Parse a stored ``recorded`` value (or any ISO 8601 instant) as an aware datetime."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def bound(text: str, *, upper: bool) -> str:
    """A ``since``/``until`` value in stored form, both bounds inclusive.

    Any FHIR date, dateTime or instant precision covers its whole period
    (https://hl7.org/fhir/R4/search.html#date): ``since=2024-05`` starts on May 1
    at 00:00 UTC, ``until=2024-05`` ends at the last microsecond of May 31. A
    date-time without an offset is taken as UTC.
    """
    low, high = date_range(text)
    return (high if upper else low) + "Z"


def _mac(key: bytes, previous: str, seq: int, hash_: str) -> str:
    return hmac.new(key, f"{previous}|{seq}|{hash_}".encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditRecord:
    """One stored row of the chain."""

    seq: int
    recorded: str
    entry: AuditEntry
    prev_hash: str
    hash: str

    def to_fhir(self, base_url: str = "") -> dict[str, Any]:
        """This row as a FHIR R4 AuditEvent (https://hl7.org/fhir/R4/auditevent.html).

        With ``base_url`` the references are absolute, so an exported event
        still points at this server; without it they are relative.
        """
        e = self.entry
        prefix = f"{base_url.rstrip('/')}/" if base_url else ""
        event: dict[str, Any] = {
            "resourceType": "AuditEvent",
            "id": str(self.seq),
            "type": {"system": SYS_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
            "subtype": [_subtype(e.action)],
            "action": _crude(e.action),
            "recorded": self.recorded,
            "outcome": _OUTCOME_CODE[e.outcome],
            "outcomeDesc": f"{e.outcome} (HTTP {e.status})" + (f": {e.detail}" if e.detail else ""),
        }
        purpose = [{"coding": [{"system": SYS_ACT_REASON, "code": e.purpose}]}] if e.purpose else []
        if purpose:
            event["purposeOfEvent"] = purpose
        agent: dict[str, Any] = {
            "who": {"identifier": {"value": e.user}, "display": e.user},
            "role": [{"text": e.role}],
            "requestor": True,
        }
        if e.source_ip:
            agent["network"] = {"address": e.source_ip, "type": "2"}
        if purpose:
            agent["purposeOfUse"] = purpose
        if e.on_behalf_of:
            agent["extension"] = [
                {"url": EXT_ON_BEHALF_OF, "valueReference": {"reference": prefix + e.on_behalf_of}}
            ]
        event["agent"] = [agent]
        event["source"] = {
            "observer": {"display": "lienthong"},
            "type": [{"system": SYS_SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        }
        if base_url:
            event["source"]["site"] = base_url
        entities: list[dict[str, Any]] = []
        patients = list(dict.fromkeys(patient_id(p) for p in e.patients))
        touched_patient = e.resource_type == "Patient" and e.resource_id in patients
        if e.resource_type and e.resource_id and not touched_patient:
            entities.append(
                {
                    "what": {"reference": f"{prefix}{e.resource_type}/{e.resource_id}"},
                    "type": {"system": SYS_RESOURCE_TYPES, "code": e.resource_type},
                    "role": {"system": SYS_OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
                }
            )
        if e.query is not None:
            query: dict[str, Any] = {
                "role": {"system": SYS_OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": base64.b64encode(e.query.encode("utf-8")).decode("ascii"),
            }
            if e.resource_type:
                query["type"] = {"system": SYS_RESOURCE_TYPES, "code": e.resource_type}
            else:
                query["type"] = {"system": SYS_ENTITY_TYPE, "code": "2", "display": "System Object"}
            entities.append(query)
        for pid in patients:
            entities.append(
                {
                    "what": {"reference": f"{prefix}Patient/{pid}"},
                    "type": {"system": SYS_RESOURCE_TYPES, "code": "Patient"},
                    "role": {"system": SYS_OBJECT_ROLE, "code": "1", "display": "Patient"},
                }
            )
        if entities:
            event["entity"] = entities
        extensions: list[dict[str, Any]] = [
            {
                "url": EXT_HASH_CHAIN,
                "extension": [
                    {"url": "algorithm", "valueString": "sha256 (lienthong-audit-v1)"},
                    {"url": "hash", "valueString": self.hash},
                    {"url": "previousHash", "valueString": self.prev_hash},
                ],
            }
        ]
        if e.break_glass is not None:
            extensions.append({"url": EXT_BREAK_GLASS, "valueString": e.break_glass or "-"})
        event["extension"] = extensions
        return event


def _subtype(action: str) -> dict[str, str]:
    if action.startswith("operation:"):
        return {"system": SYS_INTERACTION, "code": "operation", "display": action[10:]}
    if action in RESTFUL_INTERACTIONS:
        return {"system": SYS_INTERACTION, "code": action}
    return {"system": SYS_ACTION, "code": action}


def _crude(action: str) -> str:
    """The AuditEvent action code: C(reate), R(ead), U(pdate), D(elete), E(xecute)."""
    if action in ("create", "import"):
        return "C"
    if action in ("read", "vread", "capabilities") or action.startswith(("search", "history")):
        return "R"
    if action in ("update", "patch"):
        return "U"
    if action == "delete":
        return "D"
    return "E"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`; ``first_bad_seq`` is where the chain breaks."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None


_COLUMNS = "seq, recorded, content, prev_hash, hash"


def _record(row: Sequence[Any]) -> AuditRecord:
    seq, recorded, content, prev_hash, hash_ = row[:5]
    return AuditRecord(int(seq), recorded, AuditEntry.from_json(content), prev_hash, hash_)


def ensure_schema(db: SideDB, key: bytes | None = None, *, create_head: bool = True) -> None:
    """Create the audit tables (idempotent, safe when several processes start at once).

    A new log gets its genesis head, signed when ``key`` is given; a log whose
    head row was deleted does not get a new one (appends then fail, verify
    reports it).
    """
    integer = "INTEGER" if db.kind == "sqlite" else "BIGINT"
    statements = [
        f"""CREATE TABLE IF NOT EXISTS audit_log (
            seq {integer} PRIMARY KEY,
            recorded TEXT NOT NULL,
            user_name TEXT NOT NULL,
            outcome TEXT NOT NULL,
            content TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS audit_patient (
            seq {integer} NOT NULL,
            patient_id TEXT NOT NULL,
            PRIMARY KEY (seq, patient_id))""",
        f"""CREATE TABLE IF NOT EXISTS audit_head (
            id INTEGER PRIMARY KEY,
            seq {integer} NOT NULL,
            hash TEXT NOT NULL,
            mac TEXT NOT NULL,
            mac_from {integer})""",
        "CREATE INDEX IF NOT EXISTS audit_patient_by_patient ON audit_patient (patient_id, seq)",
        "CREATE INDEX IF NOT EXISTS audit_log_by_user ON audit_log (user_name, seq)",
        "CREATE INDEX IF NOT EXISTS audit_log_by_outcome ON audit_log (outcome, seq)",
        "CREATE INDEX IF NOT EXISTS audit_log_by_recorded ON audit_log (recorded)",
    ]
    with db.transaction():
        if db.kind == "postgresql":
            # concurrent CREATE TABLE IF NOT EXISTS can fail on PostgreSQL
            db.query("SELECT pg_advisory_xact_lock(7305431001)")
        for sql in statements:
            db.execute(sql)
        if create_head:
            mac, mac_from = (_mac(key, "", 0, GENESIS_HASH), 1) if key else ("", None)
            db.execute(
                "INSERT INTO audit_head (id, seq, hash, mac, mac_from) SELECT 1, 0, ?, ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM audit_head) "
                "AND NOT EXISTS (SELECT 1 FROM audit_log)",
                (GENESIS_HASH, mac, mac_from),
            )


def iter_records(db: SideDB, after_seq: int, upto_seq: int | None = None) -> Iterator[AuditRecord]:
    """Rows with ``after_seq < seq <= upto_seq`` in seq order, read a page at a time."""
    last = after_seq
    while True:
        sql = f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ?"
        args: list[Any] = [last]
        if upto_seq is not None:
            sql += " AND seq <= ?"
            args.append(upto_seq)
        rows = db.query(sql + " ORDER BY seq LIMIT ?", [*args, VERIFY_PAGE])
        for row in rows:
            yield _record(row)
        if len(rows) < VERIFY_PAGE:
            return
        last = int(rows[-1][0])


class AuditLog:
    """Append-only, hash-chained audit log in the ``audit`` side database.

    ``anchor_key`` (optional, kept outside the database, e.g. from a secret
    setting) signs the head anchor; see :meth:`verify` for what it adds.
    """

    def __init__(self, database_url: str, *, anchor_key: bytes | str | None = None) -> None:
        self._db = SideDB(database_url, "audit")
        self._key = anchor_key.encode("utf-8") if isinstance(anchor_key, str) else anchor_key
        self._lock = threading.Lock()
        # the head as this instance last wrote it: (seq, hash, mac, mac_from)
        self._head: tuple[int, str, str, int | None] | None = None
        try:
            ensure_schema(self._db, self._key)
        except BaseException:
            self._db.close()
            raise

    def _next_head(
        self, head: tuple[int, str, str, int | None], seq: int, hash_: str
    ) -> tuple[int, str, str, int | None]:
        _, _, mac, mac_from = head
        if self._key is None or not mac:
            # Never start a keyed chain implicitly: an intruder could reset the
            # head to unsigned after tampering and have the next append bless it.
            return (seq, hash_, "", None)
        return (seq, hash_, _mac(self._key, mac, seq, hash_), mac_from)

    def enable_anchor_key(self) -> VerifyResult:
        """Start the keyed anchor on an existing log (one operator action, after a check).

        A log created with ``anchor_key`` is keyed from its genesis. One created
        before the key existed is keyed from its current head on, and only if
        the chain verifies; returns that verification. Idempotent.
        """
        if self._key is None:
            raise ValueError("enable_anchor_key needs the AuditLog to be given an anchor_key")
        with self._lock:
            self._head = None
            result = self.verify(keyed=False)
            if not result.ok:
                return result
            with self._db.transaction() as db:
                s, h, m, _ = db.query(
                    "UPDATE audit_head SET seq = seq WHERE id = 1 "
                    "RETURNING seq, hash, mac, mac_from"
                )[0]
                if not m:
                    db.execute(
                        "UPDATE audit_head SET mac = ?, mac_from = ? WHERE id = 1",
                        (_mac(self._key, "", int(s), str(h)), int(s) + 1),
                    )
        return self.verify()

    def append(self, entry: AuditEntry, *, recorded: datetime | None = None) -> AuditRecord:
        """Add one entry at the end of the chain, atomically.

        One short transaction: move the head (the statement that also takes the
        row lock, so appends from several processes are serialised), insert the
        row and its patients. The head this instance wrote last is cached; when
        another connection has appended since, the guarded head update matches
        nothing and the head is re-read under the lock. ``recorded`` (aware
        datetime) is for tests and for importing old logs; it defaults to now.
        """
        stamp = format_instant(recorded or datetime.now(UTC))
        content = entry.canonical()
        patients = sorted({patient_id(p) for p in entry.patients})
        with self._lock:
            try:
                with self._db.transaction() as db:
                    new: tuple[int, str, str, int | None] | None = None
                    head = self._head
                    if head is not None:
                        seq = head[0] + 1
                        hash_ = entry_hash(seq, stamp, head[1], content)
                        new = self._next_head(head, seq, hash_)
                        moved = db.execute(
                            "UPDATE audit_head SET seq = ?, hash = ?, mac = ?, mac_from = ? "
                            "WHERE id = 1 AND seq = ? AND hash = ?",
                            (*new, head[0], head[1]),
                        )
                        if moved != 1:
                            new = None
                    if new is None:
                        rows = db.query(
                            "UPDATE audit_head SET seq = seq WHERE id = 1 "
                            "RETURNING seq, hash, mac, mac_from"
                        )
                        if not rows:
                            raise AuditChainError(
                                "the audit head anchor is missing: the log was tampered with; "
                                "run `lienthong audit verify`"
                            )
                        s, h, m, f = rows[0]
                        if self._key is not None and self._head and self._head[2] and not m:
                            log.warning(
                                "the audit head was reset to an unsigned state (tampering?); "
                                "run `lienthong audit verify`"
                            )
                        head = (int(s), str(h), str(m), None if f is None else int(f))
                        seq = head[0] + 1
                        hash_ = entry_hash(seq, stamp, head[1], content)
                        new = self._next_head(head, seq, hash_)
                        db.execute(
                            "UPDATE audit_head SET seq = ?, hash = ?, mac = ?, mac_from = ? "
                            "WHERE id = 1",
                            new,
                        )
                    assert head is not None
                    db.execute(
                        "INSERT INTO audit_log "
                        "(seq, recorded, user_name, outcome, content, prev_hash, hash) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (seq, stamp, entry.user, entry.outcome, content, head[1], hash_),
                    )
                    if patients:
                        db.execute(
                            "INSERT INTO audit_patient (seq, patient_id) VALUES "
                            + ", ".join(["(?, ?)"] * len(patients)),
                            [v for p in patients for v in (seq, p)],
                        )
            except BaseException:
                self._head = None
                raise
            self._head = new
        return AuditRecord(seq, stamp, entry, head[1], hash_)

    def head(self) -> tuple[int, str]:
        """The newest (seq, hash): write it down or publish it as an external anchor."""
        rows = self._db.query("SELECT seq, hash FROM audit_head WHERE id = 1")
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS_HASH)

    def verify(self, anchor: tuple[int, str] | None = None, *, keyed: bool = True) -> VerifyResult:
        """Walk the whole chain in seq order, a page at a time, and report the first break.

        Detected (``first_bad_seq`` in brackets):

        - a row whose content, ``recorded``, ``hash`` or ``prev_hash`` was changed
          [that row]; if the attacker also recomputed that row's hash, the next
          row's ``prev_hash`` no longer matches [the next row];
        - a removed row in the middle [the missing seq: the seqs are contiguous],
          or removed and the later rows renumbered [the first renumbered row];
        - a forged row inserted anywhere, even with a self-consistent hash [the
          forged row, or the row after it]; one added after the end without
          moving the head [head seq + 1]; one numbered below 1 [its seq];
        - removal of the last rows, or of all rows, while the head was left
          alone [the first missing seq];
        - the patient look-up rows or the user/outcome columns disagreeing with
          the hashed content (which would hide rows from searches) [that row];
        - with ``anchor_key``: any rewrite of the table together with the head,
          e.g. truncating the tail and moving the head back, or wiping the log
          [the head seq], because the running HMAC in the head cannot be
          recomputed without the key (``keyed=False`` skips this check);
        - with ``anchor`` (a (seq, hash) noted earlier, see :meth:`head`): any
          rewrite of history up to that entry [that seq].

        Not detectable: without a key, someone with write access who rewrites
        rows *and* recomputes every later hash *and* the head produces a valid
        chain (it is tamper-evident against partial edits, not a signature).
        Even with a key, restoring a complete older copy of the database
        (rollback) verifies, since it was genuine once; only anchors kept
        elsewhere and compared by seq (``anchor``) catch that. An append that
        never happened (the request was not logged at all) is out of reach.
        """
        rows = self._db.query(
            "SELECT h.seq, h.hash, h.mac, h.mac_from, (SELECT MAX(seq) FROM audit_log), "
            "(SELECT MIN(seq) FROM audit_log) FROM audit_head h WHERE h.id = 1"
        )
        if not rows:
            first = self._db.query("SELECT MIN(seq) FROM audit_log")[0][0]
            if first is None:
                return VerifyResult(True, 0)
            return VerifyResult(False, 0, int(first), "the head anchor row is missing")
        head_seq, head_hash, head_mac, mac_from, max_seq, min_seq = rows[0]
        head_seq = int(head_seq)
        if min_seq is not None and int(min_seq) < 1:
            return VerifyResult(
                False, 0, int(min_seq), f"entry {min_seq} is numbered outside the chain"
            )
        expected_seq, prev, mac, checked = 1, GENESIS_HASH, "", 0
        key = self._key if keyed else None
        # the keyed chain starts by signing entry mac_from - 1 (0: the genesis)
        mac_start = None if key is None or mac_from is None else int(mac_from) - 1
        if key is not None and mac_start == 0:
            mac = _mac(key, "", 0, GENESIS_HASH)

        def broken(seq: int, reason: str) -> VerifyResult:
            return VerifyResult(False, checked, seq, reason)

        for page in self._pages(head_seq):
            first_seq, last_seq = int(page[0][0]), int(page[-1][0])
            index: dict[int, list[str]] = {}
            for s, pid in self._db.query(
                "SELECT seq, patient_id FROM audit_patient WHERE seq >= ? AND seq <= ? "
                "ORDER BY seq, patient_id",
                (first_seq, last_seq),
            ):
                index.setdefault(int(s), []).append(pid)
            for seq_, recorded, user_name, outcome, content, prev_hash, hash_ in page:
                seq = int(seq_)
                if seq != expected_seq:
                    if seq == expected_seq + 1:
                        return broken(expected_seq, f"entry {expected_seq} is missing")
                    return broken(expected_seq, f"entries {expected_seq} to {seq - 1} are missing")
                if prev_hash != prev:
                    return broken(
                        seq,
                        f"prev_hash does not match the hash of entry {seq - 1} "
                        "(entry inserted, replaced, or the previous entry rewritten)",
                    )
                if entry_hash(seq, recorded, prev_hash, content) != hash_:
                    return broken(seq, "hash does not match the content (entry altered)")
                try:
                    entry = AuditEntry.from_json(content)
                except (ValueError, TypeError) as exc:
                    return broken(seq, f"content is not an audit entry: {exc}")
                if user_name != entry.user or outcome != entry.outcome:
                    return broken(seq, "user or outcome column disagrees with the content")
                if index.get(seq, []) != sorted({patient_id(p) for p in entry.patients}):
                    return broken(seq, "patient look-up rows disagree with the content")
                if anchor is not None and seq == anchor[0] and hash_ != anchor[1]:
                    return broken(seq, "hash differs from the external anchor")
                if key is not None and mac_start is not None and seq >= mac_start:
                    mac = _mac(key, mac if seq > mac_start else "", seq, hash_)
                prev = hash_
                expected_seq += 1
                checked += 1
        if expected_seq - 1 != head_seq:
            return broken(
                expected_seq,
                f"the log ends at entry {expected_seq - 1} but its head is entry {head_seq} "
                "(last entries removed)",
            )
        if prev != head_hash:
            return broken(head_seq, "the head hash does not match the last entry")
        if max_seq is not None and int(max_seq) > head_seq:
            return broken(
                head_seq + 1,
                f"entry {head_seq + 1} lies beyond the head anchor (inserted outside the log)",
            )
        if anchor is not None and anchor[0] > head_seq:
            return broken(head_seq + 1, f"the external anchor names entry {anchor[0]}, now gone")
        if key is not None:
            if mac_start is None or not head_mac or mac_start > head_seq:
                return broken(
                    max(head_seq, 1),
                    "the head is not signed with the anchor key (wiped or reset, or the "
                    "log predates the key: see AuditLog.enable_anchor_key)",
                )
            if not hmac.compare_digest(mac, str(head_mac)):
                return broken(
                    head_seq, "the keyed head anchor does not match (log rewritten or truncated)"
                )
        return VerifyResult(True, checked)

    def _pages(self, upto_seq: int) -> Iterator[list[tuple[Any, ...]]]:
        last = 0
        while True:
            rows = self._db.query(
                "SELECT seq, recorded, user_name, outcome, content, prev_hash, hash "
                "FROM audit_log WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (last, upto_seq, VERIFY_PAGE),
            )
            if rows:
                yield rows
            if len(rows) < VERIFY_PAGE:
                return
            last = int(rows[-1][0])

    def search(
        self,
        patient: str | list[str] | None = None,
        user: str | None = None,
        since: str | None = None,
        until: str | None = None,
        outcome: str | None = None,
        count: int = 50,
        offset: int = 0,
    ) -> tuple[list[AuditRecord], int]:
        """Entries matching every given filter, newest first, with the total count.

        ``since``/``until`` are FHIR dates or date-times, inclusive, each covering
        its whole period (``until=2024-05-01`` includes that whole UTC day); a
        date-time without an offset is UTC. Raises ValueError for other text.
        """
        where: list[str] = []
        args: list[Any] = []
        if patient:
            # several ids: entries about any of one person's records
            ids = [patient_id(p) for p in ([patient] if isinstance(patient, str) else patient)]
            marks = ", ".join("?" for _ in ids)
            where.append(f"seq IN (SELECT seq FROM audit_patient WHERE patient_id IN ({marks}))")
            args.extend(ids)
        if user:
            where.append("user_name = ?")
            args.append(user)
        if since:
            where.append("recorded >= ?")
            args.append(bound(since, upper=False))
        if until:
            where.append("recorded <= ?")
            args.append(bound(until, upper=True))
        if outcome:
            where.append("outcome = ?")
            args.append(outcome)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = int(self._db.query(f"SELECT COUNT(*) FROM audit_log{clause}", args)[0][0])
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM audit_log{clause} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*args, max(0, count), max(0, offset)],
        )
        return [_record(r) for r in rows], total

    def read(self, seq: int) -> AuditRecord | None:
        rows = self._db.query(f"SELECT {_COLUMNS} FROM audit_log WHERE seq = ?", (seq,))
        return _record(rows[0]) if rows else None

    def close(self) -> None:
        self._db.close()
