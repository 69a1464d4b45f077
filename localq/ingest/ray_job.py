"""Running a stateful batch class on Ray Data: join the cluster, map batches over a pool
of actors, hand each result back in this process (``localq.ingest.embed`` is the caller).

A dead worker is restarted a few times, Ray's console noise is kept out of the user's
way, and every failure becomes one ``EmbedFailed`` line. Ray is imported only here and
only when a job runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from typing import Callable

import numpy as np

from localq.errors import EmbedFailed

_RAY_RESTARTS = 3  # restarts per actor, and tries per batch after the first


def run(
    actor_class: type,
    constructor_kwargs: dict,
    rows: list[dict],
    *,
    workers: int | None,
    batch_size: int,
    take: Callable[[dict[str, np.ndarray]], None],
) -> None:
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
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=1,
            # One actor per CPU, each with the encoder loaded once (Ray sets
            # OMP_NUM_THREADS=1 in a 1-CPU actor, so torch does not oversubscribe).
            compute=ray.data.ActorPoolStrategy(size=n_workers),
            max_restarts=_RAY_RESTARTS,
            max_task_retries=_RAY_RESTARTS,
        )
    try:
        with _no_ray_data_console_errors(), _without_native_lines(_ACTOR_ARGS_NOTICE):
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
    consoles = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    levels = [h.level for h in consoles]
    try:
        for h in consoles:
            h.setLevel(logging.CRITICAL)
        yield
    finally:
        for h, level in zip(consoles, levels):
            h.setLevel(level)


# Ray's C++ core worker logs this at ERROR level on the driver's stderr for every actor
# Ray Data starts: its constructor arguments are object refs and restarts are on, which is
# exactly what localq asks for (ray-project/ray#53727). Nothing is wrong and the user can
# do nothing about it, yet it reads like a failure.
_ACTOR_ARGS_NOTICE = re.compile(
    rb"\[[^\]\n]*\] core_worker\.cc:\d+: Actor with class name: [^\n]*"
    rb"has constructor arguments in the object store and max_restarts > 0[^\n]*\n?"
)


@contextlib.contextmanager
def _without_native_lines(pattern: re.Pattern):
    """Everything written on file descriptor 2 meanwhile, by Python or by native code,
    passes through except what ``pattern`` matches. Native code's logging cannot be
    filtered any other way: a logging level would hide its real errors too."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as source:
            while chunk := source.read(65536):  # one native log line is one write
                os.write(saved, pattern.sub(b"", chunk))

    thread = threading.Thread(target=pump, name="localq-stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # drops the pipe's last writer: the pump reads to the end, then stops
        thread.join(timeout=5)
        if not thread.is_alive():  # else a child process kept the pipe: leave the pump its target
            os.close(saved)


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
        raise EmbedFailed(
            f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc}; "
            "start one with `ray start --head` or check the address"
        ) from None


class _DropTokenNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


def _quiet_token_notice() -> None:
    """A cluster that ``ray.init`` starts here turns on token authentication (good: other
    local users cannot submit work to it) and says so on the console in a WARNING line a
    user can do nothing about. Drop that line only: the warning that authentication is
    *off* (joining an open cluster) still shows."""
    setup = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _DropTokenNotice) for f in setup.filters):
        setup.addFilter(_DropTokenNotice())


def connect(address: str) -> None:
    """Join (or start, for "local") a Ray cluster once per process."""
    try:
        import ray
    except ImportError as exc:
        raise EmbedFailed("--ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[data]')") from exc
    if ray.is_initialized():
        return
    _refuse_unreachable(address)
    _quiet_token_notice()
    # log_to_driver=False: the workers' own log lines stay in the cluster's log files. A job
    # stopped with Ctrl-C otherwise printed Ray's retry notices for every actor it killed;
    # a worker's failure still reaches this process as an exception (one line, see run).
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True, log_to_driver=False)
    try:
        ray.init(address=address, **kwargs)  # "local" starts a cluster here
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise EmbedFailed(
            f"cannot reach a Ray cluster at {address!r}: {str(exc).strip().splitlines()[0][:160]}"
        ) from exc
