"""`stop-tui replay SESSION`: re-run a recorded session with no network, and the LM options of
`stop-tui run` (caps, concurrency, the worst-case projection shown before a run starts).

A replay is a new session (id SESSION-replay, meta `replay_of`) with the original's task and
settings whose every LM request is answered from the original's record (lm/record.py). With
`--check` it compares its effective events with the original's (kinds, paths and data, ignoring
timestamps and timings) and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from stop_tui.engine.errors import UserError
from stop_tui.engine.store import default_sessions_dir

EXIT_CAPPED = 3  # `run` stopped at a session cap (resume with a higher cap)


# -- options shared with `run` ------------------------------------------------------------
def add_lm_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LM spend and parallelism")
    g.add_argument("--max-concurrency", type=int, default=None, metavar="N",
                   help="LM requests in flight at once (default 8)")
    g.add_argument("--max-cost", type=float, default=None, metavar="USD",
                   help="session cap in dollars: the run pauses before a call that could pass it")
    g.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="session cap on prompt + completion tokens")
    g.add_argument("--max-calls", type=int, default=None, metavar="N",
                   help="session cap on LM calls")


def lm_overrides(args: argparse.Namespace) -> dict:
    for name in ("max_concurrency", "max_tokens", "max_calls"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if getattr(args, "max_cost", None) is not None and args.max_cost <= 0:
        raise UserError("--max-cost must be more than 0")
    return {"cap_cost_usd": getattr(args, "max_cost", None),
            "cap_tokens": getattr(args, "max_tokens", None),
            "cap_calls": getattr(args, "max_calls", None),
            "max_concurrency": getattr(args, "max_concurrency", None)}


def check_caps(settings, price_key: str) -> None:
    from stop_tui.engine.lm.prices import price

    if settings.cap_cost_usd is not None and price(price_key) is None:
        raise UserError(f"--max-cost needs a price for {price_key!r}, which is not in the price "
                        "table (stop_tui/engine/lm/prices.toml): use --max-tokens or --max-calls")


def projection_line(session, iterations: int) -> str:
    """The worst-case spend of what is left to run, for stderr before the run starts."""
    from stop_tui.engine.lm.caps import engine_projection

    return engine_projection(session.engine, iterations)


def stop_on_interrupt(session, wait: float = 10.0) -> None:
    """ctrl+c during `run`: the LM calls in flight are paid for, so give them `wait` seconds to
    be recorded (a resume then reuses them; ctrl+c again leaves at once), then say so in the log."""
    from stop_tui.engine import events as ev

    print(f"stop-tui: stopping; recording the LM calls in flight (up to {wait:g} s, ctrl+c again "
          "to leave now)", file=sys.stderr)
    try:
        session.engine.lm.drain(timeout=wait)
    except KeyboardInterrupt:
        pass
    session.store.append(ev.Event(ev.PAUSED, "", {
        "reason": f"stopped by the user (ctrl+c); resume: stop-tui run --resume {session.id}"}))


# -- stop-tui replay ----------------------------------------------------------------------
def add_parser(sub) -> None:
    p = sub.add_parser("replay", help="re-run a recorded session offline, answering the LM from its record")
    p.add_argument("session", help="the recorded session")
    p.add_argument("--json", action="store_true", help="print the JSON summary (as run --json)")
    p.add_argument("--check", action="store_true",
                   help="compare every event with the original; exit 1 on a difference")
    p.add_argument("--acceptance", choices=("paper", "best"), default=None,
                   help="re-decide the iterations under another acceptance rule")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--sessions-dir", type=Path, default=None,
                   help="where sessions live (default ./sessions, env STOP_TUI_SESSIONS)")


def cmd_replay(args: argparse.Namespace) -> int:
    from stop_tui.engine.lm.replay_backend import ReplayBackend
    from stop_tui.engine.resume import comparable
    from stop_tui.engine.session import new_session
    from stop_tui.engine.settings import Settings
    from stop_tui.engine.store import SessionStore
    from stop_tui.engine.summary import summarize
    from stop_tui.progress import make_printer

    sessions_dir = args.sessions_dir if args.sessions_dir is not None else default_sessions_dir()
    backend = ReplayBackend(args.session, sessions_dir)
    meta = backend.source_meta
    original = summarize(backend.source)
    # A replay spends nothing: no caps.
    settings = replace(Settings.from_dict(meta.get("settings", {})).with_overrides(
        acceptance=args.acceptance), cap_cost_usd=None, cap_tokens=None, cap_calls=None)
    iterations = original["iterations_completed"]
    session = new_session(backend.source.folder.parent, meta.get("task", "lpn"), settings, backend)
    printer = make_printer(args.quiet)
    if printer is not None:
        session.store.subscribe(printer)
    try:
        outcome = session.engine.run(iterations)
    finally:
        if printer is not None:
            printer.close()
    summary = summarize(session.store)
    differences = 0
    if args.check:
        source = SessionStore.open(sessions_dir, args.session)
        ours, theirs = comparable(session.store.events()), comparable(source.events())
        source.close()
        only_ours = sorted(set(ours) - set(theirs))
        only_theirs = sorted(set(theirs) - set(ours))
        differences = len(only_ours) + len(only_theirs)
        for kind, path, data in only_theirs[:5]:
            print(f"replay: missing {kind} at {path}: {data[:200]}", file=sys.stderr)
        for kind, path, data in only_ours[:5]:
            print(f"replay: extra {kind} at {path}: {data[:200]}", file=sys.stderr)
        if not differences and len(ours) != len(theirs):
            differences = 1
            print(f"replay: {len(ours)} events vs {len(theirs)} in the original", file=sys.stderr)
        print(f"replay: {len(ours)} events compared, {differences} difference(s)", file=sys.stderr)
    session.close()
    if args.json:
        print(json.dumps(summary, indent=2))
    elif printer is None:
        print(summary["session"])
    if outcome != "finished":
        return 130
    return 1 if differences else 0
