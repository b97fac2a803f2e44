"""RUN steps of :class:`pbox.build.executor.Builder` (mixed into it).

A RUN runs in a container created and started exactly as `run` does: the stage's env,
workdir, user and shell, build args as extra environment, pbox's init as PID 1 (so a
forwarded ^C ends the step), the step's ``--network`` and ``--mount``s
(:mod:`pbox.build.mounts`).  The container's upper directory becomes the layer through
``fsops.add_layer``, without the mount points made for the step's mounts; the
container is removed afterwards, also when the step fails.
"""

from __future__ import annotations

import os
import re

from pbox.build.imagetree import resolve_in_image
from pbox.errors import BuildError

DEFAULT_SHELL = ["/bin/sh", "-c"]


class RunSteps:
    def _run_command(self, inst, st) -> list:
        if inst.json:
            return list(inst.args)
        script = " ".join(inst.args)
        shell = list(st.cfg.get("Shell") or DEFAULT_SHELL)
        if inst.heredocs and re.fullmatch(r"\s*<<-?\s*[\"']?[A-Za-z0-9_]+[\"']?\s*", script):
            return shell + [inst.heredocs[0][1]]  # `RUN <<EOF`: the heredoc is the script
        for name, content in inst.heredocs or ():
            script += "\n" + content + ("" if content.endswith("\n") else "\n") + name
        return list(st.cfg.get("Shell") or DEFAULT_SHELL) + [script]

    def _run_text(self, inst, st) -> str:
        return "RUN " + " ".join(self._run_command(inst, st)) + " # buildkit"

    def _run_mounts(self, inst, env: dict) -> list:
        from pbox.build import dockerfile as dfm
        from pbox.build import mounts

        return [mounts.parse(m, lambda w: dfm.expand(w, env)) for m in inst.flag_all("mount")]

    def _run_network(self, inst) -> str:
        net = inst.flag("network", None)
        if net is None or net == "default":
            return self.opts.network
        if net not in ("none", "host"):
            raise BuildError(f"RUN --network={net}: none, host or default")
        return net

    def _run_key(self, st, inst, env: dict) -> str:
        """What a RUN's cache key adds to its command: its network and what its bind
        mounts show (secrets and caches do not count, as in BuildKit)."""
        from pbox.build.mounts import StepMounts

        if inst.flag("security", None) not in (None, "sandbox"):
            raise BuildError("RUN --security=insecure is not supported")
        if inst.flag_all("device"):
            raise BuildError("RUN --device is not supported")
        net = self._run_network(inst)
        found = self._run_mounts(inst, env)
        return f"network={net};" + (StepMounts(self, st, found).key() if found else "")

    def _do_run(self, st, inst, text: str, expand_env: dict) -> None:
        from pbox.build.mounts import StepMounts

        env = [f"{k}={v}" for k, v in sorted(self._run_args(st).items())]
        parent = st.image_id
        temporary = self._record(st)
        try:
            with StepMounts(self, st, self._run_mounts(inst, expand_env)) as mounts:
                self._run_in_container(st, inst, text, env, mounts)
        finally:
            if temporary:
                self._drop_record(parent)

    def _drop_record(self, image_id: str) -> None:
        from pbox.images import users_of_images
        from pbox.storage.images import ImageStore

        istore = ImageStore(self.store)
        with self.store.gc_lock.exclusive():
            if not istore.names_of(image_id)[0] and not users_of_images(self.store).get(image_id):
                istore.remove(image_id)

    def _run_in_container(self, st, inst, text: str, env: list, mounts) -> None:
        from pbox.containers import create as cr
        from pbox.containers import lifecycle
        from pbox.containers import options as opt
        from pbox.containers.fsops import _container_fs, layertar
        from pbox.containers.records import ContainerStore

        o = opt.RunOptions(image=st.image_id, command=self._run_command(inst, st),
                           entrypoint="", env=env + mounts.env, pull="never",
                           network=self._run_network(inst), volumes=list(mounts.volumes),
                           tmpfs=list(mounts.tmpfs),
                           # an init as PID 1: ^C (forwarded) ends the step's command
                           init=True,
                           user=st.cfg.get("User") or "", workdir=st.cfg.get("WorkingDir") or "")
        lower = self._view(st.layers)
        stubs = []
        for t in mounts.stubs:  # where the runtime made them: through the image's links
            parts = resolve_in_image(lower, [p for p in t.split("/") if p])
            stubs.extend("/" + "/".join(parts[:i]) for i in range(len(parts), 0, -1))
        cid = cr.create(self.config, o, notice=self.notice)
        try:
            code = lifecycle.run_foreground(self.config, cid, interactive=False, tty=False,
                                            notice=self.notice)
            if code != 0:
                raise BuildError(f"exit status {code}", exit_code=1)
            cs = ContainerStore(self.store)
            fs = _container_fs(cs, cid)

            def write_tar(f):
                if os.path.isdir(fs.upper):
                    layertar.write_layer_tar(fs.upper, f)
                else:
                    f.write(bytes(1024))

            diff_ids, layers, empty = self._add_layer(st, write_tar, fs.lowers, stubs=stubs)
        finally:
            lifecycle.remove(self.config, cid, force=True, volumes=True)
        entry = {"created_by": text, "comment": "buildkit.dockerfile.v0"}
        if empty:
            entry["empty_layer"] = True
        self._store_step(st, entry, diff_ids, layers)
