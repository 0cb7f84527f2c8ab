"""Weight packing for the C runtime kernels (layouts defined in runtime_c/fg_runtime.h).

* ``pack_panels(B)``: a constant K x N right-hand matrix for ``fg_dense``, in panels of
  ``FG_PANEL`` columns: ``Bp[(p*K + k)*FG_PANEL + j] = B[k, p*FG_PANEL + j]`` (zero past N).
* ``pack_mblocks(A)``: a constant M x K left-hand matrix for ``fg_gemm_a``, in blocks of
  ``FG_MBLOCK`` rows: ``Ap[(b*K + k)*FG_MBLOCK + i] = A[b*FG_MBLOCK + i, k]`` (zero past M).
* ``pack_conv_weight(W, group)``: an ONNX Conv weight, group after group, each group's
  (K/group) x (C/group * kernel) filter matrix packed as ``pack_mblocks``.
* ``conv_scratch_floats(...)``: the scratch ``fg_conv`` needs, mirroring ``fg_conv_scratch``
  (the im2col matrix of one group, ``im2col_floats``, then ``FG_CONV_PANEL_MAX`` columns of
  the packed-panel GEMM per filter-matrix row).

All packed arrays are 1-D, C-contiguous float32.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

# Must match runtime_c/fg_runtime.h (checked by tests/unit/test_pack.py).
FG_PANEL = 16
FG_MBLOCK = 4
FG_CONV_PANEL_MAX = 48


def _as_f32_2d(a: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real numeric matrix, got dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False)


def _uniform(a: np.ndarray, length: int) -> np.ndarray | None:
    """A packed array of `length` entries as a zero-stride view when `a` is one value
    broadcast (ConstantOfShape) and the layout needs no zero padding: nothing is copied."""
    if a.size and not any(a.strides):
        return np.broadcast_to(a.reshape(-1)[:1], (length,))
    return None


def _column_panels(b: np.ndarray, width: int) -> np.ndarray:
    """Columns of a K x N matrix in ceil(N / width) panels of K x width, the last zero-padded."""
    k, n = b.shape
    npanel = -(-n // width)
    full = n // width
    same = _uniform(b, n * k) if full == npanel else None
    if same is not None:
        return same
    out = np.empty((npanel, k, width), dtype=np.float32)  # one copy of B, whatever its strides
    # (K, P, width) -> (P, K, width)
    out[:full] = b[:, : full * width].reshape(k, full, width).transpose(1, 0, 2)
    if full < npanel:
        out[full] = 0.0
        out[full, :, : n - full * width] = b[:, full * width :]
    return out.reshape(-1)


def pack_panels(B: npt.ArrayLike) -> np.ndarray:
    """Pack a K x N matrix into ceil(N / FG_PANEL) panels of K x FG_PANEL (for fg_dense).

    Returns a float32 array of length ceil(N / FG_PANEL) * K * FG_PANEL.
    """
    return _column_panels(_as_f32_2d(B, "B"), FG_PANEL)


def pack_mblocks(A: npt.ArrayLike) -> np.ndarray:
    """Pack an M x K matrix into ceil(M / FG_MBLOCK) blocks of K x FG_MBLOCK (for fg_gemm_a).

    Returns a float32 array of length ceil(M / FG_MBLOCK) * K * FG_MBLOCK: the panels of Aᵀ.
    """
    return _column_panels(_as_f32_2d(A, "A").T, FG_MBLOCK)


def pack_conv_weight(W: npt.ArrayLike, group: int) -> np.ndarray:
    """Pack an ONNX Conv weight (K x C/group x [kd x] [kh x] kw) for fg_conv.

    3-D (1-D conv), 4-D (2-D conv) and 5-D (3-D conv) weights are accepted; the
    filter-matrix columns are ordered (c, z, y, x) as in the ONNX layout. Each
    group's block is ceil((K/group) / FG_MBLOCK) * FG_MBLOCK * (C/group * kernel)
    floats; the result is the concatenation of the groups' blocks.
    """
    w = np.asarray(W)
    if w.ndim not in (3, 4, 5):
        raise ValueError(f"conv weight must be 3-D, 4-D or 5-D, got shape {w.shape}")
    if not isinstance(group, (int, np.integer)) or isinstance(group, bool) or group < 1:
        raise ValueError(f"group must be a positive integer, got {group!r}")
    k = w.shape[0]
    if k % group:
        raise ValueError(f"output channels {k} are not divisible by group={group}")
    kg = k // group
    rows = w.reshape(k, -1)  # (K, C/group * kernel), columns in (c, z, y, x) order
    if group == 1 or (kg % FG_MBLOCK == 0 and _uniform(rows, 1) is not None):
        return pack_mblocks(rows)  # a uniform weight packs the same whatever the groups
    blocks = [pack_mblocks(rows[g * kg : (g + 1) * kg]) for g in range(group)]
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(blocks)


def conv_scratch_floats(**fields: int) -> int:
    """Floats of scratch fg_conv needs for this fg_conv_shape (exact mirror of fg_conv_scratch).

    Keyword arguments are the fg_conv_shape fields (see ``im2col_floats``). Returns the
    im2col matrix of one group (0 when pointwise) plus (C/group)*kd*kh*kw * FG_CONV_PANEL_MAX
    floats for the panels of the packed GEMM.
    """
    cols = im2col_floats(**fields)
    group = fields.get("group", 1)
    kernel = fields.get("kd", 1) * fields.get("kh", 1) * fields["kw"]
    return cols + fields["C"] // group * kernel * FG_CONV_PANEL_MAX


def im2col_floats(
    *,
    C: int,
    W: int,
    OW: int,
    kw: int,
    D: int = 1,
    H: int = 1,
    OD: int = 1,
    OH: int = 1,
    kd: int = 1,
    kh: int = 1,
    sd: int = 1,
    sh: int = 1,
    sw: int = 1,
    pd: int = 0,
    ph: int = 0,
    pw: int = 0,
    group: int = 1,
    K: int | None = None,
    dd: int = 1,
    dh: int = 1,
    dw: int = 1,
) -> int:
    """Floats of fg_im2col's matrix for one group of this fg_conv_shape.

    Keyword arguments are the fg_conv_shape fields, so ``im2col_floats(**fields)``
    works with the dict used to emit the struct; K and the dilations do not change the size.
    Returns (C/group)*kd*kh*kw * OD*OH*OW, or 0 for a pointwise convolution (1x1x1 kernel,
    unit strides, no pads, output size == input size), which reads its input directly.
    """
    del K, dd, dh, dw  # accepted for convenience; they do not affect the scratch size
    if group < 1 or C % group:
        raise ValueError(f"C={C} is not divisible by group={group}")
    pointwise = (
        kd == kh == kw == 1
        and sd == sh == sw == 1
        and pd == ph == pw == 0
        and (OD, OH, OW) == (D, H, W)
    )
    if pointwise:
        return 0
    return (C // group) * kd * kh * kw * math.prod((OD, OH, OW))
