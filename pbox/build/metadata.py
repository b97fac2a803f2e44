"""Metadata steps (ENV, LABEL, CMD, WORKDIR, ...): MetaSteps is mixed into
:class:`pbox.build.executor.Builder`; with the history text docker's classic builder
writes (``/bin/sh -c #(nop)  ENV a=b``) and HEALTHCHECK's config.  Only WORKDIR may
make a layer (its directory, when the image lacks it)."""

from __future__ import annotations

import os
import posixpath

from pbox import jsonio as json
from pbox.build.imagetree import owner_of, resolve_in_image
from pbox.build.runstep import DEFAULT_SHELL
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


class MetaSteps:
    """The steps that change the config (ENV, LABEL, CMD, WORKDIR, ...) of
    :class:`pbox.build.executor.Builder` (mixed into it)."""

    def _do_meta(self, st, inst, env: dict, text: str) -> None:
        from pbox.build import dockerfile as dfm

        cfg = st.cfg
        cmd = inst.cmd
        layer = False
        if cmd == "ENV":
            for k, v in dfm.key_values(inst, env):
                st.set_env(k, v or "")
                env = self._expand_env(st)
        elif cmd == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            for k, v in dfm.key_values(inst, env):
                labels[k] = v or ""
            cfg["Labels"] = labels
        elif cmd == "MAINTAINER":
            st.image["author"] = " ".join(inst.args)
        elif cmd == "WORKDIR":
            path = dfm.expand(" ".join(inst.args), env)
            cfg["WorkingDir"] = posixpath.normpath(
                posixpath.join(cfg.get("WorkingDir") or "/", path))
            layer = self._mkdir_layer(st, cfg["WorkingDir"], text)
        elif cmd == "USER":
            cfg["User"] = dfm.expand(" ".join(inst.args), env)
        elif cmd in ("CMD", "ENTRYPOINT"):
            value = list(inst.args) if inst.json else (
                list(cfg.get("Shell") or DEFAULT_SHELL) + [" ".join(inst.args)])
            if cmd == "CMD":
                cfg["Cmd"] = value
            else:
                cfg["Entrypoint"] = value
                if not self.cmd_set:
                    cfg["Cmd"] = None  # docker: a new ENTRYPOINT drops the base image's CMD
        elif cmd == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for w in dfm.expand_words(" ".join(inst.args), env):
                port = w if "/" in w else w + "/tcp"
                ports[port] = {}
            cfg["ExposedPorts"] = ports
        elif cmd == "VOLUME":
            vols = dict(cfg.get("Volumes") or {})
            words = inst.args if inst.json else dfm.expand_words(" ".join(inst.args), env)
            for w in words:
                vols[dfm.expand(w, env) if inst.json else w] = {}
            cfg["Volumes"] = vols
        elif cmd == "STOPSIGNAL":
            cfg["StopSignal"] = dfm.expand(" ".join(inst.args), env)
        elif cmd == "SHELL":
            if not inst.json:
                raise BuildError("SHELL requires the arguments to be in JSON form")
            cfg["Shell"] = list(inst.args)
        elif cmd == "HEALTHCHECK":
            cfg["Healthcheck"] = healthcheck(inst)
        elif cmd == "ONBUILD":
            trigger = " ".join(inst.args)
            for doc in (inst.onbuild.heredoc_info if inst.onbuild else []):
                trigger += "\n" + doc.content + doc.name  # the body goes with it
            cfg["OnBuild"] = list(cfg.get("OnBuild") or []) + [trigger]
        elif cmd == "ARG":
            pass
        else:
            raise BuildError(f"unknown instruction: {cmd}")
        if not layer:
            self._store_step(st, {"created_by": text, "empty_layer": True})

    def _mkdir_layer(self, st, path: str, text: str) -> bool:
        """WORKDIR creates its directory: a layer when the image lacks it."""
        lower = self._view(st.layers)
        parts = resolve_in_image(lower, [p for p in path.split("/") if p]) \
            if st.layers else [p for p in path.split("/") if p]
        node = lower.lookup(parts) if st.layers else None
        if node is not None or not parts:
            return False
        staging = self.store.temp("build")
        try:
            os.makedirs(staging.path)
            target = self._stage_dirs(staging.path, lower, parts, st)
            os.makedirs(target, exist_ok=True)
            self._own(target, *owner_of(lower, st.cfg.get("User") or ""))
            self._commit_dir(st, staging.path, lower, {"created_by": text.replace(
                "/bin/sh -c #(nop) ", "").strip() + " # buildkit", "comment": "buildkit.dockerfile.v0"})
        finally:
            staging.discard()
        return True
