"""The run options: one declaration for run, new, resume, transfer and baseline, resolved once."""

from __future__ import annotations

import pytest

from stop_tui.cli import build_parser
from stop_tui.commands.run_options import resolve
from stop_tui.engine.errors import UserError

COMMANDS = {"run": [], "new": [], "transfer": [], "baseline": ["--method", "cot"]}


def _resolve(*argv):
    return resolve(build_parser().parse_args(list(argv)))


def _help(command: str, option: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a.help for a in sub._actions if option in a.option_strings)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_quick_on_the_local_model_paper_elsewhere(command, tmp_path):
    extra = [*COMMANDS[command], "--sessions-dir", str(tmp_path)]
    local = _resolve(command, *extra)
    assert (local.model, local.preset, local.sessions_dir) == ("local", "quick", tmp_path)
    assert local.settings().preset == "quick"
    remote = _resolve(command, *extra, "--model", "gpt-4o")
    assert (remote.model, remote.preset) == ("gpt-4o", "paper")
    assert _resolve(command, *extra, "--model", "gpt-4o", "--preset", "quick").preset == "quick"


def test_options_not_given_stay_unset_so_a_resume_keeps_the_sessions():
    opts = _resolve("run", "--resume", "S")
    assert opts.given_model is None and opts.base_url is None and opts.given_preset is None
    assert all(v is None for v in opts.lm.values())
    assert _resolve("resume", "S", "--max-calls", "9").lm["cap_calls"] == 9


def test_the_options_are_given_to_the_settings():
    opts = _resolve("new", "--iterations", "2", "--seed", "7", "--acceptance", "best", "--max-concurrency", "3")
    settings = opts.settings()
    assert (settings.iterations, settings.seed, settings.acceptance, settings.max_concurrency) == (2, 7, "best", 3)


def test_every_command_describes_a_shared_option_alike():
    for option in ("--model", "--base-url", "--seed", "--sessions-dir"):
        assert len({_help(command, option) for command in COMMANDS}) == 1, option
    assert len({_help(command, "--max-calls") for command in ("run", "new", "resume", "baseline")}) == 1


def test_an_lm_option_out_of_range_is_refused_for_every_command_that_has_it():
    for command in ("run", "new", "baseline"):
        with pytest.raises(UserError, match="--max-calls must be at least 1"):
            _resolve(command, *COMMANDS[command], "--max-calls", "0")
    with pytest.raises(UserError, match="--max-calls must be at least 1"):
        _resolve("resume", "S", "--max-calls", "0")
