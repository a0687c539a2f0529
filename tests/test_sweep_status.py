"""What a reader shows of a sweep (engine/sweep/status.py), on real sessions run on the scripted
LM server and placed in the sweep layout: each run's state, iteration, best û and spend, the
totals, and a repeated read that sees what the runs append (and reads nothing else)."""

from __future__ import annotations

import pytest
from sweep_helpers import append, make_sources, new_sweep, place

from stop_tui.engine import events as ev
from stop_tui.engine.lock import acquire
from stop_tui.engine.sweep.layout import RunKey
from stop_tui.engine.sweep.status import (
    INTERRUPTED,
    STATES,
    RunStatus,
    StatusReader,
    by_model,
    states_line,
    sweep_state,
    sweep_status,
    totals,
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return make_sources(tmp_path_factory.mktemp("sources"))


def test_each_state_is_told_apart_from_the_run_folders(sources, tmp_path):
    sweep = new_sweep(tmp_path, seeds=(0, 1, 2))
    keys = sweep.spec.runs()  # seed-major: (s0 scripted, s0 other, s1 scripted, s1 other, ...)
    place(sources.finished, sweep, keys[0])
    place(sources.capped, sweep, keys[1])
    failed = place(sources.capped, sweep, keys[2])
    append(failed, ev.Resumed(iteration=1), ev.Error(message="the run's own code failed: boom"))
    running = place(sources.capped, sweep, keys[3])
    interrupted = place(sources.capped, sweep, keys[4])
    append(interrupted, ev.Resumed(iteration=1))  # resumed, then killed: no PAUSED, no lock
    # keys[5]: no folder at all

    with acquire(running):
        runs = sweep_status(sweep)
        assert [r.key for r in runs] == keys
        assert [r.state for r in runs] == ["finished", "capped", "failed", "running", "paused", "pending"]
        assert runs[3].holder["pid"] > 0 and runs[3].reason is None
    assert sweep_status(sweep)[3].state == "capped"  # the lock released: what its log says

    done, capped = runs[0], runs[1]
    s = sources.finished_summary
    assert (done.iteration, done.iterations, done.best) == (1, 1, s["best_meta_utility"])
    assert done.calls == s["lm"]["calls"] > 0
    assert done.tokens == s["lm"]["prompt_tokens"] + s["lm"]["completion_tokens"]
    assert done.cost_usd is None and done.reason is None and done.transfer is None
    assert capped.iteration == 0 and capped.best == sources.capped_summary["seed_meta_utility"]
    assert "--max-calls" in capped.reason
    assert runs[2].reason == "the run's own code failed: boom"
    assert runs[4].reason == INTERRUPTED
    assert (runs[5].iteration, runs[5].iterations, runs[5].best, runs[5].calls) == (0, 1, None, 0)

    t = totals(runs)
    assert t["runs"] == 6 and all(t[state] == 1 for state in STATES)
    assert t["calls"] == sum(r.calls for r in runs) and t["tokens"] == sum(r.tokens for r in runs)
    assert states_line(t) == "1 finished, 1 failed, 1 capped, 1 paused, 1 running, 1 pending"


def test_a_failed_run_that_resumed_is_no_longer_failed(sources, tmp_path):
    sweep = new_sweep(tmp_path, models=("scripted",), seeds=(0,))
    folder = place(sources.capped, sweep, sweep.spec.runs()[0])
    append(folder, ev.Error(message="boom"))
    assert sweep_status(sweep)[0].state == "failed"
    append(folder, ev.Resumed(iteration=1), ev.Paused(reason="stopped by the user; resume to continue"))
    run = sweep_status(sweep)[0]
    assert (run.state, run.reason) == ("paused", "stopped by the user; resume to continue")


def test_transfers_are_reported_with_their_runs(sources, tmp_path):
    sweep = new_sweep(tmp_path, models=("scripted",), seeds=(0, 1), transfer=("grid",))
    first, second = sweep.spec.runs()
    place(sources.finished, sweep, first)
    place(sources.finished, sweep, first, transfer=True)
    place(sources.finished, sweep, second)
    runs = sweep_status(sweep)
    assert [(r.state, r.transfer) for r in runs] == [("finished", "finished"), ("finished", "pending")]
    assert runs[0].transfer_calls == runs[0].calls
    t = totals(runs)
    assert t["calls"] == 3 * runs[0].calls and t["transfers"] == {"finished": 1, "pending": 1}


def test_a_repeated_read_sees_new_events_and_equals_a_fresh_one(sources, tmp_path):
    sweep = new_sweep(tmp_path, models=("scripted",), seeds=(0, 1))
    first, second = sweep.spec.runs()
    reader = StatusReader(sweep)
    assert [r.state for r in reader.status()] == ["pending", "pending"]
    folder = place(sources.capped, sweep, first)
    assert reader.status()[0].state == "capped"
    append(folder, ev.Resumed(iteration=1))
    with acquire(folder):
        assert reader.status()[0].state == "running"
    assert reader.status()[0].reason == INTERRUPTED
    append(folder, ev.Paused(reason="the LM call cap is reached", cap="--max-calls"))
    place(sources.finished, sweep, second)
    again = reader.status()
    assert [(r.state, r.reason) for r in again] == [("capped", "the LM call cap is reached"), ("finished", None)]
    assert again == sweep_status(sweep)


def test_an_unreadable_session_is_a_failed_run_not_an_error(tmp_path):
    sweep = new_sweep(tmp_path, models=("scripted",), seeds=(0,))
    folder = sweep.run_folder(sweep.spec.runs()[0])
    folder.mkdir()
    (folder / "session.db").write_bytes(b"not a database at all" * 100)
    run = sweep_status(sweep)[0]
    assert run.state == "failed" and run.reason.startswith("unreadable: ")


def test_the_sweep_state_in_one_word():
    def state(transfers=None, **counts):
        return sweep_state({"runs": sum(counts.values()), **counts, "transfers": transfers or {}})

    assert state(finished=3) == "finished"
    assert state(finished=2, transfers={"finished": 1, "pending": 1}) == "paused"  # a transfer to do
    assert state(finished=2, transfers={"running": 1, "finished": 1}) == "running"
    assert state(finished=2, failed=1) == "failed"
    assert state(finished=1, running=1, capped=1) == "running"
    assert state(finished=1, capped=1, pending=1) == "capped"
    assert state(pending=2) == "pending"
    assert state(finished=1, pending=1) == "paused"  # the driver died: `sweep --resume`


def test_a_run_locked_before_its_session_exists_is_running(tmp_path):
    sweep = new_sweep(tmp_path, models=("scripted",), seeds=(0,))
    folder = sweep.run_folder(sweep.spec.runs()[0])
    folder.mkdir()
    with acquire(folder):
        run = sweep_status(sweep)[0]
        assert (run.state, run.iteration, run.calls) == ("running", 0, 0)
    assert sweep_status(sweep)[0].state == "pending"


def test_by_model_counts_the_finished_runs_that_gained(tmp_path):
    def run(model, seed, state, best, seed_best, final):
        key = RunKey("lpn", model, seed)
        return RunStatus(key, tmp_path / key.name, state, 1, 1, best, None, 0, 0, None, None,
                         seed_best=seed_best, final=final)

    # a run's gain is its final improver's over its seed improver's (not its best's)
    runs = [run("a", 0, "finished", 0.60, 0.50, 0.60), run("a", 1, "finished", 0.58, 0.50, 0.52),
            run("a", 2, "finished", 0.53, 0.50, 0.53), run("a", 3, "running", 0.90, 0.50, 0.90),
            run("b", 0, "pending", None, None, None)]
    a, b = by_model(runs)
    assert (a["model"], a["runs"], a["finished"], a["gained"]) == ("a", 4, 3, 2)  # +0.10, +0.03; not +0.02
    assert a["best_mean"] == pytest.approx(0.57) and a["best_ci"][0] < 0.57 < a["best_ci"][1]
    assert a["gain_mean"] == pytest.approx(0.05)
    assert (b["runs"], b["finished"], b["best_mean"], b["gain_mean"], b["gained"]) == (1, 0, None, None, 0)
