"""A sweep's --max-cost: one pool of dollars for all its runs (engine/sweep/cost_pool.py). The sum
of what the runs spend never passes the cap, calls in flight included; a refused call is not
sent and its run pauses like a capped session; a higher cap lets the runs finish."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from pathlib import Path

import pytest
from lm_helpers import events_of, responder, same_events, wait_for
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.errors import Cancelled
from stop_tui.engine.history import History
from stop_tui.engine.lm.base import Completions
from stop_tui.engine.lm.caps import call_worst_case, estimate_tokens
from stop_tui.engine.lm.openai_backend import OpenAIBackend
from stop_tui.engine.lm.service import CapReached, LMService
from stop_tui.engine.session import new_session, open_session, session_settings
from stop_tui.engine.store import SessionStore
from stop_tui.engine.sweep.cost_pool import CostPool, bind, make_pool, pool_from_logs
from stop_tui.engine.sweep.layout import RunKey, SweepSpec, create_sweep

MODEL = "gpt-4o-mini"  # a model with a price (prices.toml); the scripted server answers as it


# -- the pool ---------------------------------------------------------------------------------
def test_pool_grants_within_the_cap_counting_reservations():
    pool = CostPool(1.0, {"a": 0.25})
    assert pool.reserve("a", 0.5) is None
    line = pool.reserve("b", 0.3)  # 0.25 spent + 0.5 held + 0.3 > 1
    assert line is not None and "$0.2500 spent" in line and "$0.5000 held by calls in flight" in line
    assert "--max-cost 1" in line
    assert pool.reserve("b", 0.25) is None  # exactly fills the cap
    pool.settle("a", 0.5, 0.1)  # cost less than its worst case: the rest is free again
    pool.settle("b", 0.25, 0.25)
    assert pool.state() == {"cap_usd": 1.0, "spent_usd": pytest.approx(0.6), "reserved_usd": 0.0,
                            "runs": {"a": {"spent_usd": pytest.approx(0.35), "reserved_usd": 0.0},
                                     "b": {"spent_usd": 0.25, "reserved_usd": 0.0}}}
    assert pool.reserve("c", 0.4) is None


def test_join_takes_the_log_and_drops_what_a_dead_run_held():
    pool = CostPool(1.0, {})
    assert pool.reserve("a", 0.9) is None  # then the run's worker dies, the call never settles
    assert pool.reserve("b", 0.2) is not None
    pool.join("a", 0.05)  # the run restarts: its log says it spent 0.05
    assert pool.state()["runs"]["a"] == {"spent_usd": 0.05, "reserved_usd": 0.0}
    assert pool.reserve("b", 0.2) is None


def test_raise_cap_and_no_cap():
    pool = CostPool(0.1, {"a": 0.1})
    assert pool.reserve("a", 0.01) is not None
    pool.raise_cap(0.2)
    assert pool.reserve("a", 0.01) is None
    pool.raise_cap(None)
    assert pool.reserve("a", 100.0) is None and pool.reserve("a", None) is None
    pool.raise_cap(1.0)
    assert "price" in pool.reserve("a", None)  # a model without a price cannot be capped


def logged(folder: Path, name: str, *costs: float) -> None:
    """A session `name` in `folder` whose log holds BUDGET events with these costs."""
    store = SessionStore.create(folder, {"task": "lpn", "model": MODEL}, name=name)
    for cost in costs:
        store.append(ev.event(ev.Budget(calls=1, requests=1, completions=1, prompt_tokens=1,
                                        completion_tokens=1, cost_usd=cost)))
    store.close()


def test_pool_from_logs_reads_every_session_of_the_sweep(tmp_path):
    spec = SweepSpec(tasks=("lpn",), models=(MODEL,), seeds=(0, 1, 2), transfer=("grid",))
    sweep = create_sweep(tmp_path, spec, name="sw")
    a, b, c = spec.runs()
    logged(sweep.folder, a.name, 0.1, 0.3, 0.2)  # resumed: re-executed from the record up to 0.3
    logged(sweep.folder, b.name, 0.25)
    logged(sweep.folder, b.transfer_name, 0.05)  # a transfer spends from the same pool
    pool = pool_from_logs(sweep, 1.0)
    runs = {run: v["spent_usd"] for run, v in pool.state()["runs"].items()}
    assert runs == {a.name: 0.3, b.name: 0.25, b.transfer_name: 0.05, c.name: 0.0}
    line = pool.reserve(c.name, 0.5)
    assert line is not None and "$0.6000 spent" in line


# -- the LM service ---------------------------------------------------------------------------
class HeldBackend:
    """Bills every call its worst case (so the cap is met exactly); holds requests while
    `hold` is clear; `check` runs as each request is sent (with the pool's state)."""

    model = price_key = MODEL
    honours_n = True

    def __init__(self, check) -> None:
        self.sent = 0
        self.hold = threading.Event()
        self.check = check
        self._lock = threading.Lock()

    def request(self, system, user, *, n, temperature, max_tokens, seed=None) -> Completions:
        with self._lock:
            self.sent += 1
        self.check()
        self.hold.wait(30)
        time.sleep(0.001)  # a little latency: calls overlap
        return Completions(texts=["fine"] * n, prompt_tokens=estimate_tokens(system) + estimate_tokens(user),
                           completion_tokens=n * max_tokens)

    complete = request

    def close(self) -> None:
        pass


def service(backend, pool: CostPool, run: str) -> tuple[LMService, list]:
    log: list = []
    lm = LMService(backend, max_tokens=100, seed=1, emit=log.append,
                   put_text=lambda text: hashlib.sha256(text.encode()).hexdigest(), shared=bind(pool, run))
    return lm, log


WORST = call_worst_case(MODEL, "sys", ["msg"], 1, 1, 100)["cost_usd"]


def test_the_sum_over_runs_never_passes_the_cap_calls_in_flight_included():
    pool = CostPool(10.5 * WORST, {})
    seen: list[float] = []

    def check() -> None:  # as each request goes out: spent + held stays within the cap
        s = pool.state()
        seen.append(s["spent_usd"] + s["reserved_usd"])

    backend = HeldBackend(check)
    runs = {name: service(backend, pool, name) for name in "abcd"}
    # Three calls in flight, nothing spent yet: their worst cases are held.
    first = [threading.Thread(target=runs[n][0].handle("h", 99, 4).prompt, args=("sys", "msg"))
             for n in "abc"]
    for t in first:
        t.start()
    assert wait_for(lambda: backend.sent == 3, timeout=30)
    assert pool.state()["reserved_usd"] == pytest.approx(3 * WORST)
    # Then many calls from every run on threads: only what fits is sent.
    def spend(name: str) -> None:
        handle = runs[name][0].handle(f"t{threading.get_ident()}", 99, 4)
        try:
            while True:
                handle.prompt("sys", "msg")
        except Cancelled:  # the run is stopped (by this thread's refusal or another's)
            pass

    many = [threading.Thread(target=spend, args=(n,)) for n in "abcd" for _ in range(3)]
    for t in many:
        t.start()
    backend.hold.set()
    for t in first + many:
        t.join(60)
    assert backend.sent == 10  # ten worst cases fit in 10.5
    assert max(seen) <= pool.cap_usd
    state = pool.state()
    assert state["spent_usd"] == pytest.approx(10 * WORST) and state["reserved_usd"] == 0.0
    assert sum(lm.usage.cost_usd for lm, _ in runs.values()) == pytest.approx(10 * WORST)
    for lm, _ in runs.values():  # every run is stopped at the sweep's cap
        assert isinstance(lm.stop, CapReached) and lm.stop.option == "--max-cost"
        assert "sweep's cost cap" in lm.stop.message
    # A refused call was not sent, nor recorded as a request.
    requests = sum(e.kind == ev.LM_REQUEST for _, log in runs.values() for e in log)
    assert requests == backend.sent


# -- sessions ---------------------------------------------------------------------------------
def history(folder: Path) -> History:
    store = SessionStore(folder, readonly=True)
    try:
        return History.read(store)
    finally:
        store.close()


def test_a_session_pauses_at_the_pool_and_finishes_once_it_is_raised(tmp_path):
    settings = session_settings("quick", iterations=1)
    with ScriptedLMServer(responder, honour_n=False, model=MODEL) as server:
        alone = new_session(tmp_path / "alone", "lpn", settings, OpenAIBackend(MODEL, server.base_url))
        try:
            assert alone.engine.run() == "finished"
            full = alone.engine.lm.usage.cost_usd
        finally:
            alone.close()
        spec = SweepSpec(tasks=("lpn",), models=(MODEL,), seeds=(0, 1), max_cost=2 * full)
        sweep = create_sweep(tmp_path / "sessions", spec, name="sw")
        key, other = spec.runs()
        pool = CostPool(spec.max_cost, {other.name: 0.2 * full}, "stop-tui sweep --resume sw")
        session = new_session(sweep.folder, "lpn", settings, OpenAIBackend(MODEL, server.base_url),
                              base_url=server.base_url, name=key.name, shared=bind(pool, key.name))
        try:
            assert session.engine.run() == "capped"
        finally:
            session.close()
        sent = len(server.requests)
        paused = history(sweep.run_folder(key))
        assert paused.state == "paused"
        assert "sweep's cost cap" in paused.paused_reason
        assert "stop-tui sweep --resume sw --max-cost <higher>" in paused.paused_reason
        spent = paused.lm_totals["cost_usd"]
        assert 0 < spent and 0.2 * full + spent <= spec.max_cost
        assert pool_from_logs(sweep, spec.max_cost).state()["runs"][key.name]["spent_usd"] == spent

        pool.raise_cap(1.0)
        session = open_session(sweep.folder, key.name, shared=bind(pool, key.name))
        try:
            assert session.engine.run() == "finished"
        finally:
            session.close()
        asked = len(server.requests) - sent
    done = history(sweep.run_folder(key))
    assert done.state == "finished" and done.lm_totals["requests"] == asked + paused.lm_totals["requests"]
    assert pool.state()["runs"][key.name]["spent_usd"] == pytest.approx(done.lm_totals["cost_usd"])
    assert same_events(tmp_path / "alone", alone.id, sweep.folder, key.name, budgets="final") == ([], [])


# -- a sweep's runs on Ray --------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for this module (tests/ray_helpers.py's ray_local, once merged)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024 * 1024)
    yield
    ray.shutdown()


def run_task(folder: str, key: RunKey, base_url: str, pool, resume: bool) -> str:
    """A run as a sweep's Ray task runs it (engine/sweep/runner.py does it for real)."""
    from stop_tui.engine.lm.openai_backend import OpenAIBackend
    from stop_tui.engine.session import new_session, open_session, session_settings
    from stop_tui.engine.sweep.cost_pool import bind

    shared = bind(pool, key.name) if pool is not None else None
    if resume:
        session = open_session(Path(folder), key.name, shared=shared)
    else:
        session = new_session(Path(folder), key.task, session_settings("quick", iterations=1, seed=key.seed),
                              OpenAIBackend(key.model, base_url), base_url=base_url, name=key.name,
                              shared=shared)
    try:
        return session.engine.run()
    finally:
        session.close()


@pytest.mark.slow
def test_three_runs_on_ray_share_one_cap(ray_local, tmp_path):
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # run_task, in the workers
    task = ray.remote(num_cpus=1)(run_task)
    spec = SweepSpec(tasks=("lpn",), models=(MODEL,), seeds=(0, 1, 2))
    with ScriptedLMServer(responder, honour_n=False, model=MODEL) as server:
        alone = create_sweep(tmp_path, spec, name="alone")
        outcomes = ray.get([task.remote(str(alone.folder), k, server.base_url, None, False) for k in spec.runs()])
        assert outcomes == ["finished"] * 3
        full = [history(alone.run_folder(k)).lm_totals for k in spec.runs()]
        uncapped_requests = len(server.requests)
        cap = 2.5 * max(t["cost_usd"] for t in full)  # room for two runs and a half, worst cases held

        sweep = create_sweep(tmp_path, spec, name="capped")
        pool = make_pool(sweep, cap)
        outcomes = ray.get([task.remote(str(sweep.folder), k, server.base_url, pool, False) for k in spec.runs()])
        assert "capped" in outcomes
        logs = {k: history(sweep.run_folder(k)) for k in spec.runs()}
        assert sum(h.lm_totals["cost_usd"] for h in logs.values()) <= cap
        assert ray.get(pool.state.remote())["spent_usd"] <= cap
        for k, outcome in zip(spec.runs(), outcomes, strict=True):
            if outcome == "capped":
                assert logs[k].state == "paused" and "sweep's cost cap" in logs[k].paused_reason
                assert f"stop-tui sweep --resume {sweep.id}" in logs[k].paused_reason
        # Nothing refused was sent: the server saw what the logs hold.
        assert len(server.requests) - uncapped_requests == sum(h.lm_totals["requests"] for h in logs.values())

        # `sweep --resume --max-cost HIGHER`: a new pool from the logs, the paused runs resume.
        pool = make_pool(sweep, 1.0)
        again = [k for k, outcome in zip(spec.runs(), outcomes, strict=True) if outcome == "capped"]
        assert ray.get([task.remote(str(sweep.folder), k, server.base_url, pool, True) for k in again]) == \
            ["finished"] * len(again)
        assert len(server.requests) - uncapped_requests == sum(t["requests"] for t in full)
    for k in spec.runs():
        assert same_events(alone.folder, k.name, sweep.folder, k.name, budgets="final") == ([], [])
        assert events_of(sweep.folder, k.name)[-1].kind == ev.SESSION_FINISHED
    total = ray.get(pool.state.remote())["spent_usd"]
    assert total == pytest.approx(sum(t["cost_usd"] for t in full))
