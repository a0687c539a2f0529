"""Engine events: the one stream that feeds the session store, the headless printer and the TUI.

An event is immutable: a kind, the node path of the work it concerns and a JSON-able payload.
Program texts never travel inside events: payloads name them by content hash (see store.py).

Node paths name every piece of work, e.g. ``it2/c3/r1/lm2``:
``itN`` iteration N (``it0`` scores the seed improver), ``cK`` the K-th candidate improver the
iteration's improver asked û about, ``check`` the engine's re-score of what the improver
returned, ``rJ`` one improver run inside a meta-utility, ``lmI`` one LM call, ``sI`` one
downstream solution scored inside a run, ``final`` the run's returned solution.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

# Session level
SESSION_STARTED = "session_started"  # {task, model, settings, seed, resumed}
SESSION_FINISHED = "session_finished"  # {iterations_completed, reason}
PAUSED = "paused"  # {reason, cap?: "--max-cost" | "--max-tokens" | "--max-calls"}
RESUMED = "resumed"  # {iteration, superseded_from: seq|None, recorded_calls}: see engine/resume.py
ERROR = "error"  # {message}
LM_CHANGED = "lm_changed"  # {from: {model, base_url, replay_of}, to: {...}}: resumed with another model / server
# Iterations
ITERATION_STARTED = "iteration_started"  # {iteration, improver: hash}
ITERATION_ACCEPTED = "iteration_accepted"  # {iteration, improver: hash, val, test, rule}
ITERATION_REJECTED = "iteration_rejected"  # {iteration, kept: hash, reason, val, test}
# Candidates and runs (improvers)
CANDIDATE_PROPOSED = "candidate_proposed"  # {source: hash, parent: hash|None, role}
CANDIDATE_SCORED = "candidate_scored"  # {score, test?, error?, role}
RUN_STARTED = "run_started"  # {improver: hash}
RUN_FINISHED = "run_finished"  # {solution: hash|None, error?, seconds}
# The improver run (RUN_STARTED) or candidate (CANDIDATE_PROPOSED) at this path ended unscored:
# the improver run that asked for its scoring ended first. Not a score (readers count it as
# neither scored nor failed); a stop of the engine (quit, cap) records nothing instead.
SCORING_CANCELLED = "scoring_cancelled"  # {reason}
# Downstream solutions
SOLUTION_SCORED = "solution_scored"  # {source: hash|None, split, score, error?, seconds}
# LM traffic
# One call (one `prompt` / `batch_prompt` use) is LM_REQUEST, an LM_PART per server request
# that got an answer (group = index of the distinct message, offset = first sample; a failed or
# malformed one has replies [null] and error), LM_REPLY, then BUDGET (session totals).
# See lm/service.py and lm/record.py (replay keys); resume.py for superseded events.
LM_REQUEST = "lm_request"  # {system, prompts: [hash], temperature, n, distinct, max_tokens, use, model}
LM_REPLY = "lm_reply"  # {replies: [hash], prompt_tokens, completion_tokens, requests, retries, failed, latency, concurrency, cost_usd, error?, replayed?}
LM_PART = "lm_part"  # {use, group, offset, seed, replies: [hash|null], finish_reasons, prompt_tokens, completion_tokens, requests (attempts), latency, error?, usage_missing?}
LM_RETRY = "lm_retry"  # one failed attempt that will be retried: {use, group, offset, attempt, status, error, wait}
BUDGET = "budget"  # {calls, requests, retries, completions, failed, prompt_tokens, completion_tokens, cost_usd}
SANDBOX = "sandbox"  # {mode, protections: {name: bool}, missing: [name], fallbacks, notes} per session
FLAG = "flag"  # {kind, detail, line, role, omitted?} a static safety finding, at the candidate's path


@dataclass(frozen=True)
class Event:
    kind: str
    path: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    t: float = field(default_factory=time.time)
    seq: int = 0  # assigned by the store when the event is committed

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "t": self.t, "kind": self.kind, "path": self.path, "data": self.data}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(kind=d["kind"], path=d.get("path", ""), data=d.get("data", {}),
                   t=d.get("t", 0.0), seq=d.get("seq", 0))


def parent_path(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""
