"""The eval, predict, report and bench commands on a tiny finished run."""

from __future__ import annotations

import json
import shlex
import shutil

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from udaseg import config as config_lib
from udaseg.cli import main
from udaseg.engine import trainer
from udaseg.engine.checkpoint import load_network
from udaseg.errors import UdasegError
from udaseg.models.weights import CheckpointMismatchError


def _val_images(minicity_small):
    return sorted((minicity_small / "cityscapes" / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))


def test_eval_run_dir_reproduces_the_final_evaluation(tiny_run, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["eval", str(tiny_run), "--out", str(out), "--quiet"]) == 0
    assert "cityscapes_val" in capsys.readouterr().out
    fresh, final = json.loads(out.read_text()), json.loads((tiny_run / "eval.json").read_text())
    assert fresh["per_class_iou"] == final["per_class_iou"] and fresh["mIoU19"] == final["mIoU19"]
    # The checkpoint file works as well as the run directory.
    assert main(["eval", str(tiny_run / "checkpoints" / "last.pt"), "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["mIoU19"] == final["mIoU19"]


def test_eval_on_another_dataset_with_slide_and_flip(tiny_run, minicity_small, tmp_path):
    out = tmp_path / "acdc.json"
    assert main(["eval", str(tiny_run), "--dataset", "acdc", "--root", str(minicity_small / "acdc"), "--split", "val",
                 "--option", "conditions=[fog, night]", "--mode", "slide", "--window", "32x64", "--stride",
                 "16x32", "--flip", "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert (result["dataset"], result["split"], result["mode"], result["flip"]) == ("acdc", "val", "slide", True)
    assert result["window"] == [32, 64] and result["stride"] == [16, 32]
    assert result["num_images"] == 4  # 2 fog + 2 night val images in the small MiniCity


def test_eval_errors(tiny_run, tmp_path, capsys):
    assert main(["eval", str(tiny_run), "--network", "teacher"]) == 2
    assert "holds no 'teacher' network; it has: student" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a udaseg run directory" in capsys.readouterr().err
    assert main(["eval", "--predictions", str(tmp_path)]) == 2
    assert "--predictions needs --dataset and --root" in capsys.readouterr().err


def test_checkpoint_of_another_model_lists_the_mismatched_keys(tiny_run, tmp_path):
    other = tmp_path / "run"
    shutil.copytree(tiny_run, other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["model"]["backbone_options"]["width"] = 12
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointMismatchError) as err:
        load_network(other)
    assert "shape mismatch" in str(err.value) and "backbone.stem.0.0.weight" in str(err.value)


def test_predict_formats_folders_videos_and_bad_files(tiny_run, minicity_small, tmp_path, capsys):
    images = _val_images(minicity_small)
    out = tmp_path / "pred"
    folder = minicity_small / "cityscapes" / "leftImg8bit" / "val"
    assert main(["predict", str(tiny_run), str(images[0]), str(folder), "--out", str(out), "--format", "color",
                 "--format", "labelid", "--format", "overlay", "--format", "trainid", "--quiet"]) == 0
    stem = images[0].name.removesuffix("_leftImg8bit.png")
    city = images[0].parent.name
    for suffix, mode in (("_color", "RGB"), ("_overlay", "RGB"), ("_labelIds", "L"), ("_labelTrainIds", "L")):
        with Image.open(out / f"{stem}{suffix}.png") as im:  # the single file, at the top
            assert im.mode == mode and im.size == (128, 64)
        assert (out / city / f"{stem}{suffix}.png").exists()  # the folder keeps its layout
    with Image.open(out / f"{stem}_labelTrainIds.png") as im:
        assert set(np.unique(np.array(im))) <= set(range(19))

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 64))
    for i in range(3):
        writer.write(np.full((64, 128, 3), 40 * i, np.uint8))
    writer.release()
    junk = tmp_path / "notes.png"
    junk.write_text("not an image")
    code = main(["predict", str(tiny_run), str(video), str(junk), "--out", str(tmp_path / "v"), "--quiet"])
    assert code == 1  # one input failed …
    assert f"skipped {junk}" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "v" / "clip").iterdir()) == [  # … the video still came out
        "clip_000000_color.png", "clip_000001_color.png", "clip_000002_color.png"]


def test_saved_labelid_predictions_score_like_the_run(tiny_run, minicity_small, tmp_path):
    folder = minicity_small / "cityscapes" / "leftImg8bit" / "val"
    assert main(["predict", str(tiny_run), str(folder), "--out", str(tmp_path / "p"), "--format", "labelid",
                 "--quiet"]) == 0
    out = tmp_path / "scored.json"
    assert main(["eval", "--predictions", str(tmp_path / "p"), "--pred-format", "labelid", "--dataset", "cityscapes",
                 "--root", str(minicity_small / "cityscapes"), "--split", "val", "--out", str(out), "--quiet"]) == 0
    scored, final = json.loads(out.read_text()), json.loads((tiny_run / "eval.json").read_text())
    for name, iou in final["per_class_iou"].items():
        assert scored["per_class_iou"][name] == pytest.approx(iou, abs=1e-12) or (iou is None and scored[
            "per_class_iou"][name] in (None, 0.0))
    assert scored["mode"] == "predictions"


def test_predict_follows_the_runs_protocol_as_eval_scores_it(tiny_run, minicity_small, tmp_path):
    """A run whose validation flips and fuses two scales (DiGA's test): predict writes what eval
    scored, unless its flags say otherwise."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["benchmark"]["val"] = [{**cfg["benchmark"]["val"][0], "mode": "whole", "flip": True, "scales": [1.0, 0.5]}]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    folder = minicity_small / "cityscapes" / "leftImg8bit" / "val"

    def scored(*flags: str) -> dict:
        out = tmp_path / ("p" + "".join(flags).replace(" ", ""))
        assert main(["predict", str(run), str(folder), "--out", str(out), "--format", "labelid", "--quiet",
                     *flags]) == 0
        assert main(["eval", "--predictions", str(out), "--dataset", "cityscapes", "--root",
                     str(minicity_small / "cityscapes"), "--split", "val", "--out", str(out / "s.json"),
                     "--quiet"]) == 0
        return json.loads((out / "s.json").read_text())

    def same_scores(a: dict, b: dict) -> bool:
        return a["pixel_accuracy"] == pytest.approx(b["pixel_accuracy"], abs=1e-12) and all(
            a["per_class_iou"][k] == pytest.approx(v, abs=1e-12) or (v is None and a["per_class_iou"][k] in (None, 0.0))
            for k, v in b["per_class_iou"].items())

    assert main(["eval", str(run), "--out", str(tmp_path / "e.json"), "--quiet"]) == 0
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["flip"] and evaluated["scales"] == [1.0, 0.5]
    assert main(["eval", str(run), "--scales", "1", "--out", str(tmp_path / "e1.json"), "--quiet"]) == 0
    one_scale = json.loads((tmp_path / "e1.json").read_text())
    assert "scales" not in one_scale and not same_scores(one_scale, evaluated)  # the fusion changes the scores
    assert same_scores(scored(), evaluated)
    assert same_scores(scored("--scales", "1"), one_scale)


def test_report_over_seeds(tiny_run, tiny_train_args, tmp_path):
    other = tmp_path / "runs" / "s1"
    trainer.train(config_lib.compose(tiny_train_args(iters=2, seed=1)), other, progress=False)
    shutil.copytree(tiny_run, tmp_path / "runs" / "s0")
    out = tmp_path / "report.md"
    notes = tmp_path / "notes.md"
    notes.write_text("Measured on a test machine.\n")
    assert main(["report", str(tmp_path / "runs"), "--out", str(out), "--title", "Tiny", "--notes", str(notes)]) == 0
    text = out.read_text()
    assert text.startswith("# Tiny") and "Measured on a test machine." in text
    a, b = (json.loads((tmp_path / "runs" / s / "eval.json").read_text())["mIoU19"] for s in ("s0", "s1"))
    mean, std = np.mean([a, b]) * 100, np.std([a, b], ddof=1) * 100
    assert f"{mean:.1f} ± {std:.1f}" in text and "2 (0, 1)" in text
    pictures = sorted(f.name.rsplit("_", 1)[-1] for f in (tmp_path / "report_files").glob("*.png"))
    assert pictures == ["class.png", "confusion.png", "curves.png", "entropy.png"]
    hist = json.loads((tmp_path / "runs" / "s1" / "eval.json").read_text())["entropy_histogram"]
    assert len(hist["correct"]) == hist["bins"] and sum(hist["correct"]) + sum(hist["wrong"]) > 0
    with pytest.raises(UdasegError, match="seed"):  # the same seed twice is a mistake, not a sample
        from udaseg.report import write_report

        write_report([tmp_path / "runs" / "s0", tiny_run], tmp_path / "x.md")


def test_bench_reports_step_time_memory_and_ratio(tiny_train_args, tmp_path, capsys):
    configs = [" ".join(map(shlex.quote, tiny_train_args(method=m))) for m in ("source_only", "oracle")]
    out = tmp_path / "bench.json"
    assert main(["bench", *configs, "--steps", "2", "--warmup", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "source_only" in printed and "oracle" in printed
    results = json.loads(out.read_text())["results"]
    assert [r["method"] for r in results] == ["source_only", "oracle"]
    for r in results:
        assert r["step_s"] > 0 and r["peak_mem_mib"] > 0 and r["crop"] == [32, 64] and r["batch_size"] == 2
    assert results[0]["ratio"] == 1.0 and results[1]["ratio"] == pytest.approx(
        results[1]["step_s"] / results[0]["step_s"])
    assert results[0]["mem_ratio"] == 1.0 and results[1]["mem_ratio"] == pytest.approx(
        results[1]["peak_mem_mib"] / results[0]["peak_mem_mib"])


def test_model_init_from_a_run_loads_every_weight_strictly(tiny_run, tmp_path):
    from udaseg.models import create_model

    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())["model"]
    model = create_model({**cfg, "init_from": str(tiny_run)})
    saved, _ = load_network(tiny_run)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values()))
    with pytest.raises(UdasegError, match="holds no 'teacher' network"):
        create_model({**cfg, "init_from": f"{tiny_run}:teacher"})
    wider = {**cfg, "backbone_options": {**cfg["backbone_options"], "width": 12}, "init_from": str(tiny_run)}
    with pytest.raises(CheckpointMismatchError) as err:
        create_model(wider)
    assert str(err.value).startswith("model.init_from: ") and "shape mismatch" in str(err.value)
    with pytest.raises(UdasegError, match="no such run directory"):
        create_model({**cfg, "init_from": str(tmp_path / "nothing")})


def test_bench_ratios_against_source_only_and_daformer():
    from udaseg.bench import add_ratios

    def row(method, name, model, step, mem):
        return {"benchmark": "b", "method": method, "method_name": name, "model": model, "precision": "fp32",
                "step_s": step, "peak_mem_mib": mem}

    rows = [row("source_only", "source_only", "cnn", 1.0, 100.0), row("daformer", "daformer", "cnn", 2.0, 130.0),
            row("daformer+tigda", "daformer", "cnn", 3.0, 260.0), row("hrda", "daformer", "cnn_hrda", 2.5, 120.0)]
    add_ratios(rows)
    assert [r["ratio"] for r in rows] == [1.0, 2.0, 3.0, 2.5]  # HRDA: against source-only of its base network
    assert rows[2]["ratio_to_daformer"] == 1.5 and rows[2]["mem_ratio_to_daformer"] == 2.0
    assert rows[0]["ratio_to_daformer"] is None and rows[3]["ratio_to_daformer"] is None


def test_report_shows_further_evaluation_sets_in_one_compact_table(tiny_run, tmp_path):
    """A benchmark's first set gets the full section; e.g. ACDC per condition one table after it."""
    from udaseg.report import write_report

    for seed, fog in ((0, 0.25), (1, 0.35)):
        run = tmp_path / f"s{seed}"
        shutil.copytree(tiny_run, run)
        cfg = (run / "config.yaml").read_text().replace("seed: 0", f"seed: {seed}")
        (run / "config.yaml").write_text(cfg)
        evaluation = json.loads((run / "eval.json").read_text())
        fog_row = {**evaluation["all"][0], "name": "val_fog", "mIoU19": fog}
        evaluation["all"] = [evaluation["all"][0], fog_row]
        (run / "eval.json").write_text(json.dumps(evaluation))
    text = write_report([tmp_path / "s0", tmp_path / "s1"], tmp_path / "r.md").read_text()
    first = json.loads((tmp_path / "s0" / "eval.json").read_text())["name"]
    assert text.count("## ") == 1 and f"evaluated on {first}" in text  # one full section
    assert f"| method | {first} | val_fog |" in text
    assert f"{30.0:.1f} ± {np.std([0.25, 0.35], ddof=1) * 100:.1f}" in text  # 30.0 ± 7.1 on val_fog


def test_gap_closed_uses_the_source_only_and_oracle_of_the_same_model(tiny_run, tmp_path):
    from udaseg.report import write_report

    def fake(name, label, model, miou):
        run = tmp_path / name
        shutil.copytree(tiny_run, run)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["method"]["label"], cfg["model"]["name"] = label, model
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        evaluation = json.loads((run / "eval.json").read_text())
        evaluation["all"] = [{**evaluation["all"][0], "mIoU19": miou}]
        (run / "eval.json").write_text(json.dumps(evaluation))
        return run

    runs = [fake("a", "source_only", "cnn", 0.10), fake("b", "oracle", "cnn", 0.30),
            fake("c", "source_only", "deeplab", 0.20), fake("d", "advent", "deeplab", 0.25)]
    text = write_report(runs, tmp_path / "r.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| advent |"))
    assert row.startswith("| advent | deeplab | 1 (0) | 25.0 ± –") and row.endswith("| – |")  # never cnn's pair
    runs.append(fake("e", "oracle", "deeplab", 0.40))
    text = write_report(runs, tmp_path / "r.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| advent |"))
    assert row.endswith("| 25% |")  # deeplab's own pair: (25−20)/(40−20)
    # Tables without a model column name the model where a label appears with two of them.
    per_class = text[text.index("Per-class IoU"):].splitlines()
    names = [line.split(" | ")[0].lstrip("| ") for line in per_class[4:10] if line.startswith("| ")]
    assert names == ["source_only (cnn)", "source_only (deeplab)", "advent", "oracle (cnn)", "oracle (deeplab)"]


def test_runs_in_another_label_space_get_their_own_table(tiny_run, tmp_path):
    from udaseg.report import write_report

    other = tmp_path / "syn16"
    shutil.copytree(tiny_run, other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["benchmark"]["label_space"] = "synthia16"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    text = write_report([tiny_run, other], tmp_path / "r.md").read_text()
    name = cfg["benchmark"]["name"]
    assert f"## {name} — evaluated" in text and f"## {name} [synthia16] — evaluated" in text
    assert all(" " not in p.name and "[" not in p.name for p in (tmp_path / "r_files").iterdir())


def test_report_tables_pseudo_label_precision_over_the_last_quarter(tiny_run, tmp_path):
    """The mean of the last quarter of each run's logged pl_precision rows, then over seeds."""
    from udaseg.report import write_report

    for seed, late in ((0, 0.8), (1, 0.6)):
        run = tmp_path / f"s{seed}"
        shutil.copytree(tiny_run, run)
        (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("seed: 0", f"seed: {seed}"))
        rows = [{"iter": i, "loss": 1.0, "time": float(i),
                 "pl_precision": {"road": 0.1 if i < 7 else late, "rider": None}} for i in range(1, 9)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_report([tmp_path / "s0", tmp_path / "s1"], tmp_path / "r.md").read_text()
    table = text[text.index("Per-class precision"):].splitlines()
    row = next(line for line in table if line.startswith("| source_only |"))
    assert row.split(" | ")[1] == "70" and row.split(" | ")[13] == "–"  # road (0.8 + 0.6)/2; rider never labelled


def test_report_tables_the_offline_pseudo_labels_a_pipeline_stage_trained_on(tiny_run, tmp_path):
    """A pipeline stage whose config names a step's pseudo_labels folder gets a row with that step's
    summary (means over seeds); per class precision / correct, "–" where a label was never given,
    over the seeds that recorded per-class figures (their count in the seeds column)."""
    from udaseg.report import write_report

    stages = []
    for seed, (road, labelled) in enumerate((({"precision": 0.9, "correct": 0.4}, 0.4),
                                             ({"precision": 0.8, "correct": 0.6}, 0.6),
                                             (None, 0.5))):  # a step that predates per-class figures
        stage = tmp_path / f"pipe{seed}" / "stages" / "03_isl"
        shutil.copytree(tiny_run, stage)
        cfg = yaml.safe_load((stage / "config.yaml").read_text())
        cfg["seed"] = seed
        cfg["benchmark"]["target"]["pseudo_labels"] = f"/elsewhere/pipe{seed}/stages/02_pseudo/pseudo_labels"
        (stage / "config.yaml").write_text(yaml.safe_dump(cfg))
        step = stage.parent / "02_pseudo"
        step.mkdir()
        summary = {"labelled_fraction": labelled, "accuracy_vs_labels": (0.8, 0.9, 0.7)[seed]}
        if road is not None:
            summary["per_class"] = {"road": road}
            if seed == 0:
                summary["per_class"]["sky"] = {"precision": None, "correct": 0.0}
        (step / "summary.json").write_text(json.dumps(summary))
        stages.append(stage)
    text = write_report(stages, tmp_path / "r.md").read_text()
    table = text[text.index("Offline pseudo-labels"):].splitlines()
    cells = next(line for line in table if line.startswith("| source_only |")).strip("| ").split(" | ")
    # labelled (40 + 60 + 50)/3, accuracy (80 + 90 + 70)/3; the per-class cells over the first two
    assert cells[1:5] == ["02_pseudo", "3 (per class 2)", "50", "80"]
    assert cells[5] == "85/50" and cells[15] == "–/0" and cells[6] == "–"  # road, sky (never given), sidewalk


def _fake_seed_runs(tiny_run, tmp_path, edit):
    """Two copies of ``tiny_run`` (seeds 0 and 1) whose eval rows ``edit(row, seed)`` changes."""
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"s{seed}"
        shutil.copytree(tiny_run, run)
        (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("seed: 0", f"seed: {seed}"))
        evaluation = json.loads((run / "eval.json").read_text())
        evaluation["all"] = [edit(dict(evaluation["all"][0]), seed)]
        (run / "eval.json").write_text(json.dumps(evaluation))
        runs.append(run)
    return runs


def test_report_tables_the_confusion_between_similar_classes(tiny_run, tmp_path):
    from udaseg.report import write_report

    def edit(row, seed):
        classes = list(row["per_class_iou"])
        person, rider = classes.index("person"), classes.index("rider")
        conf = np.zeros((len(classes), len(classes) + 1), dtype=np.int64)
        conf[person, person], conf[person, rider] = 90 - 20 * seed, 10 + 20 * seed  # 10 % then 30 % → rider
        conf[rider, rider], conf[rider, person], conf[rider, -1] = 50, 25, 25  # 25 % → person (void counts)
        row["confusion"] = conf.tolist()
        return row

    text = write_report(_fake_seed_runs(tiny_run, tmp_path, edit), tmp_path / "r.md").read_text()
    table = text[text.index("Confusion between similar classes"):].splitlines()
    header = table[2].split(" | ")
    assert header[1:3] == ["person → rider", "rider → person"] and "sidewalk → road" in header
    row = next(line for line in table if line.startswith("| source_only |")).split(" | ")
    assert row[1] == "20.0" and row[2] == "25.0"  # (10 + 30) / 2; 25 / (50 + 25 + 25)
    assert row[3].strip(" |") == "–"  # road never labelled


def test_report_tables_mean_entropy_on_correct_and_wrong_pixels(tiny_run, tmp_path):
    from udaseg.report import write_report

    def edit(row, seed):
        # 4 bins over [0, 2): centres 0.25, 0.75, 1.25, 1.75
        row["entropy_histogram"] = {"max": 2.0, "bins": 4, "correct": [3, 1, 0, 0],
                                    "wrong": [0, 0, 1, 1] if seed == 0 else [0, 0, 0, 2]}
        return row

    text = write_report(_fake_seed_runs(tiny_run, tmp_path, edit), tmp_path / "r.md").read_text()
    table = text[text.index("Mean entropy (nats)"):].splitlines()
    row = next(line for line in table if line.startswith("| source_only |")).strip(" |").split(" | ")
    # all: seed 0 (0.75 + 0.75 + 1.25 + 1.75) / 6 = 0.75, seed 1 (0.75 + 0.75 + 3.5) / 6 = 0.8333
    assert row[1] == f"{(0.75 + 5 / 6) / 2:.3f} ± {np.std([0.75, 5 / 6], ddof=1):.3f}"
    assert row[2] == "0.375 ± 0.000"  # correct: (3·0.25 + 0.75) / 4 in both
    assert row[3] == f"{(1.5 + 1.75) / 2:.3f} ± {np.std([1.5, 1.75], ddof=1):.3f}"


def test_claim_class_changes_are_the_largest_gains_and_losses_of_the_means():
    from udaseg.report import Group, class_changes

    def group(label, *per_class):
        return Group("b", "val", label, "m", results=[{"per_class_iou": pc} for pc in per_class])

    better = group("x", {"road": 0.9, "pole": 0.30, "sky": 0.5, "bus": 0.1, "train": None},
                   {"road": 0.8, "pole": 0.20, "sky": 0.5, "bus": 0.3, "train": 0.2})  # means .85 .25 .5 .2 .2
    than = group("y", {"road": 0.9, "pole": 0.10, "sky": 0.6, "bus": 0.2, "train": None})
    assert class_changes(better, than) == "pole +15.0; sky −10.0, road −5.0"  # bus ±0 and train (no score) left out
    assert class_changes(better, than, n=1) == "pole +15.0; sky −10.0"
    assert class_changes(than, than) == "–"


def test_claims_table_verdicts(tiny_run, tmp_path):
    from udaseg.report import Claim, claim_verdict, claims_table, group_runs, load_diagnoses, load_run, write_report

    def fake(name, label, seed, miou, model=None):
        run = tmp_path / name
        shutil.copytree(tiny_run, run)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["method"]["label"], cfg["seed"] = label, seed
        cfg["model"]["name"] = model or cfg["model"]["name"]
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        evaluation = json.loads((run / "eval.json").read_text())
        evaluation["mIoU19"] = miou
        evaluation["all"] = [{**evaluation["all"][0], "mIoU19": miou}]
        (run / "eval.json").write_text(json.dumps(evaluation))
        return run

    runs = [fake(f"d{s}", "daformer", s, v) for s, v in enumerate((0.30, 0.32, 0.34))]  # 32 ± 2
    runs += [fake(f"a{s}", "source_only+aug", s, v) for s, v in enumerate((0.25, 0.26, 0.27))]  # 26 ± 1
    runs += [fake(f"h{s}", "hrda", s, v) for s, v in enumerate((0.31, 0.33, 0.35))]  # 33 ± 2
    runs += [fake("m0", "daformer+mic", 0, 0.40)]
    groups = group_runs([load_run(r) for r in runs])
    by_label = {g.label: g for g in groups}
    assert claim_verdict(by_label["daformer"], by_label["source_only+aug"], "mIoU19") == \
        ("+6.0", "reproduced (> 1 std, 2.0)")
    assert claim_verdict(by_label["hrda"], by_label["daformer"], "mIoU19")[1] == "within noise (std 2.0)"
    assert claim_verdict(by_label["source_only+aug"], by_label["daformer"], "mIoU19")[1].startswith("reversed")
    assert claim_verdict(by_label["daformer+mic"], by_label["daformer"], "mIoU19") == \
        ("+8.0", "one seed: no spread measured")
    bench = groups[0].benchmark
    lines = claims_table(groups, (Claim("X > Y", bench, "daformer", "source_only+aug"),
                                  Claim("Z > Y", bench, "bafft_step2", "advent")))
    assert any("| X > Y |" in line and "reproduced" in line for line in lines)
    assert any("not run yet (bafft_step2)" in line for line in lines)
    # The control of another network (listed first) is never the one a claim compares with.
    other = [fake("x0", "source_only+aug", 0, 0.10, model="deeplab"), fake("x1", "advent", 0, 0.2, model="deeplab")]
    groups = group_runs([load_run(r) for r in other + runs])
    assert [g.model for g in groups if g.label == "source_only+aug"][0] == "deeplab"
    lines = claims_table(groups, (Claim("X > Y", bench, "daformer", "source_only+aug"),
                                  Claim("X > Y'", bench, "daformer", "source_only+aug", same_family=True),
                                  Claim("W > V", bench, "advent", "daformer"),
                                  Claim("W > V'", bench, "advent", "daformer", same_family=True)))
    assert [line.split(" | ")[3] for line in lines if line.startswith("| ") and " > " in line] == \
        ["32.0 ± 2.0 vs 26.0 ± 1.0", "32.0 ± 2.0 vs 26.0 ± 1.0", "20.0 ± – vs 32.0 ± 2.0", "–"]
    assert [line.split(" | ")[4] for line in lines if line.startswith("| ") and " > " in line] == \
        ["3 vs 3", "3 vs 3", "1 vs 3", "–"]  # each row's number of seeds
    text = write_report(runs, tmp_path / "r.md", claims=True).read_text()
    assert "## Claims" in text and "| DAFormer > the augmentation control | minicity_gta2cs |" in text
    assert main(["report", *map(str, runs), "--claims", "--out", str(tmp_path / "cli.md")]) == 0  # the README's command
    assert "| HRDA > DAFormer (GTA) | minicity_gta2cs | hrda vs daformer |" in (tmp_path / "cli.md").read_text()
    # Diagnoses fill the last column of the claims that are not reproduced, and only those.
    diagnoses = tmp_path / "diagnoses.yaml"
    diagnoses.write_text("DAFormer > the augmentation control: not shown\n"
                         "HRDA > DAFormer (GTA): |\n  the context branch\n  sees little\n")
    assert main(["report", *map(str, runs), "--diagnoses", str(diagnoses), "--out", str(tmp_path / "d.md")]) == 0
    text = (tmp_path / "d.md").read_text()
    assert "| reproduced (> 1 std, 2.0) | – | – |" in text and "not shown" not in text  # same classes: no change
    assert "| within noise (std 2.0) | – | the context branch sees little |" in text
    assert "| – | not run yet (bafft_step2) | – | – |" in text
    diagnoses.write_text("HRDA beats everything: no\n")
    with pytest.raises(UdasegError, match="diagnoses.yaml: 'HRDA beats everything' is not a claim"):
        load_diagnoses(diagnoses)
    diagnoses.write_text("HRDA > DAFormer (GTA): [1, 2]\n")
    with pytest.raises(UdasegError, match="the diagnosis of 'HRDA > DAFormer \\(GTA\\)' must be text"):
        load_diagnoses(diagnoses)
