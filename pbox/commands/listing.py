"""What `images` and `ps` print, without click.

The click commands (``pbox.commands.images``, ``pbox.commands.containers``) and the
short path of ``pbox.commands.fast`` both call these, so the two paths print the same
bytes by construction; the short path only saves importing click to parse the options.
``echo`` is the click-free ``click.echo`` of every short-path command.
"""

from __future__ import annotations

import sys

IMAGE_HEADERS = {
    "Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT", "Size": "SIZE", "Digest": "DIGEST",
}

PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
              "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS",
              "State": "STATE", "Status": "STATUS", "Names": "NAMES", "Size": "SIZE",
              "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS"}


def echo(line: str) -> None:
    """A line to stdout, flushed (what click.echo does), for the short path's commands."""
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


def write(text: str) -> None:
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()


def images_text(config, repository: str | None = None, *, all_images: bool = False,
                quiet: bool = False, digests: bool = False, no_trunc: bool = False,
                filters=(), fmt: str | None = None) -> str:
    """`images`' output."""
    from pbox import humanize, imageinfo
    from pbox.storage.images import ImageStore
    from pbox.storage.store import Store

    store = Store.open(config.root, config.runroot, create=False)
    rows = imageinfo.list_images(ImageStore(store), all_images=all_images, filters=filters,
                                 name=repository)
    for r in rows:
        r["CreatedSince"] = humanize.since(r["Created"])
        r["CreatedAt"] = humanize.local_time(r["Created"])
        r["Size"] = humanize.human_size(r["Size"])
        r.pop("record", None)
        r.pop("Created", None)
        if not no_trunc:
            r["ID"] = r["ID"].partition(":")[2][:12]
    if quiet:
        seen: dict = {}
        for r in rows:
            seen.setdefault(r["ID"], None)
        return "".join(i + "\n" for i in seen)
    cols = "{{.Repository}}\t{{.Tag}}\t"
    if digests:
        cols += "{{.Digest}}\t"
    cols += "{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    return _format(rows, fmt, "table " + cols, IMAGE_HEADERS, "*formatter.ImageContext")


def ps_text(config, *, all_containers: bool = False, quiet: bool = False,
            latest: bool = False, last: int = -1, size: bool = False, no_trunc: bool = False,
            filters=(), fmt: str | None = None) -> str:
    """`ps`' output."""
    from pbox.containers.records import ContainerStore
    from pbox.containers.views import ps_rows
    from pbox.storage.store import Store

    store = Store(config.root, config.runroot)
    if latest:
        last = 1
    rows = ps_rows(ContainerStore(store), all_containers=all_containers, filters=filters,
                   last=last, size=size, trunc=not no_trunc)
    if quiet:
        return "".join(r["ID"] + "\n" for r in rows)
    cols = "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t" \
           "{{.Names}}"
    if size:
        cols += "\t{{.Size}}"
    return _format(rows, fmt, "table " + cols, PS_HEADERS, "*formatter.ContainerContext")


def _format(rows: list, fmt: str | None, default: str, headers: dict, row_type: str) -> str:
    from pbox.gotemplate import format_rows

    text = format_rows(fmt or default, rows, headers, row_type=row_type)
    return text if not text or text.endswith("\n") else text + "\n"
