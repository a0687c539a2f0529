"""`stop-tui list` and `stop-tui show SWEEP [--json]` on a sweep of real sessions (run on the
scripted LM server, placed in the sweep layout): one list row per sweep, the sweep's runs with
their state, iteration, best û and spend; `show SWEEP/RUN` is one run; nothing is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lm_helpers import stop_tui
from sweep_helpers import append, make_sources, new_sweep, place

from stop_tui.engine import events as ev
from stop_tui.engine.sweep.status import sweep_status


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> Path:
    """A sessions dir: one plain session and a sweep of 4 runs (finished, capped, failed, pending)."""
    sources = make_sources(tmp_path_factory.mktemp("sources"))
    sessions = tmp_path_factory.mktemp("sessions")
    shutil.copytree(sources.finished, sessions / "plain")
    sweep = new_sweep(sessions, seeds=(0, 1), name="sw")
    keys = sweep.spec.runs()
    place(sources.finished, sweep, keys[0])
    place(sources.capped, sweep, keys[1])
    failed = place(sources.capped, sweep, keys[2])
    append(failed, ev.Resumed(iteration=1), ev.Error(message="the run's code failed: \x1b[2Jboom\nTraceback (most recent call last):\n  ..."))
    return sessions


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_list_shows_a_sweep_as_one_row(sessions):
    before = snapshot(sessions)
    proc = stop_tui("list", "--sessions-dir", str(sessions))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["plain", "sw"]  # the runs are not rows of their own
    assert lines[1].split()[1:5] == ["sweep", "lpn", "scripted,other", "capped"]
    assert "runs 4 (1 finished, 1 failed, 1 capped, 1 pending)" in lines[1]
    rows = json.loads(stop_tui("list", "--json", "--sessions-dir", str(sessions)).stdout)
    sweep_row = rows[1]
    assert (sweep_row["session"], sweep_row["kind"], sweep_row["state"]) == ("sw", "sweep", "capped")
    assert sweep_row["runs"]["finished"] == 1 and sweep_row["runs"]["pending"] == 1
    assert sweep_row["calls"] == sum(r.calls for r in sweep_status(_sweep(sessions))) > rows[0]["calls"]
    assert snapshot(sessions) == before


def test_show_a_sweep_lists_its_runs(sessions):
    before = snapshot(sessions)
    proc = stop_tui("show", "sw", "--sessions-dir", str(sessions))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("sweep     sw  (capped)\n")
    assert "runs      4: 1 finished, 1 failed, 1 capped, 1 pending" in out
    table = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("lpn-")}
    assert list(table) == ["lpn-scripted-s0", "lpn-other-s0", "lpn-scripted-s1", "lpn-other-s1"]
    assert table["lpn-scripted-s0"][1:4] == ["finished", "1/1", "0.5025"]
    assert table["lpn-other-s0"][1:4] == ["capped", "0/1", "0.5025"]
    assert table["lpn-scripted-s1"][1:3] == ["failed", "0/1"]
    assert table["lpn-other-s1"][1:4] == ["pending", "0/1", "-"]
    assert "\x1b" not in out and "\\x1b[2Jboom" in out  # the run's own text, made printable
    assert "Traceback" not in out  # its first line only
    assert "stop-tui show sw/RUN --sessions-dir" in out
    assert "lpn scripted: 1 of 2 runs finished, best 0.5025 [0.5025, 0.5025], gain of the final " \
           "improver over the seed +0.0000 (mean), 0 of 1 gained 0.03 or more" in out
    assert "lpn other: 2 runs, none finished yet" in out

    shown = json.loads(stop_tui("show", "sw", "--json", "--sessions-dir", str(sessions)).stdout)
    runs = sweep_status(_sweep(sessions))
    assert shown["state"] == "capped" and shown["spec"]["models"] == ["scripted", "other"]
    assert shown["runs"] == json.loads(json.dumps([r.to_dict() for r in runs]))
    assert shown["totals"]["calls"] == sum(r.calls for r in runs) > 0
    assert snapshot(sessions) == before


def test_show_one_run_of_a_sweep(sessions):
    proc = stop_tui("show", "sw/lpn-scripted-s0", "--sessions-dir", str(sessions), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["state"] == "finished"
    missing = stop_tui("show", "sw/lpn-other-s1", "--sessions-dir", str(sessions))
    assert missing.returncode == 2 and missing.stderr.startswith(
        "stop-tui: error: run lpn-other-s1 of sweep sw has not started yet (see `stop-tui show sw")
    typo = stop_tui("show", "sw/lpn-other-s9", "--sessions-dir", str(sessions))
    assert typo.returncode == 2 and typo.stderr.startswith("stop-tui: error: no session at ")


def _sweep(sessions: Path):
    from stop_tui.engine.sweep.layout import read_sweep

    return read_sweep(sessions / "sw")


def test_a_sweep_whose_spec_is_unreadable_is_one_line(tmp_path):
    sessions = tmp_path / "sessions"
    (sessions / "broken").mkdir(parents=True)
    (sessions / "broken" / "sweep.json").write_text("{not json")
    listed = stop_tui("list", "--sessions-dir", str(sessions))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("broken ") and "unreadable: " in listed.stdout
    shown = stop_tui("show", "broken", "--sessions-dir", str(sessions))
    assert shown.returncode == 2 and len(shown.stderr.splitlines()) == 1
    assert shown.stderr.startswith("stop-tui: error: the sweep at ") and "unreadable" in shown.stderr
