"""Synthetic sessions (deterministic event logs) for snapshot tests, demos and the benchmark.

The events have the shapes the engine emits; nothing is run. Times are fixed offsets from a
fixed start, so what the app draws from them never depends on the clock.
"""

from __future__ import annotations

import random
from pathlib import Path

from stop_tui.engine import events as ev
from stop_tui.engine.settings import preset
from stop_tui.engine.store import SessionStore

T0 = 1_760_000_000.0

SEED_IMPROVER = '''from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Improves a solution according to a utility function."""
    expertise = "You are an expert computer science researcher and programmer."
    message = f"""Improve the following solution:
```python
{initial_solution}
```
You must return an improved solution."""
    n_messages = min(language_model.max_responses_per_call, utility.budget)
    new_solutions = language_model.batch_prompt(expertise, [message] * n_messages, temperature=0.7)
    new_solutions = extract_code(new_solutions)
    best_solution = max(new_solutions, key=utility)
    return best_solution
'''


def improver_variant(k: int) -> str:
    """A plausible rewritten improver (deterministic in k)."""
    temps = ["0.4", "0.9", "1.0", "0.7"]
    return SEED_IMPROVER.replace(
        "temperature=0.7", f"temperature={temps[k % len(temps)]}").replace(
        "n_messages = min(", f"n_messages = {k % 3 + 2} * min(").replace(
        "    best_solution = max(new_solutions, key=utility)\n",
        f"    new_solutions = [s for s in new_solutions if s]  # variant {k}\n"
        "    if not new_solutions:\n        return initial_solution\n"
        "    best_solution = max(new_solutions, key=utility)\n")


def solution_variant(k: int) -> str:
    return (f"import numpy as np\n\n\ndef algorithm(instance):\n    # variant {k}\n"
            f"    bits = np.asarray(instance, dtype=int)\n    return (bits.sum(axis=0) > {k % 5}).astype(int)\n")


def write_session(sessions_dir: Path, name: str = "demo", *, iterations: int = 2, candidates: int = 3,
                  runs: int = 1, solutions: int = 2, lm_calls_per_run: int = 1, planned: int | None = None,
                  finished: bool = False, sandbox_missing: tuple[str, ...] = (), flag: bool = True,
                  seed: int = 7, model: str = "local", priced: bool = True,
                  settings_overrides: dict | None = None, seed_scored: bool = True) -> SessionStore:
    """A session folder with a complete (or still going) event log and every text it names
    (`seed_scored=False`: a new session, nothing run yet)."""
    rng = random.Random(seed)
    settings = preset("quick").with_overrides(iterations=planned if planned is not None else iterations,
                                              **(settings_overrides or {}))
    store = SessionStore.create(sessions_dir, {"task": "lpn", "model": model,
                                               "settings": settings.to_dict(), "base_url": None}, name=name)
    clock = [T0]

    def emit(kind_: str, path: str, **data) -> None:
        clock[0] += 0.5
        store.append(ev.Event(kind_, path, data, t=clock[0]))

    put = store.put_text
    usage = {"calls": 0, "requests": 0, "completions": 0, "prompt_tokens": 0, "completion_tokens": 0,
             "cost_usd": 0.0 if priced else None}
    system = put("You are an expert computer science researcher and programmer.")

    def lm_call(path: str, reply_code: str | None) -> None:
        prompt = put(f"Improve the following solution ({path}):\n```python\n...\n```")
        reply_text = ("Idea: sample more, filter empties.\n```python\n" + reply_code + "```\n"
                      if reply_code else "I think the solution is already optimal.")
        emit(ev.LM_REQUEST, path, use=int(path.rsplit("lm", 1)[1]), system=system, prompts=[prompt, prompt],
             n=2, distinct=1, temperature=0.7, max_tokens=512, model=model)
        pt, ct = 640 + rng.randrange(80), 300 + rng.randrange(200)
        emit(ev.LM_REPLY, path, use=1, replies=[put(reply_text), put("No code here.")], prompt_tokens=pt,
             completion_tokens=ct, requests=2, failed=0, latency=round(2 + rng.random() * 3, 2),
             cost_usd=0.0 if priced else None)
        usage["calls"] += 1
        usage["requests"] += 2
        usage["completions"] += 2
        usage["prompt_tokens"] += pt
        usage["completion_tokens"] += ct
        emit(ev.BUDGET, path, **usage)

    def candidate(path: str, source: str | None, parent: str | None, role: str, with_test: bool,
                  base: float) -> tuple[float, float | None]:
        emit(ev.CANDIDATE_PROPOSED, path, role=role, source=put(source) if source else None,
             parent=put(parent) if parent else None)
        vals, tests = [], []
        for j in range(1, runs + 1):
            rp = f"{path}/r{j}"
            emit(ev.RUN_STARTED, rp, improver=put(source or ""))
            for q in range(1, lm_calls_per_run + 1):
                lm_call(f"{rp}/lm{q}", solution_variant(q + j))
            best = 0.0
            for s in range(1, solutions + 1):
                score = round(min(1.0, max(0.0, base + rng.uniform(-0.1, 0.1))), 4)
                sol = solution_variant(s + j)
                emit(ev.SOLUTION_SCORED, f"{rp}/s{s}", source=put(sol), split="val", score=score, seconds=0.02)
                best = max(best, score)
            final = solution_variant(1 + j)
            emit(ev.SOLUTION_SCORED, f"{rp}/final", source=put(final), split="val", score=best, seconds=0.02)
            test = round(best - 0.02, 4) if with_test else None
            if with_test:
                emit(ev.SOLUTION_SCORED, f"{rp}/final", source=put(final), split="test", score=test, seconds=0.02)
            emit(ev.RUN_FINISHED, rp, solution=put(final), val=best, test=test, error=None, seconds=1.5,
                 lm_uses=lm_calls_per_run, utility_uses=solutions)
            vals.append(best)
            tests.append(test or 0.0)
        val = round(sum(vals) / len(vals), 4)
        data = {"role": role, "score": val}
        test_mean = round(sum(tests) / len(tests), 4) if with_test else None
        if with_test:
            data["test"] = test_mean
        emit(ev.CANDIDATE_SCORED, path, **data)
        return val, test_mean

    emit(ev.SESSION_STARTED, "", task="lpn", model=model, settings=settings.to_dict(), resumed=False)
    protections = {"process_group": True, "rlimits": True, "network_namespace": not sandbox_missing}
    emit(ev.SANDBOX, "", protections=protections, missing=list(sandbox_missing))
    if not seed_scored:
        return store
    current = SEED_IMPROVER
    emit(ev.ITERATION_STARTED, "it0", iteration=0, improver=put(current))
    val, test = candidate("it0/check", current, None, "seed", True, 0.3)
    emit(ev.ITERATION_ACCEPTED, "it0", iteration=0, improver=put(current), val=val, test=test, rule="paper")
    best_val = val
    for t in range(1, iterations + 1):
        emit(ev.ITERATION_STARTED, f"it{t}", iteration=t, improver=put(current))
        variants = [improver_variant(t * 100 + k) for k in range(1, candidates + 1)]
        for q in range(1, 2):
            lm_call(f"it{t}/lm{q}", variants[0])
        scores = []
        for k, variant in enumerate(variants, start=1):
            v, _ = candidate(f"it{t}/c{k}", variant, current, "candidate", False, 0.3 + 0.05 * t + 0.02 * k)
            scores.append(v)
            if flag and t == 1 and k == 2:
                emit(ev.FLAG, f"it{t}/c{k}", kind="sandbox-escape", detail="imports os and calls os.system",
                     line=3)
        chosen = variants[max(range(len(variants)), key=lambda i: scores[i])]
        val, test = candidate(f"it{t}/check", chosen, current, "check", True, 0.3 + 0.06 * t)
        if val > best_val - 0.2:
            current, best_val = chosen, val
            emit(ev.ITERATION_ACCEPTED, f"it{t}", iteration=t, improver=put(chosen), val=val, test=test,
                 rule="paper")
        else:
            emit(ev.ITERATION_REJECTED, f"it{t}", iteration=t, kept=put(current), reason="the new improver scored 0",
                 val=val, test=test, rule="paper")
    if finished:
        emit(ev.SESSION_FINISHED, "", iterations_completed=iterations, reason="done")
    return store
