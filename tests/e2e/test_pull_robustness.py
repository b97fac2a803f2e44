"""`pbox pull` under abuse: kill -9 at random moments, concurrent pulls, rmi during a pull.

After every blow the store must be consistent (``store_problems``): no record
pointing at something missing, nothing half written under a real name.  The next
pull completes and does not download again what was already complete, and it
clears ``tmp/`` of what dead writers left there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import signal
import subprocess
import time

import pytest
from harness import pause_processes, storeview
from harness.images import REPO_PREFIX, LayerSpec, RegistryClient, build_image, busybox_layer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MiB = 1024 * 1024
HEX = set("0123456789abcdef")

pytestmark = [pytest.mark.slow, pytest.mark.idmap]


# -- images --------------------------------------------------------------------------------


def seeded_bytes(seed: str, size: int) -> bytes:
    """Incompressible, reproducible bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def data_layer(name: str, size: int) -> LayerSpec:
    return LayerSpec(f"/bin/sh -c #(nop) COPY {name}").file(f"/data/{name}",
                                                             seeded_bytes(name, size))


@functools.cache
def kill_image():
    """busybox plus five data layers of different sizes: pulled three at a time, they
    finish at different moments, so a kill finds some complete and some not."""
    sizes = [2, 5, 3, 6, 3]
    layers = [busybox_layer()] + [data_layer(f"kill-{i}.bin", mb * MiB)
                                  for i, mb in enumerate(sizes)]
    return build_image(layers, labels={"org.opencontainers.image.title": "kill"})


BIG_BASE = 8 * MiB


@functools.cache
def base_layers() -> tuple:
    return (busybox_layer(), data_layer("base.bin", BIG_BASE))


def on_base(name: str, extra: LayerSpec):
    return build_image([*base_layers(), extra],
                       labels={"org.opencontainers.image.title": name})


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else
                   "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


# -- running pbox in the background ------------------------------------------------------


def start_pbox(pbox_cmd, pbox_root, *args) -> subprocess.Popen:
    """pbox in a session of its own (so the test can find and kill all of it).

    ``--root`` is given on the command line, not only in the environment, so every
    process of this store is recognisable by its command line."""
    env = pbox_root.env_with(None)
    if pbox_cmd[1:2] == ["-m"]:
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + path if path else "")
    return subprocess.Popen([*pbox_cmd, "--root", pbox_root.root, *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def living(session: int, marker: str) -> list[str]:
    """Processes (not zombies) in ``session`` or with ``marker`` in their command line."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        state, sid = fields[0], int(fields[3])
        if state in ("Z", "X"):
            continue
        if sid == session or marker in cmdline:
            found.append(f"{name} [{state}] {cmdline.strip()}")
    return found


def wait_all_gone(session: int, marker: str, bound: float = 15.0) -> list[str]:
    """What is still alive once every process had ``bound`` seconds to die."""
    deadline = time.monotonic() + bound
    while True:
        alive = living(session, marker)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.01)


# -- the store checker -----------------------------------------------------------------------


def _hexname(name: str) -> bool:
    return len(name) == 64 and set(name) <= HEX


def _load_json(path: str, problems: list[str]):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        problems.append(f"{path}: missing")
    except ValueError as e:
        problems.append(f"{path}: not JSON ({e})")
    return None


def store_problems(root: str, *, dead_temps_ok: bool = False) -> list[str]:
    """Everything that breaks the store's promises; empty when consistent.

    ``dead_temps_ok``: right after a kill -9, a dot temp file its dead writer left next
    to its target is no breach (no reader sees it; the next command removes it).

    Every image record's config, manifest and layers exist; every layer has its
    layer.json and diff/; repositories.json names only existing records; every blob
    matches its name; under the real names there is nothing else (a half-written
    file has a temp name, and temp names live in tmp/ or are dot files next to
    their target until renamed).
    """
    problems: list[str] = []
    if not os.path.exists(os.path.join(root, "version")):
        return problems if not os.path.exists(root) else [f"{root}: no version file"]
    blobs = os.path.join(root, "blobs", "sha256")
    for name in sorted(os.listdir(blobs)):
        path = os.path.join(blobs, name)
        if name.startswith("."):
            if not (dead_temps_ok and _dead_writer(name)):
                problems.append(f"blobs/sha256/{name}: a leftover temp file")
            continue
        if not _hexname(name):
            problems.append(f"blobs/sha256/{name}: not a digest")
            continue
        with open(path, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != name:
                problems.append(f"blobs/sha256/{name}: content does not match its name")
    layers_dir = os.path.join(root, "layers")
    layers = set()
    for name in sorted(os.listdir(layers_dir)):
        path = os.path.join(layers_dir, name)
        if not _hexname(name):
            problems.append(f"layers/{name}: not a layer (temp name under layers/)")
            continue
        info = _load_json(os.path.join(path, "layer.json"), problems)
        if not os.path.isdir(os.path.join(path, "diff")):
            problems.append(f"layers/{name}: no diff/")
        if info is not None:
            if info.get("chain_id") != "sha256:" + name:
                problems.append(f"layers/{name}: layer.json names {info.get('chain_id')}")
            layers.add("sha256:" + name)
    images_dir = os.path.join(root, "images")
    images = set()
    for name in sorted(os.listdir(images_dir)):
        if dead_temps_ok and name.startswith(".") and _dead_writer(name):
            continue
        if not (name.endswith(".json") and _hexname(name[:-5])):
            problems.append(f"images/{name}: not an image record")
            continue
        rec = _load_json(os.path.join(images_dir, name), problems)
        if rec is None:
            continue
        image_id = "sha256:" + name[:-5]
        images.add(image_id)
        if rec.get("id") != image_id:
            problems.append(f"images/{name}: the record says id {rec.get('id')}")
        for digest in (image_id, rec.get("manifest_digest", "")):
            if not os.path.exists(os.path.join(blobs, digest.partition(":")[2] or "-")):
                problems.append(f"images/{name}: blob {digest} is missing")
        if len(rec.get("layers", [])) != len(rec.get("diff_ids", [])):
            problems.append(f"images/{name}: layers and diff ids differ in number")
        for chain in rec.get("layers", []):
            if chain not in layers:
                problems.append(f"images/{name}: layer {chain} is missing")
    if os.path.exists(os.path.join(root, "repositories.json")):
        repos = _load_json(os.path.join(root, "repositories.json"), problems) or {}
        for kind in ("tags", "digests"):
            for ref, image_id in repos.get(kind, {}).items():
                if image_id not in images:
                    problems.append(f"repositories.json: {ref} -> {image_id}, not an image")
    for name in os.listdir(root):
        if ".tmp-" in name and not (dead_temps_ok and _dead_writer(name)):
            problems.append(f"{name}: a leftover temp file")
    return problems


def _dead_writer(name: str) -> bool:
    """``.NAME.tmp-PID-RANDOM`` whose writer PID is gone."""
    try:
        pid = int(name.rsplit(".tmp-", 1)[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    return not os.path.exists(f"/proc/{pid}")


def check_image(root: str, img) -> None:
    """The stored image is exactly the pushed one: same paths, kinds and file contents."""
    __tracebackhide__ = True
    view = storeview.merged(root, img.config_digest)
    assert sorted(view) == sorted(img.files)
    for path, exp in img.files.items():
        diff, st = view[path]
        if exp.kind == "file":
            with open(diff + path, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == exp.sha256, path
        elif exp.kind == "symlink":
            assert os.readlink(diff + path) == exp.target, path


def tmp_entries(root: str) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(root, "tmp")))
    except FileNotFoundError:
        return []


def complete_layers(root: str, chains: list[str]) -> list[str]:
    return [c for c in chains
            if os.path.exists(os.path.join(root, "layers", c[7:], "layer.json"))]


def plant_dead_entries(root: str, count: int) -> None:
    """What writers killed at any point leave in tmp/ (see ``TempEntry``): an entry
    with its lock file, a lock file alone, a lock file not yet named (``.*.new``);
    none of them locked, since their writers are gone."""
    tmp = os.path.join(root, "tmp")
    os.makedirs(tmp, exist_ok=True)
    for i in range(count):
        base = os.path.join(tmp, f"layer-dead{i:06x}")
        kind = i % 3
        if kind == 0:
            os.makedirs(os.path.join(base, "diff", "etc"))
            with open(os.path.join(base, "diff", "etc", "half-written"), "wb") as f:
                f.write(b"x" * 100)
        if kind in (0, 1):
            open(base + ".lock", "wb").close()
        else:
            open(os.path.join(tmp, f".layer-dead{i:06x}.new"), "wb").close()


# -- 1. kill -9 ----------------------------------------------------------------------------

KILLS = 20
SEED = 1123


def test_kill9_at_random_moments_leaves_a_consistent_store(registry_plain, pbox_cmd, pbox_root,
                                                           run_pbox):
    root = pbox_root.root
    img = RegistryClient(registry_plain).push_image(f"{REPO_PREFIX}/kill", "latest",
                                                    kill_image())
    ref = img.reference
    chains = chain_ids(img.diff_ids)
    blob_of = dict(zip(chains, img.layer_digests))

    # one whole pull first: how long one takes is the range the kills are spread over
    started = time.monotonic()
    run_pbox("pull", "-q", ref)
    duration = time.monotonic() - started
    check_image(root, img)
    run_pbox("rmi", ref)
    assert store_problems(root) == [] and os.listdir(os.path.join(root, "layers")) == []

    rng = random.Random(SEED)
    log = []
    partial = dead_left = 0
    for i in range(KILLS):
        delay = rng.uniform(0.0, duration * 1.1)
        whole_group = i % 2 == 0
        if i % 4 == 3:
            # without its namespace's pause process, the pull killed next makes one
            for pid in pause_processes(pbox_root.runroot):
                os.kill(pid, signal.SIGKILL)
        proc = start_pbox(pbox_cmd, pbox_root, "pull", "-q", ref)
        time.sleep(delay)
        # the whole process group, or only the first process: any process pbox forked
        # for the command must die with it (PR_SET_PDEATHSIG)
        with contextlib.suppress(ProcessLookupError):
            if whole_group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err.decode(errors="replace")
        alive = wait_all_gone(proc.pid, root)
        assert alive == [], f"kill {i}: pbox processes survived: {alive}"
        # the one pause process the store's run root records, or none: never a
        # second one that nobody knows of
        assert len(pause_processes(pbox_root.runroot)) <= 1

        problems = store_problems(root, dead_temps_ok=True)
        assert problems == [], f"kill {i} after {delay:.3f}s: {problems}"
        done = complete_layers(root, chains)
        had_config = os.path.exists(os.path.join(root, "blobs", "sha256",
                                                 img.config_digest[7:]))
        dead = tmp_entries(root)
        log.append(f"kill {i}: {delay:.3f}s of {duration:.3f}s "
                   f"{'group' if whole_group else 'parent'} rc={proc.returncode} "
                   f"layers done {len(done)}/{len(chains)} tmp {len(dead)}")
        print(log[-1])
        if proc.returncode != 0 and 0 < len(done) < len(chains):
            partial += 1
        if proc.returncode != 0 and dead:
            dead_left += 1

        mark = registry_plain.log_mark()
        run_pbox("pull", "-q", ref)
        assert tmp_entries(root) == [], f"kill {i}: tmp/ not cleaned: {tmp_entries(root)}"
        assert store_problems(root) == []
        check_image(root, img)
        for chain in chains:
            gets = registry_plain.count_requests("GET", f"/blobs/{blob_of[chain]}", since=mark)
            if chain in done:
                assert gets == 0, f"kill {i}: complete layer {blob_of[chain]} fetched again"
            else:
                assert gets >= 1, f"kill {i}: missing layer {blob_of[chain]} not fetched"
        if had_config:
            assert registry_plain.count_requests(
                "GET", f"/blobs/{img.config_digest}", since=mark) == 0

        run_pbox("rmi", ref)
        assert store_problems(root) == []
        assert os.listdir(os.path.join(root, "layers")) == []
        assert len(pause_processes(pbox_root.runroot)) <= 1

    # the kills really landed in the middle: some with part of the layers done, some
    # with a dead writer's temp entry for the next run to clean
    assert partial >= 1, "\n".join(log)
    assert dead_left >= 1, "\n".join(log)


def test_next_pull_cleans_what_dead_writers_left(registry_plain, test_images, run_pbox,
                                                pbox_root):
    """Each thing a kill -9 can leave in tmp/ is gone after the next pull, at once
    (not after some grace time: its lock says its writer is dead)."""
    img = test_images(registry_plain).busybox
    run_pbox("images")
    plant_dead_entries(pbox_root.root, 9)
    assert len(tmp_entries(pbox_root.root)) == 12
    run_pbox("pull", "-q", img.reference)
    assert tmp_entries(pbox_root.root) == []
    assert store_problems(pbox_root.root) == []


_CLEANER = """
import sys
from pbox.storage.store import Store
store = Store.open(sys.argv[1])
sys.stdin.read(1)
store.clean_temp()
"""


def test_cleaners_racing_over_the_same_dead_entries(pbox_root, run_pbox):
    """Every pull starts by cleaning tmp/; when several start together they race
    over the same dead entries.  Each entry must go to one of them, and the others
    must not trip over its disappearance.  (The store's own cleaning code, in four
    processes released at the same instant: pbox's start-up time would spread them.)
    """
    import sys

    run_pbox("images")
    # one hash seed: the cleaners walk the entries in the same order, so they meet on
    # every entry (the worst case; with pbox's random seeds they meet by chance)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, PYTHONHASHSEED="1")
    for round_ in range(3):
        plant_dead_entries(pbox_root.root, 600)
        procs = [subprocess.Popen([sys.executable, "-c", _CLEANER, pbox_root.root], env=env,
                                  stdin=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(4)]
        for proc in procs:  # all started: release them together
            proc.stdin.write(b"x")
            proc.stdin.flush()
        for proc in procs:
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"round {round_}: " + err.decode(errors="replace")
        assert tmp_entries(pbox_root.root) == []


# -- 2. concurrent pulls ---------------------------------------------------------------------


def test_four_concurrent_pulls_share_one_copy_of_the_base(registry_plain, pbox_cmd, pbox_root,
                                                          run_pbox):
    root = pbox_root.root
    client = RegistryClient(registry_plain)
    pushed = [client.push_image(f"{REPO_PREFIX}/shared-{n}", "latest",
                                on_base(f"shared-{n}", LayerSpec(f"layer {n}").file(
                                    f"/{n}.txt", f"image {n}\n")))
              for n in range(4)]
    base_chains = chain_ids(pushed[0].diff_ids)[:2]
    base_blob = pushed[0].layer_digests[1]
    assert all(p.layer_digests[:2] == pushed[0].layer_digests[:2] for p in pushed)
    # a store that earlier pulls died in: four cleaners meet in tmp/
    run_pbox("images")
    plant_dead_entries(root, 300)

    mark = registry_plain.log_mark()
    procs = [start_pbox(pbox_cmd, pbox_root, "pull", "-q", p.reference) for p in pushed]
    results = [(p, *p.communicate(timeout=240)) for p in procs]
    for proc, _out, err in results:
        assert proc.returncode == 0, err.decode(errors="replace")
        assert err == b"" or err.startswith(b"WARN: "), err.decode(errors="replace")

    assert store_problems(root) == []
    assert tmp_entries(root) == []
    for p in pushed:
        check_image(root, p)
    layer_dirs = sorted(os.listdir(os.path.join(root, "layers")))
    assert len(layer_dirs) == 2 + 4, layer_dirs
    assert all(c[7:] in layer_dirs for c in base_chains)
    base_bytes = storeview.du(os.path.join(root, "layers", base_chains[1][7:]))
    assert base_bytes >= BIG_BASE
    used = storeview.du(root)
    print(f"store {used} bytes, base layer {base_bytes} bytes, base blob fetched "
          f"{registry_plain.count_requests('GET', f'/blobs/{base_blob}', since=mark)} times")
    assert used < 1.5 * base_bytes, f"{used} bytes stored for a {base_bytes}-byte base"


# -- 3. rmi during a pull --------------------------------------------------------------------


def _wait_inside_pull(proc: subprocess.Popen, root: str) -> bool:
    """Wait until the pull is writing a layer (it holds the gc lock shared then);
    False when it ended first."""
    while proc.poll() is None:
        if any(n.startswith("layer-") and n.endswith(".lock") for n in tmp_entries(root)):
            return True
        time.sleep(0.002)
    return False


def test_rmi_while_a_pull_of_another_image_runs(registry_plain, pbox_cmd, pbox_root,
                                                run_pbox):
    """rmi Y while X, which shares Y's base, is being pulled: X already counts on the
    base being there, so rmi must not take it away before X's record is written."""
    root = pbox_root.root
    client = RegistryClient(registry_plain)
    small = client.push_image(f"{REPO_PREFIX}/rmi-small", "latest", on_base(
        "rmi-small", LayerSpec("small").file("/small.txt", "small\n")))
    big = client.push_image(f"{REPO_PREFIX}/rmi-big", "latest", on_base(
        "rmi-big", data_layer("rmi-big.bin", 12 * MiB)))
    small_only = chain_ids(small.diff_ids)[2]

    rng = random.Random(SEED)
    seen_inside = 0
    for round_ in range(6):
        run_pbox("pull", "-q", small.reference)
        proc = start_pbox(pbox_cmd, pbox_root, "pull", "-q", big.reference)
        if round_ < 2:
            seen_inside += _wait_inside_pull(proc, root)
        else:
            time.sleep(rng.uniform(0.0, 0.6))
        rmi = run_pbox("rmi", small.reference)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode(errors="replace")
        assert small.config_digest[7:19] in rmi.stdout

        assert store_problems(root) == []
        assert not os.path.exists(os.path.join(root, "images", small.config_digest[7:] + ".json"))
        assert not os.path.exists(os.path.join(root, "layers", small_only[7:]))
        check_image(root, big)
        assert tmp_entries(root) == []
        run_pbox("rmi", big.reference)
        assert os.listdir(os.path.join(root, "layers")) == []
    assert seen_inside >= 1
