"""Shared test helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"


def stop_tui(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (as a user would)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "stop_tui", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd or ROOT)


# Where CI runs (.ci/run sets it) the sandbox is bubblewrap with every protection, as root: a
# test that would skip, or check less, for want of one fails there instead.
STRICT = os.environ.get("STOP_TUI_REQUIRE_BWRAP") == "1"


def skip_unless(condition: bool, reason: str) -> None:
    """Skip the test unless `condition`; where STOP_TUI_REQUIRE_BWRAP=1, fail instead."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"{reason} (STOP_TUI_REQUIRE_BWRAP=1: this machine must have it; see stop-tui doctor)")
    pytest.skip(reason)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Where CI runs (STOP_TUI_REQUIRE_BWRAP=1, set by .ci/run) the run cannot go green on a weaker
    sandbox: `stop-tui doctor` must pass (bubblewrap mode with every protection, the live probe
    getting nothing through, a working local model) before any test runs."""
    if not STRICT:
        return
    done = stop_tui("doctor", timeout=600)
    if done.returncode != 0:
        pytest.exit("STOP_TUI_REQUIRE_BWRAP=1 but `stop-tui doctor` failed: CI needs the sandbox in "
                    "bubblewrap mode with every protection (as root) and a working local model\n"
                    + done.stdout + done.stderr, returncode=1)


@pytest.fixture
def sessions_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "sessions"
    folder.mkdir()
    return folder
