"""Every printed hint that names a session works when pasted: it carries a non-default
--sessions-dir (copied as shown, the old hints failed with "no session")."""

from __future__ import annotations

import json
import re
import shlex

from lm_helpers import responder, run_args, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine.store import cli_name


def test_the_cap_hint_and_the_details_hint_run_as_printed(tmp_path):
    sessions_dir = tmp_path / "elsewhere"
    with ScriptedLMServer(responder, honour_n=False) as server:
        capped = stop_tui(*run_args(server, sessions_dir, "--max-calls", "1", "--quiet"))
        assert capped.returncode == 3, capped.stderr
        hint = re.search(r"resume: (stop-tui run --resume .*)$", capped.stderr.strip())
        assert hint, capped.stderr
        command = hint.group(1)
        assert f"--sessions-dir {sessions_dir}" in command and "--max-calls <higher>" in command
        pasted = shlex.split(command.replace("<higher>", "1000"))[1:] + ["--json", "--quiet"]
        resumed = stop_tui(*pasted)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["state"] == "finished"
    details = re.search(r"details: (stop-tui show .*)$", capped.stdout.strip())
    assert details and f"--sessions-dir {sessions_dir}" in details.group(1), capped.stdout
    shown = stop_tui(*shlex.split(details.group(1))[1:])
    assert shown.returncode == 0 and "(finished)" in shown.stdout, shown.stderr


def test_the_default_folder_is_left_out_and_odd_paths_are_quoted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STOP_TUI_SESSIONS", raising=False)
    assert cli_name(tmp_path / "sessions" / "S1") == "S1"
    assert cli_name(tmp_path / "my sessions" / "S1") == f"S1 --sessions-dir '{tmp_path}/my sessions'"
    monkeypatch.setenv("STOP_TUI_SESSIONS", str(tmp_path / "my sessions"))
    assert cli_name(tmp_path / "my sessions" / "S1") == "S1"
