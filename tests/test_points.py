"""The point generator exists once in the library (`asl_tf.model.points`); `edge/` keeps its
own copy because it cannot import asl_tf. This pins the two equal, and the one
`max_div_factor` to values worked out by hand."""
import numpy as np
import pytest

from asl_tf.model import points as lib
from edge import postprocess as edge_pp

THUMOS_RANGES = [[0, 4], [4, 8], [8, 16], [16, 32], [32, 64], [64, 10000]]


@pytest.mark.parametrize("t,scale,start,branch,ranges", [
    (2304, 2, 0, 5, THUMOS_RANGES),                      # THUMOS'14 pyramid
    (193, 2, 0, 5, THUMOS_RANGES),                       # odd length: floors per level
    (96, 2, 1, 5, THUMOS_RANGES[1:]),                    # fpn_start_level 1
    (50, 1, 0, 2, [[0.0, 1.5], [1.5, 3.0], [3.0, 1e4]]),  # scale_factor 1, float ranges
    (7, 2, 0, 3, [[0, 2], [2, 4], [4, 8], [8, 1e4]]),   # levels of length 0
])
def test_edge_points_equal_library_points(t, scale, start, branch, ranges):
    strides = lib.fpn_strides(scale, start, branch)
    lengths = lib.level_lengths(t, strides)
    got = edge_pp.make_points(lengths, strides, ranges)
    want = lib.make_points(lengths, strides, ranges)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    # and both are the reference's rows, written out for the first level
    np.testing.assert_array_equal(want[:lengths[0], 0], np.arange(lengths[0]) * strides[0])


def test_max_div_factor_by_hand():
    # stride 2^l times the local window span 2*(w//2); global attention (w<=1): the stride
    assert lib.max_div_factor(2, 0, [2, 2, 5], 19) == 32 * 18
    assert lib.max_div_factor(2, 0, [2, 2, 5], -1) == 32
    assert lib.max_div_factor(2, 0, [2, 2, 5], [7, 7, 7, 7, 7, -1]) == 16 * 6
    assert lib.max_div_factor(1, 0, [2, 2, 2], 9) == 8
