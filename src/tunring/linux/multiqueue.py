"""Serving a multiqueue TUN interface with one worker process per queue.

The GIL makes processes, not threads, the way to use several cores: each
worker gets one queue of a ``TunDevice.create(..., queues=N)`` (its own descriptor
and packet pool; the kernel spreads flows over the queues by hash) and runs
``target(queue, stop)`` until ``stop()`` turns true.  Workers are forked, so
the queue descriptors and pool mappings are simply inherited.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

from .tun import TunDevice


def _worker(target, queue: TunDevice, stop, results, index: int, args: tuple) -> None:
    try:
        outcome = target(queue, stop.is_set, *args)
        results.put((index, outcome, None))
    except BaseException as e:  # the parent reports it; a worker must not vanish silently
        results.put((index, None, f"{type(e).__name__}: {e}"))


class QueueWorkers:
    """One forked worker per queue of ``device``, each running ``target(queue, stop, *args)``.

    ``start()`` launches them; ``stop(timeout_s)`` asks them to finish and
    returns each worker's return value in queue order (raising RuntimeError if
    a worker failed or did not finish).  Usable as a context manager.
    """

    def __init__(self, device: TunDevice, target: Callable[..., Any], *args: Any) -> None:
        ctx = multiprocessing.get_context("fork")
        self._stop = ctx.Event()
        self._results = ctx.Queue()
        self.processes = [ctx.Process(target=_worker, args=(target, q, self._stop, self._results, i, args),
                                      name=f"{device.name}-q{i}", daemon=True)
                          for i, q in enumerate(device.queues)]

    def start(self) -> QueueWorkers:
        for p in self.processes:
            p.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> list[Any]:
        self._stop.set()
        outcomes: dict[int, Any] = {}
        errors = []
        try:
            for _ in self.processes:
                index, outcome, error = self._results.get(timeout=timeout_s)
                outcomes[index] = outcome
                if error:
                    errors.append(f"queue {index}: {error}")
        finally:
            for p in self.processes:
                p.join(timeout_s)
                if p.is_alive():
                    p.kill()
                    p.join()
        if errors:
            raise RuntimeError("queue worker failed: " + "; ".join(errors))
        return [outcomes[i] for i in range(len(self.processes))]

    def __enter__(self) -> QueueWorkers:
        return self.start()

    def __exit__(self, *exc) -> None:
        if not self._stop.is_set():
            self._stop.set()
            for p in self.processes:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join()
