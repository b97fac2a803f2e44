"""Test harness: a real registry on loopback, test images, and pbox command runners.

``registry``     ``Registry``: docker-registry in plain / tls / basic / token mode.
``tokenserver``  ``TokenServer``: the bearer-token service of the token mode.
``images``       busybox-based test images, built in Python and pushed over HTTP.

This module holds the small pieces the fixtures share: ``run_command`` (runs a
program, and on an unexpected exit code fails with the command, its exit code
and its output, as podman's ``run_podman`` does) and ``PboxRoot`` (an isolated
set of pbox directories plus the environment that points pbox at them).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field

PBOX_DIR_VARS = ("PBOX_ROOT", "PBOX_RUNROOT", "PBOX_CONFIG_DIR", "PBOX_CACHE_DIR")


class CommandFailed(AssertionError):
    """A command ended with an exit code the test did not expect."""


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr, in that order."""
        return self.stdout + self.stderr

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def describe(self) -> str:
        return format_result(self)


def _indent(text: str) -> str:
    if not text:
        return "    (empty)"
    return "\n".join("    " + line for line in text.rstrip("\n").splitlines())


def format_result(result: CommandResult, expected: int | None = None) -> str:
    cmd = " ".join(shlex.quote(a) for a in result.argv)
    head = f"$ {cmd}\nexit code: {result.returncode}"
    if expected is not None:
        head += f" (expected {expected})"
    return f"{head}\nstdout:\n{_indent(result.stdout)}\nstderr:\n{_indent(result.stderr)}"


def run_command(argv: list[str], *, env: dict[str, str] | None = None,
                input: str | bytes | None = None, check: bool = True,
                expect_rc: int | None = None, timeout: float = 300,
                cwd: str | None = None, echo: bool = True) -> CommandResult:
    """Run ``argv``; fail with everything a reader needs if the exit code is unexpected.

    ``expect_rc`` names the exit code the test wants (e.g. 125); otherwise
    ``check`` asks for 0.  ``echo`` prints the command and its output, which
    pytest shows for failed tests only.
    """
    __tracebackhide__ = True
    if isinstance(input, str):
        input = input.encode()
    try:
        proc = subprocess.run(argv, env=env, input=input, cwd=cwd, timeout=timeout,
                              capture_output=True,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        result = CommandResult(list(argv), -1, (exc.stdout or b"").decode("utf-8", "replace"),
                               (exc.stderr or b"").decode("utf-8", "replace"))
        raise CommandFailed(f"timed out after {timeout}s\n" + format_result(result)) from None
    result = CommandResult(list(argv), proc.returncode, proc.stdout.decode("utf-8", "replace"),
                           proc.stderr.decode("utf-8", "replace"))
    if echo:
        print(format_result(result))
    want = expect_rc if expect_rc is not None else (0 if check else None)
    if want is not None and result.returncode != want:
        raise CommandFailed(format_result(result, want))
    return result


@dataclass
class PboxRoot:
    """pbox's directories for one test, and the environment naming them."""

    root: str
    runroot: str
    config_dir: str
    cache_dir: str
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @classmethod
    def create(cls, base: str, runroot: str | None = None,
               environ: dict[str, str] | None = None) -> PboxRoot:
        """Directories under ``base``; ``runroot`` apart when given (sockets want short paths)."""
        paths = {
            "root": os.path.join(base, "root"),
            "runroot": runroot or os.path.join(base, "run"),
            "config_dir": os.path.join(base, "config"),
            "cache_dir": os.path.join(base, "cache"),
        }
        for path in paths.values():
            os.makedirs(path, exist_ok=True)
        env = dict(os.environ if environ is None else environ)
        for var, key in zip(PBOX_DIR_VARS, ("root", "runroot", "config_dir", "cache_dir")):
            env[var] = paths[key]
        return cls(env=env, **paths)

    def env_with(self, extra: dict[str, str | None] | None = None) -> dict[str, str]:
        """This root's environment plus ``extra`` (a None value removes a variable)."""
        env = dict(self.env)
        for key, value in (extra or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env


def has_subuid() -> bool:
    """Whether this user's ids are fully mapped (root, or a /etc/subuid range)."""
    import pwd

    if os.getuid() == 0:
        return True
    name = pwd.getpwuid(os.getuid()).pw_name
    try:
        with open("/etc/subuid") as f:
            return any(line.split(":")[0] in (name, str(os.getuid())) for line in f)
    except OSError:
        return False


__all__ = ["CommandFailed", "CommandResult", "PboxRoot", "format_result", "has_subuid",
           "run_command"]


_SKOPEO_RUNTIME_DIR: str | None = None


def skopeo_env() -> dict[str, str]:
    """The environment skopeo runs with: a private XDG_RUNTIME_DIR, so it never reads
    or creates the machine's /run/containers (which a root podman may own, unreadable)."""
    global _SKOPEO_RUNTIME_DIR
    if _SKOPEO_RUNTIME_DIR is None:
        import tempfile

        _SKOPEO_RUNTIME_DIR = tempfile.mkdtemp(prefix="skopeo-run-")
    env = dict(os.environ)
    env["XDG_RUNTIME_DIR"] = _SKOPEO_RUNTIME_DIR
    return env


def skopeo(*args: str, text: bool = False):
    """Run skopeo and return its stdout (bytes, or str with ``text``); skips the test
    when skopeo is not installed, fails it with the output on a non-zero exit."""
    import shutil

    import pytest

    exe = shutil.which("skopeo")
    if exe is None:
        pytest.skip("skopeo is not installed")
    proc = subprocess.run([exe, *args], capture_output=True, text=text, timeout=120,
                          env=skopeo_env())
    if proc.returncode != 0:
        pytest.fail(f"$ skopeo {shlex.join(args)}\nexit {proc.returncode}\n"
                    f"{proc.stdout}{proc.stderr}")
    return proc.stdout


def pause_processes(runroot: str) -> list[int]:
    """Live ``pbox-pause`` processes (the holders of the user's namespace, see
    ``pbox.rootless.pause``) that were started for ``runroot``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if f.read().split(b"\0")[0] != b"pbox-pause":
                    continue
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if f"PBOX_RUNROOT={runroot}".encode() in environ:
            found.append(int(name))
    return found


def imported_modules(pbox_cmd: list[str], env: dict[str, str], *args: str,
                     input: str | None = None) -> set[str]:
    """The modules a pbox command imports (``PYTHONPROFILEIMPORTTIME``), in every pbox
    process it runs, forked ones included (they share its stderr)."""
    env = dict(env, PYTHONPROFILEIMPORTTIME="1")
    if pbox_cmd[1:2] == ["-m"]:
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
    r = subprocess.run([*pbox_cmd, *args], env=env,
                       input=input, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return modules_in(r.stderr)


def modules_in(stderr: str) -> set[str]:
    """The modules named in the ``import time:`` lines of a process's stderr
    (``PYTHONPROFILEIMPORTTIME`` or ``-X importtime``)."""
    return {line.split("|")[-1].strip() for line in stderr.splitlines()
            if line.startswith("import time:")}
