"""A small thread pool for pull, push and pgzip.

``concurrent.futures`` imports ``logging`` (together ~6 ms of a pull or push that logs
nothing).  pbox needs little of it: ``submit`` returning a future with ``result()``
and ``done()``, a pool used as a context manager that waits for its work, and a
shutdown that drops what has not started.  Workers start as work arrives, up to the
limit, and are daemon threads (an interrupted command is not held up at exit).
"""

from __future__ import annotations

import threading
from collections import deque


class CancelledError(Exception):
    """The work was dropped before it started (``Pool.shutdown(cancel=True)``)."""


class Future:
    __slots__ = ("_event", "_result", "_error")

    def __init__(self):
        self._event = threading.Event()
        self._result = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._event.is_set()

    def result(self):
        """The function's return value (waiting for it), or what it raised."""
        self._event.wait()
        if self._error is not None:
            raise self._error
        return self._result

    def _set(self, result=None, error: BaseException | None = None) -> None:
        self._result, self._error = result, error
        self._event.set()


class Pool:
    def __init__(self, workers: int, name: str = "pool"):
        self._max = max(1, workers)
        self._name = name
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, fn, *args) -> Future:
        future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("submit to a pool that was shut down")
            self._queue.append((future, fn, args))
            if self._idle == 0 and len(self._threads) < self._max:
                t = threading.Thread(target=self._work, daemon=True,
                                     name=f"{self._name}_{len(self._threads)}")
                self._threads.append(t)
                t.start()
            else:
                self._cond.notify()
        return future

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if not self._queue:
                    return
                future, fn, args = self._queue.popleft()
            try:
                result = fn(*args)
            except BaseException as e:  # handed to whoever asks for the result
                future._set(error=e)
            else:
                future._set(result)

    def shutdown(self, *, cancel: bool = False) -> None:
        """Wait for the work to end (dropping what has not started with ``cancel``)."""
        with self._cond:
            self._closed = True
            if cancel:
                while self._queue:
                    self._queue.popleft()[0]._set(error=CancelledError())
            self._cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
