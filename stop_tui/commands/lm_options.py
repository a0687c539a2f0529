"""The LM options (caps, concurrency, prompt guard, timeout; run_options.py declares them with
the other run options for run, new, resume and baseline) and what `run` does with them around
the engine (cap check, the worst-case projection before a run, a ctrl+c or SIGTERM that records
the calls in flight, a second one that leaves at once)."""

from __future__ import annotations

import argparse
import math
import os
import signal
import threading

from stop_tui.engine.errors import UserError
from stop_tui.engine.settings import DEFAULT_LM_TIMEOUT

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
    g.add_argument("--max-prompt-tokens", type=int, default=None, metavar="N",
                   help="refuse (before sending) a request whose prompt is estimated past N tokens "
                        "(default 32768; the model's context, when smaller, also applies)")
    g.add_argument("--lm-timeout", type=float, default=None, metavar="SECONDS",
                   help=f"how long one LM request may wait for its answer (default "
                        f"{DEFAULT_LM_TIMEOUT:g}, env STOP_TUI_LM_TIMEOUT); retried like a 5xx")


def lm_overrides(args: argparse.Namespace) -> dict:
    for name in ("max_concurrency", "max_tokens", "max_calls", "max_prompt_tokens"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    cost = getattr(args, "max_cost", None)
    if cost is not None and not (math.isfinite(cost) and cost > 0):
        raise UserError(f"--max-cost must be a number of dollars more than 0 (got {cost:g})")
    timeout = getattr(args, "lm_timeout", None)
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UserError(f"--lm-timeout must be a number of seconds above 0 (got {timeout:g})")
    return {"cap_cost_usd": getattr(args, "max_cost", None),
            "cap_tokens": getattr(args, "max_tokens", None),
            "cap_calls": getattr(args, "max_calls", None),
            "max_concurrency": getattr(args, "max_concurrency", None),
            "max_prompt_tokens": getattr(args, "max_prompt_tokens", None),
            "lm_timeout": timeout}


def check_caps(settings, price_key: str) -> None:
    from stop_tui.engine.lm.prices import price

    if settings.cap_cost_usd is not None and price(price_key) is None:
        raise UserError(f"--max-cost needs a price for {price_key!r}, which is not in the price "
                        "table (stop_tui/engine/lm/prices.toml): use --max-tokens or --max-calls")


def projection_line(session, iterations: int) -> str:
    """The worst-case spend of what is left to run, for stderr before the run starts."""
    from stop_tui.engine.lm.caps import engine_projection

    return engine_projection(session.engine, iterations)


STOP_WAIT = 10.0  # seconds the LM calls in flight get to be recorded after a ctrl+c (engine side)
SIGNAL_NAMES = {signal.SIGINT: "ctrl+c", signal.SIGTERM: "SIGTERM"}


class StopSignals:
    """ctrl+c (SIGINT) or SIGTERM during `run`. The first stops the run: the engine lets the LM
    calls in flight be recorded for up to STOP_WAIT seconds (they are paid for; a resume reuses
    them), then the session is left paused. A second leaves at once: the session is marked
    paused and the process exits (every committed event is safe; the calls in flight are asked
    again on resume)."""

    def __init__(self, session) -> None:
        self.session = session
        self.signum: int | None = None  # the first signal received
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        for signum in SIGNAL_NAMES:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def name(self) -> str:
        return SIGNAL_NAMES.get(self.signum, "a signal")

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum
            _say(f"stop-tui: stopping ({SIGNAL_NAMES[signum]}); recording the LM calls in flight "
                 f"(up to {STOP_WAIT:g} s, ctrl+c again to leave now)\n")
            self.session.gate.cancel()
            return
        _say("stop-tui: leaving now; the LM calls in flight are asked again on resume\n")
        # The main thread may hold the store's lock right now: write from another thread.
        writer = threading.Thread(target=self.record, args=("left at once",), daemon=True)
        writer.start()
        writer.join(2.0)
        os._exit(128 + self.signum)

    def record(self, how: str = "") -> None:
        """The PAUSED event that says who stopped the run and how to resume it."""
        from stop_tui.engine import events as ev
        from stop_tui.engine.store import cli_name

        extra = f", {how}" if how else ""
        self.session.store.append(ev.event(ev.Paused(
            reason=f"stopped by the user ({self.name}{extra}); resume: stop-tui run --resume "
                   f"{cli_name(self.session.store.folder)}")))

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


def _say(text: str) -> None:
    try:
        os.write(2, text.encode())  # not print(): this runs inside a signal handler
    except OSError:
        pass
