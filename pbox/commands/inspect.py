"""`inspect`: images now; containers, volumes and networks join as they exist."""

from __future__ import annotations

import click

from pbox.commands._util import emit_json
from pbox.errors import NotFound, PboxError


def _inspect_image(config, name):
    from pbox import imageinfo, images
    from pbox.storage.images import ImageStore

    istore = ImageStore(images.open_store(config, create=False))
    res = images.resolve(istore, name)
    return imageinfo.inspect_image(istore, res.record)


def _inspect_container(config, name):
    from pbox.containers.records import ContainerStore
    from pbox.containers.views import inspect_container
    from pbox.storage.store import Store

    cs = ContainerStore(Store(config.root, config.runroot))
    cid = cs.find(name)
    from pbox.networks import container_warnings

    for warning in container_warnings(cs.store, cid):
        click.echo(f"WARNING: {warning}", err=True)
    return inspect_container(cs, cid)


def _inspect_volume(config, name):
    from pbox.containers import volumes
    from pbox.storage.store import Store

    return volumes.inspect(Store(config.root, config.runroot), name)


def _inspect_network(config, name):
    from pbox import networks
    from pbox.storage.store import Store

    return networks.inspect(Store(config.root, config.runroot), name)


# docker looks for a container first, then an image, then a volume, then a network
FINDERS = {"container": _inspect_container, "image": _inspect_image, "volume": _inspect_volume,
           "network": _inspect_network}


def run_inspect(config, names, fmt, kinds=("image",)):
    objs = []
    missing = []
    for name in names:
        for kind in kinds:
            try:
                objs.append(FINDERS[kind](config, name))
                break
            except NotFound:
                continue
        else:
            missing.append(name)
    if objs or not fmt:
        emit_json(objs, fmt)  # docker prints `[]` even when nothing was found
    if missing:
        # docker's exit code for inspect of an unknown name is 1, not 125
        what = "object" if len(kinds) > 1 else kinds[0]
        raise NotFound("\nError: ".join(f"No such {what}: {m}" for m in missing), exit_code=1)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("names", metavar="NAME|ID...", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", metavar="TEMPLATE", help="Go template, or 'json'.")
@click.option("--type", "kind", type=click.Choice(["image", "container", "volume", "network"]),
              help="Only look for this kind of object.")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes (containers).")
@click.pass_obj
def inspect(config, names, fmt, kind, size):
    """Return low-level information on images, containers, volumes or networks."""
    kinds = (kind,) if kind else tuple(FINDERS)
    for k in kinds:
        if k not in FINDERS:
            raise PboxError(f"inspecting a {k} is not supported yet")
    run_inspect(config, names, fmt, kinds)
