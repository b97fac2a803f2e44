"""`pbox build`: runs a parsed Dockerfile (:mod:`pbox.build.dockerfile`) step by step.

Every step makes an image in the store, as docker's classic builder does: metadata
steps (ENV, CMD, LABEL, ...) only change the config and add a history entry with
``empty_layer``; RUN (:mod:`pbox.build.runstep`, its ``--mount``s in
:mod:`pbox.build.mounts`) runs in a container created and started exactly as `run`
does, and the container's upper directory becomes the layer
(:func:`pbox.containers.fsops.add_layer`); COPY and ADD write their files (from the
context, a stage or image, a heredoc, a URL or a git repository:
:mod:`pbox.build.sources`) into a staging directory that becomes the layer.  The base
image's ONBUILD triggers run right after FROM; ``--squash`` is :mod:`pbox.build.squash`.

History: metadata steps get docker's ``/bin/sh -c #(nop)  ENV a=b``; RUN, COPY and ADD
get BuildKit's form (``RUN /bin/sh -c echo hi # buildkit``, ``COPY app /app # buildkit``).

Cache: a step's key is the parent image id, the instruction after substitution, the
build args in scope and, for COPY/ADD, a hash of the sources; the index lives in the
store (``build-cache.json``, written atomically).  A hit reuses the recorded image.

Reproducible: with SOURCE_DATE_EPOCH set, ``created`` times are that epoch and layer
mtimes are clamped to it, so the same inputs give the same image id.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import posixpath
import shutil
import stat
import tarfile
import time
from dataclasses import dataclass, field

from pbox.build import metadata
from pbox.build.runstep import DEFAULT_SHELL, RunSteps
from pbox.config import Config
from pbox.errors import BuildError, PboxError

CACHE_FILE = "build-cache.json"
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
              "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
METADATA = {"ENV", "WORKDIR", "USER", "CMD", "ENTRYPOINT", "LABEL", "EXPOSE", "VOLUME",
            "STOPSIGNAL", "SHELL", "HEALTHCHECK", "ARG", "ONBUILD", "MAINTAINER"}


@dataclass
class BuildOptions:
    context: str
    dockerfile_text: str
    dockerfile_name: str = "Dockerfile"
    tags: list = field(default_factory=list)
    build_args: dict = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    pull: bool = False
    labels: dict = field(default_factory=dict)
    network: str = ""
    secrets: dict = field(default_factory=dict)  # id -> ("file", path) | ("env", name)
    squash: bool = False
    format: str = ""  # "", "oci" or "docker"
    ignore_text: str | None = None
    source_date_epoch: int | None = None


# -- the cache ----------------------------------------------------------------------------------


class BuildCache:
    def __init__(self, store):
        self.store = store
        self.path = os.path.join(store.root, CACHE_FILE)

    def load(self) -> dict:
        return self.store.read_json(self.path, {}) or {}

    def get(self, key: str) -> dict | None:
        """The record of ``key`` when its config and layers are still in the store."""
        rec = self.load().get(key)
        if not isinstance(rec, dict) or not self.store.has_blob(rec.get("id") or ""):
            return None
        if not all(self.store.has_layer(c) for c in rec.get("layers") or []):
            return None
        return rec

    def put(self, key: str, image_id: str, layers: list) -> None:
        with self.store.meta_lock.exclusive():
            d = self.load()
            d[key] = {"id": image_id, "layers": list(layers)}
            self.store.write_json(self.path, d)


def cache_key(parent: str, text: str, args: dict, sources: str = "") -> str:
    raw = json.dumps([parent, text, sorted(args.items()), sources])
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def prune_cache(config: Config) -> tuple[int, int]:
    """`builder prune`: forget every cache record, then remove the step configs and
    layers no image or container uses, and the RUN cache mounts no build is using.
    Returns (records, bytes freed)."""
    from pbox.images import _gc_layers, enter_userns, open_store
    from pbox.storage.images import ImageStore

    enter_userns(config)
    store = open_store(config)
    with store.gc_lock.exclusive():
        cache = BuildCache(store)
        with store.meta_lock.exclusive():
            count = len(cache.load())
            store.write_json(cache.path, {})
        freed = _gc_layers(store, ImageStore(store))
    from pbox.build.mounts import prune_cache_mounts

    return count, freed + prune_cache_mounts(store)


# -- per-stage state ----------------------------------------------------------------------------


class _Stage:
    """The image a stage has built so far."""

    def __init__(self, image: dict, image_id: str | None, layers: list):
        self.image = image
        self.image_id = image_id
        self.layers = layers
        self.mark_base()

    def mark_base(self) -> None:
        """What the stage's FROM gave it (``--squash`` keeps that)."""
        self.base_id = self.image_id
        self.base_count = len(self.layers)
        self.base_history = len(self.image.get("history") or [])

    @property
    def cfg(self) -> dict:
        return self.image.setdefault("config", {})

    def env(self) -> dict:
        out = {}
        for item in self.cfg.get("Env") or []:
            k, _, v = item.partition("=")
            out[k] = v
        return out

    def set_env(self, key: str, value: str) -> None:
        items = [e for e in (self.cfg.get("Env") or []) if e.partition("=")[0] != key]
        items.append(f"{key}={value}")
        self.cfg["Env"] = items


class Builder(RunSteps):
    def __init__(self, config: Config, opts: BuildOptions, out, *, notice=None, report=None):
        self.config = config
        self.opts = opts
        self.out = out  # callable(str): progress lines
        self.notice = notice
        self.report = report
        self.epoch = opts.source_date_epoch
        self.used_args: set = set()
        self.fetched = None  # sources.Fetcher: ADD's downloads and clones, for one step
        self.excl = None  # sources.Excluder: the COPY/ADD step's --exclude

    # -- helpers --------------------------------------------------------------------------

    def _now(self) -> str:
        from pbox import humanize

        return humanize.rfc3339(self.epoch if self.epoch is not None else time.time())

    def _store_step(self, st: _Stage, entry: dict, diff_ids=None, layers=None) -> str:
        now = self._now()
        st.image["created"] = now
        entry = dict(entry, created=now)
        st.image["history"] = list(st.image.get("history") or []) + [entry]
        if diff_ids is None:
            diff_ids = list((st.image.get("rootfs") or {}).get("diff_ids") or [])
            layers = st.layers
        st.image["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
        st.layers = list(layers)
        st.image_id = self._put_config(st)
        return st.image_id

    def _put_config(self, st: _Stage) -> str:
        """Store the step's config blob (the same bytes `store_image` writes)."""
        raw = json.dumps(st.image, sort_keys=True, separators=(",", ":")).encode()
        with self.store.gc_lock.shared():
            return self.store.put_blob(raw)

    def _record(self, st: _Stage) -> bool:
        """Give the step's image a record (RUN creates its container from it, the build
        ends with it); True when it was made now."""
        from pbox.storage.images import ImageStore

        if ImageStore(self.store).exists(st.image_id):
            return False
        from pbox.containers.fsops import store_image  # not imported by a cached step

        diff_ids = list((st.image.get("rootfs") or {}).get("diff_ids") or [])
        with self.store.gc_lock.shared():
            image_id = store_image(self.store, st.image, st.layers, diff_ids,
                                   st.image.get("created", ""))
        if image_id != st.image_id:
            raise BuildError(f"internal error: image {image_id} differs from its step")
        return True

    def _load(self, image_id: str) -> _Stage:
        from pbox.storage.images import ImageStore

        istore = ImageStore(self.store)
        rec = istore.get(image_id)
        image = json.loads(self.store.read_blob(image_id))
        return _Stage(image, image_id, list(rec.layers))

    def _base(self, name: str, platform: str | None) -> _Stage:
        from pbox.containers.create import find_or_pull_image

        if name == "scratch":
            image = {"architecture": _arch(), "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
            return _Stage(image, None, [])
        res = find_or_pull_image(self.config, self.store, name,
                                 "always" if self.opts.pull else "missing",
                                 platform=platform, report=self.report, notice=self.notice)
        return self._load(res.image_id)

    # -- the build ------------------------------------------------------------------------

    def run(self) -> str:
        from pbox.build import dockerfile as dfm
        from pbox.build.context import Context
        from pbox.images import enter_userns, open_store

        try:
            df = dfm.parse(self.opts.dockerfile_text)
        except dfm.DockerfileError as e:
            raise BuildError(str(e).replace("Dockerfile", self.opts.dockerfile_name, 1),
                             exit_code=1)
        if not df.stages:
            raise BuildError("the Dockerfile has no FROM instruction", exit_code=1)
        self.keep_owners = enter_userns(self.config, self.notice)
        self.store = open_store(self.config)
        self.cache = BuildCache(self.store)
        self.ctx = Context.open(self.opts.context, self.opts.ignore_text)
        self.df = df
        # meta args: for FROM lines and for stages that redeclare them
        # BuildKit's automatic platform args: for FROM lines, and in a stage that declares them
        arch = _arch()
        self.meta = {"TARGETPLATFORM": f"linux/{arch}", "TARGETOS": "linux",
                     "TARGETARCH": arch, "TARGETVARIANT": "", "BUILDPLATFORM": f"linux/{arch}",
                     "BUILDOS": "linux", "BUILDARCH": arch, "BUILDVARIANT": ""}
        for inst in df.meta_args:
            for k, v in dfm.key_values(inst, self.meta):
                if k in self.opts.build_args:
                    self.meta[k] = self.opts.build_args[k]
                    self.used_args.add(k)
                elif v is not None:
                    self.meta[k] = v
        target = df.stages[-1]
        if self.opts.target:
            try:
                target = df.stage(self.opts.target)
            except (KeyError, IndexError, ValueError, dfm.DockerfileError):
                target = None
            if target is None:
                raise BuildError(f"target stage {self.opts.target!r} could not be found",
                                 exit_code=1)
        needed = self._needed(target)
        steps = [s for s in df.stages if s.index in needed]
        self.total = sum(1 + len(s.instructions) for s in steps)
        self.step = 0
        self.built: dict = {}
        self.target_index = target.index
        for s in steps:
            self.built[s.index] = self._build_stage(s)
        final = self.built[target.index]
        if self.opts.squash:
            from pbox.build.squash import squash

            squash(self, final, final.base_count)
        self._record(final)
        if self.opts.format:
            self._set_format(final.image_id)
        unused = sorted(k for k in self.opts.build_args
                        if k not in self.used_args and k not in PROXY_ARGS)
        if unused:
            self.out(f"[Warning] One or more build-args {unused} were not consumed")
        return final.image_id

    def _set_format(self, image_id: str) -> None:
        """`build --format docker|oci`: the manifest type `push` and `save` default to."""
        from pbox.oci import mediatypes as mt
        from pbox.storage.images import ImageStore

        want = mt.DOCKER_MANIFEST if self.opts.format == "docker" else mt.OCI_MANIFEST
        istore = ImageStore(self.store)
        with self.store.gc_lock.shared():
            rec = istore.get(image_id)
            if rec.manifest_media_type != want:
                rec.manifest_media_type = want
                istore.put(rec)

    def _stage_ref(self, name: str, before: int):
        """The earlier stage ``name`` (a name or an index) refers to, or None."""
        for s in self.df.stages[:before]:
            if s.name and s.name == name.lower():
                return s
        if name.isdigit() and int(name) < before:
            return self.df.stages[int(name)]
        return None

    def _needed(self, target) -> set:
        from pbox.build import dockerfile as dfm

        needed = set()
        todo = [target]
        while todo:
            s = todo.pop()
            if s.index in needed:
                continue
            needed.add(s.index)
            dep = self._stage_ref(dfm.expand(s.base, self.meta), s.index)
            if dep is not None:
                todo.append(dep)
            for inst in s.instructions:
                froms = [inst.flag("from", None)] if inst.cmd in ("COPY", "ADD") else []
                if inst.cmd == "RUN":
                    froms = [m.partition("from=")[2].split(",")[0]
                             for m in inst.flag_all("mount") if "from=" in m]
                for src in froms:
                    if src:
                        dep = self._stage_ref(dfm.expand(src, self.meta), s.index)
                        if dep is not None:
                            todo.append(dep)
        return needed

    def _announce(self, text: str) -> None:
        self.step += 1
        self.out(f"Step {self.step}/{self.total} : {text}")

    def _build_stage(self, s) -> _Stage:
        from pbox.build import dockerfile as dfm

        base_name = dfm.expand(s.base, self.meta)
        self._announce(s.from_instruction.original)
        dep = self._stage_ref(base_name, s.index)
        if dep is not None:
            st = copy.deepcopy(self.built[dep.index])
        else:
            platform = s.platform and dfm.expand(s.platform, self.meta)
            st = self._base(base_name.lower() if base_name.lower() == "scratch" else base_name,
                            platform or None)
        if st.image_id is None:
            st.image_id = self._put_config(st)
        st.mark_base()
        self.out(f" ---> {_short(st.image_id)}")
        for k in ("container", "container_config"):
            st.image.pop(k, None)
        self.args: dict = {}
        self.cmd_set = False
        self._run_triggers(st)
        last = len(s.instructions) - 1
        for i, inst in enumerate(s.instructions):
            self._guarded(st, inst, final_labels=(i == last and s.index == self.target_index))
        if not s.instructions and self.opts.labels and s.index == self.target_index:
            self._labels_only(st)
        return st

    def _run_triggers(self, st: _Stage) -> None:
        """The base image's ONBUILD triggers, in order, right after FROM; the new image
        does not inherit them."""
        from pbox.build import dockerfile as dfm

        triggers = [t for t in (st.cfg.get("OnBuild") or []) if t and t.strip()]
        if "OnBuild" in st.cfg:
            st.cfg["OnBuild"] = None
        if not triggers:
            return
        n = len(triggers)
        self.out(f"# Executing {n} build trigger{'s' if n > 1 else ''}")
        for text in triggers:
            try:
                stages = dfm.parse("FROM scratch\n" + text + "\n").stages
            except dfm.DockerfileError as e:
                raise BuildError(f"the base image's ONBUILD trigger {text!r}: {e.problem}",
                                 exit_code=1)
            parsed = [i for s in stages for i in [s.from_instruction] * (s.index > 0)
                      + s.instructions]
            for inst in parsed:
                if inst.cmd in ("ONBUILD", "FROM", "MAINTAINER"):
                    raise BuildError(f"{inst.cmd} isn't allowed as an ONBUILD trigger",
                                     exit_code=1)
                self._guarded(st, inst, trigger=True)

    def _guarded(self, st: _Stage, inst, final_labels: bool = False, trigger: bool = False):
        """One step; a failure names the step and its line (exit 1, as docker's build)."""
        try:
            self._step(st, inst, final_labels=final_labels, trigger=trigger)
        except PboxError as e:
            if isinstance(e, BuildError) and getattr(e, "step_error", False):
                raise
            where = (f"{self.opts.dockerfile_name}:{inst.line}" if not trigger
                     else "a trigger of the base image's ONBUILD")
            err = BuildError(f"building at STEP \"{inst.original}\" ({where}): {e}",
                             exit_code=1)
            err.step_error = True
            raise err from None
        finally:
            self.excl = None
            if self.fetched is not None:
                self.fetched.drop()

    def _labels_only(self, st: _Stage) -> None:
        labels = dict(st.cfg.get("Labels") or {})
        labels.update(self.opts.labels)
        st.cfg["Labels"] = labels
        self._store_step(st, {"created_by": "LABEL (--label)", "empty_layer": True})

    def _expand_env(self, st: _Stage) -> dict:
        env = dict(self.args)
        env.update(st.env())
        return env

    def _step(self, st: _Stage, inst, final_labels: bool, trigger: bool = False) -> None:
        from pbox.build import dockerfile as dfm

        if trigger:
            self.out(f" ---> Running trigger: {inst.original}")
        else:
            self._announce(inst.original)
        env = self._expand_env(st)
        cmd = inst.cmd
        if cmd == "ARG":
            for k, v in dfm.key_values(inst, env):
                if k in self.opts.build_args:
                    self.args[k] = self.opts.build_args[k]
                    self.used_args.add(k)
                elif v is not None:
                    self.args[k] = v
                elif k in self.meta:
                    self.args[k] = self.meta[k]
        if cmd in ("COPY", "ADD"):
            text, sources = self._copy_key(st, inst, env)
        elif cmd == "RUN":
            text, sources = self._run_text(inst, st), self._run_key(st, inst, env)
        else:
            text, sources = metadata.history_text(inst, env), ""
        run_args = self._run_args(st)
        key = cache_key(st.image_id, text, run_args, sources)
        if final_labels and self.opts.labels:
            key = cache_key(key, "LABEL --label", dict(self.opts.labels))
        hit = None if self.opts.no_cache else self.cache.get(key)
        if cmd == "CMD":
            self.cmd_set = True  # this stage has its own CMD: a later ENTRYPOINT keeps it
        if hit is not None:
            self.out(" ---> Using cache")
            st.image = json.loads(self.store.read_blob(hit["id"]))
            st.image_id, st.layers = hit["id"], list(hit["layers"])
            self.out(f" ---> {_short(hit['id'])}")
            return
        if cmd == "RUN":
            self._do_run(st, inst, text, env)
        elif cmd in ("COPY", "ADD"):
            self._do_copy(st, inst, env, text)
        else:
            self._do_meta(st, inst, env, text)
        if final_labels and self.opts.labels:
            labels = dict(st.cfg.get("Labels") or {})
            labels.update(self.opts.labels)
            st.cfg["Labels"] = labels
            self._store_step(st, {"created_by": "LABEL (--label)", "empty_layer": True})
        self.cache.put(key, st.image_id, st.layers)
        self.out(f" ---> {_short(st.image_id)}")

    def _run_args(self, st: _Stage) -> dict:
        """Build args a RUN sees as environment: those in scope not overridden by ENV,
        and the predefined proxy args when given."""
        env = st.env()
        out = {k: v for k, v in self.args.items() if k not in env}
        for k in PROXY_ARGS:
            if k in self.opts.build_args and k not in env:
                out[k] = self.opts.build_args[k]
        return out

    # -- metadata -------------------------------------------------------------------------

    def _do_meta(self, st: _Stage, inst, env: dict, text: str) -> None:
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
            cfg["Healthcheck"] = metadata.healthcheck(inst)
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

    def _mkdir_layer(self, st: _Stage, path: str, text: str) -> bool:
        """WORKDIR creates its directory: a layer when the image lacks it."""
        from pbox.storage.layerview import LayerView

        lower = LayerView([self.store.layer_diff(c) for c in reversed(st.layers)])
        parts = _resolve_in_image(lower, [p for p in path.split("/") if p]) \
            if st.layers else [p for p in path.split("/") if p]
        node = lower.lookup(parts) if st.layers else None
        if node is not None or not parts:
            return False
        staging = self.store.temp("build")
        try:
            os.makedirs(staging.path)
            target = self._stage_dirs(staging.path, lower, parts, st)
            os.makedirs(target, exist_ok=True)
            self._own(target, *self._owner_of(st, st.cfg.get("User") or "", lower))
            self._commit_dir(st, staging.path, lower, {"created_by": text.replace(
                "/bin/sh -c #(nop) ", "").strip() + " # buildkit", "comment": "buildkit.dockerfile.v0"})
        finally:
            staging.discard()
        return True

    # -- COPY / ADD -----------------------------------------------------------------------

    def _split_copy(self, inst, env: dict):
        from pbox.build import dockerfile as dfm
        from pbox.build import sources

        raw = sources.split_heredoc_words(inst)
        words = list(raw) if inst.json else dfm.expand_words(" ".join(raw), env)
        if inst.json:
            words = [dfm.expand(w, env) for w in words]
        if len(words) + len(inst.heredoc_info) < 2 or not words:
            raise BuildError(f"{inst.cmd} requires at least two arguments")
        return words[:-1], words[-1]

    def _copy_source(self, inst, env: dict):
        """(LayerView, _Stage) of ``--from``, or None for the context."""
        from pbox.build import dockerfile as dfm

        src = inst.flag("from", None)
        if not src:
            return None
        return self._stage_or_image(dfm.expand(src, env))

    def _stage_or_image(self, name: str):
        """(LayerView, _Stage) of a built stage (by name or index) or an image."""
        from pbox.storage.layerview import LayerView

        dep = None
        for s in self.df.stages:
            if s.index in self.built and (s.name == name.lower() or str(s.index) == name):
                dep = s
        if dep is not None:
            built = self.built[dep.index]
        else:
            built = self._base(name, None)
        return LayerView([self.store.layer_diff(c) for c in reversed(built.layers)]), built

    def secret(self, sid: str):
        """The bytes of ``build --secret id=SID``, or None."""
        spec = self.opts.secrets.get(sid)
        if spec is None:
            return None
        kind, value = spec
        if kind == "env":
            v = os.environ.get(value)
            return None if v is None else v.encode()
        try:
            with open(value, "rb") as f:
                return f.read()
        except OSError as e:
            raise BuildError(f"secret {sid}: cannot read {value}: {e.strerror}")

    def _copy_key(self, st: _Stage, inst, env: dict):
        from pbox.build import sources

        srcs, dest = self._split_copy(inst, env)
        flags = " ".join(f"--{k}={v}" for k, v in inst.flags)
        docs = [f"<<{d.name}" for d in inst.heredoc_info] if not inst.json else []
        text = (f"{inst.cmd} {flags + ' ' if flags else ''}"
                f"{' '.join(docs + srcs)} {dest} # buildkit")
        inline = sources.heredoc_files(inst, env) if not inst.json else []
        extra = "".join(f"<<{f.name}:{f.digest()};" for f in inline)
        checksum = inst.flag("checksum", None) if inst.cmd == "ADD" else None
        if checksum is not None:
            checksum = sources.parse_checksum(checksum)
            if not srcs or not all(sources.is_url(s) for s in srcs):
                raise BuildError("checksum can't be specified for non-HTTP(S) sources")
        frm = self._copy_source(inst, env)
        if frm is not None:
            return text, extra + "image:" + (frm[1].image_id or "")
        rels = []
        for s in srcs:
            if sources.is_git(s):
                if inst.cmd != "ADD":
                    raise BuildError(f"COPY {s}: source can't be a git repository (use ADD)")
                if checksum is not None:
                    raise BuildError("--checksum is not supported for git sources")
                extra += f"git:{s}:{self._fetcher().git(s, inst).commit};"
                continue
            if sources.is_url(s):
                if inst.cmd != "ADD":
                    raise BuildError(f"COPY {s}: source can't be a URL (use ADD)")
                if checksum is not None:
                    extra += f"url:{s}:{checksum};"
                else:  # docker downloads every time: the content decides the cache
                    f = self._fetcher().url(s, None)
                    extra += f"url:{s}:{f.digest()}:{f.mtime};"
                continue
            found = self.ctx.glob(s)
            if not found:
                raise BuildError(f"{inst.cmd} source {s!r} not found in the build context")
            rels.extend(found)
        return text, extra + (self.ctx.digest(rels) if rels else "")

    def _fetcher(self):
        from pbox.build.sources import Fetcher

        if self.fetched is None:
            self.fetched = Fetcher(self.store)
        return self.fetched

    def _do_copy(self, st: _Stage, inst, env: dict, text: str) -> None:
        from pbox.build import sources
        from pbox.storage.layerview import LayerView

        srcs, dest = self._split_copy(inst, env)
        frm = self._copy_source(inst, env)
        lower = LayerView([self.store.layer_diff(c) for c in reversed(st.layers)])
        workdir = st.cfg.get("WorkingDir") or "/"
        dest_dir = dest.endswith("/") or dest in (".", "..")
        dest_abs = posixpath.normpath(posixpath.join(workdir, dest))
        uid, gid = 0, 0
        chown = inst.flag("chown", None)
        if chown:
            uid, gid = self._owner_of(st, chown, lower, chown=True)
        chmod = inst.flag("chmod", None)
        mode = None
        if chmod:
            try:
                mode = int(chmod, 8)
            except ValueError:
                raise BuildError(f"invalid --chmod {chmod!r}: an octal mode")
        if inst.flag("parents", None) is not None:
            raise BuildError(f"{inst.cmd} --parents is not supported")
        unpack = (inst.flag("unpack", None) or "").lower()  # ADD: "" is docker's default
        items = []  # (name, host path, Node or sources.InlineFile)
        self.excl = sources.Excluder.of(inst)
        if frm is None:
            checksum = inst.flag("checksum", None) if inst.cmd == "ADD" else None
            for s in srcs:
                if sources.is_git(s):
                    items.append(("", self._fetcher().git(s, inst)))
                    continue
                if sources.is_url(s):
                    items.append((None, self._fetcher().url(s, checksum and
                                                    sources.parse_checksum(checksum))))
                    continue
                for rel in self.ctx.glob(s):
                    if not (self.excl and self.excl.skip(posixpath.basename(rel))):
                        items.append((rel, self.ctx.lookup(rel) if rel else self.ctx.root))
            if len(items) > 1 or any(c in "".join(srcs) for c in "*?["):
                dest_dir = True
        else:
            view = frm[0]
            for s in srcs:
                parts = [p for p in posixpath.normpath("/" + s).split("/") if p]
                node = view.lookup(parts) if parts else view.root
                if node is None:
                    raise BuildError(f"{s!r} not found in the source image")
                if not (self.excl and parts and self.excl.skip(parts[-1])):
                    items.append(("/".join(parts), node))
            if len(items) > 1:
                dest_dir = True
        if not inst.json:
            for f in sources.heredoc_files(inst, env):
                items.append((f.name, f))
        if len(items) > 1:
            dest_dir = True
        staging = self.store.temp("build")
        try:
            os.makedirs(staging.path)
            dparts = _resolve_in_image(lower, [p for p in dest_abs.split("/") if p])
            for name, src in items:
                if isinstance(src, sources.InlineFile):
                    name = name or src.name
                    is_dir = False
                elif isinstance(src, sources.GitTree):
                    is_dir = True
                else:
                    is_dir = (os.path.isdir(src) and not os.path.islink(src)) \
                        if isinstance(src, str) else src.is_dir
                if is_dir:
                    target_parts = dparts
                elif dest_dir or self._is_dir_in(lower, dparts):
                    target_parts = dparts + [posixpath.basename(name) or "file"]
                else:
                    target_parts = dparts
                parent = self._stage_dirs(staging.path, lower, target_parts[:-1] if
                                          target_parts else [], st)
                target = os.path.join(parent, target_parts[-1]) if target_parts else parent
                if isinstance(src, sources.FetchedFile) and unpack == "true" \
                        and _is_tar(src.path):
                    _extract_tar(src.path, self._stage_dirs(staging.path, lower, dparts, st))
                elif isinstance(src, sources.InlineFile):
                    src.write(target, mode)
                    self._own(target, uid, gid)
                elif isinstance(src, sources.GitTree):
                    from pbox.build.context import Context

                    self._copy_context("", target, uid, gid, mode, True, Context(src.root))
                elif isinstance(src, str):
                    rel = name
                    if (inst.cmd == "ADD" and unpack != "false" and not is_dir
                            and not os.path.islink(src) and _is_tar(src)):
                        out = self._stage_dirs(staging.path, lower, dparts, st)
                        _extract_tar(src, out)
                        continue
                    self._copy_context(rel, target, uid, gid, mode, is_dir)
                else:
                    self._copy_node(frm[0], src, target, uid, gid, mode, is_dir)
            self._commit_dir(st, staging.path, lower,
                             {"created_by": text, "comment": "buildkit.dockerfile.v0"})
        finally:
            staging.discard()

    @staticmethod
    def _is_dir_in(lower, parts) -> bool:
        node = lower.lookup(parts) if parts else lower.root
        return node is not None and node.is_dir

    def _stage_dirs(self, top: str, lower, parts, st: _Stage) -> str:
        """Make ``parts`` below ``top``, each with the mode and owner the image's directory
        has (so a COPY into /tmp keeps /tmp as it was)."""
        cur = top
        for i, p in enumerate(parts):
            cur = os.path.join(cur, p)
            if os.path.isdir(cur):
                continue
            os.mkdir(cur)
            node = lower.lookup(parts[:i + 1]) if st.layers else None
            if node is not None and node.is_dir:
                os.chmod(cur, stat.S_IMODE(node.st.st_mode))
                self._own(cur, node.st.st_uid, node.st.st_gid)
                os.utime(cur, ns=(node.st.st_atime_ns, node.st.st_mtime_ns))
            else:
                os.chmod(cur, 0o755)
        return cur

    def _own(self, path: str, uid, gid) -> None:
        if not self.keep_owners or uid is None:
            return
        try:
            os.lchown(path, uid, gid)
        except OSError:
            pass

    def _copy_entry(self, src: str, st, target: str, uid, gid, mode) -> None:
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), target)
        elif stat.S_ISDIR(st.st_mode):
            os.makedirs(target, exist_ok=True)
            os.chmod(target, mode if mode is not None else stat.S_IMODE(st.st_mode))
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(src, target, follow_symlinks=False)
            os.chmod(target, mode if mode is not None else stat.S_IMODE(st.st_mode))
        else:
            return  # devices, fifos and sockets are not copied
        self._own(target, uid, gid)
        if not stat.S_ISLNK(st.st_mode):
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _copy_context(self, rel: str, target: str, uid, gid, mode, is_dir: bool,
                      ctx=None) -> None:
        dirs, skipped = [], ()
        for r, host, st in (ctx or self.ctx).walk(rel):
            sub = r[len(rel):].lstrip("/") if rel else r
            if is_dir and not sub:
                os.makedirs(target, exist_ok=True)
                continue
            if sub.startswith(skipped) or (self.excl and is_dir and self.excl.skip(sub)):
                skipped += (sub + "/",)
                continue
            out = os.path.join(target, sub) if sub else target
            self._copy_entry(host, st, out, uid, gid, mode)
            if stat.S_ISDIR(st.st_mode):
                dirs.append((out, st))
        for out, st in reversed(dirs):  # after their contents were written
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _copy_node(self, view, node, target: str, uid, gid, mode, is_dir: bool,
                   sub: str = "") -> None:
        if is_dir:
            os.makedirs(target, exist_ok=True)
            for name, kid in sorted(view.children(node).items()):
                below = f"{sub}/{name}" if sub else name
                if not (self.excl and self.excl.skip(below)):
                    self._copy_node(view, kid, os.path.join(target, name), uid, gid, mode,
                                    kid.is_dir, below)
            os.utime(target, ns=(node.st.st_atime_ns, node.st.st_mtime_ns))
            return
        self._copy_entry(node.path, node.st, target, uid, gid, mode)

    def _commit_dir(self, st: _Stage, top: str, lower, entry: dict) -> None:
        from pbox.containers.fsops import add_layer
        from pbox.storage import layertar

        parent_diff = list((st.image.get("rootfs") or {}).get("diff_ids") or [])
        lowers = [self.store.layer_diff(c) for c in reversed(st.layers)]
        with self.store.gc_lock.shared():
            diff_ids, layers, empty = add_layer(
                self.store, parent_diff, st.layers,
                lambda f: layertar.write_layer_tar(top, f, mtime_clamp=self.epoch),
                lowers, self.keep_owners, mtime_clamp=self.epoch, notice=self.notice)
        if empty:
            entry = dict(entry, empty_layer=True)
        self._store_step(st, entry, diff_ids, layers)

    def _owner_of(self, st: _Stage, spec: str, lower, chown: bool = False):
        """uid, gid of ``user[:group]`` (names looked up in the image's /etc/passwd)."""
        if not spec:
            return 0, 0
        user, _, group = spec.partition(":")
        passwd = _read_db(lower, "passwd")
        groups = _read_db(lower, "group")
        uid = _lookup_id(user, passwd, "user")
        if group:
            gid = _lookup_id(group, groups, "group")
        elif chown:
            gid = uid if user.isdigit() else int(passwd.get(user, ["", "", "", "0"])[3] or 0)
        else:
            gid = int(passwd.get(user, ["", "", "", "0"])[3] or 0) if not user.isdigit() else 0
        return uid, gid


# -- small helpers ------------------------------------------------------------------------------


def _resolve_in_image(lower, parts: list) -> list:
    """``parts`` with the image's symbolic links on the way resolved inside its root, so
    a COPY to /bin/ in an image whose /bin links to usr/bin writes to /usr/bin (and
    keeps the link)."""
    todo = list(parts)
    done: list = []
    hops = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        if name == ".":
            continue
        node = lower.lookup(done + [name]) if lower.root.dirs else None
        if node is not None and stat.S_ISLNK(node.st.st_mode):
            hops += 1
            if hops > 40:
                raise BuildError(f"/{'/'.join(parts)}: too many levels of symbolic links")
            target = os.readlink(node.path)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p] + todo
            continue
        done.append(name)
    return done


def _read_db(lower, name: str) -> dict:
    node = lower.lookup(["etc", name])
    out = {}
    if node is None or node.is_dir or not stat.S_ISREG(node.st.st_mode):
        return out
    with open(node.path, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.rstrip("\n").split(":")
            if len(fields) >= 3:
                out[fields[0]] = fields
    return out


def _lookup_id(name: str, db: dict, what: str) -> int:
    if name.isdigit():
        return int(name)
    if name not in db:
        raise BuildError(f"unable to find {what} {name}: no matching entries in "
                         f"{'passwd' if what == 'user' else 'group'} file")
    return int(db[name][2])


def _is_tar(path: str) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _extract_tar(path: str, dest: str) -> None:
    """ADD of a local tar: its contents land in ``dest`` (no name may leave it)."""
    from pbox.build.context import extract_context_tar

    with open(path, "rb") as f:
        extract_context_tar(f, dest)


def _short(image_id: str | None) -> str:
    return (image_id or "")[7:19]


def _arch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def tag_image(config: Config, image_id: str, names: list) -> list:
    """Point each of ``names`` at the built image; returns them as given."""
    from pbox.images import open_store
    from pbox.oci import reference as refs
    from pbox.storage.images import ImageStore

    istore = ImageStore(open_store(config))
    for n in names:
        istore.set_tag(refs.parse(n).string(), image_id)
    return list(names)
