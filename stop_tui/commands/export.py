"""`stop-tui export SESSION [--format json|jsonl|csv|md] [--programs DIR] [--out FILE]`: one
session's record in a file another program (or person) reads; see engine/export.py.

json is the summary (`show --json`), jsonl every event, csv the candidate improvers, md a
one-session report. `--programs DIR` writes every program as DIR/<node path>.py; given alone
(no --format) it writes only those. Read-only: a running session can be exported."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stop_tui.engine.errors import UserError

FORMATS = ("json", "jsonl", "csv", "md")


def add_parser(sub: Any, add_session_options: Any) -> None:
    p = sub.add_parser("export", help="one session as JSON, JSONL events, CSV candidates, a Markdown "
                                      "report, or its programs as .py files")
    p.add_argument("session", help="session id (see `stop-tui list`), SWEEP/RUN, or a session folder")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="json: the summary (default); jsonl: every event in order, superseded ones "
                        "marked; csv: the candidate improvers; md: a one-session report")
    p.add_argument("--programs", type=Path, metavar="DIR",
                   help="write every program (improvers and solutions) as DIR/<node path>.py, "
                        "e.g. it2/c3.py (alone: only the programs)")
    p.add_argument("--out", type=Path, metavar="FILE", help="write to FILE instead of stdout")
    add_session_options(p)


def _open(sessions_dir: Path, name: str):
    from stop_tui.commands import sweep_view
    from stop_tui.engine.store import SessionStore
    from stop_tui.engine.sweep.layout import is_sweep

    for folder in (Path(name), sessions_dir / name):
        if is_sweep(folder):
            raise UserError(f"{name} is a sweep: export one of its runs (SWEEP/RUN, see `stop-tui show {name}`)")
        if is_sweep(folder.parent) and not (folder / "session.db").exists():
            sweep_view.check_started(folder)
    return SessionStore.open(sessions_dir, name, readonly=True)


def render(store: Any, events: list, fmt: str) -> str:
    """The export of `store` (its `events`, read once) in format `fmt`."""
    from stop_tui.engine import export
    from stop_tui.engine.summary import summarize

    if fmt == "json":
        return json.dumps(summarize(store), indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(line + "\n" for line in export.jsonl_lines(events))
    if fmt == "csv":
        return export.candidates_csv(export.candidate_rows(events))
    kind = store.meta().get("kind", "stop")
    if kind != "stop":
        raise UserError(f"{store.id} is a {kind} session: --format md reports a STOP run "
                        "(json, jsonl and csv export any session)")
    return export.markdown(store, events)


def write_out(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with open(out, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None


def cmd_export(args: argparse.Namespace) -> int:
    from stop_tui.commands.run_options import sessions_dir
    from stop_tui.engine import export

    if args.out is not None and args.out.is_dir():
        raise UserError(f"cannot write {args.out}: it is a folder (--out names a file)")
    if args.programs is not None and args.programs.exists() and not args.programs.is_dir():
        raise UserError(f"cannot write programs to {args.programs}: it is a file (--programs names a folder)")
    fmt = args.format or (None if args.programs is not None else "json")
    store = _open(sessions_dir(args), args.session)
    try:
        events = list(store.events())
        text = render(store, events, fmt) if fmt else None
        written = export.write_programs(store, events, args.programs) if args.programs else None
    finally:
        store.close()
    if written is not None:
        print(f"wrote {len(written)} program{'s' if len(written) != 1 else ''} to {args.programs}", file=sys.stderr)
    if text is not None:
        write_out(text, args.out)
    return 0
