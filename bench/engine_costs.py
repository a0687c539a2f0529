"""What the engine's safety and bookkeeping cost, measured side by side in one run.

  python bench/engine_costs.py [--evals 10] [--tokens 128]

1. Seconds per LPN utility evaluation (val, 20 instances) of the seed solution: through the
   sandbox (what the engine does) vs calling the function in this process.
2. Local-model tokens per second: through our LM layer (LMService + LocalBackend, with event
   recording into a session store) vs llama-cpp-python called directly.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
    args = parser.parse_args()

    lpn = load_task("lpn")
    sandboxed = timed(lambda: score_solution(lpn, lpn.seed, "val"), args.evals)
    direct = timed(lambda: in_process_eval(lpn, lpn.seed), args.evals)
    print("LPN utility evaluation of the seed solution (val, 20 instances), median of", args.evals)
    print(f"  sandboxed {sandboxed * 1000:8.1f} ms   in-process {direct * 1000:8.1f} ms   "
          f"ratio {sandboxed / direct:6.1f}x")

    try:
        from llama_cpp import Llama

        from stop_tui.engine.lm.local_backend import LocalBackend, default_model_path
        from stop_tui.engine.lm.service import LMService
        from stop_tui.engine.store import SessionStore
    except ImportError as exc:
        print(f"local model: skipped ({exc})")
        return
    system, user = "You are a helpful programmer.", "Write a Python function that reverses a list, with comments."
    llm = Llama(model_path=str(default_model_path()), n_ctx=8192, n_threads=2, verbose=False)

    def direct_tps() -> float:
        started = time.perf_counter()
        out = llm.create_chat_completion(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            temperature=0.7, max_tokens=args.tokens, seed=1)
        return out["usage"]["completion_tokens"] / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore.create(Path(tmp), {"task": "bench"})
        service = LMService(LocalBackend(), max_tokens=args.tokens, seed=1, emit=store.append,
                            put_text=store.put_text)
        handle = service.handle("bench", budget=10**6, max_responses_per_call=1)

        def layer_tps() -> float:
            before = service.usage.completion_tokens
            started = time.perf_counter()
            handle.prompt(system, user, 1, 0.7)
            return (service.usage.completion_tokens - before) / (time.perf_counter() - started)

        direct_tps(), layer_tps()  # warm both
        rounds = 3
        ours = statistics.median(layer_tps() for _ in range(rounds))
        theirs = statistics.median(direct_tps() for _ in range(rounds))
        service.close()
        store.close()
    print(f"Local model (SmolLM2-135M Q4_1, 2 threads, up to {args.tokens} tokens), median of {rounds}")
    print(f"  our LM layer {ours:7.1f} tok/s   llama-cpp-python direct {theirs:7.1f} tok/s   "
          f"ratio {ours / theirs:5.2f}")


if __name__ == "__main__":
    main()
