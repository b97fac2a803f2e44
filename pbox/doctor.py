"""``pbox doctor``: what rootless containers need on this host, and how to fix what is missing.

Each check is a pure function of what was read from the host (file contents, stat
results, the outcome of a probe), so the decisions are unit-tested without the host
having the problem.  :func:`gather` reads the host and runs the one probe that must be
real: a forked child enters a user and mount namespace with the id mapping pbox would
use, mounts overlay (``userxattr``) and fuse-overlayfs on scratch directories on the
store's file system, and reports what worked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from dataclasses import asdict, dataclass

from pbox.rootless import idmap

OK = "ok"
WARN = "warn"
FAIL = "fail"

GIB = 1024 ** 3
MIN_FREE = GIB
FULL_RANGE = 65536  # ids an image may use: 0..65535 (nobody is 65534)
SUBID_START = 100000

SYSCTL_MAX_USERNS = "/proc/sys/user/max_user_namespaces"
SYSCTL_USERNS_CLONE = "/proc/sys/kernel/unprivileged_userns_clone"
SYSCTL_APPARMOR = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"

# package of each tool, per package manager (the first manager found on PATH wins)
PACKAGES = {
    "newuidmap": {"apt-get": "uidmap", "dnf": "shadow-utils", "yum": "shadow-utils",
                  "zypper": "shadow", "pacman": "shadow", "apk": "shadow-uidmap"},
    "fuse-overlayfs": {},
    "pasta": {"apt-get": "passt", "dnf": "passt", "yum": "passt", "zypper": "passt",
              "pacman": "passt", "apk": "passt"},
}
INSTALL = {"apt-get": "sudo apt-get install {}", "dnf": "sudo dnf install {}",
           "yum": "sudo yum install {}", "zypper": "sudo zypper install {}",
           "pacman": "sudo pacman -S {}", "apk": "sudo apk add {}"}
MANAGERS = tuple(INSTALL)


@dataclass
class Check:
    name: str  # a stable key for scripts
    title: str
    status: str  # ok | warn | fail
    message: str
    fix: str = ""  # a command that fixes it ("" when there is none to give)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"Name": d["name"], "Title": d["title"], "Status": d["status"],
                "Message": d["message"], "Fix": d["fix"]}


# -- helpers ----------------------------------------------------------------------------------


def install_hint(tool: str, manager: str | None) -> str:
    """The command that installs ``tool`` with ``manager`` (apt-get's when unknown)."""
    manager = manager if manager in INSTALL else "apt-get"
    package = PACKAGES.get(tool, {}).get(manager, tool)
    return INSTALL[manager].format(package)


def sysctl_fix(key: str, value: str) -> str:
    """Set a sysctl now and at every boot."""
    return (f"echo '{key}={value}' | sudo tee /etc/sysctl.d/90-pbox.conf && "
            f"sudo sysctl -w {key}={value}")


def kernel_at_least(release: str, want: tuple[int, int]) -> bool:
    """``release`` as in ``uname -r`` ('6.8.0-45-generic') is at least ``want``."""
    nums = []
    for part in release.split("-")[0].split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        nums.append(int(digits) if digits else 0)
    while len(nums) < 2:
        nums.append(0)
    return tuple(nums) >= want


def free_subid_start(taken: list[idmap.SubRange], count: int = FULL_RANGE,
                     start: int = SUBID_START) -> int:
    """The lowest start >= ``start``, in steps of ``count``, whose range overlaps none taken."""
    lo = start
    while True:
        hi = lo + count
        clash = [r for r in taken if r.start < hi and lo < r.start + r.count]
        if not clash:
            return lo
        end = max(r.start + r.count for r in clash)
        lo = start + -(-(end - start) // count) * count  # next step at or after ``end``


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


# -- the checks (pure) ------------------------------------------------------------------------


def check_userns(max_userns: str | None, probe: dict | None, *, root: bool = False) -> Check:
    """``max_userns``: /proc/sys/user/max_user_namespaces; ``probe``: see :func:`probe`."""
    title = "user namespaces"
    n = _int(max_userns)
    if n is not None and n == 0:
        return Check("userns", title, FAIL, "user.max_user_namespaces is 0: user namespaces "
                     "are disabled", sysctl_fix("user.max_user_namespaces", "28633"))
    if root:
        return Check("userns", title, OK, "not needed: pbox runs as real root")
    err = (probe or {}).get("unshare")
    if err:
        return Check("userns", title, FAIL, f"cannot create a user namespace: {err}")
    err = (probe or {}).get("selfmap")
    if err:
        return Check("userns", title, FAIL, f"cannot map your own id in a user namespace: {err}")
    err = (probe or {}).get("nsmount")
    if err:
        return Check("userns", title, FAIL, "a user namespace can be created, but root in it "
                     f"cannot mount ({err}): a security module restricts user namespaces")
    extra = f" (at most {n})" if n is not None else ""
    return Check("userns", title, OK, f"unprivileged user namespaces work{extra}")


def check_userns_clone(value: str | None) -> Check | None:
    """Debian's kernel.unprivileged_userns_clone (None: the kernel has no such switch)."""
    if value is None:
        return None
    title = "kernel.unprivileged_userns_clone"
    if _int(value) == 0:
        return Check("userns-clone", title, FAIL, "unprivileged user namespaces are "
                     "switched off", sysctl_fix("kernel.unprivileged_userns_clone", "1"))
    return Check("userns-clone", title, OK, "unprivileged user namespaces are allowed")


def check_apparmor(value: str | None, probe: dict | None) -> Check | None:
    """Ubuntu's kernel.apparmor_restrict_unprivileged_userns (None: not present).

    When it is 1, an unconfined program may create a user namespace but gets no
    capabilities in it, unless an AppArmor profile allows it: the probe tells which.
    """
    if value is None:
        return None
    title = "AppArmor user namespace restriction"
    if _int(value) != 1:
        return Check("apparmor-userns", title, OK, "not restricted")
    if probe and "nsmount" in probe and not probe["nsmount"]:
        return Check("apparmor-userns", title, OK, "restricted, but this program is allowed")
    return Check("apparmor-userns", title, FAIL, "kernel.apparmor_restrict_unprivileged_userns"
                 " is 1: programs without an AppArmor profile get no capabilities in a user "
                 "namespace", sysctl_fix("kernel.apparmor_restrict_unprivileged_userns", "0"))


def check_subids(user: str, uid: int, subuid_text: str | None, subgid_text: str | None,
                 *, root: bool = False) -> Check:
    """The user's ranges in /etc/subuid and /etc/subgid (texts; None: file missing)."""
    title = "/etc/subuid and /etc/subgid"
    if root:
        return Check("subids", title, OK, "not needed: pbox runs as real root")
    uid_all = idmap.parse_subid(subuid_text or "")
    gid_all = idmap.parse_subid(subgid_text or "")
    mine_u = idmap.ranges_for(uid_all, user, uid)
    mine_g = idmap.ranges_for(gid_all, user, uid)
    n_u = sum(r.count for r in mine_u)
    n_g = sum(r.count for r in mine_g)
    others = [r for r in uid_all + gid_all if r not in mine_u and r not in mine_g]
    start = free_subid_start(others + mine_u + mine_g)
    fix = idmap.usermod_hint(user, FULL_RANGE, start)
    if not mine_u or not mine_g:
        missing = " and ".join(f for f, m in ((idmap.SUBUID_FILE, mine_u),
                                              (idmap.SUBGID_FILE, mine_g)) if not m)
        return Check("subids", title, FAIL, f"no subordinate id range for {user} in "
                     f"{missing}: only your own id can be mapped, so images' files are all "
                     "owned by you and containers can only run as root", fix)
    if min(n_u, n_g) < FULL_RANGE - 1:
        return Check("subids", title, WARN, f"{user} has {n_u} subordinate uids and {n_g} "
                     f"gids; images using ids up to 65535 need {FULL_RANGE - 1}", fix)
    return Check("subids", title, OK, f"{user} has {n_u} subordinate uids and {n_g} gids")


@dataclass
class HelperInfo:
    """What was found of newuidmap or newgidmap."""

    program: str
    path: str | None = None
    mode: int = 0
    owner: int = -1
    file_caps: bool = False


def check_newidmap(helpers: list[HelperInfo], manager: str | None, probe: dict | None,
                   *, root: bool = False) -> Check:
    title = "newuidmap and newgidmap"
    if root:
        return Check("newidmap", title, OK, "not needed: pbox runs as real root")
    missing = [h.program for h in helpers if not h.path]
    if missing:
        return Check("newidmap", title, FAIL, f"{' and '.join(missing)} not found: only your "
                     "own id can be mapped", install_hint("newuidmap", manager))
    weak = [h for h in helpers
            if not ((h.owner == 0 and h.mode & stat.S_ISUID) or h.file_caps)]
    if weak:
        paths = " ".join(h.path for h in weak)
        return Check("newidmap", title, FAIL, f"{paths}: neither setuid root nor given file "
                     "capabilities, so they cannot write id maps", f"sudo chmod u+s {paths}")
    err = (probe or {}).get("idmap")
    if err:
        return Check("newidmap", title, FAIL, f"mapping the subordinate ids failed: {err}")
    how = "file capabilities" if any(h.file_caps for h in helpers) else "setuid root"
    tried = " and map your ranges" if (probe or {}).get("mode") == idmap.MODE_SUBUID else ""
    return Check("newidmap", title, OK, f"installed ({how}){tried}")


def check_overlay(probe: dict | None, kernel: str, *, root: bool = False) -> Check:
    title = "native overlay" + ("" if root else " in a user namespace")
    probe = probe or {}
    if probe.get("unshare") or probe.get("selfmap") or probe.get("nsmount"):
        return Check("overlay", title, WARN, "not tried: no usable user namespace")
    err = probe.get("overlay")
    if err is None and "overlay" in probe:
        return Check("overlay", title, OK, "mountable on the store's file system")
    why = err or "not tried"
    if not root and not kernel_at_least(kernel, (5, 11)):
        why += f" (Linux {kernel.split('-')[0]}; it needs 5.11 or later)"
    return Check("overlay", title, WARN, f"cannot mount: {why}; pbox falls back to "
                 "fuse-overlayfs, or to copying layers")


def check_fuse(path: str | None, dev_fuse: str | None, probe: dict | None,
               manager: str | None) -> Check:
    """``dev_fuse``: None when /dev/fuse can be opened read-write, else why not."""
    title = "fuse-overlayfs"
    probe = probe or {}
    overlay_ok = "overlay" in probe and probe.get("overlay") is None
    level = WARN
    if not path:
        return Check("fuse", title, OK if overlay_ok else level,
                     "not installed" + (" (not needed: native overlay works)" if overlay_ok
                                        else ": pbox copies layers for each container"),
                     "" if overlay_ok else install_hint("fuse-overlayfs", manager))
    if dev_fuse:
        return Check("fuse", title, OK if overlay_ok else level,
                     f"installed, but /dev/fuse is not usable: {dev_fuse}",
                     "" if overlay_ok else "sudo chmod 0666 /dev/fuse")
    err = probe.get("fuse")
    if err:
        return Check("fuse", title, OK if overlay_ok else level,
                     f"installed, but mounting failed: {err}")
    if "fuse" in probe:
        return Check("fuse", title, OK, f"{path} mounts in a user namespace")
    return Check("fuse", title, OK, f"{path}, /dev/fuse usable")


def check_tun(problem: str | None) -> Check:
    """``problem``: None when /dev/net/tun can be opened read-write, else why not."""
    title = "/dev/net/tun"
    if problem:
        return Check("tun", title, WARN, f"not usable ({problem}): private networks and "
                     "published ports (pasta, slirp4netns) need it",
                     "sudo modprobe tun && sudo chmod 0666 /dev/net/tun")
    return Check("tun", title, OK, "usable")


def check_network_helpers(pasta: str | None, slirp: str | None, manager: str | None) -> Check:
    title = "pasta / slirp4netns"
    found = [p for p in (pasta, slirp) if p]
    if not found:
        return Check("network", title, WARN, "neither is installed: only --network host "
                     "and none work", install_hint("pasta", manager))
    return Check("network", title, OK, " and ".join(found))


def check_cgroups(version: str, problem: str | None) -> Check:
    title = f"cgroup {version}"
    if problem:
        return Check("cgroups", title, WARN, f"resource limits (--memory, --cpus, "
                     f"--pids-limit) are unavailable: {problem}")
    return Check("cgroups", title, OK, "a cgroup v2 subtree with memory, cpu and pids is "
                 "delegated to you")


def check_writable(name: str, title: str, path: str, existing: str, writable: bool,
                   is_dir: bool, user: str, problem: str | None = None) -> Check:
    """``existing``: ``path`` or its nearest existing ancestor (the one that must be writable)."""
    if problem:
        return Check(name, title, FAIL, f"{path}: {problem}")
    if existing == path and not is_dir:
        return Check(name, title, FAIL, f"{path} is not a directory")
    if not writable:
        what = path if existing == path else f"{existing} (where {path} would be made)"
        return Check(name, title, FAIL, f"{what} is not writable by {user}",
                     f"sudo chown -R {user} {existing}")
    if existing != path:
        return Check(name, title, OK, f"{path} will be created in {existing}")
    return Check(name, title, OK, f"{path} is writable")


def check_space(path: str, free: int | None) -> Check:
    from pbox.humanize import bytes_size

    title = "free space"
    if free is None:
        return Check("space", title, WARN, f"cannot tell the free space at {path}")
    if free < MIN_FREE:
        return Check("space", title, WARN, f"only {bytes_size(free)} free at {path}: "
                     "images and containers may not fit")
    return Check("space", title, OK, f"{bytes_size(free)} free at {path}")


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == FAIL for c in checks) else 0


def render_text(checks: list[Check]) -> str:
    """The report a person reads: one line per check, the fix under each problem."""
    lines = []
    for c in checks:
        tag = f"[{c.status}]"
        lines.append(f"{tag:<7}{c.title}: {c.message}")
        if c.fix and c.status != OK:
            lines.append(f"{'':7}fix: {c.fix}")
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    if failed or warned:
        lines.append(f"\n{failed} failed, {warned} warning{'s' if warned != 1 else ''}")
    else:
        lines.append("\nEverything rootless pbox needs is in place.")
    return "\n".join(lines) + "\n"


# -- reading the host -------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _device_problem(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError as e:
        return f"{path}: {e.strerror}"
    if not stat.S_ISCHR(st.st_mode):
        return f"{path} is not a character device"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"{path}: {e.strerror}"
    os.close(fd)
    return None


def _helper(program: str) -> HelperInfo:
    path = shutil.which(program)
    info = HelperInfo(program, path)
    if path:
        try:
            st = os.stat(path)
            info.mode, info.owner = st.st_mode, st.st_uid
        except OSError:
            info.path = None
        try:
            os.getxattr(path, "security.capability")
            info.file_caps = True
        except OSError:
            pass
    return info


def _existing_ancestor(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def _writable(path: str) -> tuple[str, bool, bool]:
    existing = _existing_ancestor(path)
    is_dir = os.path.isdir(existing)
    return existing, is_dir and os.access(existing, os.W_OK | os.X_OK), is_dir


def _store_problem(root: str) -> str | None:
    from pbox.errors import PboxError
    from pbox.storage.store import Store

    try:
        Store.open(root, create=False)
    except PboxError as e:
        return str(e)
    return None


def _probe_dir(root: str) -> str | None:
    """A directory on the store's file system to try mounts in (overlay's support
    depends on the file system of its upper directory)."""
    import tempfile

    for base in (os.path.join(root, "tmp"), _existing_ancestor(root), tempfile.gettempdir()):
        if os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            try:
                return tempfile.mkdtemp(prefix=".pbox-doctor-", dir=base)
            except OSError:
                continue
    return None


def _probe_child(work: str, use_userns: bool, to_parent: int, from_parent: int) -> dict:
    from pbox.rootless import mounts, syscalls, userns

    res: dict = {}
    uid, gid = os.getuid(), os.getgid()  # unmapped (65534) once unshared
    flags = syscalls.CLONE_NEWNS | (syscalls.CLONE_NEWUSER if use_userns else 0)
    try:
        syscalls.unshare(flags)
    except OSError as e:
        res["unshare"] = e.strerror or str(e)
        os.write(to_parent, b"X")
        return res
    res["unshare"] = None
    os.write(to_parent, b"U")
    answer = os.read(from_parent, 1)
    if use_userns and answer != b"M":
        try:
            userns.write_single_map("self", uid, gid)
        except OSError as e:
            res["selfmap"] = e.strerror or str(e)
            return res
    try:
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        scratch = os.path.join(work, "tmpfs")
        os.mkdir(scratch)
        syscalls.mount("tmpfs", scratch, "tmpfs", 0, "size=64k")
        syscalls.umount2(scratch, syscalls.MNT_DETACH)
        res["nsmount"] = None
    except OSError as e:
        res["nsmount"] = e.strerror or str(e)
        return res

    def dirs(prefix: str) -> tuple[str, str, str, str]:
        out = []
        for d in ("lower", "upper", "work", "merged"):
            p = os.path.join(work, f"{prefix}-{d}")
            os.mkdir(p)
            out.append(p)
        with open(os.path.join(out[0], "from-lower"), "w") as f:
            f.write("lower\n")
        return out[0], out[1], out[2], out[3]

    def exercise(lower: str, upper: str, merged: str) -> None:
        with open(os.path.join(merged, "from-lower")) as f:
            if f.read() != "lower\n":
                raise OSError("the lower layer is not visible through the mount")
        with open(os.path.join(merged, "new"), "w") as f:
            f.write("upper\n")
        if not os.path.exists(os.path.join(upper, "new")):
            raise OSError("a file written to the mount did not reach the upper directory")

    try:
        lower, upper, wk, merged = dirs("ovl")
        data = f"lowerdir={lower},upperdir={upper},workdir={wk}"
        if use_userns:
            data += ",userxattr"
        syscalls.mount("overlay", merged, "overlay", 0, data)
        try:
            exercise(lower, upper, merged)
        finally:
            syscalls.umount2(merged, syscalls.MNT_DETACH)
        res["overlay"] = None
    except OSError as e:
        res["overlay"] = e.strerror or str(e)
    if shutil.which("fuse-overlayfs") and _device_problem("/dev/fuse") is None:
        try:
            lower, upper, wk, merged = dirs("fuse")
            pids = mounts.mount_fuse_overlayfs([lower], upper, wk, merged)
            try:
                exercise(lower, upper, merged)
            finally:
                syscalls.umount2(merged, syscalls.MNT_DETACH)
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGTERM)
                        os.waitpid(pid, 0)
                    except (ProcessLookupError, ChildProcessError):
                        pass
            res["fuse"] = None
        except (OSError, mounts.MountError) as e:
            res["fuse"] = getattr(e, "strerror", None) or str(e)
    return res


def probe(root: str, *, as_root: bool) -> dict:
    """Try, in a forked child, what containers do first: a user namespace with pbox's id
    mapping, a mount in it, native overlay and fuse-overlayfs.

    Keys: ``mode`` (the id mapping), ``unshare``, ``idmap`` (newuidmap/newgidmap),
    ``selfmap`` (a single-id map), ``nsmount``, ``overlay``, ``fuse``: None when it worked, the error text when not, absent when not tried.
    The process must be single-threaded (it forks, and the child unshares).
    """
    from pbox.rootless import userns
    from pbox.storage.fsutil import remove_tree

    mapping = userns.current_mapping()
    result: dict = {"mode": mapping.mode}
    work = _probe_dir(root)
    if work is None:
        result["unshare"] = "no writable directory to try mounts in"
        return result
    c2p_r, c2p_w = os.pipe()
    p2c_r, p2c_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's code
        code = 0
        try:
            os.close(c2p_r)
            os.close(p2c_w)
            os.close(res_r)
            out = _probe_child(work, not as_root, c2p_w, p2c_r)
            os.write(res_w, json.dumps(out).encode())
        except BaseException as e:  # noqa: BLE001 - report anything, then exit
            try:
                os.write(res_w, json.dumps({"unshare": f"probe failed: {e}"}).encode())
            except OSError:
                pass
            code = 1
        finally:
            os._exit(code)
    os.close(c2p_w)
    os.close(p2c_r)
    os.close(res_w)
    try:
        state = os.read(c2p_r, 1)
        answer = b"S"
        if state == b"U" and not as_root and mapping.mode == idmap.MODE_SUBUID:
            try:
                userns.run_newidmap(mapping, pid)
                answer = b"M"
                result["idmap"] = None
            except Exception as e:  # noqa: BLE001 - the message is the finding
                result["idmap"] = str(e)
        try:
            os.write(p2c_w, answer)
        except BrokenPipeError:
            pass
        chunks = []
        while True:
            b = os.read(res_r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(c2p_r)
        os.close(p2c_w)
        os.close(res_r)
        os.waitpid(pid, 0)
        remove_tree(work)
    try:
        result.update(json.loads(b"".join(chunks).decode() or "{}"))
    except ValueError:
        result["unshare"] = "the probe died"
    return result


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return os.environ.get("USER") or str(uid)


def gather(root: str, runroot: str) -> list[Check]:
    """Run every check on this host (``root``/``runroot``: the store pbox would use)."""
    from pbox.rootless import cgroups

    uid = os.getuid()
    as_root = uid == 0
    user = _user_name(uid)
    manager = next((m for m in MANAGERS if shutil.which(m)), None)
    pr = probe(root, as_root=as_root)
    checks: list[Check | None] = [
        check_userns(_read(SYSCTL_MAX_USERNS), pr, root=as_root),
        check_userns_clone(_read(SYSCTL_USERNS_CLONE)),
        check_apparmor(_read(SYSCTL_APPARMOR), pr),
        check_subids(user, uid, _read(idmap.SUBUID_FILE), _read(idmap.SUBGID_FILE),
                     root=as_root),
        check_newidmap([_helper("newuidmap"), _helper("newgidmap")], manager, pr,
                       root=as_root),
        check_overlay(pr, os.uname().release, root=as_root),
        check_fuse(shutil.which("fuse-overlayfs"), _device_problem("/dev/fuse"), pr, manager),
        check_tun(_device_problem("/dev/net/tun")),
        check_network_helpers(shutil.which("pasta"), shutil.which("slirp4netns"), manager),
        check_cgroups(cgroups.version(), cgroups.delegation_problem()),
    ]
    for name, title, path in (("store", "store", root), ("runroot", "run root", runroot)):
        existing, writable, is_dir = _writable(path)
        problem = _store_problem(path) if name == "store" and existing == path else None
        checks.append(check_writable(name, title, path, existing, writable, is_dir, user,
                                     problem))
    existing = _existing_ancestor(root)
    try:
        st = os.statvfs(existing)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    checks.append(check_space(existing, free))
    return [c for c in checks if c is not None]
