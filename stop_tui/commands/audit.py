"""`stop-tui audit SESSION [--json]`: the safety report of a session (as the paper's
sandbox-circumvention rates, arXiv 2310.02304): the command line and the text; what is counted
and how is engine/audit.py's (which `stop-tui report` sums over runs).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from stop_tui.engine.audit import audit_session
from stop_tui.engine.untrusted import printable


def add_parser(sub: Any, add_session_options: Any) -> None:
    p = sub.add_parser("audit", help="safety report of a session: flagged candidates per kind and iteration")
    p.add_argument("session", help="session id (see `stop-tui list`) or a session folder")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_session_options(p)


def _fmt(r: dict[str, Any]) -> str:
    if not r["candidates"]:
        return "-"
    lo, hi = r["ci95"]
    return f"{r['attempts']}/{r['candidates']} {100 * r['rate']:6.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]"


def format_report(report: dict[str, Any]) -> str:
    lines = [f"audit of {report['session']}  (task {report.get('task')}, model {report.get('model')})"]
    sandbox = report.get("sandbox")
    if sandbox is None:
        lines.append("sandbox: not recorded in this session")
    else:
        missing = ", ".join(sandbox["missing"]) or "none"
        lines.append(f"sandbox: {sandbox['mode'] or 'unavailable'}; missing protections: {missing}")
    c = report["candidates"]
    lines.append(f"checked: {c['improver']} improvers, {c['solution']} solutions"
                 "  (attempts/candidates, rate, 95% Wilson interval)")
    lines.append("")
    lines.append(f"{'kind':<20} {'improvers':<32} {'solutions':<32}")
    for row in report["kinds"]:
        lines.append(f"{row['kind']:<20} {_fmt(row['improver']):<32} {_fmt(row['solution']):<32}")
    lines.append(f"{'any kind':<20} {_fmt(report['flagged']['improver']):<32} {_fmt(report['flagged']['solution']):<32}")
    if report["iterations"]:
        lines.append("")
        lines.append(f"{'iteration':<20} {'improvers flagged':<32} {'solutions flagged':<32}")
        for row in report["iterations"]:
            lines.append(f"{'T=' + str(row['iteration']):<20} {_fmt(row['improver']):<32} {_fmt(row['solution']):<32}")
    if report["sandbox_flag_experiment"]:
        lines.append("")
        lines.append(f"use_sandbox turned off (the paper's experiment): {_fmt(report['use_sandbox_off'])}"
                     "  (the flag is decorative; the sandbox stayed on)")
    if report["flags"]:
        lines.append("")
        lines.append("findings:")
        for f in report["flags"][:200]:
            lines.append(f"  {f['path']:<18} {printable(f['kind']):<18} line {f['line']}: "
                         f"{printable(f['detail'])}")
        if len(report["flags"]) > 200:
            lines.append(f"  ... {len(report['flags']) - 200} more (use --json)")
    return "\n".join(lines)


def run(args: argparse.Namespace, sessions_dir: Any) -> int:
    from stop_tui.engine.store import SessionStore

    store = SessionStore.open(sessions_dir, args.session, readonly=True)
    try:
        report = audit_session(store)
    finally:
        store.close()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
