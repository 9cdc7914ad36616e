"""The run directory's ``summary.md`` and pictures (DESIGN.md §4), written at the end of training.

``summary.md`` is the report of this one run (:mod:`udaseg.report`: headline table, per-class IoU,
per-class bars, loss and mIoU curves, confusion matrix) followed by ``predictions.png``: a few
images of each validation set with their ground truth and the evaluated network's prediction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from udaseg.data.catalog import colorize
from udaseg.models.inference import infer_logits

SAMPLES_PER_SET = 3


def _sample_rows(network: nn.Module, spec, dataset, device: torch.device, count: int) -> list[np.ndarray]:
    """``count`` evenly spaced items of ``dataset`` as rows [image | ground truth | prediction]."""
    picks = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
    rows = []
    was_training = network.training
    network.eval()
    try:
        for index in sorted(set(picks.tolist())):
            item = dataset[index]
            with torch.no_grad():
                logits = infer_logits(network, item["img"][None].to(device), mode=spec.mode,
                                      test_scale=tuple(spec.test_scale) if spec.test_scale else None,
                                      window=tuple(spec.window) if spec.window else None,
                                      stride=tuple(spec.stride) if spec.stride else None, flip=spec.flip)
            pred = logits.argmax(dim=1)[0].cpu().numpy()
            palette = dataset.label_space.palette
            image = item["img"].permute(1, 2, 0).numpy()
            rows.append(np.concatenate([image, colorize(item["label"].numpy().clip(0, 255), palette),
                                        colorize(pred, palette)], axis=1))
    finally:
        network.train(was_training)
    return rows


def prediction_picture(network: nn.Module, val_sets: list, device: torch.device, path: Path,
                       per_set: int = SAMPLES_PER_SET) -> Path | None:
    """Write the [image | ground truth | prediction] grid of every validation set to ``path``."""
    from PIL import Image

    rows = []
    for spec, dataset in val_sets:
        if len(dataset):
            rows += _sample_rows(network, spec, dataset, device, per_set)
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    Image.fromarray(np.concatenate(padded, axis=0)).save(path)
    return path


def write_run_summary(run_dir: Path, network: nn.Module, val_sets: list, device: torch.device) -> Path:
    from udaseg.report import write_report

    run_dir = Path(run_dir)
    out = write_report([run_dir], run_dir / "summary.md", title=f"Run {run_dir.name}")
    picture = prediction_picture(network, val_sets, device, run_dir / "predictions.png")
    if picture is not None:
        with out.open("a") as f:
            f.write("\nPredictions of the evaluated network (each row: image, ground truth, prediction):\n\n"
                    f"![predictions]({picture.name})\n")
    return out
