"""Archive commands: save, load, import (also under `image`)."""

from __future__ import annotations

import sys

import click

from pbox.commands._util import notice_once
from pbox.commands.pulling import is_tty

CTX = {"help_option_names": ["-h", "--help"]}


@click.command("save", context_settings=CTX)
@click.option("-o", "--output", metavar="FILE",
              help="Write to FILE (a directory for oci-dir) instead of stdout.")
@click.option("--format", "fmt", default="docker-archive", show_default=True,
              type=click.Choice(["docker-archive", "oci-archive", "oci-dir"]),
              help="Archive layout.")
@click.argument("images", nargs=-1, required=True)
@click.pass_obj
def save(config, output, fmt, images):
    """Save one or more images to a tar archive (layers shared by them written once)."""
    from pbox import archive
    from pbox.errors import UsageError

    if fmt == "oci-dir":
        if not output:
            raise UsageError("--format oci-dir needs -o DIRECTORY")
        archive.save(config, list(images), None, fmt, directory=output,
                     notice=notice_once(config))
        return
    if output:
        import os

        tmp = f"{output}.{os.getpid()}.partial"
        if os.path.isdir(output):
            raise UsageError(f"{output} is a directory (use --format oci-dir to write an "
                             f"OCI layout there)")
        try:
            f = open(tmp, "wb")  # noqa: SIM115 (closed by the with below)
        except OSError as e:
            # name the user's file, not our temp file next to it
            raise UsageError(f"cannot write {output}: {e.strerror}")
        try:
            with f:
                archive.save(config, list(images), f, fmt, notice=notice_once(config))
            os.replace(tmp, output)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    if is_tty(sys.stdout):
        raise UsageError("cowardly refusing to write an archive to a terminal; use -o FILE "
                         "or redirect stdout")
    out = sys.stdout.buffer
    archive.save(config, list(images), out, fmt, notice=notice_once(config))
    out.flush()


@click.command("load", context_settings=CTX)
@click.option("-i", "--input", "input_", metavar="FILE",
              help="Read from FILE (or an oci-dir directory) instead of stdin.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the loaded images.")
@click.pass_obj
def load(config, input_, quiet):
    """Load images from an archive: docker-archive, oci-archive or an OCI layout
    directory, optionally gzip or zstd compressed."""
    from pbox import archive
    from pbox.errors import UsageError

    if input_ is None and is_tty(sys.stdin):
        raise UsageError("requested load from stdin, but stdin is empty")
    loaded = archive.load(config, None if input_ else sys.stdin.buffer, path=input_,
                          notice=notice_once(config))
    if quiet:
        return
    for img in loaded:
        if img.names:
            for n in img.names:
                click.echo(f"Loaded image: {n}")
        else:
            click.echo(f"Loaded image ID: {img.image_id}")


@click.command("import", context_settings=CTX)
@click.option("-c", "--change", multiple=True, metavar="INSTRUCTION",
              help="Apply a Dockerfile instruction to the image: CMD, ENTRYPOINT, ENV, "
                   "EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL.")
@click.option("-m", "--message", default="", help="Commit message of the image.")
@click.argument("source", metavar="FILE|URL|-")
@click.argument("repository", required=False, metavar="[REPOSITORY[:TAG]]")
@click.pass_obj
def import_command(config, change, message, source, repository):
    """Create an image from a root filesystem tar (optionally compressed)."""
    from pbox import archive

    image_id = archive.import_image(config, source, repository, changes=change,
                                    message=message, stdin=sys.stdin.buffer,
                                    notice=notice_once(config))
    click.echo(image_id)
