"""`stop-tui new` and `stop-tui resume`: their options made into a session (or a read-only
viewer), handed to the TUI (tui/launch.py runs the app and closes cleanly)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stop_tui.commands import run_options
from stop_tui.engine.errors import UserError


def cmd_new(args: argparse.Namespace) -> int:
    from stop_tui.engine.gate import Gate

    opts = run_options.resolve(args)
    session = run_options.start_session(opts, args.task, gate=Gate(running=not args.step))
    from stop_tui.tui import launch

    return launch.run_app(launch.new_app(session))


def cmd_resume(args: argparse.Namespace) -> int:
    opts = run_options.resolve(args)
    if not args.session:
        if not sys.stdin.isatty():
            raise UserError("give a session id (see `stop-tui list`): no terminal for the picker")
        if not opts.sessions_dir.is_dir():
            raise UserError(f"no sessions in {opts.sessions_dir} (start one with `stop-tui new --task lpn`)")
    from stop_tui.engine.sweep.layout import is_sweep
    from stop_tui.tui import launch

    for folder in (Path(args.session), opts.sessions_dir / args.session) if args.session else ():
        if is_sweep(folder):  # its runs in a table (one run: SWEEP/RUN)
            return launch.run_app(launch.sweep_app(folder))
    return launch.run_app(launch.resume_app(opts.sessions_dir, args.session, dict(opts.lm)))
