"""The one reader of the log (engine/history.py) on real sessions (a scripted LM server, the real
CLI): the improver held after each iteration, accepted and rejected; a session paused by a cap
mid-iteration and resumed (its partial iteration superseded) reads like one that ran through;
its meta-utility series is what `show --json` reports; and `describe`, the one text for an
event, as the headless printer and the TUI log show it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from lm_helpers import IMPROVER, events_of, fenced, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.history import History, describe, level
from stop_tui.engine.store import SessionStore
from stop_tui.progress import PlainPrinter

GEN1 = f"{IMPROVER}\n# gen 1\n"
BROKEN = "def improve_algorithm(initial_solution, utility, language_model):\n    return ''\n"


def responder(body: dict, i: int) -> str:
    """Iteration 1 gets an improver that works (accepted), iteration 2 one whose solutions are
    empty (scores 0: rejected); downstream, constant LPN predictions."""
    user = body["messages"][-1]["content"]
    if "def improve_algorithm" in user:
        return fenced(BROKEN if "# gen 1" in user else GEN1)
    seed = int(body.get("seed", 0)) + i
    return fenced("import numpy as np\n\n\ndef algorithm(train_samples, train_parity, test_samples):\n"
                  f"    return np.zeros(len(test_samples), dtype=int) + {seed % 2}\n")


def run(server, folder: Path, *extra: str) -> tuple[dict, str]:
    proc = stop_tui("run", "--task", "lpn", "--model", "scripted", "--base-url", server.base_url,
                    "--preset", "quick", "--iterations", "2", "--acceptance", "paper",
                    "--sessions-dir", str(folder), "--json", *extra)
    assert proc.returncode in (0, 3), proc.stderr
    return json.loads(proc.stdout), proc.stderr


def history_of(folder: Path, session: str) -> History:
    store = SessionStore.open(folder, session, readonly=True)
    try:
        return History.read(store)
    finally:
        store.close()


def text_of(folder: Path, session: str, digest: str | None) -> str | None:
    store = SessionStore.open(folder, session, readonly=True)
    try:
        return store.text(digest) if digest else None
    finally:
        store.close()


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> dict:
    """An uninterrupted session and the same one paused by --max-calls inside iteration 1, then
    resumed with the cap raised."""
    through = tmp_path_factory.mktemp("through")
    capped = tmp_path_factory.mktemp("capped")
    with ScriptedLMServer(responder) as server:
        reference, progress = run(server, through)
        replies = [e for e in events_of(through, reference["session"]) if e.kind == ev.LM_REPLY]
        seed_calls = sum(1 for e in replies if e.path.startswith("it0/"))
        paused, _ = run(server, capped, "--max-calls", str(seed_calls + 2))
        proc = stop_tui("run", "--resume", paused["session"], "--sessions-dir", str(capped),
                        "--max-calls", "1000", "--json")
        assert proc.returncode == 0, proc.stderr
    return {"reference": (through, reference, progress), "paused": paused,
            "resumed": (capped, json.loads(proc.stdout))}


def test_the_improver_held_after_each_iteration(sessions):
    folder, summary, _ = sessions["reference"]
    history = history_of(folder, summary["session"])
    assert [(row.iteration, row.accepted) for row in history.iterations] == [(0, True), (1, True), (2, False)]
    assert history.iterations[2].reason == "the new improver scored 0"
    assert text_of(folder, summary["session"], history.held_improver(0)) == IMPROVER
    assert text_of(folder, summary["session"], history.held_improver(1)).endswith("# gen 1")
    # Iteration 2 was rejected: the improver of iteration 1 is still held.
    assert history.held_improver(2) == history.held_improver(1) == history.held_improver()
    assert history.held_improver(3) is None
    assert history.iterations_done == 2 and history.seed_scored and history.state == "finished"
    # The held improver's meta-utility does not move on a rejection.
    assert history.meta_utility[1] == history.meta_utility[0] == history.iterations[1].candidate_val
    assert history.iterations[2].candidate_val == 0.0


def test_the_series_are_the_summarys(sessions):
    for folder, summary in (sessions["reference"][:2], sessions["resumed"]):
        history = history_of(folder, summary["session"])
        assert history.meta_utility == summary["meta_utility"]
        assert history.meta_utility_test == summary["meta_utility_test"]
        assert history.seed_meta_utility == summary["seed_meta_utility"]
        assert history.best_meta_utility == summary["best_meta_utility"]
        assert history.lm_totals == {k: summary["lm"][k] for k in history.lm_totals}
        assert history.best.val == summary["best_meta_utility"]


def test_a_resumed_session_reads_like_one_that_ran_through(sessions):
    paused = sessions["paused"]
    assert paused["state"] == "paused" and paused["iterations_completed"] == 0
    folder, resumed = sessions["resumed"]
    ref_folder, reference, _ = sessions["reference"]
    history = history_of(folder, resumed["session"])
    assert history.superseded and history.resumes == 1
    events = events_of(folder, resumed["session"])
    assert any(e.path.startswith("it1/") and lo <= e.seq < hi
               for e in events for lo, hi in history.superseded)
    ref = history_of(ref_folder, reference["session"])
    assert history.iterations == ref.iterations  # the same verdicts, scores and held improvers
    assert history.lm_totals["calls"] == ref.lm_totals["calls"]
    assert history.lm_by_iteration == ref.lm_by_iteration
    assert sorted(history.candidate_scores) == sorted(ref.candidate_scores)
    assert history.candidates_scored == ref.candidates_scored
    assert history.state == "finished" and history.paused_reason is None


def test_folding_event_by_event_equals_reading_the_log(sessions):
    """A live reader adds events as they come, the superseded ones before the RESUMED that
    supersedes them: it ends where a reader of the finished log starts."""
    folder, resumed = sessions["resumed"]
    events = events_of(folder, resumed["session"])
    live = History()
    for event in events:
        live.add(event)
        live.add(event)  # seen twice (a follower's overlap): counted once
    read = History(events)
    for name in ("iterations", "superseded", "lm_totals", "state", "paused_reason", "resumes",
                 "candidates_scored", "candidates_failed", "peak_concurrency", "meta_utility",
                 "lm_by_iteration", "candidate_scores"):
        assert getattr(live, name) == getattr(read, name), name
    # Until the RESUMED came, the partial iteration's calls counted (then they were taken out).
    before = History(events[:next(i for i, e in enumerate(events) if e.kind == ev.RESUMED)])
    assert before.lm_by_iteration[1]["calls"] > 0 and not before.superseded
    assert before.lm_totals["calls"] > read.lm_by_iteration[0]["calls"]
    # Halfway through the paused run, it said paused; the PAUSED reason is the cap's.
    upto = next(i for i, e in enumerate(events) if e.kind == ev.PAUSED)
    half = History(events[:upto + 1])
    assert half.state == "paused" and "--max-calls" in half.paused_reason
    assert half.iterations_done == 0 and half.seed_scored and not half.superseded


def test_the_headless_printer_shows_the_sessions_lines(sessions):
    folder, summary, progress = sessions["reference"]
    lines = progress.splitlines()
    assert "iteration 0 started (scoring the seed improver)" in lines
    val, test = summary["seed_meta_utility"], summary["seed_meta_utility_test"]
    assert f"iteration 0: accepted, meta-utility val {val:.4f} test {test:.4f}" in lines
    assert "iteration 2: kept the previous improver (the new improver scored 0)" in lines
    assert "session finished after 2 iteration(s)" in lines
    assert any(line.startswith("it1/c1: candidate improver scored ") for line in lines)
    assert any(line.startswith("it0/check/r1/lm1: LM reply: ") for line in lines)
    # The stored log, printed again, gives the lines `run` printed as it went, in order.
    stream = io.StringIO()
    printer = PlainPrinter(stream)
    for e in events_of(folder, summary["session"]):
        printer(e)
    printer.close()
    printed = stream.getvalue().splitlines()
    assert printed[0] == "session started: lpn on scripted"  # logged before `run` listens
    rest = iter(lines)
    assert all(line in rest for line in printed[1:]), (printed, lines)  # a subsequence


H = "0123456789abcdef"  # a text hash
E80 = "E" * 80


def reply(error: str | None = None, **tokens) -> ev.LMReply:
    return ev.LMReply(use=1, replies=[H], requests=1, latency=1.25 if error is None else 0.5, cost_usd=None,
                      error=error, **{"prompt_tokens": 10, "completion_tokens": 20, **tokens})


# (payload, path, terminal line or None, TUI log text, level)
TEXTS = [
    (ev.SessionStarted(task="lpn", model="m", settings={}), "",
     "session started: lpn on m", "session started: lpn on m", "info"),
    (ev.IterationStarted(iteration=0, improver=H), "it0",
     "iteration 0 started (scoring the seed improver)", "iteration 0 started (scoring the seed improver)", "info"),
    (ev.IterationStarted(iteration=3, improver=H), "it3", "iteration 3 started", "iteration 3 started", "info"),
    (ev.IterationAccepted(iteration=1, improver=H, val=0.5, test=0.25, rule="paper"), "it1",
     "iteration 1: accepted, meta-utility val 0.5000 test 0.2500",
     "iteration 1: accepted, meta-utility val 0.5000 test 0.2500", "good"),
    (ev.IterationRejected(iteration=2, kept=H, reason="the new improver scored 0", val=0.0, test=0.0), "it2",
     "iteration 2: kept the previous improver (the new improver scored 0)",
     "iteration 2: kept the previous improver (the new improver scored 0)", "warn"),
    (ev.CandidateProposed(role="candidate", source=None, parent=H), "it1/c1",
     None, "candidate improver proposed (no program)", "info"),
    (ev.CandidateScored(role="candidate", score=0.0, error="E" * 100, failed_runs=1), "it1/c1",
     f"it1/c1: candidate improver scored 0.0000 ({E80})", f"candidate improver scored 0.0000 ({E80})", "bad"),
    (ev.CandidateScored(role="check", score=0.75, test=0.5), "it1/check",
     "it1/check: check improver scored 0.7500, test 0.5000", "check improver scored 0.7500, test 0.5000", "info"),
    (ev.RunStarted(improver=H), "it1/c1/r1", None, "improver run started", "dim"),
    (ev.RunFinished(solution=H, val=0.5, error=None, seconds=1.0), "it1/c1/r1",
     None, "improver run finished: val 0.5000", "dim"),
    (ev.RunFinished(solution=None, val=0.0, error="Exception: no", seconds=1.0), "it1/c1/r1",
     "it1/c1/r1: improver run failed: Exception: no", "improver run failed: Exception: no", "bad"),
    (ev.ScoringCancelled(reason="cancelled: the improver run that asked for this scoring ended"), "it1/c2",
     "it1/c2: cancelled: the improver run that asked for this scoring ended",
     "cancelled: the improver run that asked for this scoring ended", "dim"),
    (ev.SolutionScored(source=H, split="val", score=0.5, seconds=0.1), "it1/c1/r1/s1",
     None, "solution val 0.5000", "dim"),
    (ev.LMRequest(use=1, system=H, prompts=[H, H], n=2, temperature=0.7, max_tokens=512), "it1/lm1",
     None, "LM call: 2 prompt(s), T=0.7", "dim"),
    (reply(), "it1/lm1",
     "it1/lm1: LM reply: 10 in / 20 out tokens, 1.2 s", "LM reply: 10 in / 20 out tokens, 1.2 s", "dim"),
    (reply("HTTP 500", prompt_tokens=0, completion_tokens=0), "it1/lm1",
     "it1/lm1: LM reply: 0 in / 0 out tokens, 0.5 s (HTTP 500)", "LM reply: 0 in / 0 out tokens, 0.5 s (HTTP 500)",
     "bad"),
    (ev.LMRetry(use=1, group=0, offset=0, attempt=1, status=429, error="HTTP 429", wait=2.0), "it1/lm1",
     "it1/lm1: LM request failed (HTTP 429), retry in 2.0 s", "LM request failed (HTTP 429), retry in 2.0 s",
     "warn"),
    (ev.LMPart(use=1, group=0, offset=0, seed=1, replies=[H], finish_reasons=["stop"], prompt_tokens=1,
               completion_tokens=1, requests=1, latency=0.1), "it1/lm1", None, None, "dim"),
    (ev.Budget(calls=1, requests=1, completions=1, prompt_tokens=1, completion_tokens=1, cost_usd=None),
     "it1/lm1", None, None, "dim"),
    (ev.LMChanged(from_={"model": "a", "base_url": "http://x/v1"}, to={"model": "b", "base_url": None}), "",
     "LM changed: a at http://x/v1 -> b", "LM changed: a at http://x/v1 -> b", "info"),
    (ev.Sandbox(mode="bwrap", protections={"seccomp": True, "user_namespace": False}, missing=["user_namespace"]),
     "", None, "sandbox: seccomp; MISSING: user_namespace", "warn"),
    (ev.Flag(kind="subprocess", detail="uses os.system", line=3, role="improver"), "it1/c1",
     None, "FLAG subprocess line 3: uses os.system", "warn"),
    (ev.Resumed(iteration=2, superseded_from=40, recorded_calls=3), "",
     "resumed: re-running iteration 2, 3 LM call(s) answered from the record",
     "resumed: re-running iteration 2, 3 LM call(s) answered from the record", "info"),
    (ev.Resumed(iteration=3, superseded_from=None, recorded_calls=0), "",
     "resumed at iteration 3", "resumed at iteration 3", "info"),
    (ev.Resumed(kind="transfer"), "", "resumed", "resumed", "info"),
    (ev.Paused(reason="stopped by the user; resume to continue"), "",
     "paused: stopped by the user; resume to continue", "paused: stopped by the user; resume to continue", "warn"),
    (ev.SessionFinished(iterations_completed=2, reason="done"), "",
     "session finished after 2 iteration(s)", "session finished after 2 iteration(s)", "good"),
    (ev.Error(message="boom"), "", "error: boom", "error: boom", "bad"),
    (ev.TransferStarted(task="grid", who="improver", run=1), "grid/improver/n1",
     None, "grid: improver run 1 started", "dim"),
    (ev.TransferScored(task="grid", who="improver", run=1, val=0.5, test=0.25), "grid/improver/n1",
     None, "grid: improver run 1 scored test 0.2500, val 0.5000", "dim"),
    (ev.TransferFinished(rows=[{"task": "grid"}]), "", None, "transfer finished: 1 task(s)", "dim"),
]


@pytest.mark.parametrize(("payload", "path", "line", "log", "how"), TEXTS,
                         ids=[f"{t[0].KIND}-{i}" for i, t in enumerate(TEXTS)])
def test_describe_each_kind(payload, path, line, log, how):
    e = ev.event(payload, path)
    assert ev.validate(e) == []
    assert describe(e) == line
    assert describe(e, log=True) == log
    assert level(e) == how


def test_every_event_kind_has_a_text():
    assert set(ev.SCHEMAS) == {payload.KIND for payload, *_ in TEXTS}
    unknown = ev.Event("from_a_newer_version", "it1", {})
    assert describe(unknown) is None and describe(unknown, log=True) == "from a newer version"
