"""`stop-tui report` refuses bad input with one line and exit 2, before writing anything: an
unknown or unreadable session, a kind it cannot combine (a baseline), an empty sweep, a sweep
whose sweep.json is damaged, an output folder it cannot write, a figure name that is no .svg
or .png. (Damaged session databases of every kind: tests/test_cli_bad_sessions.py.)"""

from __future__ import annotations

import json

import pytest
from conftest import stop_tui
from lm_helpers import responder, run_args
from scripted_server import ScriptedLMServer
from sweep_helpers import new_sweep


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """A finished run `one` and a baseline session."""
    folder = tmp_path_factory.mktemp("errors") / "sessions"
    with ScriptedLMServer(responder) as server:
        done = stop_tui(*run_args(server, folder, "--json"))
        assert done.returncode == 0, done.stderr
        (folder / json.loads(done.stdout)["session"]).rename(folder / "one")
        base = stop_tui("baseline", "--method", "cot", "--task", "lpn", "--model", "scripted", "--base-url",
                        server.base_url, "--preset", "quick", "--sessions-dir", str(folder), "--quiet")
        assert base.returncode == 0, base.stderr
    (baseline,) = [p.name for p in folder.iterdir() if p.name != "one"]
    return folder, baseline


def refused(proc, *parts: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stop-tui: error: "), proc.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    assert proc.stdout == ""
    return lines[0]


def report(folder, *args):
    return stop_tui("report", *args, "--sessions-dir", str(folder))


def test_an_unknown_session(sessions):
    folder, _ = sessions
    refused(report(folder, "one", "nope"), "no session at", "nope")


def test_a_baseline_cannot_be_combined_with_runs(sessions):
    folder, base = sessions
    refused(report(folder, "one", base), f"session {base} is a baseline session")


def test_an_empty_sweep_and_a_damaged_one(sessions):
    folder, _ = sessions
    new_sweep(folder, name="empty")
    refused(report(folder, "empty"), "sweep empty has no run to report yet")
    bad = new_sweep(folder, name="bad")
    (bad.folder / "sweep.json").write_text("{not json")
    refused(report(folder, "bad"), "the sweep at", "is unreadable")


def test_an_output_folder_that_cannot_be_written(sessions, tmp_path):
    folder, _ = sessions
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    refused(report(folder, "one", "--out", str(a_file)), "is not a folder")
    refused(report(folder, "one", "--out", str(a_file / "below")), "cannot create --out")
    assert a_file.read_text() == "x"


def test_a_figure_that_is_no_svg_or_png(sessions, tmp_path):
    folder, _ = sessions
    refused(report(folder, "one", "--plot", str(tmp_path / "fig.pdf")), "name an .svg or a .png file")
    assert not (tmp_path / "fig.pdf").exists()


def test_a_single_run_reports_without_intervals(sessions):
    folder, _ = sessions
    proc = report(folder, "one", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["title"] == "one" and len(data["groups"]) == 1
    (point0, point1) = data["groups"][0]["curve"]
    assert point0["val"]["n"] == 1 and point0["val"]["lo"] == point0["val"]["mean"] == point0["val"]["hi"]


def test_a_bad_name_creates_no_output_folder(sessions, tmp_path):
    folder, _ = sessions
    refused(report(folder, "nope", "--out", str(tmp_path / "out")), "no session at")
    assert not (tmp_path / "out").exists()
