"""Container file commands: cp, diff, commit, export (also under `container`)."""

from __future__ import annotations

import functools
import os
import sys

import click

from pbox.commands._util import notice_once
from pbox.commands.pulling import is_tty

CTX = {"help_option_names": ["-h", "--help"]}


def _docker_status(fn):
    """These commands fail with status 1 in docker (125 is for run/create/exec)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from pbox.errors import EXIT_PBOX, PboxError

        try:
            return fn(*args, **kwargs)
        except PboxError as e:
            if e.exit_code == EXIT_PBOX:
                e.exit_code = 1
            raise

    return wrapper


@click.command("cp", context_settings=CTX)
@click.option("-a", "--archive", is_flag=True,
              help="Archive mode: keep the uid/gid of the copied files (by default files "
                   "copied into a container belong to its root).")
@click.option("-L", "--follow-link", is_flag=True,
              help="Always follow a symbolic link in SRC_PATH.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the summary line.")
@click.argument("src", metavar="SRC_PATH|CONTAINER:SRC_PATH|-")
@click.argument("dest", metavar="DEST_PATH|CONTAINER:DEST_PATH|-")
@click.pass_obj
@_docker_status
def cp(config, archive, follow_link, quiet, src, dest):
    """Copy files/folders between a container and the local filesystem.

    The container may be running or stopped.  Container paths are relative to its
    root and symlinks in them are resolved inside it.  "DIR/." copies a directory's
    contents; "-" reads a tar from stdin (to a directory) or writes one to stdout.
    """
    from pbox.containers.cp import copy
    from pbox.humanize import human_size

    copied = copy(config, src, dest, archive=archive, follow=follow_link,
                  notice=notice_once(config))
    if not quiet and dest != "-" and is_tty(sys.stderr):
        click.echo(f"Successfully copied {human_size(copied)} to {dest}", err=True)


@click.command("diff", context_settings=CTX)
@click.argument("container")
@click.pass_obj
@_docker_status
def diff(config, container):
    """Inspect changes to files or directories on a container's filesystem.

    A: added, C: changed, D: deleted.
    """
    from pbox.containers import fsops

    out = sys.stdout.buffer
    for kind, path in fsops.changes(config, container, notice=notice_once(config)):
        out.write(f"{kind} ".encode() + os.fsencode(path) + b"\n")
    out.flush()


@click.command("commit", context_settings=CTX)
@click.option("-a", "--author", default="", help='Author (e.g. "Jane Doe <jane@example.com>").')
@click.option("-c", "--change", multiple=True, metavar="INSTRUCTION",
              help="Apply a Dockerfile instruction to the image: CMD, ENTRYPOINT, ENV, "
                   "EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR.")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("--pause", type=click.BOOL, default=True, metavar="BOOL",
              help="Accepted for docker compatibility (also as -p): pbox does not pause a "
                   "running container, so a file it writes during the commit may be "
                   "caught half-written.")
@click.option("-p", "pause_flag", is_flag=True, hidden=True)
@click.argument("container")
@click.argument("repository", metavar="[REPOSITORY[:TAG]]", required=False)
@click.pass_obj
@_docker_status
def commit(config, author, change, message, pause, pause_flag, container, repository):
    """Create a new image from a container's changes."""
    from pbox.containers import fsops

    image_id = fsops.commit(config, container, repository, author=author, message=message,
                            change=list(change), notice=notice_once(config))
    click.echo(image_id)


@click.command("export", context_settings=CTX)
@click.option("-o", "--output", metavar="FILE", help="Write to a file instead of stdout.")
@click.argument("container")
@click.pass_obj
@_docker_status
def export(config, output, container):
    """Export a container's filesystem as a tar archive."""
    from pbox.containers import fsops
    from pbox.errors import UsageError

    notice = notice_once(config)
    if not output:
        if is_tty(sys.stdout):
            raise UsageError("cowardly refusing to save to a terminal. Use the -o flag or "
                             "redirect")
        fsops.export(config, container, sys.stdout.buffer, notice=notice)
        return
    try:
        with open(output, "wb") as f:
            fsops.export(config, container, f, notice=notice)
    except BaseException:
        try:
            os.unlink(output)
        except OSError:
            pass
        raise
