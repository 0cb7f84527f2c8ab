"""`faustgen experiment`: the seed's experiment on the user's model, as one command.

For every method (data-aware sparse factors, magnitude pruning, truncated SVD), whole-model
RCG and fine-tuning setting, the model is built through the same C build and its accuracy
is the C's on the user's data. Then the latency of every build (batch 1, one thread,
interleaved rounds) against onnxruntime and PyTorch running the same graph; for boards an
instruction count per inference (callgrind on the host build: an estimate, x86-64
instructions) and a cross build checked under qemu-user; energy and carbon per million
inferences after Strubell et al. 2019: time × power × PUE × grid carbon intensity.

Every point is cached in DIR/points/*.json: an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from faustgen.backend import CompiledModel, load_target
from faustgen.compiler import BuildOptions, BuildResult, build_bundle, build_graph
from faustgen.errors import FaustgenError
from faustgen.frontend import import_onnx
from faustgen.passes import optimize
from faustgen.tune.bench import interleaved, ort_runner
from faustgen.tune.finetune import TorchGraph
from faustgen.tune.reference import compare

METHODS = ("factor", "prune", "svd")
# Strubell et al. 2019 (ACL), eq. 1: the 2018 US data-centre PUE and the US average
# carbon intensity of electricity (0.954 lb CO2e / kWh = 432.7 g / kWh).
PUE = 1.58
CARBON_G_PER_KWH = 432.7
# Power of one busy core when RAPL is not readable (/sys/class/powercap absent, as in
# containers): a 2-core share of a ~200 W, 64-core server CPU package, rounded up.
HOST_CORE_WATTS = 6.0
RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


@dataclass
class Settings:
    rcgs: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)
    methods: tuple[str, ...] = METHODS
    finetune: int = 0
    targets: tuple[str, ...] = ("host",)
    pue: float = PUE
    carbon: float = CARBON_G_PER_KWH
    watts: float | None = None  # host power; None: RAPL, else HOST_CORE_WATTS
    repeat: int = 200
    progress: bool = True


@dataclass
class Point:
    method: str
    rcg: float  # the whole-model target
    finetune: int
    accuracy: float
    params: int
    achieved_rcg: float
    build: str  # bundle directory
    extra: dict = field(default_factory=dict)


def _key(method: str, rcg: float, ft: int) -> str:
    return f"{method}-rcg{rcg:g}-ft{ft}" if method != "dense" else "dense"


def _accuracy(model: CompiledModel, x: np.ndarray, y: np.ndarray) -> float:
    out = model.predict(x)
    out = out[0] if isinstance(out, list) else out
    return float(np.mean(np.argmax(out.reshape(len(y), -1), axis=1) == y))


def _point(model_path, out: Path, key: str, opts: BuildOptions, x, y, meta, boards) -> Point:
    cache = out / "points" / f"{key}.json"
    if cache.is_file():
        p = Point(**json.loads(cache.read_text()))
        if all(f"{t}_check" in p.extra for t in boards):
            return p
    res = build_bundle(model_path, out / "builds" / key, opts)
    t = res.report["totals"]
    host = CompiledModel(res.out_dir)
    p = Point(
        **meta,
        accuracy=_accuracy(host, x, y),
        params=int(t["parameters"]),
        achieved_rcg=float(t.get("rcg", 1.0)),
        build=str(res.out_dir),
    )
    for b in boards:
        p.extra[f"{b}_check"] = _cross_check(res, host, b, x[:20], out / "builds" / f"{key}-{b}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(asdict(p), indent=1))
    return p


def _instructions(build: Path, sample: np.ndarray) -> float | None:
    """Instructions per inference of the bundle's harness rebuilt with its own Makefile for
    generic x86-64 (-O3, SSE2: what valgrind runs, and 4-wide like a Pi's NEON) under
    callgrind; the difference of a 1-sample and an 11-sample run, so start-up cancels."""
    with tempfile.TemporaryDirectory(prefix="faustgen-callgrind-") as tmp:
        work = Path(tmp) / "b"
        shutil.copytree(build, work, ignore=shutil.ignore_patterns("*.so", "*.o", ".*"))
        (work / "model").unlink(missing_ok=True)
        make = subprocess.run(
            ["make", "-s", "CFLAGS=-std=c99 -O3", "model"], cwd=work, capture_output=True
        )
        if make.returncode != 0:
            return None
        counts = []
        for n in (1, 11):
            inp = work / f"in{n}.bin"
            np.repeat(sample[None], n, axis=0).astype(np.float32).tofile(inp)
            cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
            proc = subprocess.run(
                [*cmd, str(work / "model"), str(inp), str(work / "out.bin")],
                capture_output=True,
                text=True,
            )
            m = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
            if proc.returncode != 0 or m is None:
                return None
            counts.append(int(m.group(1)))
    return (counts[1] - counts[0]) / 10.0


def _host_watts(settings: Settings) -> tuple[float, str]:
    if settings.watts is not None:
        return settings.watts, "given (--watts)"
    if RAPL.is_file():
        try:
            e0, t0 = int(RAPL.read_text()), time.perf_counter()
            end = t0 + 0.5
            while time.perf_counter() < end:  # one busy core, as the timed loop is
                pass
            e1, t1 = int(RAPL.read_text()), time.perf_counter()
            if e1 > e0:
                return (e1 - e0) * 1e-6 / (t1 - t0), "RAPL package power, one core busy"
        except (OSError, ValueError):
            pass
    return HOST_CORE_WATTS, f"constant HOST_CORE_WATTS = {HOST_CORE_WATTS} W (no RAPL here)"


def energy_per_million(us: float, watts: float, pue: float, carbon: float) -> tuple[float, float]:
    """(kWh, g CO2e) for a million inferences of `us` microseconds at `watts`."""
    kwh = us * 1e-6 * 1e6 * watts / 3.6e6 * pue
    return kwh, kwh * carbon


def _fingerprint(model_path, *arrays: np.ndarray) -> str:
    h = hashlib.sha256(Path(model_path).read_bytes())
    for a in arrays:
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _forget_other_inputs(out: Path, stamp: str) -> None:
    """The cached points are only valid for the model and data that made them: another
    model or data set in the same DIR starts over instead of resuming."""
    mark = out / "inputs.sha256"
    if mark.is_file() and mark.read_text().strip() != stamp:
        for sub in ("points", "builds"):
            shutil.rmtree(out / sub, ignore_errors=True)
    mark.write_text(stamp + "\n")


def run_experiment(
    model_path: str | Path,
    x: np.ndarray,
    y: np.ndarray,
    calib: np.ndarray,
    out_dir: str | Path,
    settings: Settings,
) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _forget_other_inputs(out, _fingerprint(model_path, x, y, calib))
    bad = [m for m in settings.methods if m not in METHODS]
    if bad:
        raise FaustgenError(f"unknown method {bad[0]!r}; use {', '.join(METHODS)}")
    for t in settings.targets:
        load_target(t)  # unknown names fail before any work
    boards = [t for t in settings.targets if t != "host"]
    fts = [0] + ([settings.finetune] if settings.finetune else [])
    plan = [("dense", 1.0, 0)] + [
        (m, r, ft) for m in settings.methods for r in settings.rcgs for ft in fts
    ]
    points: list[Point] = []
    bar = tqdm(plan, desc="experiment", disable=not settings.progress, unit="build")
    for method, rcg, ft in bar:
        key = _key(method, rcg, ft)
        bar.set_postfix_str(key)
        if method == "dense":
            opts = BuildOptions(dense=True)
        else:
            opts = BuildOptions(
                dense=False,
                rcg=rcg,
                convs=True,
                calib=calib,
                finetune=ft,
                method=method,
                unstructured=method != "factor",
            )
        meta = {"method": method, "rcg": rcg, "finetune": ft}
        points.append(_point(model_path, out, key, opts, x, y, meta, boards))
    bar.close()
    _measure(model_path, points, x, out, settings)
    return _tables(points, out, settings)


def _measure(model_path, points: list[Point], x: np.ndarray, out: Path, settings: Settings):
    """Latency (host), instruction counts and cross builds (boards), cached per point."""
    x1 = x[:1]
    todo = [p for p in points if "us" not in p.extra]
    if todo:
        dense = CompiledModel(points[0].build)
        models = {p.build: CompiledModel(p.build) for p in points}
        contenders = {p.build: (lambda m=models[p.build]: m.predict(x1)) for p in points}
        contenders["onnxruntime"] = ort_runner(model_path, x1, dense.layout)
        try:
            tg = TorchGraph(optimize(import_onnx(model_path)))
            torch = tg.torch
            torch.set_num_threads(1)
            t1 = torch.from_numpy(np.ascontiguousarray(x1))

            def torch_call():
                with torch.no_grad():
                    return tg(t1)

            contenders["PyTorch"] = torch_call
        except FaustgenError:
            pass
        times = interleaved(contenders, repeat=settings.repeat, rounds=3)
        for p in points:
            p.extra["us"] = times[p.build]
            p.extra["ort_us"] = times["onnxruntime"]
            p.extra["torch_us"] = times.get("PyTorch")
    boards = [t for t in settings.targets if t != "host"]
    for p in points:
        if boards and "instructions" not in p.extra:
            p.extra["instructions"] = _instructions(Path(p.build), x1[0])
        (out / "points" / f"{_key(p.method, p.rcg, p.finetune)}.json").write_text(
            json.dumps(asdict(p), indent=1)
        )


def _cross_check(res: BuildResult, host: CompiledModel, target: str, x, out: Path) -> str:
    """The point's graph (the same factors, not a refit) cross-built for a board, run under
    qemu-user and compared with the host build."""
    t = load_target(target)
    if not t.can_run():
        return f"skipped: {t.cc} or {t.emulator[0]} not installed ({t.install_hint})"
    board = build_graph(
        res.graph, out, BuildOptions(target=target), compression=res.report.get("compression")
    )
    err = compare(CompiledModel(board.out_dir).predict(x), host.predict(x))["max_rel"]
    return f"runs under qemu, max rel. difference from the host build {err:.1e} on {len(x)} samples"


def _tables(points: list[Point], out: Path, settings: Settings) -> dict:
    watts, source = _host_watts(settings)
    dense = points[0]
    rows = []
    for p in points:
        kwh, co2 = energy_per_million(p.extra["us"], watts, settings.pue, settings.carbon)
        rows.append(
            {
                "method": p.method,
                "target RCG": p.rcg,
                "fine-tune epochs": p.finetune,
                "accuracy": p.accuracy,
                "params": p.params,
                "RCG": p.achieved_rcg,
                "C us": p.extra["us"],
                "ORT us": p.extra["ort_us"],
                "PyTorch us": p.extra.get("torch_us"),
                "speedup vs dense C": dense.extra["us"] / p.extra["us"],
                "instructions (estimate)": p.extra.get("instructions"),
                "kWh / 1M": kwh,
                "g CO2e / 1M": co2,
                **{k: v for k, v in p.extra.items() if k.endswith("_check")},
            }
        )
    result = {
        "rows": rows,
        "energy": {
            "formula": "time x power x PUE x carbon intensity (Strubell et al. 2019)",
            "watts": watts,
            "watts_source": source,
            "pue": settings.pue,
            "g_co2e_per_kwh": settings.carbon,
        },
        "instructions": "x86-64 instructions per inference (the bundle rebuilt -O3 for generic "
        "x86-64, valgrind callgrind): an estimate of the work on a board, not a board "
        "measurement",
    }
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    md = _markdown(rows, result)
    (out / "results.md").write_text(md)
    _plots(rows, out)
    return result


_COLS = (
    ("method", "{}"),
    ("target RCG", "{:g}"),
    ("fine-tune epochs", "{}"),
    ("accuracy", "{:.4f}"),
    ("params", "{}"),
    ("RCG", "{:.2f}"),
    ("C us", "{:.1f}"),
    ("ORT us", "{:.1f}"),
    ("PyTorch us", "{:.1f}"),
    ("speedup vs dense C", "{:.2f}"),
    ("instructions (estimate)", "{:.0f}"),
    ("kWh / 1M", "{:.2e}"),
    ("g CO2e / 1M", "{:.3f}"),
)


def _markdown(rows: list[dict], result: dict) -> str:
    head = "| " + " | ".join(c for c, _ in _COLS) + " |"
    lines = [head, "|" + "---|" * len(_COLS)]
    for r in rows:
        cells = [("" if r.get(c) is None else f.format(r[c])) for c, f in _COLS]
        lines.append("| " + " | ".join(cells) + " |")
    e = result["energy"]
    lines += [
        "",
        f"Energy: {e['formula']}; power {e['watts']:.3g} W ({e['watts_source']}), "
        f"PUE {e['pue']}, {e['g_co2e_per_kwh']} g CO2e/kWh. Instructions: "
        f"{result['instructions']}. Accuracy: the C build's. Latency: batch 1, one thread, "
        "median of interleaved rounds.",
    ]
    checks = sorted({k for r in rows for k in r if k.endswith("_check")})
    for k in checks:
        lines.append("")
        lines.append(f"{k[: -len('_check')]}: " + "; ".join(
            f"{r['method']} {r['target RCG']:g}: {r[k]}" for r in rows))  # fmt: skip
    return "\n".join(lines) + "\n"


def _plots(rows: list[dict], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("faustgen: plots skipped (pip install matplotlib)", file=sys.stderr)
        return
    specs = (
        ("accuracy", "accuracy of the C build", "accuracy.png"),
        ("C us", "latency (µs, batch 1, one thread)", "latency.png"),
        ("g CO2e / 1M", "g CO2e per million inferences", "energy.png"),
    )
    for col, label, name in specs:
        fig, ax = plt.subplots(figsize=(6, 4))
        for (method, ft), group in _groups(rows).items():
            xs = [r["params"] for r in group]
            ax.plot(xs, [r[col] for r in group], "o-", label=f"{method}, fine-tune {ft}")
        ax.set_xscale("log")
        ax.set_xlabel("whole-model parameters")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)


def _groups(rows: list[dict]) -> dict:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["method"], r["fine-tune epochs"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["params"]) for k, v in groups.items()}


def print_table(result: dict) -> None:
    print(_markdown(result["rows"], result), end="")
