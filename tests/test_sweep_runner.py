"""What a sweep's Ray task does with one run, called in this process (no Ray): a run's own
failure is recorded in its log as an ERROR event (the run reads as failed) and the next call
resumes it; a run folder left without its database is reused, not duplicated; a finished run is
read, never written."""

from __future__ import annotations

import threading

import pytest
from lm_helpers import events_of, responder, session_files
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.loop import Engine
from stop_tui.engine.store import SessionStore
from stop_tui.engine.sweep.layout import SweepSpec, create_sweep
from stop_tui.engine.sweep.runner import run_one
from stop_tui.engine.sweep.status import sweep_status


@pytest.fixture
def sweep(tmp_path):
    with ScriptedLMServer(responder, models=["a"]) as server:
        spec = SweepSpec(tasks=("lpn",), models=("a",), seeds=(0,), preset="quick", iterations=1,
                         base_url=server.base_url)
        yield create_sweep(tmp_path, spec, name="w"), server


def test_a_runs_own_failure_is_recorded_and_the_next_task_resumes_it(sweep, monkeypatch):
    sw, _ = sweep
    (key,) = sw.spec.runs()
    real = Engine.iterate

    def broken(self, t):
        raise RuntimeError("the engine broke")

    monkeypatch.setattr(Engine, "iterate", broken)
    out = run_one(sw.folder.parent, sw.id, key)
    assert out["outcome"] == "failed" and "RuntimeError: the engine broke" in out["error"]
    errors = [e for e in events_of(sw.folder, key.name) if e.kind == ev.ERROR]
    assert len(errors) == 1 and "the engine broke" in errors[0].payload.message
    (status,) = sweep_status(sw)
    assert status.state == "failed" and "the engine broke" in status.reason

    monkeypatch.setattr(Engine, "iterate", real)
    again = run_one(sw.folder.parent, sw.id, key)
    assert again["outcome"] == "finished" and again["summary"]["iterations_completed"] == 1
    assert [s.state for s in sweep_status(sw)] == ["finished"]


def test_a_folder_left_without_its_database_is_reused(sweep):
    sw, _ = sweep
    (key,) = sw.spec.runs()
    folder = sw.run_folder(key)
    folder.mkdir()
    (folder / "session.db.new").write_text("half made")  # a task killed while creating it
    assert run_one(sw.folder.parent, sw.id, key)["outcome"] == "finished"
    assert sorted(p.name for p in sw.folder.iterdir()) == [key.name, "sweep.json"]


def test_a_finished_run_is_read_not_written(sweep):
    sw, server = sweep
    (key,) = sw.spec.runs()
    assert run_one(sw.folder.parent, sw.id, key)["outcome"] == "finished"
    before, sent = session_files(sw.run_folder(key)), len(server.requests)
    out = run_one(sw.folder.parent, sw.id, key)
    assert out["outcome"] == "finished" and out["summary"]["state"] == "finished"
    assert session_files(sw.run_folder(key)) == before and len(server.requests) == sent


def test_a_damaged_session_fails_its_run_and_is_left_as_it_is(sweep):
    sw, server = sweep
    (key,) = sw.spec.runs()
    folder = sw.run_folder(key)
    folder.mkdir()
    (folder / "session.db").write_bytes(b"not a database" * 100)
    out = run_one(sw.folder.parent, sw.id, key)
    assert out["outcome"] == "failed" and "is unreadable" in out["error"]
    assert (folder / "session.db").read_bytes() == b"not a database" * 100
    assert server.requests == []


def test_a_sweeps_runs_create_their_sessions_in_one_folder_at_once(tmp_path):
    """Runs start together (Ray tasks, one per core): each one's session is made in the sweep's
    folder while the others' are, and none is refused (the folder's write check is each one's
    own)."""
    folder = tmp_path / "sweep"
    names = [f"run{k}" for k in range(8)]
    errors: list[BaseException] = []

    for round_ in range(10):
        start = threading.Barrier(len(names))

        def create(name: str) -> None:
            start.wait()
            try:
                SessionStore.create(folder, {"task": "lpn"}, name=f"{name}-{round_}").close()
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}-{r}" for n in names for r in range(10))
