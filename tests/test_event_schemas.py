"""Every stored event matches its kind's schema (engine/events.py): the events of real sessions
(scripted LM server: quick and paper presets, a cap that pauses, a resume on another model, a
transfer, a baseline), of the synthetic sessions that feed the TUI tests, and an old session
that lacks keys added since still opens and decodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_helpers import responder, run_args, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.safety import KINDS as FLAG_KINDS
from stop_tui.engine.sandbox.protections import DESCRIPTIONS as PROTECTIONS
from stop_tui.engine.settings import preset
from stop_tui.engine.store import SessionStore
from stop_tui.tui.synthetic import write_session

FIRST = Path(__file__).resolve().parent / "programs" / "improver_first.py"
SOLUTION_HEAD = "def algorithm(train_samples, train_parity, test_samples):\n"


def flagged(body: dict, i: int) -> str:
    """lm_helpers' replies, with downstream solutions that the safety checker flags
    (`globals()`: utility_internals) and that still run."""
    return responder(body, i).replace(SOLUTION_HEAD, SOLUTION_HEAD + "    names = globals()\n")


def read_all(folder: Path) -> list[tuple[str, ev.Event]]:
    """(session folder name, event) for every session under `folder`, baselines included."""
    out = []
    for db in sorted(folder.rglob("session.db")):
        store = SessionStore(db.parent, readonly=True)
        try:
            out += [(db.parent.name, e) for e in store.events()]
        finally:
            store.close()
    return out


def assert_valid(events: list[tuple[str, ev.Event]]) -> set[str]:
    unknown = {e.kind for _, e in events} - set(ev.SCHEMAS)
    assert not unknown, f"kinds without a schema: {sorted(unknown)}"
    problems = [f"{name} #{e.seq} {e.path}: {p}" for name, e in events for p in ev.validate(e)]
    assert problems == [], problems[:10]
    for _, e in events:  # every payload decodes and encodes back to what is stored
        assert e.payload.to_data() == e.data, (e.kind, e.data)
    return {e.kind for _, e in events}


# -- real sessions --------------------------------------------------------------------------

@pytest.mark.slow
def test_real_sessions_match_their_schemas(tmp_path):
    with ScriptedLMServer(flagged, honour_n=False, fail_rate=0.2, fail_seed=2, any_model=True) as server:
        capped = stop_tui(*run_args(server, tmp_path, "--max-calls", "2", "--json"))
        assert capped.returncode == 3, capped.stderr  # paused by the cap
        session = json.loads(capped.stdout)["session"]
        resumed = stop_tui("run", "--resume", session, "--sessions-dir", str(tmp_path),
                           "--max-calls", "50", "--model", "scripted-2", "--json")
        assert resumed.returncode == 0, resumed.stderr
        transfer = stop_tui("transfer", "--model", "scripted", "--base-url", server.base_url,
                            "--preset", "quick", "--improver", str(FIRST), "--tasks", "parity",
                            "--sessions-dir", str(tmp_path), "--json", "--quiet")
        assert transfer.returncode == 0, transfer.stderr
        base = stop_tui("baseline", "--task", "lpn", "--method", "cot", "--model", "scripted",
                        "--base-url", server.base_url, "--preset", "quick",
                        "--sessions-dir", str(tmp_path), "--json", "--quiet")
        assert base.returncode == 0, base.stderr
    with ScriptedLMServer(responder, honour_n=True) as server:
        args = run_args(server, tmp_path, "--json", "--quiet")
        args[args.index("quick")] = "paper"
        args[args.index("--iterations") + 1] = "0"  # the seed improver's 5 runs at once
        paper = stop_tui(*args)
        assert paper.returncode == 0, paper.stderr
    kinds = assert_valid(read_all(tmp_path))
    assert {ev.SESSION_STARTED, ev.SANDBOX, ev.ITERATION_STARTED, ev.ITERATION_ACCEPTED,
            ev.CANDIDATE_PROPOSED, ev.CANDIDATE_SCORED, ev.RUN_STARTED, ev.RUN_FINISHED,
            ev.SOLUTION_SCORED, ev.LM_REQUEST, ev.LM_PART, ev.LM_REPLY, ev.LM_RETRY, ev.BUDGET,
            ev.FLAG, ev.PAUSED, ev.RESUMED, ev.LM_CHANGED, ev.SESSION_FINISHED,
            ev.TRANSFER_STARTED, ev.TRANSFER_SCORED, ev.TRANSFER_FINISHED} <= kinds


def test_a_quick_session_matches_its_schemas(sessions_dir):
    """The cheap one, in the default run: iteration 0 of the quick preset."""
    with ScriptedLMServer(flagged) as server:
        args = run_args(server, sessions_dir, "--json", "--quiet")
        args[args.index("--iterations") + 1] = "0"
        done = stop_tui(*args)
    assert done.returncode == 0, done.stderr
    kinds = assert_valid(read_all(sessions_dir))
    assert {ev.LM_REQUEST, ev.LM_PART, ev.LM_REPLY, ev.BUDGET, ev.FLAG, ev.SOLUTION_SCORED,
            ev.SESSION_FINISHED} <= kinds


# -- synthetic sessions ---------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    {"iterations": 2, "planned": 3, "sandbox_missing": ("no_network",)},
    {"iterations": 1, "finished": True, "runs": 2, "lm_calls_per_run": 2},
    {"iterations": 1, "model": "some-unpriced-model", "priced": False, "flag": False},
    {"iterations": 0, "planned": 2, "seed_scored": False},
])
def test_synthetic_sessions_match_their_schemas_and_the_engine(tmp_path, options):
    store = write_session(tmp_path, "demo", **options)
    events = list(store.events())
    store.close()
    assert_valid([("demo", e) for e in events])
    for e in events:
        if e.kind == ev.SANDBOX:  # the names the sandbox reports, no others
            assert set(e.payload.protections) == set(PROTECTIONS)
            assert e.payload.missing == [k for k, on in e.payload.protections.items() if not on]
        elif e.kind == ev.FLAG:
            assert e.payload.kind in FLAG_KINDS
    # An LM call is told as the service tells it: its parts add up to its reply.
    parts: dict[str, list[ev.LMPart]] = {}
    for e in events:
        if e.kind == ev.LM_PART:
            parts.setdefault(e.path, []).append(e.payload)
    for e in events:
        if e.kind == ev.LM_REPLY:
            reply, mine = e.payload, parts[e.path]
            assert sum(len(p.replies) for p in mine) == len(reply.replies)
            assert sum(p.requests for p in mine) == reply.requests
            assert sum(p.requests - 1 for p in mine) == reply.retries
            assert sum(p.prompt_tokens for p in mine) == reply.prompt_tokens
            assert reply.concurrency >= 1
    if options.get("seed_scored", True):
        assert parts and any(e.kind == ev.LM_RETRY for e in events)


def test_a_synthetic_session_refuses_a_protection_the_sandbox_does_not_have(tmp_path):
    with pytest.raises(ValueError, match="network_namespace"):
        write_session(tmp_path, "demo", iterations=0, sandbox_missing=("network_namespace",))


# -- old sessions ---------------------------------------------------------------------------

def test_an_old_session_lacking_newer_keys_opens_and_decodes(sessions_dir):
    store = SessionStore.create(sessions_dir, {"task": "lpn", "model": "scripted",
                                               "settings": preset("quick").to_dict()}, name="old")
    text = store.put_text("print('hi')")
    call = "it0/check/r1/lm1"
    rows = [  # the shapes an early version wrote (no retries, failed, concurrency, distinct...)
        ev.Event(ev.SESSION_STARTED, "", {"task": "lpn", "model": "scripted",
                                          "settings": preset("quick").to_dict(), "resumed": False}),
        ev.Event(ev.SANDBOX, "", {"protections": {"bubblewrap": True}}),
        ev.Event(ev.ITERATION_STARTED, "it0", {"iteration": 0, "improver": text}),
        ev.Event(ev.LM_REQUEST, call, {"use": 1, "system": text, "prompts": [text], "temperature": 0.7,
                                       "n": 1, "max_tokens": 512}),
        ev.Event(ev.LM_REPLY, call, {"use": 1, "replies": [text], "prompt_tokens": 3, "completion_tokens": 4,
                                     "requests": 1, "latency": 0.5, "cost_usd": None}),
        ev.Event(ev.BUDGET, call, {"calls": 1, "requests": 1, "completions": 1, "prompt_tokens": 3,
                                   "completion_tokens": 4, "cost_usd": None}),
        ev.Event(ev.RUN_FINISHED, "it0/check/r1", {"solution": None, "error": "boom", "seconds": 1.0}),
        ev.Event(ev.FLAG, "it0/check", {"kind": "network", "detail": "imports socket"}),
        ev.Event(ev.RESUMED, "", {}),
        ev.Event(ev.PAUSED, "", {"reason": "stopped by the user; resume to continue"}),
    ]
    for row in rows:
        store.append(row)
    store.close()
    shown = stop_tui("show", "old", "--sessions-dir", str(sessions_dir), "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["state"] == "paused" and summary["lm"]["calls"] == 1

    events = [e for _, e in read_all(sessions_dir)]
    assert [ev.validate(e) for e in events] == [[]] * len(rows)  # absent optional keys are fine
    reply = next(e.payload for e in events if e.kind == ev.LM_REPLY)
    assert (reply.concurrency, reply.retries, reply.failed, reply.error) == (0, 0, 0, None)
    budget = next(e.payload for e in events if e.kind == ev.BUDGET)
    assert (budget.retries, budget.failed) == (0, 0)
    assert next(e.payload for e in events if e.kind == ev.RESUMED).superseded_from is None
    assert next(e.payload for e in events if e.kind == ev.SANDBOX).missing == []


def test_a_row_with_keys_the_schema_does_not_know_decodes_and_validate_names_them():
    row = ev.Event(ev.LM_REPLY, "it1/lm1", {"use": 1, "replies": [], "prompt_tokens": 1,
                                           "completion_tokens": 2, "requests": 1, "latency": 0.1,
                                           "cost_usd": 0.0, "from_the_future": True})
    assert row.payload.prompt_tokens == 1
    assert ev.validate(row) == ["lm_reply: unexpected key 'from_the_future'"]


# -- the schemas themselves -----------------------------------------------------------------

def test_event_writes_the_payload_as_the_engine_always_stored_it():
    e = ev.event(ev.CandidateScored(role="candidate", score=0.25), "it1/c1")
    assert (e.kind, e.path, e.data) == (ev.CANDIDATE_SCORED, "it1/c1", {"role": "candidate", "score": 0.25})
    changed = ev.event(ev.LMChanged(from_={"model": "a", "base_url": None, "replay_of": None},
                                    to={"model": "b", "base_url": None, "replay_of": None}))
    assert set(changed.data) == {"from", "to"} and changed.payload.from_["model"] == "a"
    part = ev.event(ev.LMPart(use=1, group=0, offset=0, seed=7, replies=(None,), finish_reasons=[None],
                              prompt_tokens=0, completion_tokens=0, requests=6, latency=1.0,
                              error="HTTP 500"), "it1/lm1")
    assert part.data["replies"] == [None] and "usage_missing" not in part.data
    assert ev.validate(part) == []


def test_validate_names_missing_and_mistyped_keys():
    row = ev.Event(ev.ITERATION_ACCEPTED, "it1", {"iteration": "1", "improver": "not-a-hash",
                                                 "val": True, "test": None})
    assert ev.validate(row) == [
        "iteration_accepted.iteration: '1' is not an int",
        "iteration_accepted.improver: 'not-a-hash' is not a text hash",
        "iteration_accepted.val: True is not a number",
    ]
    assert ev.validate(ev.Event(ev.SESSION_FINISHED, "", {})) == [
        "session_finished: missing key 'iterations_completed'", "session_finished: missing key 'reason'"]
    assert ev.validate(ev.Event("no_such_kind")) == ["no_such_kind: no schema for this kind"]
    assert ev.Event("no_such_kind").payload is None


def test_every_kind_has_one_schema():
    kinds = {v for k, v in vars(ev).items() if k.isupper() and isinstance(v, str)}
    assert kinds == set(ev.SCHEMAS)
    assert all(schema.KIND == kind for kind, schema in ev.SCHEMAS.items())
