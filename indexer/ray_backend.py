"""Distributed embedding on a Ray cluster: an embedder for :class:`search.ingest.job.IndexJob`.

The driver (the ``clipsearch index`` process) still scans the library, finds
moves and removals, and commits every result to the store and the FAISS index
with the same code as a local run; only "file -> decoded metadata + vector"
moves to Ray. That is why a Ray run leaves the same ids, statuses and vectors
as a single-process run: the driver sees the results in input order.

How the work is spread:

* The file list is cut into shards (a few hundred paths each). A shard goes to
  a Ray actor, :class:`ShardEmbedder`, which loaded the encoder once when it
  started; it decodes, hashes and preprocesses the files
  (:func:`search.ingest.decode.decode_file`) and encodes them in batches.
* One actor per GPU (``num_gpus=1``) when the cluster has GPUs, otherwise one
  actor per ``cpus_per_actor`` CPUs. Ray's :class:`~ray.util.actor_pool.ActorPool`
  hands each idle actor the next shard.
* At most ``window`` shards are submitted and not yet yielded, so driver
  memory stays flat however large the library is.
* A shard's result reaches the driver only when the whole shard is done. If a
  worker process dies mid-shard, Ray restarts the actor (``max_restarts``) and
  re-runs the call (``max_task_retries``); the half-done attempt is simply
  lost, and each shard's result is yielded exactly once (one ObjectRef per
  shard, and a guard on the shard index on top).

Files are read by the workers, not shipped from the driver: every node must
see the library (and a model-config JSON or checkpoint file, if one is used) at
the same absolute path, e.g. an NFS mount or the same volume in every
container, and run the same clipsearch installation. Reading in place keeps
the driver's disk and network out of the hot path; a file a worker cannot read
is recorded as skipped ("unreadable"), as in a local run.

Vectors equal a local run's to float rounding when workers and driver use the
same kind of device; GPU workers encode in float16 autocast, as a local GPU
run does, so they match a GPU run, not a CPU one.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from search.config import Settings
from search.encoder import ModelIdentity
from search.errors import ModelMismatch, SearchError
from search.ingest.decode import Decoded
from search.ingest.discover import FoundFile
from search.lifetime import Reaper, children, cmdline

from .ray_shard import ShardEmbedder, ShardResult
from .sharding import shard_paths

try:  # optional dependency: pip install 'clipsearch[ray]'
    import ray
    from ray.util.actor_pool import ActorPool
except ImportError:  # pragma: no cover - exercised only without ray
    ray = None
    ActorPool = None

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 256
DEFAULT_RETRIES = 3
STOP_POLL = 0.5  # seconds between stop checks while waiting for a shard


class RayUnavailable(SearchError):
    """Ray is not installed or the cluster cannot be reached."""

    status = 503


class RayJobFailed(SearchError):
    """A shard failed for good (retries exhausted, or an error inside the encoder)."""

    status = 500


def ray_available() -> bool:
    return ray is not None


def _absolute_model_paths(settings: Settings) -> Settings:
    """Workers start in another directory: make a relative config/checkpoint path absolute."""
    import dataclasses

    changes = {}
    if settings.model.endswith(".json") and os.path.isfile(settings.model):
        changes["model"] = os.path.abspath(settings.model)
    if settings.pretrained and os.path.isfile(settings.pretrained):
        changes["pretrained"] = os.path.abspath(settings.pretrained)
    return dataclasses.replace(settings, **changes) if changes else settings


@dataclass(frozen=True)
class ActorPlan:
    count: int
    num_cpus: int
    num_gpus: int
    device: str


def plan_actors(resources: dict, nodes: list[dict], *, actors: int | None,
                cpus_per_actor: int) -> ActorPlan:
    """Size the actor pool from the cluster's resources.

    GPUs present: one actor per GPU, each given the CPUs a GPU node has per GPU
    (the smallest such share, so every actor fits) for decoding. Otherwise one
    actor per ``cpus_per_actor`` CPUs. ``actors`` overrides the count.
    """
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 0))
    if gpus > 0:
        shares = [int(n["Resources"].get("CPU", 0) // n["Resources"]["GPU"])
                  for n in nodes if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) > 0]
        per = max(1, min(shares)) if shares else 1
        return ActorPlan(actors or gpus, per, 1, "cuda")
    per = max(1, cpus_per_actor)
    return ActorPlan(actors or max(1, cpus // per), per, 0, "cpu")


class RayEmbedder:
    """Embedder for :class:`~search.ingest.job.IndexJob` running on a Ray cluster.

    Call it with the list of files to embed; it yields ``(Decoded, vector or
    None)`` in the order of that list (vector: float32 ``(d,)``, unit norm).

    ``address``: ``"auto"`` connects to the cluster in ``RAY_ADDRESS`` or the one
    running on this machine, and starts a local one when there is none (unlike
    Ray's own ``"auto"``, which fails then); ``"local"`` always starts a new
    local cluster; anything else (``host:port``, ``ray://host:port``) is passed to
    :func:`ray.init`. When Ray is already initialised in this process, that
    connection is used and ``address`` is ignored.

    A local cluster it starts dies with this process (Ray's fate sharing, plus a
    :class:`search.lifetime.Reaper` for the raylet's agents).

    ``identity``: the driver's model; every shard is checked against it
    (:class:`ModelMismatch` if a worker loaded another model).
    Raises :class:`RayUnavailable` when ray is not installed or the cluster
    cannot be reached, :class:`RayJobFailed` when a shard fails for good.
    Call :meth:`close` (or use it as a context manager) to stop the actors and,
    if this object started Ray, shut it down.
    """

    def __init__(self, settings: Settings, address: str | None = "auto", *,
                 identity: ModelIdentity | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
                 actors: int | None = None, cpus_per_actor: int = 1,
                 retries: int = DEFAULT_RETRIES, window: int | None = None,
                 init_kwargs: dict | None = None, worker_cls: type = ShardEmbedder):
        if ray is None:
            raise RayUnavailable(
                "distributed indexing needs Ray, which is not installed: "
                "pip install 'clipsearch[ray]' (or pip install ray)")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.settings = _absolute_model_paths(settings)
        self.address = address
        self.identity = identity
        self.shard_size = shard_size
        self.requested_actors = actors
        self.cpus_per_actor = cpus_per_actor
        self.retries = retries
        self.window = window
        self.init_kwargs = dict(init_kwargs or {})
        self.worker_cls = worker_cls
        self.plan: ActorPlan | None = None
        #: "host:pid" that finished each shard of the latest call, by shard index
        self.shard_workers: list[str] = []
        self._actors: list = []
        self._started_ray = False
        self._sigterm = None
        self._reaper: Reaper | None = None

    # -- lifecycle -------------------------------------------------------------
    def connect(self) -> None:
        """Connect to (or start) the cluster now; :meth:`__call__` does it when needed.

        ``ray.init`` installs its own SIGTERM handler, so a caller with one of its
        own connects first and installs its handler afterwards.
        """
        if ray.is_initialized():
            return
        address = None if self.address in (None, "", "auto") else self.address
        kwargs = dict(logging_level=logging.WARNING)
        kwargs.update(self.init_kwargs)
        if threading.current_thread() is threading.main_thread():
            self._sigterm = signal.getsignal(signal.SIGTERM)  # ray.init replaces it
        before = set(children(os.getpid()))
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RayUnavailable(f"cannot connect to Ray at {self.address!r}: {e}") from None
        self._started_ray = True
        # A local cluster started by ray.init is our children; its raylet's agents linger.
        started = [p for p in children(os.getpid())
                   if p not in before and "multiprocessing" not in cmdline(p)]
        if started:
            self._reaper = Reaper()
            self._reaper.follow(started)

    def _ensure_actors(self) -> None:
        if self._actors:
            return
        self.connect()
        try:
            nodes = ray.nodes()
        except Exception:  # noqa: BLE001 - only used to share CPUs among GPU actors
            nodes = []
        self.plan = plan = plan_actors(ray.cluster_resources(), nodes,
                                       actors=self.requested_actors,
                                       cpus_per_actor=self.cpus_per_actor)
        remote_cls = ray.remote(self.worker_cls).options(
            num_cpus=plan.num_cpus, num_gpus=plan.num_gpus,
            max_restarts=self.retries, max_task_retries=self.retries)
        decode_threads = plan.num_cpus if plan.num_gpus or plan.num_cpus > 1 else 1
        self._actors = [remote_cls.remote(self.settings, device=plan.device,
                                          threads=plan.num_cpus, decode_threads=decode_threads)
                        for _ in range(plan.count)]
        log.info("ray: %d %s actor(s), %d CPU(s) each, shards of up to %d files",
                 plan.count, plan.device, plan.num_cpus, self.shard_size)

    def start(self) -> list[str]:
        """Start the actors now and wait until each has loaded the model.

        Returns each actor's ``"host:pid"``. Optional: a call starts them when
        needed; this makes start-up cost visible (and fail) up front.
        """
        self._ensure_actors()
        try:
            return ray.get([a.where.remote() for a in self._actors])
        except ray.exceptions.RayError as e:
            raise RayJobFailed(f"a Ray worker could not start: {_first_line(e)}") from e

    def close(self) -> None:
        """Stop the actors; shut Ray down if this embedder started it."""
        for a in self._actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already dead or cluster gone
                pass
        self._actors = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        if self._reaper is not None:
            self._reaper.close()  # whatever ray.shutdown left behind
            self._reaper = None
        if self._sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._sigterm)
        self._sigterm = None
        self._started_ray = False

    def __enter__(self) -> "RayEmbedder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- embedding ---------------------------------------------------------------
    def _shard_len(self, n: int) -> int:
        """Shards small enough that every actor gets a few, however short the list."""
        actors = self.plan.count if self.plan else 1
        fair = math.ceil(n / (4 * actors))
        return max(1, min(self.shard_size, max(self.settings.batch_size, fair)))

    def __call__(self, files: list[FoundFile], *, should_stop=None
                 ) -> Iterator[tuple[Decoded, np.ndarray | None]]:
        """Embed ``files``; the stream ends (shards in flight dropped) once ``should_stop()``."""
        if not files:
            return
        stop = should_stop or (lambda: False)
        self._ensure_actors()
        size = self._shard_len(len(files))
        shards = shard_paths([f.path for f in files], size)
        window = self.window or 2 * len(self._actors)
        pool = ActorPool(list(self._actors))
        self.shard_workers = []
        ready: dict[int, ShardResult] = {}
        submitted = yielded = 0
        while yielded < len(shards):
            while submitted < len(shards) and submitted - yielded < window:
                pool.submit(lambda actor, job: actor.embed.remote(*job),
                            (submitted, shards[submitted]))
                submitted += 1
            if stop():
                return
            if yielded not in ready:
                res = self._next_result(pool)
                if res is None:  # nothing finished within the poll interval
                    continue
                if res.index < yielded or res.index in ready:  # Ray returns each ref once
                    log.warning("ray: shard %d arrived twice; ignored", res.index)
                    continue
                self._check(res, shards[res.index])
                ready[res.index] = res
                continue
            res = ready.pop(yielded)
            yielded += 1
            self.shard_workers.append(res.worker)
            yield from res.pairs()
        log.info("ray: %d shards done by %d worker process(es)", len(shards),
                 len(set(self.shard_workers)))

    def _next_result(self, pool) -> ShardResult | None:
        try:
            return pool.get_next_unordered(timeout=STOP_POLL)
        except TimeoutError:
            return None
        except ray.exceptions.RayError as e:
            # Worker deaths were already retried by Ray (up to ``retries`` times); what gets
            # here is final: retries used up, or an error in the worker's own code.
            raise RayJobFailed(f"a Ray shard failed: {_first_line(e)}") from e

    def _check(self, res: ShardResult, paths: list[str]) -> None:
        if [d.path for d in res.decoded] != paths:
            raise RayJobFailed(f"shard {res.index} came back with other files than were sent")
        n_ok = sum(d.skip_reason is None for d in res.decoded)
        if res.vectors.shape[0] != n_ok:
            raise RayJobFailed(f"shard {res.index}: {n_ok} files decoded but "
                               f"{res.vectors.shape[0]} vectors")
        if self.identity is None:
            self.identity = res.identity
        elif not res.identity.same_model(self.identity):
            raise ModelMismatch(f"Ray worker {res.worker} loaded model {res.identity}, but this "
                                f"job indexes with {self.identity}; give every node the same "
                                f"model files at the same paths")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    # Ray's errors carry the remote traceback; the last line names the cause.
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
