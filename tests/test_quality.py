"""The code base stays lint-clean and every setting is documented."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from lienthong.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    proc = subprocess.run(
        [ruff, "check", "src", "tests", "bench", "scripts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "src"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_setting_is_documented() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"LIENTHONG_{name.upper()}" in docs, name


def test_settings_come_from_the_given_environment() -> None:
    s = Settings.from_env({"LIENTHONG_PORT": "9999", "LIENTHONG_DATABASE_URL": "sqlite:///x.db"})
    assert s.port == 9999 and s.sqlite_path() == Path("x.db")
    assert Settings.from_env({}).database_url == "sqlite:///./lienthong-data/lienthong.db"
