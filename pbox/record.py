"""Plain data classes for the hot paths, without the ``dataclasses`` module.

``@dataclass`` costs every process that uses it: importing ``dataclasses`` pulls in
``inspect`` (and ``ast``, ``dis``, ``tokenize``), about 5 ms, and each decorated class
then runs several ``exec`` calls at import, about 0.3 ms a class.  ``pbox run`` would pay
that for some fifteen classes before starting anything.  :func:`record` gives the part
pbox uses (keyword or positional ``__init__`` with defaults and factories, ``__repr__``,
``__eq__``, ``frozen``).  Its ``__init__`` is generic for a class's first few instances,
then compiled (one ``exec``, ~0.1 ms): most records of a command are made a few times,
a few (tar entries) thousands of times.

    @record
    class Mount:
        type: str
        target: str
        options: list = factory(list)

Fields are the class's own annotations, in order; inherited annotations are not fields.
"""

from __future__ import annotations

_MISSING = object()
# Instances made by the generic __init__ (~2 us each) before the class's own is compiled
# (~0.15 ms, like ~80 of them).
COMPILE_AFTER = 32
_REQUIRED, _DEFAULT, _FACTORY = 0, 1, 2


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


def factory(make) -> _Factory:
    """A field default made anew for each instance (``dataclasses.field(default_factory=)``)."""
    return _Factory(make)


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


def _frozen_setattr(self, name, value):
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self, name):
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def record(cls=None, *, frozen: bool = False):
    """Decorate a class whose annotations are its fields (see the module docstring)."""

    def wrap(cls):
        names = tuple(cls.__dict__.get("__annotations__", {}))
        env = {"_MISSING": _MISSING, "_set": object.__setattr__}
        params, body = [], []
        fields = []  # (name, kind, default value or factory)
        seen_default = False
        for name in names:
            default = cls.__dict__.get(name, _MISSING)
            if isinstance(default, _Factory):
                env[f"_f_{name}"] = default.make
                params.append(f"{name}=_MISSING")
                value = f"_f_{name}() if {name} is _MISSING else {name}"
                fields.append((name, _FACTORY, default.make))
                delattr(cls, name)
                seen_default = True
            elif default is not _MISSING:
                if type(default) in (list, dict, set):
                    raise TypeError(f"{cls.__name__}: mutable default for field {name!r}: "
                                    f"use factory()")
                env[f"_d_{name}"] = default
                params.append(f"{name}=_d_{name}")
                value = name
                fields.append((name, _DEFAULT, default))
                seen_default = True
            else:
                if seen_default:
                    raise TypeError(f"{cls.__name__}: field {name!r} without a default "
                                    "follows one with a default")
                params.append(name)
                value = name
                fields.append((name, _REQUIRED, None))
            body.append(f"_set(self, {name!r}, {value})" if frozen
                        else f"self.{name} = {value}")
        src = (f"def __init__(self, {', '.join(params)}):\n "
               + ("\n ".join(body) or "pass") + "\n")

        def make_init():
            exec(src, env)  # noqa: S102 - generated from the class's own field names
            init = env["__init__"]
            init.__qualname__ = f"{cls.__qualname__}.__init__"
            cls.__init__ = init
            return init

        generic = _generic_init(cls.__qualname__, fields, frozen)
        made = [0]

        def __init__(self, *args, **kwargs):
            if made[0] < COMPILE_AFTER:
                made[0] += 1
                generic(self, args, kwargs)
            else:  # a class made often gets its own __init__
                make_init()(self, *args, **kwargs)

        cls.__init__ = __init__
        cls.__record_fields__ = names
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = _repr
        if "__eq__" not in cls.__dict__:
            cls.__eq__ = _eq
            cls.__hash__ = _hash if frozen else None
        if frozen:
            cls.__setattr__ = _frozen_setattr
            cls.__delattr__ = _frozen_delattr
        return cls

    return wrap if cls is None else wrap(cls)


def _generic_init(qualname: str, fields: list, frozen: bool):
    """What the compiled ``__init__`` does, for any class: (self, args, kwargs)."""
    where = {f[0]: i for i, f in enumerate(fields)}
    n = len(fields)
    put = object.__setattr__ if frozen else setattr

    def init(self, args: tuple, kwargs: dict) -> None:
        if len(args) > n:
            raise TypeError(f"{qualname}.__init__() takes {n + 1} positional arguments "
                            f"but {len(args) + 1} were given")
        for key in kwargs:
            i = where.get(key)
            if i is None:
                raise TypeError(f"{qualname}.__init__() got an unexpected keyword "
                                f"argument {key!r}")
            if i < len(args):
                raise TypeError(f"{qualname}.__init__() got multiple values for "
                                f"argument {key!r}")
        for i, (name, kind, value) in enumerate(fields):
            if i < len(args):
                v = args[i]
            elif name in kwargs:
                v = kwargs[name]
            elif kind == _REQUIRED:
                raise TypeError(f"{qualname}.__init__() missing a required argument: "
                                f"{name!r}")
            else:
                v = value if kind == _DEFAULT else _MISSING
            if kind == _FACTORY and v is _MISSING:
                v = value()
            put(self, name, v)

    return init


def _values(obj) -> tuple:
    return tuple(getattr(obj, n) for n in obj.__record_fields__)


def _repr(self) -> str:
    inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__record_fields__)
    return f"{type(self).__qualname__}({inner})"


def _eq(self, other):
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self) -> int:
    return hash(_values(self))


def names(cls) -> tuple:
    """The field names of a record class, in order."""
    return cls.__record_fields__


def as_dict(obj):
    """``obj`` as plain data: records become dicts, recursively, containers copied
    (what ``dataclasses.asdict`` does)."""
    if hasattr(type(obj), "__record_fields__"):
        return {n: as_dict(getattr(obj, n)) for n in obj.__record_fields__}
    if isinstance(obj, (list, tuple)):
        return type(obj)(as_dict(v) for v in obj)
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    return obj


def replace(obj, **changes):
    """A copy of ``obj`` with ``changes`` (``dataclasses.replace``)."""
    values = {n: getattr(obj, n) for n in obj.__record_fields__}
    values.update(changes)
    return type(obj)(**values)
