"""The Budget pane: LM calls, completions, tokens and dollars, used / limit, for the session
and the running iteration, with a recent rate."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from stop_tui.tui import model as m
from stop_tui.tui.palette import palette


def _fmt(n: float | int | None) -> str:
    if n is None:
        return "-"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.2f}"
    n = int(n)
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 10_000:
        return f"{n / 1e3:.1f}k"
    return f"{n:,}"


def iteration_call_limit(s: dict) -> int | None:
    """The most LM calls one iteration can make under the settings: the improver's own runs
    plus every meta-utility run of every candidate it may score, plus the check."""
    try:
        lm, mub, runs = int(s["lm_budget"]), int(s["meta_utility_budget"]), int(s["meta_runs"])
    except (KeyError, TypeError, ValueError):
        return None
    return lm + (mub + 1) * runs * lm


class BudgetPane(Widget):
    HELP = """\
## Budget

LM use so far: calls (each `prompt` / `batch_prompt` is one use), completions, tokens in and
out, and dollars when the model has a known price (local models are free; unknown prices
show tokens only). Limits come from the session settings: per improver run, the most one
iteration can use, and session caps when set. "parallel" is the most LM requests that were in
flight at once (bounded by --max-concurrency). The rate is over the most recent replies.
"waiting" names the LM request that has waited longest for its server, once it has waited more
than a few seconds.
"""
    WAIT_SHOWN = 5.0  # seconds a request waits before the pane names it

    def __init__(self, session_model: m.Snapshot, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = session_model

    def on_mount(self) -> None:
        self.border_title = "Budget"
        self._waiting_line: str | None = None
        self.set_interval(1.0, self._poll_waiting)

    def _poll_waiting(self) -> None:
        """Ask the live LM service (if this app runs the session) what is still waiting."""
        from stop_tui.progress import describe_waiting

        session = getattr(self.app, "session", None)
        service = getattr(getattr(session, "engine", None), "lm", None)
        waiting = getattr(service, "waiting", None)
        line = describe_waiting(waiting(), self.WAIT_SHOWN) if callable(waiting) else None
        if line != self._waiting_line:
            self._waiting_line = line
            self.refresh()

    def _bar(self, used: float, limit: float | None, width: int, c: dict[str, str]) -> Text:
        if not limit or width < 4:
            return Text(" " * max(0, width))
        frac = max(0.0, min(1.0, used / limit))
        full = round(frac * width)
        color = c["success"] if frac < 0.75 else c["warning"] if frac < 1.0 else c["error"]
        return Text.assemble(("█" * full, color), ("░" * (width - full), c["faint"]))

    def render(self) -> Text:
        c = palette(self.app)
        md = self.model
        s = md.settings
        width = self.content_region.width
        tot = md.totals
        t = md.current_iteration
        it = md.iteration_usage.get(t) if t is not None else None
        it_limit = iteration_call_limit(s)
        iterations = int(s.get("iterations", 0) or 0)
        session_calls_limit = _cap(s, "cap_calls", "max_calls")
        if session_calls_limit is None and it_limit is not None:
            session_calls_limit = it_limit * iterations + int(s.get("meta_runs", 1) or 1) * int(s.get("lm_budget", 1) or 1)
            cap_note = "max by settings"
        else:
            cap_note = "cap"
        label_w, num_w = 12, 18
        bar_w = max(0, width - label_w - num_w - 2)
        out = Text(no_wrap=True, overflow="crop", end="")

        def row(label: str, used: float, limit: float | None, extra: str = "") -> None:
            out.append(f"{label:<{label_w}}", style=c["muted"])
            nums = f"{_fmt(used)}" + (f" / {_fmt(limit)}" if limit else "") + extra
            out.append(f"{nums:<{num_w}} ")
            out.append_text(self._bar(used, limit, bar_w, c))
            out.append("\n")

        out.append("session", style=f"bold {c['primary']}")
        out.append(f"  ({cap_note})\n" if session_calls_limit else "\n", style=c["muted"])
        row("calls", tot.calls, session_calls_limit)
        row("completions", tot.completions, None, f"  ({_fmt(tot.requests)} requests)")
        tokens = tot.prompt_tokens + tot.completion_tokens
        row("tokens", tokens, _tokens_cap(s))
        out.append(f"{'':<{label_w}}", style=c["muted"])
        out.append(f"{_fmt(tot.prompt_tokens)} in / {_fmt(tot.completion_tokens)} out\n", style=c["muted"])
        if tot.cost_usd is None:
            out.append(f"{'dollars':<{label_w}}", style=c["muted"])
            out.append("unknown price (tokens only)\n", style=c["muted"])
        else:
            cost_cap = _cap(s, "cap_cost_usd", "max_cost")
            row("dollars", tot.cost_usd, cost_cap, "" if cost_cap else ("  (free)" if tot.cost_usd == 0 else ""))
        out.append(f"iteration {t if t is not None else '-'}", style=f"bold {c['primary']}")
        out.append("\n")
        if it is None:
            row("calls", 0, it_limit)
        else:
            row("calls", it.calls, it_limit)
            row("tokens", it.prompt_tokens + it.completion_tokens, None)
            if it.cost_usd:
                row("dollars", it.cost_usd, None)
        out.append(f"{'per run':<{label_w}}", style=c["muted"])
        out.append(f"{s.get('lm_budget', '-')} calls × {s.get('max_responses_per_call', '-')} samples, "
                   f"{s.get('max_tokens', '-')} tokens each\n", style=c["muted"])
        out.append(f"{'parallel':<{label_w}}", style=c["muted"])
        out.append(f"peak {md.peak_concurrency} request(s) in flight (max {s.get('max_concurrency', '-')})\n",
                   style=c["muted"])
        per_min, tok_s = md.rate()
        out.append(f"{'rate':<{label_w}}", style=c["muted"])
        out.append(f"{per_min:.1f} calls/min · {tok_s:,.0f} tokens/s")
        waiting = getattr(self, "_waiting_line", None)
        if waiting:
            out.append(f"\n{'waiting':<{label_w}}", style=c["muted"])
            out.append(waiting.removeprefix("waiting for "), style=c["warning"])
        return out


def _cap(s: dict, *keys: str) -> float | None:
    """A session cap (--max-calls / --max-tokens / --max-cost), under whichever name the
    settings carry it; None: no cap."""
    for key in keys:
        value = s.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _tokens_cap(s: dict) -> float | None:
    return _cap(s, "cap_tokens", "max_total_tokens")
