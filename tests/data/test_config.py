"""Tests for versemi.data.config: loading, labeled/unlabeled cases, protocol files, validation split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from versemi.data.config import ConfigError, TrainConfig, load_config
from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = (6, 8, 8)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Two tiny datasets under data/, a protocol file, a folder of unlabeled scans, configs/."""
    data = tmp_path / "data"
    make_nnunet_dataset(data, "Dataset921_Alpha", [SyntheticStructure("organ_a", 1, 1.0)],
                        num_cases=6, shape_zyx=TINY, seed=1)
    make_nnunet_dataset(data, "Dataset922_Beta",
                        [SyntheticStructure("spleen", 1, 1.5), SyntheticStructure("liver", 2, -1.0)],
                        num_cases=5, shape_zyx=TINY, modality="CT", seed=2)
    protocol = {
        "Dataset921_Alpha": {"labeled_10pct": ["alpha_001", "alpha_004"], "labeled_5pct": ["alpha_004"]},
        "Dataset922_Beta": {"labeled_10pct": ["beta_000", "beta_002", "beta_003"]},
    }
    (data / "protocol.json").write_text(json.dumps(protocol))
    scans = data / "extra_scans"
    scans.mkdir()
    for name in ("scan_x.nii.gz", "scan_y.mha"):
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros(TINY, np.float32)), str(scans / name))
    (tmp_path / "configs").mkdir()
    return tmp_path


def _config_dict() -> dict:
    return {
        "datasets": [
            {"path": "../data/Dataset921_Alpha",
             "labeled": {"protocol": "../data/protocol.json", "setting": "labeled_10pct"},
             "exclude": ["alpha_005"]},
            {"path": "../data/Dataset922_Beta",
             "labeled": {"protocol": "../data/protocol.json", "setting": "labeled_10pct"},
             "modality": "ct"},
        ],
        "unlabeled_dirs": ["../data/extra_scans"],
        "target_spacing": [1.0, 1.0, 1.5],
        "patch_size": [32, 32, 16],
        "model": {"backbone": "vnet", "base_filters": 8, "anything": {"nested": [1, 2]}},
        "training": {"stage1_iterations": 10, "lr": 1e-3},
        "cache_dir": "../cache",
        "output_dir": "../runs/exp1",
        "seed": 3,
        "validation": {"fraction": 0.5, "seed": 11},
    }


def _write(project: Path, data: dict, name: str = "train.yaml") -> Path:
    path = project / "configs" / name
    if name.endswith(".json"):
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data))
    return path


def test_yaml_and_json_give_the_same_config(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project.parent)  # relative paths must not depend on the working directory
    a = load_config(_write(project, _config_dict(), "train.yaml"))
    b = load_config(_write(project, _config_dict(), "train.json"))
    assert a.to_dict() == b.to_dict()
    assert a.source == project / "configs" / "train.yaml"
    assert [d.name for d in a.datasets] == ["Dataset921_Alpha", "Dataset922_Beta"]
    assert a.datasets[0].path == project / "data" / "Dataset921_Alpha"
    assert a.cache_dir == project / "cache"
    assert a.output_dir == project / "runs" / "exp1"
    assert a.target_spacing == (1.0, 1.0, 1.5) and a.patch_size == (32, 32, 16)
    assert a.seed == 3 and a.validation.fraction == 0.5 and a.validation.seed == 11
    # The model and training sections are passed through untouched.
    assert a.model == {"backbone": "vnet", "base_filters": 8, "anything": {"nested": [1, 2]}}
    assert a.training == {"stage1_iterations": 10, "lr": 1e-3}


def test_protocol_labeled_and_unlabeled_cases(project: Path) -> None:
    cfg = load_config(_write(project, _config_dict()))
    alpha, beta = cfg.datasets
    assert alpha.labeled_ids == ("alpha_001", "alpha_004")
    assert [c.case_id for c in alpha.labeled_cases()] == ["alpha_001", "alpha_004"]
    assert all(c.label_path is not None and c.label_path.is_file() for c in cfg.labeled_cases())
    # Everything else but the excluded case is an unlabeled scan, with no label path at all.
    assert [c.case_id for c in alpha.unlabeled_cases()] == ["alpha_000", "alpha_002", "alpha_003"]
    assert [c.case_id for c in alpha.excluded_cases()] == ["alpha_005"]
    assert [c.case_id for c in beta.unlabeled_cases()] == ["beta_001", "beta_004"]
    unlabeled = cfg.unlabeled_cases()
    assert [c.case_id for c in unlabeled][-2:] == ["scan_x", "scan_y"]
    assert len(unlabeled) == 3 + 2 + 2
    assert all(c.label_path is None for c in unlabeled)
    labeled_ids = {(c.dataset, c.case_id) for c in cfg.labeled_cases()}
    assert not labeled_ids & {(c.dataset, c.case_id) for c in unlabeled}
    assert cfg.modality("Dataset921_Alpha") == "MR"
    assert cfg.modality("Dataset922_Beta") == "ct"  # the override wins over dataset.json
    assert cfg.modality("extra_scans") is None
    assert cfg.dataset("Dataset922_Beta") is beta


def test_labeled_forms(project: Path) -> None:
    data = _config_dict()
    data["datasets"][0]["labeled"] = "all"
    data["datasets"][1] = {"path": "../data/Dataset922_Beta", "labeled": ["beta_004"]}
    data["unlabeled_dirs"] = []
    cfg = load_config(_write(project, data))
    assert [c.case_id for c in cfg.datasets[0].labeled_cases()] == [f"alpha_00{i}" for i in range(5)]
    assert cfg.datasets[0].unlabeled_cases() == []
    assert cfg.datasets[1].labeled_ids == ("beta_004",)
    data["datasets"][1]["labeled"] = "none"
    assert len(load_config(_write(project, data)).datasets[1].unlabeled_cases()) == 5
    # A bare path means every case labeled; the 5 % protocol setting picks fewer.
    data["datasets"] = ["../data/Dataset922_Beta", {
        "path": "../data/Dataset921_Alpha",
        "labeled": {"protocol": "../data/protocol.json", "setting": "labeled_5pct"}}]
    cfg = load_config(_write(project, data))
    assert len(cfg.datasets[0].labeled_cases()) == 5
    assert cfg.datasets[1].labeled_ids == ("alpha_004",)


def test_split_validation_is_deterministic_and_disjoint(project: Path) -> None:
    data = _config_dict()
    data["datasets"][0]["labeled"] = "all"  # 5 labeled (one excluded)
    data["datasets"][1]["labeled"] = "all"  # 5 labeled
    data["validation"] = {"fraction": 0.4, "seed": 5}
    cfg = load_config(_write(project, data))
    train, val = cfg.split_validation()
    assert (train, val) == cfg.split_validation()
    assert (train, val) == load_config(_write(project, data, "again.yaml")).split_validation()
    key = lambda cases: [(c.dataset, c.case_id) for c in cases]  # noqa: E731
    assert not set(key(train)) & set(key(val))
    assert sorted(key(train) + key(val)) == sorted(key(cfg.labeled_cases()))
    assert sum(c.dataset == "Dataset921_Alpha" for c in val) == 2
    assert sum(c.dataset == "Dataset922_Beta" for c in val) == 2
    seeds = {tuple(key(load_config(_write(project, {**data, "validation": {"fraction": 0.4, "seed": s}}))
                       .split_validation()[1])) for s in range(6)}
    assert len(seeds) > 1, "the seed should change the split"

    # Small datasets: one labeled case -> no validation case; two -> one each way.
    data["datasets"][0]["labeled"] = ["alpha_000"]
    data["datasets"][1]["labeled"] = ["beta_000", "beta_001"]
    data["validation"] = {"fraction": 0.2}
    train, val = load_config(_write(project, data)).split_validation()
    assert [c.case_id for c in val if c.dataset == "Dataset921_Alpha"] == []
    assert len([c for c in val if c.dataset == "Dataset922_Beta"]) == 1
    data["validation"] = {"fraction": 0}
    assert load_config(_write(project, data)).split_validation()[1] == []


def test_label_space_and_mapping(project: Path) -> None:
    data = _config_dict()
    cfg = load_config(_write(project, data))
    assert cfg.label_space().names == ["organ_a", "spleen", "liver", "all_foreground"]
    mapping = {"Dataset921_Alpha:1": {"name": "spleen"}}
    (project / "configs" / "mapping.json").write_text(json.dumps(mapping))
    data["label_mapping"] = "mapping.json"
    space = load_config(_write(project, data)).label_space()
    assert space.names == ["spleen", "liver", "all_foreground"]
    assert space.prompts_for_dataset("Dataset921_Alpha") == [(0, 1)]
    (project / "configs" / "mapping.json").write_text(json.dumps({"Dataset999_X:1": {"name": "a"}}))
    with pytest.raises(ConfigError, match=r"train\.yaml: label_mapping: mapping entries match no dataset"):
        load_config(_write(project, data)).label_space()


def test_to_dict_round_trip(project: Path) -> None:
    cfg = load_config(_write(project, _config_dict()))
    stored = json.loads(json.dumps(cfg.to_dict()))  # JSON-compatible, as stored in checkpoints
    assert stored["datasets"][0]["labeled"] == ["alpha_001", "alpha_004"]
    assert stored["datasets"][0]["labeled_from"]["setting"] == "labeled_10pct"
    again = TrainConfig.from_dict(stored, base_dir="/nonexistent")  # absolute paths: base unused
    assert again.to_dict() == stored
    assert again.split_validation() == cfg.split_validation()
    assert again.label_space().to_dict() == cfg.label_space().to_dict()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(patchsize=[1, 2, 3]), r"patchsize: unknown key"),
        (lambda d: d.update(target_spacing=[1, 0, 1]), r"target_spacing: must be three positive numbers"),
        (lambda d: d.update(plans={"patch_voxels": 0}), r"plans\.patch_voxels: must be an integer"),
        (lambda d: d.update(plans={"overrides": {"Dataset999_Nope": {}}}),
         r"plans\.overrides\.Dataset999_Nope: not a dataset of the config"),
        (lambda d: d.update(plans={"overrides": {"Dataset921_Alpha": {"spacing": [1, 1, 1]}}}),
         r"plans\.overrides\.Dataset921_Alpha\.spacing: unknown key"),
        (lambda d: d.update(patch_size=[32, 32]), r"patch_size: must be three positive integers"),
        (lambda d: d.update(target_spacing=[1, -1, 1]), r"target_spacing: must be three positive numbers"),
        (lambda d: d.update(datasets=[]), r"datasets: must be a non-empty list"),
        (lambda d: d["datasets"][0].update(path="../data/Nope"),
         r"datasets\[0\]\.path: .*Nope: dataset folder not found"),
        (lambda d: d["datasets"][1].update(labeled=["beta_000", "beta_999"]),
         r"datasets\[1\]\.labeled: case ids not in .*imagesTr: \['beta_999'\]"),
        (lambda d: d["datasets"][0].update(exclude=["alpha_001"]),
         r"datasets\[0\]\.exclude: case ids are both labeled and excluded"),
        (lambda d: d["datasets"][0].update(
            labeled={"protocol": "../data/protocol.json", "setting": "labeled_50pct"}),
         r"datasets\[0\]\.labeled\.setting: .*protocol\.json: "
         r"dataset 'Dataset921_Alpha' has no setting 'labeled_50pct'"),
        (lambda d: d["datasets"][0].update(labeled={"protocol": "missing.json", "setting": "x"}),
         r"datasets\[0\]\.labeled\.protocol: file not found"),
        (lambda d: d["datasets"][0].update(labeled=5), r"datasets\[0\]\.labeled: must be 'all', 'none'"),
        (lambda d: d["datasets"][0].update(labelled="all"), r"datasets\[0\]\.labelled: unknown key"),
        (lambda d: d.update(unlabeled_dirs=["../nowhere"]), r"unlabeled_dirs\[0\]\.path: .*not found"),
        (lambda d: d.update(validation={"fraction": 1.5}),
         r"validation\.fraction: must be a number in \[0, 1\)"),
        (lambda d: d.update(model=[1]), r"model: must be a mapping"),
        (lambda d: d.update(seed="x"), r"seed: must be an integer"),
        (lambda d: d.update(label_mapping="nope.json"), r"label_mapping: file not found"),
        (lambda d: d["datasets"].append({"path": "../data/Dataset921_Alpha"}),
         r"datasets\[2\]\.path: dataset Dataset921_Alpha is listed twice"),
    ],
)
def test_bad_config_errors_name_file_and_key(project: Path, change, expected: str) -> None:
    data = _config_dict()
    change(data)
    path = _write(project, data, "bad.yaml")
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")


def test_labeled_case_without_label_file(project: Path) -> None:
    (project / "data" / "Dataset922_Beta" / "labelsTr" / "beta_002.nii.gz").unlink()
    expected = r"datasets\[1\]\.labeled: labeled cases without a label file .*beta_002"
    with pytest.raises(ConfigError, match=expected):
        load_config(_write(project, _config_dict()))


def test_unparsable_and_missing_files(project: Path) -> None:
    bad = project / "configs" / "broken.yaml"
    bad.write_text("datasets: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: cannot parse config"):
        load_config(bad)
    bad_json = project / "configs" / "broken.json"
    bad_json.write_text("{")
    with pytest.raises(ConfigError, match=r"broken\.json: cannot parse config"):
        load_config(bad_json)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(project / "configs" / "none.yaml")
    (project / "configs" / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="config file is empty"):
        load_config(project / "configs" / "empty.yaml")
    (project / "configs" / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match="must be a mapping of keys"):
        load_config(project / "configs" / "list.yaml")


def test_bundled_example_config_loads() -> None:
    cfg = load_config(REPO_ROOT / "examples" / "configs" / "example_data.yaml")
    hippo, spleen = cfg.datasets
    assert len(hippo.labeled_cases()) == 4 and len(hippo.unlabeled_cases()) == 3
    assert spleen.modality == "CT" and len(spleen.labeled_cases()) == 1
    assert cfg.output_dir == REPO_ROOT / "runs" / "example_data"


@pytest.mark.shared_data
def test_shared_protocol_config(shared_data: Path) -> None:
    cfg = load_config(REPO_ROOT / "examples" / "configs" / "shared_10pct.yaml")
    protocol = json.loads((shared_data / "protocol.json").read_text())
    for d in cfg.datasets:
        assert list(d.labeled_ids) == sorted(protocol[d.name]["labeled_10pct"])
        assert len(d.labeled_cases()) + len(d.unlabeled_cases()) == len(d.dataset.cases)
    assert [len(d.labeled_ids) for d in cfg.datasets] == [20, 8, 4]


def test_config_reference_example_uses_only_known_keys() -> None:
    """The complete example in docs/CONFIG.md must stay in step with the parser."""
    from versemi.data.config import DATASET_KEYS, PLANS_KEYS, TOP_LEVEL_KEYS, UNLABELED_DIR_KEYS, VALIDATION_KEYS

    text = (REPO_ROOT / "docs" / "CONFIG.md").read_text()
    example = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert set(example) <= set(TOP_LEVEL_KEYS)
    assert {"datasets", "plans"} <= set(example)
    assert set(example["plans"]) <= set(PLANS_KEYS)
    for entry in example["datasets"]:
        assert set(entry) <= set(DATASET_KEYS)
    for entry in example["unlabeled_dirs"]:
        assert isinstance(entry, str) or set(entry) <= set(UNLABELED_DIR_KEYS)
    assert set(example["validation"]) <= set(VALIDATION_KEYS)


# --- review_dirs -----------------------------------------------------------------------------------
REVIEW_LABELS = [{"value": 1, "name": "liver", "prompt_id": 2}, {"value": 2, "name": "spleen", "prompt_id": 1}]


def _review_folder(project: Path, labels: list[dict] | None = None, folder: str = "review") -> Path:
    """``project/<folder>``: four scans pseudo-labelled; c0 and c2 refined, c3 rejected, c1 pending."""
    from versemi.review import ReviewManifest

    review = project / folder
    scans = project / f"{folder}_scans"
    scans.mkdir(parents=True)
    manifest = ReviewManifest(review)
    for k in range(4):
        image = scans / f"c{k}.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros(TINY, np.float32)), str(image))
        manifest.upsert(f"c{k}", image=image, pseudo_label=None, score=0.1 * k, user="test",
                        labels=labels if labels is not None else REVIEW_LABELS)
    for k in (0, 2):
        label = review / "labelsTr" / f"c{k}.r1.nii.gz"
        label.parent.mkdir(exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(np.ones(TINY, np.uint8)), str(label))
        manifest.set_status(f"c{k}", "refined", refined_label=label, user="test")
    manifest.set_status("c3", "rejected", user="test")
    return review


def test_review_dirs_refined_cases_are_labeled_the_rest_unlabeled(project: Path) -> None:
    review = _review_folder(project)
    data = {**_config_dict(), "review_dirs": [{"path": "../review", "modality": "CT"}]}
    cfg = load_config(_write(project, data))
    (entry,) = cfg.review_dirs
    assert entry.path == review and entry.name == "review" and entry.modality == "CT"
    labeled = [c for c in cfg.labeled_cases() if c.dataset == "review"]
    assert [c.case_id for c in labeled] == ["c0", "c2"]
    assert all(c.label_path is not None and c.label_path.parent == review / "labelsTr" for c in labeled)
    unlabeled = [c for c in cfg.unlabeled_cases() if c.dataset == "review"]
    assert [(c.case_id, c.label_path) for c in unlabeled] == [("c1", None), ("c3", None)]
    # Refined cases are training cases, never validation cases; the datasets' split is unchanged.
    train, val = cfg.split_validation()
    assert [c.case_id for c in train if c.dataset == "review"] == ["c0", "c2"]
    assert not [c for c in val if c.dataset == "review"]
    without = load_config(_write(project, _config_dict(), "plain.yaml"))
    assert val == without.split_validation()[1]
    assert cfg.modality("review") == "CT"
    # The refined values train the prompts of the same NAME; no prompt is added or reordered.
    space = cfg.label_space()
    assert space.names == without.label_space().names
    assert space.prompts_for_dataset("review") == [(space.prompt_id("spleen"), 2), (space.prompt_id("liver"), 1)]
    assert cfg.to_dict()["review_dirs"] == [{"path": str(review), "modality": "CT"}]
    again = TrainConfig.from_dict(cfg.to_dict(), base_dir=project)
    assert again.review_dirs == cfg.review_dirs and again.labeled_cases() == cfg.labeled_cases()


def test_review_dir_modality_defaults_to_the_datasets(project: Path) -> None:
    _review_folder(project)
    data = {**_config_dict(), "review_dirs": ["../review"]}
    data["datasets"][0]["modality"] = "CT"  # both datasets CT now
    cfg = load_config(_write(project, data))
    assert cfg.review_dirs[0].modality is None and cfg.modality("review") == "CT"


def test_review_dir_snapshot_is_taken_at_load(project: Path) -> None:
    from versemi.review import ReviewManifest

    review = _review_folder(project)
    cfg = load_config(_write(project, {**_config_dict(), "review_dirs": [{"path": "../review", "modality": "CT"}]}))
    ReviewManifest(review).set_status("c1", "rejected", user="test")
    ReviewManifest(review).set_status("c2", "pending", user="test")
    assert [c.case_id for c in cfg.labeled_cases() if c.dataset == "review"] == ["c0", "c2"]


def _set_manifest_key(review: Path, key: str, value: object) -> None:
    path = review / "manifest.json"
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("entries", "prepare", "expected"),
    [
        ("../review", None, "review_dirs: must be a list of review folders"),
        ([{"path": "../review", "name": "x"}], None, r"review_dirs\[0\].name: unknown key; allowed keys: path, modality"),
        ([{"modality": "CT"}], None, r"review_dirs\[0\].path: required key is missing"),
        ([{"path": "../nowhere", "modality": "CT"}], None, r"review_dirs\[0\].path: review folder not found"),
        ([{"path": "../data", "modality": "CT"}], None, r"review_dirs\[0\].path: .*manifest.json: review manifest not found"),
        (["../review"], None, r"review_dirs\[0\].modality: required: the datasets mix modalities"),
        ([{"path": "../review", "modality": "CT"}, {"path": "../review", "modality": "CT"}], None,
         r"review_dirs\[1\].path: review folder .* is listed twice"),
        ([{"path": "../review", "modality": "CT"}], lambda r: _set_manifest_key(r, "name", "Dataset922_Beta"),
         r"review_dirs\[0\].path: .*name 'Dataset922_Beta' .* is already used"),
        ([{"path": "../review", "modality": "CT"}],
         lambda r: _set_manifest_key(r, "labels", [{"value": 1, "name": "kidney"}, {"value": 2, "name": "liver"}]),
         r"review_dirs\[0\]: .*manifest.json: label\(s\) \['kidney'\] are not prompts"),
        ([{"path": "../review", "modality": "CT"}], lambda r: _set_manifest_key(r, "labels", None),
         r"review_dirs\[0\].path: .*has refined cases but no label table"),
        ([{"path": "../review", "modality": "CT"}], lambda r: (r / "labelsTr" / "c2.r1.nii.gz").unlink(),
         r"review_dirs\[0\].path: .*case 'c2' is refined but its label .* is missing"),
        ([{"path": "../review", "modality": "CT"}], lambda r: (r.parent / "review_scans" / "c1.nii.gz").unlink(),
         r"review_dirs\[0\].path: .*cases whose image file is missing: \['c1'\]"),
        ([{"path": "../review", "modality": "CT"}], lambda r: (r / "manifest.json").write_text("{"),
         r"review_dirs\[0\].path: .*cannot read review manifest"),
        ([{"path": "../review", "modality": "CT"}], lambda r: _set_manifest_key(r, "cases", []),
         r"review_dirs\[0\].path: .*lists no case"),
    ],
)
def test_bad_review_dirs_name_file_and_key(project: Path, entries, prepare, expected: str) -> None:
    review = _review_folder(project)
    if prepare is not None:
        prepare(review)
    path = _write(project, {**_config_dict(), "review_dirs": entries}, "bad.yaml")
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
