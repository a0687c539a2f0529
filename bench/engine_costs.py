"""What the engine's safety and bookkeeping cost, measured side by side in one run.

  python bench/engine_costs.py [--evals 10] [--tokens 128] [--rounds 5] [--threads 2]

1. Seconds per LPN utility evaluation (val, 20 instances) of the seed solution: through the
   sandbox (what the engine does) vs calling the function in this process.
2. Local-model tokens per second, greedy, interleaved rounds: through our LM layer (LMService
   recording into a session store, LocalBackend and its worker process) vs llama-cpp-python
   called directly in this process with the worker's load options (and with llama.cpp's extra
   buffer types the other way: what turning them off on AMX CPUs costs, see local_backend.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stop_tui.engine.errors import UserError  # noqa: E402
from stop_tui.engine.scoring import score_solution  # noqa: E402
from stop_tui.engine.tasks import load_task  # noqa: E402


def in_process_eval(task, source: str, split: str = "val") -> float:
    namespace: dict = {}
    exec(source, namespace)
    fn = namespace[task.entry]

    class Out:
        def __init__(self, value, seconds):
            self.value, self.error, self.seconds = value, None, seconds

    def run(*args, time_limit, rng=None):
        started = time.perf_counter()
        value = fn(*args)
        return Out(value, time.perf_counter() - started)

    return task.evaluator.evaluate(run, split)[0]


def timed(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--evals", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved local-model rounds")
    parser.add_argument("--threads", type=int, default=2,
                        help="llama.cpp threads, both sides (2 is the backend's default; 1 holds up "
                             "better when other processes want the cores)")
    args = parser.parse_args()

    lpn = load_task("lpn")
    sandboxed = timed(lambda: score_solution(lpn, lpn.seed, "val"), args.evals)
    direct = timed(lambda: in_process_eval(lpn, lpn.seed), args.evals)
    print("LPN utility evaluation of the seed solution (val, 20 instances), median of", args.evals)
    print(f"  sandboxed {sandboxed * 1000:8.1f} ms   in-process {direct * 1000:8.1f} ms   "
          f"ratio {sandboxed / direct:6.1f}x")

    local_model(args.tokens, args.rounds, args.threads)


def local_model(tokens: int, rounds: int, threads: int) -> None:
    """Greedy generations of the same prompt, interleaved: our layer (LMService recording into a
    session store, and LocalBackend alone, both through the worker process) vs llama-cpp-python
    in this process, loaded with the worker's options (and with the library's defaults)."""
    try:
        from llama_cpp import Llama

        from stop_tui.engine.lm.local_backend import LocalBackend
        from stop_tui.engine.lm.local_worker import model_params_with
        from stop_tui.engine.lm.service import LMService
        from stop_tui.engine.store import SessionStore
        backend = LocalBackend(n_threads=threads)
    except (ImportError, UserError) as exc:
        print(f"local model: skipped ({exc})")
        return
    info = backend.load_info
    system, user = "You are a helpful programmer.", "Write a Python function that reverses a list, with comments."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    extra = info["use_extra_bufts"]
    loaded = {}
    for bufts in (extra, not extra):
        with model_params_with(use_extra_bufts=bufts):
            loaded[bufts] = Llama(model_path=info["path"], n_ctx=info["n_ctx"], n_threads=threads,
                                  n_threads_batch=threads, verbose=False)

    def direct(llm) -> Callable[[], tuple[int, float]]:
        def one() -> tuple[int, float]:
            started = time.perf_counter()
            out = llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=tokens, seed=1)
            return out["usage"]["completion_tokens"], time.perf_counter() - started
        return one

    def through_backend() -> tuple[int, float]:
        started = time.perf_counter()
        out = backend.request(system, user, n=1, temperature=0.0, max_tokens=tokens, seed=1)
        return out.completion_tokens, time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore.create(Path(tmp), {"task": "bench"})
        service = LMService(backend, max_tokens=tokens, seed=1, emit=store.append, put_text=store.put_text)
        handle = service.handle("bench", budget=10**6, max_responses_per_call=1)

        def through_service() -> tuple[int, float]:
            before = service.usage.completion_tokens
            started = time.perf_counter()
            handle.prompt(system, user, 1, 0.0)
            return service.usage.completion_tokens - before, time.perf_counter() - started

        other = f"llama-cpp-python direct, extra bufts {'off' if extra else 'on'}"
        runs = {"our LM layer (LMService + worker)": through_service,
                "LocalBackend (worker) alone": through_backend,
                "llama-cpp-python direct, same options": direct(loaded[extra]),
                other: direct(loaded[not extra])}
        samples: dict[str, list[tuple[int, float]]] = {name: [] for name in runs}
        for fn in runs.values():
            fn()  # warm each
        for _ in range(rounds):  # interleaved: drift in machine load hits every column alike
            for name, fn in runs.items():
                samples[name].append(fn())
        service.close()
        store.close()
    backend.close()
    # Other processes only ever slow a generation down: the best round of each column is the
    # least disturbed one, so the ratio is taken between bests (medians shown too).
    rate = {name: max(n / s for n, s in got) for name, got in samples.items()}
    median = {name: statistics.median(n / s for n, s in got) for name, got in samples.items()}
    counts = {name: sorted({n for n, _ in got}) for name, got in samples.items()}
    print(f"Local model ({Path(info['path']).name}, {info['n_threads']} threads, greedy, up to {tokens} "
          f"tokens, extra buffer types {'on' if extra else 'off'} in the worker), "
          f"{rounds} interleaved rounds")
    for name in runs:
        print(f"  {name:<40} best {rate[name]:6.1f} tok/s  median {median[name]:6.1f}   "
              f"tokens per generation {counts[name]}")
    base = rate["llama-cpp-python direct, same options"]
    print(f"  ratios of the bests: our layer / direct {rate['our LM layer (LMService + worker)'] / base:5.3f}   "
          f"LocalBackend / direct {rate['LocalBackend (worker) alone'] / base:5.3f}   "
          f"extra bufts {'on' if extra else 'off'} / {'off' if extra else 'on'} {base / rate[other]:5.3f}")

if __name__ == "__main__":
    main()
