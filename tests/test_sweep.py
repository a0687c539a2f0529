"""`stop-tui sweep` on a real local Ray instance against the scripted LM server: a sweep of 4
sessions (2 seeds x 2 model names) where every session equals the same `stop-tui run` done
alone, event for event; the server's token sums equal the sweep's; the requests in flight at
the server stay within --requests-per-endpoint; `sweep --resume` of a finished sweep touches
nothing."""

from __future__ import annotations

import json

import pytest
from lm_helpers import events_of, responder, same_events, session_files, stop_tui
from ray_helpers import local_ray
from scripted_server import ScriptedLMServer

from stop_tui.engine.store import DB_NAME
from stop_tui.engine.sweep.driver import endpoint_resource
from stop_tui.engine.sweep.layout import RunKey

pytestmark = pytest.mark.slow  # a Ray instance and 8 sessions: about a minute here

MODELS = ("a", "b")
SEEDS = (0, 1)
PER_ENDPOINT = 2  # below a run's own --max-concurrency: its task asks for 2 units, its session sends 2 at most
LATENCY = 0.05
RUN = ("--task", "lpn", "--preset", "quick", "--iterations", "1", "--max-concurrency", "4")


@pytest.fixture(scope="module")
def server():
    with ScriptedLMServer(responder, models=list(MODELS), latency=LATENCY, honour_n=False) as s:
        yield s  # n ignored (llama.cpp's way): a call of 2 samples is 2 requests at once


@pytest.fixture(scope="module")
def ray_endpoint(server):
    """A local Ray instance declaring the scripted server's endpoint resource."""
    with local_ray(resources={endpoint_resource("a", server.base_url): PER_ENDPOINT}) as instance:
        yield instance


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Each (model, seed) run alone with `stop-tui run` on its own server: key -> (dir, id)."""
    out = {}
    with ScriptedLMServer(responder, models=list(MODELS), latency=LATENCY, honour_n=False) as alone:
        for model in MODELS:
            for seed in SEEDS:
                folder = tmp_path_factory.mktemp(f"alone-{model}-{seed}")
                done = stop_tui("run", *RUN, "--model", model, "--seed", str(seed),
                                "--base-url", alone.base_url, "--sessions-dir", str(folder), "--json")
                assert done.returncode == 0, done.stderr
                out[RunKey("lpn", model, seed)] = (folder, json.loads(done.stdout)["session"])
    return out


@pytest.fixture(scope="module")
def swept(server, ray_endpoint, tmp_path_factory):
    """The sweep, run once for the module: (sessions dir, its --json summary, server tokens,
    its stderr)."""
    sessions = tmp_path_factory.mktemp("sweep")
    done = stop_tui("sweep", *RUN, "--model", ",".join(MODELS), "--seeds", "0-1", "--base-url",
                    server.base_url, "--requests-per-endpoint", str(PER_ENDPOINT), "--ray-address",
                    ray_endpoint.address, "--sessions-dir", str(sessions), "--json", "--name", "s")
    assert done.returncode == 0, done.stderr
    return sessions, json.loads(done.stdout), server.prompt_tokens + server.completion_tokens, done.stderr


def test_every_session_equals_the_same_run_alone(swept, references):
    sessions, summary, _, _ = swept
    assert summary["state"] == "finished"
    assert [r["run"] for r in summary["runs"]] == ["lpn-a-s0", "lpn-b-s0", "lpn-a-s1", "lpn-b-s1"]
    for row in summary["runs"]:
        assert row["state"] == "finished" and row["iteration"] == 1
        ref_dir, ref_id = references[RunKey("lpn", row["model"], row["seed"])]
        only_alone, only_swept = same_events(ref_dir, ref_id, sessions / "s", row["run"], budgets="final")
        assert not only_alone and not only_swept, (row["run"], only_alone[:2], only_swept[:2])
        shown = json.loads(stop_tui("show", f"s/{row['run']}", "--sessions-dir", str(sessions), "--json").stdout)
        alone = json.loads(stop_tui("show", ref_id, "--sessions-dir", str(ref_dir), "--json").stdout)
        for key in ("meta_utility", "meta_utility_test", "seed_meta_utility", "model", "seed"):
            assert shown[key] == alone[key], key
        assert (shown["lm"]["max_concurrency"], alone["lm"]["max_concurrency"]) == (PER_ENDPOINT, 4)


def test_progress_is_a_line_per_ended_run_on_stderr_when_it_is_not_a_terminal(swept):
    _, summary, _, stderr = swept
    assert "): 4 run(s); continue it later with stop-tui sweep --resume s --sessions-dir" in stderr
    for row in summary["runs"]:
        assert f"{row['run']}: finished, 1/1 iteration(s), best {row['best']:.4f}" in stderr


def test_the_servers_token_sums_equal_the_sweeps(swept, server):
    _, summary, server_tokens, _ = swept
    assert summary["totals"]["tokens"] == server_tokens > 0
    assert summary["totals"]["calls"] == sum(r["calls"] for r in summary["runs"])


def test_the_endpoint_resource_bounds_the_requests_in_flight(swept, server):
    """Each run's task holds 2 of the endpoint's 2 units: one session at a time talks to the
    server (Ray has 2 CPUs: without the resource, two would), never more than 2 requests."""
    sessions, summary, _, _ = swept
    spans = []
    for row in summary["runs"]:
        events = events_of(sessions / "s", row["run"])
        spans.append((events[0].t, events[-1].t))
    spans.sort()
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False)), spans
    assert server.max_inflight == PER_ENDPOINT


def test_resuming_a_finished_sweep_touches_no_session(swept, ray_endpoint):
    sessions, _, _, _ = swept
    folders = sorted(p for p in (sessions / "s").iterdir() if (p / DB_NAME).exists())
    assert len(folders) == 4
    before = {f.name: session_files(f) for f in folders}
    again = stop_tui("sweep", "--resume", "s", "--ray-address", ray_endpoint.address,
                     "--sessions-dir", str(sessions), "--json")
    assert again.returncode == 0, again.stderr
    assert {f.name: session_files(f) for f in folders} == before
    assert json.loads(again.stdout)["state"] == "finished"


def test_transfer_runs_after_each_finished_run_like_stop_tui_transfer(server, ray_endpoint, tmp_path):
    """--transfer: the finished run's final improver evaluated on the tasks as a further Ray
    task, recorded like the same `stop-tui transfer` done alone."""
    sessions = tmp_path / "sweep"
    done = stop_tui("sweep", *RUN, "--model", "a", "--seeds", "0", "--transfer", "parity",
                    "--base-url", server.base_url, "--ray-address", ray_endpoint.address,
                    "--sessions-dir", str(sessions), "--json", "--name", "t")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["runs"]
    assert row["state"] == "finished" and row["transfer"] == "finished"
    run_dir = sessions / "t" / row["run"]
    alone = stop_tui("transfer", "--improver", str(run_dir), "--tasks", "parity", "--model", "a",
                     "--preset", "quick", "--seed", "0", "--base-url", server.base_url,
                     "--sessions-dir", str(tmp_path / "alone"), "--json")
    assert alone.returncode == 0, alone.stderr
    table = json.loads(alone.stdout)
    assert same_events(tmp_path / "alone", table["session"], sessions / "t", f"{row['run']}-transfer",
                       budgets="final") == ([], [])
    shown = json.loads(stop_tui("show", f"t/{row['run']}-transfer", "--sessions-dir", str(sessions),
                                "--json").stdout)
    assert shown["kind"] == "transfer" and shown["state"] == "finished"


def test_one_max_cost_for_the_whole_sweep_and_resume_with_a_higher_cap(ray_endpoint, tmp_path):
    """--max-cost holds for the sum of all runs: at the cap the runs pause (exit 3), and
    `sweep --resume --max-cost HIGHER` lets them finish."""
    priced = "gpt-4o-mini"  # in prices.toml; the scripted server answers as it
    with ScriptedLMServer(responder, models=[priced]) as priced_server:
        one = stop_tui("run", *RUN, "--model", priced, "--base-url", priced_server.base_url,
                       "--sessions-dir", str(tmp_path / "one"), "--json")
        assert one.returncode == 0, one.stderr
        cap = 2.5 * json.loads(one.stdout)["lm"]["cost_usd"]
        sessions = tmp_path / "sweep"
        common = ("--ray-address", ray_endpoint.address, "--sessions-dir", str(sessions), "--json")
        capped = stop_tui("sweep", *RUN, "--model", priced, "--seeds", "0-3", "--base-url",
                          priced_server.base_url, "--max-cost", f"{cap:.9f}", "--name", "c", *common)
        assert capped.returncode == 3, capped.stderr
        summary = json.loads(capped.stdout)
        assert summary["state"] == "capped" and summary["spec"]["max_cost"] == pytest.approx(cap)
        assert 0 < summary["totals"]["cost_usd"] <= cap
        assert "capped" in [r["state"] for r in summary["runs"]]
        done = stop_tui("sweep", "--resume", "c", "--max-cost", "1", *common)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["state"] == "finished" and summary["spec"]["max_cost"] == 1
    assert [r["state"] for r in summary["runs"]] == ["finished"] * 4


def test_max_parallel_runs_more_sessions_at_once_than_cpus(ray_endpoint, tmp_path):
    """--max-parallel 4 on 2 CPUs: the sessions mostly wait for their server, so each task asks
    for half a CPU and four run at once (never more)."""
    with ScriptedLMServer(responder, models=["a"], latency=0.6) as other:  # sessions long enough to overlap
        sessions = tmp_path / "sweep"
        done = stop_tui("sweep", *RUN, "--model", "a", "--seeds", "0-4", "--max-parallel", "4", "--base-url",
                        other.base_url, "--ray-address", ray_endpoint.address, "--sessions-dir", str(sessions),
                        "--json", "--name", "p")
    assert done.returncode == 0, done.stderr
    spans = []
    for row in json.loads(done.stdout)["runs"]:
        events = events_of(sessions / "p", row["run"])
        spans.append((events[0].t, events[-1].t))
    at_once = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert at_once == 4, spans
