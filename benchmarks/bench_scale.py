"""Build cost on real-size networks: faustgen vs emx-onnx-cgen, side by side.

Models: every `light_*` model of the onnx wheel (onnx/backend/test/data/light: AlexNet,
DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512; their
weights come from ConstantOfShape) and torchvision's resnet18, mobilenet_v2,
efficientnet_b0, googlenet and vgg11 (random weights, exported with torch.onnx.export).

For each model, one after the other in the same loop:
* `faustgen build MODEL --dense -o OUT` under `/usr/bin/time -v`: wall time and peak RSS
  (the largest of faustgen and the compilers it runs), the bundle's size on disk;
* `faustgen verify MODEL OUT` (4 seeded random samples against onnxruntime): its verdict
  and errors, as the CLI prints them;
* emx-onnx-cgen (if --emx points at it): `compile` plus gcc on its C at the host target's
  flags (its build), and with --emx-verify its `verify` (build, -O1 compile, run against
  onnxruntime).

Nothing here is asserted; the table goes to benchmarks/README_scale.md.

    .venv/bin/python benchmarks/bench_scale.py [--emx /work/scratch/emx/bin/emx-onnx-cgen]
        [--models vgg19,resnet18] [--repeat 1] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

LIGHT = [
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
]
TORCHVISION = ["resnet18", "mobilenet_v2", "efficientnet_b0", "googlenet", "vgg11"]
FAUSTGEN = [str(Path(sys.executable).with_name("faustgen"))]
HOST_CFLAGS = ["-std=c99", "-O3", "-march=native"]


def light_dir() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def model_path(name: str, work: Path) -> Path:
    if name in LIGHT:
        return light_dir() / f"light_{name}.onnx"
    path = work / f"{name}.onnx"
    if not path.exists():
        from faustgen import zoo

        ctor = getattr(zoo.torchvision_models(), name)
        model = ctor(weights=None, aux_logits=False) if name == "googlenet" else ctor(weights=None)
        x = np.zeros((1, 3, 224, 224), np.float32)
        zoo.export(model, x, path)
    return path


def parameters(path: Path) -> int:
    """Weights the model computes with, ConstantOfShape results included (from its dims)."""
    m = onnx.load(str(path), load_external_data=False)
    total = sum(int(np.prod(t.dims)) for t in m.graph.initializer if len(t.dims) > 1)
    shapes = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in shapes:
            dims = shapes[n.input[0]]
            if dims.size > 1:
                total += int(np.prod(dims))
    return total


def timed(cmd: list[str], cwd: Path | None = None, timeout: float = 3600) -> dict:
    """Run under /usr/bin/time -v: wall seconds, peak RSS (MB), exit code, output."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            ["/usr/bin/time", "-v", *cmd],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "wall": time.perf_counter() - t0, "rss_mb": None, "out": "timeout"}
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    cpu = sum(
        float(v) for v in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", proc.stderr)
    )
    text = proc.stdout + proc.stderr.split("\tCommand being timed")[0]
    return {
        "ok": proc.returncode == 0,
        "code": proc.returncode,
        "wall": wall,
        "cpu": cpu,  # user + system seconds of the whole process tree: steadier under load
        "rss_mb": int(rss.group(1)) / 1024 if rss else None,
        "out": text.strip(),
    }


def dir_size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def run_faustgen(path: Path, out: Path) -> dict:
    build = timed([*FAUSTGEN, "build", str(path), "--dense", "-o", str(out)])
    row = {
        "build_s": build["wall"],
        "build_cpu_s": build["cpu"],
        "build_rss_mb": build["rss_mb"],
        "build_ok": build["ok"],
    }
    if not build["ok"]:
        row["error"] = build["out"].splitlines()[-1] if build["out"] else "failed"
        return row
    row["bundle_mb"] = dir_size(out) / 1e6
    row["weights"] = json.loads((out / "report.json").read_text())["model"].get("weights")
    verify = timed([*FAUSTGEN, "verify", str(path), str(out)])
    row["verify_s"] = verify["wall"]
    row["verify_cpu_s"] = verify["cpu"]
    line = next((ln for ln in verify["out"].splitlines() if ln.startswith("verify")), "")
    row["verify"] = line or verify["out"].splitlines()[-1:]
    m = re.search(r"max abs error ([\d.e+-]+), relative ([\d.e+-]+)", line)
    if m:
        row["max_abs"], row["max_rel"] = float(m.group(1)), float(m.group(2))
    row["verify_ok"] = verify["ok"]
    return row


def run_emx(emx: str, path: Path, work: Path, verify_too: bool) -> dict:
    d = work / "emx"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    c = d / "model.c"
    gen = timed([emx, "compile", str(path), str(c)])
    row = {
        "emx_gen_s": gen["wall"],
        "emx_gen_cpu_s": gen["cpu"],
        "emx_gen_rss_mb": gen["rss_mb"],
        "emx_ok": gen["ok"],
    }
    if not gen["ok"]:
        row["emx_error"] = gen["out"].splitlines()[-1] if gen["out"] else "failed"
        return row
    cc = timed(["gcc", *HOST_CFLAGS, "-c", str(c), "-o", str(d / "model.o")], cwd=d)
    row["emx_cc_s"] = cc["wall"]
    row["emx_cc_rss_mb"] = cc["rss_mb"]
    row["emx_build_s"] = gen["wall"] + cc["wall"]
    row["emx_build_cpu_s"] = gen["cpu"] + cc["cpu"]
    row["emx_bundle_mb"] = dir_size(d) / 1e6
    if not verify_too:
        shutil.rmtree(d, ignore_errors=True)
        return row
    verify = timed([emx, "verify", str(path), "--temp-dir-root", str(d)])
    row["emx_verify_s"] = verify["wall"]
    row["emx_verify_cpu_s"] = verify["cpu"]
    row["emx_verify_ok"] = verify["ok"]
    row["emx_verify"] = verify["out"][-400:]
    shutil.rmtree(d, ignore_errors=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated subset of: " + ",".join(LIGHT + TORCHVISION))
    ap.add_argument("--emx", help="emx-onnx-cgen executable (a scratch venv; never a dependency)")
    ap.add_argument(
        "--emx-verify", action="store_true", help="also time emx-onnx-cgen verify (slow)"
    )
    ap.add_argument("--repeat", type=int, default=1, help="rounds (medians are reported)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--workdir", help="where exports and bundles go (default: a temp dir)")
    args = ap.parse_args()
    names = args.models.split(",") if args.models else LIGHT + TORCHVISION
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        path = model_path(name, work)
        runs = []
        for _ in range(args.repeat):
            out = work / f"out_{name}"
            row = run_faustgen(path, out)
            shutil.rmtree(out, ignore_errors=True)
            if args.emx:
                row.update(run_emx(args.emx, path, work, args.emx_verify))
            runs.append(row)
        row = dict(runs[-1])
        for key in [k for k in runs[0] if k.endswith(("_s", "_mb"))]:
            vals = [r[key] for r in runs if r.get(key) is not None]
            if vals:
                row[key] = statistics.median(vals)
        row["model"] = name
        row["parameters"] = parameters(path)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print()
    print(table(rows))


def _f(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def table(rows: list[dict]) -> str:
    """Wall / CPU seconds (CPU = user + system of the whole process tree)."""
    lines = [
        "| model | params | faustgen build s (wall / CPU) | peak RSS MB | bundle MB "
        "| faustgen verify vs onnxruntime | emx build s (gen + gcc; wall / CPU) | emx peak RSS MB "
        "| build+verify s: faustgen / emx |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = (
            f"{'OK' if r.get('verify_ok') else 'FAILED'} (max abs {r['max_abs']:.2g}, "
            f"rel {r['max_rel']:.2g})"
            if "max_abs" in r
            else r.get("error", "-")
        )
        emx_rss = max(r.get("emx_gen_rss_mb") or 0, r.get("emx_cc_rss_mb") or 0) or None
        fv = r["build_s"] + r["verify_s"] if r.get("verify_s") is not None else None
        emx_v = _f(r.get("emx_verify_s"))
        if r.get("emx_verify_s") is not None and not r.get("emx_verify_ok"):
            emx_v += " (failed)"
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e6:.1f} M "
            f"| {_f(r.get('build_s'))} / {_f(r.get('build_cpu_s'))} "
            f"| {_f(r.get('build_rss_mb'), '{:.0f}')} | {_f(r.get('bundle_mb'))} | {verdict} "
            f"| {_f(r.get('emx_build_s'))} / {_f(r.get('emx_build_cpu_s'))} "
            f"| {_f(emx_rss, '{:.0f}')} | {_f(fv)} / {emx_v} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
