"""The driver: ONNX file -> C bundle, the pipeline read top to bottom.

    frontend   import_onnx          ONNX -> typed IR (shapes, constants, opset differences)
    passes     optimize             fold, canonicalize, fuse (and factorize, when asked)
    tune       dataaware            with calibration inputs: layers fitted to their outputs
               calibrate/finetune   output errors on calibration inputs; factor fine-tuning
    codegen    lower_graph, plan_memory, render     IR -> kernel calls -> arena -> C text
    backend    write_bundle         the directory, written atomically, compiled for the target

The CLI and `faustgen.compile_onnx` parse their options and call `build_bundle`.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from faustgen.backend import CompiledModel, Target, check_out_dir, load_target, write_bundle
from faustgen.codegen.emit import lower_graph
from faustgen.codegen.memory import plan_memory
from faustgen.codegen.render import RUNTIME_HEADERS, RUNTIME_SOURCES, Rendered, render
from faustgen.codegen.stream import lower_step
from faustgen.errors import FaustgenError
from faustgen.frontend import import_onnx
from faustgen.frontend.stream import import_step
from faustgen.ir import BatchLayout, Graph
from faustgen.ops import REGISTRY
from faustgen.passes import FactorizePolicy, factorize_weights, optimize
from faustgen.passes.costmodel import CostModel
from faustgen.passes.stream import prepare_step
from faustgen.progress import Progress
from faustgen.tune.calibrate import calibration_report, spread
from faustgen.tune.dataaware import DataPlan, factorize_with_data
from faustgen.tune.finetune import finetune
from faustgen.version import __version__

_PREFIX_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")


@dataclass
class BuildOptions:
    """One build's options, with the defaults of `faustgen build` (the CLI takes its defaults
    from here, and the factorization's from FactorizePolicy)."""

    target: str = "host"
    prefix: str = "model"
    dense: bool = False  # True: no factorization, a plain ONNX -> C build
    input_shape: tuple[int, ...] | None = None
    command: str = "faustgen build"
    compile: bool = True
    extra_cflags: tuple[str, ...] = ()
    # factorization (ignored with dense=True)
    rcg: float | None = None  # None with max_error None: FactorizePolicy's default RCG
    max_error: float | None = None
    factors: int | None = None
    keep_dense: tuple[str, ...] = ()
    convs: bool | None = None  # None: only when rcg / max_error is given explicitly
    unstructured: bool = False  # unstructured sparse factors instead of 16x1 blocks
    min_size: int | None = None  # None: FactorizePolicy's, or DataPlan's with --calib
    calib: np.ndarray | None = None  # calibration inputs, first axis = samples
    labels: np.ndarray | None = None  # their labels (accuracy-driven split, task loss)
    max_accuracy_drop: float | None = None  # points, with labels: the data-aware split
    method: str = "factor"  # data-aware builds: sparse factors, or the baselines prune / svd
    finetune: int = 0  # epochs of factor fine-tuning on the calibration inputs
    seed: int = 0
    progress: bool = False
    max_params: int | None = None  # refuse models above this many constants (None: memory only)
    weights: str = "auto"  # auto, c, blob, file (faustgen/codegen/weights.py)
    jobs: int | None = None  # factorization processes (None: one per core)
    ray: str | None = None  # a Ray cluster address for the factorization jobs instead
    cache: bool = True  # reuse factorized layers cached under $FAUSTGEN_CACHE
    stream: bool = False  # also PREFIX_step / PREFIX_reset (recurrent models)

    def check(self) -> None:
        """Bad values fail here, whichever way the options came (CLI or Python)."""
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise FaustgenError(
                f"--name '{self.prefix}' is not a valid C identifier prefix "
                "(a letter, then up to 31 letters, digits or underscores)"
            )
        for flag in ("rcg", "max_error", "max_accuracy_drop", "factors", "jobs", "max_params"):
            value = getattr(self, flag)
            if value is not None and value <= 0:
                raise FaustgenError(f"--{flag.replace('_', '-')} must be positive")
        if self.min_size is not None and self.min_size < 0:
            raise FaustgenError("--min-size must not be negative")
        if self.finetune < 0:
            raise FaustgenError("--finetune must not be negative")
        if self.rcg is not None and self.rcg < 1:
            raise FaustgenError("--rcg must be at least 1")
        if self.rcg is not None and self.max_error is not None:
            raise FaustgenError("give --rcg or --max-error, not both")
        if self.dense:
            given = [f"--{k.replace('_', '-')}" for k in _FACTOR_FLAGS if _given(getattr(self, k))]
            given += ["--convs/--no-convs"] if self.convs is not None else []
            given += ["--min-size"] if self.min_size is not None else []
            if given:
                raise FaustgenError(f"--dense builds without factorization: drop {' '.join(given)}")
            return
        if self.finetune > 0 and self.calib is None:
            raise FaustgenError("--finetune needs calibration inputs (--calib X.npy)")
        if self.max_accuracy_drop is not None and self.labels is None:
            raise FaustgenError("--max-accuracy-drop needs --labels y.npy (and --calib X.npy)")
        if self.labels is not None and self.calib is None:
            raise FaustgenError("--labels needs the inputs they label (--calib X.npy)")
        if self.method not in ("factor", "prune", "svd"):
            raise FaustgenError(f"unknown method {self.method!r}: factor, prune or svd")
        if self.method != "factor" and self.calib is None:
            raise FaustgenError(f"the {self.method} baseline is fitted with calibration inputs")


# Options that only mean something for a factorized build (--dense refuses them).
_FACTOR_FLAGS = (
    "rcg", "max_error", "max_accuracy_drop", "factors", "keep_dense", "unstructured",
    "calib", "labels", "finetune",
)  # fmt: skip


def _given(value) -> bool:
    return value is not None if isinstance(value, np.ndarray) else bool(value)


@dataclass
class BuildResult:
    out_dir: Path
    report: dict[str, Any]
    graph: Graph
    messages: list[str] = field(default_factory=list)


def build_bundle(
    model_path: str | os.PathLike, out_dir: str | os.PathLike, options: BuildOptions | None = None
) -> BuildResult:
    opts = options or BuildOptions()
    opts.check()
    target = load_target(opts.target)
    out = Path(out_dir)
    check_out_dir(out)
    with Progress() if opts.progress else contextlib.nullcontext() as progress:
        return _build(model_path, out, opts, target, progress)


def build_graph(
    graph: Graph,
    out_dir: str | os.PathLike,
    options: BuildOptions | None = None,
    compression: dict[str, Any] | None = None,
) -> BuildResult:
    """The bundle of an already imported (and factorized) graph, e.g. a host build's
    `BuildResult.graph` cross-compiled for a board: the same factors, not a second fit."""
    opts = options or BuildOptions()
    if opts.stream:
        raise FaustgenError("a streaming build starts from the model file: use build_bundle")
    target = load_target(opts.target)
    out = Path(out_dir)
    check_out_dir(out)
    with Progress() if opts.progress else contextlib.nullcontext() as progress:
        return _emit(graph, compression, None, out, opts, target, progress)


def _build(
    model_path: str | os.PathLike,
    out: Path,
    opts: BuildOptions,
    target: Target,
    progress: Progress | None,
) -> BuildResult:
    with _naming(model_path):
        imported = import_onnx(model_path, opts.input_shape, max_params=opts.max_params)
        graph = optimize(imported)
        compression = None
        if not opts.dense:
            graph, compression = _factorized(graph, opts, target, progress)
        step = None
        if opts.stream:
            step = prepare_step(optimize(import_step(model_path, graph, opts.max_params)), graph)
    return _emit(graph, compression, step, out, opts, target, progress, source=model_path)


@contextlib.contextmanager
def _naming(source: str | os.PathLike | None):
    """Every error of the model's translation names the file it came from."""
    try:
        yield
    except FaustgenError as e:
        if source is None or str(e).startswith(f"{source}:"):
            raise
        raise FaustgenError(f"{source}: {e}") from e


def _emit(
    graph: Graph,
    compression: dict[str, Any] | None,
    step_of: tuple[Graph, Any] | None,
    out: Path,
    opts: BuildOptions,
    target: Target,
    progress: Progress | None,
    source: str | os.PathLike | None = None,
) -> BuildResult:
    """Lower, plan, render and write the bundle of a finished graph."""
    with _naming(source):
        program = lower_graph(graph, opts.prefix, REGISTRY)
        plan = plan_memory(program)
        step = None
        if step_of is not None:
            step = lower_step(step_of[0], opts.prefix, REGISTRY, program, step_of[1])
    rendered = render(
        program,
        plan,
        command=opts.command,
        target=target.name,
        cc=target.device_cc,
        cflags=" ".join(target.cflags),
        ldflags=" ".join(target.ldflags),
        weights=opts.weights,
        step=step,
    )
    report = build_report(graph, opts, target, rendered)
    if step is not None:
        sg = step.program.graph
        report["model"]["stream"] = {
            "input_shape": list(sg.tensors[sg.inputs[0]].shape),
            "output_shape": list(sg.tensors[sg.outputs[0]].shape),
            "state_floats": step.state_floats,
        }
    if compression is not None:
        report["compression"] = compression
    messages: list[str] = list((compression or {}).get("warnings", []))
    messages += write_bundle(
        out,
        rendered.files,
        (*RUNTIME_HEADERS, *RUNTIME_SOURCES),
        report,
        target,
        prefix=opts.prefix,
        compile=opts.compile,
        extra_cflags=opts.extra_cflags,
        progress=progress,
        binaries={rendered.blob_file: rendered.blob.write} if rendered.blob else None,
        asm=rendered.asm_file,
    )
    return BuildResult(out, report, graph, messages)


def compile_onnx(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    target: str = BuildOptions.target,
    dense: bool = BuildOptions.dense,
    name: str = BuildOptions.prefix,
    **options,
) -> CompiledModel:
    """Build `path` into `out_dir` and return a CompiledModel whose .predict(x) runs the C.

    The defaults are `faustgen build`'s: fully connected layers factorized (dense=True for a
    plain build). Extra keyword options are those of BuildOptions (rcg, input_shape, ...).
    """
    command = (
        f"faustgen.compile_onnx({os.path.basename(os.fspath(path))!r}, target={target!r}, "
        f"dense={dense!r}, name={name!r})"
    )
    opts = BuildOptions(target=target, dense=dense, prefix=name, command=command, **options)
    result = build_bundle(path, out_dir, opts)
    return CompiledModel(result.out_dir)


def _factorized(
    dense: Graph, opts: BuildOptions, target: Target, progress: Progress | None
) -> tuple[Graph, dict[str, Any]]:
    """The optimized graph factorized, fine-tuned and calibrated as the options ask."""
    explicit = opts.rcg is not None or opts.max_error is not None
    policy = FactorizePolicy.default(
        rcg=opts.rcg,
        max_error=opts.max_error,
        factors=opts.factors,
        keep_dense=tuple(opts.keep_dense),
        min_size=FactorizePolicy.min_size if opts.min_size is None else opts.min_size,
        convs=explicit if opts.convs is None else opts.convs,
        block=None if opts.unstructured else 16,
        seed=opts.seed,
        cost=CostModel.from_target(dict(target.cost)),
        progress=progress,
        jobs=opts.jobs,
        ray=opts.ray,
        cache=opts.cache,
    )
    split = None
    if opts.calib is not None and len(dense.inputs) != 1:
        raise FaustgenError(
            f"--calib takes the inputs of a one-input model; this one has {len(dense.inputs)}"
        )
    if opts.calib is not None:
        graph, split = _data_aware(dense, policy, opts)
    else:
        graph = factorize_weights(dense, policy)
    warnings = [
        f"warning: layer '{n.name}' {n.attrs['factorization']['reason']}"
        for n in graph.nodes
        if n.attrs.get("factorization", {}).get("fault")
    ]
    info: dict[str, Any] = {
        "policy": policy.describe(),
        "block": policy.block,
        "convs": policy.convs,
        "warnings": warnings,
    }
    if split is not None:
        info["policy"] = split.pop("policy")
        info["data_aware"] = split
        warnings += [
            f"note: recurrent layer '{name}' factorized data-free ({how}): the data-aware "
            "fit covers Dense and Conv layers, not gate matrices fed back their own state"
            for name, how in split.get("data_free", {}).items()
        ]
    if opts.calib is not None:
        xs = _calib_samples(opts.calib, dense)
        info["calibration"] = calibration_report(dense, graph, xs)
        if opts.finetune > 0:
            info["finetune"] = finetune(
                dense,
                graph,
                xs,
                opts.finetune,
                seed=opts.seed,
                progress=opts.progress,
                labels=None if opts.labels is None else np.asarray(opts.labels).reshape(-1),
            )
            info["calibration_after_finetune"] = calibration_report(dense, graph, xs)
    return graph, info


def _data_aware(dense: Graph, policy, opts: BuildOptions) -> tuple[Graph, dict[str, Any]]:
    """Each layer fitted to its calibration activations, under a whole-model budget
    (`--rcg`), a per-layer output error (`--max-error`) or an accuracy drop."""
    xs = _calib_samples(opts.calib, dense)
    labels = None
    if opts.labels is not None:
        labels = np.asarray(opts.labels).reshape(-1)
        if len(labels) != len(xs) or not np.issubdtype(labels.dtype, np.integer):
            raise FaustgenError(
                f"--labels must hold one integer class per calibration input "
                f"({len(xs)}), got shape {np.shape(opts.labels)} {labels.dtype}"
            )
    pick = spread(len(xs))
    plan = DataPlan(
        rcg=policy.rcg if opts.max_error is None and opts.max_accuracy_drop is None else None,
        max_error=opts.max_error,
        max_drop=opts.max_accuracy_drop,
        # Labels drive the split only for an accuracy target: on a few hundred inputs the
        # accuracy moves in coarse steps, the output error is a smoother sensitivity.
        labels=None if labels is None or opts.max_accuracy_drop is None else labels[pick],
        min_size=DataPlan.min_size if opts.min_size is None else opts.min_size,
        progress=policy.progress,
        method=opts.method,
    )
    # One BLAS thread, as for the data-free jobs: a threaded BLAS splits its sums by the core
    # count (so the factors would depend on the machine), and on a busy machine its spinning
    # threads made this fit 3-6x slower (an MLP at RCG 8: 48 s wall with one, 285 s with two).
    with threadpool_limits(limits=1):
        graph, split = factorize_with_data(dense, policy, xs[pick], plan)
    if plan.rcg is not None:
        split["policy"] = f"whole-model RCG {plan.rcg:g}, data-aware"
    elif plan.max_error is not None:
        split["policy"] = f"output error <= {plan.max_error:g} per layer, data-aware"
    else:
        split["policy"] = f"accuracy drop <= {plan.max_drop:g} points, data-aware"
    if opts.method != "factor":
        split["policy"] += f", {opts.method} baseline"
    return graph, split


def _calib_samples(x: np.ndarray, graph: Graph) -> np.ndarray:
    """The calibration inputs as samples along axis 0 (one call's input is one sample)."""
    layout = BatchLayout.of(graph)
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise FaustgenError(f"calibration inputs have dtype {x.dtype}; expected float32")
    calls = layout.calls(x.shape)
    if calls is None:
        raise FaustgenError(
            f"calibration inputs have shape {x.shape}; expected {layout.expected()}"
        )
    return x[None] if tuple(x.shape) == layout.per_call and not layout.batched else x


def build_report(
    graph: Graph, opts: BuildOptions, target: Target, rendered: Rendered
) -> dict[str, Any]:
    """report.json: the model, totals and one entry per layer (target_sizes is filled in by
    the backend once the bundle is compiled)."""
    inp = graph.inputs[0]
    layers = []
    params = dense_params = 0
    for node in graph.nodes:
        own = sum(graph.tensors[i].size for i in node.inputs if i and graph.is_const(i))
        own += REGISTRY[node.op].attr_weights(node)
        layer: dict[str, Any] = {
            "name": node.name,
            "op": node.op,
            "fused": list(node.attrs.get("fused", [])),
            "output_shape": list(graph.tensors[next(o for o in node.outputs if o)].shape),
            "parameters": own,
        }
        fact = node.attrs.get("factorization")
        if fact is not None:
            layer["factorization"] = fact
            if fact["factorized"]:
                layer["parameters"] = own + fact["stored"]
                dense_params += fact["dense_parameters"] - fact["stored"]
        params += layer["parameters"]
        layers.append(layer)
    dense_params += params
    return {
        "faustgen_version": __version__,
        "command": opts.command,
        "model": {
            "source": Path(graph.meta.get("source", "")).name,
            "producer": graph.meta.get("producer", ""),
            "opset": graph.meta.get("opset"),
            "prefix": opts.prefix,
            "target": target.name,
            "input_shape": list(graph.tensors[inp].shape),
            "output_shapes": [list(graph.tensors[o].shape) for o in graph.outputs],
            "inputs": [_io_entry(graph, name) for name in graph.inputs],
            "outputs": [_io_entry(graph, name) for name in graph.outputs],
            "batch_symbolic": graph.batch_symbolic,
            "weights": rendered.weights_mode,
            "weights_file": rendered.blob_file,
        },
        "totals": {
            "parameters": params,
            "dense_parameters": dense_params,
            "rcg": dense_params / max(params, 1),
            "weight_bytes": rendered.weight_bytes,
            "arena_bytes": rendered.arena_bytes,
        },
        "target_sizes": None,
        "layers": layers,
    }


def _io_entry(graph: Graph, name: str) -> dict[str, Any]:
    t = graph.tensors[name]
    return {"name": name, "shape": list(t.shape), "dtype": t.dtype}
