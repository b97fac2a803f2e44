"""`build` and `builder prune`: flag glue over :mod:`pbox.build.executor` and
:mod:`pbox.build.cache`."""

from __future__ import annotations

import os
import sys

import click

from pbox.commands._util import notice_once

CTX = {"help_option_names": ["-h", "--help"]}


def _pairs(items, what: str, environ=None) -> dict:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not k:
            raise click.UsageError(f"invalid {what} {item!r}: KEY=VALUE")
        if sep:
            out[k] = v
        elif environ is not None and k in environ:
            out[k] = environ[k]  # docker: --build-arg KEY takes KEY from our environment
        elif environ is None:
            out[k] = ""
    return out


def _secrets(items) -> dict:
    """--secret id=ID,src=PATH | id=ID,env=VAR (type=file|env as BuildKit's)."""
    from pbox.errors import UsageError

    out = {}
    for item in items:
        fields = {}
        for part in item.split(","):
            k, sep, v = part.partition("=")
            if not sep:
                raise UsageError(f"invalid --secret {item!r}: id=ID,src=PATH or id=ID,env=VAR")
            fields[k.strip().lower()] = v
        sid = fields.pop("id", "")
        kind = fields.pop("type", "")
        src = fields.pop("src", "") or fields.pop("source", "")
        env = fields.pop("env", "")
        if fields or not sid or kind not in ("", "file", "env"):
            raise UsageError(f"invalid --secret {item!r}: id=ID,src=PATH or id=ID,env=VAR")
        if kind == "env" and src and not env:
            env, src = src, ""
        if env:
            out[sid] = ("env", env)
        elif src:
            if not os.path.isfile(src):
                raise UsageError(f"--secret {sid}: {src}: no such file")
            out[sid] = ("file", os.path.abspath(src))
        elif sid in os.environ:
            out[sid] = ("env", sid)
        else:
            raise UsageError(f"invalid --secret {item!r}: id=ID,src=PATH or id=ID,env=VAR")
    return out


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
              default="auto", help="Output style: the steps are always shown plainly; "
                                   "quiet is -q.")
@click.option("--format", "fmt", type=click.Choice(["oci", "docker"]), default=None,
              help="Manifest type a push of the image uses: oci (default) or docker (v2s2).")
@click.pass_obj
def build(config, path, tags, dockerfile, build_args, target, no_cache, pull, quiet, labels,
          network, secrets, iidfile, squash, platform, progress, fmt):
    """Build an image from a Dockerfile and the context PATH ('-' reads a tar from stdin).

    Steps are cached: an unchanged step reuses the image it made before.  With
    SOURCE_DATE_EPOCH set, timestamps are that time, so the same inputs give the same
    image id."""
    import shutil
    import tempfile

    from pbox.build import executor
    from pbox.build.context import extract_context_tar
    from pbox.commands._util import pull_report
    from pbox.containers import lifecycle
    from pbox.errors import BuildError, UsageError
    from pbox.oci import reference as refs

    for t in tags:
        try:
            refs.parse(t)
        except Exception as e:
            raise UsageError(f"invalid tag {t!r}: {e}")
    if platform:
        from pbox.oci import platform as plat

        host = plat.host()
        try:
            wanted = plat.parse(platform)
        except Exception as e:
            raise UsageError(f"invalid --platform {platform!r}: {e}")
        if not host.matches(wanted):
            raise UsageError(f"--platform {platform}: only the host platform {host} can be "
                             f"built (no emulation)")
    quiet = quiet or progress == "quiet"
    if path == "-" and dockerfile == "-":
        raise UsageError("the context and the Dockerfile cannot both be read from stdin")
    epoch = os.environ.get("SOURCE_DATE_EPOCH") or None
    if epoch is not None:
        try:
            epoch = int(epoch)
        except ValueError:
            raise UsageError(f"invalid SOURCE_DATE_EPOCH {epoch!r}: seconds since the epoch")
    notice = notice_once(config)
    lifecycle.enter(config, notice)
    tmp = None
    try:
        if path == "-":
            tmp = tempfile.mkdtemp(prefix="pbox-context-")
            extract_context_tar(sys.stdin.buffer, tmp)
            path = tmp
        if not os.path.isdir(path):
            raise UsageError(f"unable to prepare context: path {path!r} not found")
        if dockerfile == "-":
            text, name = sys.stdin.read(), "Dockerfile"
        else:
            name = dockerfile or os.path.join(path, "Dockerfile")
            if dockerfile and not os.path.isabs(dockerfile) and not os.path.exists(dockerfile):
                name = os.path.join(path, dockerfile)
            try:
                with open(name, encoding="utf-8") as f:
                    text = f.read()
            except (FileNotFoundError, NotADirectoryError):
                raise BuildError(f"the Dockerfile {name} cannot be read: no such file",
                                 exit_code=1)
            except OSError as e:
                raise BuildError(f"the Dockerfile {name} cannot be read: {e.strerror}",
                                 exit_code=1)
        opts = executor.BuildOptions(
            context=path, dockerfile_text=text, dockerfile_name=os.path.basename(name),
            tags=list(tags), build_args=_pairs(build_args, "--build-arg", os.environ),
            target=target, no_cache=no_cache, pull=pull,
            labels=_pairs(labels, "--label"), network=network, source_date_epoch=epoch,
            secrets=_secrets(secrets), squash=squash, format=fmt or "")

        saved = []
        if quiet:  # the steps' own output too (errors are printed after the restore)
            sys.stdout.flush()
            sys.stderr.flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
            os.close(devnull)
        try:
            out = (lambda s: None) if quiet else (lambda s: click.echo(s))
            builder = executor.Builder(config, opts, out, notice=notice,
                                       report=None if quiet else pull_report())
            image_id = builder.run()
            names = executor.tag_image(config, image_id, list(tags))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if iidfile:
        try:
            with open(iidfile, "w") as f:
                f.write(image_id)
        except OSError as e:
            raise UsageError(f"cannot write the image id to {iidfile}: {e.strerror}")
    if quiet:
        click.echo(image_id)
        return
    click.echo(f"Successfully built {image_id[7:19]}")
    for n in names:
        click.echo(f"Successfully tagged {n}")


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
