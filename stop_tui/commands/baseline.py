"""`stop-tui baseline`: what a user gets without self-improvement, at the same LM budget. Its
options, the run (engine/baseline.py: the methods, their runs, the results file) and its line.

With --session the results go into that session's folder (model, preset and task default to
the session's), otherwise into a new session folder."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from stop_tui.commands import lm_options, run_options
from stop_tui.engine import baseline
from stop_tui.engine.baseline import METHODS, BaselinePaused
from stop_tui.engine.errors import Cancelled, UserError
from stop_tui.engine.store import cli_name, default_sessions_dir
from stop_tui.engine.untrusted import printable


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline", help="run a baseline improver (best-of-n, cot, greedy) on a task")
    p.add_argument("--task", default=None, help="task name or folder (default: the session's, else lpn)")
    p.add_argument("--method", required=True, choices=METHODS,
                   help="best-of-n (the whole budget on samples), cot (one attempt) or greedy")
    p.add_argument("--session", default=None,
                   help="put the results in this session's folder (and use its model and preset)")
    p.add_argument("--runs", type=int, default=None, help="improver runs (default: the preset's meta_runs)")
    # LM options: caps (a session's own apply to its baselines), timeout
    run_options.add_run_options(p, preset_help="default: the session's, else quick on the local model, paper elsewhere")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def cmd_baseline(args: argparse.Namespace) -> int:
    from stop_tui.engine.lock import acquire
    from stop_tui.engine.session import make_backend
    from stop_tui.engine.settings import Settings

    opts = run_options.resolve(args)
    if args.runs is not None and args.runs < 1:
        raise UserError("--runs must be 1 or more")
    parent = baseline.parent_session(opts.sessions_dir, args.session) if args.session else None
    parent_meta = parent.meta if parent is not None else {}
    task_name = args.task or parent_meta.get("task") or "lpn"
    baseline.check_task(task_name, parent, args.task)
    recorded = parent_meta.get("settings") if not opts.given_preset else None
    settings = opts.settings(Settings.from_dict(recorded) if recorded else None)
    if args.runs:
        settings = replace(settings, meta_runs=args.runs)
    model = opts.given_model or parent_meta.get("model") or "local"
    base_url = opts.base_url or (parent_meta.get("base_url") if not opts.given_model else None)
    # The baseline is written into the session's folder: nobody may run it meanwhile.
    lock = acquire(parent.folder) if parent is not None else None
    backend = make_backend(model, base_url, sessions_dir=opts.sessions_dir,
                           max_concurrency=settings.max_concurrency, timeout=settings.lm_timeout)
    lm_options.check_caps(settings, backend.price_key)
    job = baseline.start(opts.sessions_dir, args.method, task_name, settings, backend, base_url,
                         parent, lock)

    def echo(line: str) -> None:
        if not args.quiet:
            print(printable(line), file=sys.stderr, flush=True)

    try:
        result = job.run(echo, again=_again(args, parent.folder if parent else None, opts.sessions_dir))
    except BaselinePaused as exc:
        print(f"stop-tui: paused: {printable(exc.reason)}", file=sys.stderr)
        return lm_options.EXIT_CAPPED
    except (KeyboardInterrupt, Cancelled):
        echo("stopped")
        return 130
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        lo, hi = result["ci95"]
        print(f"{args.method} on {task_name}: test {100 * result['mean']:.1f} % "
              f"[95 % CI {100 * lo:.1f}, {100 * hi:.1f}] over {result['runs']} run(s); "
              f"val {100 * result['val_mean']:.1f} %  -> {job.target}")
    return 0


def _again(args: argparse.Namespace, session: Path | None, sessions_dir: Path) -> str:
    """The command that runs this baseline again, as the user gave it (it works when pasted)."""
    words = ["stop-tui", "baseline", "--method", args.method]
    for option in ("task", "model", "base_url", "preset", "seed", "runs", "max_cost", "max_tokens",
                   "max_calls", "max_concurrency", "max_prompt_tokens", "lm_timeout"):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option.replace('_', '-')}", str(value)]
    command = " ".join(shlex.quote(w) for w in words)
    if session is not None:
        return f"{command} --session {cli_name(session)}"  # with --sessions-dir when not default
    if Path(sessions_dir).resolve() != default_sessions_dir().resolve():
        command += f" --sessions-dir {shlex.quote(str(sessions_dir))}"
    return command
