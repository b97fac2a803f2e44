"""Fixtures shared by the whole suite.

Registries: ``registry_plain``, ``registry_tls``, ``registry_basic``, ``registry_token``
(one real docker-registry each per session), ``any_registry`` (parametrized over
the four), ``registry_factory`` (fresh, function-scoped registries for tests that
delete, corrupt or stop things: do that only to registries of your own).

Images: ``test_images(registry)`` pushes the standard set once per registry and
returns ``harness.images.StandardImages``; ``busybox_rootfs`` is a busybox tree.

pbox: ``pbox_root`` (isolated PBOX_ROOT / PBOX_RUNROOT / PBOX_CONFIG_DIR /
PBOX_CACHE_DIR and the env naming them; HOME untouched), ``pbox_cmd`` (argv
prefix: ``python -m pbox``, or the program ``PYZ`` with ``--pyz PYZ`` / ``PBOX_TEST_PYZ``)
and ``run_pbox(*args, env=, input=, check=, expect_rc=)``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from harness import CommandResult, PboxRoot, run_command  # noqa: E402
from harness.images import StandardImages, standard_images, write_busybox_rootfs  # noqa: E402
from harness.registry import MODES, Registry  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--pyz", default=None, metavar="PYZ",
                     help="run pbox as the program PYZ (a built .pyz, as installed) instead "
                          "of 'python -m pbox' (default: $PBOX_TEST_PYZ)")


def _pyz_path(config) -> str | None:
    path = config.getoption("--pyz") or os.environ.get("PBOX_TEST_PYZ") or None
    return os.path.abspath(path) if path else None


def pytest_configure(config):
    pyz = _pyz_path(config)
    if pyz and not (os.path.isfile(pyz) and os.access(pyz, os.X_OK)):
        raise pytest.UsageError(f"--pyz / PBOX_TEST_PYZ: {pyz} is not an executable file")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of every registry's log used by a failed test to its report."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    registries = [(name, value) for name, value in getattr(item, "funcargs", {}).items()
                  if isinstance(value, Registry)]
    registries += [("registry_factory", r) for r in getattr(item, "_pbox_registries", [])]
    for name, registry in registries:
        report.sections.append((f"{name}: {registry!r} log (last 60 lines)",
                                registry.log_tail(60)))


# -- registries ------------------------------------------------------------------------------

def _session_registry(tmp_path_factory, mode: str):
    registry = Registry(mode, str(tmp_path_factory.mktemp(f"registry-{mode}")))
    registry.start()
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture(scope="session")
def registry_plain(tmp_path_factory):
    """docker-registry over HTTP, no auth."""
    yield from _session_registry(tmp_path_factory, "plain")


@pytest.fixture(scope="session")
def registry_tls(tmp_path_factory):
    """docker-registry over HTTPS; trust ``ca_path`` (or ``cert_dir``)."""
    yield from _session_registry(tmp_path_factory, "tls")


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory):
    """docker-registry with htpasswd auth over HTTP; ``username``/``password`` (and ``users``)."""
    yield from _session_registry(tmp_path_factory, "basic")


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory):
    """docker-registry with bearer tokens from ``token_server``.

    ``username`` may pull, push and delete; ``reader`` only pull.  Tests that change
    the token server's settings must put them back (or use ``registry_factory``).
    """
    yield from _session_registry(tmp_path_factory, "token")


@pytest.fixture(scope="session", params=MODES)
def any_registry(request):
    """Each of the four session registries in turn."""
    return request.getfixturevalue(f"registry_{request.param}")


@pytest.fixture
def registry_factory(request, tmp_path):
    """``make(mode="plain", **Registry kwargs)``: a started registry of this test alone."""
    made: list[Registry] = []
    request.node._pbox_registries = made

    def make(mode: str = "plain", **kwargs) -> Registry:
        workdir = tmp_path / f"registry-{mode}-{len(made)}"
        registry = Registry(mode, str(workdir), **kwargs)
        made.append(registry)
        return registry.start()

    yield make
    for registry in made:
        registry.close()


# -- images ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def test_images():
    """``test_images(registry)`` -> StandardImages, pushed once per registry."""

    def push(registry: Registry) -> StandardImages:
        return standard_images(registry)

    return push


@pytest.fixture
def bb(registry_plain, test_images, run_pbox):
    """The reference of the test busybox image, already pulled into ``pbox_root``."""
    ref = test_images(registry_plain).busybox.reference
    run_pbox("pull", "-q", ref)
    return ref


@pytest.fixture
def busybox_rootfs(tmp_path):
    """A directory holding a busybox root filesystem (owned by the current user)."""
    return write_busybox_rootfs(str(tmp_path / "rootfs"))


# -- running pbox ----------------------------------------------------------------------------

@pytest.fixture
def pbox_root(tmp_path):
    """An isolated pbox store; ``.env`` is os.environ plus the four PBOX_* directories.

    The run root is a short temp dir of its own, since it will hold unix sockets
    (108-byte path limit); the rest is under the test's tmp_path.
    """
    runroot = tempfile.mkdtemp(prefix="pbox-run-")
    root = PboxRoot.create(str(tmp_path / "pbox"), runroot=runroot)
    try:
        yield root
    finally:
        # Layers hold files owned by subordinate ids, which only pbox (inside its user
        # namespace) can delete.
        env = root.env_with({"PYTHONPATH": REPO_ROOT})
        run_command([sys.executable, "-m", "pbox", "system", "reset", "-f"], env=env,
                    check=False, timeout=120)
        shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture(scope="session")
def pbox_cmd(pytestconfig) -> list[str]:
    """The argv prefix that runs pbox: the built pyz if one was named (run as a program,
    as it is installed: its shell part starts python3), else the source tree."""
    pyz = _pyz_path(pytestconfig)
    if pyz:
        return [pyz]
    return [sys.executable, "-m", "pbox"]


@pytest.fixture
def run_pbox(pbox_cmd, pbox_root):
    """``run_pbox(*args, env=None, input=None, check=True, expect_rc=None, timeout=300, cwd=None)``.

    Runs pbox in a subprocess against ``pbox_root`` (``env`` adds to / overrides
    its environment; a None value removes a variable) and returns a
    ``CommandResult``.  Unless the exit code is ``expect_rc`` (or 0 with ``check``)
    the test fails showing the command, the exit code and the output.
    """
    module_mode = pbox_cmd[1:2] == ["-m"]

    def run(*args, env: dict | None = None, input: str | bytes | None = None,
            check: bool = True, expect_rc: int | None = None, timeout: float = 300,
            cwd: str | None = None) -> CommandResult:
        __tracebackhide__ = True
        full_env = pbox_root.env_with(env)
        if module_mode:
            # run the source tree, wherever the test runs from
            path = full_env.get("PYTHONPATH")
            full_env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + path if path else "")
        return run_command([*pbox_cmd, *(str(a) for a in args)], env=full_env, input=input,
                           check=check, expect_rc=expect_rc, timeout=timeout, cwd=cwd)

    return run
