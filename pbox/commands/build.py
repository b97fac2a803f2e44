"""`build` and `builder prune`: flag glue over :mod:`pbox.build.executor` and
:mod:`pbox.build.cache`."""

from __future__ import annotations

import click

from pbox.commands._util import notice_once

CTX = {"help_option_names": ["-h", "--help"]}


@click.command(context_settings=CTX)
@click.argument("path")
@click.option("-t", "--tag", "tags", multiple=True, metavar="NAME[:TAG]",
              help="Name the image (repeatable).")
@click.option("-f", "--file", "dockerfile", metavar="PATH",
              help="The Dockerfile (default: PATH/Dockerfile; '-' reads it from stdin).")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE",
              help="Set a build-time variable (repeatable).")
@click.option("--target", default="", metavar="STAGE", help="Build up to this stage.")
@click.option("--no-cache", is_flag=True, help="Do not use the build cache.")
@click.option("--pull", is_flag=True, help="Always pull the base images.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image id.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Set a label on the image (repeatable).")
@click.option("--network", default="", metavar="MODE",
              help="Network of the RUN steps: none, host or pasta (default: the default "
                   "network).")
@click.option("--secret", "secrets", multiple=True, metavar="id=ID,src=PATH",
              help="A secret RUN --mount=type=secret,id=ID can read (src=PATH or env=VAR; "
                   "repeatable); never stored in the image.")
@click.option("--iidfile", metavar="FILE", help="Write the image id to FILE.")
@click.option("--squash", is_flag=True,
              help="Merge the layers the build adds into one, on top of the base image.")
@click.option("--platform", default="", metavar="OS/ARCH",
              help="Only the host's platform can be built (there is no emulation).")
@click.option("--progress", type=click.Choice(["auto", "plain", "tty", "quiet"]),
              default="auto", help="Output style: auto and tty print docker's classic "
                                   "'Step N/M : ...' lines, plain buildah's 'STEP N/M: ...' "
                                   "with each step's time; quiet is -q.")
@click.option("--format", "fmt", type=click.Choice(["oci", "docker"]), default=None,
              help="Manifest type a push of the image uses: oci (default) or docker (v2s2).")
@click.pass_obj
def build(config, path, tags, dockerfile, build_args, target, no_cache, pull, quiet, labels,
          network, secrets, iidfile, squash, platform, progress, fmt):
    """Build an image from a Dockerfile and the context PATH ('-' reads a tar from stdin).

    Steps are cached: an unchanged step reuses the image it made before.  With
    SOURCE_DATE_EPOCH set, timestamps are that time, so the same inputs give the same
    image id."""
    from pbox.build.frontend import run_build
    from pbox.commands.pulling import pull_report

    run_build(config, path=path, tags=tags, dockerfile=dockerfile, build_args=build_args,
              target=target, no_cache=no_cache, pull=pull, quiet=quiet, labels=labels,
              network=network, secrets=secrets, iidfile=iidfile, squash=squash,
              platform=platform, progress=progress, fmt=fmt, notice=notice_once(config),
              echo=click.echo, report=pull_report)


@click.group(context_settings=CTX)
def builder():
    """Manage the build cache."""


@builder.command("prune", context_settings=CTX)
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("-a", "--all", "all_", is_flag=True, hidden=True)
@click.pass_obj
def builder_prune(config, force, all_):
    """Remove the build cache records, the step images and layers only they kept, and
    the RUN --mount=type=cache directories."""
    from pbox.build.cache import prune_cache
    from pbox.humanize import human_size

    records, freed = prune_cache(config)
    click.echo(f"Deleted build cache records: {records}")
    click.echo(f"Total reclaimed space: {human_size(freed)}")
