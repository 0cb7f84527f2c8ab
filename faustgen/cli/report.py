"""`faustgen report OUT`: the build's per-layer table, from OUT/report.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faustgen.errors import FaustgenError


def load_report(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / "report.json"
    if not path.is_file():
        raise FaustgenError(f"{out_dir}: not a faustgen build (no report.json)")
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise FaustgenError(f"{path}: unreadable build report") from None


def _shape(s) -> str:
    return "x".join(map(str, s))


def _factors_text(fact: dict) -> str:
    groups = fact.get("factors", [])
    if not groups:
        return ""
    if "gates" in fact:  # a recurrent layer: one chain per gate matrix, each named
        return "; ".join(
            f"{name} " + " · ".join(f"{_shape(f['shape'])}:{f['nnz']}:{f['storage']}" for f in fs)
            for name, fs in zip(fact["gates"], groups, strict=True)
        )
    first = groups[0]
    text = " · ".join(f"{_shape(f['shape'])}:{f['nnz']}:{f['storage']}" for f in first)
    return text + (f" (x{len(groups)} groups)" if len(groups) > 1 else "")


_STORAGE_NAMES = {"bsr16": "16x1 blocks", "bsr8": "8x1 blocks", "csr": "CSR", "dense": "dense"}


def _storages(layers: list[dict[str, Any]]) -> str:
    """How the factors are stored, as the layers say (a split may mix 16x1, 8x1 and CSR)."""
    seen: dict[str, None] = {}
    for layer in layers:
        for chain in (layer.get("factorization") or {}).get("factors", []):
            for f in chain:
                seen[_STORAGE_NAMES.get(f["storage"], f["storage"])] = None
    return ", factors as " + " / ".join(seen) if seen else ""


def format_report(r: dict[str, Any]) -> str:
    m, t = r["model"], r["totals"]
    comp = r.get("compression") or {}
    calib = comp.get("calibration_after_finetune") or comp.get("calibration") or {}
    layer_err = calib.get("layer_output_error", {})
    lines = [
        f"model {m['source']} ({m['producer']}, opset {m['opset']}), target {m['target']}, "
        f"prefix {m['prefix']}",
        f"input {_shape(m['input_shape'])}, outputs "
        + ", ".join(_shape(s) for s in m["output_shapes"])
        + (", batch axis symbolic" if m["batch_symbolic"] else ""),
    ]
    if comp:
        lines.append(
            f"factorization policy: {comp['policy']}"
            + _storages(r["layers"])
            + ("" if comp.get("convs") else ", convolutions dense")
        )
    head = (
        f"{'layer':28} {'op':16} {'weight':>12} {'dense':>8} {'stored':>8} {'RCG':>6} "
        f"{'w.err':>6} {'out.err':>7} {'MACs dense→fact':>18}  factors / note"
    )
    lines += ["", head, "-" * len(head)]
    for layer in r["layers"]:
        f = layer.get("factorization")
        if f is None:
            if layer["parameters"]:
                lines.append(
                    f"{layer['name'][:28]:28} {layer['op'][:16]:16} {'':>12} "
                    f"{layer['parameters']:8d}"
                )
            continue
        shape = _shape(f["shape"])
        if f["factorized"]:
            macs = f"{f['dense_macs']}→{f['factorized_macs']}"
            err = layer_err.get(layer["name"])
            lines.append(
                f"{layer['name'][:28]:28} {layer['op'][:16]:16} {shape:>12} "
                f"{f['dense_parameters']:8d} {f['stored']:8d} {f['rcg']:6.2f} "
                f"{f['weight_error']:6.3f} {'' if err is None else f'{err:.3f}':>7} "
                f"{macs:>18}  {_factors_text(f)}"
            )
        else:
            dense = 1
            for d in f["shape"]:
                dense *= d
            lines.append(
                f"{layer['name'][:28]:28} {layer['op'][:16]:16} {shape:>12} "
                f"{dense:8d} {dense:8d} {1.0:6.2f} {'':>6} {'':>7} {'':>18}  "
                f"{f['reason']}"
            )
    lines += [
        "",
        f"parameters {t['parameters']} (dense {t['dense_parameters']}, RCG {t['rcg']:.2f}), "
        f"constants {t['weight_bytes']} bytes, activation arena {t['arena_bytes']} bytes",
    ]
    if r.get("target_sizes"):
        s = r["target_sizes"]
        lines.append("harness sections: " + ", ".join(f"{k} {v}" for k, v in s.items()))
    if "calibration" in comp:
        c = comp["calibration"]
        text = f"calibration on {c['samples']} samples: output error {c['output_error']:.4g}"
        if "calibration_after_finetune" in comp:
            after = comp["calibration_after_finetune"]["output_error"]
            text += f", after {comp['finetune']['epochs']} epochs of fine-tuning {after:.4g}"
        lines.append(text)
    lines.append(
        "w.err: ||W - S_0...S_J||_F / ||W||_F; out.err: the layer's output error on the "
        "calibration inputs (fed the dense model's activations)"
    )
    return "\n".join(lines)


def plot_report(r: dict[str, Any], path: str | Path) -> None:
    """Weight error against RCG, one point per factorized layer."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FaustgenError("--plot needs matplotlib: pip install matplotlib") from None
    pts = [
        (lay["name"], lay["factorization"])
        for lay in r["layers"]
        if lay.get("factorization", {}).get("factorized")
    ]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, f in pts:
        ax.scatter(f["rcg"], f["weight_error"])
        ax.annotate(name[-20:], (f["rcg"], f["weight_error"]), fontsize=7)
    ax.set_xlabel("RCG (dense parameters / stored factor entries)")
    ax.set_ylabel("relative weight error")
    ax.set_title(f"{r['model']['source']}: error vs RCG per layer")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
