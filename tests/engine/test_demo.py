"""`udaseg demo` end to end at test size: MiniCity generated, both baselines trained, report
written; a second call reuses the finished runs."""

from __future__ import annotations

from udaseg.demo import run_demo


def test_demo_end_to_end_and_rerun(tmp_path, tiny_train_args, capsys):
    tiny = [a for a in tiny_train_args(iters=2) if not a.startswith(("benchmark=", "method=", "data_root="))]
    out, data = tmp_path / "demo", tmp_path / "minicity"
    assert run_demo(out, data, scale="small", size=(64, 128), overrides=tuple(tiny)) == 0
    printed = capsys.readouterr().out
    assert "source-only" in printed and "oracle" in printed and "report:" in printed
    assert (data / "minicity.json").exists()
    report = (out / "report.md").read_text()
    assert "| source_only |" in report and "| oracle |" in report and "gap closed" in report
    for method in ("source_only", "oracle"):
        assert (out / "minicity_gta2cs" / f"{method}_s0" / "eval.json").exists()
    assert run_demo(out, data, scale="small", size=(64, 128), overrides=tuple(tiny)) == 0
    assert capsys.readouterr().out.count("reusing it") == 2
