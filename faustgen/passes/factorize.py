"""Replace fully connected and convolution weights by products of sparse factors.

For each Dense (W: in x out) the engine factorizes the seed's W^T (out x in) ~
S_0 ... S_{J-1}; for each Conv, each group's filter matrix F_g^T (K/g x C/g*kernel);
for each RNN / GRU / LSTM, its gate matrices W_d (G*H x I) and R_d (G*H x H) per
direction (_plan_recurrent). The cost model picks each factor's storage
and keeps the layer dense when the factorized form would not be faster; every decision
lands in the layer's report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sps

from faustgen.errors import FaustgenError
from faustgen.factorize import DEFAULT_RCG, FactorizationError
from faustgen.factorize.jobs import LayerJob, LayerOutcome, default_cache_dir, run_jobs
from faustgen.ir import Graph, Node
from faustgen.layout.factor import Factor, chain_dense
from faustgen.ops.base import prod
from faustgen.ops.conv import im2col_floats
from faustgen.passes.costmodel import CostModel

RECURRENT = ("RNN", "GRU", "LSTM")
# A matrix with fewer rows or columns than this has no useful product of sparse factors: a
# 3x3 depthwise filter is a 1x9 vector, and "factorizing" it keeps 2 of its 9 taps.
MIN_FACTOR_DIM = 4


@dataclass
class FactorizePolicy:
    """What the factorize pass does; the one home of the factorization defaults (the build
    options and the CLI take theirs from here)."""

    rcg: float | None = None  # DEFAULT_RCG when max_error is not given either
    max_error: float | None = None
    factors: int | None = None
    keep_dense: tuple[str, ...] = ()
    min_size: int = 4096  # layers with fewer weights stay dense
    convs: bool = False  # factorize convolutions too
    block: int | None = 16  # 16x1 block-sparse factors for fully connected layers
    seed: int = 0
    effort: float = 1.0
    cost: CostModel = field(default_factory=CostModel)
    progress: Callable[[str], None] | None = None
    jobs: int | None = None  # local worker processes (None: one per core)
    ray: str | None = None  # a Ray cluster address ("auto", "ray://host:port") instead
    cache: bool = True  # reuse factorizations kept under $FAUSTGEN_CACHE
    # Keep a layer dense where the cost model finds its factors slower. Off for the
    # experiment's baselines (pruning, SVD), compared at equal parameters whatever their speed.
    speed_gate: bool = True

    @classmethod
    def default(cls, **kw) -> FactorizePolicy:
        """Without flags: fully connected layers at DEFAULT_RCG; convolutions only on request,
        because data-free factorization of small filter matrices costs accuracy."""
        p = cls(**kw)
        if p.rcg is None and p.max_error is None:
            p.rcg = DEFAULT_RCG
        return p

    def describe(self) -> str:
        target = f"RCG {self.rcg:g}" if self.rcg else f"max error {self.max_error:g}"
        return target + (f", {self.factors} factors" if self.factors else "")


def factorize_weights(graph: Graph, policy: FactorizePolicy) -> Graph:
    """The optimized (dense) graph with its Dense / Conv layers factorized as `policy` says;
    `graph` itself is left as it is (calibration and fine-tuning compare with it).

    Every layer's matrices are factorized in one batch of independent jobs (in parallel, see
    :func:`faustgen.factorize.jobs.run_jobs`), then each layer is rewritten from its results.
    """
    g = graph.copy()
    layers = [n for n in g.nodes if n.op in ("Dense", "Conv", *RECURRENT)]
    plans = [
        (node, (_plan_recurrent if node.op in RECURRENT else _plan)(g, node, policy))
        for node in layers
    ]
    jobs = [job for _, plan in plans if plan is not None for job in plan.jobs]
    outcomes = iter(_run(jobs, policy))
    for node, plan in plans:
        if plan is None:
            continue
        results = [next(outcomes) for _ in plan.jobs]
        rewrite = _rewrite_recurrent if node.op in RECURRENT else _rewrite
        rewritten = rewrite(g, node, policy, plan, results)
        if rewritten is not None:
            g.nodes[g.nodes.index(node)] = rewritten
    g.prune_tensors()
    return g


def _run(jobs: list[LayerJob], policy: FactorizePolicy) -> list[LayerOutcome]:
    show = policy.progress
    t0 = time.perf_counter()

    def line(o: LayerOutcome, done: int, total: int) -> None:
        if show is None:
            return
        shape = "x".join(map(str, o.shape))
        if o.error is not None:
            what = f"failed ({o.error})"
        elif o.cached:
            what = "from the cache"
        else:
            what = f"{o.seconds:.1f} s"
        show(f"factorizing: {done}/{total} done ({o.name} {shape}: {what})")

    try:
        outcomes = run_jobs(
            jobs,
            n_jobs=policy.jobs,
            ray_address=policy.ray,
            cache_dir=default_cache_dir() if policy.cache else None,
            progress=line,
        )
    except FactorizationError as e:  # Ray missing or unreachable
        raise FaustgenError(str(e)) from None
    if show is not None and jobs:
        hits = sum(o.cached for o in outcomes)
        show(
            f"factorized {len(jobs)} matrices in {time.perf_counter() - t0:.1f} s "
            f"({sum(o.seconds for o in outcomes):.1f} s of engine time, {hits} from the cache)"
        )
    return outcomes


def _matches(node: Node, names: tuple[str, ...]) -> bool:
    return any(n in (node.name, *node.inputs) for n in names)


def _dense_report(node: Node, shape, reason: str, fault: bool = False) -> dict:
    """Why a layer stays dense; `fault` marks a factorization that failed (the build warns)."""
    return {"factorized": False, "reason": reason, "shape": list(shape), "fault": fault}


def _job(name: str, matrix: np.ndarray, policy: FactorizePolicy, block: int | None) -> LayerJob:
    target = {"max_error": policy.max_error} if policy.max_error is not None else {}
    return LayerJob(
        name,
        matrix,
        rcg=policy.rcg if policy.max_error is None else None,
        factors=policy.factors,
        block=block or None,
        seed=policy.seed,
        effort=policy.effort,
        **target,
    )


def _factor_list(result, cost: CostModel, mode: str, count: int) -> list[Factor]:
    mats = [sps.csr_matrix(f, dtype=np.float32) for f in result.balanced_factors()]
    for m in mats:
        m.eliminate_zeros()
        m.sort_indices()
    # The stored entries may not exceed what the engine promised (its RCG).
    budget = int(getattr(result, "stored_nnz", result.nnz))
    return cost.choose_storages(mats, mode, count, budget)


@dataclass
class _Plan:
    """A layer to factorize: its matrices (one per conv group) as engine jobs."""

    jobs: list[LayerJob]
    count: int  # columns the layer multiplies per call (output pixels for a conv)
    mode: str  # "matvec" (fully connected) or "spmm" (convolution)
    dense_time: float
    slots: list[int] = field(default_factory=list)  # recurrent: the gate matrix of each job
    patch_time: float = 0.0  # a factorized conv's im2col, on top of its factors


def _plan(g: Graph, node: Node, policy: FactorizePolicy) -> _Plan | None:
    """The layer's jobs, or None (with the reason in its report) when it stays dense."""
    w = g.const(node.inputs[1])
    if w is None:
        return None
    is_conv = node.op == "Conv"
    shape = w.shape
    patch_time = 0.0
    if _matches(node, policy.keep_dense):
        node.attrs["factorization"] = _dense_report(node, shape, "kept dense (--keep-dense)")
        return None
    if w.size < policy.min_size:
        node.attrs["factorization"] = _dense_report(
            node, shape, f"kept dense: {w.size} weights, below the {policy.min_size} minimum"
        )
        return None
    if is_conv and not policy.convs:
        node.attrs["factorization"] = _dense_report(
            node,
            shape,
            "kept dense: convolutions are factorized only with --rcg/--max-error or --convs",
        )
        return None
    rows = w.shape[0] // node.attrs["group"] if is_conv else w.shape[1]
    cols = w.size // w.shape[0] if is_conv else w.shape[0]
    if min(rows, cols) < MIN_FACTOR_DIM:
        what = f"each of its {node.attrs['group']} filter groups is" if is_conv else "it is"
        node.attrs["factorization"] = _dense_report(
            node,
            shape,
            f"kept dense: {what} a {rows}x{cols} matrix, too thin to factorize (a product of "
            "sparse factors of a vector would only prune its entries)",
        )
        return None
    if is_conv:
        group = node.attrs["group"]
        kg = w.shape[0] // group
        wc = np.ascontiguousarray(w)
        mats = [wc[i * kg : (i + 1) * kg].reshape(kg, -1) for i in range(group)]
        count = prod(node.attrs["window"].out_size)
        mode, block = "spmm", None
        dense_time = sum(policy.cost.dense_spmm(*m.shape, count) for m in mats)
        if im2col_floats(w.shape[1], node.attrs["window"]):
            patch_time = group * policy.cost.im2col(mats[0].shape[1], count)
    else:
        # out x in, in the weights' own dtype: the engine takes its float64 copy in the worker,
        # so the build does not hold (and send) a float64 copy of every layer (822 MB for
        # VGG's 25088x4096).
        mats = [np.ascontiguousarray(w.T)]
        count = prod(g.tensors[node.inputs[0]].shape) // w.shape[0]
        mode, block = "matvec", policy.block
        dense_time = policy.cost.dense_matvec(*mats[0].shape, count)
    names = [node.name] if len(mats) == 1 else [f"{node.name}[{i}]" for i in range(len(mats))]
    jobs = [_job(n, m, policy, block) for n, m in zip(names, mats, strict=True)]
    return _Plan(jobs, count, mode, dense_time, patch_time=patch_time)


def _slower(node: Node, info: dict, fact_time: float, dense_time: float) -> bool:
    """True, with the reason in the layer's report, when the cost model finds the factorized
    form no faster than the dense layer (which then stays)."""
    if fact_time < dense_time:
        return False
    info.update(
        factorized=False,
        reason=f"kept dense: the factorized form would be "
        f"{fact_time / dense_time:.2f}x the dense time (cost model)",
    )
    node.attrs["factorization"] = info
    return True


def _rewrite(
    g: Graph, node: Node, policy: FactorizePolicy, plan: _Plan, outcomes: list[LayerOutcome]
) -> Node | None:
    """The factorized node from the layer's results, or None (the reason in its report)."""
    w = g.const(node.inputs[1])
    is_conv = node.op == "Conv"
    shape = w.shape
    mats = [job.matrix for job in plan.jobs]
    count, mode, dense_time = plan.count, plan.mode, plan.dense_time
    chains, errors = [], []
    for m, outcome in zip(mats, outcomes, strict=True):
        if outcome.result is None:
            reason = f"kept dense: {outcome.error}"
            node.attrs["factorization"] = _dense_report(node, shape, reason, True)
            return None
        factors = _factor_list(outcome.result, policy.cost, mode, count)
        approx = chain_dense(factors)
        if not np.all(np.isfinite(approx)):
            node.attrs["factorization"] = _dense_report(
                node, shape, "kept dense: the factorization produced NaN or Inf", fault=True
            )
            return None
        approx -= m
        err = float(np.linalg.norm(approx) / max(np.linalg.norm(m.astype(np.float64)), 1e-30))
        if policy.max_error is not None and err > policy.max_error * (1 + 1e-6):
            node.attrs["factorization"] = _dense_report(
                node,
                shape,
                f"kept dense: error {err:.3g} above --max-error {policy.max_error:g}",
                fault=True,
            )
            return None
        chains.append(factors)
        errors.append(err)
    fact_time = plan.patch_time + sum(
        policy.cost.factor_time(f, mode, count) for fs in chains for f in fs
    )
    stored = sum(f.stored_entries() for fs in chains for f in fs)
    nnz = sum(f.nnz for fs in chains for f in fs)
    info = {
        "factorized": True,
        "shape": list(shape),
        "matrix": [list(m.shape) for m in mats],
        "dense_parameters": int(w.size),
        "nnz": int(nnz),
        "stored": int(stored),
        "rcg": float(w.size / max(stored, 1)),
        "weight_error": float(np.sqrt(np.mean(np.square(errors)))),
        "factors": [
            [
                {
                    "shape": list(f.shape),
                    "nnz": f.nnz,
                    "storage": f.storage,
                    "index": f.index_type,
                    "bytes": policy.cost.factor_bytes(f),
                }
                for f in fs
            ]
            for fs in chains
        ],
        "dense_macs": int(w.size * count),
        "factorized_macs": int(sum(f.stored_entries() for fs in chains for f in fs) * count),
        "est_speedup": float(dense_time / fact_time),
    }
    if policy.speed_gate and _slower(node, info, fact_time, dense_time):
        return None
    attrs = {
        "factors": chains if is_conv else chains[0],
        "act": node.attrs.get("act"),
        "fused": node.attrs.get("fused", []),
        "factorization": info,
        "out_shape": g.tensors[node.outputs[0]].shape,
    }
    bias = node.input(2)
    if is_conv:
        attrs.update(window=node.attrs["window"], group=node.attrs["group"])
        return Node("FactorizedConv", node.name, [node.inputs[0], bias], node.outputs, attrs)
    return Node("FactorizedDense", node.name, [node.inputs[0], bias], node.outputs, attrs)


# ---------------------------------------------------------------- recurrent layers
# The gate matrices of an RNN / GRU / LSTM: slot d is W_d (G*H x I), slot dirs + d is R_d
# (G*H x H). Each is applied to one vector per step and per sample (T * B products), so a
# factor costs one kernel call per step; fg_rnn_seq takes factors in CSR or 16x1 blocks.


def _gate_matrices(node: Node) -> list[np.ndarray]:
    a = node.attrs
    return [*a["W"], *a["R"]]


def _gate_name(k: int, dirs: int) -> str:
    return f"{'WR'[k // dirs]}{k % dirs}"


def _plan_recurrent(g: Graph, node: Node, policy: FactorizePolicy) -> _Plan | None:
    a = node.attrs
    mats = _gate_matrices(node)
    shape = [a["dirs"], mats[0].shape[0], a["I"] + a["H"]]  # [W_d | R_d] per direction
    size = sum(m.size for m in mats)
    if _matches(node, policy.keep_dense):
        node.attrs["factorization"] = _dense_report(node, shape, "kept dense (--keep-dense)")
        return None
    if size < policy.min_size:
        node.attrs["factorization"] = _dense_report(
            node, shape, f"kept dense: {size} weights, below the {policy.min_size} minimum"
        )
        return None
    slots = [k for k, m in enumerate(mats) if min(m.shape) >= MIN_FACTOR_DIM]
    if not slots:
        node.attrs["factorization"] = _dense_report(
            node, shape, "kept dense: its gate matrices are too thin to factorize"
        )
        return None
    steps = a["T"] * a["B"]
    names = [f"{node.name}.{_gate_name(k, a['dirs'])}" for k in slots]
    jobs = [
        _job(n, mats[k].astype(np.float64), policy, policy.block)
        for n, k in zip(names, slots, strict=True)
    ]
    dense_time = steps * sum(policy.cost.dense_matvec(*mats[k].shape) for k in slots)
    return _Plan(jobs, steps, "matvec", dense_time, slots)


def _recurrent_factors(result, cost: CostModel) -> list[Factor]:
    """Each factor in CSR or 16x1 blocks (what fg_rnn_seq applies), the faster one that
    stores no more entries than the factor's nonzeros."""
    out = []
    for f in result.balanced_factors():
        m = sps.csr_matrix(f, dtype=np.float32)
        m.eliminate_zeros()
        m.sort_indices()
        opts = [Factor(m, "csr")]
        if Factor(m, "bsr16").stored_entries() <= m.nnz:
            opts.append(Factor(m, "bsr16"))
        out.append(min(opts, key=lambda x: cost.factor_time(x, "matvec", 1)))
    return out


def _rewrite_recurrent(
    g: Graph, node: Node, policy: FactorizePolicy, plan: _Plan, outcomes: list[LayerOutcome]
) -> Node | None:
    a = node.attrs
    mats = _gate_matrices(node)
    shape = [a["dirs"], mats[0].shape[0], a["I"] + a["H"]]
    chains: list[list[Factor] | None] = [None] * len(mats)
    errors = []
    for k, outcome in zip(plan.slots, outcomes, strict=True):
        if outcome.result is None:
            node.attrs["factorization"] = _dense_report(
                node, shape, f"kept dense: {outcome.error}", True
            )
            return None
        chains[k] = _recurrent_factors(outcome.result, policy.cost)
        approx = chain_dense(chains[k])
        if not np.all(np.isfinite(approx)):
            node.attrs["factorization"] = _dense_report(
                node, shape, "kept dense: the factorization produced NaN or Inf", fault=True
            )
            return None
        m = mats[k]
        errors.append(float(np.linalg.norm(approx - m) / max(np.linalg.norm(m), 1e-30)))
    if policy.max_error is not None and max(errors) > policy.max_error * (1 + 1e-6):
        node.attrs["factorization"] = _dense_report(
            node, shape, f"kept dense: error {max(errors):.3g} above --max-error", fault=True
        )
        return None
    fs = [f for c in chains if c is not None for f in c]
    fact_time = plan.count * sum(policy.cost.factor_time(f, "matvec", 1) for f in fs)
    dense_size = sum(mats[k].size for k in plan.slots)
    stored = sum(f.stored_entries() for f in fs)
    info = {
        "factorized": True,
        "shape": shape,
        "matrix": [list(mats[k].shape) for k in plan.slots],
        "gates": [_gate_name(k, a["dirs"]) for k in plan.slots],
        "dense_parameters": int(dense_size),
        "nnz": int(sum(f.nnz for f in fs)),
        "stored": int(stored),
        "rcg": float(dense_size / max(stored, 1)),
        "weight_error": float(np.sqrt(np.mean(np.square(errors)))),
        "factors": [
            [
                {
                    "shape": list(f.shape),
                    "nnz": f.nnz,
                    "storage": f.storage,
                    "index": "i32",
                    "bytes": policy.cost.factor_bytes(f),
                }
                for f in c
            ]
            for c in chains
            if c is not None
        ],
        "dense_macs": int(dense_size * plan.count),
        "factorized_macs": int(stored * plan.count),
        "est_speedup": float(plan.dense_time / fact_time),
    }
    if policy.speed_gate and _slower(node, info, fact_time, plan.dense_time):
        return None
    d = a["dirs"]
    # W / R become the factors' product (float64): the reference the C is judged against
    w = [chain_dense(c) if c is not None else m for c, m in zip(chains[:d], mats[:d], strict=True)]
    r = [chain_dense(c) if c is not None else m for c, m in zip(chains[d:], mats[d:], strict=True)]
    attrs = {**a, "W": np.stack(w), "R": np.stack(r), "chains": chains, "factorization": info}
    return Node(node.op, node.name, list(node.inputs), list(node.outputs), attrs)


def factorize_node(g: Graph, node: Node, policy: FactorizePolicy, fit: Callable) -> Node | None:
    """One layer rewritten from ``fit(group, matrix, block) -> FactorizedMatrix`` instead of
    the engine's jobs (the data-aware build fits each layer to its calibration activations),
    under the same policy checks, cost model and report as :func:`factorize_weights`."""
    plan = _plan(g, node, policy)
    if plan is None:
        return None
    outcomes = []
    for gi, job in enumerate(plan.jobs):
        try:
            result, error = fit(gi, job.matrix, job.block), None
        except FactorizationError as e:
            result, error = None, str(e)
        outcomes.append(LayerOutcome(job.name, job.matrix.shape, result, error, 0.0))
    return _rewrite(g, node, policy, plan, outcomes)
