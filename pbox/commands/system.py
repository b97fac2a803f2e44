"""`version`, `info`, and the `system` group (df, prune)."""

from __future__ import annotations

import os
import platform
import sys

import click

from pbox import __version__


def _version_data() -> dict:
    from pbox.oci import platform as plat

    host = plat.host()
    return {
        "Client": {
            "Version": __version__,
            "ApiVersion": "1.41",
            "GoVersion": "python" + platform.python_version(),
            "Os": host.os,
            "Arch": host.architecture,
            "BuildTime": "",
            "Experimental": False,
        }
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--format", "fmt", metavar="TEMPLATE", help="Go template, or 'json'.")
def version(fmt):
    """Show the pbox version information."""
    data = _version_data()
    if fmt:
        from pbox.commands._util import emit_json

        emit_json([data], fmt)
        return
    c = data["Client"]
    click.echo("Client:\n"
               f" Version:      {c['Version']}\n"
               f" API version:  {c['ApiVersion']}\n"
               f" Python:       {platform.python_version()}\n"
               f" OS/Arch:      {c['Os']}/{c['Arch']}")


def _info_data(config) -> dict:
    from pbox import images
    from pbox.rootless import idmap, userns
    from pbox.storage.images import ImageStore

    store = images.open_store(config, create=False)
    istore = ImageStore(store)
    n_images = len(istore.list()) if store.exists else 0
    try:
        n_containers = len(os.listdir(store.containers_dir))
    except FileNotFoundError:
        n_containers = 0
    from pbox.oci import compression

    mapping = userns.current_mapping()
    uname = os.uname()
    return {
        "ID": "",
        "Containers": n_containers,
        "Images": n_images,
        "Driver": config.storage_driver or "overlay",
        "DockerRootDir": config.root,
        "RunRoot": config.runroot,
        "ServerVersion": __version__,
        "KernelVersion": uname.release,
        "OperatingSystem": _os_name(),
        "OSType": "linux",
        "Architecture": uname.machine,
        "NCPU": os.cpu_count(),
        "MemTotal": _mem_total(),
        "Name": uname.nodename,
        "Rootless": os.getuid() != 0,
        "IdMapping": mapping.mode if mapping.mode != idmap.MODE_HOST else "host",
        "CgroupDriver": "none",
        "Python": sys.version.split()[0],
        "GzipInflater": compression.inflater_name(),  # isal, or zlib without it
    }


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--format", "fmt", metavar="TEMPLATE", help="Go template, or 'json'.")
@click.pass_obj
def info(config, fmt):
    """Display system-wide information."""
    data = _info_data(config)
    if fmt:
        from pbox.commands._util import emit_json

        emit_json([data], fmt)
        return
    from pbox.humanize import bytes_size

    lines = [
        "Client:", f" Version:    {__version__}", "",
        "Server:",
        f" Containers: {data['Containers']}",
        f" Images: {data['Images']}",
        f" Storage Driver: {data['Driver']}",
        f" Root Dir: {data['DockerRootDir']}",
        f" Run Root: {data['RunRoot']}",
        f" Rootless: {str(data['Rootless']).lower()}",
        f" ID Mapping: {data['IdMapping']}",
        f" Cgroup Driver: {data['CgroupDriver']}",
        f" Kernel Version: {data['KernelVersion']}",
        f" Operating System: {data['OperatingSystem']}",
        f" OSType: {data['OSType']}",
        f" Architecture: {data['Architecture']}",
        f" CPUs: {data['NCPU']}",
        f" Total Memory: {bytes_size(data['MemTotal'])}",
        f" Name: {data['Name']}",
        f" Gzip Inflater: {data['GzipInflater']}",
    ]
    click.echo("\n".join(lines))


def _df_rows(config) -> list[dict]:
    from pbox import images
    from pbox.humanize import human_size
    from pbox.storage.images import ImageStore

    store = images.open_store(config, create=False)
    istore = ImageStore(store)
    recs = istore.list() if store.exists else []
    used = images.users_of_images(store)
    active = [r for r in recs if r.id in used]
    layer_sizes = {}
    for c in store.list_layers():
        try:
            layer_sizes[c] = store.layer_info(c).get("size", 0)
        except Exception:
            layer_sizes[c] = 0
    total = sum(layer_sizes.values())
    in_use = set()
    for r in active:
        in_use.update(r.layers)
    reclaimable = total - sum(layer_sizes.get(c, 0) for c in in_use)
    pct = f" ({100 * reclaimable // total}%)" if total else ""
    n_containers = sum(len(v) for v in used.values())
    return [
        {"Type": "Images", "TotalCount": len(recs), "Active": len(active),
         "Size": human_size(total), "Reclaimable": human_size(reclaimable) + pct},
        {"Type": "Containers", "TotalCount": n_containers, "Active": 0,
         "Size": human_size(0), "Reclaimable": human_size(0)},
        _volumes_row(store),
    ]


def _volumes_row(store) -> dict:
    from pbox.containers import volumes
    from pbox.humanize import human_size

    names = volumes.names(store)
    used = volumes.users(store)
    sizes = {n: volumes.tree_size(volumes.get(store, n).data_dir) for n in names}
    free = sum(s for n, s in sizes.items() if n not in used)
    return {"Type": "Local Volumes", "TotalCount": len(names),
            "Active": sum(1 for n in names if n in used),
            "Size": human_size(sum(sizes.values())), "Reclaimable": human_size(free)}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--format", "fmt", metavar="TEMPLATE", help="Go template, or 'json'.")
@click.option("-v", "--verbose", is_flag=True, hidden=True)
@click.pass_obj
def df(config, fmt, verbose):
    """Show disk usage."""
    from pbox.commands._util import emit_rows

    headers = {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
               "Reclaimable": "RECLAIMABLE"}
    emit_rows(_df_rows(config), fmt, "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t"
              "{{.Size}}\t{{.Reclaimable}}", headers)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def system():
    """Manage pbox."""


system.add_command(df, "df")
system.add_command(info, "info")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.pass_obj
def reset(config, force):
    """Remove all images, containers, volumes and state of this store."""
    from pbox import images

    if not force and not click.confirm(
            f"WARNING! This will remove everything in {config.root}.\nAre you sure you want "
            f"to continue?", default=False):
        return
    images.reset_store(config)


system.add_command(reset, "reset")
