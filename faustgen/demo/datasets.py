"""Data that ships on the machine: Fashion-MNIST (Debian's dataset-fashion-mnist) or
scikit-learn's bundled digits. No network, ever."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import zoom

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # N x 1 x 28 x 28 float32, roughly zero mean / unit variance
    y_train: np.ndarray  # N int64
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def classes(self) -> int:
        return int(self.y_train.max()) + 1


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_available(root: Path = FASHION_DIR) -> bool:
    return (root / "train-images-idx3-ubyte.gz").is_file()


def fashion_mnist(root: Path = FASHION_DIR) -> Dataset:
    def images(name):
        x = _idx(root / name).astype(np.float32) / 255.0
        return ((x - 0.2860) / 0.3530)[:, None, :, :].astype(np.float32)

    return Dataset(
        "Fashion-MNIST",
        images("train-images-idx3-ubyte.gz"),
        _idx(root / "train-labels-idx1-ubyte.gz").astype(np.int64),
        images("t10k-images-idx3-ubyte.gz"),
        _idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
    )


def digits(seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits, upsampled to 28x28 so the same networks apply."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0
    x = np.stack([zoom(im, 28 / 8, order=1) for im in x]).astype(np.float32)
    x = ((x - x.mean()) / x.std())[:, None, :, :].astype(np.float32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(0.8 * len(x))
    return Dataset("digits (scikit-learn, 28x28)", x[:cut], y[:cut], x[cut:], y[cut:])


def default_dataset() -> Dataset:
    return fashion_mnist() if fashion_mnist_available() else digits()
