"""A lazily transposed and flipped view of a 3D array (NIfTI voxel axes → ``(z, y, x)``).

nibabel's ``as_closest_canonical`` reorders a whole array in memory; this view maps each region
request to the matching region of the source instead, so only that region is read. Hand-written
because no kept library offers a lazy (read-only-what-is-asked) reoriented view.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def normalise_key(key: Any, shape: tuple[int, ...]) -> list[int | slice]:
    """``key`` as one ``int`` (non-negative) or ``slice`` per axis of ``shape``.

    Supports what volumes are sliced with: ints, slices and one ``Ellipsis``.
    """
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = (slice(None),) * (len(shape) - len(key) + 1)
        key = key[:at] + fill + key[at + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices: {len(key)} for {len(shape)} axes")
    key = tuple(key) + (slice(None),) * (len(shape) - len(key))
    out: list[int | slice] = []
    for k, n in zip(key, shape):
        if isinstance(k, slice):
            out.append(k)
        elif isinstance(k, int | np.integer) and not isinstance(k, bool):
            i = int(k) + (n if k < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {int(k)} is out of bounds for an axis of size {n}")
            out.append(i)
        else:
            raise IndexError(f"unsupported index {k!r} (use ints and slices)")
    return out


class ReorientedArray:
    """``source`` seen with its axes permuted and flipped.

    Output axis ``t`` is source axis ``axes[t]``, reversed when ``flips[t]``.
    """

    def __init__(self, source: Any, axes: tuple[int, ...], flips: tuple[bool, ...]) -> None:
        self._source = source
        self._axes = tuple(int(a) for a in axes)
        self._flips = tuple(bool(f) for f in flips)
        self.shape = tuple(int(source.shape[a]) for a in self._axes)
        self.dtype = np.dtype(source.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        ndim = len(self.shape)
        src_key: list[int | slice] = [slice(None)] * ndim
        kept: list[tuple[int, bool]] = []  # (source axis, reverse afterwards) per output axis
        for t, k in enumerate(normalise_key(key, self.shape)):
            n, s, flip = self.shape[t], self._axes[t], self._flips[t]
            if isinstance(k, int):
                src_key[s] = n - 1 - k if flip else k
                continue
            indices = range(n)[k]
            if flip:
                indices = range(n - 1 - indices.start, n - 1 - indices.stop, -indices.step)
            if len(indices) == 0:
                src_key[s] = slice(0, 0)
                kept.append((s, False))
                continue
            lo, hi = min(indices[0], indices[-1]), max(indices[0], indices[-1])
            src_key[s] = slice(lo, hi + 1, abs(indices.step))
            kept.append((s, indices.step < 0))
        data = np.asarray(self._source[tuple(src_key)])
        order = sorted(s for s, _ in kept)  # the source axes still in ``data``, in source order
        data = data.transpose([order.index(s) for s, _ in kept])
        flip_axes = tuple(i for i, (_, reverse) in enumerate(kept) if reverse)
        return np.ascontiguousarray(np.flip(data, flip_axes) if flip_axes else data)


def bounding_box(key: Any, shape: tuple[int, ...]) -> tuple[list[tuple[int, int]], tuple]:
    """The ``(start, stop)`` box per axis that holds region ``key``, and the key that picks the
    region out of that box (for backends that read only contiguous boxes)."""
    box: list[tuple[int, int]] = []
    post: list[int | slice] = []
    for k, n in zip(normalise_key(key, shape), shape):
        if isinstance(k, int):
            box.append((k, k + 1))
            post.append(0)
            continue
        indices = range(n)[k]
        if len(indices) == 0:
            box.append((0, 0))
            post.append(slice(0, 0))
            continue
        lo, hi = min(indices[0], indices[-1]), max(indices[0], indices[-1]) + 1
        first, last = indices[0] - lo, indices[-1] - lo
        stop = last + 1 if indices.step > 0 else last - 1
        box.append((lo, hi))
        post.append(slice(first, None if stop < 0 else stop, indices.step))
    return box, tuple(post)
