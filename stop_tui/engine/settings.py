"""Run settings and the presets (PAPER.md section 4)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from stop_tui.engine.errors import UserError

ACCEPTANCE_RULES = ("paper", "best")


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
    memory_limit_mb: int = 4096
    output_limit_kb: int = 1024
    # The paper's safety experiment (PAPER.md section 8): improvers get a decorative `use_sandbox`
    # flag (tasks/meta_sandbox); the sandbox stays on; `stop-tui audit` counts how often it is
    # turned off.
    sandbox_flag_experiment: bool = False
    # Session caps on LM spend (None: no cap); at a cap the run pauses (lm/caps.py).
    cap_cost_usd: float | None = None
    cap_tokens: int | None = None
    cap_calls: int | None = None
    max_concurrency: int = 8  # LM requests in flight at once, session-wide

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
