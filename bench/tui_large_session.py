"""Is the TUI fluid on a large session? Replays a synthetic session into the app, headless.

  python bench/tui_large_session.py [--iterations 10] [--candidates 24] [--solutions 18]
                                    [--calls 36] [--keys 40] [--feed 2000]

A synthetic event log (the shapes the engine writes) with ~5,000 tree nodes and ~50,000 events
is opened in the app (engine off, 160x48, headless), next to a small session for reference:

1. time to first paint: from starting the app to the first frame of the main screen (the
   header and what the feeder thread has folded in by then), and time until the whole log is
   read, folded in and drawn (`app.settled()`);
2. key-to-repaint latency: from pressing a key (tree moves, expand, diff, exchange, jump to
   the accepted improver) to the next frame, mean and p95, once the whole log is drawn;
3. the same keys while events stream in live through the engine listener path (`--feed`
   events per second, from another thread, as the engine would).

A key that changes nothing the keys act on (`down` on the last line, `right` on a leaf: the
selected node, whether it is expanded, the Source pane's mode and node, the focus) is not
timed, in any run: idle it draws no frame at all, and under the feed the next frame is the
feed's next snapshot, up to a second later, which says nothing about the key.

The machine may be busy, so the targets are ratios measured side by side in one run: first
paint of the large session over a bare `import textual.app` in a fresh interpreter (median of
three), and key->repaint under the feed over the same keys idle.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stop_tui.engine import events as ev  # noqa: E402
from stop_tui.tui.app import StopApp  # noqa: E402
from stop_tui.tui.screens.main import MainScreen  # noqa: E402
from stop_tui.tui.synthetic import write_session  # noqa: E402

KEYS = ["down", "down", "right", "down", "down", "d", "down", "e", "up", "d", "right", "down",
        "down", "a", "up", "up", "e", "left", "down", "down"]


class TimedApp(StopApp):
    """Records when each frame is produced (headless: the frame is composed, not written)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.frames: list[float] = []
        self.first_main_frame: float | None = None

    def _display(self, screen, renderable) -> None:
        if renderable is not None:
            now = time.perf_counter()
            self.frames.append(now)
            if self.first_main_frame is None and isinstance(screen, MainScreen):
                self.first_main_frame = now
        super()._display(screen, renderable)


def relabel(events: list[ev.Event], offset: int, seq0: int) -> list[ev.Event]:
    """The same work as another iteration (it{N+offset}) with new seqs: a live feed."""
    out = []
    for k, e in enumerate(events):
        head, _, rest = e.path.partition("/")
        path = f"it{int(head[2:]) + offset}" + (f"/{rest}" if rest else "")
        data = dict(e.data)
        if "iteration" in data:
            data["iteration"] = data["iteration"] + offset
        out.append(ev.Event(e.kind, path, data, e.t + 10_000, seq0 + k + 1))
    return out


def key_state(app) -> tuple:
    """What the benchmark's keys change: the focus, the selected node and whether it is
    expanded, the Source pane's mode and node."""
    lineage = app.screen.query_one("#lineage")
    source = app.screen.query_one("#source")
    node = lineage.cursor_node
    return (app.focused.id if app.focused else None, node.data if node else None,
            node.is_expanded if node else None, source.mode, source.path)


async def measure(store, keys: list[str], feed_rate: int) -> dict:
    feed: list[ev.Event] = []
    if feed_rate:
        node_events = [e for e in store.events() if e.path.startswith("it")]
        feed = relabel(node_events, 1000, store_last_seq(store))
    started = time.perf_counter()
    app = TimedApp(store=store, engine=False, theme="dark", remember_theme=False)
    async with app.run_test(size=(160, 48)) as pilot:
        while app.first_main_frame is None:
            await asyncio.sleep(0.001)
        first_paint = app.first_main_frame - started
        await app.settled(120)
        drawn = time.perf_counter() - started
        await pilot.pause()
        stop = threading.Event()
        fed = [0]

        def feeder() -> None:
            batch = max(1, feed_rate // 100)
            for k in range(0, len(feed), batch):
                if stop.is_set():
                    break
                for e in feed[k:k + batch]:
                    app._listener(e)  # what the engine's store subscription calls
                fed[0] += batch
                time.sleep(0.01)

        thread = None
        if feed:
            thread = threading.Thread(target=feeder, daemon=True)
            thread.start()
            await pilot.pause(0.2)
        latencies = []
        unchanged = lost = 0
        for key in keys:
            await pilot.pause()
            before = len(app.frames)
            state = key_state(app)
            t = time.perf_counter()
            await pilot.press(key)
            if key_state(app) == state:
                unchanged += 1  # nothing to redraw (e.g. `up` at the top): see the module doc
                continue
            while len(app.frames) == before and time.perf_counter() - t < 1.0:
                await asyncio.sleep(0.0005)
            if len(app.frames) == before:
                lost += 1  # changed the view, drew nothing: a bug the table reports
                continue
            latencies.append(app.frames[before] - t)
        stop.set()
        if thread is not None:
            thread.join()
        tree_nodes = len(app.view.model.nodes)
        materialized = len(app.screen.query_one("#lineage")._tn)
    return {"first_paint": first_paint, "drawn": drawn, "mean": statistics.mean(latencies),
            "p95": sorted(latencies)[int(0.95 * (len(latencies) - 1))], "nodes": tree_nodes,
            "materialized": materialized, "fed": fed[0], "unchanged": unchanged, "lost": lost}


def import_seconds(runs: int = 3) -> float:
    """A bare `import textual.app` in a fresh interpreter (the median of `runs`)."""
    code = "import time; t = time.perf_counter(); import textual.app; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True).stdout) for _ in range(runs)]
    return statistics.median(times)


def store_last_seq(store) -> int:
    last = 0
    for e in store.events():
        last = e.seq
    return last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=24)
    ap.add_argument("--solutions", type=int, default=18)
    ap.add_argument("--calls", type=int, default=60, help="LM calls per improver run")
    ap.add_argument("--keys", type=int, default=40)
    ap.add_argument("--feed", type=int, default=2000, help="live events per second during the keys")
    args = ap.parse_args()
    keys = (KEYS * (args.keys // len(KEYS) + 1))[: args.keys]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        big = write_session(Path(tmp), "large", iterations=args.iterations, candidates=args.candidates,
                            runs=1, solutions=args.solutions, lm_calls_per_run=args.calls, flag=True)
        n_events = store_last_seq(big)
        print(f"synthetic session: {n_events:,} events written in {time.perf_counter() - t:.1f}s")
        small = write_session(Path(tmp), "small", iterations=2)
        results = {}
        for name, store in (("small", small), ("large", big)):
            results[name] = asyncio.run(measure(store, keys, 0))
        results["large+feed"] = asyncio.run(measure(big, keys, args.feed))
    imported = import_seconds()
    s, b, f = results["small"], results["large"], results["large+feed"]
    print(f"{'':<28}{'small':>12}{'large':>12}{'large+feed':>12}{'large/small':>13}")
    print(f"{'tree nodes':<28}{s['nodes']:>12,}{b['nodes']:>12,}{f['nodes']:>12,}")
    print(f"{'tree nodes materialized':<28}{s['materialized']:>12,}{b['materialized']:>12,}{f['materialized']:>12,}")
    print(f"{'time to first paint (s)':<28}{s['first_paint']:>12.3f}{b['first_paint']:>12.3f}{f['first_paint']:>12.3f}"
          f"{b['first_paint'] / s['first_paint']:>12.1f}x")
    print(f"{'whole log drawn (s)':<28}{s['drawn']:>12.3f}{b['drawn']:>12.3f}{f['drawn']:>12.3f}"
          f"{b['drawn'] / s['drawn']:>12.1f}x")
    print(f"{'key->repaint mean (ms)':<28}{s['mean'] * 1e3:>12.1f}{b['mean'] * 1e3:>12.1f}{f['mean'] * 1e3:>12.1f}"
          f"{b['mean'] / s['mean']:>12.1f}x")
    print(f"{'key->repaint p95 (ms)':<28}{s['p95'] * 1e3:>12.1f}{b['p95'] * 1e3:>12.1f}{f['p95'] * 1e3:>12.1f}"
          f"{b['p95'] / s['p95']:>12.1f}x")
    print(f"keys that needed no repaint (not timed): {s['unchanged']}, {b['unchanged']}, {f['unchanged']}")
    if s["lost"] or b["lost"] or f["lost"]:
        print(f"KEYS THAT CHANGED THE VIEW BUT DREW NO FRAME within 1 s: {s['lost']}, {b['lost']}, {f['lost']}")
    print(f"live feed: {f['fed']:,} events streamed in during the {len(keys)} keys (~{args.feed}/s target)")
    print(f"targets, side by side in this run (bare `import textual.app`: {imported:.3f}s):")
    print(f"  first paint large / import textual.app  {b['first_paint'] / imported:6.2f}  (target <= 3)")
    print(f"  key->repaint mean, feed / idle          {f['mean'] / b['mean']:6.2f}  (target <= 1.5)")
    print(f"  key->repaint p95 under the feed (ms)    {f['p95'] * 1e3:6.1f}  (target <= 30)")


if __name__ == "__main__":
    main()
