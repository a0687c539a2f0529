"""`replay --check` compares what is deterministic strictly and the running BUDGET snapshots by
their final totals: a faithful replay of the paper preset (5 improver runs in parallel) passes,
a real difference still fails."""

from __future__ import annotations

import json
import sqlite3

import pytest
from lm_helpers import responder, run_args, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev


def paper_run(server, folder):
    args = run_args(server, folder, "--json", "--quiet")
    args[args.index("quick")] = "paper"
    args[args.index("--iterations") + 1] = "0"  # iteration 0: the seed improver's 5 runs at once
    return stop_tui(*args)


@pytest.mark.slow
def test_a_faithful_replay_of_parallel_runs_passes_and_a_real_difference_fails(tmp_path):
    with ScriptedLMServer(responder, honour_n=False, latency=0.05) as server:
        done = paper_run(server, tmp_path)
        peak = server.max_inflight
    assert done.returncode == 0, done.stderr
    original = json.loads(done.stdout)
    assert original["preset"] == "paper" and peak > 1  # calls really were in flight together
    replay = stop_tui("replay", original["session"], "--sessions-dir", str(tmp_path), "--check", "--quiet")
    assert replay.returncode == 0, replay.stderr
    assert replay.stderr.strip().endswith("0 difference(s)"), replay.stderr

    # A real difference: the original's record says one run scored otherwise than it does.
    con = sqlite3.connect(tmp_path / original["session"] / "session.db")
    seq, data = con.execute("SELECT seq, data FROM events WHERE kind = ? ORDER BY seq LIMIT 1",
                            (ev.RUN_FINISHED,)).fetchone()
    changed = {**json.loads(data), "val": 0.123456}
    con.execute("UPDATE events SET data = ? WHERE seq = ?", (json.dumps(changed), seq))
    con.commit()
    con.close()
    again = stop_tui("replay", original["session"], "--sessions-dir", str(tmp_path), "--check", "--quiet")
    assert again.returncode == 1, again.stderr
    assert "missing run_finished" in again.stderr or "missing" in again.stderr
    assert again.stderr.strip().endswith("2 difference(s)"), again.stderr
