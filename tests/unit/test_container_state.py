"""pbox.containers.records: a container's state when the process owning it is gone."""

from __future__ import annotations

from pbox.containers import records
from pbox.containers.records import ContainerStore
from pbox.storage.store import Store

CID = "c" * 64


def _store(tmp_path) -> ContainerStore:
    cs = ContainerStore(Store.open(str(tmp_path / "root"), str(tmp_path / "run")))
    cs.create_dir(CID)
    cs.write_state(CID, Status="running", Running=True, Pid=4242, MonitorPid=4241,
                   MonitorStart=1)
    return cs


def test_an_owner_that_recorded_the_exit_just_before_it_ended(tmp_path, monkeypatch):
    """The reader saw "running", then the monitor wrote the exit and ended before the
    reader looked for it: the recorded exit code, not a kill's 137."""
    cs = _store(tmp_path)
    looked = []

    def ended_meanwhile(pid, start):
        if not looked:  # between the reader's read and its look at the owner
            cs.write_state(CID, Status="exited", Running=False, Pid=0, ExitCode=3)
        looked.append(pid)
        return False

    monkeypatch.setattr(records, "alive", ended_meanwhile)
    st = cs.state(CID)
    assert (st["Status"], st["ExitCode"]) == ("exited", 3) and "Error" not in st


def test_an_owner_killed_without_a_word(tmp_path, monkeypatch):
    cs = _store(tmp_path)
    monkeypatch.setattr(records, "alive", lambda pid, start: False)
    st = cs.state(CID)
    assert (st["Status"], st["ExitCode"], st["Running"]) == ("exited", 137, False)
    assert st["Error"] == "the process that ran the container died"


def test_a_live_owner_keeps_the_state(tmp_path, monkeypatch):
    cs = _store(tmp_path)
    monkeypatch.setattr(records, "alive", lambda pid, start: pid == 4241)
    assert cs.state(CID)["Status"] == "running"


def test_the_helper_of_a_killed_owner_is_ended_without_the_signal_module():
    """A network helper left by a killed owner gets SIGTERM, when it is still that very
    process (pid and start time); through ``_signal``: ``signal`` imports ``enum``
    (~2 ms), which the container commands do without."""
    import os
    import subprocess
    import sys

    code = """if True:
        import os, sys
        from pbox.containers import records
        pid = os.fork()
        if pid == 0:
            os.execv("/bin/sleep", ["sleep", "30"])
        start = records.proc_start_time(pid)
        records.end_orphaned_helper({"NetworkSettings": {"HelperPid": pid,
                                                         "HelperStart": start + 1}})
        records.end_orphaned_helper({"NetworkSettings": {"HelperPid": pid,
                                                         "HelperStart": start}})
        _, status = os.waitpid(pid, 0)
        print(os.WIFSIGNALED(status) and os.WTERMSIG(status), "signal" in sys.modules)
    """
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": root})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["15", "False"]  # SIGTERM, once the start time matched
