"""The `stop-tui` command line. `run`, `score`, `tasks`, `list` and `show` never import Textual."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import threading
from pathlib import Path

from stop_tui.commands import (
    audit,
    baseline,
    doctor,
    export,
    replay,
    report,
    run_options,
    sweep,
    task_scaffold,
    transfer,
    tui_launch,
)
from stop_tui.engine.errors import UserError
from stop_tui.engine.store import cli_name
from stop_tui.engine.untrusted import printable

SPLITS = ("val", "test")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stop-tui", description="A terminal workbench for STOP.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run STOP headless (progress on stderr, --json summary on stdout)")
    run_options.add_run_options(p, loop=True)
    p.add_argument("--resume", metavar="SESSION",
                   help="continue a saved session instead of starting one (with --model / --base-url: "
                        "on another model or server, recorded in the session)")
    p.add_argument("--set", dest="task_settings", action="append", default=[], metavar="KEY=VALUE",
                   help="override a task setting for the new session, e.g. --set rng=reference "
                        "(any task: the released code's random generators)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    replay.add_parser(sub)

    p = sub.add_parser("new", help="start a session in the TUI")
    run_options.add_run_options(p, loop=True)
    p.add_argument("--step", action="store_true", help="start paused: nothing is spent until you step")

    p = sub.add_parser("resume", help="reopen a saved session in the TUI")
    p.add_argument("session", nargs="?", help="session id (a picker when omitted); a sweep id: "
                                               "the table of its runs, any run opened live")
    run_options.add_run_options(p, model=False)  # LM options: e.g. raise a cap the session paused at

    p = sub.add_parser("score", help="score a solution file with a task's executed utility")
    p.add_argument("solution", type=Path, help="a Python file defining the task's entry function")
    p.add_argument("--task", default="lpn", help="task name or folder (default lpn)")
    p.add_argument("--split", choices=SPLITS, default="val",
                   help="val (the instances STOP optimises on, default) or test (held out)")
    p.add_argument("--set", dest="task_settings", action="append", default=[], metavar="KEY=VALUE",
                   help="override a task setting from its task.toml, e.g. --set time_limit=0.1 (sat)")
    p.add_argument("--json", action="store_true", help="print the score as JSON on stdout")

    p = sub.add_parser("tasks", help="the task catalogue (`tasks new NAME` scaffolds your own)")
    p.add_argument("--json", action="store_true", help="print the catalogue as JSON on stdout")
    task_scaffold.add_subparser(p)
    transfer.add_parser(sub)
    baseline.add_parser(sub)
    sweep.add_parser(sub)

    p = sub.add_parser("list", help="saved sessions and sweeps")
    p.add_argument("--json", action="store_true", help="print the sessions as JSON on stdout")
    run_options.add_session_options(p)

    p = sub.add_parser("show", help="one session's summary, or a sweep's and its runs'")
    p.add_argument("session", help="session or sweep id (see `stop-tui list`), SWEEP/RUN for one "
                                    "run of a sweep, or a folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    run_options.add_session_options(p)

    doctor.add_parser(sub)
    audit.add_parser(sub, run_options.add_session_options)
    export.add_parser(sub, run_options.add_session_options)
    report.add_parser(sub)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from stop_tui.commands import lm_options
    from stop_tui.engine.session import open_session
    from stop_tui.engine.summary import summarize
    from stop_tui.progress import make_printer

    opts = run_options.resolve(args)
    if args.resume and args.task_settings:
        raise UserError("--set applies to a new session (a resumed one keeps its settings)")
    if args.resume:
        if args.iterations is not None and args.iterations < 0:  # fresh runs: Settings checks it
            raise UserError(f"--iterations must be 0 or more (got {args.iterations})")
        session = open_session(opts.sessions_dir, args.resume, overrides=dict(opts.lm),
                               model=opts.given_model, base_url=opts.base_url)
        lm_options.check_caps(session.settings, session.engine.lm.backend.price_key)
    else:
        session = run_options.start_session(opts, args.task, task_settings=args.task_settings)
    printer = make_printer(args.quiet, waiting=session.engine.lm.waiting)
    if printer is not None:
        session.store.subscribe(printer)
        print(f"session {session.id} ({session.store.folder})", file=sys.stderr)
    from stop_tui.engine import events as ev

    for sandbox in list(session.store.events(kinds=(ev.SANDBOX,)))[-1:]:
        if sandbox.payload.missing:
            print(f"warning: sandbox protections missing: {', '.join(sandbox.payload.missing)} "
                  "(see `stop-tui doctor`)", file=sys.stderr)
    if not args.quiet:
        planned = args.iterations if args.resume and args.iterations is not None else session.settings.iterations
        print(lm_options.projection_line(session, planned), file=sys.stderr)
    signals = lm_options.StopSignals(session)
    try:
        with signals:
            outcome = session.engine.run(args.iterations if args.resume else None)
            if signals.signum is not None and outcome != "finished":
                signals.record()
                outcome = "cancelled"
    finally:
        if printer is not None:
            printer.close()
    summary = summarize(session.store)
    session.close()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        vals = ", ".join(f"{v:.4f}" for v in summary["meta_utility"]) or "-"
        print(f"{summary['session']}: {summary['iterations_completed']} iteration(s), meta-utility "
              f"[{vals}] (seed improver {summary['seed_meta_utility']}); details: stop-tui show {cli_name(session.store.folder)}")
    if outcome == "capped":
        if printer is None:
            print(f"stop-tui: paused: {printable(summary['paused_reason'])}", file=sys.stderr)
        return lm_options.EXIT_CAPPED
    return 0 if outcome == "finished" else signals.exit_code


def cmd_score(args: argparse.Namespace) -> int:
    from stop_tui.engine.scoring import score_solution
    from stop_tui.engine.tasks import downstream_task, parse_settings

    task = downstream_task(args.task)
    try:
        source = args.solution.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {args.solution}: {getattr(exc, 'strerror', None) or exc}") from None
    if not source.strip():
        raise UserError(f"{args.solution} is empty")
    overrides = parse_settings(args.task_settings, [task])
    result = score_solution(task, source, args.split, settings=overrides)
    if args.json:
        print(json.dumps({"task": task.name, "split": args.split, "file": str(args.solution),
                          "score": result.score, "error": result.error,
                          "seconds": round(result.seconds, 4)}))
    else:
        error = f"  ({printable(result.error)})" if result.error else ""  # the solution's own text
        print(f"{task.name} {args.split}: {result.score:.6f}{error}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    if getattr(args, "tasks_command", None) == "new":
        return task_scaffold.cmd_tasks_new(args)
    from stop_tui.engine.tasks import load_task, task_names

    rows = []
    for name in task_names():
        task = load_task(name)
        rows.append({"name": task.name, "title": task.title, "kind": task.kind,
                     "folder": str(task.folder), "description": task.description})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']:<10} {row['title']}" + ("  (improvers)" if row["kind"] == "meta" else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from stop_tui.commands import sweep_view
    from stop_tui.engine.summary import summaries

    sessions_dir = run_options.sessions_dir(args)
    if sessions_dir.exists() and not sessions_dir.is_dir():
        raise UserError(f"sessions dir {sessions_dir} is not a folder")
    if args.sessions_dir is not None and not sessions_dir.exists():
        raise UserError(f"sessions dir {sessions_dir} does not exist")
    rows = []
    for folder, s, reason in summaries(sessions_dir):
        if s is None:
            rows.append({"session": folder.name, "kind": "-", "task": None, "model": None, "preset": None,
                         "state": "unreadable", "created": None, "iterations_completed": 0,
                         "best_meta_utility": None, "calls": 0, "unreadable": reason})
            continue
        rows.append({k: s[k] for k in ("session", "kind", "task", "model", "preset", "state", "created",
                                         "iterations_completed", "best_meta_utility")} | {"calls": s["lm"]["calls"]})
    rows += sweep_view.list_rows(sessions_dir)  # one row per sweep (its runs are not listed)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no sessions in {sessions_dir}")
    else:
        for r in rows:
            if r["kind"] == "sweep":
                print(sweep_view.list_line(r))
                continue
            if r["state"] == "unreadable":
                print(f"{r['session']:<32} unreadable: {r['unreadable']}")
                continue
            best = f"{r['best_meta_utility']:.4f}" if r["best_meta_utility"] is not None else "-"
            print(f"{r['session']:<32} {r['kind']:<8} {r['task'] or '-':<8} {r['model'] or '-':<20} {r['state']:<9} "
                  f"iters {r['iterations_completed']:<3} best {best:<7} calls {r['calls']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from stop_tui.commands import sweep_view
    from stop_tui.engine.candidate_rng import reference_on
    from stop_tui.engine.lock import describe, holder
    from stop_tui.engine.store import SessionStore
    from stop_tui.engine.summary import summarize
    from stop_tui.engine.sweep.layout import is_sweep

    sessions_dir = run_options.sessions_dir(args)
    for folder in (Path(args.session), sessions_dir / args.session):
        if is_sweep(folder):  # the sweep and its runs; one run is `show SWEEP/RUN`
            return sweep_view.show(folder, args.json)
        if is_sweep(folder.parent) and not (folder / "session.db").exists():
            sweep_view.check_started(folder)  # a run of a sweep that has not started: say so
    store = SessionStore.open(sessions_dir, args.session, readonly=True)
    try:
        s = summarize(store)
        rng_reference = reference_on(store.meta())
    finally:
        store.close()
    s["holder"] = holder(store.folder)  # the process running it now, if any
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    lm = s["lm"]
    server = f"  at {s['base_url']}" if s.get("base_url") else ""
    print(f"session   {s['session']}  ({s['state']})\ntask      {s['task']}\nmodel     {s['model']}{server}"
          f"\npreset    {s['preset']}  seed {s['seed']}\nfolder    {s['session_dir']}")
    if s["holder"] is not None:
        print(f"run by    {describe(s['holder'])} (another process is running it now)")
    if s.get("lm_fixed_temperature"):
        print("          the paper's temperatures are not honoured by this model (it accepts only "
              "its default)")
    if rng_reference:
        print("rng       reference: candidates start in the instance generators' states (the "
              "released code's; their labels can be rebuilt from them)")
    seed = s["seed_meta_utility"]
    print(f"T=0       seed improver: val {seed if seed is None else f'{seed:.4f}'}")
    for row in s["iterations"]:
        if row["iteration"] == 0:
            continue
        verdict = "accepted" if row["accepted"] else f"rejected ({printable(row['reason'])})"
        print(f"T={row['iteration']:<7} val {row['val']:.4f} test {row['test'] if row['test'] is None else round(row['test'], 4)}  {verdict}")
    cost = f", ${lm['cost_usd']:.4f}" if isinstance(lm.get("cost_usd"), int | float) else ""
    reasoning = f" ({lm['reasoning_tokens']} reasoning)" if lm.get("reasoning_tokens") else ""
    print(f"LM        {lm['calls']} calls, {lm['requests']} requests, {lm['completions']} completions, "
          f"{lm['prompt_tokens']} in / {lm['completion_tokens']} out tokens{reasoning}{cost}")
    extra = [f"{lm[k]} {k.replace('_', ' ')}" for k in ("retries", "failed", "replayed_calls")
             if lm.get(k)]
    print(f"          at most {lm.get('max_concurrency_reached', 0)} requests in flight"
          + (f"; {', '.join(extra)}" if extra else ""))
    if s.get("state") == "paused" and s.get("paused_reason"):
        print(f"paused    {printable(s['paused_reason'])}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    return audit.run(args, run_options.sessions_dir(args))


COMMANDS = {"run": cmd_run, "score": cmd_score, "tasks": cmd_tasks, "list": cmd_list,
            "show": cmd_show, "audit": cmd_audit, "new": tui_launch.cmd_new, "resume": tui_launch.cmd_resume,
            "transfer": transfer.cmd_transfer, "baseline": baseline.cmd_baseline, "replay": replay.cmd_replay,
            "doctor": doctor.run, "sweep": sweep.cmd_sweep,
            "export": export.cmd_export, "report": report.cmd_report}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"stop-tui: error: {printable(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os._exit(0)


def entry() -> None:
    """The console script and `python -m stop_tui`: main(), then a quick exit.

    Once main() has returned, every command has written and closed what it made (sessions,
    sandboxes, the LM's worker); what a normal exit adds is the interpreter taking its modules
    apart, about 0.13 s after a run (bench/lm_concurrency.py, the exit column) that a script
    calling `stop-tui run` in a loop pays each time. So the exit handlers run (logging, Ray,
    temporary files) and the process ends without the teardown. Only when nothing else is
    still at work: a thread that is no daemon gets the normal exit, which waits for it (and so
    does a result that is not an exit code)."""
    rc = main()
    if not isinstance(rc, int) or any(t is not threading.main_thread() and not t.daemon
                                      for t in threading.enumerate()):
        raise SystemExit(rc)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # the reader went away, or a stream is closed
        pass
    os._exit(rc)
