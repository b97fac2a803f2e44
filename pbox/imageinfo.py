"""What `images`, `image inspect` and `history` show: docker's shapes, from the store."""

from __future__ import annotations

import fnmatch

from pbox import humanize
from pbox.errors import InvalidReference, UsageError
from pbox.oci import reference as refs
from pbox.storage.images import ImageRecord, ImageStore


def familiar_names(names: list[str]) -> list[str]:
    """Names as docker shows them (``busybox:latest``, not ``docker.io/library/...``)."""
    out = []
    for n in names:
        try:
            out.append(refs.parse(n, default_tag=None).familiar())
        except InvalidReference:
            out.append(n)
    return out


# The keys of docker's container Config, in docker's order, with their zero values.
_CONFIG_KEYS = [
    ("Hostname", ""), ("Domainname", ""), ("User", ""), ("AttachStdin", False),
    ("AttachStdout", False), ("AttachStderr", False), ("ExposedPorts", None),
    ("Tty", False), ("OpenStdin", False), ("StdinOnce", False), ("Env", None),
    ("Cmd", None), ("Healthcheck", None), ("ArgsEscaped", None), ("Image", ""),
    ("Volumes", None), ("WorkingDir", ""), ("Entrypoint", None), ("OnBuild", None),
    ("Labels", None), ("StopSignal", None), ("Shell", None),
]
_OMIT_WHEN_EMPTY = {"ExposedPorts", "Healthcheck", "ArgsEscaped", "StopSignal", "Shell"}


def docker_config(cfg: dict | None) -> dict:
    """An image's ``config`` object in the shape docker's inspect prints it."""
    cfg = cfg or {}
    out = {}
    for key, zero in _CONFIG_KEYS:
        value = cfg.get(key, zero)
        if key in _OMIT_WHEN_EMPTY and value in (None, "", {}, []):
            continue
        out[key] = value
    for key, value in cfg.items():
        if key not in out and key not in dict(_CONFIG_KEYS):
            out[key] = value
    return out


def image_summary(istore: ImageStore, rec: ImageRecord, repos: dict) -> dict:
    tags, digests = istore.names_of(rec.id, repos)
    return {"record": rec, "tags": tags, "digests": digests}


def list_images(istore: ImageStore, *, all_images: bool = False, filters=(),
                name: str | None = None) -> list[dict]:
    """Rows for `images`: one per tag (or one `<none>` row), newest first."""
    repos = istore.repositories()
    preds = [_image_filter(istore, f) for f in filters]
    rows = []
    wanted = None
    if name:
        wanted = refs.parse(name, default_tag=None)
    for rec in istore.list():
        tags, digests = istore.names_of(rec.id, repos)
        if not all(p(rec, tags) for p in preds):
            continue
        created = humanize.parse_rfc3339(rec.created) or rec.added
        base = {"ID": rec.id, "Created": created, "Size": rec.size, "record": rec}
        digest = digests[0].rpartition("@")[2] if digests else ""
        if not tags:
            if wanted is not None:
                continue
            if digests:
                for d in digests:
                    r = refs.parse(d, default_tag=None)
                    rows.append({**base, "Repository": r.familiar_name(), "Tag": "<none>",
                                 "Digest": r.digest})
            else:
                rows.append({**base, "Repository": "<none>", "Tag": "<none>", "Digest": digest})
            continue
        for t in tags:
            r = refs.parse(t, default_tag=None)
            if wanted is not None and (r.name != wanted.name or
                                       (wanted.tag and wanted.tag != r.tag)):
                continue
            d = next((x.rpartition("@")[2] for x in digests
                      if x.startswith(r.name + "@")), "")
            rows.append({**base, "Repository": r.familiar_name(), "Tag": r.tag or "<none>",
                         "Digest": d or "<none>"})
    rows.sort(key=lambda r: (-r["Created"], r["Repository"], r["Tag"]))
    return rows


def _image_filter(istore: ImageStore, text: str):
    key, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"bad format of filter (expected name=value): {text!r}")
    key = key.strip().lower()
    if key == "dangling":
        want = value.lower() in ("true", "1")
        if value.lower() not in ("true", "false", "1", "0"):
            raise UsageError(f"invalid filter 'dangling={value}'")
        return lambda rec, tags: (not tags) == want
    if key == "reference":
        def ref_match(rec, tags):
            for t in familiar_names(tags):
                repo, _, tag = t.rpartition(":")
                if fnmatch.fnmatchcase(t, value) or fnmatch.fnmatchcase(repo, value):
                    return True
            return False
        return ref_match
    if key == "label":
        lk, has_v, lv = value.partition("=")

        def label_match(rec, tags):
            labels = (istore.config(rec).get("config") or {}).get("Labels") or {}
            return lk in labels and (not has_v or labels[lk] == lv)
        return label_match
    if key in ("before", "since"):
        from pbox.images import resolve

        pivot = resolve(istore, value).record
        pt = humanize.parse_rfc3339(pivot.created) or pivot.added
        if key == "before":
            return lambda rec, tags: (humanize.parse_rfc3339(rec.created) or rec.added) < pt
        return lambda rec, tags: (humanize.parse_rfc3339(rec.created) or rec.added) > pt
    raise UsageError(f"invalid filter {key!r}")


def inspect_image(istore: ImageStore, rec: ImageRecord) -> dict:
    """docker's `image inspect` object."""
    config = istore.config(rec)
    tags, digests = istore.names_of(rec.id)
    store = istore.store
    layers_dirs = [store.layer_diff(c) for c in rec.layers]
    return {
        "Id": rec.id,
        "RepoTags": familiar_names(tags),
        "RepoDigests": familiar_names(digests),
        "Parent": "",
        "Comment": _comment(config),
        "Created": config.get("created", ""),
        "DockerVersion": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Config": docker_config(config.get("config")),
        "Architecture": config.get("architecture", ""),
        **({"Variant": config["variant"]} if config.get("variant") else {}),
        "Os": config.get("os", ""),
        "Size": rec.size,
        "VirtualSize": rec.size,
        "GraphDriver": {
            "Data": {
                "LowerDir": ":".join(reversed(layers_dirs[:-1])) if len(layers_dirs) > 1 else "",
                "UpperDir": layers_dirs[-1] if layers_dirs else "",
            },
            "Name": "overlay",
        },
        "RootFS": {"Type": "layers", "Layers": list(rec.diff_ids)},
        "Metadata": {"LastTagTime": humanize.rfc3339(rec.added) if rec.added else ""},
    }


def _comment(config: dict) -> str:
    hist = config.get("history") or []
    return (hist[-1].get("comment", "") if hist else "") or ""


def history_rows(istore: ImageStore, rec: ImageRecord) -> list[dict]:
    """`history` rows, newest first, as docker prints them."""
    config = istore.config(rec)
    hist = config.get("history") or []
    sizes = [istore.store.layer_info(c).get("size", 0) for c in rec.layers]
    rows = []
    li = 0
    for h in hist:
        empty = bool(h.get("empty_layer"))
        size = 0
        if not empty and li < len(sizes):
            size = sizes[li]
            li += 1
        rows.append({
            "ID": "<missing>",
            "CreatedAt": h.get("created", ""),
            "Created": humanize.parse_rfc3339(h.get("created", "")),
            "CreatedBy": h.get("created_by", ""),
            "Size": size,
            "Comment": h.get("comment", ""),
        })
    if not hist:  # images without history: one row per layer
        for s in sizes:
            rows.append({"ID": "<missing>", "CreatedAt": rec.created,
                         "Created": humanize.parse_rfc3339(rec.created), "CreatedBy": "",
                         "Size": s, "Comment": ""})
    rows.reverse()
    if rows:
        rows[0]["ID"] = rec.id
    return rows
