"""Where verification gets the population register from.

Two connectors share one small interface (`RegisterConnector`): a file extract (CSV or
Parquet with `verify.REGISTER_COLUMNS`) that is loaded whole, and a remote register
service spoken to over HTTP, batch by batch, for sites that are not given an extract.
The HTTP protocol is described in ``docs/register-service.md``.

A remote service fails in the ways networks do - slow answers, refused connections,
"429 Too Many Requests", "503" during maintenance - so the client waits between calls
(a rate limit), times out, and retries with exponential back-off, honouring the
``Retry-After`` header, before giving up with `RegisterUnavailable`. Giving up never loses
work: the caller appends each finished batch to the report and resumes after the last one.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from lienthong.identity.verify import REGISTER_COLUMNS


class RegisterUnavailable(RuntimeError):
    """The register service could not answer after every retry."""


class RegisterConnector(Protocol):
    """A source of register entries.

    ``version`` names the state of the register a finding was made against (recorded on
    each verified Patient); ``whole`` is True when `entries_for` returns the whole
    register (a file extract) so that the caller can load it once; ``register_size`` is
    the whole register's size when it returns only some entries and knows it (name
    frequencies are counted over the whole register).
    """

    version: str
    whole: bool
    register_size: int | None

    def entries_for(self, records: Sequence[dict[str, str]]) -> pa.Table:
        """Register entries that may belong to these records (columns REGISTER_COLUMNS)."""
        ...

    def close(self) -> None: ...


def _file_version(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"{path.name}@sha256:{digest.hexdigest()[:16]}"


class FileRegister:
    """A register extract on disk (CSV or Parquet), loaded whole by the engine."""

    whole = True
    register_size: int | None = None  # the extract is the whole register

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        self.path = path
        self.version = _file_version(path)

    def cache_path(self) -> Path:
        """Where the normalised form of this extract is kept between runs (keyed by its
        hash): ``$XDG_CACHE_HOME/lienthong/register`` or ``~/.cache/lienthong/register``."""
        import os

        from lienthong.identity.verify import NORMALISATION_VERSION

        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        digest = self.version.rsplit(":", 1)[-1]
        name = f"{digest}-n{NORMALISATION_VERSION}.parquet"
        return Path(base) / "lienthong" / "register" / name

    def entries_for(self, records: Sequence[dict[str, str]]) -> pa.Table:
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        if self.path.suffix.lower() in (".parquet", ".pq"):
            return pq.read_table(self.path)
        opts = pcsv.ConvertOptions(column_types={c: pa.string() for c in REGISTER_COLUMNS})
        return pcsv.read_csv(self.path, convert_options=opts)

    def close(self) -> None:
        return None


@dataclass
class RetryPolicy:
    """How hard the client tries before giving up on one call."""

    attempts: int = 5
    base_delay: float = 0.5  # seconds before the 1st retry; doubled each time
    max_delay: float = 30.0
    timeout: float = 10.0  # per request, seconds


class _RateLimiter:
    """At most `per_second` requests per second, spaced evenly (thread-safe)."""

    def __init__(self, per_second: float, sleep: Any = time.sleep) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.next_at = 0.0
        self.lock = threading.Lock()
        self.sleep = sleep

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            delay = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval
        if delay > 0:
            self.sleep(delay)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpRegister:
    """Client of a register service (protocol in ``docs/register-service.md``).

    Each batch costs two calls: ``POST {base}/persons/lookup`` with the batch's numbers and
    ``POST {base}/persons/search`` with the identity fields of every record (the search
    finds the owner when the number is absent, mistyped or someone else's, and a twin
    or namesake that makes a proposal ambiguous).
    """

    whole = False

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        rate_limit: float = 10.0,
        retry: RetryPolicy | None = None,
        client: Any = None,
        sleep: Any = time.sleep,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = client or httpx.Client(
            base_url=self.base_url, headers=headers, timeout=self.retry.timeout
        )
        self.limiter = _RateLimiter(rate_limit, sleep)
        self.version = ""
        self.register_size: int | None = None  # the service's, when it says
        self.calls = 0
        self.retries = 0
        self.sleep = sleep  # replaceable so that tests can see the waits asked for

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        last = ""
        for attempt in range(self.retry.attempts):
            self.limiter.wait()
            self.calls += 1
            wait: float | None = None
            try:
                resp = self.client.post(path, json=body)
            except httpx.TransportError as exc:  # timeouts, refused or dropped connections
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    data: dict[str, Any] = resp.json()
                    version = data.get("register_version")
                    if isinstance(version, str) and version:
                        self.version = version
                    return data
                last = f"HTTP {resp.status_code}"
                if resp.status_code not in (408, 425, 429, 500, 502, 503, 504):
                    raise RegisterUnavailable(f"{self.base_url}{path}: {last}: {resp.text[:200]}")
                wait = retry_after_seconds(resp.headers.get("Retry-After"))
            if attempt + 1 == self.retry.attempts:
                break
            self.retries += 1
            if wait is None:
                wait = self.retry.base_delay * 2**attempt
                wait *= 1 + random.random() * 0.1  # jitter so that clients do not march
            self.sleep(min(wait, self.retry.max_delay))
        raise RegisterUnavailable(
            f"{self.base_url}{path}: no answer after {self.retry.attempts} attempts ({last})"
        )

    def _sized(self, answer: dict[str, Any]) -> list[dict[str, Any]]:
        size = answer.get("register_size")
        if isinstance(size, int) and size > 0:
            self.register_size = size
        persons: list[dict[str, Any]] = answer.get("persons", [])
        return persons

    def entries_for(self, records: Sequence[dict[str, str]]) -> pa.Table:
        """The register entries the service holds for these records, with the
        service's name counts (`name_count`, `family_given_count`) when it gives them."""
        from lienthong.identity.verify import birth_date_iso

        numbers = sorted({(r.get("cccd") or "").strip() for r in records} - {""})
        persons: dict[str, dict[str, Any]] = {}
        if numbers:
            for p in self._sized(self._post("/persons/lookup", {"cccd": numbers})):
                persons[str(p.get("cccd", ""))] = p
        queries = [
            {
                "ref": str(r.get("record_id", "")),
                "full_name": r.get("full_name") or "",
                # as verification reads it (a two-digit year, 1 January...), so that the
                # service searches the years the engine will compare
                "birth_date": birth_date_iso(r.get("birth_date") or "")
                or (r.get("birth_date") or ""),
                "sex": r.get("sex") or "",
                "cccd": (r.get("cccd") or "").strip(),
                **_place_codes(r),
            }
            for r in records
        ]
        if queries:
            for p in self._sized(self._post("/persons/search", {"queries": queries})):
                persons.setdefault(str(p.get("cccd", "")), p)
        columns = {
            c: pa.array(
                [None if p.get(c) is None else str(p.get(c)) for p in persons.values()],
                pa.string(),
            )
            for c in REGISTER_COLUMNS
        }
        for c in ("name_count", "family_given_count"):
            values = [p.get(c) for p in persons.values()]
            columns[c] = pa.array([v if isinstance(v, int) else None for v in values], pa.int64())
        return pa.table(columns)

    def close(self) -> None:
        self.client.close()


def _place_codes(record: dict[str, str]) -> dict[str, str]:
    """The record's province and commune codes for a search query; for a record without
    codes, those its written address names (`verify.address_place`), when it names one
    province and one commune."""
    from lienthong.identity.verify import address_place

    province = (record.get("province_code") or "").strip()
    commune = (record.get("commune_code") or "").strip()
    if not province and not commune and (record.get("address") or "").strip():
        provinces, communes = address_place(record["address"])
        province = provinces[0] if len(provinces) == 1 else ""
        commune = communes[0] if province and len(communes) == 1 else ""
    return {"province_code": province, "commune_code": commune}
