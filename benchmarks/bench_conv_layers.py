"""Per-layer convolution times of a CNN: fg_conv / fg_conv_depthwise against onnxruntime.

Every Conv node of the model (torchvision resnet18, mobilenet_v2, efficientnet_b0,
squeezenet1_1 at 1x3x224x224, random weights) is timed alone: the runtime kernels are
compiled with the target's flags (default: host, -O3 -march=native) into a small C harness
that calls the kernel with the layer's shape, ReLU fused, and reports the median CPU time
(CLOCK_THREAD_CPUTIME_ID: on a shared machine, the time other processes take is left out)
and the algorithm fg_conv chose (fg_conv_algorithm). onnxruntime (one thread) runs the
same layer as a one-node model, timed with time.thread_time around session.run. Identical
shapes are timed once. The share column is the layer's share of the model's total time in
fg_conv (all layers, repeats counted).

    .venv/bin/python benchmarks/bench_conv_layers.py [--models resnet18,mobilenet_v2]
        [--target host] [--repeat 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from faustgen import zoo
from faustgen.backend.toolchain import load_target

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"
MODELS = ["resnet18", "mobilenet_v2", "efficientnet_b0", "squeezenet1_1"]

# One layer's shape from a line of stdin, its buffers (random data, rand()'s sequence) and
# one kernel call, ReLU fused: shared by this harness and bench_qemu_count.py's.
LAYER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include "fg_runtime.h"
typedef struct {
    fg_conv_shape s;
    int dw;
    float *x, *y, *w, *b, *scr;
} fg_layer;
/* per line: C H W K OH OW kh kw sh sw ph pw dh dw group; 0 at the end of input */
static int layer_read(fg_layer *L)
{
    fg_conv_shape *s = &L->s;
    size_t R, nx, ny, nw, ns, i;
    if (scanf("%d %d %d %d %d %d %d %d %d %d %d %d %d %d %d", &s->C, &s->H, &s->W, &s->K,
              &s->OH, &s->OW, &s->kh, &s->kw, &s->sh, &s->sw, &s->ph, &s->pw, &s->dh, &s->dw,
              &s->group) != 15)
        return 0;
    s->D = s->OD = s->kd = s->sd = s->dd = 1;
    s->pd = 0;
    L->dw = s->group == s->C && s->group > 1;
    R = (size_t)(s->C / s->group) * s->kh * s->kw;
    nx = (size_t)s->C * s->H * s->W, ny = (size_t)s->K * s->OH * s->OW;
    nw = ((size_t)s->K + 4) * R, ns = L->dw ? 1 : fg_conv_scratch(s);
    L->x = malloc(nx * 4), L->y = malloc(ny * 4), L->w = malloc(nw * 4);
    L->b = malloc((size_t)s->K * 4), L->scr = malloc(ns * 4);
    for (i = 0; i < nx; ++i)
        L->x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (i = 0; i < nw; ++i)
        L->w[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (i = 0; i < (size_t)s->K; ++i)
        L->b[i] = 0.01f;
    return 1;
}
static void layer_run(fg_layer *L)
{
    if (L->dw)
        fg_conv_depthwise(&L->s, L->x, L->y, L->w, L->b, FG_ACT_RELU, 0.0f, 0.0f);
    else
        fg_conv(&L->s, L->x, L->y, L->w, L->b, FG_ACT_RELU, 0.0f, 0.0f, L->scr);
}
static void layer_free(fg_layer *L)
{
    free(L->x), free(L->y), free(L->w), free(L->b), free(L->scr);
}
"""

HARNESS = (
    r"""
#define _POSIX_C_SOURCE 199309L
#include <time.h>
"""
    + LAYER_C
    + r"""
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
int main(int argc, char **argv)
{
    const int repeat = argc > 1 ? atoi(argv[1]) : 30;
    fg_layer L = {0};
    while (layer_read(&L)) {
        double *t = malloc((size_t)repeat * sizeof *t);
        int r;
        for (r = -2; r < repeat; ++r) {
            const double t0 = now();
            layer_run(&L);
            if (r >= 0)
                t[r] = now() - t0;
        }
        qsort(t, (size_t)repeat, sizeof *t, cmp);
        printf("%.9f|%s\n", t[repeat / 2], fg_conv_algorithm(&L.s, L.dw));
        fflush(stdout);
        layer_free(&L);
        free(t);
    }
    return 0;
}
"""
)


def cnn_onnx(name: str, tmp: Path) -> tuple[Path, np.ndarray]:
    """torchvision `name` (random weights, BatchNorm statistics randomized) exported for
    1x3x224x224, and an input."""
    model = getattr(zoo.torchvision_models(), name)()
    zoo.randomize_batchnorm(model)
    model.eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    return zoo.export(model, x, tmp / f"{name}.onnx"), x


def conv_layers(onnx_path: Path) -> list[dict]:
    """Conv nodes of the model with their shapes (after ONNX shape inference)."""
    import onnx

    m = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*m.graph.input, *m.graph.value_info, *m.graph.output]
    }
    shapes |= {t.name: list(t.dims) for t in m.graph.initializer}
    layers = []
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        _, c, h, w = shapes[n.input[0]]
        k, _, kh, kw = shapes[n.input[1]]
        _, _, oh, ow = shapes[n.output[0]]
        sh, sw = a.get("strides", [1, 1])
        ph, pw = a.get("pads", [0, 0, 0, 0])[:2]
        dh, dw = a.get("dilations", [1, 1])
        g = a.get("group", 1)
        layers.append(dict(C=c, H=h, W=w, K=k, OH=oh, OW=ow, kh=kh, kw=kw, sh=sh, sw=sw,
                           ph=ph, pw=pw, dh=dh, dw=dw, group=g))  # fmt: skip
    return layers


def key(L: dict) -> tuple:
    return tuple(L.values())


def flops(L: dict) -> float:
    return 2.0 * L["K"] * L["OH"] * L["OW"] * (L["C"] // L["group"]) * L["kh"] * L["kw"]


def time_c(layers: list[dict], target: str, repeat: int, tmp: Path) -> list[tuple[float, str]]:
    t = load_target(target)
    src = tmp / "harness.c"
    src.write_text(HARNESS)
    exe = tmp / "harness"
    sources = [str(p) for p in sorted(RUNTIME.glob("fg_*.c"))]
    subprocess.run(
        [t.cc, *t.cflags, f"-I{RUNTIME}", str(src), *sources, "-lm", "-o", str(exe)], check=True
    )
    lines = "\n".join(" ".join(str(v) for v in L.values()) for L in layers)
    out = subprocess.run(
        [*t.emulator, str(exe), str(repeat)], input=lines, capture_output=True, text=True
    )
    out.check_returncode()
    return [(float(a), b) for a, b in (ln.split("|", 1) for ln in out.stdout.splitlines())]


def time_ort(L: dict, repeat: int, tmp: Path) -> float:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from faustgen.tune.reference import ort_session

    rng = np.random.default_rng(0)
    w = rng.standard_normal((L["K"], L["C"] // L["group"], L["kh"], L["kw"])).astype(np.float32)
    node = helper.make_node(
        "Conv", ["x", "w", "b"], ["y"], strides=[L["sh"], L["sw"]], group=L["group"],
        pads=[L["ph"], L["pw"], *_trailing(L)], dilations=[L["dh"], L["dw"]],
    )  # fmt: skip
    relu = helper.make_node("Relu", ["y"], ["z"])
    g = helper.make_graph(
        [node, relu],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, L["C"], L["H"], L["W"]])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(L["K"], "f"), "b")],
    )
    path = tmp / "layer.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    sess = ort_session(path, threads=1)
    x = rng.standard_normal((1, L["C"], L["H"], L["W"])).astype(np.float32)
    ts = []
    for r in range(repeat + 2):
        t0 = time.thread_time()
        sess.run(None, {"x": x})
        if r >= 2:
            ts.append(time.thread_time() - t0)
    return float(np.median(ts))


def _trailing(L: dict) -> list[int]:
    """Trailing pads that give ONNX's output size OH x OW."""
    eh = (L["OH"] - 1) * L["sh"] + (L["kh"] - 1) * L["dh"] + 1 - L["H"] - L["ph"]
    ew = (L["OW"] - 1) * L["sw"] + (L["kw"] - 1) * L["dw"] + 1 - L["W"] - L["pw"]
    return [max(eh, 0), max(ew, 0)]


def bench(models: list[str], target: str, repeat: int, ort: bool) -> dict:
    result = {}
    with tempfile.TemporaryDirectory(prefix="faustgen-layers-") as t:
        tmp = Path(t)
        for name in models:
            layers = conv_layers(cnn_onnx(name, tmp)[0])
            count = Counter(key(L) for L in layers)
            unique = list({key(L): L for L in layers}.values())
            times = time_c(unique, target, repeat, tmp)
            total = sum(count[key(L)] * s for L, (s, _) in zip(unique, times, strict=True))
            rows = []
            for L, (s, algo) in zip(unique, times, strict=True):
                rows.append(
                    {
                        **L,
                        "count": count[key(L)],
                        "algorithm": algo,
                        "ms": s * 1e3,
                        "gflops": flops(L) / s / 1e9,
                        "share": count[key(L)] * s / total,
                        "ort_ms": time_ort(L, repeat, tmp) * 1e3 if ort else None,
                    }
                )
            result[name] = {"total_ms": total * 1e3, "layers": rows}
    return result


def describe(r: dict) -> str:
    conv = "dw" if r["group"] == r["C"] and r["group"] > 1 else f"g{r['group']}"
    if conv == "g1":
        conv = ""
    return (
        f"{r['C']}x{r['H']}x{r['W']} -> {r['K']}x{r['OH']}x{r['OW']}, "
        f"{r['kh']}x{r['kw']}/{r['sh']} {conv}".rstrip()
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--target", default="host")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    ort = not a.no_ort and load_target(a.target).native
    res = bench(a.models.split(","), a.target, a.repeat, ort)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    for name, m in res.items():
        ort_total = sum(r["count"] * r["ort_ms"] for r in m["layers"]) if ort else None
        head = f"\n{name}: convolutions {m['total_ms']:.2f} ms in fg_conv ({a.target})"
        print(head + (f", {ort_total:.2f} ms in onnxruntime" if ort else ""))
        print(
            f"| layer | × | algorithm | ms | GFLOP/s | share |{' onnxruntime ms |' if ort else ''}"
        )
        print(f"|---|---|---|---|---|---|{'---|' if ort else ''}")
        for r in m["layers"]:
            o = f" {r['ort_ms']:.3f} |" if ort else ""
            print(
                f"| {describe(r)} | {r['count']} | {r['algorithm']} | {r['ms']:.3f} | "
                f"{r['gflops']:.1f} | {100 * r['share']:.1f} % |{o}"
            )


if __name__ == "__main__":
    main()
