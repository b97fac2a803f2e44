"""pbox.record: the small data classes used instead of dataclasses on hot paths."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pbox.record import FrozenInstanceError, as_dict, factory, names, record, replace


@record
class Inner:
    a: int
    b: list = factory(list)


@record
class Outer:
    name: str
    inner: Inner
    items: list = factory(lambda: [1, 2])
    flag: bool = False


@record(frozen=True)
class Point:
    x: int
    y: int = 0


def test_init_defaults_and_factories_are_per_instance():
    one, two = Inner(1), Inner(2)
    one.b.append("x")
    assert two.b == [] and one.b == ["x"]
    o = Outer("n", Inner(3), flag=True)
    assert o.items == [1, 2] and o.flag is True
    assert Outer("m", Inner(0), items=[9]).items == [9]
    with pytest.raises(TypeError):
        Inner()  # a field without a default is required
    with pytest.raises(TypeError):
        Inner(1, nope=2)


def test_repr_eq_names_replace():
    assert repr(Inner(1, [2])) == "Inner(a=1, b=[2])"
    assert Inner(1) == Inner(1) and Inner(1) != Inner(2)
    assert Inner(1) != Point(1)
    assert names(Outer) == ("name", "inner", "items", "flag")
    assert replace(Point(1, 2), y=5) == Point(1, 5)


def test_as_dict_recurses_and_copies():
    o = Outer("n", Inner(1, [Inner(2)]))
    d = as_dict(o)
    assert d == {"name": "n", "inner": {"a": 1, "b": [{"a": 2, "b": []}]},
                 "items": [1, 2], "flag": False}
    d["items"].append(3)
    assert o.items == [1, 2]


def test_frozen():
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 2
    with pytest.raises(AttributeError):
        del p.y
    assert hash(p) == hash(Point(1, 0))
    assert {p, Point(1, 0)} == {p}


def test_mutable_records_are_unhashable():
    with pytest.raises(TypeError):
        hash(Inner(1))


def test_default_before_required_is_refused():
    with pytest.raises(TypeError, match="follows one with a default"):
        @record
        class Bad:
            a: int = 1
            b: int


def test_a_mutable_default_is_refused():
    with pytest.raises(TypeError, match="use factory"):
        @record
        class Shared:
            items: list = []  # the mistake under test


def test_run_path_does_not_import_dataclasses():
    code = ("import sys; import pbox.containers.create, pbox.containers.lifecycle, "
            "pbox.rootless.launcher; print('dataclasses' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


CALLS = [  # (args, kwargs) for Mixed(...): good ones and wrong ones
    ((1,), {}), ((1, "s"), {}), ((1,), {"c": [5]}), ((), {"a": 2, "b": "t"}),
    ((1, "s", [3], 4.5), {}), ((1,), {"d": None}),
    ((), {}), ((1,), {"a": 2}), ((1,), {"nope": 1}), ((1, "s", [], 0, "extra"), {}),
    ((), {"b": "only"}),
]


def _outcome(cls, args, kwargs):
    try:
        obj = cls(*args, **kwargs)
    except TypeError:
        return "TypeError"
    return {n: getattr(obj, n) for n in names(cls)}


def _mixed(frozen: bool):
    @record(frozen=frozen)
    class Mixed:
        a: int
        b: str = "x"
        c: list = factory(list)
        d: float | None = 1.5

    return Mixed


@pytest.mark.parametrize("frozen", [False, True])
def test_generic_and_compiled_init_behave_the_same(frozen, monkeypatch):
    """A class's first instances go through a generic __init__, later ones through one
    compiled for it: same fields, defaults, fresh factory values, same refusals."""
    import pbox.record

    monkeypatch.setattr(pbox.record, "COMPILE_AFTER", 10**6)
    generic_cls = _mixed(frozen)
    generic = [_outcome(generic_cls, a, k) for a, k in CALLS]
    assert generic_cls.__init__.__code__.co_filename == pbox.record.__file__  # the stub
    monkeypatch.setattr(pbox.record, "COMPILE_AFTER", 0)
    compiled_cls = _mixed(frozen)
    compiled = [_outcome(compiled_cls, a, k) for a, k in CALLS]
    assert compiled_cls.__init__.__code__.co_filename == "<string>"  # made by exec
    assert generic == compiled
    assert generic[0] == {"a": 1, "b": "x", "c": [], "d": 1.5}
    assert generic.count("TypeError") == 5
    one, two = generic_cls(1), generic_cls(2)
    assert one.c is not two.c
    if frozen:
        with pytest.raises(FrozenInstanceError):
            one.a = 3


def test_init_is_compiled_after_the_first_instances():
    import pbox.record

    @record
    class Late:
        a: int
        b: list = factory(list)

    stub = Late.__init__
    with pytest.raises(TypeError):  # a wrong call counts too
        Late()
    for i in range(pbox.record.COMPILE_AFTER - 1):
        assert Late(i).a == i and Late.__init__ is stub
    x = Late(1)  # this one compiles the class's own __init__
    real = Late.__init__
    assert real is not stub
    y = Late(a=2, b=[3])
    assert (x.a, x.b, y.a, y.b) == (1, [], 2, [3]) and Late.__init__ is real

    @record
    class Base:
        n: int

    class Child(Base):  # not a record: inherits the stub, which installs on Base
        def __init__(self, n):
            super().__init__(n * 2)

    for _ in range(pbox.record.COMPILE_AFTER + 2):
        assert Child(2).n == 4 and Base(1).n == 1
    assert Base.__init__ is not Child.__init__
