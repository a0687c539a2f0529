"""`stop-tui baseline`: what a user gets without self-improvement, at the same LM budget.

Each baseline is an improver program (below), run exactly like STOP's improvers: in the
sandbox, through the engine's meta-utility (`Engine.meta_score`), with the preset's LM budget
per run (calls x samples) and utility budget. Its score per run is the downstream score of the
solution it returns; `--runs` runs are made (default: the preset's meta_runs).

- best-of-n: spend the whole LM budget on independent samples of the seed improver's prompt
  (n = calls x samples per call), score them, keep the best;
- cot: one chain-of-thought attempt (one call, one sample; no utility use);
- greedy: the greedy iterative improver: each call improves the best solution so far, a
  candidate replaces it only when it scores higher.

Results go to <session>/baselines/<method>.json as {"method", "task", "scores", "mean",
"ci95", ...} (test split, val beside it); the TUI draws them as reference lines in its Scores
pane. With --session they go into that session's folder (model, preset and task default to the
session's), otherwise into a new session folder. The engine's events (LM calls, runs) are
recorded in <folder>/baselines/<method>/session.db, never in the STOP session's own log.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stop_tui.commands import lm_options
from stop_tui.commands.transfer import mean_ci
from stop_tui.engine import events as ev
from stop_tui.engine.errors import Cancelled, UserError
from stop_tui.engine.lock import SessionLock
from stop_tui.engine.store import SessionStore, cli_name, default_sessions_dir
from stop_tui.engine.untrusted import printable

KIND = "baseline"
METHODS = ("best-of-n", "cot", "greedy")

_PROMPT = '''
EXPERTISE = ("You are an expert computer science researcher and programmer, especially skilled "
             "at optimizing algorithms.")


def request(solution, utility, extra=""):
    return f"""Improve the following solution:
```python
{solution}
```

You will be evaluated based on this score function:
```python
{utility.str}
```

You must return an improved solution. Be as creative as you can under the constraints.
Your primary improvement must be novel and non-trivial. First, propose an idea, then implement it.{extra}"""
'''

BEST_OF_N = '''from helpers import extract_code
''' + _PROMPT + '''

def improve_algorithm(initial_solution, utility, language_model):
    """Best of n: every LM call of the budget samples the same improvement request; the best
    scoring of all the programs returned wins."""
    message = request(initial_solution, utility)
    candidates = []
    for _ in range(language_model.budget):
        replies = language_model.batch_prompt(
            EXPERTISE, [message] * language_model.max_responses_per_call, temperature=0.7)
        candidates += [code for code in extract_code(replies) if code]
    best, best_score = None, None
    for code in candidates[:utility.budget]:
        score = utility(code)
        if best_score is None or score > best_score:
            best, best_score = code, score
    return best
'''

COT = '''from helpers import extract_code
''' + _PROMPT + '''

def improve_algorithm(initial_solution, utility, language_model):
    """One chain-of-thought attempt: reason step by step, then write the program once."""
    message = request(initial_solution, utility, extra="""

Think step by step before you write any code: what does the score function reward, where
does the current solution lose points, which idea fixes that? Then write the complete
improved solution in one ```python block.""")
    replies = language_model.prompt(EXPERTISE, message, n_responses=1, temperature=0.7)
    return extract_code(replies)[0]
'''

GREEDY = '''from helpers import extract_code
''' + _PROMPT + '''

def improve_algorithm(initial_solution, utility, language_model):
    """Greedy iterative improvement: each LM call asks to improve the best program so far; a
    candidate replaces it only when it scores strictly higher."""
    best, best_score = initial_solution, utility(initial_solution)
    for _ in range(language_model.budget):
        n = min(language_model.max_responses_per_call, utility.budget - utility.uses)
        if n <= 0:
            break
        replies = language_model.batch_prompt(EXPERTISE, [request(best, utility)] * n, temperature=0.7)
        for code in extract_code(replies):
            if not code:
                continue
            score = utility(code)
            if score > best_score:
                best, best_score = code, score
    return best
'''

PROGRAMS = {"best-of-n": BEST_OF_N, "cot": COT, "greedy": GREEDY}

# The paper's LPN baselines (GPT-4; arXiv 2310.02304), mean and +- half-width.
PAPER = {("lpn", "cot"): (0.577, 0.030), ("lpn", "greedy"): (0.642, 0.009)}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline", help="run a baseline improver (best-of-n, cot, greedy) on a task")
    p.add_argument("--task", default=None, help="task name or folder (default: the session's, else lpn)")
    p.add_argument("--method", required=True, choices=METHODS,
                   help="best-of-n (the whole budget on samples), cot (one attempt) or greedy")
    p.add_argument("--session", default=None,
                   help="put the results in this session's folder (and use its model and preset)")
    p.add_argument("--runs", type=int, default=None, help="improver runs (default: the preset's meta_runs)")
    p.add_argument("--model", default=None,
                   help="local (SmolLM2, default), local:PATH.gguf, or a model on an OpenAI-compatible server")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server URL (env OPENAI_BASE_URL)")
    p.add_argument("--preset", default=None, choices=("paper", "quick"), help="default: the session's, else quick on the local model, paper elsewhere")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--sessions-dir", type=Path, default=None,
                   help="where sessions live (default ./sessions, env STOP_TUI_SESSIONS)")
    lm_options.add_lm_options(p)  # caps (a session's own apply to its baselines), timeout


class BaselinePaused(Cancelled):
    """The LM service paused the baseline (a failing server, a cap): `reason` is its line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def run_baseline(store: SessionStore, settings, task_name: str, method: str, backend,
                 echo=None, again: str = "stop-tui baseline") -> dict[str, Any]:
    """Run the baseline improver `settings.meta_runs` times; per-run scores come from the log.
    When the LM service pauses it, the PAUSED event is written and BaselinePaused raised;
    `again` is the command that runs the baseline again (its line says it)."""
    from stop_tui.commands.transfer import pause
    from stop_tui.engine.session import _wire

    session = _wire(store, settings, task_name, backend, None)
    try:
        path = f"baseline-{method}"
        mark = store.append(ev.Event(ev.CANDIDATE_PROPOSED, path, {
            "role": f"baseline:{method}", "source": store.put_text(PROGRAMS[method]), "parent": None})).seq
        if echo:
            echo(f"baseline {method} on {task_name}: {settings.meta_runs} run(s)")
        try:
            result = session.engine.meta_score(PROGRAMS[method], path, with_test=True)
        except Cancelled:
            reason = pause(session.engine.lm, store, again, switch="change --base-url URL / --model NAME")
            if reason is None:
                raise
            raise BaselinePaused(reason) from None
        store.append(ev.Event(ev.CANDIDATE_SCORED, path, {
            "role": f"baseline:{method}", "score": result.val, "test": result.test,
            **({"error": result.errors[0], "failed_runs": len(result.errors)} if result.errors else {})}))
        vals, tests = [], []
        for e in store.events(after=mark, kinds=(ev.RUN_FINISHED,)):
            if e.path.startswith(path + "/r"):
                vals.append(float(e.data.get("val") or 0.0))
                tests.append(float(e.data.get("test") or 0.0))
        store.append(ev.Event(ev.SESSION_FINISHED, "", {"iterations_completed": 0, "reason": "done"}))
    finally:
        session.close()
    mean, ci = mean_ci(tests)
    val_mean, val_ci = mean_ci(vals)
    out: dict[str, Any] = {"method": method, "task": task_name, "scores": tests, "mean": mean,
                           "ci95": ci, "split": "test", "val_scores": vals, "val_mean": val_mean,
                           "val_ci95": val_ci, "runs": len(tests), "errors": result.errors[:5]}
    paper = PAPER.get((task_name, method))
    if paper:
        out["paper"] = {"mean": paper[0], "plus_minus": paper[1]}
    return out


def cmd_baseline(args: argparse.Namespace) -> int:
    from stop_tui.engine import candidate_rng
    from stop_tui.engine.lock import acquire
    from stop_tui.engine.session import make_backend
    from stop_tui.engine.settings import Settings, preset
    from stop_tui.engine.store import session_folder
    from stop_tui.engine.tasks import downstream_names, load_task

    sessions_dir = args.sessions_dir if args.sessions_dir is not None else default_sessions_dir()
    if args.runs is not None and args.runs < 1:
        raise UserError("--runs must be 1 or more")
    parent_meta: dict[str, Any] = {}
    lock: SessionLock | None = None
    if args.session:
        parent = SessionStore(session_folder(sessions_dir, args.session), readonly=True)
        try:
            parent.verify()
            parent_meta, folder = parent.meta(), parent.folder
        finally:
            parent.close()
    task_name = args.task or parent_meta.get("task") or "lpn"
    task = load_task(task_name)
    if task.kind != "solution":
        raise UserError(f"{task_name} is not a downstream task (tasks: {', '.join(downstream_names())})")
    if args.session and task.folder != load_task(parent_meta["task"]).folder:
        raise UserError(f"session {folder.name} is a {parent_meta['task']} session: its baselines are "
                        f"on {parent_meta['task']} (leave out --task {args.task}, or leave out --session)")
    if args.preset:
        settings = preset(args.preset)
    elif parent_meta.get("settings"):
        settings = Settings.from_dict(parent_meta["settings"])
    else:
        settings = preset("quick" if (args.model or "local").startswith("local") else "paper")
    settings = settings.with_overrides(seed=args.seed, **lm_options.lm_overrides(args))
    if args.runs:
        settings = replace(settings, meta_runs=args.runs)
    model = args.model or parent_meta.get("model") or "local"
    base_url = args.base_url or (parent_meta.get("base_url") if not args.model else None)
    if args.session:  # the baseline is written into the session's folder: nobody may run it meanwhile
        lock = acquire(folder)
    backend = make_backend(model, base_url, max_concurrency=settings.max_concurrency,
                           timeout=settings.lm_timeout)
    lm_options.check_caps(settings, backend.price_key)
    meta = {"kind": KIND, "task": task_name, "method": args.method, "model": backend.model,
            "settings": settings.to_dict(), "base_url": base_url,
            # a session's baseline: its candidates' generators, so the scores compare
            **({"task_settings": parent_meta["task_settings"]} if parent_meta.get("task_settings") else {}),
            **candidate_rng.session_meta(settings.seed, parent_meta if args.session else None)}
    if args.session:
        # A second baseline of a method keeps the first: its log is <method>-2 (SessionStore.create
        # never reuses a folder), its results <method>-2.json beside <method>.json.
        store = SessionStore.create(folder / "baselines", meta, name=args.method)
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        store = SessionStore.create(sessions_dir, meta, name=f"{stamp}-baseline-{args.method}")
        folder = store.folder
        lock = acquire(folder)
    target = folder / "baselines" / f"{store.folder.name if args.session else args.method}.json"
    store.append(ev.Event(ev.SESSION_STARTED, "", {"task": task_name, "model": backend.model,
                                                   "settings": settings.to_dict(), "resumed": False,
                                                   "kind": KIND, "method": args.method}))

    def echo(line: str) -> None:
        if not args.quiet:
            print(printable(line), file=sys.stderr, flush=True)

    try:
        result = run_baseline(store, settings, task_name, args.method, backend, echo,
                              again=_again(args, folder if args.session else None, sessions_dir))
    except BaselinePaused as exc:
        lock.release()
        print(f"stop-tui: paused: {printable(exc.reason)}", file=sys.stderr)
        return lm_options.EXIT_CAPPED
    except (KeyboardInterrupt, Cancelled):
        echo("stopped")
        return 130
    result.update({"model": backend.model, "preset": settings.preset, "session": folder.name,
                   "events": str(store.folder)})
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(target)
    lock.release()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        lo, hi = result["ci95"]
        print(f"{args.method} on {task_name}: test {100 * result['mean']:.1f} % "
              f"[95 % CI {100 * lo:.1f}, {100 * hi:.1f}] over {result['runs']} run(s); "
              f"val {100 * result['val_mean']:.1f} %  -> {target}")
    return 0


def _again(args: argparse.Namespace, session: Path | None, sessions_dir: Path) -> str:
    """The command that runs this baseline again, as the user gave it (it works when pasted)."""
    words = ["stop-tui", "baseline", "--method", args.method]
    for option in ("task", "model", "base_url", "preset", "seed", "runs", "max_cost", "max_tokens",
                   "max_calls", "max_concurrency", "max_prompt_tokens", "lm_timeout"):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option.replace('_', '-')}", str(value)]
    command = " ".join(shlex.quote(w) for w in words)
    if session is not None:
        return f"{command} --session {cli_name(session)}"  # with --sessions-dir when not default
    if Path(sessions_dir).resolve() != default_sessions_dir().resolve():
        command += f" --sessions-dir {shlex.quote(str(sessions_dir))}"
    return command
