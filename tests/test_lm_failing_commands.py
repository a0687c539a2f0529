"""`transfer` and `baseline` pause like `run` when the LM service stops them (a server that
fails, a session cap): exit 3 and one `stop-tui: paused: ...` line saying what the server did
(or which cap) and the command that continues, which works when pasted as printed."""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import PROGRAMS, stop_tui
from lm_helpers import events_of, responder
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.lm.openai_backend import OpenAIBackend
from stop_tui.engine.session import new_session, session_settings

pytestmark = pytest.mark.timeout(300)

FIRST = PROGRAMS / "improver_first.py"  # asks once, returns the first program it gets


def paused_line(proc) -> str:
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if "paused:" in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("stop-tui: paused: "), lines[0]
    return lines[0]


def pasted(line: str, marker: str, *extra: str) -> list[str]:
    """The command the line gives after `marker` (up to its parenthesis), as a shell reads it,
    without the leading `stop-tui`."""
    command = line.split(marker, 1)[1].split(" (", 1)[0]
    words = shlex.split(command)
    assert words[0] == "stop-tui", command
    return words[1:] + list(extra)


def last_paused(sessions_dir, session: str):
    events = events_of(sessions_dir, session)
    assert events[-1].kind == ev.PAUSED, [e.kind for e in events[-3:]]
    return events, events[-1].data


def test_transfer_on_a_broken_server_pauses_and_the_printed_resume_finishes(sessions_dir):
    with ScriptedLMServer(responder, broken="html") as bad:
        proc = stop_tui("transfer", "--improver", str(FIRST), "--tasks", "parity", "--model", "scripted",
                        "--base-url", bad.base_url, "--preset", "quick", "--sessions-dir", str(sessions_dir))
    line = paused_line(proc)
    [folder] = list(sessions_dir.iterdir())
    assert f"the LM server at {bad.base_url} (model scripted) gave no valid reply: malformed reply" in line
    assert "nothing was scored from it" in line
    assert f"resume: stop-tui transfer --resume {folder.name} --sessions-dir {sessions_dir} " \
           "(add --base-url URL to use another)" in line, line
    events, data = last_paused(sessions_dir, folder.name)
    assert data["lm_failed"] is True
    # The seed solution needs no LM: it was measured; nothing was scored from the server.
    assert [e.data["who"] for e in events if e.kind == ev.TRANSFER_SCORED] == ["seed_solution"]
    assert not [e for e in events if e.kind in (ev.RUN_FINISHED, ev.CANDIDATE_SCORED)]

    with ScriptedLMServer(responder) as good:
        done = stop_tui(*pasted(line, "resume: ", "--base-url", good.base_url, "--json"))
        asked = len(good.requests)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)["rows"][0]
    assert row["task"] == "parity" and row["seed_improver"]["n"] == 1 and row["improver"]["n"] == 1
    assert asked >= 1 and "paused" not in done.stderr
    assert events_of(sessions_dir, folder.name)[-1].kind == ev.SESSION_FINISHED


@pytest.mark.slow
def test_baseline_on_a_failing_server_pauses_and_the_printed_command_runs_it(sessions_dir):
    with ScriptedLMServer(responder, broken="500") as bad:
        proc = stop_tui("baseline", "--task", "lpn", "--method", "cot", "--model", "scripted",
                        "--base-url", bad.base_url, "--preset", "quick", "--sessions-dir", str(sessions_dir))
    line = paused_line(proc)
    [folder] = list(sessions_dir.iterdir())
    assert f"the LM server at {bad.base_url} (model scripted) gave no valid reply" in line and "500" in line
    assert "nothing was scored from it" in line
    assert (f"resume: stop-tui baseline --method cot --task lpn --model scripted --base-url {bad.base_url} "
            f"--preset quick --sessions-dir {sessions_dir} (change --base-url URL / --model NAME to use "
            "another)") in line, line
    assert proc.stdout == ""  # no result was printed
    assert not list(folder.glob("baselines/*.json"))  # nor written
    events, data = last_paused(sessions_dir, folder.name)
    assert data["lm_failed"] is True
    assert not [e for e in events if e.kind in (ev.RUN_FINISHED, ev.CANDIDATE_SCORED)]

    with ScriptedLMServer(responder) as good:
        done = stop_tui(*pasted(line, "resume: ", "--base-url", good.base_url, "--json"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["method"] == "cot" and result["runs"] == 1 and not result["errors"]


def test_a_sessions_cap_pauses_its_baseline_and_the_raised_cap_runs_it(sessions_dir):
    with ScriptedLMServer(responder) as server:
        session = new_session(sessions_dir, "lpn", session_settings("quick", cap_calls=1),
                              OpenAIBackend("scripted", server.base_url), base_url=server.base_url)
        session.close()
        proc = stop_tui("baseline", "--method", "best-of-n", "--session", session.id,
                        "--sessions-dir", str(sessions_dir))
        line = paused_line(proc)
        assert "the LM call cap is reached" in line and "--max-calls" in line
        assert (f"Raise it and resume: stop-tui baseline --method best-of-n --session {session.id} "
                f"--sessions-dir {sessions_dir} --max-calls <higher>") in line, line
        asked = len(server.requests)
        assert asked == 1  # the cap's one call; the second was refused before it was sent
        [log] = list((sessions_dir / session.id / "baselines").iterdir())
        _, data = last_paused(log.parent, log.name)
        assert data["cap"] == "--max-calls"

        done = stop_tui(*[w.replace("<higher>", "4") for w in pasted(line, "resume: ", "--json")])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["method"] == "best-of-n" and result["runs"] == 1 and not result["errors"]
    assert (sessions_dir / session.id / "baselines" / "best-of-n-2.json").exists()
