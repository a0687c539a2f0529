"""The sweep on Ray: one Ray task per session (runner.run_one), then one per finished run's
transfer (runner.transfer_one). Ray is imported here only, when a driver starts.

- Ray: a local instance (`ray.init()`) unless an address is given (--ray-address / RAY_ADDRESS:
  a cluster), which must answer; on a cluster the sessions dir must be storage every node sees
  (the driver writes a marker, a task pinned to each alive node reads it back).
- Faults: a task has `max_retries` for a dead worker or node and `retry_exceptions=False` (a
  run's own failure is recorded in its log, not retried). A retried task resumes its session
  from the log; a run Ray gave up on gets an ERROR event from the driver.
- LM load: a custom resource per LM endpoint (`lm:HOST:PORT`) of `--requests-per-endpoint`
  units; a task asks for as many as its session's requests in flight (its max_concurrency,
  capped at the endpoint's units), so the requests in flight per server stay bounded.
  `--max-parallel` bounds the tasks submitted at once (a task takes one CPU, or less when
  --max-parallel asks for more sessions at once than there are CPUs: they mostly wait).
- `--max-cost`: one pool for the whole sweep (cost_pool.py), a Ray actor every task reserves from.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stop_tui.engine.errors import UserError
from stop_tui.engine.sweep import runner
from stop_tui.engine.sweep.layout import RunKey, Sweep, SweepSpec

RUN_RETRIES = 3  # a task whose worker or node died is run again this often (resuming its session)
STORAGE_TIMEOUT_S = 120.0  # how long a node may take to answer the storage check
PROBE_TIMEOUT_S = 5.0  # how long a Ray address may take to accept a connection
STOP_WAIT_S = 20.0  # after a ctrl+c, how long the runs get to record their calls in flight
OBJECT_STORE_BYTES = 200 * 1024 * 1024  # a local instance's: tasks return small summaries
RUN, TRANSFER = "run", "transfer"

Tick = Callable[[], None]
OnResult = Callable[[dict[str, Any]], None]


def ray_missing() -> str | None:
    """The one line that says how to install Ray, when it is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "`stop-tui sweep` runs its sessions on Ray, which is not installed: pip install 'stop-tui[ray]'"
    return None


def endpoint_resource(model: str, base_url: str | None) -> str | None:
    """The Ray resource of the LM server a model is asked on (`lm:HOST:PORT`); None for the
    local model and replays (nothing is sent to a server)."""
    if model == "local" or model.startswith(("local:", "replay:")):
        return None
    from stop_tui.engine.lm.openai_backend import DEFAULT_BASE_URL

    url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    parts = urlsplit(url)
    netloc = parts.netloc or url
    if parts.port is None and parts.hostname:
        netloc = f"{parts.hostname}:{443 if parts.scheme == 'https' else 80}"
    return f"lm:{netloc}"


def declare_hint(resource: str, units: int) -> str:
    return f"ray start ... --resources='{{\"{resource}\": {units}}}'"


class SweepDriver:
    """Runs a sweep's runs (and transfers) as Ray tasks. `connect()` starts or joins Ray and
    checks what can be checked before anything starts (UserError, one line; the sweep `spec`
    in `sessions_dir` need not exist yet); `run(sweep)` submits, waits and returns each
    session's result by its folder name; `close()` shuts down a local instance it started.
    `on_tick` is called about every `tick` seconds while tasks run, `on_result` with each
    task's result."""

    def __init__(self, sessions_dir: Path, spec: SweepSpec, *, address: str | None = None,
                 num_cpus: int | None = None, on_tick: Tick | None = None,
                 on_result: OnResult | None = None, tick: float = 1.0) -> None:
        self.sessions_dir = Path(sessions_dir).resolve()
        self.spec = spec
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.on_tick, self.on_result, self.tick = on_tick, on_result, tick
        self.owned = False  # this driver started the Ray instance (and shuts it down)
        self.units: dict[str, int] = {}  # endpoint resource -> the units one task asks for at most
        self.node_cpus = 1.0  # the most CPUs a node has
        self.cpus = 1.0  # the cluster's CPUs
        self.pool: Any = None
        self.sweep: Sweep | None = None
        self._remote: dict[str, Any] = {}

    # -- starting ----------------------------------------------------------------------------
    def connect(self) -> None:
        import ray

        if not ray.is_initialized():
            if self.address is None:
                # Ray keeps token auth on for the instance we start (its default); its notice
                # saying so on every sweep is not for our users (RAY_AUTH_MODE still works).
                logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
                try:
                    ray.init(address="local", num_cpus=self.num_cpus, resources=self._local_resources(),
                             include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                             object_store_memory=OBJECT_STORE_BYTES)
                except Exception as exc:  # noqa: BLE001 - Ray raises several kinds here
                    ray.shutdown()  # whatever it started
                    raise UserError(f"a local Ray instance did not start here: {_first_line(exc)} "
                                    f"(Ray's logs: /tmp/ray/session_latest/logs)") from None
                self.owned = True
            else:
                _probe(self.address)
                try:
                    ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
                except Exception as exc:  # noqa: BLE001 - Ray raises several kinds here
                    raise UserError(f"the Ray cluster at {self.address} does not answer: {_first_line(exc)}") from None
        try:
            self.node_cpus = _node_max("CPU") or 1.0
            self.cpus = float(ray.cluster_resources().get("CPU", 1.0))
            if not self.owned:
                self._cluster_resources()
                self.check_storage()
            task = ray.remote(max_retries=RUN_RETRIES, retry_exceptions=False)
            self._remote = {RUN: task(runner.run_one), TRANSFER: task(runner.transfer_one)}
        except BaseException:
            self.close()
            raise

    def _run_units(self) -> dict[str, list[int]]:
        """Endpoint resource -> the requests in flight of each of its runs (their max_concurrency)."""
        spec, found = self.spec, {}
        for key in spec.runs():
            resource = endpoint_resource(key.model, spec.base_url)
            if resource is not None:
                found.setdefault(resource, []).append(runner.run_settings(spec, key).max_concurrency)
        return found

    def _local_resources(self) -> dict[str, float]:
        """A local instance declares each endpoint: --requests-per-endpoint units (default: as
        many as all its runs at once could ask for, i.e. no bound)."""
        cap = self.spec.requests_per_endpoint
        out = {}
        for resource, units in self._run_units().items():
            total = cap if cap is not None else sum(units)
            out[resource] = float(total)
            self.units[resource] = min(max(units), total)
        return out

    def _cluster_resources(self) -> None:
        """On a cluster, an endpoint's resource must be declared when --requests-per-endpoint
        asks for a bound; one declared without it bounds too."""
        cap = self.spec.requests_per_endpoint
        for resource, units in self._run_units().items():
            per_node = _node_max(resource)  # a task's units come from one node
            if per_node is None:
                if cap is not None:
                    raise UserError(
                        f"the Ray cluster has no resource {resource!r} to bound the requests in flight "
                        f"to that LM server (--requests-per-endpoint {cap}): declare it on the nodes that "
                        f"run sessions, e.g. `{declare_hint(resource, cap)}` (the sum over nodes is the bound)")
                continue
            self.units[resource] = max(1, min(max(units), int(per_node), cap or int(per_node)))

    def check_storage(self) -> None:
        """The sessions dir must be the same storage on every node: a marker written here is
        read back by a task on each alive node; UserError naming the first node that cannot."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        folder = self.sessions_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the sessions dir {folder}: {exc.strerror or exc}") from None
        token = uuid.uuid4().hex
        marker = folder / f".sweep-storage-{token}"
        try:
            marker.write_text(token)
        except OSError as exc:
            raise UserError(f"cannot write in the sessions dir {folder}: {exc.strerror or exc}") from None
        try:
            probe = ray.remote(num_cpus=0, max_retries=0)(runner.read_marker)
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            refs = [(n.get("NodeManagerAddress", "?"), probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker)))
                for n in nodes]
            for host, ref in refs:
                try:
                    got = ray.get(ref, timeout=STORAGE_TIMEOUT_S)
                except ray.exceptions.GetTimeoutError:
                    raise UserError(f"Ray node {host} did not answer the sessions dir check within "
                                    f"{STORAGE_TIMEOUT_S:g} s") from None
                if got != token:
                    raise UserError(
                        f"the sessions dir {folder.resolve()} is not shared with Ray node {host} ({got}): "
                        "put it on storage every node mounts at the same path (--sessions-dir)")
        finally:
            marker.unlink(missing_ok=True)

    # -- running -----------------------------------------------------------------------------
    def run(self, sweep: Sweep) -> dict[str, dict[str, Any]]:
        """Every run of `sweep` not finished yet, then the transfer of every finished run (when
        asked): {session folder name: result} (runner.run_one's). A finished session is not
        touched. With --max-cost, the sweep's pool is made from the runs' logs first."""

        self.sweep, self.spec = sweep, sweep.spec
        if sweep.spec.max_cost is not None:
            from stop_tui.engine.sweep.cost_pool import make_pool

            self.pool = make_pool(sweep, sweep.spec.max_cost)
        spec, results = sweep.spec, {}
        todo: deque[tuple[str, RunKey]] = deque()
        for key in spec.runs():
            if runner.recorded_state(self.sweep.run_folder(key)) == runner.FINISHED:
                self._done(results, RUN, key, runner.finished_result(self.sweep.run_folder(key)), todo)
            else:
                todo.append((RUN, key))
        limit = spec.max_parallel or max(1, len(todo))
        pending: dict[Any, tuple[str, RunKey]] = {}
        try:
            while todo or pending:
                while todo and len(pending) < limit:
                    kind, key = todo.popleft()
                    pending[self._submit(kind, key)] = (kind, key)
                self._wait(pending, results, todo, 1, self.tick)
                if self.on_tick is not None:
                    self.on_tick()
        except KeyboardInterrupt:
            self.stop(pending, results)
            raise
        return results

    def _wait(self, pending: dict, results: dict, todo: deque | None, n: int, timeout: float) -> None:
        import ray

        ready, _ = ray.wait(list(pending), num_returns=min(n, len(pending)), timeout=timeout)
        for ref in ready:
            kind, key = pending.pop(ref)
            self._done(results, kind, key, self._collect(ref, kind, key), todo)

    def stop(self, pending: dict, results: dict) -> None:
        """ctrl+c: every task still running is asked to stop (its session records the LM calls
        in flight and pauses, as `stop-tui run` does), for up to STOP_WAIT_S; a second ctrl+c
        leaves at once (the calls in flight are asked again on resume)."""
        import ray

        for ref in pending:
            ray.cancel(ref, force=False)
        deadline = time.monotonic() + STOP_WAIT_S
        while pending and time.monotonic() < deadline:
            self._wait(pending, results, None, len(pending), min(self.tick, deadline - time.monotonic()))

    def _done(self, results: dict, kind: str, key: RunKey, result: dict, todo: deque | None) -> None:
        results[result["run"]] = result
        if self.on_result is not None:
            self.on_result(result)
        if todo is None:  # stopping: nothing more is started
            return
        if kind == RUN and result["outcome"] == runner.FINISHED and self.sweep.spec.transfer:
            folder = self.sweep.transfer_folder(key)
            if runner.recorded_state(folder) == runner.FINISHED:
                self._done(results, TRANSFER, key, runner.finished_result(folder), todo)
            else:
                todo.appendleft((TRANSFER, key))

    def _submit(self, kind: str, key: RunKey):
        spec = self.sweep.spec
        resource = endpoint_resource(key.model, spec.base_url)
        units = self.units.get(resource) if resource is not None else None
        own = runner.run_settings(spec, key).max_concurrency
        share = min(own, units) if units is not None else None
        options: dict[str, Any] = {"num_cpus": self._cpus(key.model)}
        if share is not None:
            options["resources"] = {resource: share}
        return self._remote[kind].options(**options).remote(
            str(self.sweep.folder.parent.resolve()), self.sweep.id, key, pool=self.pool,
            max_concurrency=share if share is not None and share < own else None)

    def _cpus(self, model: str) -> float:
        """A session's CPUs: 1 (it mostly waits for its LM server; its sandboxed evaluations run
        one at a time), less when --max-parallel asks for more sessions at once than there are
        CPUs; for a run on the local model, its threads (at most a node's)."""
        if model == "local" or model.startswith("local:"):
            from stop_tui.engine.lm.local_backend import threads_setting

            return float(min(threads_setting(), self.node_cpus))
        parallel = self.spec.max_parallel
        return 1.0 if parallel is None else max(0.01, min(1.0, round(self.cpus / parallel, 2)))

    def _collect(self, ref, kind: str, key: RunKey) -> dict[str, Any]:
        """The task's result; a task Ray gave up on (its worker or node died too often) is a
        failed run, recorded in its log."""
        import ray

        folder = self.sweep.run_folder(key) if kind == RUN else self.sweep.transfer_folder(key)
        try:
            return ray.get(ref)
        except ray.exceptions.TaskCancelledError:  # ctrl+c before the run could stop by itself
            return {"run": folder.name, "outcome": "cancelled", "summary": None}
        except ray.exceptions.RayError as exc:
            message = f"the Ray task of {folder.name} ended: {_first_line(exc)}"
            runner.record_failure(folder, message)
            return {"run": folder.name, "outcome": runner.FAILED, "summary": None, "error": message}

    def close(self) -> None:
        if self.owned:
            import ray

            ray.shutdown()
            self.owned = False

    def __enter__(self) -> SweepDriver:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _node_max(resource: str) -> float | None:
    """The most of `resource` an alive node has (None: no node has it)."""
    import ray

    found = [n.get("Resources", {}).get(resource) for n in ray.nodes() if n.get("Alive")]
    found = [x for x in found if x]
    return max(found) if found else None


def _probe(address: str) -> None:
    """A Ray address that does not accept a connection is refused at once (ray.init would wait
    and retry for a long time). `auto` is left to Ray (it looks for a local cluster)."""
    if address == "auto" or address.startswith("local"):
        return
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r} is not auto or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"the Ray cluster at {address} does not answer ({exc.strerror or exc})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]

