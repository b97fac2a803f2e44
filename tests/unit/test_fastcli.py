"""The short path of the hot commands parses exactly as the click CLI does."""

from __future__ import annotations

import pytest

from pbox.commands import containers as cmds
from pbox.commands import fast
from pbox.containers.options import RunOptions

RUN_ARGS = [
    ["--rm", "--network", "none", "busybox", "true"],
    ["-d", "--name", "web", "-p", "8080:80", "-p", "53:53/udp", "img:1"],
    ["-it", "--rm", "img", "sh", "-c", "echo hi --rm"],
    ["-dit", "img"],
    ["-e", "A=1", "--env", "B", "-eC=3", "--env=D=4", "--env-file", "/f", "img"],
    ["--net=host", "-h", "box", "-w", "/w", "-u", "1000:100", "img", "id"],
    ["--entrypoint", "", "--entrypoint=echo", "img", "-n", "x"],
    ["-v", "/a:/b:ro", "--volume=vol:/c", "--mount", "type=tmpfs,target=/t", "--tmpfs", "/x",
     "img"],
    ["--read-only", "--init", "--privileged", "-P", "--expose", "80", "img"],
    ["-l", "a=b", "--label", "c=d", "--add-host", "h:1.2.3.4", "--dns", "9.9.9.9", "img"],
    ["--group-add", "wheel", "--group-add", "10", "--cap-add", "NET_ADMIN",
     "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "img"],
    ["--stop-signal", "SIGINT", "--restart", "on-failure:3", "--pull", "never", "img"],
    ["--name", "-x", "img"],  # a value may look like an option
    ["--rm", "img", "--name", "ignored"],  # after the image: the command's
    ["-d", "--rm", "--restart", "no", "img"],
    ["-"],  # the image may be called "-"
]

CLICK_ONLY = [
    [],  # no image
    ["--rm"],
    ["--help"],
    ["--bogus", "img"],
    ["-x", "img"],
    ["--stop-timeout", "3", "img"],  # an int for click to check
    ["--pull", "always", "img"],  # progress output
    ["--pull", "sometimes", "img"],
    ["--rm=yes", "img"],
    ["-d", "--rm", "--restart", "always", "img"],  # click's usage error
    ["--", "img"],
    ["--name"],
    ["-e"],
]


def _click_run(args):
    ctx = cmds.run.make_context("run", list(args))
    p = ctx.params
    return cmds._options(p["image"], p["command"], p, p["detach"])


@pytest.mark.parametrize("args", RUN_ARGS, ids=lambda a: " ".join(a))
def test_run_parses_as_click_does(args):
    parsed = fast.parse_run(args)
    assert parsed is not None
    assert RunOptions(**parsed) == _click_run(args)


@pytest.mark.parametrize("args", CLICK_ONLY, ids=lambda a: " ".join(a) or "(nothing)")
def test_what_the_short_path_leaves_to_click(args):
    assert fast.parse_run(args) is None


def test_every_short_path_option_is_one_of_clicks():
    opts = {o: p.name for p in cmds.run.params for o in p.opts}
    for name, (_field, kind) in fast.RUN_OPTIONS.items():
        assert name in opts, name
        param = next(p for p in cmds.run.params if name in p.opts)
        assert (kind == "flag") == bool(getattr(param, "is_flag", False)), name
        assert (kind == "list") == bool(getattr(param, "multiple", False)), name


@pytest.mark.parametrize("cmd,args", [
    ("stop", ["a"]), ("stop", ["-t", "0", "a", "b"]), ("stop", ["a", "--time=5"]),
    ("stop", ["-t3", "a"]), ("rm", ["-f", "a"]), ("rm", ["-fv", "a", "b"]),
    ("rm", ["a", "--force", "--volumes"]), ("rm", ["--", "-a"]), ("start", ["a", "b"]),
])
def test_stop_rm_start_parse_as_click_does(cmd, args):
    parsed = getattr(fast, "_" + cmd)(args, parse_only=True)
    assert parsed is not None
    opts, names = parsed
    ctx = getattr(cmds, cmd).make_context(cmd, list(args))
    p = dict(ctx.params)
    assert list(p.pop("containers")) == names
    if cmd == "stop":
        t = opts.get("timeout")
        assert p["timeout"] == (int(t) if t is not None else None)
    elif cmd == "rm":
        assert p == {"force": opts.get("force", False), "volumes": opts.get("volumes", False)}


@pytest.mark.parametrize("cmd,args", [
    ("stop", []), ("stop", ["-t", "x", "a"]), ("stop", ["-t"]), ("rm", ["-x", "a"]),
    ("rm", ["--help"]), ("start", ["-a", "x"]), ("start", ["-i", "x"]), ("start", []),
])
def test_stop_rm_start_leave_to_click(cmd, args):
    assert getattr(fast, "_" + cmd)(args, parse_only=True) is None


def test_global_options():
    assert fast._split_globals(["--root", "/r", "run", "x"]) == ({"root": "/r"}, ["run", "x"])
    assert fast._split_globals(["--log-level", "loud", "run"]) is None
    assert fast._split_globals(["--root=/r", "run"]) is None
    assert fast._split_globals(["--version"]) is None


def _listing_defaults(fn) -> dict:
    import inspect

    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


IMAGES_ARGS = [
    [], ["-a"], ["-q"], ["-aq", "--no-trunc"], ["--digests", "--all", "--quiet"],
    ["-f", "dangling=true"], ["--filter", "reference=a*", "-fdangling=false", "--filter=label=x"],
    ["--format", "json"], ["--format={{.ID}}", "--format", "table {{.Tag}}"],
    ["busybox"], ["-q", "busybox:1", "--no-trunc"], ["--", "-q"], ["-f", "-q"],
]
IMAGES_CLICK_ONLY = [
    ["--help"], ["-h"], ["a", "b"], ["-x"], ["--all=1"], ["--format"], ["-f"], ["-qf", "x=y"],
    ["--tree"],
]


@pytest.mark.parametrize("args", IMAGES_ARGS, ids=lambda a: " ".join(a) or "(nothing)")
def test_images_parses_as_click_does(args):
    from pbox.commands import images as icmds
    from pbox.commands import listing

    parsed = fast._images(args, parse_only=True)
    assert parsed is not None
    opts, names = parsed
    got = {**_listing_defaults(listing.images_text), **opts,
           "repository": names[0] if names else None}
    p = dict(icmds.images.make_context("images", list(args)).params)
    p["filters"] = list(p["filters"])
    got["filters"] = list(got["filters"])
    assert got == p


@pytest.mark.parametrize("args", IMAGES_CLICK_ONLY, ids=" ".join)
def test_images_leaves_to_click(args):
    assert fast._images(args, parse_only=True) is None


PS_ARGS = [
    [], ["-a"], ["-aq"], ["-l", "--no-trunc"], ["-n", "2"], ["--last=0", "-s"],
    ["--size", "--latest", "--all", "--quiet"], ["-f", "status=exited", "--filter=name=x"],
    ["--format", "{{.Names}}"], ["-n3", "--format=json", "-fid=abc"],
]
PS_CLICK_ONLY = [
    ["--help"], ["-h"], ["x"], ["-n", "x"], ["-n", "-1"], ["-n"], ["--bogus"], ["-an", "1"],
    ["--", "x"],
]


@pytest.mark.parametrize("args", PS_ARGS, ids=lambda a: " ".join(a) or "(nothing)")
def test_ps_parses_as_click_does(args):
    from pbox.commands import listing

    parsed = fast._ps(args, parse_only=True)
    assert parsed is not None
    opts, names = parsed
    assert names == []
    got = {**_listing_defaults(listing.ps_text), **opts}
    got["filters"] = list(got["filters"])
    p = dict(cmds.ps.make_context("ps", list(args)).params)
    p["filters"] = list(p["filters"])
    assert got == p


@pytest.mark.parametrize("args", PS_CLICK_ONLY, ids=" ".join)
def test_ps_leaves_to_click(args):
    assert fast._ps(args, parse_only=True) is None


def test_every_listing_option_is_one_of_clicks():
    from pbox.commands import images as icmds

    for cmd, flags, values in ((icmds.images, fast.IMAGES_FLAGS, fast.IMAGES_VALUES),
                               (cmds.ps, fast.PS_FLAGS, fast.PS_VALUES)):
        by_opt = {o: p for p in cmd.params for o in p.opts}
        for name, field in {**flags, **values}.items():
            assert name in by_opt, name
            assert by_opt[name].name == field, name
            assert bool(getattr(by_opt[name], "is_flag", False)) == (name in flags), name


def test_group_forms_take_the_short_path():
    assert fast._GROUP_COMMANDS[("image", "ls")] is fast._images
    assert fast._GROUP_COMMANDS[("container", "ls")] is fast._ps
    assert fast._GROUP_COMMANDS[("image", "pull")] is fast._pull
    assert fast._GROUP_COMMANDS[("image", "push")] is fast._push


def test_logging_configured_on_first_import():
    import os
    import subprocess
    import sys

    code = ("import sys; from pbox.commands import fast; fast.configure_logging('warning'); "
            "assert 'logging' not in sys.modules; import logging; "
            "logging.getLogger('pbox.x').warning('hi'); "
            "assert not any(isinstance(f, fast._ConfigureLogging) for f in sys.meta_path)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=root, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "WARNING[pbox.x] hi\n"


BUILD_ARGS = [
    ["."], ["-t", "me/app:1", "."], ["-q", "-t", "a", "--tag=b", "ctx"],
    ["--no-cache", "--pull", "--squash", "-f", "Dockerfile.x", "ctx"],
    ["--build-arg", "A=1", "--build-arg=B", "--label", "k=v", "--target", "s", "."],
    ["--network", "none", "--iidfile", "/tmp/id", "-fD", "-tx", "."], [".", "-q"],
    ["--", "-"], ["-"],
]
BUILD_CLICK_ONLY = [
    [], ["a", "b"], ["--help"], ["-h"], ["--secret", "id=x,src=y", "."],
    ["--platform", "linux/amd64", "."], ["--progress", "plain", "."], ["--format", "oci", "."],
    ["-qx", "."], ["-t"], ["--bogus", "."], ["--quiet=1", "."],
]


def test_the_installed_command_enters_without_click(tmp_path):
    """The console script of pyproject.toml reaches the short path without importing
    click (pbox.cli does, at its top), with the garbage collector on but looking at new
    objects less often (fast.GC_YOUNG_THRESHOLD)."""
    import os
    import re
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "pyproject.toml")) as f:
        target = re.search(r'^pbox = "([\w.]+):(\w+)"', f.read(), re.M)
    module, func = target.groups()
    # the short path may end with os._exit: say there, or at exit, whether click was in
    code = (f"import os, sys\n"
            f"sys.argv = ['pbox', '--root', {str(tmp_path)!r}, '--runroot', "
            f"{str(tmp_path / 'run')!r}, 'images', '-q']\n"
            f"_exit = os._exit\n"
            f"def report(code):\n"
            f"    import gc\n"
            f"    sys.stderr.write(f'gc {{gc.isenabled()}} {{gc.get_threshold()[0]}}; ')\n"
            f"    sys.stderr.write('click imported' if 'click' in sys.modules else 'no click')\n"
            f"    sys.stderr.flush()\n"
            f"    _exit(code)\n"
            f"os._exit = report\n"
            f"import atexit; atexit.register(report, 0)\n"
            f"from {module} import {func}; {func}()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert out.returncode == 0, out.stderr
    assert out.stderr.endswith("no click"), out.stderr
    assert f"gc True {fast.GC_YOUNG_THRESHOLD}; " in out.stderr


PUSH_ARGS = [
    ["img"], ["img", "reg:5000/a/b:1"], ["-q", "img", "dest"], ["img", "--quiet"],
    ["--tls-verify", "--cert-dir", "/c", "img"], ["--no-tls-verify", "img"],
    ["--compression-format", "zstd", "--format=oci", "img"], ["--format", "v2s2", "img"],
    ["--creds", "u:p", "--digestfile", "/tmp/d", "img", "dest"], ["--", "-"],
]
PUSH_CLICK_ONLY = [
    [], ["a", "b", "c"], ["--help"], ["-h"], ["--compression-format", "lz4", "img"],
    ["--format", "docker", "img"], ["--tls-verify=false", "img"],
    ["--tls-verify", "--no-tls-verify", "img"], ["--bogus", "img"], ["--creds"],
]


PULL_ARGS = [
    ["img"], ["-q", "reg:5000/a/b@sha256:" + "0" * 64], ["img", "--quiet"],
    ["--platform", "linux/arm64", "img"], ["--platform=linux/arm/v7", "--creds", "u:p", "img"],
    ["--tls-verify", "--cert-dir", "/c", "img"], ["--no-tls-verify", "img"], ["--", "-"],
]
PULL_CLICK_ONLY = [
    [], ["a", "b"], ["--help"], ["-h"], ["-a", "img"], ["--all-tags", "img"],
    ["--tls-verify=false", "img"], ["--no-tls-verify", "--tls-verify", "img"],
    ["--bogus", "img"], ["--platform"],
]


def _click_command(name):
    """The click command a short-path parser stands for, and its positional names."""
    if name == "build":
        from pbox.commands import build as m

        return m.build, {"path"}
    if name == "push":
        from pbox.commands import distribution as m

        return m.push, {"image"}
    from pbox.commands import images as m

    return m.pull, {"image"}


# name -> (the parser, arguments it takes, arguments it leaves to click, flags, values,
# defaults)
SHORT_PATHS = {
    "build": (fast.parse_build, BUILD_ARGS, BUILD_CLICK_ONLY, fast.BUILD_FLAGS,
              fast.BUILD_VALUES, fast.BUILD_DEFAULTS),
    "push": (fast.parse_push, PUSH_ARGS, PUSH_CLICK_ONLY, fast.PUSH_FLAGS, fast.PUSH_VALUES,
             fast.PUSH_DEFAULTS),
    "pull": (fast.parse_pull, PULL_ARGS, PULL_CLICK_ONLY, fast.PULL_FLAGS, fast.PULL_VALUES,
             fast.PULL_DEFAULTS),
}


@pytest.mark.parametrize("name, args", [(n, a) for n, v in SHORT_PATHS.items() for a in v[1]],
                         ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_short_path_parses_as_click_does(name, args):
    parse = SHORT_PATHS[name][0]
    command, _ = _click_command(name)
    parsed = parse(args)
    assert parsed is not None
    assert parsed == dict(command.make_context(name, list(args)).params)


@pytest.mark.parametrize("name, args", [(n, a) for n, v in SHORT_PATHS.items() for a in v[2]],
                         ids=lambda x: x if isinstance(x, str) else " ".join(x) or "(nothing)")
def test_short_path_leaves_to_click(name, args):
    assert SHORT_PATHS[name][0](args) is None


@pytest.mark.parametrize("name", sorted(SHORT_PATHS))
def test_every_build_pull_push_option_is_one_of_clicks(name):
    _, _, _, flags, values, defaults = SHORT_PATHS[name]
    command, positional = _click_command(name)
    names = {n for p in command.params
             for n in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
    assert set(flags) | set(values) <= names
    assert set(defaults) | positional == {p.name for p in command.params}
