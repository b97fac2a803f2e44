"""The evaluator: walks a parsed template over plain Python data."""

from __future__ import annotations

from collections.abc import Iterable

from pbox.gotemplate.parse import _Cmd, _Control, _Op, _Pipe
from pbox.gotemplate.table import _Headers
from pbox.gotemplate.values import (
    _NOFINAL,
    NO_VALUE,
    Struct,
    _CallError,
    _ExecError,
    _fmt_v,
    _gotype,
    _sort_key,
    _truth,
)

TYPE_CHECKING = False  # typing costs ~3 ms to import; Any is only an annotation
if TYPE_CHECKING:
    from typing import Any


class _BreakLoop(Exception):
    pass


class _ContinueLoop(Exception):
    pass


class _Exec:
    def __init__(self, funcs: dict, root: Any):
        self.funcs, self.vars, self.at = funcs, [["$", root]], None

    def walk(self, nodes: list, dot: Any, out: list[str]) -> None:
        for node in nodes:
            if type(node) is str:
                out.append(node)
            elif type(node) is _Pipe:
                v = self.pipe(node, dot)
                if not node.decl:
                    out.append(_fmt_v(v))
            elif type(node) is _Control:
                mark = len(self.vars)
                try:
                    if node.kind == "range":
                        self.range(node, dot, out)
                    else:
                        v = self.pipe(node.pipe, dot)
                        if _truth(v):
                            self.walk(node.body, v if node.kind == "with" else dot, out)
                        elif node.else_body is not None:
                            self.walk(node.else_body, dot, out)
                finally:
                    del self.vars[mark:]
            else:
                raise _BreakLoop if node.kind == "break" else _ContinueLoop

    def range(self, node: _Control, dot: Any, out: list[str]) -> None:
        pipe = node.pipe
        v = self.pipe(pipe, dot)  # declares the variables (as Go does); each pass resets them
        if v is None or v is NO_VALUE:
            items: Iterable = []
        elif isinstance(v, dict):
            items = [(k, v[k]) for k in sorted(v, key=_sort_key)]
        elif isinstance(v, (list, tuple)):
            items = enumerate(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            items = ((i, i) for i in range(v))
        else:
            raise _ExecError(f"range can't iterate over {_fmt_v(v)}")
        mark, empty = len(self.vars), True
        for key, elem in items:
            empty = False
            values = [elem] if len(pipe.decl) == 1 else [key, elem]
            for name, val in zip(pipe.decl, values):
                self.assign(name, val)
            try:
                self.walk(node.body, elem, out)
            except _ContinueLoop:
                pass
            except _BreakLoop:
                break
            finally:
                del self.vars[mark:]
        if empty and node.else_body is not None:
            self.walk(node.else_body, dot, out)

    def assign(self, name: str, value: Any) -> None:
        for var in reversed(self.vars):
            if var[0] == name:
                var[1] = value
                return
        raise _ExecError(f"undefined variable: {name}")

    def pipe(self, pipe: _Pipe, dot: Any) -> Any:
        v = _NOFINAL
        for cmd in pipe.cmds:
            v = self.command(cmd, dot, v)
        for name in pipe.decl:
            self.assign(name, v) if pipe.is_assign else self.vars.append([name, v])
        return v

    def command(self, cmd: _Cmd, dot: Any, final: Any) -> Any:
        first = cmd.ops[0]
        self.at = cmd
        if first.kind == "func":
            return self.call(first.value, cmd.ops[1:], dot, final, cmd)
        if len(cmd.ops) > 1 or final is not _NOFINAL:
            self.at = first
            if first.kind == "field":
                raise _ExecError(f"{first.names[-1]} is not a method but has arguments")
            raise _ExecError(f"can't give argument to non-function {first.src}")
        if first.kind == "nil":
            raise _ExecError("nil is not a command")
        return self.arg(first, dot)

    def arg(self, op: _Op, dot: Any) -> Any:
        k = op.kind
        if k == "const":
            return op.value
        if k == "nil":
            return NO_VALUE  # an untyped nil: passed to a function it becomes None
        if k == "func":
            return self.call(op.value, [], dot, _NOFINAL, op)
        if k == "var":
            v = next((var[1] for var in reversed(self.vars) if var[0] == op.value), _NOFINAL)
            if v is _NOFINAL:
                raise _ExecError(f"undefined variable: {op.value}")
        elif k == "pipe":
            v = self.pipe(op.value, dot)
        else:
            v = dot
        self.at = op
        return self.chain(v, op.names) if op.names else v

    def chain(self, v: Any, names: list[str]) -> Any:
        if isinstance(v, _Headers):
            return v.header(".".join(names))
        for name in names:
            if v is NO_VALUE:
                return v
            if v is None:
                raise _ExecError(f"nil pointer evaluating interface {{}}.{name}")
            if not isinstance(v, dict):
                raise _ExecError(f"can't evaluate field {name} in type {_gotype(v)}")
            if type(v) is Struct and name not in v:
                raise _ExecError(f"can't evaluate field {name} in type {v.gotype}")
            v = v.get(name, NO_VALUE)
        return v

    def call(self, name: str, ops: list[_Op], dot: Any, final: Any, node: Any) -> Any:
        fn, least, most = self.funcs[name]
        self.at = node.ops[0] if isinstance(node, _Cmd) else node
        n = len(ops) + (final is not _NOFINAL)
        if n < least or (most is not None and n > most):
            want = f"at least {least}" if most is None else str(least)
            raise _ExecError(f"wrong number of args for {name}: want {want} got {n}")
        if fn is None:  # and / or: stop at the first value that decides
            v = None
            for op in ops:
                v = self.arg(op, dot)
                if _truth(v) == (name == "or"):
                    return v
            return final if final is not _NOFINAL else v
        args = [self.arg(op, dot) for op in ops]
        if final is not _NOFINAL:
            args.append(final)
        args = [None if a is NO_VALUE else a for a in args]  # an invalid value passes as nil
        self.at = node
        try:
            return fn(*args)
        except _CallError as e:
            raise _ExecError(f"error calling {name}: {e}")
