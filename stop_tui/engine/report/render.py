"""A Report as text: Markdown, CSV (one long table), JSON, or a single-file HTML page.

Markdown and HTML are drawn from one list of sections (headings, sentences, tables), so they
say the same things. The HTML page embeds the figures (engine/report/figures.py) as inline
SVG when matplotlib is installed and says how to get them otherwise. Text that comes from a
session (error messages, ids) is made printable and escaped for the format.
"""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from stop_tui.engine.lm.prices import price
from stop_tui.engine.report import paper
from stop_tui.engine.report.model import Group, Interval, Report, RunRow, SafetyRow
from stop_tui.engine.transfer import LABELS, WHO
from stop_tui.engine.untrusted import printable

FORMATS = ("md", "csv", "json", "html")
PLOTS_HINT = "install stop-tui[plots] for figures: pip install 'stop-tui[plots]'"
CSV_COLUMNS = ("table", "source", "task", "model", "preset", "session", "t", "measure", "value", "lo", "hi",
               "count", "n")


# -- numbers as text ---------------------------------------------------------------------------

def score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def ci(i: Interval) -> str:
    """'0.5025 [0.4950, 0.5100]'; one run: '0.5025'; none: '-'."""
    if i.mean is None:
        return "-"
    if i.n < 2 or i.lo is None or i.hi is None:
        return score(i.mean)
    return f"{i.mean:.4f} [{i.lo:.4f}, {i.hi:.4f}]"


def rate(row: SafetyRow) -> str:
    """'1/6 16.67 % [3.01, 56.35]' (attempts/candidates, rate, 95 % Wilson); no candidates: '-'."""
    if not row.candidates or row.rate is None:
        return "-"
    return f"{row.attempts}/{row.candidates} {100 * row.rate:.2f} % [{100 * row.lo:.2f}, {100 * row.hi:.2f}]"


def dollars(value: float, models: list[str | None] | None = None) -> str:
    """'$0.0123'; '-' when no price is known for any of `models` (their spend is in tokens only)."""
    if models is not None and value == 0 and all(m is None or price(m) is None for m in models):
        return "-"
    return f"${value:.4f}"


def state(r: RunRow) -> str:
    """The run's state, "failed" for one whose last word is an error."""
    return "failed" if r.failed and r.state not in ("finished", "unreadable") else r.state


def first_line(reason: str) -> str:
    """A failure's message without the traceback that follows it (the JSON and CSV keep it whole)."""
    return reason.strip().splitlines()[0] if reason.strip() else reason


def _gain(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _at(t: int | None, value: float | None) -> str:
    return "-" if t is None or value is None else f"{value:.4f} (T={t})"


# -- sections: what md and html both show ------------------------------------------------------

@dataclass
class Table:
    head: tuple[str, ...]
    rows: list[tuple[str, ...]]


@dataclass
class Section:
    title: str
    parts: list[str | Table] = field(default_factory=list)  # sentences and tables, in order


def _group_section(g: Group) -> Section:
    preset = f" · preset {g.preset}" if g.preset else ""
    s = Section(f"Self-improvement: {g.task} · {g.model}{preset}")
    s.parts.append(f"{len(g.runs)} run(s). The held improver's mean meta-utility after iteration T (T=0: the "
                   "seed improver), with its 95 % interval over the runs scored at T (Student t).")
    s.parts.append(Table(("T", "val", "test", "runs"),
                         [(str(p.t), ci(p.val), ci(p.test), str(p.val.n)) for p in g.curve]))
    said = paper.gained(g.model)
    beside = (f" (the paper: {said[0]} of {said[1]} {g.model} runs; {paper.gained_source()})"
              if said is not None else "")
    s.parts.append(f"Runs whose final val rose by at least {100 * g.gain_threshold:g} points over T=0: "
                   f"{g.gained} of {len(g.runs)}{beside}.")
    s.parts.append(Table(("run", "seed", "state", "T=0 val", "best val", "final val", "gain", "calls", "tokens",
                          "dollars"),
                         [(r.session, "-" if r.seed is None else str(r.seed), state(r),
                           score(r.val[0] if r.val else None), _at(r.best_t, r.best_val),
                           _at(r.final_t, r.final_val), _gain(r.gain), str(r.calls), str(r.tokens),
                           dollars(r.dollars, [r.model])) for r in g.runs]))
    s.parts.append("best / final: the improver held after that iteration; evaluate it elsewhere with "
                   "`stop-tui transfer --improver RUN:T`.")
    return s


def _transfer_section(key: tuple[str, str], rows) -> Section:
    source, model = key
    n = max((r.improver.n for r in rows), default=0)
    s = Section(f"Transfer: the improvers self-improved on {source} with {model}")
    s.parts.append(f"Test split; each value is a mean over {n} run(s)' transfer sessions with its 95 % "
                   "interval (each session: its mean over its improver runs).")
    labels = [LABELS[who] for who in WHO]
    s.parts.append(Table(("task", *labels, *(f"paper {label}" for label in labels)),
                         [(r.task, ci(r.seed_solution), ci(r.seed_improver), ci(r.improver),
                           *((score(v) for v in r.paper) if r.paper else ("-", "-", "-"))) for r in rows]))
    sources = sorted({r.paper_source for r in rows if r.paper_source})
    s.parts += [f"The paper's numbers: {src}." for src in sources]
    return s


def _safety_section(report: Report, runs: int) -> Section:
    s = Section("Safety: flagged candidates")
    kinds = [r for r in report.safety if r.model is None]
    by_kind: dict[str, dict[str, SafetyRow]] = {}
    for r in kinds:
        by_kind.setdefault(r.kind, {})[r.role] = r
    s.parts.append(f"Summed over {runs} run(s): candidates with at least one finding of the kind / candidates "
                   "checked, the rate and its 95 % Wilson interval.")
    s.parts.append(Table(("kind", "improvers", "solutions"),
                         [(kind, rate(roles["improver"]), rate(roles["solution"])) for kind, roles in by_kind.items()]))
    off = [r for r in report.safety if r.model is not None]
    if off:
        s.parts.append("use_sandbox turned off by improvers, over the runs with the sandbox_flag_experiment "
                       "setting (the paper's experiment; the flag is decorative, the sandbox stays on):")
        s.parts.append(Table(("model", "ours", "paper"),
                             [(r.model or "-", rate(r) if r.candidates else "not measured (no run with "
                               "sandbox_flag_experiment)", "-" if r.paper is None else f"{100 * r.paper:.2f} %")
                              for r in off]))
        s.parts += [f"The paper's rates: {src}." for src in sorted({r.paper_source for r in off if r.paper_source})]
    return s


def _spend_section(report: Report) -> Section:
    s = Section("LM spend")
    rows: list[RunRow] = [r for g in report.groups for r in g.runs] + list(report.transfer_sessions)
    table = [(r.session, state(r), str(r.calls), str(r.tokens), dollars(r.dollars, [r.model])) for r in rows]
    table.append(("total", "", str(report.spend.calls), str(report.spend.tokens),
                  dollars(report.spend.dollars, [r.model for r in rows])))
    s.parts.append(Table(("session", "state", "calls", "tokens", "dollars"), table))
    return s


def sections(report: Report) -> list[Section]:
    runs = sum(len(g.runs) for g in report.groups)
    out = [_group_section(g) for g in report.groups]
    out += [_transfer_section(key, rows) for key, rows in report.transfer.items()]
    if runs:
        out.append(_safety_section(report, runs))
    out.append(_spend_section(report))
    if report.failed:
        out.append(Section("Failed, unreadable or unstarted runs",
                           [Table(("session", "reason"), [(sid, first_line(reason)) for sid, reason in report.failed])]))
    return out


def _summary(report: Report) -> str:
    runs = sum(len(g.runs) for g in report.groups)
    s = report.spend
    models = [r.model for g in report.groups for r in g.runs] + [r.model for r in report.transfer_sessions]
    money = dollars(s.dollars, models)
    return (f"{runs} run(s) in {len(report.groups)} group(s), {len(report.transfer_sessions)} transfer session(s); "
            f"LM spend {s.calls} calls, {s.tokens} tokens" + (f", {money}." if money != "-" else " (no price known)."))


# -- markdown --------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return printable(text).replace("|", "\\|")


def to_markdown(report: Report) -> str:
    lines = [f"# STOP report: {_md_cell(report.title)}", "", _summary(report)]
    for sec in sections(report):
        lines += ["", f"## {_md_cell(sec.title)}"]
        for part in sec.parts:
            lines.append("")
            if isinstance(part, Table):
                lines.append("| " + " | ".join(part.head) + " |")
                lines.append("|" + "|".join("---" for _ in part.head) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in part.rows]
            else:
                lines.append(printable(part))
    return "\n".join(lines) + "\n"


# -- html ------------------------------------------------------------------------------------

STYLE = """body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
th{background:#f3f3f3}td{font-variant-numeric:tabular-nums}figure{margin:1rem 0}svg{max-width:100%;height:auto}"""


def _figures(report: Report) -> list[str]:
    """Each figure as inline SVG markup; [hint] when matplotlib is not installed."""
    from stop_tui.engine.report import figures

    try:
        svgs = [figures.render(report, name, "svg").decode("utf-8") for name in figures.NAMES]
    except figures.PlotsUnavailable:
        return []
    return [svg[svg.find("<svg"):] for svg in svgs]


def to_html(report: Report) -> str:
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>STOP report: {esc(printable(report.title))}</title><style>{STYLE}</style></head><body>",
           f"<h1>STOP report: {esc(printable(report.title))}</h1>", f"<p>{esc(_summary(report))}</p>",
           "<h2>Figures</h2>"]
    svgs = _figures(report)
    out += [f"<figure>{svg}</figure>" for svg in svgs] or [f"<p>{esc(PLOTS_HINT)}</p>"]
    for sec in sections(report):
        out.append(f"<h2>{esc(printable(sec.title))}</h2>")
        for part in sec.parts:
            if isinstance(part, Table):
                out.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in part.head) + "</tr></thead><tbody>")
                out += ["<tr>" + "".join(f"<td>{esc(printable(c))}</td>" for c in row) + "</tr>" for row in part.rows]
                out.append("</tbody></table>")
            else:
                out.append(f"<p>{esc(printable(part))}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# -- json ------------------------------------------------------------------------------------

def to_dict(report: Report) -> dict[str, Any]:
    """The report as plain data (the transfer table as a list: JSON keys are strings)."""
    data = asdict(report)
    data["transfer"] = [{"source_task": source, "model": model, "rows": [asdict(r) for r in rows]}
                        for (source, model), rows in report.transfer.items()]
    data["failed"] = [{"session": sid, "reason": reason} for sid, reason in report.failed]
    return data


def to_json(report: Report) -> str:
    return json.dumps(to_dict(report), indent=2, ensure_ascii=False) + "\n"


# -- csv -------------------------------------------------------------------------------------

def _csv_rows(report: Report) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(table: str, measure: str, value: Any = None, **cells: Any) -> None:
        rows.append({"table": table, "measure": measure, "value": value, **cells})

    def interval(table: str, measure: str, i: Interval, **cells: Any) -> None:
        add(table, measure, i.mean, lo=i.lo, hi=i.hi, n=i.n, **cells)

    for g in report.groups:
        where = {"task": g.task, "model": g.model, "preset": g.preset}
        for p in g.curve:
            interval("curve", "val", p.val, t=p.t, **where)
            interval("curve", "test", p.test, t=p.t, **where)
        add("gained", f"gain >= {g.gain_threshold:g}", g.gained / len(g.runs) if g.runs else None,
            count=g.gained, n=len(g.runs), **where)
        for r in g.runs:
            run = {"session": r.session, **where}
            add("run", "seed", r.seed, **run)
            add("run", "state", state(r), **run)
            add("run", "best_val", r.best_val, t=r.best_t, **run)
            add("run", "final_val", r.final_val, t=r.final_t, **run)
            add("run", "gain", r.gain, **run)
    for (source, model), trows in report.transfer.items():
        for r in trows:
            where = {"source": source, "model": model, "task": r.task}
            for who in WHO:
                interval("transfer", LABELS[who], getattr(r, who), **where)
            for who, value in zip(WHO, r.paper or (), strict=False):
                add("transfer", f"paper {LABELS[who]}", value, **where)
    for s in report.safety:
        add("safety", s.role, s.rate, task=s.kind, model=s.model, lo=s.lo, hi=s.hi, count=s.attempts,
            n=s.candidates)
        if s.paper is not None:
            add("safety", f"paper {s.role}", s.paper, task=s.kind, model=s.model)
    for r in [r for g in report.groups for r in g.runs] + list(report.transfer_sessions):
        for measure in ("calls", "tokens", "dollars"):
            add("spend", measure, getattr(r, measure), session=r.session)
    for measure in ("calls", "tokens", "dollars"):
        add("spend", measure, getattr(report.spend, measure), session="total")
    for sid, reason in report.failed:
        add("failed", "reason", printable(reason), session=sid)
    return rows


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in _csv_rows(report):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


RENDERERS = {"md": to_markdown, "csv": to_csv, "json": to_json, "html": to_html}


def render(report: Report, fmt: str) -> str:
    return RENDERERS[fmt](report)
