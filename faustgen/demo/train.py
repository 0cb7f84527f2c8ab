"""Seeded, single-process training of the demo models (PyTorch, CPU)."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from faustgen.demo.datasets import Dataset


def train(
    model,
    data: Dataset,
    epochs: int = 3,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    desc: str = "train",
):
    """Adam on cross-entropy; deterministic for a given seed and thread count."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = epochs * ((len(x) + batch - 1) // batch)
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, unit="step")
    model.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()
    return model


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits.reshape(len(labels), -1), axis=1) == labels))
