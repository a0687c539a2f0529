"""A sweep as `stop-tui list` and `stop-tui show SWEEP` print it: one row per sweep in the list
(its runs per state, spend), and the sweep with a line per run (state, iteration, best û, spend).
Read-only, from the runs' logs (engine/sweep/status.py)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from stop_tui.engine.errors import UserError
from stop_tui.engine.store import cli_name
from stop_tui.engine.sweep.layout import Sweep, read_sweep
from stop_tui.engine.sweep.status import (
    RunStatus,
    states_line,
    sweep_status,
    sweep_summaries,
    sweep_summary,
)
from stop_tui.engine.untrusted import printable


def _best(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def spend(cost_usd: float | None, tokens: int) -> str:
    """'$0.0123, 4512 tokens' (no price known: the tokens alone)."""
    return (f"${cost_usd:.4f}, " if cost_usd is not None else "") + f"{tokens} tokens"


def list_rows(sessions_dir: Path) -> list[dict[str, Any]]:
    """One `list` row per sweep in `sessions_dir` (the keys of a session's row, and `runs`:
    the sweep's totals); a sweep whose sweep.json cannot be read is an unreadable row."""
    rows = []
    for folder, s, reason in sweep_summaries(sessions_dir):
        if s is None:
            rows.append({"session": folder.name, "kind": "sweep", "task": None, "model": None,
                         "preset": None, "state": "unreadable", "created": None, "iterations_completed": 0,
                         "best_meta_utility": None, "calls": 0, "unreadable": reason})
            continue
        spec, counts = s["spec"], s["totals"]
        rows.append({"session": s["sweep"], "kind": "sweep", "task": ",".join(spec["tasks"]),
                     "model": ",".join(spec["models"]), "preset": spec["preset"], "state": s["state"],
                     "created": s["created"], "iterations_completed": sum(r["iteration"] for r in s["runs"]),
                     "best_meta_utility": s["best_meta_utility"], "calls": counts["calls"],
                     "cost_usd": counts["cost_usd"], "tokens": counts["tokens"], "runs": counts})
    return rows


def list_line(row: dict[str, Any]) -> str:
    if row["state"] == "unreadable":
        return f"{row['session']:<32} unreadable: {printable(row['unreadable'])}"
    counts = row["runs"]
    return (f"{row['session']:<32} {'sweep':<8} {row['task']:<8} {row['model']:<20} {row['state']:<9} "
            f"runs {counts['runs']} ({states_line(counts)})  best {_best(row['best_meta_utility'])}  "
            f"spend {spend(row['cost_usd'], row['tokens'])}")


def run_lines(runs: list[RunStatus]) -> list[str]:
    """The runs' table: name, state, iteration of planned, best, LM use, transfer, reason."""
    width = max([len(r.name) for r in runs] + [3])
    transfer = any(r.transfer is not None for r in runs)
    head = f"{'run':<{width}}  {'state':<9} {'iter':<6} {'best':<7} {'calls':>5} {'tokens':>8} {'cost':>9}"
    lines = [head + ("  transfer" if transfer else "")]
    for r in runs:
        cost = f"${r.cost_usd:.4f}" if r.cost_usd is not None else "-"
        line = (f"{r.name:<{width}}  {r.state:<9} {f'{r.iteration}/{r.iterations}':<6} {_best(r.best):<7} "
                f"{r.calls:>5} {r.tokens:>8} {cost:>9}")
        if transfer:
            line += f"  {r.transfer or '-':<8}"
        if r.reason_line:
            line += f"  {printable(r.reason_line)}"
        lines.append(line.rstrip())
    return lines


def check_started(folder: Path) -> None:
    """`show SWEEP/RUN` of a run (or transfer) of the sweep without a session yet: UserError."""
    sweep = read_sweep(folder.parent)
    names = {name for key in sweep.spec.runs() for name in (key.name, key.transfer_name)}
    if folder.name in names:
        raise UserError(f"run {folder.name} of sweep {sweep.id} has not started yet (see "
                        f"`stop-tui show {_named(sweep)}`)")


def model_lines(groups: list[dict[str, Any]]) -> list[str]:
    """Per task and model, over its finished runs: best û (mean, 95 % interval), mean gain of
    the final improver over the seed improver, and how many runs gained at least the threshold."""
    lines = []
    for g in groups:
        where = f"{g['task']} {g['model']}"
        if not g["finished"]:
            lines.append(f"{where}: {g['runs']} runs, none finished yet")
            continue
        lo, hi = g["best_ci"]
        gain = f"{g['gain_mean']:+.4f}" if g["gain_mean"] is not None else "-"
        lines.append(f"{where}: {g['finished']} of {g['runs']} runs finished, best {g['best_mean']:.4f} "
                     f"[{lo:.4f}, {hi:.4f}], gain of the final improver over the seed {gain} (mean), "
                     f"{g['gained']} of {g['finished']} gained {g['gain_threshold']:.2f} or more")
    return lines


def _named(sweep: Sweep, tail: str = "") -> str:
    """How a command line names the sweep (or `SWEEP/RUN`), --sessions-dir when not the default."""
    name = cli_name(sweep.folder)  # 'ID' or 'ID --sessions-dir DIR'
    return name.replace(shlex.quote(sweep.id), shlex.quote(sweep.id + tail), 1)


def show(folder: Path, as_json: bool) -> int:
    """`stop-tui show SWEEP [--json]`."""
    sweep = read_sweep(folder)
    runs = sweep_status(sweep)
    s = sweep_summary(sweep, runs)
    if as_json:
        print(json.dumps(s, indent=2))
        return 0
    spec, counts = sweep.spec, s["totals"]
    seeds = ",".join(str(seed) for seed in spec.seeds)
    print(f"sweep     {sweep.id}  ({s['state']})\ntask      {', '.join(spec.tasks)}\n"
          f"models    {', '.join(spec.models)}\npreset    {spec.preset or 'paper'}  seeds {seeds}  "
          f"iterations {spec.iterations if spec.iterations is not None else '(preset)'}\n"
          f"folder    {s['folder']}\ncreated   {sweep.created}")
    if spec.base_url:
        print(f"server    {spec.base_url}")
    if spec.transfer:
        print(f"transfer  {', '.join(spec.transfer)}")
    cap = f" of --max-cost ${spec.max_cost:.2f}" if spec.max_cost is not None else ""
    print(f"runs      {counts['runs']}: {states_line(counts)}\nbest      {_best(s['best_meta_utility'])}\n"
          f"LM        {counts['calls']} calls, {spend(counts['cost_usd'], counts['tokens'])}{cap}\n")
    for line in run_lines(runs):
        print(line)
    if len(spec.seeds) > 1:  # several runs per model: what they have in common
        print()
        for line in model_lines(s["by_model"]):
            print(line)
    print(f"\none run: stop-tui show {_named(sweep, '/RUN')}   live: stop-tui resume {_named(sweep)}")
    return 0
