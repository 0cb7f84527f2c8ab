"""Seeded Fashion-MNIST models for benchmarks/README_science.md, trained like the seed's
experiment in ../shared/BENCHMARKS.md (10 epochs of Adam, lr 1e-3, batch 128, seed 0), and
the data files the `faustgen build` / `faustgen experiment` commands there read.

    python benchmarks/science_models.py OUT_DIR      # writes mlp.onnx, lenet5.onnx, *.npy
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from faustgen import zoo
from faustgen.demo.datasets import fashion_mnist
from faustgen.demo.train import accuracy, train


def main(out: Path) -> None:
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    d = fashion_mnist()
    np.save(out / "xc.npy", d.x_train[:1000])  # 1000 calibration images
    np.save(out / "yc.npy", d.y_train[:1000])
    np.save(out / "xtrain.npy", d.x_train)
    np.save(out / "ytrain.npy", d.y_train)
    np.save(out / "xtest.npy", d.x_test)
    np.save(out / "ytest.npy", d.y_test)
    for slug, model in (("mlp", zoo.mlp((784, 300, 100, 10), seed=0)), ("lenet5", zoo.lenet5())):
        train(model, d, epochs=10, seed=0, progress=False)
        zoo.export(model, d.x_test[:1], out / f"{slug}.onnx")
        print(slug, "PyTorch test accuracy", accuracy(zoo.torch_predict(model, d.x_test), d.y_test))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "science_out"))
