"""Point generator of the reference (`PointGenerator`), in numpy.

Level l has stride s_l; point i of level l sits at t = i*s_l in input-feature-grid units (no
half-stride offset) and carries [t, reg_lo_l, reg_hi_l, s_l]. Points are shared by the batch.
"""
import numpy as np


def fpn_strides(scale_factor, fpn_start_level, num_branch):
    """Strides of the pyramid levels: scale_factor**l for l in start..num_branch."""
    return [int(scale_factor) ** i for i in range(int(fpn_start_level), int(num_branch) + 1)]


def level_divisor(stride, window):
    """Length divisor one pyramid level imposes: its stride times the local attention span
    2*(window//2) when the window is > 1 (local attention), else the stride."""
    return int(stride) * (int(window) // 2) * 2 if int(window) > 1 else int(stride)


def max_div_factor(scale_factor, fpn_start_level, backbone_arch, n_mha_win_size):
    """ActionFormer `max_div_factor`: the largest `level_divisor` of the pyramid (an eval input
    longer than max_seq_len is padded to a multiple of it). `n_mha_win_size`: int or a list
    with one window per level."""
    strides = fpn_strides(scale_factor, fpn_start_level, backbone_arch[-1])
    n_levels = int(backbone_arch[-1]) + 1
    win = n_mha_win_size
    wins = [win] * n_levels if isinstance(win, (int, float)) else list(win)
    return max([1] + [level_divisor(s, w) for s, w in zip(strides, wins)])


def level_lengths(t, strides, start_level=0, scale_factor=2):
    """Length of every output level for an input of length t: [T_l] (ints).

    The backbone halves (divides by scale_factor) the length once per branch level; with
    fpn_start_level > 0 the first levels are skipped.
    """
    del start_level, scale_factor
    return [int(t) // int(s) for s in strides]


def make_points(lengths, strides, regression_range, max_buffer_len=None):
    """Concatenated points [sum T_l, 4] float32 with columns [t, reg_lo, reg_hi, stride].

    lengths: per-level lengths; strides: per-level strides; regression_range: [[lo, hi]] per
    level; max_buffer_len: the reference's buffer (max_seq_len * max_buffer_len_factor). A level
    longer than the buffer raises ValueError, as the reference asserts.
    """
    if len(lengths) != len(strides) or len(strides) != len(regression_range):
        raise ValueError(f"points: {len(lengths)} level lengths, {len(strides)} strides and "
                         f"{len(regression_range)} regression ranges must match")
    out = []
    for n, s, (lo, hi) in zip(lengths, strides, regression_range):
        t = np.arange(0, n * s, s, dtype=np.float32)[:n]
        if max_buffer_len is not None:
            buffered = len(np.arange(0, max_buffer_len, s))
            if n > buffered:
                raise ValueError(f"points: level with stride {s} has {n} points, more than the "
                                 f"point buffer ({buffered}) of max_seq_len*max_buffer_len_factor")
        pts = np.empty((n, 4), np.float32)
        pts[:, 0] = t
        pts[:, 1] = lo
        pts[:, 2] = hi
        pts[:, 3] = s
        out.append(pts)
    return np.concatenate(out, 0) if out else np.zeros((0, 4), np.float32)
