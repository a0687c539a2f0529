"""`stop-tui transfer`: does an improver carry over to other tasks? (the paper's transfer table)

For each downstream task it measures three things, in the paper's order:
  u(s)    the task's seed solution, scored by the executed utility;
  û(I0)   the seed improver's meta-utility on that task;
  û(IT)   the given improver's meta-utility on that task.
Each is measured `--runs` times. One run of û is one `Engine.meta_score` call (`meta_runs`
improver runs, each with a fresh LM budget); the 95 % interval is taken over the individual
improver runs (their downstream scores), for u(s) over the runs. The headline split is test,
as in the paper's table; val is reported beside it.

Everything is recorded in a session (meta kind "transfer"): the engine's own events for every
LM call and improver run, plus one `transfer_started` / `transfer_scored` pair per task /
improver / run, so a long run shows progress and `--resume SESSION` skips what is done.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stop_tui.commands.lm_options import EXIT_CAPPED
from stop_tui.engine import events as ev
from stop_tui.engine.errors import Cancelled, UserError
from stop_tui.engine.store import SessionStore, SessionUnreadable, cli_name, default_sessions_dir
from stop_tui.engine.untrusted import printable

KIND = "transfer"
STARTED = "transfer_started"  # {task, who, run}
SCORED = "transfer_scored"  # {task, who, run, val, test, run_vals?, run_tests?, errors}
FINISHED = "transfer_finished"  # {rows}
WHO = ("seed_solution", "seed_improver", "improver")
LABELS = {"seed_solution": "u(s)", "seed_improver": "û(I0)", "improver": "û(IT)"}
DEFAULT_TASKS = ("grid", "mqa", "sat", "maxcut", "parity")

# The paper's transfer table (GPT-4; an improver self-improved on LPN only; arXiv 2310.02304).
PAPER = {
    "grid": (0.439, 0.443, 0.567),
    "mqa": (0.204, 0.206, 0.221),
    "sat": (0.0, 0.212, 0.751),
    "maxcut": (0.0, 0.587, 0.742),
    "parity": (0.500, 0.593, 0.817),
}

# Two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_ci(values: list[float]) -> tuple[float | None, list[float] | None]:
    """The mean and a 95 % Student-t interval (clipped to [0, 1]); [m, m] for one value."""
    if not values:
        return None, None
    n = len(values)
    m = sum(values) / n
    if n == 1:
        return m, [m, m]
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    half = t * sd / math.sqrt(n)
    return m, [max(0.0, m - half), min(1.0, m + half)]


# -- the improver to evaluate --------------------------------------------------------------

def resolve_improver(spec: str, sessions_dir: Path) -> tuple[str, str]:
    """(source, description) for FILE, SESSION or SESSION:ITERATION (the improver the session
    held after that iteration; without one, its current improver)."""
    path = Path(spec)
    if path.is_file():
        try:
            source = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
        if "improve_algorithm" not in source:
            raise UserError(f"{path} defines no improve_algorithm(initial_solution, utility, language_model)")
        return source, str(path)
    session, iteration = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit():
        session, iteration = head, int(tail)
    try:
        store = SessionStore.open(sessions_dir, session, readonly=True)
    except SessionUnreadable:
        raise
    except UserError:
        raise UserError(f"--improver {spec!r} is neither a file nor a session in {sessions_dir}") from None
    try:
        store.verify()
        held: dict[int, str] = {}
        for event in store.events(kinds=(ev.ITERATION_ACCEPTED, ev.ITERATION_REJECTED)):
            digest = event.data.get("improver") if event.kind == ev.ITERATION_ACCEPTED else event.data.get("kept")
            held[int(event.data.get("iteration", 0))] = digest
        if not held:
            raise UserError(f"session {store.id} has no scored improver yet")
        if iteration is None:
            iteration = max(held)
        if iteration not in held:
            raise UserError(f"session {store.id} has no iteration {iteration} "
                            f"(done: {', '.join(map(str, sorted(held)))})")
        source = store.text(held[iteration])
        if not source:
            raise UserError(f"session {store.id}: the improver of iteration {iteration} is missing")
        return source, f"{store.id}:{iteration}"
    finally:
        store.close()


# -- running ---------------------------------------------------------------------------------

@dataclass
class Plan:
    tasks: list[str]
    runs: int
    improver: str
    improver_label: str


def recorded(store: SessionStore) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(e.data["task"], e.data["who"], int(e.data["run"])): e.data
            for e in store.events(kinds=(SCORED,))}


def _run_scores(store: SessionStore, path: str, after: int) -> tuple[list[float], list[float]]:
    """Per improver run (val, test) downstream scores of the meta_score at `path`."""
    vals, tests = [], []
    prefix = path + "/r"
    for e in store.events(after=after, kinds=(ev.RUN_FINISHED,)):
        rest = e.path[len(prefix):] if e.path.startswith(prefix) else None
        if rest is not None and rest.isdigit():
            vals.append(float(e.data.get("val") or 0.0))
            tests.append(float(e.data.get("test") or 0.0))
    return vals, tests


def execute(store: SessionStore, plan: Plan, session_engine, settings, *, overrides: dict[str, Any],
            echo=None) -> None:
    """Measure every (task, who, run) not yet recorded; each is committed as it completes."""
    from stop_tui.engine.gate import ITERATION
    from stop_tui.engine.loop import Engine
    from stop_tui.engine.tasks import META, load_task

    done = recorded(store)
    meta = load_task(META)
    lm, gate = session_engine.lm, session_engine.gate
    for name in plan.tasks:
        task = load_task(name)
        known = {k: v for k, v in overrides.items() if k in task.settings}
        if known:
            task = replace(task, settings={**task.settings, **known})
        engine = Engine(store, settings, task, meta, lm, gate)
        for who in WHO:
            for k in range(1, plan.runs + 1):
                if (name, who, k) in done:
                    continue
                gate.passage(ITERATION)
                path = f"{name}/{who}/n{k}"
                mark = store.append(ev.Event(STARTED, path, {"task": name, "who": who, "run": k})).seq
                if echo:
                    echo(f"{name}: {LABELS[who]} run {k}/{plan.runs} ...")
                data: dict[str, Any] = {"task": name, "who": who, "run": k}
                if who == "seed_solution":
                    data["val"] = engine.score_downstream(task.seed, f"{path}/val", "val")
                    data["test"] = engine.score_downstream(task.seed, f"{path}/test", "test")
                else:
                    source = meta.seed if who == "seed_improver" else plan.improver
                    result = engine.meta_score(source, path, with_test=True)
                    data["val"], data["test"] = result.val, result.test
                    data["run_vals"], data["run_tests"] = _run_scores(store, path, mark)
                    data["errors"] = result.errors[:5]
                store.append(ev.Event(SCORED, path, data))
                if echo:
                    echo(f"{name}: {LABELS[who]} run {k}/{plan.runs}: test {data['test']:.4f}, "
                         f"val {data['val']:.4f}")


def rows(store: SessionStore, plan: Plan) -> list[dict[str, Any]]:
    done = recorded(store)
    out = []
    for name in plan.tasks:
        row: dict[str, Any] = {"task": name}
        for who in WHO:
            results = [done[(name, who, k)] for k in range(1, plan.runs + 1) if (name, who, k) in done]
            if who == "seed_solution":
                tests = [r["test"] for r in results]
                vals = [r["val"] for r in results]
            else:
                tests = [x for r in results for x in r.get("run_tests", [r["test"]])]
                vals = [x for r in results for x in r.get("run_vals", [r["val"]])]
            m, ci = mean_ci(tests)
            vm, vci = mean_ci(vals)
            row[who] = {"test": m, "ci95": ci, "val": vm, "val_ci95": vci, "n": len(tests),
                        "runs": len(results)}
        paper = PAPER.get(name)
        row["paper"] = dict(zip(WHO, paper, strict=True)) if paper else None
        out.append(row)
    return out


def _restore_lm(lm, store: SessionStore) -> None:
    """On resume: the session's LM totals so far, and its record, so that a unit cut short
    gets the answers it already paid for from the record instead of the server."""
    restore = getattr(lm, "restore", None)
    if restore is None:
        return
    from stop_tui.engine.lm.record import Book

    events = list(store.events())
    totals = next((e.data for e in reversed(events) if e.kind == ev.BUDGET), None)
    restore(totals, Book.from_events(events, store.text))
    store.append(ev.Event(ev.RESUMED, "", {"kind": KIND}))


def _progress(echo):
    """Engine events worth a line during a transfer run: failed improver runs, LM replies."""
    from stop_tui.progress import describe

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


# -- the command -----------------------------------------------------------------------------

def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transfer", help="measure how an improver transfers to other tasks (the paper's table)")
    p.add_argument("--improver", help="FILE, SESSION or SESSION:ITERATION (the improver to evaluate)")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                   help=f"comma-separated tasks (default {','.join(DEFAULT_TASKS)})")
    p.add_argument("--runs", type=int, default=1, help="û evaluations per task and improver (default 1)")
    p.add_argument("--model", default="local",
                   help="local (SmolLM2, default), local:PATH.gguf, or a model on an OpenAI-compatible server")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server URL (env OPENAI_BASE_URL)")
    p.add_argument("--preset", default=None, choices=("paper", "quick"),
                   help="budgets: paper or quick; default quick on the local model, else paper")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--set", dest="task_settings", action="append", default=[], metavar="KEY=VALUE",
                   help="override a task setting where a task has it, e.g. --set time_limit=0.1 (sat)")
    p.add_argument("--resume", metavar="SESSION", help="continue a transfer session (skips what is recorded)")
    p.add_argument("--json", action="store_true", help="print the table as JSON on stdout")
    p.add_argument("--format", choices=("text", "md", "csv"), default="text", help="table format")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--sessions-dir", type=Path, default=None,
                   help="where sessions live (default ./sessions, env STOP_TUI_SESSIONS)")


def cmd_transfer(args: argparse.Namespace) -> int:
    from stop_tui.engine import candidate_rng
    from stop_tui.engine.lock import acquire
    from stop_tui.engine.session import _wire, claim, make_backend, session_settings
    from stop_tui.engine.settings import Settings
    from stop_tui.engine.store import session_folder
    from stop_tui.engine.tasks import downstream_names, load_task, parse_settings

    sessions_dir = args.sessions_dir if args.sessions_dir is not None else default_sessions_dir()
    if args.resume:
        lock = claim(session_folder(sessions_dir, args.resume))  # released by session.close()
        store = SessionStore(lock.folder)
        meta = store.meta()
        if meta.get("kind") != KIND:
            store.close()
            raise UserError(f"session {store.id} is not a transfer session")
        plan = Plan(meta["tasks"], int(meta["runs"]), store.text(meta["improver"]) or "",
                    meta.get("improver_label", "?"))
        settings = Settings.from_dict(meta.get("settings", {}))
        overrides = meta.get("task_settings", {})
        backend = make_backend(meta.get("model", "local"), args.base_url or meta.get("base_url"))
    else:
        if not args.improver:
            raise UserError("--improver FILE|SESSION[:ITERATION] is required (or --resume SESSION)")
        if args.runs < 1:
            raise UserError("--runs must be 1 or more")
        tasks = list(dict.fromkeys(t.strip() for t in args.tasks.split(",") if t.strip()))  # each once
        if not tasks:
            raise UserError("--tasks names no task")
        for name in tasks:
            if load_task(name).kind != "solution":
                raise UserError(f"{name} is not a downstream task (tasks: {', '.join(downstream_names())})")
        source, label = resolve_improver(args.improver, sessions_dir)
        overrides = parse_settings(args.task_settings, [load_task(name) for name in tasks])
        preset = args.preset or ("quick" if args.model.startswith("local") else "paper")
        settings = session_settings(preset, seed=args.seed)
        backend = make_backend(args.model, args.base_url)
        store = SessionStore.create(sessions_dir, {
            "kind": KIND, "task": ",".join(tasks), "tasks": tasks, "runs": args.runs,
            "model": backend.model, "settings": settings.to_dict(), "base_url": args.base_url,
            "improver": None, "improver_label": label, "task_settings": overrides,
            **candidate_rng.session_meta(settings.seed),
        }, name=datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-transfer")
        lock = acquire(store.folder)
        store.set_meta({"improver": store.put_text(source)})
        plan = Plan(tasks, args.runs, source, label)
        store.append(ev.Event(ev.SESSION_STARTED, "", {"task": ",".join(tasks), "model": backend.model,
                                                       "settings": settings.to_dict(), "resumed": False,
                                                       "kind": KIND}))
    session = _wire(store, settings, plan.tasks[0], backend, None)
    session.lock = lock
    if args.resume:
        _restore_lm(session.engine.lm, store)

    def echo(line: str) -> None:
        if not args.quiet:
            print(printable(line), file=sys.stderr, flush=True)

    if not args.quiet:
        store.subscribe(_progress(echo))

    echo(f"transfer session {store.id}: improver {plan.improver_label}, tasks {','.join(plan.tasks)}, "
         f"{plan.runs} run(s)")
    outcome = 0
    paused = None
    try:
        execute(store, plan, session.engine, settings, overrides=overrides, echo=echo)
        table = rows(store, plan)
        store.append(ev.Event(FINISHED, "", {"rows": table}))
        store.append(ev.Event(ev.SESSION_FINISHED, "", {"iterations_completed": 0, "reason": "done"}))
    except KeyboardInterrupt:
        session.gate.cancel()
        store.append(ev.Event(ev.PAUSED, "", {"reason": "stopped by the user; resume to continue"}))
        echo(f"stopped; continue with: stop-tui transfer --resume {cli_name(store.folder)}")
        outcome = 130
        table = rows(store, plan)
    except Cancelled:
        paused = pause(session.engine.lm, store, f"stop-tui transfer --resume {cli_name(store.folder)}",
                       switch="add --base-url URL")
        outcome = EXIT_CAPPED if paused is not None else 130
        table = rows(store, plan)
    finally:
        session.close()
    result = {"session": store.id, "session_dir": str(store.folder.resolve()),
              "improver": plan.improver_label, "runs": plan.runs, "model": backend.model,
              "preset": settings.preset, "split": "test", "rows": table}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        sys.stdout.write(render_text(table, args.format))
    if paused is not None:
        print(f"stop-tui: paused: {printable(paused)}", file=sys.stderr)
    return outcome


def pause(lm, store: SessionStore, resume: str, *, switch: str) -> str | None:
    """After a Cancelled: when the LM service stopped the run (a cap, a failing server: see
    lm/service.py), let the calls in flight be recorded, write the PAUSED event and return
    its reason (the command's one `paused:` line, exit EXIT_CAPPED); None when it did not."""
    stop = lm.stop
    if stop is None:
        return None
    lm.drain(timeout=stop.drain_timeout)
    data = stop.pause_data(resume, switch)
    store.append(ev.Event(ev.PAUSED, "", data))
    return str(data["reason"])
