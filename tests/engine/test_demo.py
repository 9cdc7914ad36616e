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
