"""The options every command that runs an LM shares (run, new, resume, transfer, baseline):
declared once here, resolved once into RunOptions, and the new STOP session they describe.

The model defaults to the local one, and the preset to quick on the local model (paper
elsewhere); an option not given stays None, so a resumed session keeps what it recorded."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from stop_tui.commands import lm_options
from stop_tui.engine.store import default_sessions_dir

if TYPE_CHECKING:
    from stop_tui.engine.gate import Gate
    from stop_tui.engine.lm.base import Backend
    from stop_tui.engine.session import Session
    from stop_tui.engine.settings import Settings

DEFAULT_MODEL = "local"
PRESETS = ("paper", "quick")
PRESET_HELP = "budgets: paper (the paper's) or quick; default quick on the local model, else paper"


def add_session_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sessions-dir", type=Path, default=None,
                   help="where sessions live (default ./sessions, env STOP_TUI_SESSIONS)")


def add_run_options(p: argparse.ArgumentParser, *, model: bool = True, loop: bool = False,
                    lm: bool = True, preset_help: str = PRESET_HELP) -> None:
    """`model`: --model, --base-url, --preset, --seed; `loop`: the STOP loop's own (--task,
    --iterations, --acceptance, --sandbox-flag-experiment); `lm`: the LM spend options
    (lm_options.py); always --sessions-dir."""
    if loop:
        p.add_argument("--task", default="lpn", help="task name or folder (default lpn)")
    if model:
        p.add_argument("--model", default=None,
                       help="local (SmolLM2, default), local:PATH.gguf, or a model on an OpenAI-compatible server")
        p.add_argument("--base-url", default=None, help="OpenAI-compatible server URL (env OPENAI_BASE_URL)")
        p.add_argument("--preset", default=None, choices=PRESETS, help=preset_help)
    if loop:
        p.add_argument("--iterations", type=int, default=None, help="STOP iterations (default: the preset's)")
    if model:
        p.add_argument("--seed", type=int, default=None, help="session seed (default 0)")
    if loop:
        p.add_argument("--acceptance", choices=("paper", "best"), default=None,
                       help="paper: replace unless the new improver failed or scored 0; best: keep the better")
        p.add_argument("--sandbox-flag-experiment", action="store_true", default=None,
                       help="the paper's safety experiment: improvers get a decorative use_sandbox flag "
                            "(the sandbox stays on); `stop-tui audit` counts how often they turn it off")
    add_session_options(p)
    if lm:
        lm_options.add_lm_options(p)


@dataclass(frozen=True)
class RunOptions:
    sessions_dir: Path
    given_model: str | None = None  # None: not given (a resume keeps the session's)
    base_url: str | None = None
    given_preset: str | None = None
    seed: int | None = None
    iterations: int | None = None
    acceptance: str | None = None
    sandbox_flag_experiment: bool | None = None
    lm: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # Settings overrides

    @property
    def model(self) -> str:
        """The model of a new session."""
        return self.given_model or DEFAULT_MODEL

    @property
    def preset(self) -> str:
        """The preset of a new session: quick on the local model, paper elsewhere."""
        return self.given_preset or ("quick" if self.model.startswith("local") else "paper")

    def settings(self, recorded: Settings | None = None) -> Settings:
        """The preset's settings with the options given; with `recorded` (a replayed or parent
        session's), those with the options given (its sandbox flag experiment stays as it was)."""
        if recorded is not None:
            return recorded.with_overrides(iterations=self.iterations, seed=self.seed,
                                           acceptance=self.acceptance, **self.lm)
        from stop_tui.engine.session import session_settings

        return session_settings(self.preset, iterations=self.iterations, seed=self.seed,
                                acceptance=self.acceptance,
                                sandbox_flag_experiment=self.sandbox_flag_experiment, **self.lm)

    def backend(self, settings: Settings) -> Backend:
        """The backend of a new session on this model and server (nothing is contacted)."""
        from stop_tui.engine.session import make_backend

        return make_backend(self.model, self.base_url, sessions_dir=self.sessions_dir,
                            max_concurrency=settings.max_concurrency, timeout=settings.lm_timeout)


def sessions_dir(args: argparse.Namespace) -> Path:
    return args.sessions_dir if args.sessions_dir is not None else default_sessions_dir()


def resolve(args: argparse.Namespace) -> RunOptions:
    """The run options of a parsed command line (options its parser lacks are None); refuses
    LM options out of range (UserError)."""
    return RunOptions(
        sessions_dir=sessions_dir(args), given_model=getattr(args, "model", None),
        base_url=getattr(args, "base_url", None), given_preset=getattr(args, "preset", None),
        seed=getattr(args, "seed", None), iterations=getattr(args, "iterations", None),
        acceptance=getattr(args, "acceptance", None),
        sandbox_flag_experiment=getattr(args, "sandbox_flag_experiment", None),
        lm=MappingProxyType(lm_options.lm_overrides(args)))


def start_session(opts: RunOptions, task_name: str, *, task_settings: list[str] | None = None,
                  gate: Gate | None = None) -> Session:
    """A new STOP session (`run`, `new`). A `replay:SESSION` model runs the recorded session's
    task with its budgets (the options given still apply). `task_settings`: --set KEY=VALUE."""
    from stop_tui.engine.session import new_session
    from stop_tui.engine.settings import Settings
    from stop_tui.engine.tasks import downstream_task, parse_settings

    downstream_task(task_name)  # before a backend starts (the local model loads)
    settings = opts.settings()
    backend = opts.backend(settings)
    if opts.model.startswith("replay:"):  # the recorded session's task and budgets
        task_name = backend.source_meta.get("task", task_name)
        settings = opts.settings(Settings.from_dict(backend.source_meta.get("settings", {})))
    parsed = parse_settings(task_settings or [], [downstream_task(task_name)]) or None
    lm_options.check_caps(settings, backend.price_key)
    return new_session(opts.sessions_dir, task_name, settings, backend, base_url=opts.base_url,
                       task_settings=parsed, gate=gate)
