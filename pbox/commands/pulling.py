"""What `pull` prints, without click.

The click command (``pbox.commands.images.pull``) and the short path of
``pbox.commands.fast`` both call :func:`pull`; the progress renderer also serves the
pulls that `run`, `create` and `build` start themselves.
"""

from __future__ import annotations

import sys

from pbox.commands.listing import echo
from pbox.errors import UsageError


def is_tty(stream=None) -> bool:
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class PullProgress:
    """Renders pull events like docker: per-layer lines, live bars on a terminal."""

    def __init__(self, out=None, quiet: bool = False):
        self.out = out or sys.stdout
        self.quiet = quiet
        self.tty = is_tty(self.out) and not quiet
        self.order: list[str] = []
        self.lines: dict[str, str] = {}
        self.drawn = 0

    @staticmethod
    def short(digest: str) -> str:
        return digest.partition(":")[2][:12]

    def __call__(self, event: str, **info) -> None:
        if self.quiet:
            return
        if event == "resolving":
            ref = info["ref"]
            self._print(f"{ref.tag or ref.digest}: Pulling from {ref.repository}")
            return
        if event == "digest":
            self._print(f"Digest: {info['digest']}")
            return
        layer = info.get("layer")
        if layer is None:
            return
        sid = self.short(layer)
        text = {
            "layer-exists": "Already exists",
            "layer-waiting": "Pulling fs layer",
            "layer-extracting": "Extracting",
            "layer-done": "Pull complete",
        }.get(event)
        if event == "layer-downloading":
            if not self.tty:
                return
            text = self._bar(info.get("current", 0), info.get("total", 0))
        if text is None:
            return
        if not self.tty:
            if event != "layer-extracting":
                self._print(f"{sid}: {text}")
            return
        if sid not in self.lines:
            self.order.append(sid)
        self.lines[sid] = f"{sid}: {text}"
        self._redraw()

    @staticmethod
    def _bar(current: int, total: int) -> str:
        from pbox.humanize import human_size

        if total <= 0:
            return f"Downloading  {human_size(current)}"
        width = 50
        filled = min(width, int(width * current / total))
        bar = "=" * max(0, filled - 1) + (">" if filled else "") + " " * (width - filled)
        return f"Downloading [{bar}]  {human_size(current)}/{human_size(total)}"

    def _redraw(self) -> None:
        w = self.out.write
        if self.drawn:
            w(f"\x1b[{self.drawn}A")
        for sid in self.order:
            w("\x1b[2K" + self.lines[sid] + "\n")
        self.drawn = len(self.order)
        self.out.flush()

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
        self.drawn = 0 if not self.tty else self.drawn
        if self.tty:
            self.order, self.lines, self.drawn = [], {}, 0


def pull_report():
    """Progress of an implicit pull (run, create, build's FROM) goes to stderr, as
    docker's does."""
    progress = PullProgress(out=sys.stderr)

    def report(event, **info):
        if event == "missing-locally":
            sys.stderr.write(f"Unable to find image '{info['name']}' locally\n")
            sys.stderr.flush()
            return
        progress(event, **info)
    return report


def pull(config, *, image: str, quiet: bool, platform: str | None, all_tags: bool,
         tls_verify: bool | None, cert_dir: str | None, creds: str | None, notice,
         echo=echo) -> None:
    """`pull`'s keyword arguments as click passes them: docker's output around
    ``pbox.pull.pull``."""
    from pbox import pull as pulling

    if all_tags:
        raise UsageError("--all-tags is not supported")
    progress = PullProgress(quiet=quiet)
    if not quiet and ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
        echo("Using default tag: latest")
    result = pulling.pull(
        config, image,
        pulling.PullOptions(platform=platform, tls_verify=tls_verify, cert_dir=cert_dir,
                            creds=creds),
        report=progress, notice=notice,
    )
    ref = result.reference  # a short name may have resolved elsewhere (registries.conf)
    if not quiet:
        if result.downloaded:
            echo(f"Status: Downloaded newer image for {ref.familiar()}")
        else:
            echo(f"Status: Image is up to date for {ref.familiar()}")
    echo(ref.string())
