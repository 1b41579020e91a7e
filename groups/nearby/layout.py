"""The proximity index's array layout: the columns and rows ``groups.nearby.kernel`` works on.

Plain constants, apart from the kernels so that ``groups.nearby.proximity``
can build an index without importing numba: the compiled kernels (and
numba with its ~60 MB, ~150 MB once the kernels are loaded) come in with the
first update, on the nodes where somebody joins the nearby room. The meaning
of each column is in the kernel module's docstring.
"""

from __future__ import annotations

FREE_COS = 2.0  # cos limit of a free slot or stale copy: no dot product of unit vectors reaches it
NOW, FILED, AT, OVER = 0, 1, 2, 3  # columns of ``where``
N_KEYS, N_OVERFLOW, REBUILDS = 0, 1, 2  # columns of ``counts``
X, Y, Z, COS = 0, 1, 2, 3  # columns of ``points``, ``listed``, ``over_points``
START, LENGTH, CAPACITY = 0, 1, 2  # columns of ``adj_meta``
ADJ_USED, STAMP = 0, 1  # entries of ``tallies``
FOUND, OUT, MARK = 0, 1, 2  # rows of ``scratch``
ADJ_MIN_CAPACITY = 8  # entries in a new audible-set block
NEED_SPACE = -1  # a kernel's answer when the audible-set pool is too small
