"""The program's entry: the hottest container commands without click.

Importing click and building the command tree costs ~20 ms of every pbox start, a
quarter of a whole `run --rm ... true` and half of `images`.  `run`, `stop`, `rm`,
`start`, `images` (`image ls`), `ps` (`container ls`), `build`, `pull` and `push` given
only options this small parser knows completely take a short path here; anything else
(an option it does not know, --help, a value it cannot check, an image that must be
pulled first) goes to the click CLI, which parses the arguments again from the start,
so errors and help texts stay click's.  Both paths end in the same library calls;
tests/unit/test_fastcli.py checks that they parse every accepted argument list to the
same options (and print through the same click-free modules: ``pbox.commands.listing``,
``pulling``, ``pushing``).

This module is also the one place that turns exceptions into ``Error: ...`` and
docker's exit codes (``report_error``); ``pbox.cli`` adds click's own exceptions.
"""

from __future__ import annotations

import gc
import os
import sys

# The cyclic garbage collector looks at its youngest objects after every 700 new ones by
# default: ~9 times while a pull imports its modules (~0.8 ms of a ~38 ms pull), finding
# next to nothing (modules, their functions and classes live to the end).  Every 20000
# here: on still, for the commands that run long (an attached `run`, `logs -f`).
GC_YOUNG_THRESHOLD = 20_000

# Commands that leave nothing for the interpreter's shutdown to do (no temp files held
# by finalizers, no threads): run as the program, they end with os._exit once their
# output is flushed, which saves the ~10 ms of tearing down every imported module on
# each container start, stop and removal.
QUICK_EXIT = frozenset(("run", "create", "start", "stop", "kill", "rm", "restart", "wait",
                        "images", "ps", "pull", "push"))

_GLOBAL = {"--root": "root", "--runroot": "runroot", "--storage-driver": "storage_driver",
           "--log-level": "log_level"}
_CHOICES = {"storage_driver": ("overlay", "fuse-overlayfs", "vfs"),
            "log_level": ("debug", "info", "warning", "error")}
_ENV = {"storage_driver": "PBOX_STORAGE_DRIVER", "log_level": "PBOX_LOG_LEVEL"}

# `run`'s options this parser takes: option -> (RunOptions field, kind); kind is
# "flag", "str" (last one wins) or "list" (repeatable).
RUN_OPTIONS = {}
for _names, _field, _kind in (
    (("--rm",), "rm", "flag"),
    (("-d", "--detach"), "detach", "flag"),
    (("-i", "--interactive"), "interactive", "flag"),
    (("-t", "--tty"), "tty", "flag"),
    (("--init",), "init", "flag"),
    (("--privileged",), "privileged", "flag"),
    (("--read-only",), "read_only", "flag"),
    (("-P", "--publish-all"), "publish_all", "flag"),
    (("--name",), "name", "str"),
    (("-w", "--workdir"), "workdir", "str"),
    (("-u", "--user"), "user", "str"),
    (("--entrypoint",), "entrypoint", "str"),
    (("-h", "--hostname"), "hostname", "str"),
    (("--network", "--net"), "network", "str"),
    (("--stop-signal",), "stop_signal", "str"),
    (("--restart",), "restart", "str"),
    (("--pull",), "pull", "str"),
    (("-e", "--env"), "env", "list"),
    (("--env-file",), "env_files", "list"),
    (("-v", "--volume"), "volumes", "list"),
    (("--mount",), "mounts", "list"),
    (("--tmpfs",), "tmpfs", "list"),
    (("-l", "--label"), "labels", "list"),
    (("-p", "--publish"), "publish", "list"),
    (("--expose",), "expose", "list"),
    (("--add-host",), "add_hosts", "list"),
    (("--dns",), "dns", "list"),
    (("--group-add",), "group_add", "list"),
    (("--cap-add",), "cap_add", "list"),
    (("--cap-drop",), "cap_drop", "list"),
    (("--security-opt",), "security_opt", "list"),
):
    for _name in _names:
        RUN_OPTIONS[_name] = (_field, _kind)


class _Fallback(Exception):
    """This invocation is one for the click CLI after all."""


def main() -> None:
    """The program: argv from sys.argv; never returns."""
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    argv = sys.argv[1:]
    parsed = _split_globals(argv)
    quick = parsed is not None and parsed[1][:1] and parsed[1][0] in QUICK_EXIT
    try:
        if parsed is not None:
            handled = _try_fast(parsed[0], parsed[1])
            if handled is not None:
                raise SystemExit(handled)
        from pbox.cli import main as click_main

        click_main(argv)
    except SystemExit as e:
        if not quick:
            raise
        _quick_exit(e.code)
    if quick:
        _quick_exit(0)


def _quick_exit(code) -> None:
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout and code == 0:
                code = 120  # as the interpreter's own exit when the last flush fails
    os._exit(code & 0xFF)


def _split_globals(argv: list[str]):
    """(global options, the rest from the command name on), or None if a global
    option is one this parser does not check (click then reports it)."""
    opts: dict = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        dest = _GLOBAL.get(argv[i])
        if dest is None or i + 1 >= len(argv):
            return None
        value = argv[i + 1]
        if dest in _CHOICES and value.lower() not in _CHOICES[dest]:
            return None
        opts[dest] = value
        i += 2
    for dest, var in _ENV.items():
        value = os.environ.get(var)
        if dest not in opts and value and value.lower() not in _CHOICES[dest]:
            return None  # click refuses the variable's value: let it say so
    return opts, argv[i:]


def _try_fast(globals_: dict, args: list[str]) -> int | None:
    """Run a hot command here; its exit code, or None for the click CLI."""
    if not args:
        return None
    fn = _COMMANDS.get(args[0])
    rest = args[1:]
    if fn is None and len(args) > 1:
        fn = _GROUP_COMMANDS.get((args[0], args[1]))
        rest = args[2:]
    if fn is None:
        return None
    prepared = fn(rest, parse_only=True)
    if prepared is None:
        return None
    config = _config(globals_)
    try:
        return fn(rest, config=config, prepared=prepared)
    except _Fallback:
        return None
    except BaseException as e:
        report_error(e, debug=config.log_level == "debug")
        raise  # not reached: report_error exits


def _config(globals_: dict):
    from pbox.config import Config

    config = Config.from_env(**globals_)
    configure_logging(config.log_level)
    return config


def configure_logging(level: str) -> None:
    """Log records of ``level`` and above to stderr as ``LEVEL[logger] message``.

    At the default level nothing is logged unless something goes wrong: `logging`
    (~5 ms) is not imported here but configured as it is first imported, by whichever
    module needs it, and the modules that log at debug level do it through
    ``pbox.lazylog``, which imports it only for a record that is to be written."""
    from pbox import lazylog

    lazylog.set_level(level)
    if "logging" in sys.modules or level.lower() != "warning":
        _basic_config(sys.modules.get("logging") or __import__("logging"), level)
    elif not any(isinstance(f, _ConfigureLogging) for f in sys.meta_path):
        sys.meta_path.insert(0, _ConfigureLogging(level))


def _basic_config(logging, level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.WARNING),
                        format="%(levelname)s[%(name)s] %(message)s")


class _ConfigureLogging:
    """An import-system finder that finds nothing itself: when `logging` is first
    imported it lets the next finders find it and configures the module as soon as
    it has run.  It removes itself on that first import."""

    def __init__(self, level: str):
        self.level = level

    def find_spec(self, name, path=None, target=None):
        if name != "logging":
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or isinstance(loader, type):
            return spec  # not the stdlib's source package: left as it is
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _basic_config(module, self.level)

        loader.exec_module = exec_module  # this module's own loader object
        return spec


def notice_once(config=None):
    """A callback library code calls for one-time notices (printed to stderr).

    With a config, a notice is shown once per boot and run root (a marker under
    ``<runroot>/notices/``), not on every command."""
    seen: set[str] = set()

    def notice(msg: str) -> None:
        if msg in seen:
            return
        seen.add(msg)
        if config is not None:
            import hashlib

            d = os.path.join(config.runroot, "notices")
            marker = os.path.join(d, hashlib.sha256(msg.encode()).hexdigest()[:16])
            if os.path.exists(marker):
                return
            try:
                os.makedirs(d, mode=0o700, exist_ok=True)
                open(marker, "w").close()
            except OSError:
                pass
        sys.stdout.flush()
        sys.stderr.write(f"WARN: {msg}\n")
        sys.stderr.flush()

    return notice


# -- run ----------------------------------------------------------------------------------


def parse_run(args: list[str]) -> dict | None:
    """`run`'s arguments as RunOptions fields (image and command included), or None
    when they need the click CLI.  Options end at the image, as docker's do."""
    out: dict = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("-") or a == "-":
            break
        if a == "--":
            return None
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            spec = RUN_OPTIONS.get(name)
            if spec is None:
                return None
            if spec[1] == "flag":
                if eq:
                    return None
                out[spec[0]] = True
                i += 1
                continue
            if not eq:
                if i + 1 >= len(args):
                    return None
                value = args[i + 1]
                i += 1
            _set(out, spec, value)
            i += 1
            continue
        # short options: -it (flags together), -eA=1 / -e A=1 (a value)
        j = 1
        while j < len(a):
            spec = RUN_OPTIONS.get("-" + a[j])
            if spec is None:
                return None
            if spec[1] == "flag":
                out[spec[0]] = True
                j += 1
                continue
            value = a[j + 1:]
            if not value:
                if i + 1 >= len(args):
                    return None
                value = args[i + 1]
                i += 1
            _set(out, spec, value)
            break
        i += 1
    if i >= len(args):
        return None  # no image: click says what is missing
    if out.get("pull", "missing") not in ("missing", "never"):
        return None  # "always" pulls (progress output is the CLI's); bad values too
    if out.get("detach") and out.get("rm") and out.get("restart", "no") not in ("", "no"):
        return None
    out["image"] = args[i]
    out["command"] = list(args[i + 1:])
    return out


def _set(out: dict, spec: tuple, value: str) -> None:
    field, kind = spec
    if kind == "list":
        out.setdefault(field, []).append(value)
    else:
        out[field] = value


def _run(args, *, parse_only=False, config=None, prepared=None):
    if parse_only:
        return parse_run(args)
    notice = notice_once(config)
    early = _early_network(config, prepared)
    from pbox.containers import lifecycle

    lifecycle.enter(config, notice)  # (done already where the early network is)
    try:
        from pbox.containers import create as cr
        from pbox.containers.options import RunOptions

        o = RunOptions(**prepared)

        def report(event, **info):
            raise _Fallback()  # the image must be pulled: progress output is the CLI's

        cid = cr.create(config, o, report=report, notice=notice,
                        hold_signals=() if o.detach else lifecycle.FORWARDED)
    except BaseException:
        if early is not None:
            early.cancel()
        raise
    if early is not None:
        if o.detach and not early.settle():
            early = None  # the monitor sets the network up as usual, or says why not
        else:
            from pbox.containers import ports

            ports.adopt_early(cid, early)
    handed_over = False
    try:
        if o.detach:
            # The monitor is this process forked: it has what it needs imported (see
            # lifecycle._MONITOR_BOOT), the early network too.
            lifecycle.start_detached(config, cid, notice, fresh=False)
            handed_over = True
            sys.stdout.write(cid + "\n")
            return 0
        return lifecycle.run_foreground(config, cid, interactive=o.interactive, tty=o.tty,
                                        notice=notice)
    finally:
        if early is not None:
            # The monitor that runs the container has its copy; in the foreground, the
            # container's run took it.  Still here otherwise: nothing ran, pasta ends.
            ports.drop_early(cid, cancel=not handed_over)


def _early_network(config, prepared: dict):
    """For the default network (pasta, no published ports, links or aliases), its
    namespace and pasta, started first thing: pasta takes ~25 ms to set up, which the
    creation of the container then hides.  None where that does not apply."""
    if prepared.get("network", "") not in ("", "pasta") or any(prepared.get(k) for k in (
            "publish", "publish_all", "links", "network_aliases", "ip")):
        return None
    # In the user's namespace (the pause process's), which then owns the new network
    # namespace as it would own the container's.  Only the common case of a live pause
    # process: making one is the business of lifecycle.enter.
    if os.getuid() == 0 or os.environ.get("PBOX_USERNS"):
        return None
    from pbox.rootless import pause

    if not pause.join_existing(config.runroot):
        return None
    from pbox.containers.ports import EarlyNetwork
    from pbox.errors import PboxError

    try:
        return EarlyNetwork()
    except (PboxError, OSError):
        return None  # the usual path then sets the network up, or says why it cannot


# -- stop, rm, start ----------------------------------------------------------------------


def _parse_names(args: list[str], flags: dict, values: dict) -> tuple[dict, list] | None:
    """Options anywhere among the names (click's default), flags combinable; at least
    one name."""
    parsed = _parse_args(args, flags, values)
    if parsed is None or not parsed[1]:
        return None
    return parsed


def _parse_args(args: list[str], flags: dict, values: dict,
                lists: tuple = ()) -> tuple[dict, list] | None:
    """(options, positional arguments) as click parses them: options anywhere, short
    flags combinable, ``--`` ends the options.  ``flags`` and ``values`` map option
    names to fields; a field in ``lists`` collects every value (a repeatable option),
    any other keeps the last.  None for anything else (click then parses it)."""
    opts: dict = {}

    def put(field, value):
        if field in lists:
            opts.setdefault(field, []).append(value)
        else:
            opts[field] = value

    names: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--" or a == "-" or not a.startswith("-"):
            if a == "--":
                names += args[i + 1:]
                break
            names.append(a)
            i += 1
            continue
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            if name in flags and not eq:
                opts[flags[name]] = True
            elif name in values:
                if not eq:
                    if i + 1 >= len(args):
                        return None
                    value = args[i + 1]
                    i += 1
                put(values[name], value)
            else:
                return None
            i += 1
            continue
        if a[:2] in values:
            value = a[2:]
            if not value:
                if i + 1 >= len(args):
                    return None
                value = args[i + 1]
                i += 1
            put(values[a[:2]], value)
            i += 1
            continue
        for ch in a[1:]:
            if "-" + ch not in flags:
                return None
            opts[flags["-" + ch]] = True
        i += 1
    return opts, names


def _each(config, names: list[str], fn) -> int:
    """fn(cid) for each container; its name printed, or docker's per-name error."""
    from pbox.containers import lifecycle
    from pbox.errors import PboxError

    cs = lifecycle.open_containers(config)
    failed = None
    for name in names:
        try:
            fn(cs.find(name))
            sys.stdout.write(name + "\n")
            sys.stdout.flush()
        except PboxError as e:
            sys.stdout.flush()
            sys.stderr.write(f"Error: {e}\n")
            sys.stderr.flush()
            failed = e
    if failed is None:
        return 0
    if len(names) == 1:
        return failed.exit_code if failed.exit_code != 125 else 1
    return 1


def _stop(args, *, parse_only=False, config=None, prepared=None):
    if parse_only:
        parsed = _parse_names(args, {}, {"-t": "timeout", "--time": "timeout"})
        if parsed is None:
            return None
        t = parsed[0].get("timeout")
        if t is not None and not t.isdigit():
            return None  # click's int parsing and its error
        return parsed
    from pbox.containers import lifecycle

    opts, names = prepared
    timeout = int(opts["timeout"]) if "timeout" in opts else None
    # The user's namespace is joined only if a container process needs it (-u).
    return _each(config, names, lambda cid: lifecycle.stop(
        config, cid, timeout, enter=lambda: lifecycle.enter(config)))


def _rm(args, *, parse_only=False, config=None, prepared=None):
    if parse_only:
        return _parse_names(args, {"-f": "force", "--force": "force", "-v": "volumes",
                                   "--volumes": "volumes"}, {})
    from pbox.containers import lifecycle

    opts, names = prepared
    # The user's namespace is joined only if needed (files or processes of other ids).
    return _each(config, names, lambda cid: lifecycle.remove(
        config, cid, force=opts.get("force", False), volumes=opts.get("volumes", False),
        enter=lambda: lifecycle.enter(config)))


def _start(args, *, parse_only=False, config=None, prepared=None):
    if parse_only:
        return _parse_names(args, {}, {})  # -a / -i attach: the CLI's
    from pbox.containers import lifecycle

    lifecycle.enter(config)
    return _each(config, prepared[1], lambda cid: lifecycle.start(config, cid, fresh=False))


# -- images, ps ---------------------------------------------------------------------------

# option -> the keyword of pbox.commands.listing's function (click's parameter names)
IMAGES_FLAGS = {"-a": "all_images", "--all": "all_images", "-q": "quiet", "--quiet": "quiet",
                "--digests": "digests", "--no-trunc": "no_trunc"}
IMAGES_VALUES = {"-f": "filters", "--filter": "filters", "--format": "fmt"}
PS_FLAGS = {"-a": "all_containers", "--all": "all_containers", "-q": "quiet",
            "--quiet": "quiet", "-l": "latest", "--latest": "latest", "-s": "size",
            "--size": "size", "--no-trunc": "no_trunc"}
PS_VALUES = {"-n": "last", "--last": "last", "-f": "filters", "--filter": "filters",
             "--format": "fmt"}


def _images(args, *, parse_only=False, config=None, prepared=None):
    if parse_only:
        parsed = _parse_args(args, IMAGES_FLAGS, IMAGES_VALUES, ("filters",))
        if parsed is None or len(parsed[1]) > 1:
            return None  # a second name: click's usage error
        return parsed
    from pbox.commands import listing

    opts, names = prepared
    listing.write(listing.images_text(config, names[0] if names else None, **opts))
    return 0


def _ps(args, *, parse_only=False, config=None, prepared=None):
    if parse_only:
        parsed = _parse_args(args, PS_FLAGS, PS_VALUES, ("filters",))
        if parsed is None or parsed[1]:
            return None
        last = parsed[0].get("last")
        if last is not None:
            if not last.isdigit():
                return None  # click's int parsing and its error
            parsed[0]["last"] = int(last)
        return parsed
    from pbox.commands import listing

    listing.write(listing.ps_text(config, **prepared[0]))
    return 0


# -- build ----------------------------------------------------------------------------------

BUILD_FLAGS = {"--no-cache": "no_cache", "--pull": "pull", "-q": "quiet", "--quiet": "quiet",
               "--squash": "squash"}
BUILD_VALUES = {"-t": "tags", "--tag": "tags", "-f": "dockerfile", "--file": "dockerfile",
                "--build-arg": "build_args", "--target": "target", "--label": "labels",
                "--network": "network", "--iidfile": "iidfile"}
BUILD_LISTS = ("tags", "build_args", "labels")
BUILD_DEFAULTS = {"tags": (), "dockerfile": None, "build_args": (), "target": "",
                  "no_cache": False, "pull": False, "quiet": False, "labels": (),
                  "network": "", "secrets": (), "iidfile": None, "squash": False,
                  "platform": "", "progress": "auto", "fmt": None}


def parse_build(args: list[str]) -> dict | None:
    """`build`'s keyword arguments as click would pass them, for the common options and
    one PATH; None for anything else."""
    parsed = _parse_args(args, BUILD_FLAGS, BUILD_VALUES, BUILD_LISTS)
    if parsed is None or len(parsed[1]) != 1:
        return None
    opts = {**BUILD_DEFAULTS, **parsed[0], "path": parsed[1][0]}
    for field in BUILD_LISTS:
        opts[field] = tuple(opts[field])
    return opts


def _build(args, *, parse_only=False, config=None, prepared=None):
    if parse_only:
        return parse_build(args)
    from pbox.build.frontend import run_build
    from pbox.commands.listing import echo  # flushed: before a RUN step's own output

    def report():
        def first_event(event, **info):  # a base image to pull: progress as the CLI's
            nonlocal forward
            if forward is None:
                from pbox.commands.pulling import pull_report

                forward = pull_report()
            forward(event, **info)
        forward = None
        return first_event

    run_build(config, **prepared, notice=notice_once(config), echo=echo, report=report)
    return 0


# -- pull, push -----------------------------------------------------------------------------

REGISTRY_FLAGS = {"-q": "quiet", "--quiet": "quiet", "--tls-verify": "tls_verify",
                  "--no-tls-verify": "no_tls_verify"}
REGISTRY_VALUES = {"--creds": "creds", "--cert-dir": "cert_dir"}
PULL_FLAGS = REGISTRY_FLAGS
PULL_VALUES = {**REGISTRY_VALUES, "--platform": "platform"}
PULL_DEFAULTS = {"quiet": False, "platform": None, "all_tags": False, "tls_verify": None,
                 "cert_dir": None, "creds": None}
PUSH_FLAGS = REGISTRY_FLAGS
PUSH_VALUES = {**REGISTRY_VALUES, "--digestfile": "digestfile",
               "--compression-format": "compression", "--format": "fmt"}
PUSH_CHOICES = {"compression": ("gzip", "zstd"), "fmt": ("oci", "v2s2")}
PUSH_DEFAULTS = {"destination": None, "quiet": False, "digestfile": None,
                 "compression": "gzip", "fmt": None, "creds": None, "tls_verify": None,
                 "cert_dir": None}


def _parse_registry_args(args: list[str], flags: dict, values: dict, choices: dict,
                         names: range) -> tuple[dict, list] | None:
    parsed = _parse_args(args, flags, values)
    if parsed is None or len(parsed[1]) not in names:
        return None
    opts, positional = parsed
    if opts.pop("no_tls_verify", False):
        if opts.get("tls_verify"):
            return None  # both: the last one wins in click; rare enough to leave to it
        opts["tls_verify"] = False
    for field, allowed in choices.items():
        if field in opts and opts[field] not in allowed:
            return None
    return opts, positional


def parse_pull(args: list[str]) -> dict | None:
    """`pull`'s keyword arguments as click would pass them (one IMAGE); None for
    anything else."""
    parsed = _parse_registry_args(args, PULL_FLAGS, PULL_VALUES, {}, range(1, 2))
    if parsed is None:
        return None
    return {**PULL_DEFAULTS, **parsed[0], "image": parsed[1][0]}


def _pull(args, *, parse_only=False, config=None, prepared=None):
    if parse_only:
        return parse_pull(args)
    from pbox.commands import pulling

    pulling.pull(config, **prepared, notice=notice_once(config))
    return 0


def parse_push(args: list[str]) -> dict | None:
    """`push`'s keyword arguments as click would pass them (IMAGE [DESTINATION]); None
    for anything else."""
    parsed = _parse_registry_args(args, PUSH_FLAGS, PUSH_VALUES, PUSH_CHOICES, range(1, 3))
    if parsed is None:
        return None
    opts, names = parsed
    return {**PUSH_DEFAULTS, **opts, "image": names[0],
            "destination": names[1] if len(names) > 1 else None}


def _push(args, *, parse_only=False, config=None, prepared=None):
    if parse_only:
        return parse_push(args)
    from pbox.commands import pushing

    pushing.push(config, **prepared, notice=notice_once(config))
    return 0


_COMMANDS = {"run": _run, "stop": _stop, "rm": _rm, "start": _start, "images": _images,
             "ps": _ps, "build": _build, "pull": _pull, "push": _push}
_GROUP_COMMANDS = {("image", "ls"): _images, ("image", "list"): _images,
                   ("image", "pull"): _pull, ("image", "push"): _push,
                   ("container", "ls"): _ps, ("container", "list"): _ps,
                   ("container", "ps"): _ps}


# -- errors -------------------------------------------------------------------------------


def die(message: str, code: int = 125) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def report_error(e: BaseException, *, debug: bool) -> None:
    """Turn an exception into ``Error: ...`` and docker's exit code (SystemExit).
    With ``debug``, the traceback is logged first."""
    from pbox.errors import PboxError

    if isinstance(e, SystemExit):
        raise e
    if isinstance(e, PboxError):
        if debug:
            _log_detail("error detail", e)
        die(str(e), e.exit_code)
    if isinstance(e, KeyboardInterrupt):
        sys.stderr.write("\n")
        raise SystemExit(130)
    if isinstance(e, BrokenPipeError):
        # stdout closed early (`pbox images | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0)
    if isinstance(e, OSError):
        if debug:
            _log_detail("error detail", e)
        die(f"{e.strerror or e}" + (f": {e.filename}" if getattr(e, "filename", None) else ""))
    # a bug of ours: still one line, detail with --log-level debug
    if debug:
        _log_detail("internal error", e)
    die(f"internal error: {type(e).__name__}: {e} (run with --log-level debug for "
        f"the detail)")


def _log_detail(what: str, e: BaseException) -> None:
    import logging

    logging.getLogger("pbox").debug(what, exc_info=e)
