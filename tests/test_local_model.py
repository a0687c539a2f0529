"""End to end on the real embedded model (SmolLM2-135M via llama-cpp-python): slow."""

from __future__ import annotations

import json

import pytest
from conftest import stop_tui

pytestmark = pytest.mark.slow


def test_quick_iteration_on_the_local_model_then_list_and_show(sessions_dir):
    proc = stop_tui("run", "--task", "lpn", "--iterations", "1", "--preset", "quick",
                    "--sessions-dir", str(sessions_dir), "--json", timeout=900)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    for key in ("session", "session_dir", "iterations_completed", "meta_utility", "best_meta_utility", "lm"):
        assert key in summary
    assert summary["model"] == "local" and summary["iterations_completed"] == 1
    assert len(summary["meta_utility"]) == 1 and 0.0 <= summary["meta_utility"][0] <= 1.0
    lm = summary["lm"]
    assert lm["calls"] >= 2 and lm["completions"] >= 4  # I0's run and iteration 1's improver
    assert lm["prompt_tokens"] > 500 and lm["completion_tokens"] > 0
    assert lm["cost_usd"] == 0.0
    assert "iteration 1" in proc.stderr  # progress went to stderr

    listed = json.loads(stop_tui("list", "--json", "--sessions-dir", str(sessions_dir)).stdout)
    assert [row["session"] for row in listed] == [summary["session"]]
    assert listed[0]["task"] == "lpn" and listed[0]["state"] == "finished"
    shown = stop_tui("show", summary["session"], "--sessions-dir", str(sessions_dir))
    assert shown.returncode == 0 and summary["session"] in shown.stdout and "LM" in shown.stdout
    assert json.loads(stop_tui("show", summary["session"], "--json", "--sessions-dir",
                               str(sessions_dir)).stdout)["meta_utility"] == summary["meta_utility"]
