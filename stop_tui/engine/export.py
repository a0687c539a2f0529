"""One session, exported (`stop-tui export`), read-only from its folder (a live session too).

- `jsonl_lines`: every event of the log, in order (seq), as one JSON object a line:
  `{"seq", "t", "kind", "path", "data", "superseded"}`; `superseded` is true for the partial
  events of an unfinished iteration that a resume re-ran (engine/resume.py): they stay in the
  export, marked, as they stay in the log. `Event.from_dict(json.loads(line))` is the stored event.
- `candidate_rows` / `candidates_csv`: one row per candidate improver (a CANDIDATE_PROPOSED
  node: `itN/cK` asked about by iteration N's improver, `itN/check` what it returned, re-scored,
  `it0/check` the seed improver): its role, the node of its parent improver, its meta-utility
  (val, test), the error of its first failed run, and the LM tokens spent under it.
- `programs` / `write_programs`: every program text in the session (candidate improvers and
  downstream solutions) as `<node path>.py`, e.g. `it2/c3.py`, `it2/c3/r1/s1.py`, byte for byte
  the store's text.
- `markdown`: a one-session report: the self-improvement curve, each accepted improver with its
  diff against the one it replaced, and the LM spend per iteration.
The summary (JSON) is engine/summary.summarize.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stop_tui.engine import events as ev
from stop_tui.engine.errors import UserError
from stop_tui.engine.history import History
from stop_tui.engine.report.collect import row_of
from stop_tui.engine.resume import effective, is_superseded, superseded_ranges
from stop_tui.engine.store import SessionStore
from stop_tui.engine.untrusted import printable

CSV_FIELDS = ("path", "role", "parent_path", "val", "test", "error", "lm_tokens")
# A node path's parts as the engine writes them (itN, cK, rJ, sI, lmI, check, final, transfer
# and baseline labels): nothing that could climb out of the folder programs are written to.
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")


# -- events -----------------------------------------------------------------------------------

def jsonl_lines(events: Iterable[ev.Event]) -> Iterator[str]:
    """Each event as one JSON line, in log order, superseded ones marked."""
    events = list(events)
    ranges = superseded_ranges(events)
    for e in events:
        record = e.to_dict()
        record["superseded"] = is_superseded(e, ranges)
        yield json.dumps(record)


# -- candidates -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    path: str
    role: str  # seed | candidate | check (a baseline's: baseline:METHOD)
    parent_path: str | None  # the node whose program is this one's parent improver
    val: float | None  # its meta-utility (None: not scored, e.g. cancelled or still running)
    test: float | None
    error: str | None  # the first failed run's error, or why its scoring was cancelled
    lm_tokens: int  # prompt + completion tokens of the LM calls under its node
    source: str | None  # content hash of its program (None: the improver returned none)


def _under(path: str, node: str) -> bool:
    return path == node or path.startswith(node + "/")


def _nodes_of_programs(kept: list[ev.Event]) -> dict[str, str]:
    """Program hash -> the node that stands for it as an improver: the `check` node of the
    iteration that accepted it (`it0/check` for the seed), else the first node proposing it."""
    accepted = {e.payload.improver: e.path for e in kept if e.kind == ev.ITERATION_ACCEPTED}
    nodes: dict[str, str] = {}
    for e in kept:
        if e.kind != ev.CANDIDATE_PROPOSED or not e.payload.source:
            continue
        src = e.payload.source
        if src in accepted and e.path == f"{accepted[src]}/check":
            nodes[src] = e.path
        else:
            nodes.setdefault(src, e.path)
    return nodes


def candidate_rows(events: Iterable[ev.Event]) -> list[Candidate]:
    """One row per candidate improver, in the order they were proposed (superseded events skipped)."""
    kept = effective(events)
    nodes = _nodes_of_programs(kept)
    proposed = [e for e in kept if e.kind == ev.CANDIDATE_PROPOSED]
    scored = {e.path: e.payload for e in kept if e.kind == ev.CANDIDATE_SCORED}
    cancelled = {e.path: e.payload.reason for e in kept if e.kind == ev.SCORING_CANCELLED}
    tokens: dict[str, int] = {e.path: 0 for e in proposed}
    for e in kept:
        if e.kind != ev.LM_REPLY:
            continue
        node = e.path
        while node and node not in tokens:
            node = ev.parent_path(node)
        if node:
            tokens[node] += int(e.payload.prompt_tokens or 0) + int(e.payload.completion_tokens or 0)
    rows = []
    for e in proposed:
        p, s = e.payload, scored.get(e.path)
        parent = nodes.get(p.parent) if p.parent else None
        rows.append(Candidate(
            path=e.path, role=str(p.role), parent_path=parent,
            val=s.score if s else None, test=s.test if s else None,
            error=(s.error if s else None) or cancelled.get(e.path),
            lm_tokens=tokens[e.path], source=p.source))
    return rows


def candidates_csv(rows: Iterable[Candidate]) -> str:
    """The candidates as CSV (CSV_FIELDS); errors are the improvers' own text, shown escaped."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows:
        writer.writerow([r.path, r.role, r.parent_path or "", _cell(r.val), _cell(r.test),
                         printable(r.error) if r.error else "", r.lm_tokens])
    return out.getvalue()


def _cell(value: float | None) -> str:
    return "" if value is None else repr(float(value))


# -- programs ---------------------------------------------------------------------------------

def programs(events: Iterable[ev.Event]) -> list[tuple[str, str]]:
    """(node path, program hash) of every program in the session, in log order, one per node:
    candidate improvers and downstream solutions (superseded events skipped)."""
    out: dict[str, str] = {}
    for e in effective(events):
        if e.kind in (ev.CANDIDATE_PROPOSED, ev.SOLUTION_SCORED) and e.payload.source and e.path:
            out.setdefault(e.path, e.payload.source)
    return list(out.items())


def program_file(folder: Path, path: str) -> Path:
    """Where node `path`'s program goes under `folder`: `it2/c3` -> folder/it2/c3.py."""
    parts = path.split("/")
    if not all(_PART.fullmatch(part) for part in parts):
        raise UserError(f"cannot name a file after the node path {printable(path)!r}")
    return folder.joinpath(*parts[:-1], parts[-1] + ".py")


def write_programs(store: SessionStore, events: Iterable[ev.Event], folder: Path) -> list[Path]:
    """Every program of the session as a .py file under `folder` (created); the files written."""
    found = programs(events)
    targets = [(program_file(folder, path), digest) for path, digest in found]  # all checked first
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target, digest in targets:
            text = store.text(digest)
            if text is None:
                continue  # a hash with no text (a damaged store): nothing to write
            target.parent.mkdir(parents=True, exist_ok=True)
            # newline="": the text as stored (no \n -> os.linesep); surrogatepass: a lone
            # surrogate an LM wrote comes back equal (store.put_text keeps it the same way).
            with open(target, "w", encoding="utf-8", errors="surrogatepass", newline="") as f:
                f.write(text)
            written.append(target)
    except OSError as exc:
        raise UserError(f"cannot write programs to {folder}: {exc.strerror or exc}") from None
    return written


# -- the one-session report -------------------------------------------------------------------

def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _table_text(text: object) -> str:
    """Untrusted text in one Markdown table cell."""
    return printable(text).replace("|", "\\|")


def _fence(text: str, lang: str) -> str:
    """`text` in a code fence longer than any run of backticks inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    bar = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{bar}{lang}\n{body}{bar}"


def markdown(store: SessionStore, events: list[ev.Event] | None = None) -> str:
    """The one-session report (see the module docstring)."""
    events = list(store.events()) if events is None else events
    meta = store.meta()
    history = History(events, session_id=store.id)
    row = row_of(store.id, store.folder, history, meta, events)
    settings = meta.get("settings") or {}
    lines = [f"# Session {store.id}", "",
             f"task {printable(meta.get('task'))} · model {printable(meta.get('model'))} · preset "
             f"{printable(settings.get('preset'))} · seed {settings.get('seed')} · state {row.state}"]
    if row.failed:
        lines.append(f"\nfailed: {printable(row.failed)}")
    lines += ["", "## Self-improvement curve", "",
              "The held improver's meta-utility after each iteration (T = 0: the seed improver).", "",
              "| T | val | test | verdict |", "|---|---|---|---|"]
    verdicts = {r.iteration: r for r in history.iterations}
    for t, val in enumerate(row.val):
        test = row.test[t] if t < len(row.test) else None
        it = verdicts.get(t)
        if t == 0:
            verdict = "seed improver"
        elif it is None:
            verdict = "-"
        elif it.accepted:
            verdict = "accepted"
        else:
            verdict = f"rejected: {_table_text(it.reason)} (candidate val {_num(it.candidate_val)})"
        lines.append(f"| {t} | {_num(val)} | {_num(test)} | {verdict} |")
    if not row.val:
        lines.append("| - | - | - | not scored yet |")
    if row.best_t is not None:
        lines += ["", f"Best: T={row.best_t} (val {_num(row.best_val)}); final: T={row.final_t} "
                      f"(val {_num(row.final_val)}); gain over T=0: {_num(row.gain)}."]
    lines += ["", "## Accepted improvers", ""]
    previous: str | None = None
    accepted = [it for it in history.iterations if it.accepted]
    for it in accepted:
        text = store.text(it.improver) or ""
        if it.iteration == 0:
            lines += ["### T=0: the seed improver", "", _fence(printable(text, multiline=True), "python"), ""]
        else:
            lines += [f"### T={it.iteration}: accepted (val {_num(it.val)}, test {_num(it.test)})", ""]
            diff = difflib.unified_diff((previous or "").splitlines(keepends=True), text.splitlines(keepends=True),
                                        fromfile="previous improver", tofile=f"T={it.iteration}")
            body = "".join(line if line.endswith("\n") else line + "\n" for line in diff)
            lines += [_fence(printable(body, multiline=True), "diff") if body else "(the same program)", ""]
        previous = text
    if not accepted:
        lines += ["None yet.", ""]
    cost = history.lm_totals.get("cost_usd")
    dollars = "no price known for this model" if cost is None else f"${row.dollars:.4f}"
    lines += ["## LM spend", "",
              f"{row.calls} calls, {row.tokens} tokens, {dollars} in total.", "",
              "| T | calls | tokens | dollars |", "|---|---|---|---|"]
    usage = history.lm_by_iteration
    for t in range(len(row.tokens_by_iteration)):
        calls = int(usage.get(t, {}).get("calls") or 0)
        cost = usage.get(t, {}).get("cost_usd")
        dollars = "-" if cost is None else f"${row.spend_by_iteration[t]:.4f}"
        lines.append(f"| {t} | {calls} | {row.tokens_by_iteration[t]} | {dollars} |")
    return "\n".join(lines) + "\n"
