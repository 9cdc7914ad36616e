"""`udaseg demo` end to end at test size: MiniCity generated, source-only trained, DAFormer and the
equal-budget control started from it, report written; a second call reuses the finished runs."""

from __future__ import annotations

import torch

from udaseg.demo import run_demo
from udaseg.engine.checkpoint import network_weights


def test_demo_end_to_end_and_rerun(tmp_path, tiny_train_args, capsys):
    tiny = [a for a in tiny_train_args(iters=2) if not a.startswith(("benchmark=", "method=", "data_root="))]
    out, data = tmp_path / "demo", tmp_path / "minicity"
    kwargs = dict(oracle=True, scale="small", size=(64, 128), overrides=tuple(tiny),
                  daformer_overrides=("method.pseudo_ignore_top=2", "method.pseudo_ignore_bottom=8"))
    assert run_demo(out, data, **kwargs) == 0
    printed = capsys.readouterr().out
    assert "source-only" in printed and "DAFormer" in printed and "control" in printed and "oracle" in printed
    assert "gain over the equal-budget control" in printed and "report:" in printed
    assert (data / "minicity.json").exists()
    report = (out / "report.md").read_text()
    for label in ("source_only", "daformer_from_source_only", "source_only_continued", "oracle"):
        assert f"| {label} |" in report
    # The report states the gain it exists to show near the top, and shows every run's predictions.
    top = report[:report.index("\n## ")]
    assert "points over the source-only model" in top and "points over the equal-budget control" in top
    assert "The oracle" in top and "![predictions](report_files/predictions.png)" in top
    assert (out / "report_files" / "predictions.png").stat().st_size > 0
    runs = out / "minicity_gta2cs"
    for key in ("source_only", "daformer", "continued", "oracle"):
        assert (runs / f"{key}_s0" / "eval.json").exists()
    # Both adaptation runs started from the source-only model (and then trained away from it).
    start = network_weights(runs / "source_only_s0")[0]
    for key in ("daformer", "continued"):
        assert (runs / f"{key}_s0" / "config.yaml").read_text().count(str(runs / "source_only_s0")) == 1
        assert any(not torch.equal(start[k], v) for k, v in network_weights(runs / f"{key}_s0")[0].items())
    assert run_demo(out, data, **kwargs) == 0
    assert capsys.readouterr().out.count("reusing it") == 4


def test_demo_headline_states_the_gains():
    from udaseg.demo import ADAPT_ITERS, headline

    finals = {"source_only": {"mIoU19": 0.20}, "daformer": {"mIoU19": 0.25}, "continued": {"mIoU19": 0.21},
              "oracle": {"mIoU19": 0.40}}
    text = headline(finals, "mIoU19", oracle=True)
    assert "reaches 25.0 mIoU19" in text and "+5.0 points over the source-only model" in text
    assert "+4.0 points over the equal-budget control" in text and f"same {ADAPT_ITERS} more iterations" in text
    assert "closes 25 % of the source-only → oracle gap" in text
    assert "oracle" not in headline(finals, "mIoU19", oracle=False)
    finals["oracle"] = {"mIoU19": 0.19}  # a tiny run's oracle may not beat source-only
    assert "no gap to close" in headline(finals, "mIoU19", oracle=True)
    assert "the same 7 more iterations" in headline(finals, "mIoU19", False, adapt_iters=7)
