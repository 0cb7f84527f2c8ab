"""Window geometry shared by Conv and the pools: pads, auto_pad, output sizes.

Everything is expressed for three spatial dims (D, H, W); a 2-D op has D = 1
and a 1-D op D = H = 1, which is how the C kernels take them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from faustgen.ops.base import ParseContext, ints


@dataclass(frozen=True)
class Window:
    rank: int  # spatial rank of the ONNX op (1, 2 or 3)
    kernel: tuple[int, int, int]
    strides: tuple[int, int, int]
    dilations: tuple[int, int, int]
    pads_begin: tuple[int, int, int]
    pads_end: tuple[int, int, int]
    in_size: tuple[int, int, int]
    out_size: tuple[int, int, int]

    def fields(self) -> dict[str, int]:
        """The spatial members of fg_conv_shape / fg_pool_shape."""
        k, s, d, p = self.kernel, self.strides, self.dilations, self.pads_begin
        return {
            "D": self.in_size[0], "H": self.in_size[1], "W": self.in_size[2],
            "OD": self.out_size[0], "OH": self.out_size[1], "OW": self.out_size[2],
            "kd": k[0], "kh": k[1], "kw": k[2],
            "sd": s[0], "sh": s[1], "sw": s[2],
            "dd": d[0], "dh": d[1], "dw": d[2],
            "pd": p[0], "ph": p[1], "pw": p[2],
        }  # fmt: skip


def _pad3(values: list[int], fill: int) -> tuple[int, int, int]:
    return tuple([fill] * (3 - len(values)) + list(values))  # type: ignore[return-value]


def parse_window(
    ctx: ParseContext,
    kernel: list[int] | None,
    *,
    ceil_mode: bool = False,
    allow_dilations: bool = True,
) -> Window:
    """Resolve kernel/strides/dilations/pads/auto_pad of a windowed op on input 0."""
    x = ctx.shape(0)
    if len(x) < 3:
        ctx.fail(f"input shape {tuple(x)} has no spatial axes (expected N x C x ...)")
    spatial = list(x[2:])
    r = len(spatial)
    if r > 3:
        ctx.fail(f"{r}-D windows are not supported (at most 3 spatial axes)")
    if kernel is None:
        kernel = ints(ctx.attr("kernel_shape", []))
    if len(kernel) != r:
        ctx.fail(f"kernel_shape {kernel} does not match the {r} spatial axes of {tuple(x)}")
    strides = ints(ctx.attr("strides", [1] * r))
    dilations = ints(ctx.attr("dilations", [1] * r))
    if not allow_dilations and any(d != 1 for d in dilations):
        ctx.fail("dilations are not supported for this op")
    if len(strides) != r or len(dilations) != r:
        ctx.fail("strides/dilations do not match the number of spatial axes")
    if any(v <= 0 for v in (*kernel, *strides, *dilations)):
        ctx.fail("kernel_shape, strides and dilations must be positive")
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(spatial, strides, strict=True)]
        total = [
            max(0, (o - 1) * s + e - i)
            for o, s, e, i in zip(out, strides, extent, spatial, strict=True)
        ]
        begin = [t // 2 for t in total] if auto_pad == "SAME_UPPER" else [t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin, strict=True)]
    elif auto_pad in ("NOTSET", "VALID", ""):
        pads = ints(ctx.attr("pads", [0] * 2 * r)) if auto_pad != "VALID" else [0] * 2 * r
        if len(pads) != 2 * r:
            ctx.fail(f"pads {pads} should hold {2 * r} values")
        if any(p < 0 for p in pads):
            ctx.fail(f"negative pads {pads} are not supported")
        begin, end = pads[:r], pads[r:]
        out = []
        for i, b, e, ext, s in zip(spatial, begin, end, extent, strides, strict=True):
            span = i + b + e - ext
            if span < 0:
                ctx.fail(f"window of extent {ext} is larger than the padded input ({i + b + e})")
            o = (-(-span // s) if ceil_mode else span // s) + 1
            if ceil_mode and (o - 1) * s >= i + b:
                o -= 1  # the last window must start inside the input or its leading pad
            out.append(o)
    else:
        ctx.fail(f"auto_pad '{auto_pad}' is not supported")
    return Window(
        r,
        _pad3(kernel, 1),
        _pad3(strides, 1),
        _pad3(dilations, 1),
        _pad3(begin, 0),
        _pad3(end, 0),
        _pad3(spatial, 1),
        _pad3(out, 1),
    )


def window_taps(w: Window, axis: int, o: int, padded_only: bool) -> list[int]:
    """Input indices (possibly in the padding) touched by output position o along axis."""
    start = o * w.strides[axis] - w.pads_begin[axis]
    taps = [start + t * w.dilations[axis] for t in range(w.kernel[axis])]
    limit = w.in_size[axis] + w.pads_end[axis]
    return [t for t in taps if t < limit] if padded_only else taps


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)
