"""Alert rules over the audit stream: thresholds, sliding windows, quiet hours, restarts.

Records are appended with chosen ``recorded`` instants; the rules take their
time from those, so nothing here depends on the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from lienthong.access import alerts as alerts_module
from lienthong.access.alerts import Alert, AlertEngine, in_quiet_hours, parse_quiet_hours
from lienthong.access.audit import AuditEntry, AuditLog
from lienthong.access.cli_audit import alerts_command
from lienthong.settings import Settings
from tests.factories import audit_entry

# 10:00 in Hanoi (UTC+7): outside quiet hours
T0 = datetime(2024, 5, 1, 3, 0, tzinfo=UTC)


entry = partial(audit_entry, on_behalf_of=None, source_ip=None)


def make_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "alert_window_seconds": 60,
        "alert_max_patients": 3,
        "alert_max_denials": 2,
        "alert_quiet_hours": "22-06",
        "timezone": "Asia/Ho_Chi_Minh",
    }
    values.update(overrides)
    return Settings.from_env({}).model_copy(update=values)


class Feed:
    """An audit log and an alert engine wired the way the server wires them."""

    def __init__(self, url: str, **overrides: Any) -> None:
        self.url = url
        self.settings = make_settings(url, **overrides)
        self.log = AuditLog(url)
        self.engine = AlertEngine(self.settings, url)

    def at(self, seconds: float, e: AuditEntry, start: datetime = T0) -> list[Alert]:
        record = self.log.append(e, recorded=start + timedelta(seconds=seconds))
        return self.engine.observe(record)

    def rules(self, seconds: float, e: AuditEntry, start: datetime = T0) -> list[str]:
        return [a.rule for a in self.at(seconds, e, start)]

    def restart(self) -> None:
        self.engine.close()
        self.engine = AlertEngine(self.settings, self.url)

    def close(self) -> None:
        self.engine.close()
        self.log.close()


@pytest.fixture
def feed(store_url: str) -> Iterator[Feed]:
    f = Feed(store_url)
    try:
        yield f
    finally:
        f.close()


def test_break_glass_raises_on_every_such_access(feed: Feed) -> None:
    assert feed.rules(0, entry()) == []
    glass = entry(purpose="ETREAT", break_glass="cấp cứu")
    alerts = feed.at(1, glass)
    assert [a.rule for a in alerts] == ["break_glass"]
    assert "cấp cứu" in alerts[0].detail and alerts[0].user == "u1"
    assert alerts[0].audit_seq == 2 and alerts[0].raised == "2024-05-01T03:00:01.000000Z"
    assert feed.rules(2, glass) == ["break_glass"]  # no once-per-window here
    assert feed.rules(3, entry(outcome="denied", break_glass="thử")) == ["break_glass"]
    assert feed.rules(4, entry(purpose="ETREAT")) == ["break_glass"]
    assert feed.engine.list_alerts(rule="break_glass")[1] == 4


def test_many_patients_fires_above_the_threshold_once_per_window(feed: Feed) -> None:
    # at the threshold (3 distinct) nothing happens
    assert feed.rules(0, entry(patients=("p1",))) == []
    assert feed.rules(1, entry(patients=("p2",))) == []
    assert feed.rules(2, entry(patients=("p3",))) == []
    assert feed.rules(3, entry(patients=("p3",))) == []  # the same patient again
    # denied reads, writes and other users do not count
    assert feed.rules(3, entry(patients=("p8",), outcome="denied")) == []
    assert feed.rules(3, entry(patients=("p9",), action="update")) == []
    assert feed.rules(3, entry(user="u2", patients=("p7",))) == []
    alerts = feed.at(4, entry(patients=("p4",)))  # above: 4 distinct
    assert [a.rule for a in alerts] == ["many_patients"]
    assert alerts[0].audit_seq == 8 and "4 distinct patients" in alerts[0].detail
    # not again within the window after the alert
    assert feed.rules(5, entry(patients=("p5",))) == []
    assert feed.rules(63, entry(patients=("p6",))) == []
    # once the window since the alert has passed, a new excess raises again:
    # window (4, 64] holds p5, p6, p10, p11
    assert feed.rules(64, entry(patients=("p10",))) == []
    assert feed.rules(64, entry(patients=("p11",))) == ["many_patients"]
    assert feed.engine.list_alerts(rule="many_patients", user="u1")[1] == 2


def test_many_patients_window_slides(feed: Feed) -> None:
    for t, p in ((0, "p1"), (10, "p2"), (20, "p3")):
        assert feed.rules(t, entry(patients=(p,))) == []
    # exactly one window later p1 has left it: p2, p3, p4
    assert feed.rules(60, entry(patients=("p4",))) == []
    assert feed.rules(61, entry(patients=("p5",))) == ["many_patients"]  # p2..p5
    # just inside the window it still counts
    for t, p in ((0, "q1"), (10, "q2"), (20, "q3")):
        assert feed.rules(t, entry(user="u2", patients=(p,))) == []
    assert feed.rules(59.5, entry(user="u2", patients=("q4",))) == ["many_patients"]
    # reading a patient again keeps it in the window
    for t, p in ((0, "r1"), (10, "r2"), (20, "r3"), (50, "r1")):
        assert feed.rules(t, entry(user="u3", patients=(p,))) == []
    assert feed.rules(65, entry(user="u3", patients=("r4",))) == ["many_patients"]


def test_one_request_touching_many_patients(feed: Feed) -> None:
    assert feed.rules(0, entry(action="search-type", patients=("a", "b", "c"))) == []
    assert feed.rules(100, entry(action="search-type", patients=("a", "b", "c", "d"))) == [
        "many_patients"
    ]
    # "Patient/x" and "x" are the same patient
    assert feed.rules(0, entry(user="u2", patients=("a", "Patient/a", "b", "c"))) == []


def test_repeated_denials(feed: Feed) -> None:
    denied = entry(outcome="denied")
    assert feed.rules(0, denied) == []
    assert feed.rules(1, denied) == []  # 2: at the threshold
    assert feed.rules(2, entry()) == []  # successes do not count
    assert feed.rules(2, entry(outcome="error")) == []  # nor errors
    alerts = feed.at(3, denied)  # 3: above
    assert [a.rule for a in alerts] == ["repeated_denials"]
    assert "3 denied requests" in alerts[0].detail
    assert feed.rules(4, denied) == []  # once per window
    assert feed.rules(62, denied) == []
    assert feed.rules(63, denied) == ["repeated_denials"]  # window (3, 63]: 4, 62, 63
    # sliding: exactly one window apart no longer counts
    for t in (0, 30, 60):
        assert feed.rules(t, entry(user="u2", outcome="denied")) == []
    assert feed.rules(61, entry(user="u2", outcome="denied")) == ["repeated_denials"]
    # a record handed in again is not counted again
    record = feed.log.append(entry(user="u3", outcome="denied"), recorded=T0)
    for _ in range(4):
        assert feed.engine.observe(record) == []
    assert feed.rules(1, entry(user="u3", outcome="denied")) == []


@pytest.mark.parametrize(
    ("local", "fires"),
    [
        ("2024-05-01T21:59", False),
        ("2024-05-01T22:00", True),
        ("2024-05-01T23:30", True),
        ("2024-05-02T00:30", True),  # after midnight: the range wraps
        ("2024-05-02T05:59", True),
        ("2024-05-02T06:00", False),
        ("2024-05-02T12:00", False),
    ],
)
def test_quiet_hours_in_hanoi_wrap_midnight(tmp_path: Path, local: str, fires: bool) -> None:
    feed = Feed(f"sqlite:///{tmp_path / 'lienthong.db'}")
    try:
        moment = datetime.fromisoformat(local + "+07:00")
        rules = feed.rules(0, entry(), start=moment)
        assert rules == (["quiet_hours"] if fires else [])
    finally:
        feed.close()


def test_quiet_hours_details(feed: Feed) -> None:
    night = datetime(2024, 5, 1, 16, 0, tzinfo=UTC)  # 23:00 in Hanoi
    assert feed.rules(0, entry(patients=()), start=night) == []  # no patient data
    assert feed.rules(0, entry(outcome="denied"), start=night) == []  # nothing disclosed
    alerts = feed.at(1, entry(), start=night)
    assert [a.rule for a in alerts] == ["quiet_hours"]
    assert "23:00 local time" in alerts[0].detail and "Asia/Ho_Chi_Minh" in alerts[0].detail
    assert feed.rules(2, entry(action="update"), start=night) == []  # once per window
    assert feed.rules(61, entry(), start=night) == ["quiet_hours"]
    assert feed.rules(62, entry(user="u2"), start=night) == ["quiet_hours"]


def test_quiet_hours_follow_the_configured_zone(store_url: str) -> None:
    feed = Feed(store_url, timezone="UTC")
    try:
        # 23:00 in Hanoi but 16:00 UTC: not quiet in UTC
        assert feed.rules(0, entry(), start=datetime(2024, 5, 1, 16, 0, tzinfo=UTC)) == []
        assert feed.rules(0, entry(), start=datetime(2024, 5, 1, 23, 0, tzinfo=UTC)) == [
            "quiet_hours"
        ]
    finally:
        feed.close()


def test_quiet_hours_parsing() -> None:
    assert parse_quiet_hours("22-06") == (22, 6)
    assert parse_quiet_hours("1-5") == (1, 5)
    assert parse_quiet_hours("off") is None and parse_quiet_hours("") is None
    assert parse_quiet_hours("7-7") is None
    assert parse_quiet_hours("22-24") == (22, 0)
    with pytest.raises(ValueError):
        parse_quiet_hours("22")
    with pytest.raises(ValueError):
        parse_quiet_hours("25-06")
    assert [h for h in range(24) if in_quiet_hours(h, (22, 6))] == [0, 1, 2, 3, 4, 5, 22, 23]
    assert [h for h in range(24) if in_quiet_hours(h, (1, 5))] == [1, 2, 3, 4]
    assert not any(in_quiet_hours(h, None) for h in range(24))


def test_state_is_rebuilt_after_a_restart(feed: Feed) -> None:
    for t, p in ((0, "p1"), (1, "p2"), (2, "p3")):
        assert feed.rules(t, entry(patients=(p,))) == []
    assert feed.rules(3, entry(outcome="denied")) == []
    assert feed.rules(4, entry(outcome="denied")) == []
    feed.restart()
    # the counts survived: one more patient and one more denial raise
    assert feed.rules(5, entry(patients=("p4",))) == ["many_patients"]
    assert feed.rules(6, entry(outcome="denied")) == ["repeated_denials"]
    feed.restart()
    # and so did the once-per-window memory
    assert feed.rules(7, entry(patients=("p5",))) == []
    assert feed.rules(8, entry(outcome="denied")) == []
    # records appended while no engine ran are part of the rebuilt state
    feed.engine.close()
    for t, p in ((100, "x1"), (101, "x2"), (102, "x3")):
        feed.log.append(entry(user="u2", patients=(p,)), recorded=T0 + timedelta(seconds=t))
    feed.engine = AlertEngine(feed.settings, feed.url)
    assert feed.rules(103, entry(user="u2", patients=("x4",))) == ["many_patients"]


def test_a_restart_raises_nothing_by_itself(feed: Feed) -> None:
    four = ("a", "b", "c", "d")
    assert feed.rules(0, entry(action="search-type", patients=four)) == ["many_patients"]
    # suppressed: within the window of the alert at 0
    assert feed.rules(30, entry(action="search-type", patients=("e", "f", "g", "h"))) == []
    assert feed.rules(65, entry(user="u2", break_glass="x")) == ["break_glass"]
    before = feed.engine.list_alerts()[1]
    feed.restart()  # replays (5, 65]: the read at 30 must not become an alert now
    assert feed.engine.list_alerts()[1] == before == 2


def test_engines_in_two_processes_see_the_whole_stream_and_store_alerts_once(
    store_url: str,
) -> None:
    """Each server process observes only its own appends; gaps are read from the log."""
    settings = make_settings(store_url)
    log_a, log_b = AuditLog(store_url), AuditLog(store_url)
    eng_a, eng_b = AlertEngine(settings, store_url), AlertEngine(settings, store_url)
    try:

        def on(log: AuditLog, eng: AlertEngine, t: int, p: str) -> list[str]:
            rec = log.append(entry(patients=(p,)), recorded=T0 + timedelta(seconds=t))
            return [a.rule for a in eng.observe(rec)]

        assert on(log_a, eng_a, 0, "p1") == []
        assert on(log_b, eng_b, 1, "p2") == []
        assert on(log_a, eng_a, 2, "p3") == []
        assert on(log_b, eng_b, 3, "p4") == ["many_patients"]  # B saw p1 and p3 too
        assert on(log_a, eng_a, 4, "p5") == []  # A catches up, stores nothing twice
        alerts, total = eng_a.list_alerts()
        assert total == 1 and alerts[0].audit_seq == 4
        # a record already processed (seen in a gap) is not evaluated twice
        rec = log_b.read(5)
        assert rec is not None and eng_b.observe(rec) == [] and eng_b.observe(rec) == []
    finally:
        for closable in (eng_a, eng_b, log_a, log_b):
            closable.close()


def test_list_alerts_filters_and_json(feed: Feed) -> None:
    feed.at(0, entry(break_glass="a"))
    feed.at(1, entry(user="u2", break_glass="b"))
    night = datetime(2024, 5, 1, 16, 0, tzinfo=UTC)
    feed.at(0, entry(user="u2"), start=night)
    alerts, total = feed.engine.list_alerts()
    assert total == 3 and [a.rule for a in alerts] == ["quiet_hours", "break_glass", "break_glass"]
    assert feed.engine.list_alerts(user="u2")[1] == 2
    assert feed.engine.list_alerts(rule="break_glass", user="u2")[1] == 1
    assert feed.engine.list_alerts(since="2024-05-01T10:00:00+00:00")[1] == 1
    page, total = feed.engine.list_alerts(count=1, offset=1)
    assert total == 3 and len(page) == 1 and page[0].detail.endswith(": b")
    assert alerts[0].to_json() == {
        "id": alerts[0].id,
        "raised": "2024-05-01T16:00:00.000000Z",
        "rule": "quiet_hours",
        "user": "u2",
        "detail": alerts[0].detail,
        "audit_seq": 3,
    }


def test_alerts_command(feed: Feed) -> None:
    app = typer.Typer()
    app.command("alerts")(alerts_command)

    @app.command()
    def version() -> None:
        typer.echo("test")

    feed.at(0, entry(break_glass="cấp cứu"))
    feed.at(0, entry(user="u2"), start=datetime(2024, 5, 1, 16, 0, tzinfo=UTC))
    runner = CliRunner()
    result = runner.invoke(app, ["alerts", "--database", feed.url])
    assert result.exit_code == 0, result.output
    assert "2 alerts" in result.stdout and "break_glass" in result.stdout
    result = runner.invoke(app, ["alerts", "--rule", "quiet_hours", "--database", feed.url])
    assert result.exit_code == 0 and "1 alerts" in result.stdout


def test_idle_users_state_is_dropped(feed: Feed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts_module, "SWEEP_EVERY", 1)
    feed.at(0, entry(user="idle", patients=("p1", "p2")))
    feed.at(0, entry(user="idle", outcome="denied"))
    assert "idle" in feed.engine._patients and "idle" in feed.engine._denials
    feed.at(60, entry(user="busy"))
    assert "idle" not in feed.engine._patients and "idle" not in feed.engine._denials
    assert "busy" in feed.engine._patients
