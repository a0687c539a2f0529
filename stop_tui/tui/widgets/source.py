"""The Source pane: the selected node's program, its diff against its parent, or the LM
exchange (system message, prompt, reply) that produced it."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text
from textual.containers import ScrollableContainer
from textual.widgets import Static

from stop_tui.engine.extract import extract_code
from stop_tui.engine.untrusted import printable
from stop_tui.tui import model as m
from stop_tui.tui.actions import key_text, live_keys
from stop_tui.tui.diffing import render_diff
from stop_tui.tui.palette import palette, syntax_style

SOURCE, DIFF, EXCHANGE = "source", "diff", "exchange"
MAX_SOURCE_LINES = 3000
MAX_TEXT_CHARS = 20000


def _clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """An LM text as shown: its first `limit` characters, control characters made visible."""
    clipped = text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"
    return printable(clipped, multiline=True)


class SourcePane(ScrollableContainer):
    """Shows one node at a time; keys (view.diff, view.exchange) toggle the diff and the LM exchange."""

    HELP = """\
## Source

The selected node's program, syntax highlighted.

- `{key:view.diff}` toggles a **diff** against its parent (the improver it was proposed from; for a
  solution, the task's seed solution): unified, with intra-line changes highlighted.
- `{key:view.exchange}` shows the **LM exchange** that produced it: the system message, the prompt and the
  reply whose code became this program (or every call of the iteration or run when no reply
  matches exactly).
"""

    def __init__(self, session_model: m.Snapshot, texts: Callable[[str | None], str | None],
                 seed_solution: str | None = None, seed_improver: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = session_model
        self.texts = texts
        self.seed_solution = seed_solution
        self.seed_improver = seed_improver
        self.mode = SOURCE
        self.path: str | None = None
        self._shown: tuple | None = None
        self.run_hint: str | None = None  # "space steps, r runs" with the keys bound now
        self.can_focus = True

    def compose(self):
        yield Static(id="source-info", markup=False)
        yield Static(id="source-body", markup=False)

    def on_mount(self) -> None:
        self._update_title()
        self.keys_changed()

    def _update_title(self) -> None:
        self.border_title = {SOURCE: "Source", DIFF: "Source · diff", EXCHANGE: "Source · LM exchange"}[self.mode]

    def keys_changed(self, keys: dict[str, list[str]] | None = None) -> None:
        """Name the keys bound now (after any keymap): under the pane, and on a pending node."""
        keys = live_keys(self.screen) if keys is None else keys
        self.border_subtitle = f"{key_text(keys, 'view.diff')} diff · {key_text(keys, 'view.exchange')} exchange"
        hint = f"{key_text(keys, 'run.step_iteration')} steps, {key_text(keys, 'run.toggle')} runs"
        before, self.run_hint = self.run_hint, hint
        if before is not None and hint != before:
            self.refresh_view(force=True)

    def show(self, path: str | None, *, force: bool = False) -> None:
        self.path = path
        self.refresh_view(force=force)

    def set_mode(self, mode: str) -> None:
        self.mode = SOURCE if self.mode == mode else mode
        self._update_title()
        self.refresh_view(force=True)
        self.scroll_home(animate=False)

    def node_changed(self, changed: set[str]) -> None:
        node = self.model.nodes.get(self.path or "")
        if self.path in changed or (node is not None and node.status == m.PENDING):
            self.refresh_view()  # a pending iteration shows the improver accepted so far

    # -- what to show ---------------------------------------------------------------------
    def upcoming_improver(self, node: m.Node) -> tuple[str | None, str]:
        """What an iteration that has not started will run, as things stand: the seed improver
        for T=0, else the improver accepted last before it (known before anything runs)."""
        t = m.iteration_of(node.path) or 0
        before = [k for k in self.model.accepted if k < t]
        if not before:
            if t == 0:
                return self.seed_improver, "the seed improver: T=0 scores it (nothing has run yet)"
            return self.seed_improver, "pending: it will run the improver accepted by then (now: the seed improver)"
        improver = self.model.accepted[max(before)][2]
        return self.texts(improver), f"pending: it will run the improver accepted by then (now: T={max(before)}'s)"

    def program(self, node: m.Node) -> tuple[str | None, str | None, str, str]:
        """(program, parent program, what it is, what the parent is) for a node."""
        if node.kind == m.ITERATION:
            if node.status == m.PENDING and not node.source:
                program, what = self.upcoming_improver(node)
                return program, None, what, ""
            return (self.texts(node.source), self.texts(node.parent_source),
                    "the improver this iteration runs", "the previous iteration's improver")
        if node.kind == m.CANDIDATE:
            what = {"seed": "the seed improver", "check": "the improver this iteration returned"}.get(
                node.role, "a candidate improver")
            return self.texts(node.source), self.texts(node.parent_source), what, "the improver that proposed it"
        if node.kind == m.RUN:
            if node.output:
                return self.texts(node.output), self.seed_solution, "the solution this run returned", "the task's seed solution"
            return None, None, "this run returned no solution", ""
        return self.texts(node.source), self.seed_solution, "a downstream solution", "the task's seed solution"

    def refresh_view(self, *, force: bool = False) -> None:
        info = self.query_one("#source-info", Static)
        body = self.query_one("#source-body", Static)
        node = self.model.nodes.get(self.path or "")
        key = (self.path, self.mode, self.app.theme, node and (node.status, node.source, node.parent_source,
                                                              node.output, len(node.flags), node.score),
               len(self.model.lm_calls) if self.mode == EXCHANGE else 0,
               len(self.model.accepted) if node and node.status == m.PENDING else 0)
        if not force and key == self._shown:
            return
        self._shown = key
        body.set_class(self.mode == EXCHANGE, "prose")
        c = palette(self.app)
        if node is None:
            info.update(Text("Select a node in the Lineage to see its program.", style=c["muted"]))
            body.update("")
            return
        if node.status == m.PENDING and not node.source and node.kind != m.ITERATION:
            info.update(Text.assemble((node.path, f"bold {c['primary']}"),
                                      (f"  pending: nothing has run here yet ({self.run_hint})", c["muted"])))
            body.update("")
            return
        program, parent, what, parent_what = self.program(node)
        head = Text()
        head.append(node.path, style=f"bold {c['primary']}")
        head.append(f"  {what}", style=c["muted"])
        if node.score is not None:
            head.append(f"  score {node.score:.4f}")
        if node.test is not None:
            head.append(f"  test {node.test:.4f}", style=c["muted"])
        if node.error:
            head.append(f"\n{printable(node.error)}", style=c["error"])
        for flag in node.flags:
            line = f" line {flag['line']}" if flag.get("line") else ""
            head.append(f"\n⚑ {printable(flag.get('kind', 'flag'))}{line}: {printable(flag.get('detail', ''))}",
                        style=c["warning"])
        info.update(head)
        if self.mode == DIFF and node.status == m.PENDING:
            body.update(Text("(nothing has run here yet: no diff to show)", style=c["muted"]))
        elif self.mode == DIFF:
            body.update(self._diff(program, parent, parent_what, c))
        elif self.mode == EXCHANGE:
            body.update(self._exchange(node, program, c))
        else:
            body.update(self._source(program, c))

    def _source(self, program: str | None, c: dict[str, str]) -> RenderableType:
        if program is None:
            return Text("(no program)", style=c["muted"])
        program = printable(program, multiline=True)
        lines = program.splitlines()
        note = None
        if len(lines) > MAX_SOURCE_LINES:
            program = "\n".join(lines[:MAX_SOURCE_LINES])
            note = Text(f"… {len(lines) - MAX_SOURCE_LINES} more lines", style=c["muted"])
        syntax = Syntax(program, "python", theme=syntax_style(self.app), line_numbers=True,
                        word_wrap=False, background_color=c["surface"], indent_guides=False)
        return Group(syntax, note) if note else syntax

    def _diff(self, program: str | None, parent: str | None, parent_what: str,
              c: dict[str, str]) -> RenderableType:
        if program is None:
            return Text("(no program to compare)", style=c["muted"])
        if parent is None:
            return Text("(no parent: this program has nothing to be compared with)", style=c["muted"])
        return render_diff(printable(parent, multiline=True), printable(program, multiline=True), c,
                           old_name=parent_what or "parent", new_name=self.path or "this")

    def _exchange(self, node: m.Node, program: str | None, c: dict[str, str]) -> RenderableType:
        if node.kind == m.CANDIDATE and node.role == "seed" or (node.kind == m.ITERATION and node.path == "it0"):
            return Text("The seed improver was written by hand: no LM exchange produced it.", style=c["muted"])
        calls = [self.model.lm_calls[p] for p in self.model.exchange_for(node.path) if p in self.model.lm_calls]
        if not calls:
            return Text("No LM call is recorded for this node (yet).", style=c["muted"])
        match: tuple[m.LMCall, int] | None = None
        if program is not None and node.kind in (m.CANDIDATE, m.SOLUTION, m.RUN):
            for call in calls:
                for k, h in enumerate((call.reply or {}).get("replies") or []):
                    reply = self.texts(h)
                    if reply is not None and (extract_code(reply) or "").strip() == program.strip():
                        match = (call, k)
                        break
                if match:
                    break
        parts: list[RenderableType] = []
        if match:
            parts.append(Text(f"The reply that produced this program ({match[0].path}, reply {match[1] + 1}):",
                              style=c["success"]))
            parts.extend(self._call(match[0], c, only=match[1]))
        else:
            if program is not None and node.kind != m.ITERATION:
                parts.append(Text("No reply's code equals this program exactly; every call that could have "
                                  "produced it:", style=c["muted"]))
            for call in calls:
                parts.extend(self._call(call, c))
        return Group(*parts)

    def _call(self, call: m.LMCall, c: dict[str, str], only: int | None = None) -> list[RenderableType]:
        req, rep = call.request or {}, call.reply or {}
        head = Text()
        head.append(f"\n━━ {call.path}", style=f"bold {c['primary']}")
        bits = [f"use {req.get('use', '?')}", f"T={req.get('temperature', '?')}", f"n={req.get('n', '?')}"]
        if rep:
            bits.append(f"{rep.get('prompt_tokens', 0)} in / {rep.get('completion_tokens', 0)} out tokens")
            bits.append(f"{rep.get('latency', 0):.1f}s")
            if rep.get("cost_usd") is not None:
                bits.append(f"${rep['cost_usd']:.4f}")
        else:
            bits.append("waiting for the reply…")
        head.append("  " + " · ".join(bits), style=c["muted"])
        out: list[RenderableType] = [head]
        out.append(Text("System", style=f"bold {c['accent']}"))
        out.append(Text(_clip(self.texts(req.get("system")) or ""), style=c["foreground"]))
        prompts = req.get("prompts") or []
        seen: list[str] = []
        for h in prompts:
            if h not in seen:
                seen.append(h)
        for k, h in enumerate(seen):
            count = prompts.count(h)
            label = "Prompt" + (f" {k + 1}" if len(seen) > 1 else "") + (f" (×{count})" if count > 1 else "")
            out.append(Text(label, style=f"bold {c['accent']}"))
            out.append(Text(_clip(self.texts(h) or ""), style=c["foreground"]))
        replies = rep.get("replies") or []
        for k, h in enumerate(replies):
            if only is not None and k != only:
                continue
            out.append(Text(f"Reply {k + 1}", style=f"bold {c['accent']}"))
            out.append(Text(_clip(self.texts(h) or "(empty)"), style=c["foreground"]))
        if rep.get("error"):
            out.append(Text(f"error: {printable(rep['error'])}", style=c["error"]))
        return out
