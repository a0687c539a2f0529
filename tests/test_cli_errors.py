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
    assert "is not a folder" in line and str(blocker) in line


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


def _finished_session(sessions_dir, name="done"):
    from stop_tui.engine import events as ev
    from stop_tui.engine.settings import preset
    from stop_tui.engine.store import SessionStore

    store = SessionStore.create(sessions_dir, {"task": "lpn", "model": "scripted",
                                               "settings": preset("quick").to_dict()}, name=name)
    store.append(ev.Event(ev.SESSION_STARTED, "", {"task": "lpn"}))
    store.append(ev.Event(ev.SESSION_FINISHED, "", {"iterations_completed": 1, "reason": "done"}))
    store.close()
    return store.folder


def _files(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


BAD_NUMBERS = [("--max-cost", "nan"), ("--max-cost", "inf"), ("--max-cost", "-inf"), ("--max-cost", "-1"),
               ("--max-cost", "0"), ("--max-tokens", "-5"), ("--max-calls", "0"), ("--max-calls", "-1"),
               ("--max-concurrency", "-2")]


SEEDS = [("--seed", "-1"), ("--seed", str(2**32))]


@pytest.mark.parametrize("command,option,value",
                         [(c, o, v) for c in ("run", "new") for o, v in [*BAD_NUMBERS, ("--iterations", "-1"), *SEEDS]]
                         + [(c, o, v) for c in ("transfer", "baseline") for o, v in SEEDS])
@pytest.mark.slow
def test_nan_inf_and_negative_numbers_are_bad_input(sessions_dir, command, option, value):
    extra = {"transfer": ["--improver", str(PROGRAMS / "improver_first.py"), "--tasks", "lpn"],
             "baseline": ["--method", "cot", "--task", "lpn"]}.get(command, [])
    line = _one_line_error(stop_tui(command, *extra, "--model", "scripted", "--base-url", "http://127.0.0.1:9/v1",
                                    f"{option}={value}", "--sessions-dir", str(sessions_dir)))
    assert option in line
    assert not list(sessions_dir.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("option,value", BAD_NUMBERS)
@pytest.mark.parametrize("command", ["run --resume", "resume"])
def test_bad_caps_on_resume_are_refused_before_the_session_is_touched(sessions_dir, command, option, value):
    folder = _finished_session(sessions_dir)
    before = _files(sessions_dir)
    line = _one_line_error(stop_tui(*command.split(), "done", f"{option}={value}", "--sessions-dir", str(sessions_dir)))
    assert option in line
    assert _files(sessions_dir) == before and not (folder / "lock").exists()


def test_resume_of_a_finished_session_with_negative_iterations(sessions_dir):
    _finished_session(sessions_dir)
    before = _files(sessions_dir)
    line = _one_line_error(stop_tui("run", "--resume", "done", "--iterations", "-3", "--sessions-dir", str(sessions_dir)))
    assert "--iterations must be 0 or more" in line
    assert _files(sessions_dir) == before


def test_a_task_name_too_long_for_a_file_name(tmp_path):
    line = _one_line_error(stop_tui("tasks", "new", "a" * 300, "--dir", str(tmp_path)))
    assert "at most 64 characters (got 300)" in line and len(line) < 200
    assert not list(tmp_path.iterdir())


def test_list_of_a_file_or_a_missing_folder(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert "is not a folder" in _one_line_error(stop_tui("list", "--sessions-dir", str(afile)))
    assert "does not exist" in _one_line_error(stop_tui("list", "--sessions-dir", str(tmp_path / "nope")))
    assert not (tmp_path / "nope").exists()


def test_a_sessions_dir_that_cannot_be_created_does_not_exist(sessions_dir):
    from scripted_server import ScriptedLMServer

    with ScriptedLMServer(lambda body, i: "") as server:
        line = _one_line_error(stop_tui("run", "--model", "scripted", "--base-url", server.base_url,
                                        "--sessions-dir", "/proc/stop-tui-nowhere/sessions"))
    assert "sessions dir /proc/stop-tui-nowhere/sessions does not exist" in line
    assert "not writable" not in line


def test_error_messages_list_the_downstream_tasks_alike(sessions_dir):
    from stop_tui.engine.tasks import downstream_names

    tasks = ", ".join(downstream_names())
    assert "meta" not in tasks.split(", ") and "meta_sandbox" not in tasks and "lpn" in tasks
    unknown = _one_line_error(stop_tui("run", "--task", "nope", "--sessions-dir", str(sessions_dir)))
    assert unknown.endswith(f"unknown task 'nope' (tasks: {tasks})")
    assert _one_line_error(stop_tui("score", "--task", "nope", str(PROGRAMS / "lpn_zeros.py"))).endswith(
        f"(tasks: {tasks})")
    for args in (["transfer", "--improver", str(PROGRAMS / "improver_first.py"), "--tasks", "meta"],
                 ["baseline", "--method", "cot", "--task", "meta_sandbox"]):
        line = _one_line_error(stop_tui(*args, "--model", "local", "--sessions-dir", str(sessions_dir)))
        assert f"is not a downstream task (tasks: {tasks})" in line, line


def _subcommands(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, subsub in _subcommands(sub):
                    yield f"{name} {inner}", subsub


def test_every_option_and_positional_has_help():
    from stop_tui.cli import build_parser

    missing = []
    for name, sub in _subcommands(build_parser()):
        for action in sub._actions:
            if action.help is None and action.dest != "help":
                missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest}")
    assert missing == []
    for command in ("score", "list", "show", "tasks"):
        text = stop_tui(command, "--help").stdout
        assert text.count("--json") >= 2, text  # usage line and its help line


def test_baseline_into_a_session_of_another_task_is_refused(sessions_dir):
    folder = _finished_session(sessions_dir, "lpn-run")
    before = _files(sessions_dir)
    line = _one_line_error(stop_tui("baseline", "--method", "cot", "--session", "lpn-run", "--task", "grid",
                                    "--model", "local", "--sessions-dir", str(sessions_dir)))
    assert "session lpn-run is a lpn session" in line and "--task grid" in line
    assert _files(sessions_dir) == before and not (folder / "baselines").exists()


def test_transfer_lists_a_task_named_twice_once(sessions_dir):
    from scripted_server import ScriptedLMServer
    from test_transfer import FIRST, responder_for, transfer

    with ScriptedLMServer(responder_for()) as server:
        proc = transfer(server, sessions_dir, "--improver", str(FIRST), "--tasks", "parity,parity", "--json",
                        "--quiet")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [row["task"] for row in result["rows"]] == ["parity"]


def test_a_second_baseline_keeps_the_first(sessions_dir):
    """Run twice into one session, a baseline keeps both results: cot.json is left byte for byte
    and the second is cot-2.json (with its own log, baselines/cot-2/)."""
    from scripted_server import ScriptedLMServer
    from test_baselines import responder

    folder = _finished_session(sessions_dir, "lpn-run")

    def cot():
        return stop_tui("baseline", "--method", "cot", "--session", "lpn-run", "--model", "scripted",
                        "--base-url", server.base_url, "--runs", "1", "--json", "--quiet",
                        "--sessions-dir", str(sessions_dir))

    with ScriptedLMServer(responder) as server:
        first = cot()
        assert first.returncode == 0, first.stderr
        before = _files(folder / "baselines")
        second = cot()
        assert second.returncode == 0, second.stderr
    after = _files(folder / "baselines")
    assert {k: v for k, v in after.items() if k in before} == before  # nothing of the first changed
    assert sorted(p.name for p in (folder / "baselines").glob("*.json")) == ["cot-2.json", "cot.json"]
    assert json.loads((folder / "baselines" / "cot-2.json").read_text()) == json.loads(second.stdout)
    assert json.loads((folder / "baselines" / "cot.json").read_text()) == json.loads(first.stdout)
