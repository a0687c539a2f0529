"""A user's own mistakes get a one-line error and exit code 2; nothing is created or lost."""

from __future__ import annotations

import json
import os

import pytest

from conftest import PROGRAMS, stop_tui


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stop-tui: error: "), proc.stderr
    return lines[0]


def test_unknown_task(sessions_dir):
    line = _one_line_error(stop_tui("run", "--task", "nope", "--sessions-dir", str(sessions_dir)))
    assert "unknown task 'nope'" in line and "lpn" in line
    assert not list(sessions_dir.iterdir())


def test_unreadable_and_empty_solution_files(tmp_path):
    assert "cannot read" in _one_line_error(stop_tui("score", "--task", "lpn", str(tmp_path / "missing.py")))
    empty = tmp_path / "empty.py"
    empty.write_text("  \n")
    assert "is empty" in _one_line_error(stop_tui("score", "--task", "lpn", str(empty)))


def test_unreachable_server_names_the_url_and_how_to_set_it(sessions_dir):
    """Not a refusal to start (a session can be resumed on another server, and viewing needs
    none): the run pauses at its first request, with one line (see test_lm_failing_server)."""
    proc = stop_tui("run", "--model", "some-model", "--base-url", "http://127.0.0.1:9/v1",
                    "--preset", "quick", "--sessions-dir", str(sessions_dir))
    assert proc.returncode == 3, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("paused: ")]
    assert "http://127.0.0.1:9/v1" in line and "--base-url" in line


def test_missing_key_for_openai(sessions_dir):
    line = _one_line_error(stop_tui("run", "--model", "gpt-4o-mini", "--sessions-dir", str(sessions_dir)))
    assert "OPENAI_API_KEY" in line


def test_missing_gguf_file(sessions_dir, tmp_path):
    line = _one_line_error(stop_tui("run", "--model", f"local:{tmp_path}/nope.gguf",
                                    "--sessions-dir", str(sessions_dir)))
    assert "no GGUF model file" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; see the file case below")
def test_sessions_dir_not_writable_permissions(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    line = _one_line_error(stop_tui("run", "--model", "x", "--sessions-dir", str(folder)))
    assert "not writable" in line


def test_sessions_dir_that_is_a_file(tmp_path):
    from scripted_server import ScriptedLMServer

    blocker = tmp_path / "afile"
    blocker.write_text("")
    with ScriptedLMServer(lambda body, i: "") as server:
        line = _one_line_error(stop_tui("run", "--model", "scripted", "--base-url", server.base_url,
                                        "--sessions-dir", str(blocker)))
    assert "not writable" in line and str(blocker) in line


def test_score_reports_failing_candidates_as_scores(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def algorithm(a, b, c):\n    return 1 / 0\n")
    proc = stop_tui("score", "--task", "lpn", str(bad), "--json")
    assert proc.returncode == 0
    out = json.loads(proc.stdout)
    assert out["score"] == 1e-6 and "ZeroDivisionError" in out["error"]
    ok = json.loads(stop_tui("score", "--task", "lpn", "--split", "test",
                             str(PROGRAMS / "lpn_zeros.py"), "--json").stdout)
    assert ok["score"] == pytest.approx(0.509) and ok["error"] is None


def test_list_and_show_unknown_session(sessions_dir):
    proc = stop_tui("list", "--json", "--sessions-dir", str(sessions_dir))
    assert proc.returncode == 0 and json.loads(proc.stdout) == []
    assert "no session" in _one_line_error(stop_tui("show", "nope", "--sessions-dir", str(sessions_dir)))


def test_a_transfer_session_is_listed_as_such_and_not_resumed_as_a_stop_run(sessions_dir):
    from stop_tui.engine.store import SessionStore

    store = SessionStore.create(sessions_dir, {"kind": "transfer", "task": "grid,sat"}, name="t1")
    store.close()
    rows = json.loads(stop_tui("list", "--json", "--sessions-dir", str(sessions_dir)).stdout)
    assert [(r["session"], r["kind"]) for r in rows] == [("t1", "transfer")]
    line = _one_line_error(stop_tui("run", "--resume", "t1", "--sessions-dir", str(sessions_dir)))
    assert "transfer session" in line and "stop-tui transfer --resume t1" in line
