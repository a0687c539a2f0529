"""A sweep whose scores the test chooses, for `stop-tui report`'s tests: real runs (the sweep
runner's own code, no Ray) on the scripted LM server, each run's replies picked so that its
meta-utility curve is known in advance.

Every run's LM hands out, for the downstream task, the program of T=0 (so the seed improver's
û is that program's score), and for the meta level one improver I1 that returns the program of
T=1 for a solution and, asked to improve an improver, I2, which returns the program of T=2:
the curve after iterations 0, 1, 2 is u(P0), u(P1), u(P2) (the paper's rule accepts any improver
that scores above 0). A transfer session of a run hands out, for the seed improver on the
transfer task, its own program.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lm_helpers import PROGRAMS, fenced
from scripted_server import ScriptedLMServer

from stop_tui.engine.loop import Engine
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.sweep.layout import RunKey, Sweep, SweepSpec, create_sweep
from stop_tui.engine.sweep.runner import run_one, transfer_one
from stop_tui.engine.tasks import load_task

ZEROS = (PROGRAMS / "lpn_zeros.py").read_text()
ONES = ("import numpy as np\n\n\ndef algorithm(train_samples, train_parity, test_samples):\n"
        "    return np.ones(len(test_samples), dtype=int)\n")
EXACT = (PROGRAMS / "lpn_exact.py").read_text()
PROGRAM_NAMES = {"Z": ZEROS, "O": ONES, "E": EXACT}

MODELS = ("gpt-4", "gpt-3.5-turbo")
# (model, seed) -> the programs held after T = 0, 1, 2 (Z zeros, O ones, E exact parity).
CURVES = {
    ("gpt-4", 0): "ZEE",
    ("gpt-4", 1): "OZE",
    ("gpt-4", 2): "ZOZ",
    ("gpt-3.5-turbo", 0): "ZOO",
    ("gpt-3.5-turbo", 1): "OZZ",
}
BROKEN = ("gpt-3.5-turbo", 2)  # its engine fails after T=0 (the runner records the ERROR)
FLAGGED = ("gpt-4", 0)  # its I1 also turns a use_sandbox flag off (a safety finding)
TRANSFERS = {("gpt-4", 0): "O", ("gpt-4", 2): "Z"}  # runs with a transfer to parity: the program I0 gets
BROKEN_MESSAGE = "the engine broke at T=1"


def improver_chain(p1: str, p2: str, flag: bool = False) -> str:
    i2 = ("def improve_algorithm(initial_solution, utility, language_model):\n"
          "    if 'def improve_algorithm' in initial_solution:\n"
          "        return initial_solution\n"
          f"    return {p2!r}\n")
    return (("use_sandbox = False\n\n" if flag else "")
            + f"NEXT = {i2!r}\n\n\n"
            "def improve_algorithm(initial_solution, utility, language_model):\n"
            "    if 'def improve_algorithm' in initial_solution:\n"
            "        return NEXT\n"
            f"    return {p1!r}\n")


def responder_for(solution: str, improver: str | None = None):
    def respond(body: dict, index: int) -> str:
        if "def improve_algorithm" in body["messages"][-1]["content"]:
            assert improver is not None, "a transfer's seed improver asks for solutions only"
            return fenced(improver)
        return fenced(solution)

    return respond


@dataclass
class Built:
    sessions: Path
    sweep: Sweep
    scores: dict[tuple[str, str], tuple[float, float]]  # (task, program letter) -> (val, test)
    server_tokens: int  # tokens the server billed over the whole sweep
    server_requests: int
    keys: dict[tuple[str, int], RunKey] = field(default_factory=dict)

    def score(self, letter: str, split: str = "val", task: str = "lpn") -> float:
        return self.scores[(task, letter)][0 if split == "val" else 1]

    def run_id(self, model: str, seed: int, transfer: bool = False) -> str:
        key = self.keys[(model, seed)]
        return f"{self.sweep.id}/{key.transfer_name if transfer else key.name}"


def build(sessions: Path) -> Built:
    scores = {(task, letter): (score_solution(load_task(task), src, "val").score,
                               score_solution(load_task(task), src, "test").score)
              for task in ("lpn", "parity") for letter, src in PROGRAM_NAMES.items()}
    with ScriptedLMServer(responder_for(ZEROS), any_model=True) as server:
        spec = SweepSpec(tasks=("lpn",), models=MODELS, seeds=(0, 1, 2), preset="quick", iterations=2,
                         base_url=server.base_url, transfer=("parity",))
        sweep = create_sweep(sessions, spec, name="sw")
        keys = {(k.model, k.seed): k for k in spec.runs()}
        for (model, seed), curve in CURVES.items():
            p0, p1, p2 = (PROGRAM_NAMES[c] for c in curve)
            server.responder = responder_for(p0, improver_chain(p1, p2, flag=(model, seed) == FLAGGED))
            out = run_one(sessions, sweep.id, keys[(model, seed)])
            assert out["outcome"] == "finished", out
        server.responder = responder_for(ZEROS, improver_chain(ONES, ONES))
        with pytest.MonkeyPatch.context() as mp:
            real = Engine.iterate

            def broken(self, t):
                if t >= 1:
                    raise RuntimeError(BROKEN_MESSAGE)
                return real(self, t)

            mp.setattr(Engine, "iterate", broken)
            assert run_one(sessions, sweep.id, keys[BROKEN])["outcome"] == "failed"
        for (model, seed), letter in TRANSFERS.items():
            server.responder = responder_for(PROGRAM_NAMES[letter])
            out = transfer_one(sessions, sweep.id, keys[(model, seed)])
            assert out["outcome"] == "finished", out
        tokens, requests = server.prompt_tokens + server.completion_tokens, len(server.requests)
    return Built(sessions, sweep, scores, tokens, requests, keys)
