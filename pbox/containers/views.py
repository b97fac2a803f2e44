"""What `ps` and `container inspect` show, in docker's shapes."""

from __future__ import annotations

import os
import time

from pbox import humanize
from pbox import jsonio as json
from pbox.containers import ports
from pbox.containers.records import ContainerStore
from pbox.errors import UsageError


def status_text(st: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    status = st.get("Status", "created")
    if status == "running":
        started = humanize.parse_rfc3339(st.get("StartedAt", ""))
        return "Up " + humanize.human_duration(now - started)
    if status == "restarting":
        finished = humanize.parse_rfc3339(st.get("FinishedAt", ""))
        return f"Restarting ({st.get('ExitCode', 0)}) {humanize.since(finished, now)}"
    if status == "exited":
        finished = humanize.parse_rfc3339(st.get("FinishedAt", ""))
        return f"Exited ({st.get('ExitCode', 0)}) {humanize.since(finished, now)}"
    return status.capitalize()


def command_text(cfg: dict, trunc: bool) -> str:
    cmd = " ".join([cfg.get("Path", "")] + list(cfg.get("Args", [])))
    quoted = json.dumps(cmd, ensure_ascii=False)
    if trunc and len(quoted) > 20:
        quoted = quoted[:19] + "…"
    return quoted


def _dir_size(path: str) -> int:
    total = 0
    for dirpath, _dirs, filenames in os.walk(path):
        for n in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                pass
    return total


def ps_rows(cs: ContainerStore, *, all_containers: bool, filters=(), last: int = -1,
            size: bool = False, trunc: bool = True) -> list[dict]:
    from pbox.storage.images import ImageStore

    items = []
    for cid in cs.ids():
        try:
            cfg = cs.config(cid)
        except Exception:
            continue
        items.append((cfg.get("CreatedUnix", 0), cid, cfg, cs.state(cid)))
    items.sort(key=lambda x: -x[0])
    preds = [_filter(f) for f in filters]
    if last >= 0:
        items = items[:last]
    elif not all_containers:
        items = [i for i in items if i[3].get("Status") in ("running", "restarting", "paused")]
    istore = ImageStore(cs.store)
    image_size = {}
    rows = []
    now = time.time()
    for created, cid, cfg, st in items:
        if not all(p(cid, cfg, st) for p in preds):
            continue
        labels = (cfg.get("Config") or {}).get("Labels") or {}
        row = {
            "ID": cid[:12] if trunc else cid,
            "Image": cfg.get("ImageName") or cfg.get("Image", "")[7:19],
            "Command": command_text(cfg, trunc),
            "CreatedAt": humanize.local_time(created),
            "RunningFor": humanize.since(created, now),
            "Ports": ports.ps_text(ports.live_ports(st)),
            "State": st.get("Status", "created"),
            "Status": status_text(st, now),
            "Names": cfg.get("Name", "").lstrip("/"),
            "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "Mounts": ",".join(m.get("Name") or m.get("Source", "")
                               for m in cfg.get("Mounts", [])),
            "Networks": (cfg.get("HostConfig") or {}).get("NetworkMode", ""),
            "LocalVolumes": str(sum(1 for m in cfg.get("Mounts", [])
                                    if m.get("Type") == "volume")),
        }
        if size:
            rw = _dir_size(cs.path(cid, "upper"))
            img = cfg.get("Image", "")
            if img not in image_size:
                try:
                    image_size[img] = istore.get(img).size
                except Exception:
                    image_size[img] = 0
            row["Size"] = (f"{humanize.human_size(rw)} (virtual "
                           f"{humanize.human_size(rw + image_size[img])})")
        rows.append(row)
    return rows


def _filter(text: str):
    key, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"bad format of filter (expected name=value): {text!r}")
    key = key.lower()
    if key == "id":
        return lambda cid, cfg, st: cid.startswith(value)
    if key == "name":
        return lambda cid, cfg, st: value in cfg.get("Name", "").lstrip("/")
    if key == "status":
        if value not in ("created", "restarting", "running", "removing", "paused", "exited",
                         "dead"):
            raise UsageError(f"invalid filter 'status={value}'")
        return lambda cid, cfg, st: st.get("Status") == value
    if key == "exited":
        return lambda cid, cfg, st: (st.get("Status") == "exited" and
                                     str(st.get("ExitCode")) == value)
    if key == "label":
        lk, has_v, lv = value.partition("=")

        def label(cid, cfg, st):
            labels = (cfg.get("Config") or {}).get("Labels") or {}
            return lk in labels and (not has_v or labels[lk] == lv)
        return label
    if key == "ancestor":
        return lambda cid, cfg, st: value in (cfg.get("ImageName"), cfg.get("Image"),
                                              cfg.get("Image", "")[7:19])
    raise UsageError(f"invalid filter {key!r}")


def inspect_container(cs: ContainerStore, cid: str, size: bool = False) -> dict:
    cfg = cs.config(cid)
    st = cs.state(cid)
    hostcfg = dict(cfg.get("HostConfig") or {})
    out = {
        "Id": cid,
        "Created": cfg.get("Created"),
        "Path": cfg.get("Path"),
        "Args": cfg.get("Args", []),
        "State": {
            "Status": st.get("Status", "created"),
            "Running": st.get("Status") == "running",
            "Paused": False,
            "Restarting": st.get("Status") == "restarting",
            "OOMKilled": False,
            "Dead": False,
            "Pid": st.get("Pid", 0) if st.get("Status") == "running" else 0,
            "ExitCode": st.get("ExitCode", 0),
            "Error": st.get("Error", ""),
            "StartedAt": st.get("StartedAt", "0001-01-01T00:00:00Z"),
            "FinishedAt": st.get("FinishedAt", "0001-01-01T00:00:00Z"),
        },
        "Image": cfg.get("Image"),
        "ResolvConfPath": cs.path(cid, "resolv.conf"),
        "HostnamePath": cs.path(cid, "hostname"),
        "HostsPath": cs.path(cid, "hosts"),
        "LogPath": cs.path(cid, "ctr.log"),
        "Name": cfg.get("Name"),
        "RestartCount": st.get("RestartCount", 0),
        "Driver": st.get("Driver") or cfg.get("Driver", "overlay"),
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": hostcfg,
        "GraphDriver": {
            "Data": {
                "LowerDir": ":".join(cs.store.layer_diff(c) for c in
                                     reversed(cfg.get("Layers", []))),
                "UpperDir": cs.path(cid, "upper"),
                "WorkDir": cs.path(cid, "work"),
                "MergedDir": cs.path(cid, "merged"),
            },
            "Name": "overlay",
        },
        "Mounts": cfg.get("Mounts", []),
        "Config": cfg.get("Config", {}),
        "NetworkSettings": ports.network_settings(cfg, st),
    }
    if size:
        out["SizeRw"] = _dir_size(cs.path(cid, "upper"))
    return out
