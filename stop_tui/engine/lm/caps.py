"""Session caps on LM spend (--max-cost, --max-tokens, --max-calls) and the worst-case projection
shown before a run starts.

A cap is hard: a call is only sent when what is spent, plus the most the calls in flight can
still cost, plus the most this call can cost, stays within every cap. "The most a call can
cost" is n x max_tokens completion tokens plus its prompt tokens, estimated from the prompt's
length (tokens are counted by the server, so the prompt side is an estimate). A refused call
pauses the run (never mid-record); raising the cap and resuming continues exactly there.

A budget shared by several sessions (a sweep's --max-cost: engine/sweep/cost_pool.py) is asked
after the session's own caps, with the same worst case, and told what the call really cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from stop_tui.engine.lm.prices import cost as price_cost
from stop_tui.engine.lm.prices import price

CHARS_PER_TOKEN = 3.0  # a conservative prompt-size estimate (English and code run ~4)
TEMPLATE_TOKENS = 16  # chat-template tokens around each message


def estimate_tokens(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN) + TEMPLATE_TOKENS


@dataclass(frozen=True)
class Caps:
    cost_usd: float | None = None
    tokens: int | None = None
    calls: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.cost_usd, self.tokens, self.calls))

    def refuse(self, used: dict, reserved: dict, call: dict) -> tuple[str, str] | None:
        """(cap option, message) when the call must not be sent, else None. `used`: session
        totals; `reserved`: the worst case of calls in flight; `call`: this call's worst case
        (keys calls, tokens, cost_usd)."""
        if self.calls is not None:
            done = int(used.get("calls", 0)) + int(reserved.get("calls", 0))
            if done + 1 > self.calls:
                return "--max-calls", (f"the LM call cap is reached ({done} of --max-calls "
                                       f"{self.calls} used)")
        if self.tokens is not None:
            spent = int(used.get("prompt_tokens", 0)) + int(used.get("completion_tokens", 0))
            held, this = int(reserved.get("tokens", 0)), int(call.get("tokens", 0))
            if spent + held + this > self.tokens:
                return "--max-tokens", (f"the next LM call could pass the token cap ({spent:,} "
                                        f"used, {held:,} held by calls in flight, up to {this:,} "
                                        f"for this call; --max-tokens {self.tokens:,})")
        if self.cost_usd is not None:
            spent_usd = used.get("cost_usd")
            if spent_usd is None or call.get("cost_usd") is None:
                return "--max-cost", ("--max-cost needs the model's price, and it is not in the "
                                      "price table (prices.toml): use --max-tokens instead")
            held_usd, this_usd = float(reserved.get("cost_usd", 0.0)), float(call["cost_usd"])
            if float(spent_usd) + held_usd + this_usd > self.cost_usd + 1e-12:
                return "--max-cost", (f"the next LM call could pass the cost cap (${float(spent_usd):.4f}"
                                      f" spent, ${held_usd:.4f} held by calls in flight, up to "
                                      f"${this_usd:.4f} for this call; --max-cost {self.cost_usd:g})")
        return None


class SharedBudget(Protocol):
    """Dollars shared by several runs, this run's name bound in (cost_pool.bind). The LM service
    reserves a call's worst case before sending it and settles it with what the call cost."""

    resume: str | None  # the command that continues the run once the cap is raised

    def join(self, spent_usd: float) -> None:
        """The run (re)starts: what its log says it spent; reservations it held are dropped."""

    def reserve(self, usd: float | None) -> str | None:
        """None: granted; else the refusal line. `usd` None: the model has no price."""

    def settle(self, reserved_usd: float | None, spent_usd: float) -> None:
        """A reserved call ended: its reservation is returned and `spent_usd` added."""


def logged_cost_usd(budgets: Iterable[dict]) -> float:
    """What a session's log says it spent, from its BUDGET events' data (all of them, those a
    resume superseded included): their highest cost. A resumed run climbs back to it while its
    interrupted iteration is re-executed from the record, without asking the server again."""
    return max((float(b["cost_usd"]) for b in budgets if isinstance(b.get("cost_usd"), int | float)),
               default=0.0)


def call_worst_case(price_key: str, system: str, messages: list[str], groups: int,
                    requests: int, max_tokens: int) -> dict:
    """The most one call can cost: every sample at max_tokens; the prompt billed once per
    request (`requests`: how many the call will send at most)."""
    prompt_each = estimate_tokens(system) + max(estimate_tokens(m) for m in messages)
    prompt = prompt_each * max(requests, groups)
    completion = len(messages) * max_tokens
    return {"calls": 1, "tokens": prompt + completion,
            "cost_usd": price_cost(price_key, prompt, completion)}


def projection(settings, iterations: int, *, meta_prompt_chars: int, task_prompt_chars: int,
               price_key: str, include_seed: bool = True) -> dict:
    """Worst-case LM spend of a run with these settings (README, "The method"): per iteration,
    the improver's own calls, every û use running `meta_runs` improvers to their full budget,
    and the re-check; plus iteration 0 (the seed improver's û)."""
    s = settings
    run_calls = s.lm_budget
    per_iteration_meta = s.lm_budget  # the improver improving itself
    per_iteration_task = (s.meta_utility_budget + 1) * s.meta_runs * run_calls
    seed_calls = s.meta_runs * run_calls if include_seed else 0
    meta_calls = per_iteration_meta * iterations
    task_calls = per_iteration_task * iterations + seed_calls
    calls = meta_calls + task_calls
    completions = calls * s.max_responses_per_call
    completion_tokens = completions * s.max_tokens
    # Worst case for the prompt: billed once per sample (servers that ignore n).
    prompt_tokens = s.max_responses_per_call * (
        meta_calls * (int(meta_prompt_chars / CHARS_PER_TOKEN) + 2 * TEMPLATE_TOKENS)
        + task_calls * (int(task_prompt_chars / CHARS_PER_TOKEN) + 2 * TEMPLATE_TOKENS))
    rates = price(price_key)
    dollars = price_cost(price_key, prompt_tokens, completion_tokens) if rates else None
    return {"iterations": iterations, "calls": calls, "completions": completions,
            "completion_tokens": completion_tokens, "prompt_tokens_estimate": prompt_tokens,
            "cost_usd": dollars, "priced": rates is not None}


def describe_projection(p: dict, model: str) -> str:
    cost = (f"at most ${p['cost_usd']:,.2f} at {model} prices" if p["cost_usd"] is not None
            else f"cost unknown ({model} is not in the price table: tokens only)")
    return (f"worst case for {p['iterations']} iteration(s): {p['calls']:,} LM calls, "
            f"{p['completions']:,} completions, <= {p['completion_tokens']:,} output tokens "
            f"+ ~{p['prompt_tokens_estimate']:,} input tokens (estimated); {cost}")


def engine_projection(engine, iterations: int) -> str:
    """The worst-case spend of what is left of a session's run, as one line (shown before a run
    starts: `stop-tui run` prints it on stderr; the TUI can show it too)."""
    st, s = engine.state, engine.settings
    left = max(iterations - st.iterations_done, 0)
    meta_chars = len(engine.meta.seed) + len(engine.meta.displayed) + 600
    task_chars = len(engine.task.seed) + len(engine.task.displayed) + 600
    p = projection(s, left, meta_prompt_chars=meta_chars, task_prompt_chars=task_chars,
                   price_key=engine.lm.backend.price_key, include_seed=not st.seed_scored)
    line = describe_projection(p, engine.lm.backend.model)
    caps = [f"{name} {value:g}" for name, value in (("--max-cost", s.cap_cost_usd),
            ("--max-tokens", s.cap_tokens), ("--max-calls", s.cap_calls)) if value is not None]
    return line + (f"; caps: {', '.join(caps)}" if caps else
                   "; no caps (--max-cost/--max-tokens/--max-calls)")
