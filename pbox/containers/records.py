"""Containers on disk: ``<root>/containers/<id>/`` and the name index.

    config.json   what `create` decided (docker's Config/HostConfig + the run spec)
    state.json    Status, pids, exit code, times; written atomically by whoever owns
                  the container's process (the monitor, or a foreground `run`)
    lock          flock held by the owner while the container runs; taken by
                  start/rm so two of them never act on one container at once
    upper/ work/  the container's writable layer (overlay upper and work dirs)
    hosts resolv.conf hostname    bound into the container
    ctr.log       its output, one JSON object per line (docker's json-file format)

Names: ``<root>/containers/.names/<name>`` is a symlink to the id; creating it is
atomic, so two `create --name x` cannot both succeed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

from pbox.errors import Conflict, ContainerNotFound, UsageError
from pbox.storage.store import Store

NAMES = ".names"
# docker stop's default wait before SIGKILL, in seconds (--stop-timeout changes it).
DEFAULT_STOP_TIMEOUT = 10


def new_id() -> str:
    # os.urandom, not secrets: that imports hmac and OpenSSL, ~4 ms of every `run`.
    return os.urandom(32).hex()


def proc_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks (detects pid reuse), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()
        if fields[0] == b"Z":
            return None
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def end_orphaned_helper(st: dict) -> None:
    """The network helper (pasta, slirp4netns) of a container whose owner was killed:
    nobody else stops it, and it holds the container's network namespace and ports.
    Ended when it is still that very process (pid and start time)."""
    ns = st.get("NetworkSettings") or {}
    pid, start = ns.get("HelperPid") or 0, ns.get("HelperStart")
    if pid and start is not None and alive(pid, start):
        import _signal as signal  # (signal imports enum: ~2 ms)

        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def alive(pid: int | None, start: int | None) -> bool:
    if not pid:
        return False
    now = proc_start_time(pid)
    return now is not None and (start is None or now == start)


def _orphaned(st: dict) -> bool:
    """A state that says the container runs while the process that owns it is gone."""
    return st.get("Status") in ("running", "restarting", "paused", "stopping") and \
        not alive(st.get("MonitorPid"), st.get("MonitorStart"))


class ContainerStore:
    def __init__(self, store: Store):
        self.store = store
        self.dir = store.containers_dir
        self.names_dir = os.path.join(self.dir, NAMES)

    def path(self, cid: str, *parts: str) -> str:
        return os.path.join(self.dir, cid, *parts)

    # -- ids and names ---------------------------------------------------------------------

    def ids(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.dir) if len(n) == 64 and
                    os.path.exists(os.path.join(self.dir, n, "config.json"))]
        except FileNotFoundError:
            return []

    def name_of(self, cid: str) -> str:
        cfg = self.config(cid)
        return cfg.get("Name", "").lstrip("/")

    def claim_name(self, name: str, cid: str) -> None:
        os.makedirs(self.names_dir, exist_ok=True)
        link = os.path.join(self.names_dir, name)
        try:
            os.symlink(cid, link)
        except FileExistsError:
            other = self._name_target(name)
            if other and not os.path.exists(self.path(other, "config.json")):
                # left by a container whose creation died half-way: take it over
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(link)
                return self.claim_name(name, cid)
            raise Conflict(
                f'the container name "/{name}" is already in use by container '
                f'"{other or "?"}". You have to remove (or rename) that container to be '
                f"able to reuse that name."
            )

    def release_name(self, name: str, cid: str) -> None:
        if self._name_target(name) == cid:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.names_dir, name))

    def _name_target(self, name: str) -> str | None:
        try:
            return os.readlink(os.path.join(self.names_dir, name))
        except OSError:
            return None

    def find(self, text: str) -> str:
        """A container id from a name, a full id or a unique id prefix."""
        if not text:
            raise UsageError("a container name or id is required")
        name = text.lstrip("/")
        cid = self._name_target(name)
        if cid and os.path.exists(self.path(cid, "config.json")):
            return cid
        if all(c in "0123456789abcdef" for c in text):
            hits = [i for i in self.ids() if i.startswith(text)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise UsageError(f"multiple containers match {text!r}; give more of the id")
        raise ContainerNotFound(f"No such container: {text}")

    # -- records ---------------------------------------------------------------------------

    def create_dir(self, cid: str) -> str:
        self.store.ensure()
        os.makedirs(self.dir, exist_ok=True)
        d = self.path(cid)
        os.mkdir(d, 0o700)
        for sub in ("upper", "work"):
            os.mkdir(os.path.join(d, sub), 0o755)
        return d

    def config(self, cid: str) -> dict:
        cfg = self.store.read_json(self.path(cid, "config.json"))
        if cfg is None:
            raise ContainerNotFound(f"No such container: {cid}")
        return cfg

    def write_config(self, cid: str, cfg: dict) -> None:
        self.store.write_json(self.path(cid, "config.json"), cfg)

    def state(self, cid: str) -> dict:
        """The recorded state, corrected when its owner died without saying so."""
        path = self.path(cid, "state.json")
        st = self.store.read_json(path) or {"Status": "created"}
        if _orphaned(st):
            # The owner records the end before it exits: it may have done so after the
            # read above.  Read again, now that it is known to be gone.
            st = self.store.read_json(path) or {"Status": "created"}
        if _orphaned(st):
            # The process that owned it was killed (kill -9): its container died with
            # it (PR_SET_PDEATHSIG), nobody recorded an exit code.
            st.update(Status="exited", Running=False, Restarting=False, Paused=False,
                      Pid=0, ExitCode=st.get("ExitCode") or 137,
                      Error=st.get("Error") or "the process that ran the container died",
                      FinishedAt=st.get("FinishedAt") or _now_rfc3339())
            end_orphaned_helper(st)
        return st

    def write_state(self, cid: str, **changes) -> dict:
        path = self.path(cid, "state.json")
        st = self.store.read_json(path) or {}
        st.update(changes)
        if os.path.isdir(self.path(cid)):
            # Runtime state: atomic, but not fsynced (a reboot ends every container,
            # and state() tells a dead owner from a live one).
            self.store.write_json(path, st, durable=False)
        return st

    @contextlib.contextmanager
    def locked(self, cid: str, *, wait: bool = True):
        """Hold the container's lock (the owner of a running container holds it)."""
        fd = os.open(self.path(cid, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise Conflict("the container is busy (another pbox command is using it)")
            yield fd
        finally:
            os.close(fd)

    def remove_dir(self, cid: str, on_denied=None) -> None:
        """Remove the container's directory.  ``on_denied`` is called (to join the
        user's namespace) when some of it belongs to ids only that namespace may
        delete, and the removal is then tried again."""
        from pbox.storage.fsutil import remove_tree

        d = self.path(cid)
        # Rename away first, so a half-removed container never shows up in `ps -a`.
        entry = self.store.temp("rmctr")
        try:
            os.rename(d, entry.path)
        except OSError as e:
            entry.discard()
            if e.errno == errno.ENOENT:
                return
            remove_tree(d)
            return
        try:
            entry.discard()
        except PermissionError:
            if on_denied is None:
                raise
            on_denied()
            entry.discard()


def _now_rfc3339() -> str:
    from pbox.humanize import rfc3339

    return rfc3339(time.time())
