"""Whether resource limits can be had: they need a cgroup v2 subtree delegated to the
user (systemd's user slice with the controllers enabled).  pbox needs no cgroup for
anything else."""

from __future__ import annotations

import os

CGROUP_ROOT = "/sys/fs/cgroup"


def version() -> str:
    """'v2' (unified), 'hybrid' or 'v1'."""
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        return "v2"
    if os.path.exists(os.path.join(CGROUP_ROOT, "unified", "cgroup.controllers")):
        return "hybrid"
    return "v1"


def own_cgroup() -> str | None:
    """The cgroup v2 directory of this process, or None."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    rel = line[3:].strip()
                    return os.path.join(CGROUP_ROOT, rel.lstrip("/"))
    except OSError:
        pass
    return None


def delegation_problem(controllers=("memory", "cpu", "pids")) -> str | None:
    """None when limits can be set; otherwise what is missing, with the fix."""
    v = version()
    if v != "v2":
        return (
            f"this host uses cgroup {v} (not the unified v2 hierarchy); boot with "
            f"systemd.unified_cgroup_hierarchy=1 to use limits"
        )
    path = own_cgroup()
    if not path or not os.access(path, os.W_OK):
        return (
            "no cgroup is delegated to your user; run pbox from a systemd user session "
            "(systemd-run --user --scope -p Delegate=yes pbox ...)"
        )
    try:
        with open(os.path.join(path, "cgroup.controllers")) as f:
            have = set(f.read().split())
    except OSError:
        have = set()
    missing = [c for c in controllers if c not in have]
    if missing:
        return (
            f"the controllers {', '.join(missing)} are not delegated to your user; see "
            f"systemd's Delegate= setting"
        )
    return None
