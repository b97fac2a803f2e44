"""Metadata steps' pieces: the history text docker's classic builder writes
(``/bin/sh -c #(nop)  ENV a=b``) and HEALTHCHECK's config."""

from __future__ import annotations

import json

from pbox.errors import BuildError


def history_text(inst, env: dict) -> str:
    from pbox.build import dockerfile as dfm

    rest = inst.original.strip().split(None, 1)
    body = rest[1] if len(rest) > 1 else ""
    if inst.cmd in ("ENV", "LABEL", "ARG"):
        pairs = []
        for k, v in dfm.key_values(inst, env):
            pairs.append(k if v is None else f"{k}={v}")
        body = " ".join(pairs)
    elif inst.cmd in ("CMD", "ENTRYPOINT", "SHELL", "HEALTHCHECK", "ONBUILD", "MAINTAINER"):
        if inst.json:
            body = json.dumps(list(inst.args))
    else:
        body = " ".join(dfm.expand_words(body, env)) if inst.cmd != "VOLUME" or not inst.json \
            else json.dumps(list(inst.args))
    return f"/bin/sh -c #(nop)  {inst.cmd} {body}".rstrip()


def healthcheck(inst) -> dict:
    args = list(inst.args)
    if args and args[0].upper() == "NONE":
        return {"Test": ["NONE"]}
    hc = {}
    for name, key in (("interval", "Interval"), ("timeout", "Timeout"),
                      ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
        v = inst.flag(name, None)
        if v:
            hc[key] = _duration_ns(v)
    if inst.flag("retries", None):
        hc["Retries"] = int(inst.flag("retries", None))
    if not args or args[0].upper() != "CMD":
        raise BuildError("HEALTHCHECK: the command must start with CMD or be NONE")
    rest = args[1:]
    if inst.json:
        hc["Test"] = ["CMD"] + rest
    else:
        hc["Test"] = ["CMD-SHELL", " ".join(rest)]
    return hc


def _duration_ns(text: str) -> int:
    from pbox.build.dockerfile import parse_duration

    try:
        return parse_duration(text)
    except ValueError:
        raise BuildError(f"invalid duration {text!r}")
