"""Data-aware factorization of a whole graph (`--calib X.npy`).

Each factorized layer is fitted to reproduce the dense layer's outputs on the calibration
activations (:func:`faustgen.factorize.datafit.data_factorize`), layers in graph order, each
fed the activations of the already-compressed layers before it, so an error made upstream
is corrected downstream instead of compounding; biases come from the activation means.

A whole-model budget (``--rcg R``: the model's parameters / R) is split over the layers
from their measured sensitivity: every eligible layer (convolutions included) is fitted
at a ladder of RCGs on the dense activations, and the model's output error with that one
layer replaced is measured (or its accuracy drop, with labels); the split that minimizes
the summed squared errors within the budget wins (a Pareto merge over the layers, refined
between the ladder's rungs by interpolation). Fully connected layers may take 16x1 or 8x1
blocks, or unstructured factors where CSR can be fast enough.
``--max-error E`` instead takes, per layer, the highest RCG of the ladder whose *output*
error is at most E; ``--max-accuracy-drop P`` (with labels) the smallest model whose
summed predicted accuracy drops stay within P points.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from faustgen.errors import FaustgenError
from faustgen.factorize import FactorizationError
from faustgen.factorize.datafit import LayerData, data_factorize, refit_dense
from faustgen.ir import Graph, Node
from faustgen.ops import REGISTRY
from faustgen.ops.spatial import Window
from faustgen.passes.cleanup import eliminate_dead_nodes
from faustgen.passes.factorize import (
    RECURRENT,
    FactorizePolicy,
    factorize_node,
    factorize_weights,
)
from faustgen.tune.runner import Runner
from faustgen.tune.split import (
    MARGIN,
    allocate,
    bias_size,
    dense_cost,
    floors_of,
    note_floor,
    pareto_split,
    rebudget,
    smallest_within,
    spend_leftover,
)

FINE_BLOCK = 8  # 8x1 blocks (fg_bsr8_matvec), the split's alternative to policy.block
MAX_ROWS = 60_000  # im2col rows sampled per convolution (all of them up to this)
SENSITIVITY_SAMPLES = 500  # calibration inputs used to measure each layer's sensitivity
SENSITIVITY_SWEEPS = 30  # palm4MSA sweeps of the ladder's fits (the final fits run 200),
# started from the front end at 0.3 of its effort: the ladder ranks, the final pass fits


@dataclass
class DataPlan:
    """What the data-aware build was asked for: one of a whole-model ``rcg``, a per-layer
    output ``max_error`` or an accuracy drop ``max_drop`` (points, needs ``labels``)."""

    rcg: float | None = None
    max_error: float | None = None
    max_drop: float | None = None
    labels: np.ndarray | None = None
    min_size: int = 1000
    progress: Callable[[str], None] | None = None
    ladder: tuple[float, ...] = field(default=())
    method: str = "factor"  # or the baselines: "prune" (magnitude), "svd" (truncated)


def _pre_activation(node: Node) -> Node:
    """The node without its fused activation (the layer's linear output)."""
    attrs = dict(node.attrs)
    attrs["act"] = None
    return dataclasses.replace(node, attrs=attrs, inputs=list(node.inputs))


def _patches(x: np.ndarray, win: Window, group: int, g: int, rows: np.ndarray | None):
    """im2col rows of group g: (samples · positions) × (C/group · kernel), in the filter
    matrix's column order; `rows` selects a subset."""
    x5 = x.reshape(len(x), -1, *win.in_size)  # samples are stacked on the per-call batch
    n, c = x5.shape[:2]
    cg = c // group
    x5 = x5[:, g * cg : (g + 1) * cg].astype(np.float64)
    xp = np.pad(x5, [(0, 0), (0, 0), *zip(win.pads_begin, win.pads_end, strict=True)])
    od, oh, ow = win.out_size
    (sd, sh, sw), (dd, dh, dw) = win.strides, win.dilations
    kd, kh, kw = win.kernel
    cols = np.empty((n, od, oh, ow, cg, kd, kh, kw))
    for a in range(kd):
        for b in range(kh):
            for e in range(kw):
                sl = xp[:, :, a * dd : a * dd + (od - 1) * sd + 1 : sd,
                        b * dh : b * dh + (oh - 1) * sh + 1 : sh,
                        e * dw : e * dw + (ow - 1) * sw + 1 : sw]  # fmt: skip
                cols[:, :, :, :, :, a, b, e] = sl.transpose(0, 2, 3, 4, 1)
    cols = cols.reshape(-1, cg * kd * kh * kw)
    return cols if rows is None else cols[rows]


def _layer_data(
    node: Node,
    w: np.ndarray,
    bias: np.ndarray | None,
    x_fit: np.ndarray,
    x_ref: np.ndarray,
    keep: bool = False,
) -> list[LayerData]:
    """Per group: the statistics of (inputs reaching the layer, dense layer outputs), with
    the samples themselves when ``keep`` (for the activation-aware fit)."""
    if node.op == "Dense":
        X = x_fit.reshape(-1, w.shape[0])
        T = x_ref.reshape(-1, w.shape[0]).astype(np.float64) @ w
        return [LayerData.from_samples(X, T if bias is None else T + bias, keep)]
    win, group = node.attrs["window"], node.attrs["group"]
    n = len(x_fit)
    total = n * int(np.prod(win.out_size))
    rng = np.random.default_rng(0)
    rows = None if total <= MAX_ROWS else np.sort(rng.choice(total, MAX_ROWS, replace=False))
    kg = w.shape[0] // group
    out = []
    for g in range(group):
        F = w[g * kg : (g + 1) * kg].reshape(kg, -1).astype(np.float64)
        X = _patches(x_fit, win, group, g, rows)
        T = _patches(x_ref, win, group, g, rows) @ F.T
        if bias is not None:
            T += bias[g * kg : (g + 1) * kg]
        out.append(LayerData.from_samples(X, T, keep))
    return out


def _matrices(node: Node, w: np.ndarray) -> list[np.ndarray]:
    if node.op == "Dense":
        return [w.T.astype(np.float64)]
    group = node.attrs["group"]
    kg = w.shape[0] // group
    return [w[i * kg : (i + 1) * kg].reshape(kg, -1).astype(np.float64) for i in range(group)]


def _eligible(g: Graph, policy: FactorizePolicy, min_size: int) -> list[Node]:
    out = []
    for n in g.nodes:
        if n.op not in ("Dense", "Conv") or g.const(n.inputs[1]) is None:
            continue
        if any(k in (n.name, *n.inputs) for k in policy.keep_dense):
            continue
        if g.const(n.inputs[1]).size < min_size or (n.op == "Conv" and not policy.convs):
            continue
        out.append(n)
    return out


def _bounds(node: Node) -> tuple[float, float] | None:
    """Where the layer's fused activation saturates (its outputs past there all look alike)."""
    kind, a, b = node.attrs.get("act") or ("FG_ACT_NONE", 0.0, 0.0)
    if kind == "FG_ACT_RELU":
        return (0.0, math.inf)
    if kind == "FG_ACT_CLIP":
        return (float(a), float(b))
    return None


def _fit_layer(g, node, policy, datas, rcg, n_iter=200, effort=1.0, method="factor"):
    """Fit the layer at `rcg`; returns (new node or None, new bias, stored entries)."""
    w = g.const(node.inputs[1])
    bias = g.const(node.input(2))
    fits: list = []
    bounds = _bounds(node) if datas[0].samples is not None else None

    def fit(gi, m, block):
        kg = m.shape[0]
        b = None if bias is None else bias[gi * kg : (gi + 1) * kg]
        fm, new_b, info = data_factorize(
            m,
            datas[gi],
            rcg,
            bias=b,
            factors=policy.factors,
            block=block,
            seed=policy.seed,
            n_iter=n_iter,
            effort=effort * policy.effort,
            method=method,
            bounds=bounds,
        )
        fits.append((new_b, info))
        return fm

    per = dataclasses.replace(policy, rcg=rcg, max_error=None, min_size=1)
    new = factorize_node(g, node, per, fit)
    if new is None:
        return None, None, int(w.size) + (0 if bias is None else bias.size), node
    new_bias = np.concatenate([b for b, _ in fits]).astype(np.float32)
    info = new.attrs["factorization"]
    info["output_error"] = float(math.sqrt(np.mean([i["output_error"] ** 2 for _, i in fits])))
    info["data_aware"] = True
    return new, new_bias, int(info["stored"]) + new_bias.size, node


def _close_budget(g, node, pol, datas, r, method, fit, left):
    """The last layer closes the budget: its stored entries can miss the nominal count
    (block rounding) either way; refitted at an RCG scaled by the miss (at most twice),
    the fit that spends most without going over wins (the first one if none fits)."""
    best, cur, rb = None, fit, r
    for _ in range(3):
        cost = cur[2]
        if cost <= left and (best is None or cost > best[2]):
            best, rb = cur, r
        if left * 0.99 <= cost <= left:
            break
        r *= (1.02 if cost > left else 1.0) * cost / left
        again = _fit_layer(g, node, pol, datas, max(r, 1.05), method=method)
        if again[0] is None:
            break
        cur = (again[0], again[1], again[2])
    if best is None:  # nothing within the budget: the last try, as before
        return cur[0], cur[1], r
    return best[0], best[1], rb


def _refit(g: Graph, node: Node, x_fit: np.ndarray, x_ref: np.ndarray) -> None:
    """A layer kept dense behind compressed ones: its weights and bias refitted by least
    squares to give the dense outputs from the compressed model's activations."""
    w, b = g.const(node.inputs[1]), g.const(node.input(2))
    datas = _layer_data(node, w, b, x_fit, x_ref)
    fits = [refit_dense(m, d) for m, d in zip(_matrices(node, w), datas, strict=True)]
    if node.op == "Dense":
        w_new = fits[0][0].T
    else:
        w_new = np.concatenate([f[0] for f in fits]).reshape(w.shape)
    node.inputs[1] = g.add_const(f"{node.inputs[1]}_refitted", w_new.astype(np.float32))
    bias = np.concatenate([f[1] for f in fits]).astype(np.float32)
    name = g.add_const(f"{node.name}_bias_fitted", bias)
    node.inputs = [*node.inputs[:2], name] if len(node.inputs) > 2 else [*node.inputs, name]
    node.attrs["refitted"] = True


def _install(g: Graph, old: Node, new: Node, bias: np.ndarray) -> None:
    name = g.add_const(f"{old.name}_bias_fitted", bias)
    new.inputs = [new.inputs[0], name]
    g.nodes[g.nodes.index(old)] = new


def _model_error(out: np.ndarray, ref: np.ndarray, labels: np.ndarray | None) -> float:
    """Relative output error, or with labels the accuracy drop in points."""
    if labels is not None:
        n = len(labels)
        acc = np.mean(np.argmax(out.reshape(n, -1), 1) == labels)
        ref_acc = np.mean(np.argmax(ref.reshape(n, -1), 1) == labels)
        return float(100.0 * (ref_acc - acc))
    d = out.astype(np.float64) - ref
    return float(np.linalg.norm(d) / max(np.linalg.norm(ref), 1e-30))


def factorize_with_data(
    dense: Graph, policy: FactorizePolicy, xs: np.ndarray, plan: DataPlan
) -> tuple[Graph, dict]:
    """The factorized graph and a summary of the split (per-layer RCG, errors)."""
    say = plan.progress or (lambda _m: None)
    g, data_free = _recurrent_data_free(dense, policy, plan)
    layers = _eligible(g, policy, plan.min_size)
    runner = Runner(dense, xs)
    ref_vals = runner.run(dense.nodes)
    out_name = dense.outputs[0]
    labels = plan.labels
    if labels is not None and len(labels) != len(xs):
        raise FaustgenError(f"--labels has {len(labels)} entries for {len(xs)} inputs")
    k = min(len(xs), SENSITIVITY_SAMPLES)
    pick = np.linspace(0, len(xs) - 1, k).astype(int)
    xs_pick = xs[pick]
    labels_pick = None if labels is None else labels[pick]
    idx = {n.name: i for i, n in enumerate(dense.nodes)}
    dense_datas = {}
    for node in layers:
        w, b = g.const(node.inputs[1]), g.const(node.input(2))
        x = ref_vals[node.inputs[0]]
        dense_datas[node.name] = _layer_data(node, w, b, x, x)
    fixed = _weights(g) - sum(
        g.const(n.inputs[1]).size + (0 if not n.input(2) else g.const(n.input(2)).size)
        for n in layers
    )
    chosen: dict[str, float] = {}
    budget = None
    floors: dict = {}  # per (layer, block), the least RCG the cost model finds faster
    # The baselines (pruning, SVD) are compared with the factors at equal parameters, so no
    # layer of theirs is kept dense or floored for speed: their time is measured, not gated.
    baseline = plan.method != "factor"
    if baseline:
        policy = dataclasses.replace(policy, speed_gate=False)

    def floor_note(key, node: Node, r: float) -> float | None:
        return None if baseline else note_floor(floors, key, node, r)

    blocks: dict[str, int | None] = {}  # per layer, the factors' structure the split chose
    # Under a whole-model budget each layer may take 16x1 blocks or unstructured factors,
    # whichever the split finds better for the model: measured on the Fashion-MNIST MLP at
    # RCG 8, unstructured factors keep the first layer's output error at 0.07 against 0.13
    # for blocks (rank-32 like), but only blocks make the small layers faster than dense.
    both = plan.rcg is not None and bool(policy.block) and plan.method == "factor"
    # Unstructured (CSR) factors are only tried where the cost model could find them MARGIN
    # faster than the dense layer: RCG above MARGIN x (CSR cost per entry / dense MAC).
    csr_floor = MARGIN * policy.cost.costs["csr_nnz"] / policy.cost.costs["dense_mac"]

    def shapes(node: Node, r: float) -> tuple:
        # Convolutions have no block form (their factors are CSR either way). 8x1 blocks
        # fit closer than 16x1 (LeNet-5's first fully connected layer at RCG 5.6: model
        # output error 0.0060 against 0.0078 with 16x1) and still run fast.
        if node.op != "Dense" or not both:
            return (policy.block,)
        out = (policy.block, FINE_BLOCK) if policy.block != FINE_BLOCK else (policy.block,)
        return out if r < csr_floor else (*out, None)

    if plan.rcg is not None or plan.max_error is not None or plan.max_drop is not None:
        target = plan.rcg or 4.0
        # With unstructured factors in the choice, one rung just past their floor: the
        # split interpolates between rungs, and CSR has none below it.
        ladder = plan.ladder or tuple(
            sorted(
                {target * f for f in (0.5, 0.71, 1.0, 1.41, 2.0, 4.0)}
                | {2.0}
                | ({csr_floor * 1.05} if both else set())
            )
        )
        # Every trial starts from the dense activations of the same samples: taken once.
        ref_pick = {k_: v[pick] for k_, v in ref_vals.items()}
        ref_out = ref_pick[out_name].astype(np.float64)
        options = []
        for li, node in enumerate(layers):
            w, b = g.const(node.inputs[1]), g.const(node.input(2))
            opts = [(dense_cost(g, node), 0.0, 1.0, policy.block)]
            for r, blk in ((q, blk) for q in ladder for blk in shapes(node, q)):
                if r < 1.5 or w.size / r < 16:
                    continue
                say(f"sensitivity {li + 1}/{len(layers)} {node.name} RCG {r:.3g}")
                try:
                    new, nb, cost, _ = _fit_layer(
                        g,
                        node,
                        dataclasses.replace(policy, block=blk),
                        dense_datas[node.name],
                        r,
                        SENSITIVITY_SWEEPS,
                        0.3,
                        plan.method,
                    )
                except FactorizationError:
                    continue
                slow = floor_note((node.name, blk), node if new is None else new, r)
                if new is None or slow is not None:
                    continue
                if plan.max_error is not None:
                    err = new.attrs["factorization"]["output_error"]
                    if err > plan.max_error:
                        continue
                trial = g.copy()
                _install(trial, trial.nodes[idx[node.name]], new, nb)
                vals = Runner(trial, xs_pick).run(trial.nodes[idx[node.name] :], dict(ref_pick))
                e = _model_error(vals[out_name], ref_out, labels_pick)
                opts.append((cost, max(e, 0.0) ** 2 if labels is None else max(e, 0.0), r, blk))
            options.append(opts)
        if plan.max_error is not None:
            for node, opts in zip(layers, options, strict=True):
                chosen[node.name] = max(o[2] for o in opts)
        elif plan.max_drop is not None:
            chosen = smallest_within(layers, options, plan.max_drop)
        else:
            budget = math.floor(_weights(dense) / target) - fixed
            split = pareto_split(options, budget)
            if split is None:
                raise FaustgenError(
                    f"whole-model RCG {target:g} is unreachable: {fixed} parameters sit in "
                    "layers that are not factorized"
                )
            split = allocate(options, budget) or split
            chosen = {n.name: r for n, (r, _) in zip(layers, split, strict=True)}
            blocks = {n.name: blk for n, (_, blk) in zip(layers, split, strict=True)}
            sizes = {n.name: (dense_cost(g, n) - bias_size(g, n), bias_size(g, n)) for n in layers}
            spend_leftover(chosen, sizes, budget, floors_of(floors, blocks))
    # The final pass: in order, each layer fitted to the activations of the compressed
    # model in front of it.
    fact_vals = {g.inputs[0]: ref_vals[g.inputs[0]]}
    live = Runner(g, xs)
    pos = 0
    summary = {}
    spent = 0  # parameters of the layers fitted so far
    floors = floors_of(floors, blocks)
    for li, node in enumerate(layers):
        r = chosen.get(node.name, policy.rcg or 4.0)
        pol = dataclasses.replace(policy, block=blocks.get(node.name, policy.block))
        if budget is not None and r > 1.0:
            r = rebudget(g, layers[li:], chosen, budget - spent, floors)
        i = g.nodes.index(next(n for n in g.nodes if n.name == node.name))
        live.run(g.nodes[pos:i], fact_vals)
        pos = i
        compressed_before = any(v > 1.0 for v in summary.values())
        if r <= 1.0:
            summary[node.name] = 1.0
            spent += dense_cost(g, node)
            node.attrs["factorization"] = {
                "factorized": False,
                "reason": "kept dense by the whole-model split (its measured sensitivity)",
                "shape": list(g.const(node.inputs[1]).shape),
                "fault": False,
            }
            if compressed_before:
                _refit(g, node, fact_vals[node.inputs[0]], ref_vals[node.inputs[0]])
            continue
        say(f"fit {li + 1}/{len(layers)} {node.name} RCG {r:.3g}")
        w, b = g.const(node.inputs[1]), g.const(node.input(2))
        datas = _layer_data(
            node, w, b, fact_vals[node.inputs[0]], ref_vals[node.inputs[0]], plan.method == "factor"
        )
        new = None
        for _ in range(4):
            # The cost model keeps a layer dense when its factors would not be faster:
            # then the next step up the ladder, so the budget still holds.
            try:
                new, nb, cost, _ = _fit_layer(g, node, pol, datas, r, method=plan.method)
            except FactorizationError as e:
                node.attrs["factorization"] = {"factorized": False, "reason": f"kept dense: {e}"}
                break
            left = None if budget is None else budget - spent
            if new is not None and li == len(layers) - 1 and left is not None and left > 0:
                fit = (new, nb, cost)
                new, nb, r = _close_budget(g, node, pol, datas, r, plan.method, fit, left)
            if new is not None:
                _install(g, g.nodes[i], new, nb)
                break
            # Just past the cost model's break-even, where it measured one.
            r = max(r * math.sqrt(2.0) if floor_note(node.name, node, r) is None else 0.0,
                    floors.get(node.name, 0.0) * MARGIN)  # fmt: skip
        summary[node.name] = r if new is not None else 1.0
        spent += dense_cost(g, node) if new is None else int(new.attrs["factorization"]["stored"])
        spent += 0 if new is None else bias_size(g, node)
        if new is None and compressed_before:
            _refit(g, node, fact_vals[node.inputs[0]], ref_vals[node.inputs[0]])
    g = eliminate_dead_nodes(g)
    g.prune_tensors()
    shape = {
        n.name: "unstructured"
        if blocks.get(n.name, policy.block) is None
        else f"{blocks.get(n.name, policy.block)}x1 blocks"
        for n in layers
        if summary.get(n.name, 1.0) > 1.0
    }
    out = {"layer_rcg": summary, "layer_factors": shape, "samples": len(xs)}
    if data_free:
        out["data_free"] = data_free
    return g, out


def _weights(g: Graph) -> int:
    """Every weight of the graph: constants, gate matrices held in attributes, and the
    stored entries of the factor chains that replaced some of them."""
    total = g.parameter_count()
    for n in g.nodes:
        total += REGISTRY[n.op].attr_weights(n)
        f = n.attrs.get("factorization") or {}
        if n.op in RECURRENT and f.get("factorized"):
            total += int(f["stored"])
    return total


def _recurrent_data_free(dense: Graph, policy: FactorizePolicy, plan: DataPlan):
    """RNN / GRU / LSTM gate matrices are factorized data-free, at the per-layer target: the
    data-aware fit (one input matrix per layer) does not apply to a cell whose inputs
    include its own state. Done first, so the budget and the layers behind them see them."""
    rec = [n for n in dense.nodes if n.op in RECURRENT]
    if not rec:
        return dense.copy(), {}
    others = tuple(n.name for n in dense.nodes if n.op in ("Dense", "Conv"))
    per = dataclasses.replace(
        policy, keep_dense=(*policy.keep_dense, *others), min_size=plan.min_size
    )
    if plan.rcg is not None:
        per = dataclasses.replace(per, rcg=plan.rcg, max_error=None)
    g = factorize_weights(dense, per)
    done = {}
    for n in g.nodes:
        if n.op not in RECURRENT:
            n.attrs.pop("factorization", None)  # not this pass's to judge: the split's
        f = n.attrs.get("factorization") or {}
        if n.op in RECURRENT:
            done[n.name] = (
                f"RCG {f['rcg']:.3g}" if f.get("factorized") else f.get("reason", "kept dense")
            )
    return g, done
