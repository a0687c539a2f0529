"""`stop-tui replay SESSION`: re-run a recorded session with no network.

A replay is a new session (id SESSION-replay, meta `replay_of`) with the original's task and
settings whose every LM request is answered from the original's record (lm/record.py). With
`--check` it compares its effective events with the original's (kinds, paths and data, ignoring
timestamps and timings) and exits 1 on any difference. The running BUDGET snapshots are compared
by their final totals only: with runs in parallel, which call finished first is timing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import replace

from stop_tui.commands import run_options


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
    run_options.add_session_options(p)


def cmd_replay(args: argparse.Namespace) -> int:
    from stop_tui.engine.lm.replay_backend import ReplayBackend
    from stop_tui.engine.resume import comparable
    from stop_tui.engine.session import new_session
    from stop_tui.engine.settings import Settings
    from stop_tui.engine.summary import summarize
    from stop_tui.progress import make_printer

    sessions_dir = run_options.sessions_dir(args)
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
        theirs = Counter(comparable(backend.source.events(), budgets="final"))
        ours = Counter(comparable(session.store.events(), budgets="final"))
        only_ours = sorted((ours - theirs).elements())
        only_theirs = sorted((theirs - ours).elements())
        differences = len(only_ours) + len(only_theirs)
        for kind, path, data in only_theirs[:5]:
            print(f"replay: missing {kind} at {path}: {data[:200]}", file=sys.stderr)
        for kind, path, data in only_ours[:5]:
            print(f"replay: extra {kind} at {path}: {data[:200]}", file=sys.stderr)
        print(f"replay: {ours.total()} events compared, {differences} difference(s)", file=sys.stderr)
    session.close()
    if args.json:
        print(json.dumps(summary, indent=2))
    elif printer is None:
        print(summary["session"])
    if outcome != "finished":
        return 130
    return 1 if differences else 0
