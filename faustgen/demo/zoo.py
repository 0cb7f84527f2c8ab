"""Small seeded PyTorch models used by the demo, the benchmarks and the tests.

Needs the torch extra (`pip install faustgen[torch]`). Models are defined here
once, so the demo and the tests exercise exactly the same networks.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import sys
from pathlib import Path

import numpy as np

from faustgen.errors import FaustgenError


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the installation
        raise FaustgenError("this needs PyTorch: pip install 'faustgen[torch]'") from None
    return torch


def mlp(sizes=(784, 300, 100, 10), seed: int = 0):
    """Fully connected network with ReLU between layers (input flattened)."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)
    layers: list = [nn.Flatten()]
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def lenet5(
    in_channels: int = 1, image: int = 28, classes: int = 10, batchnorm: bool = True, seed: int = 0
):
    """LeNet-5 style CNN: conv5x5(6) - pool - conv5x5(16) - pool - 120 - 84 - classes."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)

    def block(cin, cout, pad):
        parts = [nn.Conv2d(cin, cout, 5, padding=pad)]
        if batchnorm:
            parts.append(nn.BatchNorm2d(cout))
        return [*parts, nn.ReLU(), nn.MaxPool2d(2)]

    feat = ((image + 4 - 4) // 2 - 4) // 2  # conv1 keeps the size (pad 2), conv2 trims 4
    net = nn.Sequential(
        *block(in_channels, 6, 2),
        *block(6, 16, 0),
        nn.Flatten(),
        nn.Linear(16 * feat * feat, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, classes),
    )
    return net.eval()


def randomize_batchnorm(model, seed: int = 0) -> None:
    """Give BatchNorm layers non-trivial statistics, as training would (for tests)."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)


def calibrate_batchnorm(model, input_shape, batches: int = 2, seed: int = 0) -> None:
    """Set BatchNorm statistics from random batches, as training would: a random-weight
    network otherwise collapses (its outputs the same for every input, or ~1e-14)."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(*input_shape, generator=g))
    model.eval()


def export(
    model,
    example,
    path: str | os.PathLike,
    *,
    dynamo: bool = False,
    dynamic_batch: bool = True,
    opset: int | None = None,
    input_names: list[str] | None = None,
    **kwargs,
) -> Path:
    """torch.onnx.export with named inputs ('x' for one, else 'x0', 'x1', ... or
    `input_names`), output 'y' and, optionally, a symbolic batch. `example`: one array or a
    tuple of arrays (their dtypes are kept: int64 token ids stay int64)."""
    torch = _torch()
    path = Path(path)
    examples = list(example) if isinstance(example, (list, tuple)) else [example]
    xs = tuple(torch.from_numpy(np.ascontiguousarray(_as_input(e))) for e in examples)
    names = input_names or (["x"] if len(xs) == 1 else [f"x{k}" for k in range(len(xs))])
    model.eval()
    args = dict(input_names=names, output_names=["y"], dynamo=dynamo, **kwargs)
    if opset is not None:
        args["opset_version"] = opset
    if dynamic_batch:
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=4096)
            args["dynamic_shapes"] = tuple({0: batch} for _ in xs)
        else:
            args["dynamic_axes"] = {**{n: {0: "batch"} for n in names}, "y": {0: "batch"}}
    # The exporters print progress banners; keep the user's terminal for faustgen's output.
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, xs, str(path), **args)
    return path


def _as_input(x) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype.kind in "iub" else x.astype(np.float32)


def torch_predict(model, x) -> np.ndarray:
    """model(x) in numpy; x: one array or a tuple of arrays (one per model input)."""
    torch = _torch()
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    with torch.no_grad():
        return model(*(torch.from_numpy(np.ascontiguousarray(_as_input(v))) for v in xs)).numpy()


_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def torchvision_models():
    """`torchvision.models`, importable on the CPU build of torch.

    The torchvision wheel that matches torch 2.13 is a CUDA build whose compiled extension
    does not load here; its Python model zoo only needs the `torchvision::nms`/`qnms`
    operator schemas to exist at import time, so they are defined first (no kernels: the
    detection ops are never called by the classification models).
    """
    torch = _torch()
    if "torchvision" not in sys.modules and not _KEEP:
        try:
            lib = torch.library.Library("torchvision", "DEF")
            for schema in _TORCHVISION_SCHEMAS:
                lib.define(schema)
            _KEEP.append(lib)  # a dropped Library object unregisters its schemas
        except RuntimeError:  # already defined (by torchvision's own extension, or earlier)
            pass
    try:
        import torchvision
    except ImportError:  # pragma: no cover - depends on the installation
        raise FaustgenError(
            "this needs torchvision: pip install --no-deps torchvision==0.28.0"
        ) from None
    return torchvision.models


_KEEP: list = []


def timm():
    """The `timm` package (installed with --no-deps by scripts/setup.sh), after torchvision."""
    torchvision_models()
    try:
        import timm as _timm
    except ImportError:  # pragma: no cover - depends on the installation
        raise FaustgenError(
            "this needs timm: pip install --no-deps timm huggingface_hub safetensors pyyaml"
        ) from None
    return _timm


# ---------------------------------------------------------------- the model zoo (issue 15)


def keyword_spotter(
    cell: str = "lstm",
    features: int = 10,
    hidden: int = 32,
    classes: int = 5,
    layers: int = 1,
    bidirectional: bool = False,
    seed: int = 0,
):
    """A keyword-spotting-like recurrent classifier: (B, T, features) -> RNN -> last step -> FC."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)
    rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]

    class KWS(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn_cls(
                features, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional
            )
            self.fc = nn.Linear(hidden * (2 if bidirectional else 1), classes)

        def forward(self, x):
            y, _ = self.rnn(x)
            return self.fc(y[:, -1])

    return KWS().eval()


def vision_transformer(name: str = "vit_tiny_patch16_224", img_size: int = 32, **kw):
    """A timm ViT/DeiT with random weights at a small input size (e.g. depth=2 for tests)."""
    _torch().manual_seed(kw.pop("seed", 0))
    return timm().create_model(name, img_size=img_size, num_classes=10, **kw).eval()


def siamese_mlp(features: int = 32, hidden: int = 64, seed: int = 0):
    """Two inputs through one shared MLP; the output is |f(a) - f(b)| -> a similarity score."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)

    class Siamese(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 16))
            self.head = nn.Linear(16, 1)

        def forward(self, a, b):
            return torch.sigmoid(self.head(torch.abs(self.f(a) - self.f(b))))

    return Siamese().eval()


def token_classifier(vocab: int = 100, dim: int = 32, classes: int = 4, seed: int = 0):
    """Token ids (int64, (B, T)) -> embedding -> mean over tokens -> MLP."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, classes))

        def forward(self, ids):
            return self.mlp(self.emb(ids).mean(dim=1))

    return Tokens().eval()
