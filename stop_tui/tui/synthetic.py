"""Synthetic sessions (deterministic event logs) for snapshot tests, demos and the benchmark.

The events are built through the engine's own schemas (engine/events.py), in the order the
engine emits them; nothing is run. Protection names are the sandbox's (sandbox/protections.py),
flag kinds the safety checker's (engine/safety.py). Times are fixed offsets from a fixed start,
so what the app draws from them never depends on the clock.
"""

from __future__ import annotations

import dataclasses
import random
import zlib
from pathlib import Path

from stop_tui.engine import events as ev
from stop_tui.engine.sandbox.protections import DESCRIPTIONS as PROTECTIONS
from stop_tui.engine.settings import preset
from stop_tui.engine.store import SessionStore
from stop_tui.engine.tasks import load_task

T0 = 1_760_000_000.0

SEED_IMPROVER = load_task("meta").seed  # the engine's own seed improver (tasks/meta/seed.py)


def improver_variant(k: int) -> str:
    """A plausible rewritten improver (deterministic in k)."""
    temps = ["0.4", "0.9", "1.0", "0.7"]
    return SEED_IMPROVER.replace(
        '"""Improves a solution according to a utility function."""',
        f'"""Improves a solution according to a utility function."""  # variant {k}').replace(
        "temperature=0.7", f"temperature={temps[k % len(temps)]}").replace(
        "n_messages = min(", f"n_messages = {k % 3 + 2} * min(").replace(
        "    best_solution = max(new_solutions, key=utility)\n",
        "    new_solutions = [s for s in new_solutions if s]\n"
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
    (`seed_scored=False`: a new session, nothing run yet). `sandbox_missing`: protections
    (names the sandbox reports) this machine's sandbox lacks."""
    unknown = [name for name in sandbox_missing if name not in PROTECTIONS]
    if unknown:
        raise ValueError(f"not a sandbox protection: {', '.join(unknown)} (see sandbox/protections.py)")
    rng = random.Random(seed)
    settings = preset("quick").with_overrides(iterations=planned if planned is not None else iterations,
                                              **(settings_overrides or {}))
    store = SessionStore.create(sessions_dir, {"task": "lpn", "model": model,
                                               "settings": settings.to_dict(), "base_url": None}, name=name)
    clock = [T0]

    def emit(payload: ev.Payload, path: str = "") -> None:
        clock[0] += 0.5
        store.append(ev.event(payload, path, t=clock[0]))

    put = store.put_text
    usage = ev.Budget(calls=0, requests=0, completions=0, prompt_tokens=0, completion_tokens=0,
                      cost_usd=0.0 if priced else None)
    system = put("You are an expert computer science researcher and programmer.")

    def lm_call(path: str, reply_code: str | None, retried: bool = False) -> None:
        """One call of two identical messages: one request with n = 2 (a server that honours
        n), recorded as one LM_PART; `retried`: its first attempt is refused (429) and retried."""
        nonlocal usage
        use = int(path.rsplit("lm", 1)[1])
        prompt = put(f"Improve the following solution ({path}):\n```python\n...\n```")
        reply_text = ("Idea: sample more, filter empties.\n```python\n" + reply_code + "```\n"
                      if reply_code else "I think the solution is already optimal.")
        emit(ev.LMRequest(use=use, system=system, prompts=[prompt, prompt], n=2, distinct=1,
                          temperature=0.7, max_tokens=512, model=model), path)
        pt, ct = 640 + rng.randrange(80), 300 + rng.randrange(200)
        latency = round(2 + rng.random() * 3, 2)
        replies = [put(reply_text), put("No code here.")]
        requests = 2 if retried else 1
        if retried:
            emit(ev.LMRetry(use=use, group=0, offset=0, attempt=1, status=429,
                            error="HTTP 429: rate limited", wait=1.0), path)
        emit(ev.LMPart(use=use, group=0, offset=0, seed=zlib.crc32(f"{seed}/{path}/0".encode()) & 0x7FFFFFFF,
                       replies=replies, finish_reasons=["stop", "stop"], prompt_tokens=pt,
                       completion_tokens=ct, requests=requests, latency=latency), path)
        emit(ev.LMReply(use=use, replies=replies, prompt_tokens=pt, completion_tokens=ct,
                        requests=requests, retries=requests - 1, failed=0, latency=latency,
                        concurrency=1, cost_usd=0.0 if priced else None), path)
        usage = dataclasses.replace(
            usage, calls=usage.calls + 1, requests=usage.requests + requests,
            retries=usage.retries + requests - 1, completions=usage.completions + 2,
            prompt_tokens=usage.prompt_tokens + pt, completion_tokens=usage.completion_tokens + ct)
        emit(usage, path)

    def candidate(path: str, source: str | None, parent: str | None, role: str, with_test: bool,
                  base: float, flags: tuple[ev.Flag, ...] = ()) -> tuple[float, float | None]:
        emit(ev.CandidateProposed(role=role, source=put(source) if source else None,
                                  parent=put(parent) if parent else None), path)
        for finding in flags:  # the static safety checks, before it runs
            emit(finding, path)
        vals, tests = [], []
        for j in range(1, runs + 1):
            rp = f"{path}/r{j}"
            emit(ev.RunStarted(improver=put(source or "")), rp)
            for q in range(1, lm_calls_per_run + 1):
                lm_call(f"{rp}/lm{q}", solution_variant(q + j))
            best = 0.0
            for s in range(1, solutions + 1):
                score = round(min(1.0, max(0.0, base + rng.uniform(-0.1, 0.1))), 4)
                sol = solution_variant(s + j)
                emit(ev.SolutionScored(source=put(sol), split="val", score=score, seconds=0.02), f"{rp}/s{s}")
                best = max(best, score)
            final = solution_variant(1 + j)
            emit(ev.SolutionScored(source=put(final), split="val", score=best, seconds=0.02), f"{rp}/final")
            test = round(best - 0.02, 4) if with_test else None
            if with_test:
                emit(ev.SolutionScored(source=put(final), split="test", score=test, seconds=0.02), f"{rp}/final")
            emit(ev.RunFinished(solution=put(final), val=best, test=test, error=None, seconds=1.5,
                                lm_uses=lm_calls_per_run, utility_uses=solutions), rp)
            vals.append(best)
            tests.append(test or 0.0)
        val = round(sum(vals) / len(vals), 4)
        test_mean = round(sum(tests) / len(tests), 4) if with_test else None
        emit(ev.CandidateScored(role=role, score=val, test=test_mean), path)
        return val, test_mean

    emit(ev.SessionStarted(task="lpn", model=model, settings=settings.to_dict(), resumed=False))
    emit(ev.Sandbox(mode="bwrap", protections={name: name not in sandbox_missing for name in PROTECTIONS},
                    missing=list(sandbox_missing), fallbacks=[], notes=[]))
    if not seed_scored:
        return store
    current = SEED_IMPROVER
    emit(ev.IterationStarted(iteration=0, improver=put(current)), "it0")
    val, test = candidate("it0/check", current, None, "seed", True, 0.3)
    emit(ev.IterationAccepted(iteration=0, improver=put(current), val=val, test=test, rule="paper"), "it0")
    best_val = val
    for t in range(1, iterations + 1):
        emit(ev.IterationStarted(iteration=t, improver=put(current)), f"it{t}")
        variants = [improver_variant(t * 100 + k) for k in range(1, candidates + 1)]
        lm_call(f"it{t}/lm1", variants[0], retried=t == 1)
        scores = []
        for k, variant in enumerate(variants, start=1):
            flags = (ev.Flag(kind="subprocess", detail="calls os.system(...)", line=3, role="improver"),)
            v, _ = candidate(f"it{t}/c{k}", variant, current, "candidate", False, 0.3 + 0.05 * t + 0.02 * k,
                             flags if flag and t == 1 and k == 2 else ())
            scores.append(v)
        chosen = variants[max(range(len(variants)), key=lambda i: scores[i])]
        val, test = candidate(f"it{t}/check", chosen, current, "check", True, 0.3 + 0.06 * t)
        if val > best_val - 0.2:
            current, best_val = chosen, val
            emit(ev.IterationAccepted(iteration=t, improver=put(chosen), val=val, test=test, rule="paper"),
                 f"it{t}")
        else:
            emit(ev.IterationRejected(iteration=t, kept=put(current), reason="the new improver scored 0",
                                      val=val, test=test, rule="paper"), f"it{t}")
    if finished:
        emit(ev.SessionFinished(iterations_completed=iterations, reason="done"))
    return store
