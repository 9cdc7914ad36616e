"""The run directory's ``summary.md`` and pictures (docs/contracts.md §3), written at the end of training.

``summary.md`` is the report of this one run (:mod:`udaseg.report`: headline table, per-class IoU,
per-class bars, loss and mIoU curves, confusion matrix) followed by ``predictions.png``: a few
images of each validation set with their ground truth and the evaluated network's prediction, in
titled columns with a legend of the class colours (:func:`prediction_grid`, which ``udaseg demo``
also uses for its runs side by side).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from udaseg.data.catalog import colorize
from udaseg.models.inference import infer_logits, inference_settings

SAMPLES_PER_SET = 3


def _predict(network: nn.Module, spec, image: torch.Tensor, device: torch.device) -> np.ndarray:
    """The evaluated prediction (train ids ``[H, W]``) of ``network`` for one ``uint8 [3, H, W]``
    image, with the evaluation set's inference settings."""
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            logits = infer_logits(network, image[None].to(device), **inference_settings(spec))
    finally:
        network.train(was_training)
    return logits.argmax(dim=1)[0].cpu().numpy()


def _picks(dataset, count: int) -> list[int]:
    """``count`` evenly spaced indices of ``dataset``."""
    return sorted(set(np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int).tolist()))


def prediction_grid(networks: list[tuple[str, nn.Module]], val_sets: list, device: torch.device, path: Path,
                    per_set: int = SAMPLES_PER_SET, title: str | None = None) -> Path | None:
    """Write :func:`prediction_figure` to ``path`` (None where the sets hold no image)."""
    fig = prediction_figure(networks, val_sets, device, per_set, title)
    if fig is None:
        return None
    from udaseg.report import _plt

    plt = _plt()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def prediction_figure(networks: list[tuple[str, nn.Module]], val_sets: list, device: torch.device,
                      per_set: int = SAMPLES_PER_SET, title: str | None = None):
    """A matplotlib figure of ``per_set`` evenly spaced images of every validation set: one row
    each, with the columns image | ground truth | the prediction of each ``(column title,
    network)``, titled columns, the set's name on each row, and a legend of the label space's
    class colours (black: pixels without a label, not evaluated). None where there is no image."""
    rows = []  # (row name, [panels]) with panels uint8 [H, W, 3]
    label_space = None
    for spec, dataset in val_sets:
        if not len(dataset):
            continue
        label_space = label_space or dataset.label_space
        palette = dataset.label_space.palette
        for index in _picks(dataset, per_set):
            item = dataset[index]
            panels = [item["img"].permute(1, 2, 0).numpy(),
                      colorize(item["label"].numpy().clip(0, 255).astype(np.uint8), palette)]
            panels += [colorize(_predict(net, spec, item["img"], device), palette) for _, net in networks]
            rows.append((f"{getattr(spec, 'name', None) or 'val'} #{index}", panels))
    if not rows or label_space is None:
        return None
    from udaseg.report import _plt

    plt = _plt()
    from matplotlib.patches import Patch

    titles = ["image", "ground truth", *(name for name, _ in networks)]
    height, width = rows[0][1][0].shape[:2]
    panel_w = 3.0
    panel_h = panel_w * height / width
    classes = list(label_space.classes)
    legend_cols = 5 if len(titles) < 4 else 7
    legend_h = 0.2 * int(np.ceil((len(classes) + 1) / legend_cols))  # inches
    fig, axes = plt.subplots(len(rows), len(titles), squeeze=False,
                             figsize=(panel_w * len(titles), panel_h * len(rows) + 0.45 + legend_h))
    for r, (name, panels) in enumerate(rows):
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=10)
        axes[r, 0].set_ylabel(name, fontsize=8)
    handles = [Patch(facecolor=(colour[0] / 255, colour[1] / 255, colour[2] / 255), edgecolor="0.5", label=cls)
               for cls, colour in zip(classes, label_space.palette)]
    handles.append(Patch(facecolor="black", edgecolor="0.5", label="no label (not evaluated)"))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, legend_h / fig.get_figheight(), 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), legend_cols),
               fontsize=8, frameon=False, handlelength=1.2, columnspacing=1.0)
    return fig


def prediction_picture(network: nn.Module, val_sets: list, device: torch.device, path: Path,
                       per_set: int = SAMPLES_PER_SET) -> Path | None:
    """Write the [image | ground truth | prediction] grid of every validation set to ``path``."""
    return prediction_grid([("prediction", network)], val_sets, device, path, per_set)


def write_run_summary(run_dir: Path, network: nn.Module, val_sets: list, device: torch.device) -> Path:
    from udaseg.report import write_report

    run_dir = Path(run_dir)
    out = write_report([run_dir], run_dir / "summary.md", title=f"Run {run_dir.name}")
    picture = prediction_picture(network, val_sets, device, run_dir / "predictions.png")
    if picture is not None:
        with out.open("a") as f:
            f.write("\nPredictions of the evaluated network (each row: image, ground truth, prediction; "
                    "class colours in the legend below the picture):\n\n"
                    f"![predictions]({picture.name})\n")
    return out
