"""`stop-tui report SWEEP|SESSION... [--format md|csv|json|html] [--plot FIG.svg|FIG.png] [--out DIR]`:
the paper's figures and tables over many runs (engine/report/build.py), read from the session
folders alone. The report goes to stdout, or to DIR/report.<format> with --out; --plot writes
the figures (engine/report/figures.py, the optional extra `[plots]`), and with --plot alone
(no --format, no --out) only the figures are written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stop_tui.commands import run_options
from stop_tui.engine.errors import UserError

PLOT_SUFFIXES = (".svg", ".png")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from stop_tui.engine.report.render import FORMATS

    p = sub.add_parser("report", help="the paper's figures and tables over a sweep or many sessions",
                       description="Self-improvement curves with 95 % intervals per (task, model, preset), the "
                                   "runs that gained 3 points, the transfer table beside the paper's, the "
                                   "safety table summed over runs, LM spend, failed runs.")
    p.add_argument("names", nargs="+", metavar="SWEEP|SESSION",
                   help="sweep ids (their runs and transfer sessions), session ids, SWEEP/RUN, or folders")
    p.add_argument("--format", choices=FORMATS, default=None, help="md (default), csv, json, or html (one file, "
                                                                    "figures inline with the [plots] extra)")
    p.add_argument("--plot", type=Path, default=None, metavar="FIG.svg|FIG.png",
                   help="write the figures too: FIG-curve.svg, FIG-transfer.svg, FIG-spend.svg (those with "
                        "data), or the one named curve.svg, transfer.svg or spend.svg; needs "
                        "pip install 'stop-tui[plots]'")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="write DIR/report.<format> instead of stdout")
    run_options.add_session_options(p)


def _out_dir(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --out {folder}: {exc.strerror or exc}") from None
    return folder


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_report(args: argparse.Namespace) -> int:
    from stop_tui.engine.report.build import build_report
    from stop_tui.engine.report.render import render

    if args.plot is not None and args.plot.suffix.lower() not in PLOT_SUFFIXES:
        raise UserError(f"--plot {args.plot}: name an .svg or a .png file")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is not a folder")
    report = build_report(run_options.sessions_dir(args), args.names)
    out = _out_dir(args.out) if args.out is not None else None  # created once the report is read
    fmt = args.format or "md"
    if args.plot is not None:  # first: a missing extra or an unwritable figure leaves nothing half-written
        from stop_tui.engine.report import figures

        try:
            written = figures.write(report, args.plot)
        except OSError as exc:
            raise UserError(f"cannot write {args.plot}: {exc.strerror or exc}") from None
        for path in written or [args.plot]:
            print(f"wrote {path}", file=sys.stderr)
        if args.format is None and out is None:
            return 0
    text = render(report, fmt)
    if out is None:
        sys.stdout.write(text)
    else:
        path = out / f"report.{fmt}"
        _write(path, text)
        print(f"wrote {path}", file=sys.stderr)
    return 0
