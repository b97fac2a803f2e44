"""Platforms (``linux/arm64/v8``): the host's, the user's ``--platform``, and choosing the
manifest of an index that fits one.

Names are Go's (``GOOS``/``GOARCH``), as in image configs and indexes.  Matching follows
containerd: the wanted variant is preferred, then older variants the CPU can also run
(``arm/v7`` runs ``v6`` and ``v5``; ``amd64/v3`` runs ``v2`` and ``v1``), and an
``arm64`` entry without a variant is ``arm64/v8``.
"""

from __future__ import annotations

import os

from pbox.errors import NotFound, UsageError
from pbox.record import record

TYPE_CHECKING = False  # (importing typing costs ~2 ms of every registry command)
if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Iterable, Sequence

    from pbox.oci.manifest import Descriptor

KNOWN_OS = frozenset(
    {
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "hurd",
        "illumos",
        "ios",
        "js",
        "linux",
        "nacl",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "wasip1",
        "windows",
        "zos",
    }
)
KNOWN_ARCH = frozenset(
    {
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "ppc64",
        "ppc64le",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    }
)

TYPE_CHECKING = False  # (importing typing costs ~2 ms of every registry command)

# Kernel (uname -m) and distribution spellings -> (GOARCH, variant).
_ARCH_ALIASES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "x86": ("386", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv8l": ("arm", "v8"),
    "armv8b": ("arm", "v8"),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armhf": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv6": ("arm", "v6"),
    "armel": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "armv5l": ("arm", "v5"),
    "arm": ("arm", ""),
    "ppc64le": ("ppc64le", ""),
    "ppc64el": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "loongarch64": ("loong64", ""),
    "mips64": ("mips64", ""),
}


@record(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @property
    def arch(self) -> str:
        return self.architecture

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return s + f"/{self.variant}" if self.variant else s

    def normalized(self) -> Platform:
        return normalize(self)

    def matches(self, other: Platform) -> bool:
        """Whether an image built for ``other`` runs on ``self`` (variants compatible)."""
        o = normalize(other)
        return any(_same(c, o) for c in _candidates(normalize(self)))

    def to_json(self) -> dict:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.os_version:
            d["os.version"] = self.os_version
        if self.os_features:
            d["os.features"] = list(self.os_features)
        return d

    @classmethod
    def from_json(cls, d: dict | None) -> Platform | None:
        if not isinstance(d, dict):
            return None
        features = d.get("os.features") or ()
        return cls(
            os=str(d.get("os") or ""),
            architecture=str(d.get("architecture") or ""),
            variant=str(d.get("variant") or ""),
            os_version=str(d.get("os.version") or ""),
            os_features=tuple(str(f) for f in features) if isinstance(features, list) else (),
        )


def normalize_arch(arch: str, variant: str = "") -> tuple[str, str]:
    """Go's name for an architecture and its variant in canonical form."""
    a = arch.lower()
    v = variant.lower()
    if a in _ARCH_ALIASES:
        a, default_variant = _ARCH_ALIASES[a]
        # the alias's variant (armv7l -> v7) only fills in a missing one
        if not v:
            v = default_variant
    if a == "arm64":
        if v in ("", "8", "v8"):
            v = "v8"
    elif a == "arm":
        if v == "":
            v = "v7"  # containerd: plain "arm" means v7
        elif v.isdigit():
            v = "v" + v
    elif a == "amd64":
        if v in ("v1", "1"):
            v = ""
        elif v.isdigit():
            v = "v" + v
    return a, v


def normalize(p: Platform) -> Platform:
    arch, variant = normalize_arch(p.architecture, p.variant)
    return Platform(
        os=p.os.lower(),
        architecture=arch,
        variant=variant,
        os_version=p.os_version,
        os_features=p.os_features,
    )


def host(*, machine: str | None = None, system: str | None = None) -> Platform:
    """The platform of this machine, as an image for it would declare it."""
    u = os.uname()
    system = (system or u.sysname).lower()
    arch, variant = normalize_arch(machine or u.machine)
    return Platform(os=system, architecture=arch, variant=variant)


def parse(spec: str, *, default: Platform | None = None) -> Platform:
    """Parse ``os[/arch[/variant]]`` (or a lone ``arch``) as ``--platform`` takes it.

    Missing parts come from ``default`` (the host when not given).  Aliases are
    accepted (``linux/x86_64``, ``linux/aarch64``) and normalised.
    """
    if default is None:
        default = host()
    raw = spec
    spec = spec.strip().lower()
    parts = spec.split("/")
    if not spec or len(parts) > 3 or any(not p for p in parts):
        raise UsageError(f'invalid platform "{raw}": expected os[/arch[/variant]]')
    if len(parts) == 1:
        word = parts[0]
        if word in KNOWN_OS:
            os_name, arch, variant = word, default.architecture, default.variant
        elif word in KNOWN_ARCH or word in _ARCH_ALIASES:
            os_name, arch, variant = default.os, word, ""
        else:
            raise UsageError(f'invalid platform "{raw}": unknown operating system or architecture')
    else:
        os_name, arch = parts[0], parts[1]
        variant = parts[2] if len(parts) == 3 else ""
        if os_name not in KNOWN_OS:
            raise UsageError(f'invalid platform "{raw}": unknown operating system "{os_name}"')
        if arch not in KNOWN_ARCH and arch not in _ARCH_ALIASES:
            raise UsageError(f'invalid platform "{raw}": unknown architecture "{arch}"')
    arch, variant = normalize_arch(arch, variant)
    return Platform(os=os_name, architecture=arch, variant=variant)


def _same(a: Platform, b: Platform) -> bool:
    return a.os == b.os and a.architecture == b.architecture and a.variant == b.variant


def _variant_number(v: str) -> int | None:
    if v.startswith("v") and v[1:].isdigit():
        return int(v[1:])
    return None


def _candidates(wanted: Platform) -> list[Platform]:
    """Platforms that run on ``wanted``, best first (containerd's platform vector)."""
    out = [wanted]
    n = _variant_number(wanted.variant)
    if wanted.architecture == "arm" and n is not None:
        for k in range(n - 1, 4, -1):
            out.append(Platform(wanted.os, "arm", f"v{k}"))
    elif wanted.architecture == "amd64":
        for k in range((n or 1) - 1, 0, -1):
            out.append(Platform(wanted.os, "amd64", "" if k == 1 else f"v{k}"))
    return out


def _is_attestation(desc: Descriptor) -> bool:
    ann = desc.annotations or {}
    if ann.get("vnd.docker.reference.type") == "attestation-manifest":
        return True
    p = desc.platform
    return p is not None and (p.os == "unknown" or p.architecture == "unknown")


def rank(descriptors: Sequence[Descriptor], wanted: Platform) -> list[Descriptor]:
    """The entries of an index that run on ``wanted``, best first.

    Entries without a platform come last (an OCI layout may omit it); attestation
    manifests (platform ``unknown/unknown``) are never chosen.
    """
    cands = _candidates(normalize(wanted))
    scored = []
    for pos, d in enumerate(descriptors):
        if _is_attestation(d):
            continue
        if d.platform is None:
            scored.append((len(cands), pos, d))
            continue
        p = normalize(d.platform)
        for i, c in enumerate(cands):
            if _same(c, p):
                scored.append((i, pos, d))
                break
    scored.sort(key=lambda t: (t[0], t[1]))
    return [d for _, _, d in scored]


def available(descriptors: Iterable[Descriptor]) -> list[str]:
    """Platform names of an index's entries, for messages."""
    out: list[str] = []
    for d in descriptors:
        if d.platform is None or _is_attestation(d):
            continue
        s = str(d.platform)
        if s not in out:
            out.append(s)
    return out


def select(descriptors: Sequence[Descriptor], wanted: Platform, *, what: str = "") -> Descriptor:
    """The best entry of an index for ``wanted``; ``NotFound`` listing what there is."""
    ranked = rank(descriptors, wanted)
    if ranked:
        return ranked[0]
    have = available(descriptors)
    where = f" of {what}" if what else ""
    listed = ", ".join(have) if have else "none"
    raise NotFound(
        f"no matching manifest for {normalize(wanted)} in the manifest list entries{where} "
        f"(available platforms: {listed})"
    )
