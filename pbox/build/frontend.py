"""`build` without click: the command's work from its parsed options, shared by the
click command (:mod:`pbox.commands.build`) and the short path of
:mod:`pbox.commands.fast`, which takes a build of common options without importing
click (~20 ms of a fully cached build)."""

from __future__ import annotations

import os
import sys

from pbox.errors import UsageError


def pairs(items, what: str, environ=None) -> dict:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not k:
            raise UsageError(f"invalid {what} {item!r}: KEY=VALUE")
        if sep:
            out[k] = v
        elif environ is not None and k in environ:
            out[k] = environ[k]  # docker: --build-arg KEY takes KEY from our environment
        elif environ is None:
            out[k] = ""
    return out


def parse_secrets(items) -> dict:
    """--secret id=ID,src=PATH | id=ID,env=VAR (type=file|env as BuildKit's)."""
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


def run_build(config, *, path, tags, dockerfile, build_args, target, no_cache, pull, quiet,
              labels, network, secrets, iidfile, squash, platform, progress, fmt, notice,
              echo, report=None) -> None:
    """Build; ``echo(line)`` prints the steps and the result, ``report()`` makes the
    progress callback of an implicit pull of a base image (None: no progress)."""
    from pbox.build import executor
    from pbox.build.context import extract_context_tar
    from pbox.containers import lifecycle
    from pbox.errors import BuildError
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
    lifecycle.enter(config, notice)
    tmp = None
    try:
        if path == "-":
            import tempfile  # (with shutil, ~8 ms: only for a context on stdin)

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
            tags=list(tags), build_args=pairs(build_args, "--build-arg", os.environ),
            target=target, no_cache=no_cache, pull=pull,
            labels=pairs(labels, "--label"), network=network, source_date_epoch=epoch,
            secrets=parse_secrets(secrets), squash=squash, format=fmt or "",
            progress="plain" if progress == "plain" else "")

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
            out = (lambda s: None) if quiet else echo
            builder = executor.Builder(config, opts, out, notice=notice,
                                       report=None if quiet or report is None else report())
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
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    if iidfile:
        try:
            with open(iidfile, "w") as f:
                f.write(image_id)
        except OSError as e:
            raise UsageError(f"cannot write the image id to {iidfile}: {e.strerror}")
    if quiet:
        echo(image_id)
        return
    echo(f"Successfully built {image_id[7:19]}")
    for n in names:
        echo(f"Successfully tagged {n}")
