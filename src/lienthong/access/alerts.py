"""Alert rules over the audit stream: what an operator must look at, as it happens.

Recording every access (see :mod:`lienthong.access.audit`) satisfies the duty to
keep evidence; these rules serve the duty to *monitor*: they turn the patterns
that usually mean misuse into rows of the ``alert`` table, each pointing at the
audit entry (FHIR AuditEvent, https://hl7.org/fhir/R4/auditevent.html) that
tipped it.

Rules (thresholds from :class:`~lienthong.settings.Settings`):

``break_glass``
    every break-the-glass access (a reason given, or purpose ``ETREAT``), allowed
    or not: each one needs a review after the fact.
``many_patients``
    one user read more than ``alert_max_patients`` distinct patients within
    ``alert_window_seconds`` (successful reads: read, vread, search, history,
    operations, batch/transaction; not create/update/patch/delete/import).
``repeated_denials``
    more than ``alert_max_denials`` denied requests by one user within the window.
``quiet_hours``
    a successful access to patient data (any action naming a patient) during
    ``alert_quiet_hours`` local time in ``timezone``; the range may wrap midnight.

The three last rules raise at most once per user per window: after an alert,
the same rule stays quiet for that user for ``alert_window_seconds`` (the audit
log still has every access). The window is half-open: an event counts while
``now - t < window``.

Time comes only from the records' ``recorded`` instants, never from the wall
clock, so rules are deterministic and replayable. The engine processes records
in seq order; when it sees a gap (another process appended in between) it reads
the missing records from the log first, so several server processes each see
the whole stream, and the unique (rule, user, audit_seq) key keeps them from
storing the same alert twice. On start the sliding windows are rebuilt from the
last window of the log and the cooldowns from the alert table, so a restart
neither forgets counts nor repeats alerts.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from lienthong.access.audit import (
    AuditRecord,
    bound,
    ensure_schema,
    format_instant,
    iter_records,
    parse_instant,
    patient_id,
)
from lienthong.settings import Settings
from lienthong.storage.side_tables import SideDB

RULES = ("break_glass", "many_patients", "repeated_denials", "quiet_hours")
SWEEP_EVERY = 1000  # records between clean-ups of idle users' window state
WRITE_ACTIONS = frozenset({"create", "update", "patch", "delete", "import"})


@dataclass(frozen=True)
class Alert:
    """One raised alert; ``raised`` is the ``recorded`` instant of the audit entry."""

    id: int
    raised: str
    rule: str
    user: str
    detail: str
    audit_seq: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "raised": self.raised,
            "rule": self.rule,
            "user": self.user,
            "detail": self.detail,
            "audit_seq": self.audit_seq,
        }


def parse_quiet_hours(text: str) -> tuple[int, int] | None:
    """``"22-06"`` -> (22, 6): local hours [start, end). Empty, ``off`` or start == end: none."""
    text = text.strip()
    if not text or text.lower() in ("off", "none"):
        return None
    start_s, sep, end_s = text.partition("-")
    if not sep:
        raise ValueError(f"quiet hours must look like '22-06', not {text!r}")
    start, end = int(start_s), int(end_s)
    if not (0 <= start <= 24 and 0 <= end <= 24):
        raise ValueError(f"quiet hours out of range: {text!r}")
    start, end = start % 24, end % 24
    return None if start == end else (start, end)


def in_quiet_hours(hour: int, hours: tuple[int, int] | None) -> bool:
    if hours is None:
        return False
    start, end = hours
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end  # wraps midnight


def is_read(action: str) -> bool:
    """Actions that disclose data (everything but the pure writes)."""
    return action not in WRITE_ACTIONS


class _DistinctWindow:
    """Distinct keys seen within a sliding window; tolerant of out-of-order times."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.heap: list[tuple[float, str]] = []

    def add(self, t: float, key: str) -> None:
        if t > self.last.get(key, float("-inf")):
            self.last[key] = t
            heapq.heappush(self.heap, (t, key))

    def count(self, now: float, window: float) -> int:
        limit = now - window
        while self.heap and self.heap[0][0] <= limit:
            t, key = heapq.heappop(self.heap)
            if self.last.get(key) == t:
                del self.last[key]
        return len(self.last)


class _CountWindow:
    def __init__(self) -> None:
        self.heap: list[float] = []

    def add(self, t: float) -> None:
        heapq.heappush(self.heap, t)

    def count(self, now: float, window: float) -> int:
        limit = now - window
        while self.heap and self.heap[0] <= limit:
            heapq.heappop(self.heap)
        return len(self.heap)


def _ensure_alert_schema(db: SideDB) -> None:
    ident = (
        "INTEGER PRIMARY KEY AUTOINCREMENT"
        if db.kind == "sqlite"
        else "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    )
    integer = "INTEGER" if db.kind == "sqlite" else "BIGINT"
    with db.transaction():
        if db.kind == "postgresql":
            db.query("SELECT pg_advisory_xact_lock(7305431002)")
        db.execute(
            f"""CREATE TABLE IF NOT EXISTS alert (
                id {ident},
                raised TEXT NOT NULL,
                rule TEXT NOT NULL,
                user_name TEXT NOT NULL,
                detail TEXT NOT NULL,
                audit_seq {integer} NOT NULL)"""
        )
        db.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS alert_once ON alert (rule, user_name, audit_seq)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS alert_by_raised ON alert (raised)")
        db.execute("CREATE INDEX IF NOT EXISTS alert_by_user ON alert (user_name, id)")


def list_alerts(
    db: SideDB,
    since: str | None = None,
    rule: str | None = None,
    user: str | None = None,
    count: int = 100,
    offset: int = 0,
) -> tuple[list[Alert], int]:
    """Stored alerts matching the filters, newest first, with the total count."""
    where: list[str] = []
    args: list[Any] = []
    if since:
        where.append("raised >= ?")
        args.append(bound(since, upper=False))
    if rule:
        where.append("rule = ?")
        args.append(rule)
    if user:
        where.append("user_name = ?")
        args.append(user)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    total = int(db.query(f"SELECT COUNT(*) FROM alert{clause}", args)[0][0])
    rows = db.query(
        f"SELECT id, raised, rule, user_name, detail, audit_seq FROM alert{clause} "
        "ORDER BY id DESC LIMIT ? OFFSET ?",
        [*args, max(0, count), max(0, offset)],
    )
    return [Alert(int(r[0]), r[1], r[2], r[3], r[4], int(r[5])) for r in rows], total


class AlertEngine:
    """Evaluates the rules on each appended audit record; see the module docstring.

    Call :meth:`observe` with every record :meth:`AuditLog.append` returns. It is
    thread-safe; records may arrive slightly out of order (the gap is read from
    the log, and records already processed are skipped). ``rebuild=False`` skips
    refilling the windows at start: for tools that only list alerts.
    """

    def __init__(
        self, settings: Settings, database_url: str | None = None, *, rebuild: bool = True
    ) -> None:
        self.window = float(settings.alert_window_seconds)
        self.max_patients = settings.alert_max_patients
        self.max_denials = settings.alert_max_denials
        self.quiet = parse_quiet_hours(settings.alert_quiet_hours)
        self.quiet_text = settings.alert_quiet_hours
        self.zone = ZoneInfo(settings.timezone)
        self._db = SideDB(database_url or settings.database_url, "audit")
        self._lock = threading.Lock()
        self._patients: dict[str, _DistinctWindow] = {}
        self._denials: dict[str, _CountWindow] = {}
        self._cooldown_until: dict[tuple[str, str], float] = {}
        self._last_seq = 0
        try:
            ensure_schema(self._db, create_head=False)  # the head is the AuditLog's
            _ensure_alert_schema(self._db)
            if rebuild:
                self._rebuild()
            else:  # listing only: at least never replay the whole history as new
                top = self._db.query("SELECT MAX(seq) FROM audit_log")[0][0]
                self._last_seq = int(top or 0)
        except BaseException:
            self._db.close()
            raise

    def _rebuild(self) -> None:
        """Refill the windows from the last window of the log and the cooldowns from alerts."""
        top = self._db.query("SELECT MAX(seq), MAX(recorded) FROM audit_log")[0]
        if top[0] is None:
            return
        last_seq, newest = int(top[0]), parse_instant(top[1])
        start = format_instant(newest - timedelta(seconds=self.window))
        first = self._db.query(
            "SELECT MIN(seq) FROM audit_log WHERE recorded > ? AND seq <= ?", (start, last_seq)
        )[0][0]
        if first is not None:
            for record in iter_records(self._db, int(first) - 1, last_seq):
                if record.recorded > start:
                    self._evaluate(record, store=False)
        for rule, user, raised in self._db.query(
            "SELECT rule, user_name, MAX(raised) FROM alert WHERE raised > ? "
            "GROUP BY rule, user_name",
            (start,),
        ):
            self._cooldown_until[(rule, user)] = parse_instant(raised).timestamp() + self.window
        self._last_seq = last_seq

    def observe(self, record: AuditRecord) -> list[Alert]:
        """Evaluate the rules on ``record`` (and on any earlier record not yet seen)."""
        with self._lock:
            if record.seq <= self._last_seq:
                return []
            alerts: list[Alert] = []
            if record.seq > self._last_seq + 1:
                for missed in iter_records(self._db, self._last_seq, record.seq - 1):
                    alerts += self._evaluate(missed)
            alerts += self._evaluate(record)
            return alerts

    def _cooling(self, rule: str, user: str, now: float) -> bool:
        return now < self._cooldown_until.get((rule, user), float("-inf"))

    def _sweep(self, now: float) -> None:
        """Drop the state of users idle for a whole window, so memory stays bounded."""
        for windows in (self._patients, self._denials):
            for user in [u for u, w in windows.items() if w.count(now, self.window) == 0]:
                del windows[user]
        for key in [k for k, until in self._cooldown_until.items() if until <= now]:
            del self._cooldown_until[key]

    def _evaluate(self, record: AuditRecord, *, store: bool = True) -> list[Alert]:
        self._last_seq = max(self._last_seq, record.seq)
        e = record.entry
        moment = parse_instant(record.recorded)
        now = moment.timestamp()
        if record.seq % SWEEP_EVERY == 0:
            self._sweep(now)
        raised: list[tuple[str, str]] = []
        target = f"{e.action} {e.resource_type or ''}{'/' + e.resource_id if e.resource_id else ''}"
        target = target.strip()

        if e.break_glass is not None or e.purpose == "ETREAT":
            raised.append(
                (
                    "break_glass",
                    f"break-the-glass ({e.outcome}) {target}: {e.break_glass or 'no reason given'}",
                )
            )
        if e.outcome == "success" and e.patients and is_read(e.action):
            window = self._patients.setdefault(e.user, _DistinctWindow())
            for p in e.patients:
                window.add(now, patient_id(p))
            n = window.count(now, self.window)
            if n > self.max_patients and not self._cooling("many_patients", e.user, now):
                raised.append(
                    (
                        "many_patients",
                        f"{n} distinct patients read within {self.window:g} s "
                        f"(limit {self.max_patients})",
                    )
                )
        if e.outcome == "denied":
            denials = self._denials.setdefault(e.user, _CountWindow())
            denials.add(now)
            n = denials.count(now, self.window)
            if n > self.max_denials and not self._cooling("repeated_denials", e.user, now):
                raised.append(
                    (
                        "repeated_denials",
                        f"{n} denied requests within {self.window:g} s "
                        f"(limit {self.max_denials}); last: {target}",
                    )
                )
        if e.outcome == "success" and e.patients and self.quiet is not None:
            local = moment.astimezone(self.zone)
            if in_quiet_hours(local.hour, self.quiet) and not self._cooling(
                "quiet_hours", e.user, now
            ):
                raised.append(
                    (
                        "quiet_hours",
                        f"{target} at {local:%H:%M} local time "
                        f"(quiet hours {self.quiet_text}, {self.zone.key})",
                    )
                )

        if not store:  # replaying at start: the cooldowns come from the alert table
            return []
        for rule, _ in raised:
            if rule != "break_glass":
                self._cooldown_until[(rule, e.user)] = now + self.window
        return self._store(record, raised)

    def _store(self, record: AuditRecord, raised: Iterable[tuple[str, str]]) -> list[Alert]:
        alerts: list[Alert] = []
        for rule, detail in raised:
            rows = self._db.query(
                "INSERT INTO alert (raised, rule, user_name, detail, audit_seq) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (record.recorded, rule, record.entry.user, detail, record.seq),
            )
            if rows:  # empty: another process stored the same alert already
                alerts.append(
                    Alert(
                        int(rows[0][0]),
                        record.recorded,
                        rule,
                        record.entry.user,
                        detail,
                        record.seq,
                    )
                )
        return alerts

    def list_alerts(
        self,
        since: str | None = None,
        rule: str | None = None,
        user: str | None = None,
        count: int = 100,
        offset: int = 0,
    ) -> tuple[list[Alert], int]:
        """Stored alerts matching the filters, newest first, with the total count."""
        return list_alerts(self._db, since, rule, user, count, offset)

    def close(self) -> None:
        self._db.close()
