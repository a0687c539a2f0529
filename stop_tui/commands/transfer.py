"""`stop-tui transfer`: does an improver carry over to other tasks? Its options, the run
(engine/transfer.py measures and records) and the table as text, Markdown, CSV or JSON."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from typing import Any

from stop_tui.commands import run_options
from stop_tui.commands.lm_options import EXIT_CAPPED
from stop_tui.engine import events as ev
from stop_tui.engine import transfer
from stop_tui.engine.errors import UserError
from stop_tui.engine.transfer import DEFAULT_TASKS, LABELS, WHO
from stop_tui.engine.untrusted import printable

EXIT = {"finished": 0, "capped": EXIT_CAPPED, "cancelled": 130}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transfer", help="measure how an improver transfers to other tasks (the paper's table)")
    p.add_argument("--improver", help="FILE, SESSION or SESSION:ITERATION (the improver to evaluate)")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                   help=f"comma-separated tasks (default {','.join(DEFAULT_TASKS)})")
    p.add_argument("--runs", type=int, default=1, help="û evaluations per task and improver (default 1)")
    run_options.add_run_options(p, lm=False)
    p.add_argument("--set", dest="task_settings", action="append", default=[], metavar="KEY=VALUE",
                   help="override a task setting where a task has it, e.g. --set time_limit=0.1 (sat)")
    p.add_argument("--resume", metavar="SESSION", help="continue a transfer session (skips what is recorded)")
    p.add_argument("--json", action="store_true", help="print the table as JSON on stdout")
    p.add_argument("--format", choices=("text", "md", "csv"), default="text", help="table format")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def cmd_transfer(args: argparse.Namespace) -> int:
    opts = run_options.resolve(args)
    if args.resume:
        job = transfer.reopen(opts.sessions_dir, args.resume, opts.base_url)
    else:
        if not args.improver:
            raise UserError("--improver FILE|SESSION[:ITERATION] is required (or --resume SESSION)")
        if args.runs < 1:
            raise UserError("--runs must be 1 or more")
        tasks = list(dict.fromkeys(t.strip() for t in args.tasks.split(",") if t.strip()))  # each once
        if not tasks:
            raise UserError("--tasks names no task")
        plan = transfer.make_plan(tasks, args.runs, args.improver, opts.sessions_dir, args.task_settings)
        settings = opts.settings()
        job = transfer.start(opts.sessions_dir, plan, settings, opts.backend(settings), opts.base_url)
    store, plan = job.session.store, job.plan

    def echo(line: str) -> None:
        if not args.quiet:
            print(printable(line), file=sys.stderr, flush=True)

    if not args.quiet:
        store.subscribe(_progress(echo))
    echo(f"transfer session {store.id}: improver {plan.improver_label}, tasks {','.join(plan.tasks)}, "
         f"{plan.runs} run(s)")
    outcome = job.run(echo)
    result = {"session": store.id, "session_dir": str(store.folder.resolve()),
              "improver": plan.improver_label, "runs": plan.runs, "model": job.session.engine.lm.backend.model,
              "preset": job.session.settings.preset, "split": "test", "rows": outcome.rows}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        sys.stdout.write(render_text(outcome.rows, args.format))
    if outcome.paused_reason is not None:
        print(f"stop-tui: paused: {printable(outcome.paused_reason)}", file=sys.stderr)
    return EXIT[outcome.state]


def _progress(echo):
    """Engine events worth a line during a transfer run: failed improver runs, LM replies."""
    from stop_tui.engine.history import describe

    def listener(event: ev.Event) -> None:
        if event.kind in (ev.RUN_FINISHED, ev.LM_REPLY, ev.ERROR):
            line = describe(event)
            if line:
                echo(f"  {line}")

    return listener


# -- output ----------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _cell(cell: dict[str, Any]) -> str:
    if cell["test"] is None:
        return "-"
    lo, hi = cell["ci95"]
    return f"{100 * cell['test']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def render_text(table: list[dict[str, Any]], fmt: str) -> str:
    header = ["task"] + [f"{LABELS[w]} test % [95 % CI]" for w in WHO] + [f"paper {LABELS[w]}" for w in WHO]
    body = []
    for row in table:
        paper = row["paper"] or {}
        body.append([row["task"]] + [_cell(row[w]) for w in WHO] + [_pct(paper.get(w)) for w in WHO])
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["task", *[f"{w}_{k}" for w in WHO for k in ("test", "ci95_lo", "ci95_hi", "val", "n")],
                         *[f"paper_{w}" for w in WHO]])
        for row in table:
            line = [row["task"]]
            for w in WHO:
                c = row[w]
                lo, hi = c["ci95"] or (None, None)
                line += [c["test"], lo, hi, c["val"], c["n"]]
            line += [(row["paper"] or {}).get(w) for w in WHO]
            writer.writerow(["" if v is None else v for v in line])
        return buf.getvalue()
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *body]) + "\n"
