"""The whole-model budget split of the data-aware build (`--rcg R` with `--calib`).

Each layer has options (parameters, measured error, RCG, factor structure) from the
sensitivity ladder; :func:`pareto_split` picks one per layer, least summed error within the
budget; :func:`allocate` refines that between the ladder's rungs (each layer's error
interpolated, the budget water-filled, for every combination of per-layer structures);
:func:`spend_leftover` gives what is still unused back to the factorized layers;
:func:`rebudget` re-shares what is left while the final pass fits the layers in order (a
layer fitted under its plan, or kept dense by the cost model, moves the others' targets).
A layer never goes below its floor: the RCG past which the cost model finds its factors
MARGIN faster than the dense layer.
"""

from __future__ import annotations

import itertools
import math

from faustgen.ir import Graph, Node

# The split keeps each layer this far past its break-even RCG (the cost model's): measured
# on the Fashion-MNIST MLP, a CSR chain the model estimated 1.09x faster ran 0.95x.
MARGIN = 1.25


def pareto_split(options: list[list[tuple]], budget: int):
    """Pick one (cost, error², *choice) option per layer: least summed error² within budget;
    returns each layer's choice as a tuple."""
    states = [(0, 0.0, ())]
    for opts in options:
        merged = sorted(
            ((c + oc, e + oe, (*ch, tuple(x))) for c, e, ch in states for oc, oe, *x in opts),
            key=lambda s: (s[0], s[1]),
        )
        states, best = [], math.inf
        for s in merged:
            if s[1] < best - 1e-15 and s[0] <= budget:
                states.append(s)
                best = s[1]
        if not states:
            return None
    return min(states, key=lambda s: s[1])[2]


def bias_size(g: Graph, node: Node) -> int:
    b = node.input(2)
    return 0 if not b else int(g.const(b).size)


def dense_cost(g: Graph, node: Node) -> int:
    """The layer's parameters when it stays dense (weights and bias)."""
    return int(g.const(node.inputs[1]).size) + bias_size(g, node)


def floors_of(floors: dict, blocks: dict) -> dict[str, float]:
    """Per layer, the floor of the structure the split chose for it."""
    return {n: v for (n, blk), v in floors.items() if blocks.get(n, blk) == blk}


def note_floor(floors: dict, key, node: Node, r: float) -> float | None:
    """The layer (refused by the cost model, or factorized at RCG r) when it is not MARGIN
    faster than dense: the RCG where it would break even (r times its estimated slowdown),
    kept as the layer's floor; None when it is fast enough or without an estimate."""
    info = node.attrs.get("factorization") or {}
    speedup = info.get("est_speedup")
    if not speedup or speedup >= MARGIN:
        return None
    floors[key] = max(floors.get(key, 0.0), r / speedup)
    return floors[key]


def rebudget(g: Graph, rest: list[Node], chosen: dict, left: int, floors: dict) -> float:
    """The RCG of rest[0] so the layers still to fit share what is `left` of the budget:
    their planned factorized parameters scaled alike (a layer fitted under its plan, or one
    the cost model kept dense, moves the others' targets)."""
    planned, fixed = 0.0, 0
    for n in rest:
        fixed += bias_size(g, n)
        r = chosen.get(n.name, 1.0)
        if r > 1.0:
            planned += g.const(n.inputs[1]).size / r
        else:
            fixed += int(g.const(n.inputs[1]).size)
    r0 = chosen[rest[0].name]
    if planned <= 0 or left - fixed <= 0:
        return r0
    scale = (left - fixed) / planned  # > 1: parameters to spare
    return max(r0 / scale, 1.05, floors.get(rest[0].name, 0.0) * MARGIN)


def spend_leftover(chosen: dict, sizes: dict, budget: int, floors: dict) -> None:
    """The ladder is coarse: give the parameters the split leaves unused to its factorized
    layers, their RCGs lowered by one common factor so the total meets the budget, except
    that none goes below its floor (where the cost model stops finding it faster): what a
    floored layer cannot take goes to the others. sizes: per layer (weights, bias)."""
    fact = [n for n, r in chosen.items() if r > 1.0]
    room = budget - sum(w * (chosen[n] <= 1.0) + b for n, (w, b) in sizes.items())
    rcg = {n: chosen[n] for n in fact}

    def floor(n: str) -> float:
        return max(1.05, floors.get(n, 0.0) * MARGIN)

    for _ in range(len(fact)):
        free = [n for n in fact if rcg[n] > floor(n) + 1e-9]
        pinned = sum(sizes[n][0] / rcg[n] for n in fact if n not in free)
        want = sum(sizes[n][0] / rcg[n] for n in free)
        if not free or want <= 0 or room - pinned <= want:
            break
        scale = want / (room - pinned)  # < 1: every free layer's RCG lowered alike
        for n in free:
            rcg[n] = max(rcg[n] * scale, floor(n))
    chosen.update(rcg)


def smallest_within(layers, options, max_drop: float) -> dict[str, float]:
    """Greedy: move the layer whose next cheaper option saves the most parameters per point
    of predicted accuracy drop, while the summed drops stay within max_drop."""
    cur = [max(o, key=lambda t: t[0]) for o in options]  # start dense
    spent = 0.0
    while True:
        best = None
        for li, opts in enumerate(options):
            for opt in opts:
                if opt[0] >= cur[li][0]:
                    continue
                extra = max(opt[1], 0.0) - max(cur[li][1], 0.0)
                if spent + extra > max_drop + 1e-9:
                    continue
                gain = (cur[li][0] - opt[0]) / max(extra, 1e-3)
                if best is None or gain > best[0]:
                    best = (gain, li, opt, extra)
        if best is None:
            break
        _, li, opt, extra = best
        cur[li] = opt
        spent += extra
    return {n.name: c[2] for n, c in zip(layers, cur, strict=True)}


def _curve(opts, pick) -> list[tuple[float, float, float]]:
    """(cost, error, RCG) of the picked option's structure along the ladder, by cost, the
    error made non-increasing in cost (the short fits of the ladder are noisy)."""
    pts = sorted((o[0], o[1], o[2]) for o in opts if o[3] == pick[3] and o[2] > 1.0)
    out: list[tuple[float, float, float]] = []
    for c, e, r in reversed(pts):  # from the most expensive down
        out.append((c, max(e, out[-1][1] if out else 0.0, 1e-12), r))
    return out[::-1]


def _at(curve, c: float) -> tuple[float, float]:
    """(error, RCG) at cost c, interpolated log-linearly between the ladder's points."""
    for (c0, e0, r0), (c1, e1, r1) in itertools.pairwise(curve):
        if c0 <= c <= c1:
            t = math.log(c / c0) / math.log(c1 / c0) if c1 > c0 else 0.0
            return e0 * (e1 / e0) ** t, r0 * (r1 / r0) ** t
    end = curve[0] if c < curve[0][0] else curve[-1]
    return end[1], end[2]


def allocate(options: list[list[tuple]], budget: int, max_combos: int = 512):
    """Per layer (RCG, structure): the ladder is coarse, so between its points each layer's
    measured error is interpolated (log-linear in its parameters); for every combination of
    per-layer structures (kept dense, or one structure's curve) the budget is water-filled,
    parameters going in small steps to the layer where they lower the summed error most,
    and the combination with the least summed error wins. None when no combination fits
    (or there are too many: then the Pareto split's choice stands)."""
    kinds = []
    for opts in options:
        dense = min((o for o in opts if o[2] <= 1.0), key=lambda o: o[0], default=None)
        curves = {}
        for blk in dict.fromkeys(o[3] for o in opts if o[2] > 1.0):
            curves[blk] = _curve(opts, (0, 0.0, 2.0, blk))
        kinds.append(([("dense", dense)] if dense else []) + list(curves.items()))
    if math.prod(len(k) for k in kinds) > max_combos:
        return None
    step = max(1.0, budget / 400)
    best = None
    for combo in itertools.product(*kinds):
        cost = [float(v[0]) if k == "dense" else float(v[0][0]) for k, v in combo]
        if sum(cost) > budget:
            continue
        live = [i for i, (k, v) in enumerate(combo) if k != "dense" and len(v) > 1]
        while budget - sum(cost) >= step:
            gains = {}
            for i in live:
                cv = combo[i][1]
                if cost[i] + step <= cv[-1][0]:
                    gains[i] = _at(cv, cost[i])[0] - _at(cv, cost[i] + step)[0]
            if not gains or max(gains.values()) <= 0:
                break
            cost[max(gains, key=gains.get)] += step
        err = sum(0.0 if k == "dense" else _at(v, cost[i])[0] for i, (k, v) in enumerate(combo))
        if best is None or err < best[0]:
            pick = [
                (1.0, v[3]) if k == "dense" else (_at(v, cost[i])[1], k)
                for i, (k, v) in enumerate(combo)
            ]
            best = (err, pick)
    return None if best is None else best[1]
