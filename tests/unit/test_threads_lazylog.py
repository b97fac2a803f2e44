"""pbox.threads (the pool of pull, push and pgzip) and pbox.lazylog."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest

from pbox import lazylog
from pbox.threads import CancelledError, Pool


def test_pool_results_errors_and_its_limit():
    running, peak, lock = [0], [0], threading.Lock()

    def work(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        if i == 3:
            raise KeyError(i)
        return i * i

    with Pool(3, "t") as pool:
        futures = [pool.submit(work, i) for i in range(10)]
        assert [f.result() for f in futures[:3]] == [0, 1, 4]
        with pytest.raises(KeyError):
            futures[3].result()
        assert [f.result() for f in futures[4:]] == [i * i for i in range(4, 10)]
    assert peak[0] == 3
    assert all(f.done() for f in futures)
    with pytest.raises(RuntimeError):
        pool.submit(work, 0)


def test_pool_shutdown_waits_or_cancels():
    gate = threading.Event()
    pool = Pool(1, "t")
    first = pool.submit(gate.wait, 5)
    later = [pool.submit(time.sleep, 0) for _ in range(3)]
    threading.Timer(0.05, gate.set).start()
    pool.shutdown(cancel=True)  # waits for the one running, drops the rest
    assert first.result() is True
    for f in later:
        with pytest.raises(CancelledError):
            f.result()


def test_lazylog_below_the_level_imports_nothing_and_above_it_logs():
    code = ("import sys; from pbox.commands.fast import configure_logging; "
            "configure_logging('warning'); from pbox.lazylog import get_logger; "
            "log = get_logger('pbox.t'); log.debug('quiet %s', 1); "
            "print('logging' in sys.modules, flush=True); log.warning('loud %s', 2)")
    root = __file__.rsplit("/tests/", 1)[0]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "False\n"
    assert r.stderr == "WARNING[pbox.t] loud 2\n"


def test_lazylog_unconfigured_is_plain_logging(caplog, monkeypatch):
    monkeypatch.setattr(lazylog, "_threshold", None)
    log = lazylog.get_logger("pbox.test")
    with caplog.at_level(logging.DEBUG, logger="pbox.test"):
        log.debug("hello %s", "there")
        assert log.isEnabledFor(logging.DEBUG)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("pbox.test", logging.DEBUG, "hello there")]
    assert caplog.records[0].funcName == "test_lazylog_unconfigured_is_plain_logging"
