"""The semi-supervised benchmark harness (bench/semisup.py) on generated data: split, plan, configs,
log parsing, aggregation statistics and the report. No training runs here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_scripts import load_bench_script


semisup = load_bench_script("semisup")
presets = load_bench_script("semisup_presets")


# --- held-out split -------------------------------------------------------------------------------
def test_heldout_is_deterministic_grouped_and_never_labeled():
    ids = [f"patient{p:03d}_frame{f:02d}" for p in range(20) for f in (1, 2)]
    protocol = {"labeled_10pct": ["patient003_frame01", "patient003_frame02", "patient007_frame01"],
                "labeled_5pct": ["patient003_frame01"]}
    held = semisup.heldout_cases("Dataset003_ACDC", ids, protocol, 0.2)
    assert held == semisup.heldout_cases("Dataset003_ACDC", list(reversed(ids)), protocol, 0.2)
    patients = {semisup.case_group(c) for c in held}
    assert len(patients) == 4 and len(held) == 8  # both frames of 4 of the 20 patients
    assert not patients & {"patient003", "patient007"}  # a labeled frame keeps its patient in training
    assert semisup.heldout_cases("X", ["a", "b", "c"], {}, 0.0) == []
    with pytest.raises(ValueError, match="only 1 have no"):
        semisup.heldout_cases("X", ["a", "b"], {"s": ["a"]}, 0.9)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        semisup.heldout_cases("X", ["a"], {}, 1.0)


# --- plan and configs -------------------------------------------------------------------------------
def test_images_per_step_and_equal_compute_steps():
    assert presets.images_per_step("versemi", {"batch_size": 2, "unlabeled_batch_size": 2}) == 5.0
    assert presets.images_per_step("supervised", {"batch_size": 2}) == 2.0
    assert presets.images_per_step("mean_teacher", {"batch_size": 2, "unlabeled_batch_size": 2}) == 4.0
    cpu = presets.get_preset("cpu-2ds")
    # Single-stage VerSemi forwards a labeled patch, its CutMix and an unlabeled patch: 3 per dataset.
    assert presets.variant_steps(cpu, cpu.variant("supervised_equal_compute")) == cpu.steps * 3
    assert presets.variant_steps(cpu, cpu.variant("supervised")) == cpu.steps
    with pytest.raises(KeyError, match="unknown preset"):
        presets.get_preset("nope")


def test_plan_covers_settings_variants_and_seeds():
    cpu = presets.get_preset("cpu-2ds")
    runs = semisup.plan_runs(cpu)
    ids = [r.run_id for r in runs]
    assert len(ids) == len(set(ids))
    for setting in ("labeled_10pct", "labeled_5pct"):
        for v in ("versemi", "supervised", "mean_teacher", "bcp"):
            assert {f"{setting}__{v}__seed{s}" for s in cpu.seeds} <= set(ids)
    # The equal-compute baseline and the ablation only in 10 %; the upper bound once per seed.
    assert not any("labeled_5pct__supervised_equal_compute" in i for i in ids)
    assert not any("labeled_5pct__versemi_no_consistency" in i for i in ids)
    assert [i for i in ids if i.startswith("all_labels")] == [f"all_labels__supervised_all_labels__seed{s}" for s in cpu.seeds]
    assert len(semisup.plan_runs(cpu, seeds=[3])) == len(runs) // len(cpu.seeds)


@pytest.fixture
def fake_data(tmp_path: Path) -> tuple[Path, Path]:
    """Tiny datasets with the preset's names and a protocol file."""
    from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset

    data = tmp_path / "data"
    protocol = {}
    for i, name in enumerate(presets.SHARED_DATASETS):
        make_nnunet_dataset(data, name, [SyntheticStructure("organ", 1, 1.0)], num_cases=10,
                            shape_zyx=(8, 12, 12), seed=i)
        short = name.split("_", 1)[1].lower()
        protocol[name] = {"labeled_10pct": [f"{short}_000", f"{short}_001"], "labeled_5pct": [f"{short}_000"]}
    (data / "protocol.json").write_text(json.dumps(protocol))
    return data, data / "protocol.json"


def test_configs_validate_and_hold_out_the_split(fake_data, tmp_path):
    from versemi.data.config import TrainConfig
    from versemi.training.options import training_options

    data, protocol_path = fake_data
    preset = presets.get_preset("cpu-2ds")
    protocol = json.loads(protocol_path.read_text())
    split = semisup.make_split(data, preset.datasets, protocol, preset.heldout_fraction)
    assert all(len(v) == 2 for v in split.values()) and len(split) == 2  # 20 % of 10 cases, 2 datasets
    runs = {r.run_id: r for r in semisup.plan_runs(preset)}

    def config(run_id):
        d = semisup.make_config(preset, runs[run_id], data, protocol_path, split, tmp_path / "cache", tmp_path / "out")
        return d, TrainConfig.from_dict(d, base_dir=tmp_path)

    raw, cfg = config("labeled_5pct__versemi__seed1")
    assert cfg.seed == 1 and cfg.validation.fraction == 0.0
    assert cfg.training["max_steps"] == preset.steps and cfg.training["method"] == "versemi"
    training_options(cfg.training)  # the trainer accepts the section
    for d in cfg.datasets:
        assert len(d.labeled_ids) == 1 and set(d.exclude) == set(split[d.name])
        unlabeled = {c.case_id for c in d.unlabeled_cases()}
        assert not unlabeled & set(split[d.name]) and len(unlabeled) == 10 - 1 - 2
    train, val = cfg.split_validation()
    assert not val and len(train) == 2  # one labeled case per dataset at 5 %

    assert cfg.training["stage1_fraction"] == 0.0 and cfg.training["versemi"]["auxiliary_weight"] == 0.0
    assert "target_spacing" not in raw and "patch_size" not in raw  # each dataset's plan
    _, cfg = config("labeled_10pct__versemi_no_consistency__seed0")
    assert cfg.training["versemi"]["consistency_weight"] == 0.0
    assert cfg.training["versemi"]["consistency_target"] == "aggregate"  # the rest of the recipe kept
    training_options(cfg.training)
    _, cfg = config("labeled_10pct__mean_teacher__seed0")
    assert cfg.training["mean_teacher"]["consistency_weight"] == 10.0
    _, cfg = config("all_labels__supervised_all_labels__seed0")
    assert cfg.training["max_steps"] == preset.steps * 3
    for d in cfg.datasets:
        assert len(d.labeled_ids) == 8 and not set(d.labeled_ids) & set(split[d.name])


def cpu3_splits(fake_data) -> tuple[Path, Any, dict, dict[str, dict[str, list[str]]]]:
    """The data folder, the cpu3 preset, the protocol and every split of the fake data."""
    data, protocol_path = fake_data
    preset = presets.get_preset("cpu3")
    protocol = json.loads(protocol_path.read_text())
    splits = {which: semisup.make_split(data, preset.datasets, protocol, preset.heldout_fraction, which)
              for which in ("heldout", "dev", "dev-wide", "dev-semi")}
    return data, preset, protocol, splits


def test_dev_wide_split_is_the_unlabeled_pool_for_supervised_runs_only(fake_data, tmp_path, capsys):
    data, preset, protocol, splits = cpu3_splits(fake_data)
    heldout, dev, wide = splits["heldout"], splits["dev"], splits["dev-wide"]
    for name in preset.datasets:
        labeled = set(protocol[name]["labeled_10pct"])
        assert set(dev[name]) < set(wide[name])
        assert not set(wide[name]) & (labeled | set(heldout[name]))
        assert len(wide[name]) == 10 - len(labeled) - len(heldout[name])
    # The unlabeled pool stays in training's datasets (unread by supervised-only), so the plans are a dev run's.
    excluded = semisup.training_exclusions(data, preset, protocol, "dev-wide")
    assert excluded == semisup.training_exclusions(data, preset, protocol, "dev")
    assert all(set(excluded[n]) == set(heldout[n]) | set(dev[n]) for n in preset.datasets)
    assert semisup.training_exclusions(data, preset, protocol) == heldout
    runs = semisup.plan_runs(preset)
    semisup.check_dev_wide_runs([r for r in runs if r.run_id == "labeled_10pct__supervised__seed0"])
    for run_id in ("labeled_10pct__versemi__seed0", "all_labels__supervised_all_labels__seed0"):
        with pytest.raises(ValueError, match="refused: " + run_id):
            semisup.check_dev_wide_runs([r for r in runs if r.run_id == run_id])
    argv = ["--preset", "cpu3", "--data", str(data), "--results", str(tmp_path / "r"), "--split", "dev-wide",
            "--only", "labeled_10pct__versemi__seed0", "--dry-run"]
    assert semisup.main(argv) == 2 and "dev-wide" in capsys.readouterr().err


def test_dev_semi_split_holds_out_half_the_pool_for_every_method(fake_data, tmp_path):
    data, preset, protocol, splits = cpu3_splits(fake_data)
    heldout, dev, wide, semi = splits["heldout"], splits["dev"], splits["dev-wide"], splits["dev-semi"]
    excluded = semisup.training_exclusions(data, preset, protocol, "dev-semi")
    for name in preset.datasets:
        pool = set(wide[name]) - set(dev[name])
        evaluated_pool = set(semi[name]) - set(dev[name])
        assert set(dev[name]) <= set(semi[name]) <= set(wide[name])
        # Half of the pool's groups (every other one), the rest left to train on unlabeled.
        assert len(evaluated_pool) == (len(pool) + 1) // 2 and pool - evaluated_pool
        # Everything evaluated is out of training, with the held-out split; nothing labeled is evaluated.
        assert set(excluded[name]) == set(heldout[name]) | set(semi[name])
        assert not set(semi[name]) & set(protocol[name]["labeled_10pct"])
    assert semi == semisup.make_split(data, preset.datasets, protocol, preset.heldout_fraction, "dev-semi")
    argv = ["--preset", "cpu3", "--data", str(data), "--results", str(tmp_path / "r"), "--split", "dev-semi",
            "--only", "labeled_10pct__versemi__seed0", "--dry-run"]
    assert semisup.main(argv) == 0  # semi-supervised runs are allowed here


def test_cpu3_augments_acdc_in_plane_only_and_datasets_subset_drops_it(fake_data, tmp_path):
    from versemi.data.config import TrainConfig

    preset = presets.get_preset("cpu3")
    assert set(preset.training["dataset_augmentation"]) == {"Dataset003_ACDC"}
    assert preset.training["augmentation"]["affine_prob"] == 0.0  # hippocampus and left atrium unchanged
    training = semisup.only_datasets(preset.training, ["Dataset001_Hippocampus"])
    assert training["dataset_augmentation"] == {} and "Dataset003_ACDC" in preset.training["dataset_augmentation"]
    data, protocol_path = fake_data
    run = next(r for r in semisup.plan_runs(preset) if r.run_id == "labeled_10pct__versemi__seed0")
    raw = semisup.make_config(preset, run, data, protocol_path, {}, tmp_path / "cache", tmp_path / "out")
    cfg = TrainConfig.from_dict(raw, base_dir=tmp_path)
    assert cfg.training["dataset_augmentation"] == preset.training["dataset_augmentation"]
    assert cfg.training["versemi"]["synthetic_weight"] == 0.25  # the variant's own section merged, not replaced


def test_dry_run_prints_every_run(fake_data, capsys, tmp_path):
    data, _ = fake_data
    assert semisup.main(["--preset", "cpu-2ds", "--data", str(data), "--results", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "26 runs" in out and "labeled_5pct__mean_teacher__seed1" in out and "2400 steps" in out
    assert not (tmp_path / "r").exists()  # a dry run writes nothing
    assert semisup.main(["--preset", "nope", "--data", str(data), "--dry-run"]) == 2


# --- logs -------------------------------------------------------------------------------------------
def test_train_log_stats(tmp_path):
    folder = tmp_path / "train" / "stage2"
    folder.mkdir(parents=True)
    (tmp_path / "train" / "stage1").mkdir()
    records = [{"event": "start", "step": 0}]
    records += [{"event": "train", "step": s, "losses": {"total": 2.0, "consistency": 0.5, "consistency_weight": 0.8}}
                for s in (10, 20, 30, 40)]
    records += [{"event": "end", "step": 40, "seconds": 20.0, "data_wait_fraction": 0.25}]
    (folder / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "train" / "stage1" / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"event": "start", "step": 0}, {"event": "end", "step": 20, "seconds": 5.0, "data_wait_fraction": 0.0}]))
    stats = semisup.train_log_stats(tmp_path / "train", "versemi")
    assert stats["steps"] == 60 and stats["loop_seconds"] == 25.0
    assert stats["it_per_s"] == pytest.approx(60 / 25)
    assert stats["data_wait_fraction"] == pytest.approx(0.25 * 20 / 25)
    assert stats["consistency_loss_share"] == pytest.approx(0.8 * 0.5 / 2.0)


# --- aggregation and report -------------------------------------------------------------------------
def _write_run(runs_dir: Path, setting: str, variant: str, seed: int, dice: dict, hd95: float | None = 2.0):
    rows = [
        {"dataset": "Dataset001_Hippocampus", "case": case, "label": "hippocampus_anterior", "dice": d,
         "hd95": hd95, "nsd": 0.5, "status": "ok"}
        for case, d in dice.items()
    ]
    run = {"setting": setting, "variant": variant, "method": "x", "seed": seed, "steps": 10, "training": {},
           "images_per_step": 2.0, "run_id": f"{setting}__{variant}__seed{seed}"}
    semisup.write_json_atomic(runs_dir / run["run_id"] / "metrics.json", {
        "run": run, "train": {"wall_seconds": 12.0, "log_stats": {"it_per_s": 1.5, "data_wait_fraction": 0.1,
                                                                  "loop_seconds": 8.0, "consistency_loss_share": None}},
        "eval": {"wall_seconds": 3.0}, "rows": rows})


def test_aggregation_statistics_and_report(tmp_path):
    preset = presets.get_preset("cpu-quick")
    runs = tmp_path / "runs"
    # Cases a, b, c; VerSemi beats supervised by (0.10, 0.20, 0.30) in seed 0 and (0.2, 0.2, 0.2) in seed 1.
    _write_run(runs, "labeled_10pct", "versemi", 0, {"a": 0.8, "b": 0.7, "c": 0.6})
    _write_run(runs, "labeled_10pct", "versemi", 1, {"a": 0.7, "b": 0.6, "c": 0.5})
    _write_run(runs, "labeled_10pct", "supervised", 0, {"a": 0.7, "b": 0.5, "c": 0.3}, hd95=None)
    _write_run(runs, "labeled_10pct", "supervised", 1, {"a": 0.5, "b": 0.4, "c": 0.3})
    _write_run(runs, "all_labels", "supervised_all_labels", 0, {"a": 0.9, "b": 0.9, "c": 0.9})
    _write_run(runs, "all_labels", "supervised_all_labels", 1, {"a": 0.9, "b": 0.9, "c": 0.9})

    results = semisup.load_results(runs)
    agg = semisup.aggregate(preset, results)
    s = agg["settings"]["labeled_10pct"]
    key = ("Dataset001_Hippocampus", "hippocampus_anterior")
    mean_key = ("Dataset001_Hippocampus", semisup.MEAN_LABEL)
    v = s["dice"]["versemi"][key]
    assert v["mean"] == pytest.approx(0.65) and v["sd"] == pytest.approx(np.std([0.7, 0.6], ddof=1))
    assert s["dice"]["versemi"][mean_key]["mean"] == pytest.approx(0.65)

    d = s["paired"]["supervised"]["dice"][key]
    per_case = [np.mean([0.1, 0.2]), np.mean([0.2, 0.2]), np.mean([0.3, 0.2])]
    assert d["n"] == 3 and d["seeds"] == 2
    assert d["mean"] == pytest.approx(np.mean(per_case))
    assert d["se"] == pytest.approx(np.std(per_case, ddof=1) / math.sqrt(3))
    h = s["paired"]["supervised"]["hd95"][key]  # seed 0 has no supervised HD95: only seed 1 pairs
    assert h["n"] == 3 and h["mean"] == pytest.approx(0.0)
    assert s["paired"]["supervised_all_labels"]["dice"][key]["mean"] == pytest.approx(0.65 - 0.9)
    hd = s["hd95"]["supervised"][key]  # seed 0: every HD95 undefined -> only seed 1 averaged, counted
    assert hd["mean"] == pytest.approx(2.0) and (hd["undefined"], hd["values"]) == (3, 6)

    sup = np.mean([0.5, 0.4])  # seed means of supervised: 0.5 and 0.4
    assert s["gap_closed"]["versemi"][key] == pytest.approx((0.65 - sup) / (0.9 - sup))
    assert semisup.gap_closed(0.5, 0.6, 0.6) is None and semisup.gap_closed(None, 0.1, 0.9) is None
    assert semisup.gap_closed(0.5, 0.600, 0.605) is None  # a gap under one Dice point is not measured

    header = {"command": "python bench/semisup.py --preset cpu-quick", "settings": {"grid": "2 mm"}}
    paths = semisup.write_report(preset, tmp_path, header, planned=12)
    md = paths["results.md"].read_text()
    assert md.index("python bench/semisup.py --preset cpu-quick") < md.index("## Setting `labeled_10pct`")
    assert "Incomplete: 6 of 12 runs" in md
    assert "| Hippocampus | hippocampus_anterior | 65.0 ± 7.1 |" in md
    assert "vs `supervised`" in md and "+20.0 ± 2.9 pts" in md
    assert "2.00 (3/6 undef.)" in md
    assert "labeled_10pct__versemi__seed0 | 10 | 2.0 | 12 |" in md
    assert paths["results.png"].stat().st_size > 1000
    data = json.loads(paths["results.json"].read_text())
    assert data["aggregate"]["settings"]["labeled_10pct"]["dice"]["versemi"][
        "Dataset001_Hippocampus/hippocampus_anterior"]["mean"] == pytest.approx(0.65)


def test_report_only_rebuilds_from_finished_runs(fake_data, tmp_path):
    data, _ = fake_data
    results = tmp_path / "results"
    _write_run(results / "runs", "labeled_10pct", "versemi", 0, {"a": 0.8, "b": 0.6})
    _write_run(results / "runs", "labeled_10pct", "supervised", 0, {"a": 0.7, "b": 0.6})
    args = ["--preset", "cpu-quick", "--data", str(data), "--results", str(results)]
    assert semisup.main([*args, "--report-only"]) == 0
    md = (results / "results.md").read_text()
    command = md.split("```")[1]
    assert "--preset cpu-quick" in command and "--report-only" not in command
    assert "Incomplete: 2 of 18 runs" in md and "report rebuilt" in md
    assert json.loads((results / "split.json").read_text())["evaluated"]["Dataset002_LeftAtrium"]


def test_overrides_change_only_the_named_training_keys_and_steps() -> None:
    preset = presets.get_preset("cpu-2ds")
    changed = semisup.apply_overrides(preset, 150, ["versemi.synthetic_weight=0", "loss.batch_dice=true", "lr=3e-4"])
    assert changed.steps == 150 and preset.steps == 800
    assert changed.training["versemi"] == {"synthetic_weight": 0}
    assert changed.training["loss"] == {"batch_dice": True}
    assert changed.training["lr"] == 3e-4
    assert {k: v for k, v in changed.training.items() if k not in ("versemi", "loss", "lr")} == {
        k: v for k, v in preset.training.items() if k != "lr"
    }
    assert "versemi" not in preset.training  # the preset itself is untouched
    cpu3 = presets.get_preset("cpu3")
    back = semisup.apply_overrides(cpu3, None, ["versemi.synthetic_weight=1"])  # wins over the variant's 0.25
    assert {v.name: v.training["versemi"]["synthetic_weight"] for v in back.variants if v.method == "versemi"} == {
        "versemi": 1, "versemi_no_consistency": 1, "versemi_no_synthetic": 1}
    assert next(v for v in cpu3.variants if v.name == "versemi").training["versemi"]["synthetic_weight"] == 0.25
    with pytest.raises(ValueError, match="KEY=VALUE"):
        semisup.apply_overrides(preset, None, ["no_equals_sign"])
    with pytest.raises(ValueError, match="positive"):
        semisup.apply_overrides(preset, 0, [])


@pytest.mark.slow
def test_gpu_la_preset_runs_end_to_end_on_cpu(fake_data, tmp_path):
    """Smoke check: the published left-atrium preset (0.625 mm, 96^3 V-Net, two-stage VerSemi) trains
    for 2 steps on the CPU, predicts its held-out cases and writes the report. Batch sizes and workers
    are shrunk so that it fits a test; everything else is the preset's."""
    data, _ = fake_data
    results = tmp_path / "results"
    args = ["--preset", "gpu-la", "--data", str(data), "--results", str(results), "--device", "cpu",
            "--threads", "1", "--steps", "2", "--only", "labeled_10pct__versemi__seed0",
            "--set", "batch_size=1", "--set", "unlabeled_batch_size=1", "--set", "num_workers=0",
            "--set", "tensorboard=false", "--cache-dir", str(tmp_path / "cache")]
    assert semisup.main(args) == 0
    metrics = json.loads((results / "runs" / "labeled_10pct__versemi__seed0" / "metrics.json").read_text())
    assert metrics["rows"] and all(0.0 <= r["dice"] <= 1.0 for r in metrics["rows"] if r["dice"] is not None)
    assert "gpu-la" in (results / "results.md").read_text()


def test_compare_runs_pairs_cases_across_result_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compare_runs = load_bench_script("compare_runs")

    def run(name: str, dice: dict[str, float]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"dataset": "D", "case": case, "label": label, "dice": value, "hd95": None}
                for case, value in dice.items() for label in ("a", "b")]
        (folder / "metrics.json").write_text(json.dumps({"rows": rows}))
        return folder

    a = run("a", {"c1": 0.80, "c2": 0.70, "c3": 0.90})
    b = run("b", {"c1": 0.70, "c2": 0.70, "c3": 0.70, "c4": 0.10})  # c4: not in A, not paired
    a2 = run("a2", {"c1": 0.60, "c2": 0.70, "c3": 0.70})  # a second seed: c1 -10, c2 0, c3 0
    assert compare_runs.main(["--pair", str(a), str(b)]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if "(mean)" in x][0]
    diffs = [10.0, 0.0, 20.0]
    se = float(np.std(diffs, ddof=1) / math.sqrt(3))
    assert f"{np.mean(diffs):+6.1f} ± {se:4.1f}  (n=3)" in line
    assert compare_runs.main(["--pair", str(a), str(b), "--pair", str(a2), str(b)]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if "(mean)" in x][0]
    diffs = [0.0, 0.0, 10.0]  # per case, the mean over the two seeds
    assert f"{np.mean(diffs):+6.1f} ± {float(np.std(diffs, ddof=1) / math.sqrt(3)):4.1f}  (n=3)" in line
    per_seed = [10.0, -10.0 / 3]  # each seed's mean over the cases
    assert f"over seeds {np.mean(per_seed):+6.1f} ± {np.std(per_seed, ddof=1) / math.sqrt(2):4.1f}" in line
    with pytest.raises(SystemExit, match="no metrics.json"):
        compare_runs.main(["--pair", str(a), str(tmp_path)])
