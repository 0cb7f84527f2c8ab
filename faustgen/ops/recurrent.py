"""RNN, GRU and LSTM with the ONNX semantics: directions (forward, reverse,
bidirectional), initial states, sequence_lens, peepholes, clip, input_forget,
linear_before_reset, the `activations` attributes and both layouts.

One fg_rnn_seq call runs the whole sequence; the weights go to it transposed
(W^T: I x G*H, R^T: H x G*H per direction) so each step is two axpy sweeps. The
factorize pass may replace gate matrices by chains of sparse factors (attrs "chains",
one entry per W_d then per R_d, None for a dense one; W / R then hold the factors'
product, which compute() uses as the reference).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from faustgen.layout.factor import bsr_blocks
from faustgen.ops.base import Op, fail, float_like, register_op

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
# ONNX activation name -> (C code, default alpha, default beta, how many of alpha/beta it reads)
_ACTS = {
    "Sigmoid": ("FG_RNN_SIGMOID", 0.0, 0.0, 0),
    "Tanh": ("FG_RNN_TANH", 0.0, 0.0, 0),
    "Relu": ("FG_RNN_RELU", 0.0, 0.0, 0),
    "HardSigmoid": ("FG_RNN_HARD_SIGMOID", 0.2, 0.5, 2),
    "LeakyRelu": ("FG_RNN_LEAKY_RELU", 0.01, 0.0, 1),
    "ThresholdedRelu": ("FG_RNN_THRESHOLDED_RELU", 1.0, 0.0, 1),
    "ScaledTanh": ("FG_RNN_SCALED_TANH", 1.0, 1.0, 2),
    "Affine": ("FG_RNN_AFFINE", 1.0, 0.0, 2),
    "Elu": ("FG_RNN_ELU", 1.0, 0.0, 1),
    "Softsign": ("FG_RNN_SOFTSIGN", 0.0, 0.0, 0),
    "Softplus": ("FG_RNN_SOFTPLUS", 0.0, 0.0, 0),
}
_LOWER = {k.lower(): k for k in _ACTS}


def _act_numpy(name: str, v: np.ndarray, a: float, b: float) -> np.ndarray:
    if name == "Sigmoid":
        return expit(v)
    if name == "Tanh":
        return np.tanh(v)
    if name == "Relu":
        return np.maximum(v, 0)
    if name == "HardSigmoid":
        return np.clip(a * v + b, 0, 1)
    if name == "LeakyRelu":
        return np.where(v >= 0, v, a * v)
    if name == "ThresholdedRelu":
        return np.where(v > a, v, 0)
    if name == "ScaledTanh":
        return a * np.tanh(b * v)
    if name == "Affine":
        return a * v + b
    if name == "Elu":
        return np.where(v >= 0, v, a * np.expm1(v))
    if name == "Softsign":
        return v / (1 + np.abs(v))
    return np.logaddexp(0, v)  # Softplus


@register_op("RNN", "GRU", "LSTM")
class Recurrent(Op):
    def parse(self, ctx):
        op = ctx.op_type
        g = _GATES[op]
        x = ctx.shape(0)
        if len(x) != 3:
            ctx.fail(f"X has shape {tuple(x)}; expected rank 3")
        layout = int(ctx.attr("layout", 0))
        t, b, i = (x[1], x[0], x[2]) if layout else x
        direction = ctx.attr("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            ctx.fail(f"direction '{direction}' is not one of forward, reverse, bidirectional")
        dirs = 2 if direction == "bidirectional" else 1
        w = ctx.const_input(1, "W").astype(np.float32)
        r = ctx.const_input(2, "R").astype(np.float32)
        h = int(ctx.attr("hidden_size", r.shape[-1]))
        if w.shape != (dirs, g * h, i) or r.shape != (dirs, g * h, h):
            ctx.fail(f"W {w.shape} / R {r.shape} do not fit {dirs} direction(s), {g}x{h} gates")
        bias = ctx.const_input(3, "B", required=False)
        bias = np.zeros((dirs, 2 * g * h), np.float32) if bias is None else bias.astype(np.float32)
        if bias.shape != (dirs, 2 * g * h):
            ctx.fail(f"B has shape {bias.shape}; expected {(dirs, 2 * g * h)}")
        lens = ctx.const_input(4, "sequence_lens", required=False)
        if lens is not None:
            lens = np.asarray(lens).astype(np.int32).reshape(-1)
            if lens.shape != (b,) or (lens < 1).any() or (lens > t).any():
                ctx.fail(f"sequence_lens {lens.tolist()} do not fit batch {b}, length {t}")
            if (lens == t).all():
                lens = None
        peep = ctx.const_input(7, "P", required=False) if op == "LSTM" else None
        if peep is not None:
            peep = peep.astype(np.float32).reshape(dirs, 3 * h)
        names = ctx.attr("activations") or _DEFAULT_ACTS[op] * dirs
        n_act = len(_DEFAULT_ACTS[op])
        names = [_LOWER.get(str(n).lower(), str(n)) for n in names]
        if len(names) != n_act * dirs:
            ctx.fail(f"{len(names)} activations given; expected {n_act * dirs}")
        if dirs == 2 and names[:n_act] != names[n_act:]:
            ctx.fail("different activations per direction are not supported")
        alphas = list(ctx.attr("activation_alpha") or [])
        betas = list(ctx.attr("activation_beta") or [])
        acts = []
        for name in names[:n_act]:
            if name not in _ACTS:
                ctx.fail(f"activation '{name}' is not supported")
            _, a0, b0, used = _ACTS[name]
            a = alphas.pop(0) if used >= 1 and alphas else a0
            bb = betas.pop(0) if used >= 2 and betas else b0
            acts.append((name, float(a), float(bb)))
        if op == "GRU" and ctx.attr("linear_before_reset", 0) not in (0, 1):
            ctx.fail("linear_before_reset must be 0 or 1")
        attrs = {
            "T": t,
            "B": b,
            "I": i,
            "H": h,
            "dirs": dirs,
            "reverse": int(direction == "reverse"),
            "layout": layout,
            "W": w,
            "R": r,
            "bias": bias,
            "lens": lens,
            "peep": peep,
            "acts": tuple(acts),
            "clip": float(ctx.attr("clip", 0.0) or 0.0),
            "input_forget": int(ctx.attr("input_forget", 0)) if op == "LSTM" else 0,
            "linear_before_reset": int(ctx.attr("linear_before_reset", 0)) if op == "GRU" else 0,
        }
        state_in = [ctx.input(5), ctx.input(6) if op == "LSTM" else ""]
        return ctx.node(attrs, inputs=[ctx.input(0), *state_in])

    def infer(self, node, ins):
        a = node.attrs
        t, b, d, h = a["T"], a["B"], a["dirs"], a["H"]
        state = (b, d, h) if a["layout"] else (d, b, h)
        for k, t_in in enumerate(ins[1:], start=1):
            if t_in.shape != state:
                fail(node, f"initial state {k} has shape {t_in.shape}; expected {state}")
        y = (b, t, d, h) if a["layout"] else (t, d, b, h)
        return [(y, "float32"), (state, "float32"), (state, "float32")][: len(node.outputs)]

    def batch_axes_ok(self, node, ins):
        return node.attrs["layout"] == 1

    def attr_weights(self, node):
        a = node.attrs
        chains = a.get("chains") or [None] * (2 * a["dirs"])
        mats = [*a["W"], *a["R"]]
        dense = sum(m.size for m, c in zip(mats, chains, strict=True) if c is None)
        return dense + a["bias"].size + (0 if a["peep"] is None else a["peep"].size)

    def compute(self, node, ins):
        x = ins[0].astype(np.float64)
        h0, c0 = (_state(node, ins, k, node.attrs).astype(np.float64) for k in (1, 2))
        mats = _matrices(node, np.float64)

        def act(k, v, clip=True):
            name, al, be = node.attrs["acts"][k]
            if clip and node.attrs["clip"] > 0:
                v = np.clip(v, -node.attrs["clip"], node.attrs["clip"])
            return _act_numpy(name, v, al, be)

        y, yh, yc = _sequence(node, x, h0, c0, mats, act, np.stack, np.zeros)
        t = float_like(ins[0])
        return [v.astype(t) for v in (y, yh, yc)][: len(node.outputs)]

    def compute_torch(self, node, ins, t):
        torch = t.torch
        x, a = ins[0], node.attrs
        zero = torch.zeros((x.shape[0 if a["layout"] else 1], a["dirs"], a["H"]), dtype=x.dtype)
        h0, c0 = _torch_states(node, ins, zero)
        mats = [m if m is None else t.const(m).to(x.dtype) for m in _matrices(node, np.float32)]

        def act(k, v, clip=True):
            name, al, be = node.attrs["acts"][k]
            if clip and node.attrs["clip"] > 0:
                v = torch.clamp(v, -node.attrs["clip"], node.attrs["clip"])
            return _act_torch(t, name, v, al, be)

        def zeros(shape):
            return torch.zeros(shape, dtype=x.dtype)

        outs = _sequence(node, x, h0, c0, mats, act, torch.stack, zeros)
        return list(outs)[: len(node.outputs)]

    def lower(self, node, em):
        a = node.attrs
        g = _GATES[node.op]
        acts = list(a["acts"]) + [("Tanh", 0.0, 0.0)] * (3 - len(a["acts"]))
        p = em.struct(
            "fg_rnn",
            node.op.lower(),
            cell={"RNN": "FG_CELL_RNN", "GRU": "FG_CELL_GRU", "LSTM": "FG_CELL_LSTM"}[node.op],
            T=a["T"],
            B=a["B"],
            I=a["I"],
            H=a["H"],
            dirs=a["dirs"],
            reverse=a["reverse"],
            gates=g,
            layout=a["layout"],
            linear_before_reset=a["linear_before_reset"],
            input_forget=a["input_forget"],
            clip=float(a["clip"]),
            act=[_ACTS[n][0] for n, _, _ in acts],
            alpha=[float(x) for _, x, _ in acts],
            beta=[float(x) for _, _, x in acts],
        )
        d = a["dirs"]
        chains = a.get("chains") or [None] * (2 * d)
        wt, rt = (
            em.weight(np.ascontiguousarray(a[k].transpose(0, 2, 1)), f"{node.name}_{k}t")
            if any(c is None for c in part)
            else "NULL"
            for k, part in (("W", chains[:d]), ("R", chains[d:]))
        )
        bias = em.weight(a["bias"], node.name + "_B")
        peep = "NULL" if a["peep"] is None else em.weight(a["peep"], node.name + "_P")
        lens = "NULL" if a["lens"] is None else em.weight(a["lens"], node.name + "_lens", "int32_t")
        has = [k < len(node.outputs) and bool(node.outputs[k]) for k in (0, 1, 2)]
        ch, max_dim = _emit_chains(em, node, chains)
        scratch = em.scratch((3 * g + 3) * a["H"] + 2 * max_dim)
        if a.get("state") is None:
            states = [
                em.x(k) if k < len(node.inputs) and node.inputs[k] else "NULL" for k in (1, 2)
            ]
            outs = [em.y(k) if has[k] else "NULL" for k in (0, 1, 2)]
            em.call("fg_rnn_seq", p, em.x(0), wt, rt, bias, peep, lens, *states, *outs, ch, scratch)
            return
        # a streaming step: the state lives in PREFIX_state between calls (passes/stream.py)
        n = a["dirs"] * a["B"] * a["H"]
        h = f"{em.prefix}_state + {a['state']}"
        c = f"{em.prefix}_state + {a['state'] + n}" if node.op == "LSTM" else "NULL"
        y = em.y(0) if has[0] else "NULL"
        em.call("fg_rnn_seq", p, em.x(0), wt, rt, bias, peep, lens, h, c, y, h, c, ch, scratch)
        for k, src in ((1, h), (2, c)):
            if has[k]:
                em.call("fg_copy", src, em.y(k), n)


def _emit_chains(em, node, chains) -> tuple[str, int]:
    """The fg_rnn_chains struct of the factorized gate matrices (see fg_runtime.h), or
    ("NULL", 0) when all are dense."""
    if all(c is None for c in chains):
        return "NULL", 0
    head, recs, ptrs, idxs, vals = [], [], [], [], []
    n_ptr = n_idx = n_val = 0
    off = len(chains)
    max_dim = 0
    for fs in chains:
        if fs is None:
            head.append(-1)
            continue
        head.append(off)
        rec = [len(fs)]
        for f in reversed(fs):  # the order they apply: S_{J-1} first
            s = f.matrix
            if f.storage == "bsr16":
                ptr, idx, val = bsr_blocks(s)
                kind = 1
            else:
                ptr, idx, val = s.indptr, s.indices, s.data
                kind = 0
            rec += [kind, *f.shape, n_ptr, n_idx, n_val]
            ptrs.append(ptr)
            idxs.append(idx)
            vals.append(np.asarray(val, np.float32).reshape(-1))
            n_ptr, n_idx, n_val = n_ptr + len(ptr), n_idx + len(idx), n_val + vals[-1].size
            max_dim = max(max_dim, *f.shape)
        recs += rec
        off += len(rec)
    name = node.name
    ident = em.struct(
        "fg_rnn_chains",
        "chains",
        meta=em.weight(np.array(head + recs), f"{name}_chain_meta", "int32_t"),
        ptr=em.weight(np.concatenate(ptrs), f"{name}_chain_ptr", "int32_t"),
        idx=em.weight(np.concatenate(idxs), f"{name}_chain_idx", "int32_t"),
        val=em.weight(np.concatenate(vals), f"{name}_chain_val"),
        max_dim=max_dim,
    )
    return ident, max_dim


def _state(node, ins, k: int, a) -> np.ndarray:
    """Initial state k (1: h, 2: c) as [B][D][H], zeros when absent."""
    shape = (a["B"], a["dirs"], a["H"])
    if k < len(node.inputs) and node.inputs[k]:
        v = ins[[i for i, n in enumerate(node.inputs) if n].index(k)]
        return v if a["layout"] else v.transpose(1, 0, 2)
    return np.zeros(shape, np.float32)


def _torch_states(node, ins, zero):
    """The initial states of a torch run as [B][D][H] (`zero` for an absent one)."""
    out = []
    for k in (1, 2):
        if k < len(node.inputs) and node.inputs[k]:
            v = ins[[i for i, n in enumerate(node.inputs) if n].index(k)]
            out.append(v if node.attrs["layout"] else v.transpose(0, 1))
        else:
            out.append(zero)
    return out


def _matrices(node, dtype) -> list:
    """W, R, bias, peepholes (None when absent) in `dtype`."""
    a = node.attrs
    peep = None if a["peep"] is None else a["peep"].astype(dtype)
    return [a["W"].astype(dtype), a["R"].astype(dtype), a["bias"].astype(dtype), peep]


def _sequence(node, x, h0, c0, mats, act, stack, zeros):
    """(Y, Y_h, Y_c) over the whole sequence, for numpy or torch arrays alike (`act(k, v)`
    applies activation k with the clip; `stack` / `zeros` are the library's)."""
    a = node.attrs
    if not a["layout"]:
        x = x.transpose(1, 0, 2) if isinstance(x, np.ndarray) else x.transpose(0, 1)
    t_len, d_n, h_n = a["T"], a["dirs"], a["H"]
    b_n = x.shape[0]
    lens = a["lens"]
    ys, yhs, ycs = [], [], []
    for b in range(b_n):
        length = t_len if lens is None else int(lens[b % len(lens)])
        per_dir, hs, cs = [], [], []
        for d in range(d_n):
            reverse = d == 1 if d_n == 2 else bool(a["reverse"])
            h, c = h0[b, d], c0[b, d]
            out = [zeros(h_n)] * t_len
            for t in range(length - 1, -1, -1) if reverse else range(length):
                h, c = _cell(node.op, a, d, x[b, t], h, c, mats, act)
                out[t] = h
            per_dir.append(stack(out))  # [T][H]
            hs.append(h)
            cs.append(c)
        ys.append(stack(per_dir, 1))  # [T][D][H]
        yhs.append(stack(hs))
        ycs.append(stack(cs))
    y, yh, yc = stack(ys), stack(yhs), stack(ycs)  # [B][T][D][H], [B][D][H]
    if not a["layout"]:
        if isinstance(y, np.ndarray):
            y, yh, yc = y.transpose(1, 2, 0, 3), yh.transpose(1, 0, 2), yc.transpose(1, 0, 2)
        else:
            y, yh, yc = y.permute(1, 2, 0, 3), yh.transpose(0, 1), yc.transpose(0, 1)
    return y, yh, yc


def _act_torch(t, name: str, v, a: float, b: float):
    torch = t.torch
    if name == "Sigmoid":
        return torch.sigmoid(v)
    if name == "Tanh":
        return torch.tanh(v)
    if name == "Relu":
        return torch.relu(v)
    if name == "HardSigmoid":
        return torch.clamp(a * v + b, 0, 1)
    if name == "LeakyRelu":
        return torch.where(v >= 0, v, a * v)
    if name == "ThresholdedRelu":
        return torch.where(v > a, v, torch.zeros_like(v))
    if name == "ScaledTanh":
        return a * torch.tanh(b * v)
    if name == "Affine":
        return a * v + b
    if name == "Elu":
        return torch.where(v >= 0, v, a * torch.expm1(v))
    if name == "Softsign":
        return v / (1 + v.abs())
    return t.F.softplus(v)


def _cell(op, a, d, x, h, c, mats, act):
    """One step of direction d (numpy or torch vectors alike)."""
    w, r, bias, peep = mats
    hs, g = a["H"], w.shape[1]
    gx = w[d] @ x + bias[d, :g]
    gh = r[d] @ h + bias[d, g:]
    if op == "RNN":
        return act(0, gx + gh), c
    if op == "GRU":
        z = act(0, gx[:hs] + gh[:hs])
        rr = act(0, gx[hs : 2 * hs] + gh[hs : 2 * hs])
        if a["linear_before_reset"]:
            pre = gx[2 * hs :] + rr * gh[2 * hs :]
        else:
            pre = gx[2 * hs :] + r[d, 2 * hs :] @ (rr * h) + bias[d, g + 2 * hs :]
        return (1 - z) * act(1, pre) + z * h, c
    p = peep[d] if peep is not None else 0 * bias[d, : 3 * hs]
    i = act(0, gx[:hs] + gh[:hs] + p[:hs] * c)
    fg = (
        1 - i
        if a["input_forget"]
        else act(0, gx[2 * hs : 3 * hs] + gh[2 * hs : 3 * hs] + p[2 * hs :] * c)
    )
    cc = act(1, gx[3 * hs :] + gh[3 * hs :])
    c = fg * c + i * cc
    o = act(0, gx[hs : 2 * hs] + gh[hs : 2 * hs] + p[hs : 2 * hs] * c)
    return o * act(2, c, clip=False), c
