"""udaseg report's text and pictures (issue 20): one seed shows no spread, the confusion matrix has
a colour bar and one column per class, curves start where a run starts and mark evaluations, the
entropy legend says what the line styles mean. Pictures are caught as matplotlib figures."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from udaseg import report


@pytest.fixture
def figures(monkeypatch):
    """The figures ``udaseg.report`` saves, by file name (kept open for inspection)."""
    caught = {}

    def save(plt, fig, path, layout=True):
        if layout:
            fig.tight_layout()
        caught[path.name.rsplit("_", 1)[-1]] = fig
        path.write_bytes(b"")
        return path

    monkeypatch.setattr(report, "_save", save)
    yield caught
    import matplotlib.pyplot as plt

    plt.close("all")


def _copy(tiny_run, dst, **changes):
    """A copy of ``tiny_run`` with config entries changed (``"model.init_from": ...``)."""
    shutil.copytree(tiny_run, dst)
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    for key, value in changes.items():
        *path, last = key.split(".")
        node = cfg
        for part in path:
            node = node[part]
        node[last] = value
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dst


def test_one_seed_shows_no_spread_anywhere(tiny_run, tmp_path, figures):
    text = report.write_report([tiny_run], tmp_path / "r.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| source_only |"))
    assert "± –" in row and "± 0.0" not in row
    assert "± 0.0" not in text and "(seed varied)" not in text
    assert "one seed (0; no spread measured)" in text
    entropy = next(line for line in text[text.index("Mean entropy"):].splitlines() if line.startswith("| source_only"))
    assert entropy.count("± –") == 3


def test_confusion_matrix_has_a_colour_bar_one_column_per_class_and_states_its_normalisation(
        tiny_run, tmp_path, figures):
    text = report.write_report([tiny_run], tmp_path / "r.md").read_text()
    assert "row-normalised" in text
    fig = figures["confusion.png"]
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    matrix = next(ax for ax in fig.axes if ax.get_images())
    assert matrix.get_images()[0].get_array().shape == (19, 19)  # eval.json's extra column is not drawn
    labels = [t.get_text() for t in matrix.get_xticklabels()]
    assert len(labels) == 19 and labels[-1] == "bicycle"
    assert min(t.get_fontsize() for t in matrix.get_xticklabels()) >= 8
    assert "row-normalised" in fig._suptitle.get_text()


def test_curves_start_where_a_continued_run_starts_and_mark_single_evaluations(tiny_run, tmp_path, figures):
    parent_iters = yaml.safe_load((tiny_run / "config.yaml").read_text())["iters"]
    child = _copy(tiny_run, tmp_path / "child", **{"model.init_from": str(tiny_run),
                                                   "method.label": "continued"})
    report.write_report([tiny_run, child], tmp_path / "r.md")
    ax_loss, ax_miou = figures["curves.png"].axes[:2]
    line = next(ln for ln in ax_loss.get_lines() if ln.get_label() == "continued")
    first_logged = min(m["iter"] for m in map(json.loads, (child / "metrics.jsonl").read_text().splitlines())
                       if "eval" not in m)
    assert line.get_xdata()[0] == parent_iters + first_logged
    assert ax_loss.get_xlim()[0] <= 0 and ax_loss.get_xlim()[1] >= 2 * parent_iters
    assert all(ln.get_marker() == "o" for ln in ax_miou.get_lines())
    # One evaluation per run (eval_every=0): markers, an x-axis over the run, and a word why there is no curve.
    assert max(len(ln.get_xdata()) for ln in ax_miou.get_lines()) == 1
    assert any("one evaluation per run" in t.get_text() for t in ax_miou.texts)
    assert ax_miou.get_ylim()[0] == 0


def test_start_iteration_follows_init_from_and_schedule_offset(tiny_run, tmp_path):
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    first = _copy(tiny_run, tmp_path / "a", **{"model.init_from": str(tiny_run), "iters": 7})
    second = {**cfg, "model": {**cfg["model"], "init_from": f"{first}:teacher"}}
    assert report.start_iteration(second) == cfg["iters"] + 7
    assert report.start_iteration({**second, "schedule": {**cfg["schedule"], "offset": 100}}) == 100
    assert report.start_iteration({**cfg, "model": {**cfg["model"], "init_from": str(tmp_path / "gone")}}) == 0


def test_entropy_legend_says_what_solid_and_dashed_mean(tiny_run, tmp_path, figures):
    report.write_report([tiny_run], tmp_path / "r.md")
    legend = figures["entropy.png"].axes[0].get_legend()
    styles = {t.get_text(): h.get_linestyle() for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert styles["correctly predicted pixels"] == "-" and styles["wrongly predicted pixels"] == "--"


def test_prediction_picture_has_column_titles_and_a_class_colour_legend(tiny_run):
    import torch

    from udaseg.data.catalog import get_label_space
    from udaseg.engine.checkpoint import load_network
    from udaseg.engine.summary import prediction_figure
    from udaseg.engine.trainer import build_dataset

    network, cfg = load_network(tiny_run)
    val_sets = [(spec, build_dataset(spec, cfg.data_root, cfg.benchmark.label_space)) for spec in cfg.benchmark.val]
    fig = prediction_figure([("source-only", network), ("again", network)], val_sets, torch.device("cpu"), per_set=2)
    try:
        assert [ax.get_title() for ax in fig.axes[:4]] == ["image", "ground truth", "source-only", "again"]
        assert fig.axes[0].get_ylabel().startswith(cfg.benchmark.val[0].name)
        space = get_label_space(cfg.benchmark.label_space)
        legend = fig.legends[0]
        assert [t.get_text() for t in legend.get_texts()][:19] == list(space.classes)
        colours = [tuple(round(c * 255) for c in h.get_facecolor()[:3]) for h in legend.legend_handles[:19]]
        assert colours == [tuple(c) for c in space.palette]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_model_family_strips_the_method_wrappers():
    from udaseg.report import model_family

    assert model_family("minicity_lite0_hrda") == "minicity_lite0"
    assert model_family("minicity_lite0_deeplab_daf") == "minicity_lite0_deeplab"
    assert model_family("minicity_lite0_deeplab_proda") == "minicity_lite0_deeplab_proda"
