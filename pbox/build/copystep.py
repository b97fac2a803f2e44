"""COPY and ADD steps of :class:`pbox.build.executor.Builder` (mixed into it).

The sources (files of the context, of a stage or image with ``--from``, heredocs,
URLs and git repositories: :mod:`pbox.build.sources`) are written into a staging
directory, below copies of the image's directories on the way (same mode and owner),
with the image's symbolic links on the destination path followed inside the image;
the staging directory becomes the step's layer.  ADD of a local tar extracts it.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile

from pbox.build.imagetree import owner_of, resolve_in_image
from pbox.errors import BuildError


class CopySteps:
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
        dep = None
        for s in self.df.stages:
            if s.index in self.built and (s.name == name.lower() or str(s.index) == name):
                dep = s
        if dep is not None:
            built = self.built[dep.index]
        else:
            built = self._base(name, None)
        return self._view(built.layers), built

    def _copy_key(self, st, inst, env: dict):
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

    def _do_copy(self, st, inst, env: dict, text: str) -> None:
        from pbox.build import sources

        srcs, dest = self._split_copy(inst, env)
        frm = self._copy_source(inst, env)
        lower = self._view(st.layers)
        workdir = st.cfg.get("WorkingDir") or "/"
        dest_dir = dest.endswith("/") or dest in (".", "..")
        dest_abs = posixpath.normpath(posixpath.join(workdir, dest))
        uid, gid = 0, 0
        chown = inst.flag("chown", None)
        if chown:
            uid, gid = owner_of(lower, chown, chown=True)
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
            dparts = resolve_in_image(lower, [p for p in dest_abs.split("/") if p])
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

    def _stage_dirs(self, top: str, lower, parts, st) -> str:
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
