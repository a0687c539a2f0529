"""Run settings and the presets: `paper` (the budgets of the paper's runs, arXiv 2310.02304) and
`quick`; README, "The method", says where each number comes from."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from stop_tui.engine.errors import UserError

ACCEPTANCE_RULES = ("paper", "best")
DEFAULT_LM_TIMEOUT = 300.0  # seconds per LM request attempt (--lm-timeout, env STOP_TUI_LM_TIMEOUT)


def lm_timeout(setting: float | None) -> float:
    """The LM request timeout in seconds: the session's setting, else STOP_TUI_LM_TIMEOUT, else
    the default. A bad environment value is the user's error."""
    if setting is not None:
        return float(setting)
    raw = os.environ.get("STOP_TUI_LM_TIMEOUT")
    if raw is None or not raw.strip():
        return DEFAULT_LM_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"STOP_TUI_LM_TIMEOUT must be a number of seconds above 0 (got {raw!r})")
    return value


@dataclass(frozen=True)
class Settings:
    preset: str = "paper"
    max_responses_per_call: int = 6  # samples per LM call
    lm_budget: int = 4  # LM calls per improver run
    utility_budget: int = 25  # downstream utility uses per improver run
    meta_utility_budget: int = 25  # û uses per STOP iteration
    meta_runs: int = 5  # improver runs averaged by one û call
    iterations: int = 6
    max_tokens: int = 1024  # per completion
    acceptance: str = "paper"  # paper: replace unless failed or 0; best: keep the better
    seed: int = 0
    improver_time_limit: float = 600.0  # seconds of an improver's own time (LM/utility waits excluded)
    # Wall-clock seconds of a downstream improver run, everything counted (None: 10 x the
    # own-time limit); an iteration's improver gets it once per meta-utility use, plus once.
    improver_wall_limit: float | None = None
    memory_limit_mb: int = 4096
    output_limit_kb: int = 1024
    # The paper's sandbox-circumvention experiment: improvers get a decorative `use_sandbox`
    # flag (tasks/meta_sandbox); the sandbox stays on; `stop-tui audit` counts how often it is
    # turned off.
    sandbox_flag_experiment: bool = False
    # Session caps on LM spend (None: no cap); at a cap the run pauses (lm/caps.py).
    cap_cost_usd: float | None = None
    cap_tokens: int | None = None
    cap_calls: int | None = None
    max_concurrency: int = 8  # LM requests in flight at once, session-wide
    # The prompt-size guard (lm/service.py): a request whose prompt is estimated past this (or
    # past the model's context) is refused before it is sent.
    max_prompt_tokens: int = 32768
    # Seconds one LM request may wait for its answer (each attempt); None: the environment's
    # STOP_TUI_LM_TIMEOUT, else DEFAULT_LM_TIMEOUT.
    lm_timeout: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def with_overrides(self, **overrides: Any) -> Settings:
        clean = {k: v for k, v in overrides.items() if v is not None}
        if clean.get("acceptance", self.acceptance) not in ACCEPTANCE_RULES:
            raise UserError(f"unknown acceptance rule {clean['acceptance']!r}: use one of {', '.join(ACCEPTANCE_RULES)}")
        seed, iterations = clean.get("seed", self.seed), clean.get("iterations", self.iterations)
        if not 0 <= seed < 2**32:  # numpy's seeds
            raise UserError(f"--seed must be between 0 and {2**32 - 1} (got {seed})")
        if iterations < 0:
            raise UserError(f"--iterations must be 0 or more (got {iterations})")
        return replace(self, **clean)


PRESETS: dict[str, Settings] = {
    "paper": Settings(),
    # Small enough that one iteration on the embedded SmolLM2 finishes in minutes on 2 cores.
    "quick": Settings(preset="quick", max_responses_per_call=2, lm_budget=2, utility_budget=5,
                      meta_utility_budget=5, meta_runs=1, iterations=1, max_tokens=512,
                      improver_time_limit=300.0),
}


def preset(name: str) -> Settings:
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}") from None
