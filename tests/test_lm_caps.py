"""Session caps (--max-calls, --max-tokens, --max-cost): the run pauses before a call that
could pass a cap (never mid-record, exit code 3, a PAUSED event saying which cap and how to
go on); raising the cap and resuming finishes exactly like a run that had no cap. The
worst-case projection is shown before a run starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_helpers import events_of, responder, run_args, same_events, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.lm.caps import Caps, projection
from stop_tui.engine.settings import preset


@pytest.fixture(scope="module")
def uncapped(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("uncapped")
    with ScriptedLMServer(responder, honour_n=False, model="gpt-4o-mini") as server:
        proc = stop_tui(*priced_args(server, folder), "--json")
    assert proc.returncode == 0, proc.stderr
    return folder, json.loads(proc.stdout)


def priced_args(server, folder: Path) -> list[str]:
    args = run_args(server, folder)
    args[args.index("scripted")] = "gpt-4o-mini"
    return args


@pytest.mark.parametrize(("option", "value", "raised"), [
    ("--max-calls", "3", "50"),
    ("--max-tokens", "2500", "100000"),
    ("--max-cost", "0.0008", "1"),
])
@pytest.mark.slow
def test_cap_pauses_then_raise_and_resume_finishes_identical(uncapped, tmp_path, option, value, raised):
    with ScriptedLMServer(responder, honour_n=False, model="gpt-4o-mini") as server:
        proc = stop_tui(*priced_args(server, tmp_path), option, value, "--json")
        assert proc.returncode == 3, proc.stderr
        paused = json.loads(proc.stdout)
        assert paused["state"] == "paused"
        assert option in paused["paused_reason"] and "--resume" in paused["paused_reason"]
        assert "paused: " in proc.stderr
        lm = paused["lm"]
        # Hard caps: what was spent stays within the cap.
        if option == "--max-calls":
            assert lm["calls"] == 3
        elif option == "--max-tokens":
            assert 0 < lm["prompt_tokens"] + lm["completion_tokens"] <= 2500
        else:
            assert lm["cost_usd"] <= 0.0008
        assert len(server.requests) == lm["requests"]
        events = events_of(tmp_path, paused["session"])
        stop = [e for e in events if e.kind == ev.PAUSED][-1]
        assert stop.data["cap"] == option
        # Never mid-record: every request has its reply, and no half-run result was written.
        assert sum(e.kind == ev.LM_REQUEST for e in events) == sum(e.kind == ev.LM_REPLY for e in events)
        assert not any(e.kind == ev.RUN_FINISHED and "cancelled" in str(e.data.get("error")) for e in events)

        done = stop_tui("run", "--resume", paused["session"], "--sessions-dir", str(tmp_path),
                        option, raised, "--json")
        assert done.returncode == 0, done.stderr
        sent = len(server.requests)
    finished = json.loads(done.stdout)
    folder, reference = uncapped
    assert finished["state"] == "finished"
    assert finished["meta_utility"] == reference["meta_utility"]
    assert sent == reference["lm"]["requests"]  # nothing was asked twice
    only_ref, only_ours = same_events(folder, reference["session"], tmp_path, finished["session"])
    assert only_ref == only_ours == []


def test_cost_cap_needs_a_known_price(sessions_dir):
    with ScriptedLMServer(responder) as server:
        proc = stop_tui(*run_args(server, sessions_dir), "--max-cost", "1")
    assert proc.returncode == 2
    assert "--max-cost needs a price" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(sessions_dir.iterdir())  # nothing was created


def test_projection_is_shown_before_the_run(sessions_dir):
    with ScriptedLMServer(responder, model="gpt-4o") as server:
        args = run_args(server, sessions_dir)
        args[args.index("scripted")] = "gpt-4o"
        proc = stop_tui(*args, "--max-calls", "1")
    first = proc.stderr.index("worst case")
    assert first < proc.stderr.index("iteration 0 started")
    # quick: iteration 0 = 1 run x 2 calls; iteration 1 = 2 + (5 + 1) x 1 x 2.
    assert "worst case for 1 iteration(s): 16 LM calls, 32 completions" in proc.stderr
    assert "at gpt-4o prices" in proc.stderr and "--max-calls 1" in proc.stderr


def test_projection_of_the_paper_preset():
    p = projection(preset("paper"), 6, meta_prompt_chars=3000, task_prompt_chars=2000,
                   price_key="gpt-4")
    # Iteration 0: 5 runs x 4 calls; each iteration: 4 + (25 + 1) x 5 x 4.
    assert p["calls"] == 20 + 6 * (4 + 26 * 20)
    assert p["completions"] == p["calls"] * 6
    assert p["completion_tokens"] == p["completions"] * 1024
    assert p["cost_usd"] > p["completion_tokens"] * 60 / 1e6
    assert projection(preset("quick"), 1, meta_prompt_chars=1, task_prompt_chars=1,
                      price_key="unknown-model")["cost_usd"] is None


def test_caps_admit_within_and_refuse_past():
    caps = Caps(cost_usd=1.0, tokens=1000, calls=2)
    used = {"calls": 1, "prompt_tokens": 300, "completion_tokens": 300, "cost_usd": 0.5}
    assert caps.refuse(used, {}, {"tokens": 400, "cost_usd": 0.5}) is None
    assert caps.refuse(used, {"calls": 1}, {"tokens": 1, "cost_usd": 0})[0] == "--max-calls"
    assert caps.refuse(used, {"tokens": 1}, {"tokens": 400, "cost_usd": 0})[0] == "--max-tokens"
    assert caps.refuse(used, {}, {"tokens": 1, "cost_usd": 0.51})[0] == "--max-cost"
    assert not Caps()


def test_call_cap_holds_under_concurrent_runs(sessions_dir):
    """Three improver runs ask at once; a cap of 2 calls lets exactly 2 through."""
    from lm_helpers import IMPROVER

    from stop_tui.engine.errors import Cancelled
    from stop_tui.engine.lm.openai_backend import OpenAIBackend
    from stop_tui.engine.session import new_session, session_settings

    with ScriptedLMServer(responder, latency=0.3) as server:
        settings = session_settings("quick", meta_runs=3, cap_calls=2)
        session = new_session(sessions_dir, "lpn", settings, OpenAIBackend("scripted", server.base_url))
        with pytest.raises(Cancelled):
            session.engine.meta_score(IMPROVER, "probe", with_test=False)
        assert session.engine.lm.drain(timeout=30)  # the two admitted calls get recorded
        stop = session.engine.lm.stop
        usage = session.engine.lm.usage
        session.close()
        sent = len(server.requests)
    assert stop is not None and stop.option == "--max-calls"
    assert usage.calls == 2 and sent == 2
