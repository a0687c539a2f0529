"""Inputs checked before anything runs (issue 15 items 11, 12, 14): a task.toml field of the
wrong type, a `--set` value that is not of the type the task declares, and the improvers' own
tasks given where a downstream task is needed. Each is one line and exit 2."""

from __future__ import annotations

import json

import pytest
from conftest import stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine.errors import UserError
from stop_tui.engine.tasks import load_task

SEED = "def algorithm(x):\n    return x\n"


def make_task(folder, toml: str, evaluate: str | None = None):
    folder.mkdir()
    (folder / "task.toml").write_text(toml)
    (folder / "seed.py").write_text(SEED)
    (folder / "utility.py").write_text("def utility(s):\n    return 0\n")
    (folder / "evaluate.py").write_text(evaluate or (
        "def evaluate(run, split, settings):\n    return 0.5, repr(sorted(settings.items()))\n"))
    return folder


def one_error_line(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stop-tui: error: "), proc.stderr
    return lines[0]


# -- task.toml fields (item 14) ------------------------------------------------------------

@pytest.mark.parametrize("toml,message", [
    ("name = 5\n", "field 'name' must be a string (got int 5)"),
    ('title = ["a"]\n', "field 'title' must be a string (got list ['a'])"),
    ("kind = true\n", "field 'kind' must be a string (got bool True)"),
    ("entry = 3.5\n", "field 'entry' must be a string (got float 3.5)"),
    ("description = 1\n", "field 'description' must be a string"),
    ("settings = 3\n", "field 'settings' must be a table"),
    ('name = ""\n', "field 'name' is empty"),
    ("evaluation_time_limit = 'long'\n", "field 'evaluation_time_limit' must be a number"),
    ("evaluation_time_limit = true\n", "field 'evaluation_time_limit' must be a number"),
    ("evaluation_time_limit = 0\n", "'evaluation_time_limit' must be a positive number of seconds"),
    ("evaluation_time_limit = nan\n", "'evaluation_time_limit' must be a positive number of seconds"),
    ("time_limit = 0.5\n", "unknown field 'time_limit'"),
    ("[settings]\nlimit = inf\n", "setting 'limit' must be a finite number"),
])
def test_a_task_toml_field_of_the_wrong_type_is_named(tmp_path, toml, message):
    folder = make_task(tmp_path / "t", toml)
    with pytest.raises(UserError) as info:
        load_task(str(folder))
    assert message in str(info.value) and "task.toml" in str(info.value)
    line = one_error_line(stop_tui("score", "--task", str(folder), str(folder / "seed.py")))
    assert message in line


def test_the_shipped_tasks_and_a_full_toml_load(tmp_path):
    for name in ("lpn", "parity", "grid", "mqa", "sat", "maxcut", "meta", "meta_sandbox"):
        assert load_task(name).name == name
    folder = make_task(tmp_path / "full", 'name = "full"\ntitle = "T"\nkind = "solution"\n'
                       'entry = "algorithm"\ndescription = "d"\nevaluation_time_limit = 12\n'
                       "[settings]\nn = 3\n")
    task = load_task(str(folder))
    assert (task.name, task.title, task.evaluation_time_limit, task.settings) == ("full", "T", 12.0, {"n": 3})


# -- --set against the declared type (item 12) ---------------------------------------------

@pytest.mark.parametrize("item", ["time_limit=abc", "time_limit=", "time_limit=1=2", "time_limit=nan",
                                  "time_limit=true", "time_limit=[1]"])
def test_score_refuses_a_setting_that_is_not_a_number(tmp_path, item):
    solution = tmp_path / "s.py"
    solution.write_text("def algorithm(formula):\n    return [True] * 60\n")
    line = one_error_line(stop_tui("score", "--task", "sat", "--set", item, str(solution)))
    assert f"--set {item!r}: task sat's setting time_limit is a number (its default: 0.01)" in line


def test_settings_of_each_type_are_checked_and_passed(tmp_path):
    folder = make_task(tmp_path / "typed", 'name = "typed"\n[settings]\nn = 3\nfast = false\nmode = "a"\n')
    ok = stop_tui("score", "--task", str(folder), "--json", "--set", "n=2.5", "--set", "fast=true",
                  "--set", "mode=b c", str(folder / "seed.py"))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["error"] == "[('fast', True), ('mode', 'b c'), ('n', 2.5)]"
    line = one_error_line(stop_tui("score", "--task", str(folder), "--set", "fast=yes", str(folder / "seed.py")))
    assert "task typed's setting fast is true or false (its default: False)" in line
    line = one_error_line(stop_tui("score", "--task", str(folder), "--set", "nope=1", str(folder / "seed.py")))
    assert "task typed has no setting nope (its settings: n, fast, mode, rng)" in line
    line = one_error_line(stop_tui("score", "--task", str(folder), "--set", "=1", str(folder / "seed.py")))
    assert "use KEY=VALUE" in line


def test_transfer_checks_the_setting_before_anything_runs(tmp_path, sessions_dir):
    improver = tmp_path / "improver.py"
    improver.write_text(load_task("meta").seed)
    line = one_error_line(stop_tui("transfer", "--improver", str(improver), "--tasks", "sat,grid",
                                   "--set", "time_limit=abc", "--model", "scripted",
                                   "--base-url", "http://127.0.0.1:9/v1", "--sessions-dir", str(sessions_dir)))
    assert "task sat's setting time_limit is a number" in line
    assert list(sessions_dir.iterdir()) == []  # no session was created


# -- the improvers' tasks are not downstream tasks (item 11) -------------------------------

@pytest.mark.parametrize("name", ["meta", "meta_sandbox"])
def test_score_refuses_the_meta_tasks(tmp_path, name):
    solution = tmp_path / "s.py"
    solution.write_text(load_task(name).seed)
    line = one_error_line(stop_tui("score", "--task", name, str(solution)))
    assert f"{name} is not a downstream task" in line and "lpn" in line


@pytest.mark.parametrize("name", ["meta", "meta_sandbox"])
def test_run_refuses_the_meta_tasks_without_spending_a_call(sessions_dir, name):
    with ScriptedLMServer(lambda body, index: "```python\ndef algorithm():\n    return 0\n```") as server:
        proc = stop_tui("run", "--task", name, "--model", "scripted", "--base-url", server.base_url,
                        "--preset", "quick", "--iterations", "1", "--sessions-dir", str(sessions_dir))
        assert server.requests == []
    line = one_error_line(proc)
    assert f"{name} is not a downstream task" in line
    assert list(sessions_dir.iterdir()) == []
