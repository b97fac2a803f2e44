"""Image commands: pull, images, history, tag, rmi, image prune, and the `image` group."""

from __future__ import annotations

import click

from pbox.commands._util import emit_rows, notice_once


def tls_options(f):
    f = click.option("--tls-verify/--no-tls-verify", "tls_verify", default=None,
                     help="Verify the registry's TLS certificate (default: true; plain HTTP "
                          "is used for localhost registries).")(f)
    f = click.option("--cert-dir", metavar="DIR",
                     help="Directory with CA certificates (*.crt) and client certs.")(f)
    f = click.option("--creds", metavar="USER:PASSWORD",
                     help="Credentials for the registry.")(f)
    return f


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]",
              help="Pull the image for this platform (default: this machine's).")
@click.option("-a", "--all-tags", is_flag=True, hidden=True)
@tls_options
@click.pass_obj
def pull(config, image, quiet, platform, all_tags, tls_verify, cert_dir, creds):
    """Download IMAGE from a registry (docker.io unless the name says another)."""
    from pbox.commands import pulling

    if all_tags:
        raise click.UsageError("--all-tags is not supported")
    pulling.pull(config, image=image, quiet=quiet, platform=platform, all_tags=all_tags,
                 tls_verify=tls_verify, cert_dir=cert_dir, creds=creds,
                 notice=notice_once(config), echo=click.echo)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("repository", required=False)
@click.option("-a", "--all", "all_images", is_flag=True, help="Show all images.")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--digests", is_flag=True, help="Show digests.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Filter: dangling=true|false, reference=PATTERN, label=K[=V], "
                   "before=IMAGE, since=IMAGE.")
@click.option("--format", "fmt", metavar="TEMPLATE",
              help="Go template, 'table TEMPLATE', or 'json'.")
@click.pass_obj
def images(config, repository, all_images, quiet, digests, no_trunc, filters, fmt):
    """List images."""
    from pbox.commands import listing

    listing.write(listing.images_text(config, repository, all_images=all_images, quiet=quiet,
                                      digests=digests, no_trunc=no_trunc, filters=filters,
                                      fmt=fmt))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image")
@click.option("-H", "--human/--no-human", default=True, help="Print sizes and dates in human "
              "readable format.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--format", "fmt", metavar="TEMPLATE", help="Go template, or 'json'.")
@click.pass_obj
def history(config, image, human, no_trunc, quiet, fmt):
    """Show the history of an image."""
    from pbox import humanize, imageinfo, images
    from pbox.storage.images import ImageStore

    istore = ImageStore(images.open_store(config, create=False))
    res = images.resolve(istore, image)
    rows = imageinfo.history_rows(istore, res.record)
    for r in rows:
        if r["ID"] != "<missing>" and not no_trunc:
            r["ID"] = r["ID"].partition(":")[2][:12]
        if human:
            r["CreatedSince"] = humanize.since(r["Created"]) if r["Created"] else "N/A"
            r["Size"] = humanize.human_size(r["Size"])
        else:
            r["CreatedSince"] = r["CreatedAt"]
        cb = r["CreatedBy"]
        if not no_trunc and len(cb) > 45:
            cb = cb[:44] + "…"
        r["CreatedBy"] = cb
    headers = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
               "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}
    emit_rows(rows, fmt, "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t"
              "{{.Comment}}", headers, quiet_field="ID", quiet=quiet)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source")
@click.argument("target")
@click.pass_obj
def tag(config, source, target):
    """Create a tag TARGET that refers to SOURCE."""
    from pbox import images

    images.tag(config, source, target)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image_names", metavar="IMAGE...", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Force removal of the image.")
@click.option("--no-prune", is_flag=True, hidden=True)
@click.pass_obj
def rmi(config, image_names, force, no_prune):
    """Remove one or more images."""
    from pbox import images
    from pbox.errors import PboxError

    try:
        result = images.remove_images(config, list(image_names), force=force)
    except PboxError as e:
        result = getattr(e, "partial", None)
        if result is not None:
            _print_removed(result)
        raise
    _print_removed(result)


def _print_removed(result) -> None:
    for n in result.untagged:
        click.echo(f"Untagged: {n}")
    for i in result.deleted:
        click.echo(f"Deleted: {i}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-a", "--all", "all_images", is_flag=True,
              help="Remove all images not used by a container, not just dangling ones.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True, hidden=True)
@click.pass_obj
def prune(config, all_images, force, filters):
    """Remove unused images."""
    if filters:
        # docker's filters (until, label) are not kept: accepting one and ignoring it
        # would remove more than the user asked for
        from pbox.errors import UsageError

        raise UsageError(f"--filter is not supported by image prune: {filters[0]!r}")
    from pbox import images

    if not force:
        what = "all images without at least one container associated to them" if all_images \
            else "all dangling images"
        if not click.confirm(f"WARNING! This will remove {what}.\nAre you sure you want to "
                             f"continue?", default=False):
            return
    result = images.prune_images(config, all_images=all_images)
    if result.deleted or result.untagged:
        click.echo("Deleted Images:")
        for n in result.untagged:
            click.echo(f"untagged: {n}")
        for i in result.deleted:
            click.echo(f"deleted: {i}")
    from pbox.humanize import human_size

    click.echo(f"Total reclaimed space: {human_size(result.reclaimed)}")


@click.command("inspect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image_names", metavar="IMAGE...", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", metavar="TEMPLATE", help="Go template, or 'json'.")
@click.pass_obj
def image_inspect(config, image_names, fmt):
    """Display detailed information on one or more images."""
    from pbox.commands.inspect import run_inspect

    run_inspect(config, image_names, fmt, kinds=("image",))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def image():
    """Manage images."""


for _name, _cmd in [("pull", pull), ("ls", images), ("list", images), ("history", history),
                    ("tag", tag), ("rm", rmi), ("remove", rmi), ("prune", prune),
                    ("inspect", image_inspect)]:
    image.add_command(_cmd, _name)


class _Lazy(click.Command):
    """`image save|load|import|push`: commands of other modules, imported when run."""

    def __init__(self, name, module, attr, help_):
        super().__init__(name, help=help_, context_settings={"ignore_unknown_options": True,
                                                              "help_option_names": []},
                         add_help_option=False)
        self.module, self.attr = module, attr
        self.params = [click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)]

    def invoke(self, ctx):
        import importlib

        cmd = getattr(importlib.import_module(self.module), self.attr)
        return cmd.main(list(ctx.params["args"]), prog_name=ctx.command_path,
                        standalone_mode=False, obj=ctx.obj)


_ARCHIVE = "pbox.commands.archive"
for _name, _module, _attr, _help in [
        ("save", _ARCHIVE, "save", "Save images to a tar archive"),
        ("load", _ARCHIVE, "load", "Load images from a tar archive"),
        ("import", _ARCHIVE, "import_command", "Import a rootfs tar as an image"),
        ("push", "pbox.commands.distribution", "push", "Upload an image to a registry")]:
    image.add_command(_Lazy(_name, _module, _attr, _help))
