"""A user's mistakes, as a shell script would make them, through every command.

The rule: each one ends in exactly one ``Error: ...`` line on stderr (the last
one, or followed by click's ``See 'pbox CMD --help'.`` for a usage error), the
exit code docker gives (125 pbox's own errors; 1 where docker's daemon answers,
as `rm`/`stop` of an unknown container; 126/127 a command that cannot be run),
never a Python traceback, and nothing in the store lost or half-written.

The tables are swept against one store per test (``sweep``), so a failure lists
every case that broke, with its command and output.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
from harness import has_subuid

# A path the user cannot reach.  Not one of the user's own: pbox reads some files as
# root of its user namespace, which may enter any directory of the user's.
NOPERM = "/root/x"
CAN_DENY = os.getuid() != 0 and os.path.isdir("/root") and not os.access("/root", os.X_OK)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def problems(result, rc: int, fragment: str = "") -> list[str]:
    """What is wrong with a failed command's result (empty when it is right)."""
    out = []
    if result.returncode != rc:
        out.append(f"exit code {result.returncode}, expected {rc}")
    if "Traceback" in result.output:
        out.append("a traceback")
    # The one-time notice of the single-id mapping, and what docker prints too before
    # failing ("Unable to find image", "Using default tag", the --password warning).
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("WARN: ")]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    if len(errors) != 1:
        out.append(f"{len(errors)} 'Error: ' lines on stderr")
    elif not (lines[-1] == errors[0] or (
            len(lines) >= 2 and lines[-2] == errors[0] and lines[-1].startswith("See '")
            and lines[-1].endswith(" --help'."))):
        out.append("the Error line is not the last one")
    if fragment and fragment not in result.stderr:
        out.append(f"{fragment!r} not in stderr")
    return out


def sweep(run_pbox, cases, **subst) -> None:
    """Run each (args, rc, fragment) case; fail listing all that went wrong.

    ``{name}`` in an argument is replaced from ``subst``."""
    __tracebackhide__ = True
    failed = []
    for case in cases:
        args, rc = case[0], case[1]
        fragment = case[2] if len(case) > 2 else ""
        argv = [a.format(**subst) for a in args]
        r = run_pbox(*argv, check=False, timeout=120)
        wrong = problems(r, rc, fragment.format(**subst))
        if wrong:
            failed.append(f"pbox {' '.join(argv)}: {'; '.join(wrong)}\n{r.describe()}")
    assert not failed, f"{len(failed)} of {len(cases)} cases:\n\n" + "\n\n".join(failed)


def store_state(root: str) -> dict:
    """What a failed command must leave as it was: images, names, layers, blobs,
    containers, volumes, networks; and the temp area (which must end empty)."""
    state = {}
    for sub in ("images", "layers", "blobs/sha256", "containers", "volumes", "networks",
                "tmp"):
        path = os.path.join(root, sub)
        state[sub] = sorted(n for n in os.listdir(path) if not n.endswith(".lock")) \
            if os.path.isdir(path) else []
    with open(os.path.join(root, "repositories.json")) as f:
        state["repositories"] = json.load(f)
    return state


@pytest.fixture
def scene(bb, run_pbox, pbox_root, tmp_path):
    """A store with the busybox image, a running container `running`, a created one
    `stopped`, a directory and a missing path."""
    run_pbox("run", "-d", "--name", "running", bb, "sleep", "1000")
    run_pbox("create", "--name", "stopped", bb, "true")
    adir = tmp_path / "adir"
    adir.mkdir()
    (adir / "Dockerfile").write_text(f"FROM {bb}\n")
    before = store_state(pbox_root.root)
    yield dict(bb=bb, dir=str(adir), nope=str(tmp_path / "nonexistent"),
               noperm=NOPERM, tmp=str(tmp_path))
    after = store_state(pbox_root.root)
    assert after["tmp"] == [], "temp entries left in the store"
    after.pop("tmp")
    before.pop("tmp")
    assert after == before, "a failed command changed the store"
    run_pbox("rm", "-f", "running", "stopped")


USAGE = [
    (["nosuchcmd"], 125, "unknown command"),
    (["run", "--nosuchflag", "{bb}", "true"], 125, "--nosuchflag"),
    (["--log-level", "nope", "ps"], 125),
    (["--storage-driver", "nope", "ps"], 125),
    (["doctor", "--nosuchflag"], 125),
] + [(cmd.split(), 125, "Missing argument") for cmd in (
    "attach", "build", "commit", "cp", "create", "diff", "exec", "exec running", "export",
    "history", "import", "inspect", "kill", "logs", "port", "pull", "push", "rename",
    "rename stopped", "restart", "rm", "rmi", "run", "save", "search", "start", "stop", "tag",
    "tag {bb}", "top", "wait", "image inspect", "image rm", "image tag", "image pull",
    "image save", "image import", "image history", "container run", "container create",
    "container exec", "container logs", "container rm", "container start", "container wait",
    "container rename", "container cp", "volume inspect", "volume rm", "network create",
    "network inspect", "network rm", "network connect", "network disconnect",
    "network connect bridge",
)] + [([group, "nosuch"], 125, "No such command") for group in (
    "image", "container", "volume", "network", "system", "builder")]


def test_usage_errors(scene, run_pbox):
    sweep(run_pbox, USAGE, **scene)


UNKNOWN = [
    (["start", "nosuch"], 1, "No such container: nosuch"),
    (["stop", "nosuch"], 1, "No such container: nosuch"),
    (["kill", "nosuch"], 1, "No such container: nosuch"),
    (["restart", "nosuch"], 1, "No such container: nosuch"),
    (["rm", "nosuch"], 1, "No such container: nosuch"),
    (["wait", "nosuch"], 1, "No such container: nosuch"),
    (["wait", "stopped", "nosuch"], 1, "No such container: nosuch"),
    (["logs", "nosuch"], 125, "No such container: nosuch"),
    (["rename", "nosuch", "x"], 125, "No such container: nosuch"),
    (["port", "nosuch"], 125, "No such container: nosuch"),
    (["exec", "nosuch", "true"], 125, "No such container: nosuch"),
    (["attach", "nosuch"], 125, "No such container: nosuch"),
    (["top", "nosuch"], 125, "No such container: nosuch"),
    (["diff", "nosuch"], 1, "No such container: nosuch"),
    (["commit", "nosuch"], 1, "No such container: nosuch"),
    (["export", "nosuch"], 1, "No such container: nosuch"),
    (["cp", "nosuch:/etc/passwd", "{tmp}/x"], 1, "No such container: nosuch"),
    (["inspect", "nosuch"], 1, "No such object: nosuch"),
    (["inspect", "--type", "image", "nosuch"], 1, "No such image: nosuch"),
    (["container", "inspect", "nosuch"], 1, "No such container: nosuch"),
    (["history", "nosuch"], 125, "No such image: nosuch"),
    (["tag", "nosuch", "x"], 125, "No such image: nosuch"),
    (["rmi", "nosuch"], 125, "No such image: nosuch"),
    (["image", "rm", "nosuch"], 125, "No such image: nosuch"),
    (["image", "inspect", "nosuch"], 1, "No such image: nosuch"),
    (["save", "-o", "{tmp}/x.tar", "nosuch"], 125, "No such image: nosuch"),
    (["push", "nosuch"], 125, "No such image: nosuch"),
    (["run", "--rm", "--pull", "never", "nothere", "true"], 125, "nothere"),
    (["volume", "inspect", "nosuch"], 1, "No such volume: nosuch"),
    (["volume", "rm", "nosuch"], 1, "No such volume: nosuch"),
    (["network", "inspect", "nosuch"], 1, "nosuch not found"),
    (["network", "rm", "nosuch"], 1, "nosuch not found"),
    (["network", "connect", "nosuch", "running"], 125, "nosuch not found"),
    (["network", "connect", "bridge", "nosuch"], 125, "No such container: nosuch"),
    (["network", "disconnect", "nosuch", "running"], 125, "nosuch not found"),
    (["run", "--rm", "--network", "nonet", "{bb}", "true"], 125, "nonet"),
    (["run", "--rm", "--network", "container:nosuch", "{bb}", "true"], 125, "nosuch"),
]


def test_unknown_names(scene, run_pbox):
    sweep(run_pbox, UNKNOWN, **scene)


REFERENCES = [
    ([*cmd, ref], 125, "invalid reference format")
    for ref in ("UPPER", "a::b", "bad@sha256:xyz")
    for cmd in (["run", "--rm"], ["create"], ["pull"], ["history"], ["rmi"],
                ["tag", "{bb}"], ["image", "tag", "{bb}"], ["import", "{tmp}/bb.tar"])
] + [
    (["push", "UPPER"], 125, "invalid reference format"),
    (["commit", "stopped", "UPPER"], 1, "invalid reference format"),
    (["commit", "stopped", "a::b"], 1, "invalid reference format"),
    (["build", "-t", "UPPER", "{dir}"], 125, "invalid tag"),
    (["build", "-t", "a::b", "{dir}"], 125, "invalid tag"),
    (["tag", "{bb}", ""], 125, "invalid reference format"),
    (["rmi", ""], 125, "invalid reference format"),
    (["rename", "stopped", "UP/PER"], 125, "Invalid container name"),
    (["run", "--rm", "--name", "bad/name", "{bb}", "true"], 125, "Invalid container name"),
    (["volume", "create", "UP/PER"], 125, "invalid characters"),
    (["network", "create", "UP/PER"], 125, "invalid network name"),
]


def test_invalid_references_and_names(scene, run_pbox, tmp_path, busybox_rootfs):
    import tarfile

    with tarfile.open(tmp_path / "bb.tar", "w") as t:
        t.add(busybox_rootfs, arcname=".")
    sweep(run_pbox, REFERENCES, **scene)


RUN_FLAGS = [
    (["-p", "abc"], "invalid container port 'abc'"),
    (["-p", "99999:80"], "invalid host port"),
    (["-p", "1.2.3:80:80"], "invalid IP address"),
    (["-p", "80/sctpx"], "invalid protocol"),
    (["--expose", "abc"], "invalid exposed port"),
    (["--memory", "lots"], "invalid size: 'lots'"),
    (["--cpus", "-1"], "--cpus"),
    (["--cpus", "abc"], "--cpus"),
    (["--restart", "sometimes"], "invalid restart policy"),
    (["--restart", "on-failure:x"], "invalid restart policy"),
    (["--restart", "always"], "conflicting options"),
    (["-e", "=x"], "invalid environment variable"),
    (["-e", ""], "invalid environment variable"),
    (["-l", "=x"], "invalid label"),
    (["--mount", "type=nope,target=/x"], "unknown type 'nope'"),
    (["--mount", "type=nope"], "target is required"),
    (["--mount", "type=bind,target=/x"], "needs a source"),
    (["--mount", "type=bind,source={nope},target=/x"], "does not exist"),
    (["--mount", "type=volume,target=relative"], "absolute"),
    (["-v", ":/x"], "empty section"),
    (["-v", "/tmp:relative"], "must be absolute"),
    (["-v", "/tmp:/x:bogus"], "unknown option 'bogus'"),
    (["-v", "a:b:c:d"], "invalid volume specification"),
    (["-v", "{nope}:/x"], "does not exist"),
    (["--tmpfs", "relative"], "must be absolute"),
    (["--tmpfs", "/x:size=lots"], "bad size"),
    (["--platform", "foo"], "invalid platform"),
    (["--platform", "linux/nope"], "invalid platform"),
    (["-w", "relative"], "absolute path"),
    (["-w", "/etc/passwd"], "not a directory"),
    (["--dns", "notanip"], "not an ip address"),
    (["--security-opt", "nope"], "--security-opt"),
    (["--add-host", "nocolon"], "--add-host"),
    (["--cap-add", "NOPE"], "unknown capability"),
    (["--stop-signal", "NOPE"], "invalid signal"),
    (["--pull", "sometimes"], "'sometimes'"),
    (["--shm-size", "x"], "invalid size"),
    (["--stop-timeout", "x"], "'x'"),
    (["--user", "nosuchuser"], "unable to find user nosuchuser"),
    (["--user", "0:nosuchgroup"], "unable to find group nosuchgroup"),
    (["--group-add", "nosuchgroup"], "nosuchgroup"),
    (["--env-file", "{nope}"], "No such file or directory"),
    (["--env-file", "{dir}"], "Is a directory"),
    (["--name", "running"], "already in use"),
    (["--network", "host:x"], "host:x"),
    (["--name", "a" * 256], "longer than 255"),
    (["--hostname", "h" * 65], "longer than 64"),
    (["--shm-size", "9" * 400 + "g"], "invalid size"),
    (["--memory", "9" * 400], "invalid size"),
    (["--tmpfs", "/x:size=" + "9" * 400 + "g"], "bad size"),
    (["--cpus", "inf"], "--cpus"),
    (["-u", "9" * 20], "uids and gids"),
]


def test_run_flag_values(scene, run_pbox):
    """Bad values of run's flags: 125 before anything is pulled or made, through the
    short path of run (--rm, -d) and the full one (create)."""
    cases = [(["run", "--rm", *flags, "{bb}", "true"], 125, fragment)
             for flags, fragment in RUN_FLAGS]
    # what only the start finds out (as docker's create, pbox's succeeds)
    at_start = (["--restart", "always"], ["-w", "/etc/passwd"], ["--user", "nosuchuser"],
                ["--user", "0:nosuchgroup"], ["--group-add", "nosuchgroup"])
    cases += [(["create", *flags, "{bb}", "true"], 125, fragment)
              for flags, fragment in RUN_FLAGS if flags not in at_start]
    cases += [(["run", "-d", *flags, "{bb}", "true"], 125, fragment)
              for flags, fragment in RUN_FLAGS[:12] if flags != ["--restart", "always"]]
    cases += [
        (["run", "--rm", "{bb}", "nosuchbinary"], 127, "nosuchbinary"),
        (["run", "--rm", "--entrypoint", "nosuch", "{bb}"], 127, "nosuch"),
        (["run", "--rm", "--init", "{bb}", "nosuchbinary"], 127, "nosuchbinary"),
        (["run", "--rm", "{bb}", "/etc/passwd"], 126, "/etc/passwd"),
        (["run", "--rm", "{bb}", "/etc"], 126, "/etc"),
        (["create", "--name", "stopped", "{bb}", "true"], 125, "already in use"),
    ]
    if CAN_DENY:
        cases.append((["run", "--rm", "--env-file", "{noperm}", "{bb}", "true"], 125,
                      "Permission denied"))
    sweep(run_pbox, cases, **scene)


def test_container_commands(scene, run_pbox):
    cases = [
        (["rm", "running"], 1, "container is running"),
        (["kill", "stopped"], 1, "is not running"),
        (["kill", "-s", "NOPE", "running"], 125, "invalid signal"),
        (["kill", "-s", "999", "running"], 125, "invalid signal"),
        (["stop", "-t", "x", "running"], 125, "'x'"),
        (["rename", "stopped", "running"], 125, "already in use"),
        (["port", "running", "abc"], 125, "invalid container port"),
        (["exec", "stopped", "true"], 125, "is not running"),
        (["container", "exec", "stopped", "true"], 125, "is not running"),
        (["exec", "running", "nosuchbinary"], 127, "nosuchbinary"),
        (["exec", "-d", "running", "nosuchbinary"], 127, "nosuchbinary"),
        (["exec", "running", "/etc/passwd"], 126, "/etc/passwd"),
        (["exec", "-u", "nosuchuser", "running", "true"], 125, "nosuchuser"),
        (["exec", "-u", "9" * 20, "running", "true"], 125, "uids and gids"),
        (["exec", "-w", "relative", "running", "true"], 125, "absolute"),
        (["exec", "-e", "=x", "running", "true"], 125, "invalid environment variable"),
        (["attach", "stopped"], 125, "stopped container"),
        (["top", "stopped"], 125, "is not running"),
        (["logs", "--tail", "x", "running"], 125, "--tail"),
        (["logs", "--since", "bogus", "running"], 125, "invalid time"),
        (["ps", "--filter", "bogus=1"], 125, "invalid filter"),
        (["ps", "--format", "{{{{"], 125, "template"),
        (["ps", "-a", "--format", "{{{{.Nope}}}}"], 125,
         "can't evaluate field Nope in type *formatter.ContainerContext"),
        (["ps", "-n", "x"], 125, "'x'"),
        (["container", "ls", "--filter", "bogus=1"], 125, "invalid filter"),
        (["inspect", "-f", "{{{{.Nope", "{bb}"], 125, "template"),
        (["inspect", "--type", "bogus", "{bb}"], 125, "'bogus'"),
        (["commit", "-c", "BOGUS x", "stopped", "img2"], 1, "BOGUS"),
        (["cp", "stopped:/nonexistent", "{tmp}/x"], 1, "/nonexistent"),
        (["cp", "{nope}", "stopped:/tmp"], 1, "no such file"),
        (["cp", "stopped:/etc/passwd", "{nope}/dir/x"], 1, "no such directory"),
        (["cp", "stopped:/etc", "{dir}/Dockerfile"], 1, "directory to a file"),
        (["cp", "{dir}/Dockerfile", "stopped:/nonexistent/dir/x"], 1, "no such directory"),
        (["cp", "{dir}/Dockerfile", "stopped:/etc/passwd/x"], 1, "not a directory"),
        (["cp", "a", "b"], 1, "container"),
        (["cp", "stopped:/etc/passwd", "stopped:/tmp"], 1, "between containers"),
        (["export", "-o", "{nope}/dir/x", "stopped"], 125, "{nope}/dir/x"),
        (["export", "-o", "{dir}", "stopped"], 125, "{dir}"),
        (["container", "prune", "--filter", "bogus=1"], 125),
        (["container", "prune"], 125, "-f"),
    ]
    if CAN_DENY:
        cases += [
            (["cp", "{noperm}", "stopped:/tmp"], 125, "Permission denied"),
            (["cp", "stopped:/etc/passwd", "{noperm}"], 125, "Permission denied"),
        ]
    sweep(run_pbox, cases, **scene)


def test_image_and_archive_commands(scene, run_pbox):
    cases = [
        (["rmi", "{bb}"], 125, "in use"),
        (["images", "--filter", "bogus=1"], 125, "invalid filter"),
        (["images", "--format", "{{{{.Nope"], 125, "template"),
        (["images", "--format", "{{{{.Nope}}}}"], 125,
         "can't evaluate field Nope in type *formatter.ImageContext"),
        (["history", "--format", "{{{{", "{bb}"], 125, "template"),
        # a filter pbox does not keep must not be ignored: -a would remove every image
        (["image", "prune", "-a", "-f", "--filter", "until=24h"], 125, "--filter"),
        (["image", "prune", "-a"], 125, "-f"),
        (["save", "-o", "{nope}/dir/x.tar", "{bb}"], 125, "cannot write {nope}/dir/x.tar"),
        (["save", "-o", "{dir}", "{bb}"], 125, "is a directory"),
        (["load", "-i", "{nope}"], 125, "No such file or directory"),
        (["image", "load", "-i", "{nope}"], 125, "No such file or directory"),
        (["load", "-i", "{dir}"], 125, "not an image archive"),
        (["load", "-i", "{dir}/Dockerfile"], 125, "not a valid image archive"),
        (["load"], 125, "empty"),
        (["import", "{nope}"], 125, "no such file"),
        (["import", "{dir}"], 125, "is a directory"),
        (["import", "{dir}/Dockerfile"], 125),
        (["import", "-", "empty:1"], 125, "empty file"),  # stdin is empty
        (["import", "-c", "BOGUS", "{dir}/Dockerfile"], 125, "BOGUS"),
        (["build", "-f", "nope", "{dir}"], 1, "cannot be read"),
        (["build", "-f", "{dir}", "{dir}"], 1, "Is a directory"),
        (["build", "{nope}"], 125, "{nope}"),
        (["build", "{dir}/Dockerfile"], 125, "not found"),
        (["build", "--build-arg", "=x", "{dir}"], 125, "--build-arg"),
        (["build", "--target", "nope", "{dir}"], 1, "nope"),
        (["build", "--platform", "foo", "{dir}"], 125, "invalid"),
        (["build", "--iidfile", "{nope}/dir/x", "{dir}"], 125, "{nope}/dir/x"),
        (["builder", "prune", "--filter", "bogus=1"], 125),
    ]
    if CAN_DENY:
        cases += [
            (["load", "-i", "{noperm}"], 125, "Permission denied"),
            (["save", "-o", "{noperm}", "{bb}"], 125, "Permission denied"),
        ]
    sweep(run_pbox, cases, **scene)
    # nothing was removed by the refused prune
    assert run_pbox("images", "-q").stdout.strip()


def test_volume_network_system_commands(scene, run_pbox):
    cases = [
        (["volume", "create", "a", "b"], 125, "unexpected extra argument"),
        (["volume", "create", "-d", "bogus", "v"], 125, "bogus"),
        (["volume", "create", "-o", "bogus", "v"], 125, "bogus"),
        (["volume", "prune", "-f", "--filter", "bogus=1"], 125, "invalid filter"),
        (["volume", "prune"], 125, "-f"),
        (["network", "create", ""], 125, "invalid network name"),
        (["network", "create", "--subnet", "notasubnet", "n1"], 125, "invalid subnet"),
        (["network", "create", "--subnet", "10.0.0.0/33", "n1"], 125, "invalid subnet"),
        (["network", "create", "-d", "bogus", "n1"], 125, "bogus"),
        (["network", "create", "--subnet", "10.99.0.0/24", "--gateway", "10.98.0.1", "n1"],
         125, "not in subnet"),
        (["network", "rm", "bridge"], 1, "pre-defined"),
        (["network", "prune", "-f", "--filter", "bogus=1"], 125, "--filter"),
        (["system", "df", "--format", "{{{{"], 125, "template"),
        (["system", "reset"], 125, "-f"),
        (["info", "--format", "{{{{"], 125, "template"),
        (["version", "--format", "{{{{"], 125, "template"),
        (["image", "ls", "--format", "{{{{"], 125, "template"),
    ]
    sweep(run_pbox, cases, **scene)


def test_registry_errors(scene, run_pbox):
    port = closed_port()
    cases = [
        (["pull", "127.0.0.1:{port}/x/y"], 125, "127.0.0.1:{port}"),
        (["run", "--rm", "127.0.0.1:{port}/x/y", "true"], 125, "127.0.0.1:{port}"),
        (["push", "{bb}", "127.0.0.1:{port}/x/y"], 125, "127.0.0.1:{port}"),
        (["login", "-u", "a", "-p", "b", "127.0.0.1:{port}"], 125, "127.0.0.1:{port}"),
        (["search", "127.0.0.1:{port}/x"], 125, "127.0.0.1:{port}"),
        (["login", "127.0.0.1:{port}"], 125, "non TTY"),
        (["logout", "127.0.0.1:{port}"], 125, "not logged in"),
        (["login", "-u", "a", "--password-stdin", "127.0.0.1:{port}"], 125, "no password"),
    ]
    sweep(run_pbox, cases, port=port, **scene)
    r = run_pbox("login", "-u", "a", "--password-stdin", f"127.0.0.1:{port}", input="pw\n",
                 check=False)
    assert not problems(r, 125, f"127.0.0.1:{port}"), r.describe()


def test_environment_and_root(scene, run_pbox, tmp_path):
    """PBOX_* variables and --root/--runroot that cannot be used."""
    cases = [
        (["--root", "/etc/passwd", "ps"], 125, "/etc/passwd"),
        (["--root", "/etc/passwd", "images"], 125, "/etc/passwd"),
        (["--root", "/etc/passwd", "run", "--rm", "{bb}", "true"], 125, "/etc/passwd"),
        (["--root", "/etc/passwd", "pull", "{bb}"], 125, "/etc/passwd"),
    ]
    if os.getuid() != 0 and has_subuid():
        # (only the user namespace's pause process of the subuid mapping needs the
        # run root for a `run --rm`)
        cases.append((["--runroot", "/etc/passwd", "run", "--rm", "{bb}", "true"], 125,
                      "run root /etc/passwd"))
    if CAN_DENY:
        cases += [
            (["--root", "{noperm}", "images"], 125, "Permission denied"),
            (["--root", "{noperm}", "run", "--rm", "{bb}", "true"], 125, "Permission denied"),
        ]
    sweep(run_pbox, cases, **scene)
    env_cases = [
        ({"PBOX_LOG_LEVEL": "bogus"}, ["ps"], "'bogus'"),
        ({"PBOX_LOG_LEVEL": "bogus"}, ["run", "--rm", scene["bb"], "true"], "'bogus'"),
        ({"PBOX_STORAGE_DRIVER": "bogus"}, ["ps"], "'bogus'"),
        ({"PBOX_STORAGE_DRIVER": "bogus"}, ["run", "--rm", scene["bb"], "true"], "'bogus'"),
        ({"PBOX_ROOT": "/etc/passwd"}, ["images"], "/etc/passwd"),
        ({"PBOX_REGISTRIES_CONF": scene["dir"]}, ["pull", "127.0.0.1:1/x"], scene["dir"]),
        ({"PBOX_REGISTRIES_CONF": "/etc/passwd"}, ["pull", "127.0.0.1:1/x"], "/etc/passwd"),
    ]
    if os.getuid() != 0 and has_subuid():
        env_cases.append(({"PBOX_RUNROOT": "/etc/passwd"}, ["pull", "127.0.0.1:1/x"],
                          "/etc/passwd"))
    for env, args, fragment in env_cases:
        r = run_pbox(*args, env=env, check=False)
        assert not problems(r, 125, fragment), f"{env}\n{r.describe()}"
        assert "Errno" not in r.stderr, r.describe()


@pytest.mark.skipif(os.getuid() == 0, reason="root's default store is /var/lib/pbox")
def test_default_store_after_joining_the_namespace(scene, run_pbox, tmp_path):
    """`run` of an image not in the default store (no PBOX_ROOT): the short path of run
    joins the user namespace, then hands over to the full CLI to pull.  That one must
    still find the user's store, not root's /var/lib/pbox."""
    run_pbox("run", "--rm", scene["bb"], "true")  # the namespace's pause process is there
    port = closed_port()
    r = run_pbox("run", "--rm", f"127.0.0.1:{port}/x/y", "true", check=False,
                 env={"PBOX_ROOT": None, "XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert not problems(r, 125, f"cannot connect to 127.0.0.1:{port}"), r.describe()
    assert os.path.isdir(tmp_path / "xdg" / "pbox")



def test_reset_keeps_what_is_not_pboxs(bb, run_pbox, tmp_path):
    """`system reset` with a --runroot naming a directory of the user's own removes what
    pbox put there, not the user's files; a --root that is not a store is left alone."""
    runroot = tmp_path / "mine"
    runroot.mkdir()
    (runroot / "keep").write_text("precious\n")
    run_pbox("--runroot", str(runroot), "run", "--rm", bb, "true")
    run_pbox("--runroot", str(runroot), "system", "reset", "-f")
    assert os.listdir(runroot) == ["keep"]
    notstore = tmp_path / "notstore"
    notstore.mkdir()
    (notstore / "version").write_text("1.2.3\n")
    r = run_pbox("--root", str(notstore), "system", "reset", "-f", check=False)
    assert not problems(r, 125, "damaged"), r.describe()
    assert sorted(os.listdir(notstore)) == ["version"]


def test_rmi_of_several_names_reports_each(bb, run_pbox):
    """What was removed is printed, then one Error line per name that failed."""
    run_pbox("tag", bb, "extra:1")
    r = run_pbox("rmi", "extra:1", "nosuch", "UPPER", check=False)
    assert r.returncode == 125 and "Traceback" not in r.output, r.describe()
    assert r.stdout == "Untagged: extra:1\n", r.describe()
    assert r.stderr.splitlines() == ["Error: No such image: nosuch",
                                     "Error: invalid reference format: 'UPPER'"], r.describe()
    assert run_pbox("images", "-q", bb).stdout.strip()


def test_login_with_an_unusable_config_dir(registry_basic, run_pbox, tmp_path):
    """The credentials cannot be saved: one Error line naming where, not a traceback."""
    reg = registry_basic
    afile = tmp_path / "afile"
    afile.write_text("")
    for config_dir in (str(afile), NOPERM) if CAN_DENY else (str(afile),):
        r = run_pbox("login", "-u", reg.username, "--password-stdin", reg.host,
                     input=reg.password + "\n", env={"PBOX_CONFIG_DIR": config_dir},
                     check=False)
        assert not problems(r, 125, config_dir), r.describe()
        assert reg.password not in r.output
        assert "Login Succeeded" not in r.stdout
    r = run_pbox("logout", reg.host, env={"PBOX_CONFIG_DIR": str(afile)}, check=False)
    assert not problems(r, 125), r.describe()


def test_inspect_of_several_unknown_names(scene, run_pbox):
    """One Error line per name, as docker."""
    for cmd, what in ((["inspect"], "No such object: "), (["volume", "inspect"], "No such volume: "),
                      (["container", "inspect"], "No such container: ")):
        r = run_pbox(*cmd, "nosuch1", "nosuch2", check=False)
        assert r.returncode == 1, r.describe()
        assert r.stderr.splitlines() == [f"Error: {what}nosuch1", f"Error: {what}nosuch2"], \
            r.describe()
    r = run_pbox("network", "inspect", "nosuch1", "nosuch2", check=False)
    assert r.stderr.splitlines() == ["Error: network nosuch1 not found",
                                     "Error: network nosuch2 not found"], r.describe()
