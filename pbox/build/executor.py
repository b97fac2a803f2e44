"""`pbox build`: runs a parsed Dockerfile (:mod:`pbox.build.dockerfile`) step by step.

Every step makes an image in the store, as docker's classic builder does: metadata
steps (ENV, CMD, LABEL, ...: :mod:`pbox.build.metadata`) only change the config and
add a history entry with ``empty_layer``; RUN (:mod:`pbox.build.runstep`, its ``--mount``s in
:mod:`pbox.build.mounts`) runs in a container created and started exactly as `run`
does, and the container's upper directory becomes the layer
(:func:`pbox.containers.fsops.add_layer`); COPY and ADD (:mod:`pbox.build.copystep`)
write their files (from the context, a stage or image, a heredoc, a URL or a git
repository: :mod:`pbox.build.sources`) into a staging directory that becomes the layer.  The base
image's ONBUILD triggers run right after FROM; ``--squash`` is :mod:`pbox.build.squash`.

History: metadata steps get docker's ``/bin/sh -c #(nop)  ENV a=b``; RUN, COPY and ADD
get BuildKit's form (``RUN /bin/sh -c echo hi # buildkit``, ``COPY app /app # buildkit``).

Cache (:mod:`pbox.build.cache`): a step's key is the parent image id, the instruction
after substitution, the build args in scope and, for COPY/ADD, a hash of the sources.
A hit reuses the recorded image.

Reproducible: with SOURCE_DATE_EPOCH set, ``created`` times are that epoch and layer
mtimes are clamped to it, so the same inputs give the same image id.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field

from pbox import jsonio as json
from pbox.build import metadata
from pbox.build.cache import FILE_SUMS, BuildCache, cache_key
from pbox.build.copystep import CopySteps
from pbox.build.metadata import MetaSteps
from pbox.build.runstep import RunSteps
from pbox.config import Config
from pbox.errors import BuildError, PboxError

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
    progress: str = ""  # "plain": buildah's STEP n/m lines with each step's time


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

    def diff_ids(self) -> list:
        return list((self.image.get("rootfs") or {}).get("diff_ids") or [])

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


class Builder(RunSteps, CopySteps, MetaSteps):
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
            diff_ids, layers = st.diff_ids(), st.layers
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

        with self.store.gc_lock.shared():
            image_id = store_image(self.store, st.image, st.layers, st.diff_ids(),
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
        from pbox.pull import find_or_pull_image

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
        from pbox.build.context import Context, FileSums
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
        self.ctx.sums = FileSums(os.path.join(self.store.root, FILE_SUMS), self.store)
        self.df = df
        # meta args: for FROM lines and for stages that redeclare them
        # BuildKit's automatic platform args: for FROM lines, and in a stage that declares them
        arch = _arch()
        self.meta = {"TARGETPLATFORM": f"linux/{arch}", "TARGETOS": "linux",
                     "TARGETARCH": arch, "TARGETVARIANT": "", "BUILDPLATFORM": f"linux/{arch}",
                     "BUILDOS": "linux", "BUILDARCH": arch, "BUILDVARIANT": ""}
        for inst in df.meta_args:
            self._declare_args(inst, self.meta, self.meta)
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
        self.step_started = time.monotonic()
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
        self.step_started = time.monotonic()
        if self.opts.progress == "plain":
            self.out(f"STEP {self.step}/{self.total}: {text}")
        else:
            self.out(f"Step {self.step}/{self.total} : {text}")

    def _done(self, image_id: str | None, cached: bool = False) -> None:
        """The end of a step: docker's ` ---> Using cache` / ` ---> ID`, or with
        --progress plain `--> Using cache ID` / `--> ID (0.12s)`."""
        if self.opts.progress != "plain":
            if cached:
                self.out(" ---> Using cache")
            self.out(f" ---> {_short(image_id)}")
            return
        if cached:
            self.out(f"--> Using cache {_short(image_id)}")
        took = time.monotonic() - self.step_started
        self.out(f"--> {_short(image_id)} ({took:.2f}s)")

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
        self._done(st.image_id)
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

        if trigger:
            self.out(f" ---> Running trigger: {inst.original}")
        else:
            self._announce(inst.original)
        env = self._expand_env(st)
        cmd = inst.cmd
        if cmd == "ARG":
            self._declare_args(inst, env, self.args)
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
            st.image = json.loads(self.store.read_blob(hit["id"]))
            st.image_id, st.layers = hit["id"], list(hit["layers"])
            self._done(hit["id"], cached=True)
            return
        if cmd == "RUN":
            self._do_run(st, inst, text, env)
        elif cmd in ("COPY", "ADD"):
            self._do_copy(st, inst, env, text)
        else:
            self._do_meta(st, inst, env, text)
        if final_labels and self.opts.labels:
            self._labels_only(st)
        self.cache.put(key, st.image_id, st.layers)
        self._done(st.image_id)

    def _declare_args(self, inst, env: dict, into: dict) -> None:
        """ARG (before the first FROM: ``into`` is the meta args): a --build-arg, else
        the default, else the meta arg of that name."""
        from pbox.build import dockerfile as dfm

        for k, v in dfm.key_values(inst, env):
            if k in self.opts.build_args:
                into[k] = self.opts.build_args[k]
                self.used_args.add(k)
            elif v is not None:
                into[k] = v
            elif k in self.meta:
                into[k] = self.meta[k]

    def _run_args(self, st: _Stage) -> dict:
        """Build args a RUN sees as environment: those in scope not overridden by ENV,
        and the predefined proxy args when given."""
        env = st.env()
        out = {k: v for k, v in self.args.items() if k not in env}
        for k in PROXY_ARGS:
            if k in self.opts.build_args and k not in env:
                out[k] = self.opts.build_args[k]
        return out


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

    def _lowers(self, layers: list) -> list:
        """The diff directories of ``layers`` (bottom first), topmost first."""
        return [self.store.layer_diff(c) for c in reversed(layers)]

    def _view(self, layers: list):
        """The merged tree of ``layers`` (a LayerView)."""
        from pbox.storage.layerview import LayerView

        return LayerView(self._lowers(layers))

    def _add_layer(self, st: _Stage, write_tar, lowers: list, stubs=()):
        """Store the tar ``write_tar(f)`` writes as a layer on top of the stage's layers
        (``lowers``: their directories); returns ``(diff_ids, layers, empty)``."""
        from pbox.containers.fsops import add_layer

        with self.store.gc_lock.shared():
            return add_layer(self.store, st.diff_ids(), st.layers, write_tar, lowers,
                             self.keep_owners,
                             mtime_clamp=self.epoch, notice=self.notice, stubs=stubs)

    def _commit_dir(self, st: _Stage, top: str, lower, entry: dict) -> None:
        from pbox.storage import layertar

        diff_ids, layers, empty = self._add_layer(
            st, lambda f: layertar.write_layer_tar(top, f, mtime_clamp=self.epoch),
            self._lowers(st.layers))
        if empty:
            entry = dict(entry, empty_layer=True)
        self._store_step(st, entry, diff_ids, layers)


# -- small helpers ------------------------------------------------------------------------------







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
