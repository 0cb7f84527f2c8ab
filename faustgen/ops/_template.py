"""Template for a new op family: copy this file, rename, and import it in ops/__init__.py.

An op touches three places: this module (attributes, shape rule, numpy reference,
lowering), a kernel in runtime_c/ if none fits (with its naive reference and self-test
in runtime_c/tests/), and a test (the ONNX operator cases in tests/ops/ pick new ops up
automatically once they are registered).

This module is not imported: nothing below is registered.
"""

from __future__ import annotations

import numpy as np

from faustgen.ops.base import Op, ParseContext, prod


# @register_op("MyOp")            # the ONNX op type(s) this class handles
class MyOp(Op):
    elementwise = True  # output may overwrite the input when the input dies here

    def parse(self, ctx: ParseContext):
        # Canonical attributes: resolve defaults and opset differences here, once.
        alpha = float(ctx.attr("alpha", 1.0))
        if ctx.opset < 13 and ctx.attr("legacy_flag") is not None:
            ctx.fail("legacy_flag is not supported")
        return ctx.node({"alpha": alpha}, inputs=[ctx.input(0)])

    def infer(self, node, ins):
        return [(ins[0].shape, ins[0].dtype)]  # output shapes and dtypes

    def compute(self, node, ins):
        # numpy reference: folds constants at compile time and serves as a test oracle
        return [(ins[0] * np.float32(node.attrs["alpha"])).astype(np.float32)]

    def lower(self, node, em):
        # One or more kernel calls; em.x(i) / em.y(i) are buffer references, em.f() a float
        # literal, em.weight() a static const array, em.struct() a parameter struct.
        em.call("fg_scale", em.x(0), em.y(), prod(em.shape_in(0)), em.f(node.attrs["alpha"]))
        em.allow_inplace()
