"""Rootless podman in a private scratch directory, as an independent client.

The packaged defaults do not work everywhere: crun refuses hybrid cgroup v1 hosts, so
``containers.conf`` says runc and the cgroupfs manager (events to a file, no journal);
``storage.conf`` picks the overlay driver with a graph root and run root of our own.
HOME, XDG_RUNTIME_DIR and the config dirs are private too, so nothing of the user's
podman is read or changed.

Podman keeps a pause process (the holder of its user namespace) whose pid it writes
under XDG_RUNTIME_DIR; :meth:`Podman.close` resets the store from inside that
namespace (layers hold files of subordinate ids), then ends that one process by its
pid file and removes the scratch directory.

``podman`` (module-scoped fixture, import it into a test module): a ready
:class:`Podman`, or a skip when podman is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time

import pytest

from harness import CommandResult, run_command

CONTAINERS_CONF = """\
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"

[containers]
log_driver = "k8s-file"
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{graph}"
rootless_storage_path = "{graph}"
runroot = "{runroot}"
"""

POLICY = {"default": [{"type": "insecureAcceptAnything"}]}
PAUSE_PID_FILES = ("libpod/tmp/pause.pid", "containers/pause.pid")


class Podman:
    def __init__(self, exe: str):
        self.exe = exe
        # short: podman puts sockets and locks under the runtime dir
        self.top = tempfile.mkdtemp(prefix="pbox-podman-")
        self.home = os.path.join(self.top, "home")
        self.runtime_dir = os.path.join(self.top, "run")
        self.graph = os.path.join(self.top, "graph")
        for d in (self.home, self.runtime_dir):
            os.mkdir(d, 0o700)
        config_home = os.path.join(self.home, ".config")
        os.makedirs(os.path.join(config_home, "containers"))
        self.containers_conf = os.path.join(self.top, "containers.conf")
        self.storage_conf = os.path.join(self.top, "storage.conf")
        with open(self.containers_conf, "w") as f:
            f.write(CONTAINERS_CONF.format(events=os.path.join(self.top, "events.log")))
        with open(self.storage_conf, "w") as f:
            f.write(STORAGE_CONF.format(graph=self.graph,
                                        runroot=os.path.join(self.runtime_dir, "storage")))
        with open(os.path.join(config_home, "containers", "policy.json"), "w") as f:
            json.dump(POLICY, f)
        self.env = {
            "HOME": self.home,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin:/usr/sbin:/sbin"),
            "LANG": "C.UTF-8",
            "XDG_RUNTIME_DIR": self.runtime_dir,
            "XDG_CONFIG_HOME": config_home,
            "XDG_DATA_HOME": os.path.join(self.home, ".local", "share"),
            "CONTAINERS_CONF": self.containers_conf,
            "CONTAINERS_STORAGE_CONF": self.storage_conf,
        }

    def __call__(self, *args, check: bool = True, expect_rc: int | None = None,
                 timeout: float = 180) -> CommandResult:
        """Run ``podman ARGS``; fails the test with the command and its output unless
        it exits 0 (or ``expect_rc``)."""
        __tracebackhide__ = True
        return run_command([self.exe, *(str(a) for a in args)], env=self.env, check=check,
                           expect_rc=expect_rc, timeout=timeout)

    def check_setup(self) -> None:
        """podman reads our files: overlay in our graph root, runc as the runtime."""
        info = json.loads(self("info", "--format", "json").stdout)
        assert info["store"]["graphRoot"] == self.graph, info["store"]
        assert info["store"]["graphDriverName"] == "overlay", info["store"]
        assert os.path.basename(info["host"]["ociRuntime"]["path"]) == "runc"

    def pause_pids(self) -> list[int]:
        pids = []
        for rel in PAUSE_PID_FILES:
            try:
                with open(os.path.join(self.runtime_dir, rel)) as f:
                    pids.append(int(f.read().strip()))
            except (OSError, ValueError):
                continue
        return pids

    def close(self) -> None:
        self("system", "reset", "-f", check=False)
        if os.path.exists(self.graph):
            self("unshare", "rm", "-rf", self.graph, check=False)
        pids = self.pause_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in pids:
            for _ in range(100):
                if not _running(pid):
                    break
                time.sleep(0.05)
        shutil.rmtree(self.top, ignore_errors=True)


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def podman():
    """A rootless podman with private config and storage; ended (pause process
    included) after the module's tests."""
    exe = shutil.which("podman")
    if exe is None:
        pytest.skip("podman is not installed")
    p = Podman(exe)
    try:
        p.check_setup()
        yield p
    finally:
        p.close()
