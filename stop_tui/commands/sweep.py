"""`stop-tui sweep`: many STOP runs (tasks x models x seeds), one Ray task per session
(engine/sweep/driver.py), every run a normal session folder in the sweep's folder
(engine/sweep/layout.py). `sweep --resume SWEEP` continues one: finished runs are skipped, the
rest resume from their logs. Bad input is one line and exit 2, before anything starts.
Progress goes to stderr (a live table of the runs on a terminal, a line per ended run
otherwise); `--json` prints the sweep's summary on stdout."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import replace
from typing import Any

from stop_tui.commands import lm_options, run_options
from stop_tui.commands.lm_options import EXIT_CAPPED
from stop_tui.engine.errors import UserError
from stop_tui.engine.untrusted import printable

LLAMACPP = "llamacpp"  # the owner llama.cpp's server lists its model under; it serves any name
EXIT_FAILED = 1  # a run (or a transfer) failed, or the sweep was stopped
# Options that define a sweep: --resume continues one as it was asked.
DEFINING = ("task", "model", "seeds", "preset", "iterations", "base_url", "transfer", "name",
            "max_concurrency", "max_tokens", "max_calls", "max_prompt_tokens", "lm_timeout")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="many runs (tasks x models x seeds) as Ray tasks; resumable",
                       description="One STOP session per (task, model, seed), each a Ray task, every one a "
                                   "normal session folder in the sweep's folder. --max-cost holds for the "
                                   "whole sweep (the sum of all its runs); the other LM options apply to "
                                   "each session.")
    p.add_argument("--task", default=None, help="task name(s), comma-separated (default lpn)")
    p.add_argument("--model", default=None, help="model name(s), comma-separated (default local)")
    p.add_argument("--seeds", default=None, help="seeds: 0-24, 3 or 0,2,5-7 (default 0)")
    p.add_argument("--preset", default=None, choices=run_options.PRESETS, help=run_options.PRESET_HELP)
    p.add_argument("--iterations", type=int, default=None, help="STOP iterations per run (default: the preset's)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server URL (env OPENAI_BASE_URL)")
    p.add_argument("--transfer", default=None, metavar="TASKS",
                   help="after each finished run, the transfer of its final improver to these tasks "
                        "(comma-separated, e.g. grid,mqa,sat,maxcut,parity)")
    p.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                   help="a Ray cluster to run on (env RAY_ADDRESS; default: a local instance)")
    p.add_argument("--max-parallel", type=int, default=None, metavar="N", help="sessions at once (default: as Ray schedules)")
    p.add_argument("--requests-per-endpoint", type=int, default=None, metavar="N",
                   help="LM requests in flight per server, over all runs (default: no bound)")
    p.add_argument("--name", default=None, help="the sweep folder's name (default: the time and the task)")
    p.add_argument("--resume", metavar="SWEEP", help="continue a sweep: finished runs are skipped, the rest resume "
                                                     "(--max-cost raises its cap)")
    p.add_argument("--json", action="store_true", help="print the sweep's summary as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run_options.add_session_options(p)
    lm_options.add_lm_options(p)  # its --max-cost holds for the whole sweep (the sum of all runs)


def cmd_sweep(args: argparse.Namespace) -> int:
    from stop_tui.engine.sweep.driver import SweepDriver, ray_missing
    from stop_tui.engine.sweep.layout import create_sweep, read_sweep, save_spec, sweep_folder

    _check_counts(args)
    sessions_dir = run_options.sessions_dir(args)
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in DEFINING if getattr(args, k, None) is not None]
        if given:
            raise UserError(f"{', '.join(given)}: --resume continues the sweep as it was asked (these "
                            "apply to a new sweep)")
        sweep = read_sweep(sweep_folder(sessions_dir, args.resume))
        cost = lm_options.lm_overrides(args)["cap_cost_usd"]
        spec = replace(sweep.spec, max_cost=cost if cost is not None else sweep.spec.max_cost,
                       max_parallel=args.max_parallel or sweep.spec.max_parallel,
                       requests_per_endpoint=args.requests_per_endpoint or sweep.spec.requests_per_endpoint)
        sessions_dir = sweep.folder.parent
    else:
        sweep, spec = None, new_spec(args)
    missing = ray_missing()
    if missing:
        raise UserError(missing)
    progress = Progress(args.quiet)
    driver = SweepDriver(sessions_dir, spec, address=args.ray_address, on_tick=progress.tick,
                         on_result=progress.result)
    # Ray's driver prints what its raylets report (a worker died, ...) on stdout: stdout is
    # for the --json summary, so everything else goes to stderr meanwhile.
    with contextlib.redirect_stdout(sys.stderr):
        driver.connect()
        try:
            if sweep is None:
                sweep = create_sweep(sessions_dir, spec, args.name)
            elif spec != sweep.spec:
                sweep = save_spec(sweep, spec)
            progress.start(sweep)
            try:
                results = driver.run(sweep)
            except KeyboardInterrupt:
                progress.stop()
                print(f"stop-tui: stopped; continue with: stop-tui sweep --resume {_cli(sweep)}", file=sys.stderr)
                return 130
        finally:
            driver.close()
            progress.stop()
    return report(sweep, results, as_json=args.json)


def _check_counts(args: argparse.Namespace) -> None:
    for name in ("max_parallel", "requests_per_endpoint"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be 1 or more (got {value})")
    if args.iterations is not None and args.iterations < 0:
        raise UserError(f"--iterations must be 0 or more (got {args.iterations})")


def new_spec(args: argparse.Namespace):
    """The spec of a new sweep from its options, every part checked (UserError, one line)."""
    import os

    from stop_tui.engine.sweep.layout import SweepSpec, parse_list, parse_seeds
    from stop_tui.engine.sweep.runner import run_settings
    from stop_tui.engine.tasks import downstream_names, downstream_task, load_task

    seeds = parse_seeds(args.seeds if args.seeds is not None else "0")
    tasks = parse_list("--task", args.task) or ("lpn",)
    for name in tasks:
        downstream_task(name)
    models = parse_list("--model", args.model) or (run_options.DEFAULT_MODEL,)
    transfer = parse_list("--transfer", args.transfer)
    for name in transfer:
        if load_task(name).kind != "solution":
            raise UserError(f"--transfer: {name} is not a downstream task (tasks: {', '.join(downstream_names())})")
    local = all(m.startswith("local") for m in models)
    lm = {k: v for k, v in lm_options.lm_overrides(args).items() if v is not None}
    base_url = args.base_url
    if base_url is None and not local:
        base_url = os.environ.get("OPENAI_BASE_URL")  # the workers' environment may not have it
    spec = SweepSpec(tasks=tasks, models=models, seeds=seeds,
                     preset=args.preset or ("quick" if local else "paper"), iterations=args.iterations,
                     base_url=base_url, transfer=transfer, max_cost=lm.pop("cap_cost_usd", None),
                     max_parallel=args.max_parallel, requests_per_endpoint=args.requests_per_endpoint, lm=lm)
    for key in spec.runs()[:1] + spec.runs()[-1:]:
        run_settings(spec, key)  # seeds and options in range
    check_models(spec)
    return spec


def check_models(spec) -> None:
    """Each model exists before a run starts: a local model's file, a key for OpenAI itself, and
    (when the server lists what it serves) the name among them; with --max-cost, a price. Only
    /models is asked (a GET: nothing is spent)."""
    from stop_tui.engine.lm.prices import price
    from stop_tui.engine.session import make_backend

    for model in spec.models:
        backend = make_backend(model, spec.base_url, check=True)
        try:
            if spec.max_cost is not None and price(backend.price_key) is None:
                raise UserError(f"--max-cost needs a price for {backend.price_key!r}, which is not in the "
                                "price table (stop_tui/engine/lm/prices.toml): use --max-tokens or --max-calls")
            listing = getattr(backend, "listing", None)
            listed = listing() if listing is not None else None
            if not listed or any(owner == LLAMACPP for _, owner in listed):
                continue  # cannot say, or llama.cpp's server: it serves any name
            names = [name for name, _ in listed]
            if model not in names and f"{model}:latest" not in names:  # Ollama serves `name:latest` as `name`
                raise UserError(f"unknown model {model!r}: {backend.base_url} serves "
                                f"{', '.join(sorted(names)[:8])}{' ...' if len(names) > 8 else ''}")
        finally:
            backend.close()


def report(sweep, results: dict[str, dict[str, Any]], *, as_json: bool) -> int:
    """The summary (stdout: what `show SWEEP --json` prints, with each failed session's error;
    else one line), and the exit code: 0 when every run (and transfer) finished, 3 when one
    waits on a cap, 1 otherwise (one failed, or was stopped)."""
    from stop_tui.engine.sweep.layout import TRANSFER_SUFFIX
    from stop_tui.engine.sweep.status import states_line, sweep_summary

    summary = sweep_summary(sweep)
    state, counts = summary["state"], summary["totals"]
    if as_json:
        for row in summary["runs"]:
            errors = {name: results[name]["error"] for name in (row["run"], row["run"] + TRANSFER_SUFFIX)
                      if results.get(name, {}).get("error")}
            if errors:
                row["errors"] = errors
        print(json.dumps(summary, indent=2))
    else:
        cost = f", ${counts['cost_usd']:.4f}" if counts.get("cost_usd") is not None else ""
        print(f"sweep {sweep.id}: {state}: {states_line(counts)}{cost}; details: stop-tui show {_cli(sweep)}")
    if state == "finished":
        return 0
    if state == "capped":
        return EXIT_CAPPED
    return EXIT_FAILED


def _cli(sweep) -> str:
    from stop_tui.engine.store import cli_name

    return cli_name(sweep.folder)


class Progress:
    """The sweep's progress on stderr: on a terminal a live table of the runs (state, iteration,
    best, spend) and the total, redrawn each tick; otherwise a line per ended session."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.live: Any = None
        self.reader: Any = None
        self.sweep: Any = None

    def start(self, sweep) -> None:
        from stop_tui.engine.sweep.status import StatusReader

        self.sweep, self.reader = sweep, StatusReader(sweep)
        if self.quiet:
            return
        runs = sweep.spec.runs()
        print(f"sweep {sweep.id} ({sweep.folder}): {len(runs)} run(s); continue it later with "
              f"stop-tui sweep --resume {_cli(sweep)}", file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self._table(), console=Console(stderr=True), auto_refresh=False, transient=False)
            self.live.start()

    def tick(self) -> None:
        if self.live is not None:
            self.live.update(self._table(), refresh=True)

    def result(self, result: dict[str, Any]) -> None:
        if self.quiet or self.live is not None:
            return
        s = result.get("summary") or {}
        best = s.get("best_meta_utility")
        cost = (s.get("lm") or {}).get("cost_usd")
        parts = [result["outcome"]]
        if s.get("kind", "stop") == "stop" and s:
            parts.append(f"{s.get('iterations_completed', 0)}/{s.get('iterations_planned', '?')} iteration(s)")
            parts.append(f"best {best:.4f}" if isinstance(best, float) else "best -")
        if isinstance(cost, int | float):
            parts.append(f"${cost:.4f}")
        if result.get("error"):
            parts.append(printable(result["error"].splitlines()[0]))
        print(f"{result['run']}: {', '.join(parts)}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.live is not None:
            self.tick()
            self.live.stop()
            self.live = None

    def _table(self):
        from rich.table import Table

        from stop_tui.commands.sweep_view import spend
        from stop_tui.engine.sweep.status import states_line, totals

        runs = self.reader.status()
        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("run", "state", "iteration", "best û", "spend", "transfer"):
            table.add_column(column)
        for r in runs:
            best = f"{r.best:.4f}" if r.best is not None else "-"
            table.add_row(r.key.name, r.state, f"{r.iteration}/{r.iterations}", best,
                          spend(r.cost_usd, r.tokens), r.transfer or "")
        counts = totals(runs)
        cost = f", ${counts['cost_usd']:.4f}" if counts.get("cost_usd") is not None else ""
        table.caption = f"{states_line(counts)}; {counts['calls']} calls, {counts['tokens']} tokens{cost}"
        return table
