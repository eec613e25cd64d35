"""Transactions per second over HTTP: a small transaction bundle (one Patient and one
Observation referring to it by ``urn:uuid:``) posted to ``/fhir`` by 1, 8 and 32
concurrent clients, against ``lienthong serve`` on the embedded SQLite store.

Load comes from ``wrk`` (Debian package ``wrk``) in its own process, so the
client costs the server little CPU. The baseline, measured in the same run at
the same concurrency, is ``GET /`` (a constant JSON document): what the HTTP
stack alone can do on this machine.

Usage: python bench/bench_http.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from tests.pg_server import free_port

from bench.common import machine

BUNDLE = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {
            "fullUrl": "urn:uuid:7f2d0f7e-0000-4000-8000-000000000001",
            "resource": {
                "resourceType": "Patient",
                "identifier": [
                    {
                        "system": "http://fhir.ehealth.gov.vn/core/sid/citizen_id",
                        "value": "001090012345",
                    }
                ],
                "name": [{"family": "Nguyễn", "given": ["Văn", "An"]}],
                "gender": "male",
                "birthDate": "1990-05-17",
            },
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": "urn:uuid:7f2d0f7e-0000-4000-8000-000000000001"},
                "effectiveDateTime": "2025-03-01T08:30:00+07:00",
                "valueQuantity": {
                    "value": 72,
                    "unit": "/min",
                    "system": "http://unitsofmeasure.org",
                    "code": "/min",
                },
            },
            "request": {"method": "POST", "url": "Observation"},
        },
    ],
}


def wrk(url: str, clients: int, seconds: int, script: Path | None) -> tuple[float, str]:
    cmd = [
        "wrk",
        "-t",
        str(min(clients, 2)),
        "-c",
        str(clients),
        "-d",
        f"{seconds}s",
        "--latency",
        url,
    ]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out)
    return rps, p99.group(1) if p99 else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "LIENTHONG_DATABASE_URL": f"sqlite:///{tmp}/http.db"}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lienthong.cli",
                "serve",
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/fhir/metadata").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            script = Path(tmp) / "post.lua"
            body = orjson.dumps(BUNDLE).decode().replace("\\", "\\\\").replace('"', '\\"')
            script.write_text(
                'wrk.method = "POST"\n'
                f'wrk.body = "{body}"\n'
                'wrk.headers["Content-Type"] = "application/fhir+json"\n',
                encoding="utf-8",
            )
            print(f"machine: {machine()}; server: lienthong serve (uvicorn, one process), SQLite")
            for clients in (1, 8, 32):
                tps, p99 = wrk(f"{base}/fhir", clients, args.seconds, script)
                base_rps, _ = wrk(f"{base}/", clients, args.seconds, None)
                print(
                    f"transactions/s with {clients} clients: {tps:,.0f} (p99 {p99}); "
                    f"baseline GET / {base_rps:,.0f} requests/s"
                )
            count = httpx.get(f"{base}/fhir/Patient", params={"_summary": "count"}).json()["total"]
            print(f"patients written: {count}")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
