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


def test_init_made_at_first_instance_behaves_the_same():
    @record
    class Late:
        a: int
        b: list = factory(list)

    stub = Late.__init__
    with pytest.raises(TypeError):  # the first call may be a wrong one, too
        Late()
    assert Late.__init__ is not stub  # compiled once, then the real one is used
    real = Late.__init__
    x, y = Late(1), Late(a=2, b=[3])
    assert (x.a, x.b, y.a, y.b) == (1, [], 2, [3]) and Late.__init__ is real

    @record
    class Base:
        n: int

    class Child(Base):  # not a record: inherits the stub, which installs on Base
        def __init__(self, n):
            super().__init__(n * 2)

    assert Child(2).n == 4 and Base(1).n == 1
