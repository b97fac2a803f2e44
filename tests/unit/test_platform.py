from __future__ import annotations

import os

import pytest

from pbox.errors import NotFound, UsageError
from pbox.oci import manifest as m
from pbox.oci import mediatypes as mt
from pbox.oci import platform as plat
from pbox.oci.manifest import Descriptor
from pbox.oci.platform import Platform

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
AMD64 = Platform("linux", "amd64")


def entry(spec: str | None, n: int = 0, **ann) -> Descriptor:
    p = None
    if spec is not None:
        parts = spec.split("/")
        p = Platform(parts[0], parts[1], parts[2] if len(parts) > 2 else "")
    return Descriptor(mt.OCI_MANIFEST, "sha256:" + f"{n:064x}", 1, platform=p, annotations=ann)


@pytest.mark.parametrize(
    "machine, expected",
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64/v8"),
        ("armv7l", "linux/arm/v7"),
        ("armv6l", "linux/arm/v6"),
        ("i686", "linux/386"),
        ("ppc64le", "linux/ppc64le"),
        ("s390x", "linux/s390x"),
        ("riscv64", "linux/riscv64"),
    ],
)
def test_host_mapping(machine, expected):
    assert str(plat.host(machine=machine, system="Linux")) == expected


def test_host_is_this_machine():
    p = plat.host()
    assert p.os == "linux"
    assert p.architecture in plat.KNOWN_ARCH


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/arm64/v8", "linux/arm64/v8"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/7", "linux/arm/v7"),
        ("LINUX/X86_64", "linux/amd64"),
        ("linux/aarch64", "linux/arm64/v8"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux", "linux/s390x"),
        ("arm64", "linux/arm64/v8"),
        ("windows/amd64", "windows/amd64"),
    ],
)
def test_parse(spec, expected):
    assert str(plat.parse(spec, default=Platform("linux", "s390x"))) == expected


@pytest.mark.parametrize(
    "spec", ["", "/", "linux/", "plan10/amd64", "linux/z80", "a/b/c/d", "nope"]
)
def test_parse_invalid(spec):
    with pytest.raises(UsageError) as e:
        plat.parse(spec)
    assert "invalid platform" in str(e.value)


def test_select_from_docker_list():
    with open(os.path.join(FIX, "docker_manifest_list.json"), "rb") as f:
        idx = m.parse_index(f.read())
    pick = lambda s: str(plat.select(idx.manifests, plat.parse(s)).platform)  # noqa: E731
    assert pick("linux/amd64") == "linux/amd64"
    assert pick("linux/arm64") == "linux/arm64/v8"
    assert pick("linux/arm/v7") == "linux/arm/v7"
    assert pick("linux/arm/v6") == "linux/arm/v6"
    assert pick("linux/arm") == "linux/arm/v7"
    assert pick("linux/386") == "linux/386"
    # amd64/v3 runs plain amd64 images
    assert pick("linux/amd64/v3") == "linux/amd64"


def test_arm64_without_variant_matches_v8():
    entries = [entry("linux/amd64", 1), entry("linux/arm64", 2)]
    assert plat.select(entries, Platform("linux", "arm64", "v8")).digest.endswith("2")
    assert plat.select(entries, Platform("linux", "arm64")).digest.endswith("2")


def test_exact_variant_preferred_over_older():
    entries = [entry("linux/arm/v5", 5), entry("linux/arm/v7", 7), entry("linux/arm/v6", 6)]
    assert plat.select(entries, plat.parse("linux/arm/v7")).digest.endswith("7")
    assert plat.select(entries, plat.parse("linux/arm/v6")).digest.endswith("6")
    # v5 cannot run v6/v7 images
    assert plat.rank(entries, plat.parse("linux/arm/v5")) == [entries[0]]


def test_newer_variant_never_chosen():
    entries = [entry("linux/amd64/v3", 3)]
    with pytest.raises(NotFound):
        plat.select(entries, AMD64)
    assert plat.select(
        entries + [entry("linux/amd64/v2", 2)], plat.parse("linux/amd64/v3")
    ).digest.endswith("3")


def test_attestations_skipped_and_no_platform_last():
    with open(os.path.join(FIX, "oci_index.json"), "rb") as f:
        idx = m.parse_index(f.read())
    ranked = plat.rank(idx.manifests, AMD64)
    assert ranked == [idx.manifests[0]]
    entries = [entry(None, 9), entry("linux/amd64", 1)]
    assert [d.digest[-1] for d in plat.rank(entries, AMD64)] == ["1", "9"]
    # no match but a platform-less entry: taken
    assert plat.select([entry(None, 9)], AMD64).digest.endswith("9")


def test_no_match_lists_available():
    with open(os.path.join(FIX, "oci_index.json"), "rb") as f:
        idx = m.parse_index(f.read())
    with pytest.raises(NotFound) as e:
        plat.select(idx.manifests, Platform("linux", "s390x"), what="quay.io/x:1")
    msg = str(e.value)
    assert "no matching manifest for linux/s390x" in msg
    assert "linux/amd64, linux/arm64" in msg
    assert "unknown" not in msg
    assert "quay.io/x:1" in msg


def test_matches_and_json():
    assert plat.parse("linux/arm/v7").matches(Platform("linux", "arm", "v6"))
    assert not plat.parse("linux/arm/v6").matches(Platform("linux", "arm", "v7"))
    assert Platform("linux", "arm64").matches(Platform("linux", "aarch64", "v8"))
    assert not AMD64.matches(Platform("windows", "amd64"))
    p = Platform("windows", "amd64", os_version="10.0.17763.1", os_features=("win32k",))
    assert Platform.from_json(p.to_json()) == p
    assert Platform.from_json(None) is None
