"""The LM options of `run`, `new` and `resume` (caps, concurrency) and what `run` does with them
around the engine (cap check, the worst-case projection before a run, a ctrl+c that records the
calls in flight)."""

from __future__ import annotations

import argparse
import math
import sys

from stop_tui.engine.errors import UserError

EXIT_CAPPED = 3  # `run` stopped at a session cap (resume with a higher cap)


def add_lm_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LM spend and parallelism")
    g.add_argument("--max-concurrency", type=int, default=None, metavar="N",
                   help="LM requests in flight at once (default 8)")
    g.add_argument("--max-cost", type=float, default=None, metavar="USD",
                   help="session cap in dollars: the run pauses before a call that could pass it")
    g.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="session cap on prompt + completion tokens")
    g.add_argument("--max-calls", type=int, default=None, metavar="N",
                   help="session cap on LM calls")


def lm_overrides(args: argparse.Namespace) -> dict:
    for name in ("max_concurrency", "max_tokens", "max_calls"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    cost = getattr(args, "max_cost", None)
    if cost is not None and not (math.isfinite(cost) and cost > 0):
        raise UserError(f"--max-cost must be a number of dollars more than 0 (got {cost:g})")
    return {"cap_cost_usd": getattr(args, "max_cost", None),
            "cap_tokens": getattr(args, "max_tokens", None),
            "cap_calls": getattr(args, "max_calls", None),
            "max_concurrency": getattr(args, "max_concurrency", None)}


def check_caps(settings, price_key: str) -> None:
    from stop_tui.engine.lm.prices import price

    if settings.cap_cost_usd is not None and price(price_key) is None:
        raise UserError(f"--max-cost needs a price for {price_key!r}, which is not in the price "
                        "table (stop_tui/engine/lm/prices.toml): use --max-tokens or --max-calls")


def projection_line(session, iterations: int) -> str:
    """The worst-case spend of what is left to run, for stderr before the run starts."""
    from stop_tui.engine.lm.caps import engine_projection

    return engine_projection(session.engine, iterations)


def stop_on_interrupt(session, wait: float = 10.0) -> None:
    """ctrl+c during `run`: the LM calls in flight are paid for, so give them `wait` seconds to
    be recorded (a resume then reuses them; ctrl+c again leaves at once), then say so in the log."""
    from stop_tui.engine import events as ev
    from stop_tui.engine.store import cli_name

    print(f"stop-tui: stopping; recording the LM calls in flight (up to {wait:g} s, ctrl+c again "
          "to leave now)", file=sys.stderr)
    try:
        session.engine.lm.drain(timeout=wait)
    except KeyboardInterrupt:
        pass
    session.store.append(ev.Event(ev.PAUSED, "", {
        "reason": f"stopped by the user (ctrl+c); resume: stop-tui run --resume {cli_name(session.store.folder)}"}))
