"""bench/common.py's bootstrap interval of the pbox/podman ratio (benchmarks are not
tests; the arithmetic that reports them is)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "bench"))

import common  # noqa: E402


def _case(pbox: list, podman: list) -> common.Case:
    case = common.Case("c", common.Cmd(["pbox"], {}), common.Cmd(["podman"], {}),
                       target=0.3, runs=len(pbox))
    case.samples = {"pbox": [common.Sample(s, 0) for s in pbox],
                    "podman": [common.Sample(s, 0) for s in podman]}
    return case


def test_no_spread_no_interval():
    assert _case([1.0] * 10, [4.0] * 10).ratio_interval() == (0.25, 0.25)


def test_interval_holds_the_ratio_widens_with_spread_and_is_repeatable():
    steady = _case([1.0 + i / 100 for i in range(40)], [3.0 + i / 100 for i in range(40)])
    noisy = _case([1.0 + i / 10 for i in range(40)], [3.0 + i / 50 for i in range(40)])
    for case in (steady, noisy):
        lo, hi = case.ratio_interval()
        assert lo <= case.ratio() <= hi
        assert case.ratio_interval() == (lo, hi)
    width = [hi - lo for lo, hi in (steady.ratio_interval(), noisy.ratio_interval())]
    assert 0 < width[0] < width[1]
    rows = common.table_rows([noisy])[1]
    assert rows[0][4] == "{:.2f}x ({:.2f}-{:.2f})".format(noisy.ratio(),
                                                        *noisy.ratio_interval())
