"""Running a stateful batch class on Ray Data: join the cluster, map batches over a pool
of actors, hand each result back in this process (``localq.embed`` is the caller).

A dead worker is restarted a few times, Ray's console noise is kept out of the user's
way, and every failure becomes one ``EmbedFailed`` line. Ray is imported only here and
only when a job runs.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable

import numpy as np

from localq.errors import EmbedFailed

_RAY_RESTARTS = 3  # restarts per actor, and tries per batch after the first


def run(actor_class: type, constructor_kwargs: dict, rows: list[dict], *, workers: int | None, batch_size: int,
        take: Callable[[dict[str, np.ndarray]], None]) -> None:
    """``take(actor(batch))`` for every batch of ``rows`` (plain dicts, shipped to the
    workers as they are), on the cluster ``connect`` joined, with
    ``actor_class(**constructor_kwargs)`` as a pool of actors (one per CPU by default)."""
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    n_workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    # At least one block per actor, else some sit idle; a few per actor so that a slow
    # block does not leave the others waiting at the end.
    blocks = min(len(rows), max(n_workers, min(len(rows) // batch_size, 4 * n_workers)))
    ds = ray.data.from_items(rows, override_num_blocks=max(1, blocks))
    # A killed actor is restarted and its batch retried (Ray Data's default), but only a
    # few times: a batch that kills its worker on every try (a decoder crash, the OOM
    # killer) ends the job with an error instead of reloading the encoder forever. Ray
    # 2.60 calls these ray_remote_args deprecated but has no other way to set them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            actor_class,
            fn_constructor_kwargs=constructor_kwargs,
            batch_size=batch_size, batch_format="numpy", num_cpus=1,
            # One actor per CPU, each with the encoder loaded once (Ray sets
            # OMP_NUM_THREADS=1 in a 1-CPU actor, so torch does not oversubscribe).
            compute=ray.data.ActorPoolStrategy(size=n_workers),
            max_restarts=_RAY_RESTARTS, max_task_retries=_RAY_RESTARTS,
        )
    try:
        with _no_ray_data_console_errors():
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                take(batch)
    except (ray.exceptions.RayError, ray.data.exceptions.SystemException) as exc:
        raise EmbedFailed(
            f"the Ray job failed ({type(exc).__name__}: {str(exc).strip().splitlines()[-1][:160]}); "
            "finished shards are kept: run the same command again to resume"
        ) from exc


@contextlib.contextmanager
def _no_ray_data_console_errors():
    """Ray Data prints a failed job's stack trace on stderr before it raises; the error
    this module raises says it in one line instead (the trace stays in ray-data.log)."""
    import logging

    consoles = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    levels = [h.level for h in consoles]
    try:
        for h in consoles:
            h.setLevel(logging.CRITICAL)
        yield
    finally:
        for h, level in zip(consoles, levels):
            h.setLevel(level)


def _refuse_unreachable(address: str) -> None:
    """Fail at once where nothing listens at HOST:PORT: ray.init retries a dead address
    for minutes (20 tries of up to 40 s each) before it gives up."""
    import socket

    host, sep, port = address.rpartition(":")
    if address in ("auto", "local") or "://" in address or not sep or not port.isdigit():
        return  # Ray's own resolution (and its own error) for everything else
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise EmbedFailed(f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc}; "
                          "start one with `ray start --head` or check the address") from None


def connect(address: str) -> None:
    """Join (or start, for "local") a Ray cluster once per process."""
    import logging

    try:
        import ray
    except ImportError as exc:
        raise EmbedFailed("--ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[data]')") from exc
    if ray.is_initialized():
        return
    _refuse_unreachable(address)
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True)
    try:
        ray.init(address=address, **kwargs)  # "local" starts a cluster here
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise EmbedFailed(f"cannot reach a Ray cluster at {address!r}: {str(exc).strip().splitlines()[0][:160]}") from exc
