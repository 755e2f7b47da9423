"""bench/term_gradients.py on two generated datasets with a tiny VerSemi config: each term's gradient
isolated (the weighted terms add up to the whole loss's gradient), per dataset; refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_scripts import load_bench_script


def _config(tmp_path: Path, datasets: dict[str, Path], method: str = "versemi") -> Path:
    config = {
        "datasets": [
            {"path": str(datasets["Dataset901_Alpha"]), "labeled": ["alpha_000", "alpha_001", "alpha_002"]},
            {"path": str(datasets["Dataset902_Beta"]), "labeled": ["beta_000", "beta_001", "beta_002"]},
        ],
        "target_spacing": [1.5, 1.5, 2.0],
        "patch_size": [16, 16, 16],
        "validation": {"fraction": 0.0},
        "seed": 0,
        "model": {"backbone": "vnet", "base_filters": 4, "depth": 3},
        "training": {"method": method, "precision": "fp32", "stage1_fraction": 0.0,
                     "versemi": {"synthetic_weight": 0.25, "cube_weight": 0.5, "auxiliary_weight": 0.0}},
        "cache_dir": str(tmp_path / "cache"),
        "output_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("part", ["backbone", "head"])
def test_terms_are_isolated_and_add_up_to_the_loss(
    synthetic_datasets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, part: str
) -> None:
    config = _config(tmp_path, synthetic_datasets)
    assert load_bench_script("term_gradients").main([str(config), "--steps", "2", "--part", part, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["part"] == part
    assert result["weights"] == {"supervised": 1.0, "synthetic": 0.25, "cube": 0.5, "consistency": 1.0}
    assert set(result["datasets"]) == {"Dataset901_Alpha", "Dataset902_Beta"}
    assert result["sum_check"] < 1e-4  # fp32: the isolated terms are exactly the parts of the loss
    for row in result["datasets"].values():
        assert row["supervised_norm_ratio"] == pytest.approx(1.0)
        assert row["supervised_cosine"] == pytest.approx(1.0, abs=1e-5)
        for term in ("synthetic", "cube", "consistency"):
            assert row[f"{term}_norm_ratio"] > 0 and -1.0 <= row[f"{term}_cosine"] <= 1.0
            assert row[f"{term}_cosine"] < 0.999  # another direction than the supervised term's


def test_head_part_is_the_shared_weights_without_the_prompt_codes() -> None:
    import torch

    from versemi.network.segmenter import build_model

    model = build_model({"backbone": "vnet", "base_filters": 4, "depth": 3, "num_prompts": 5})
    head = model.head
    context = head.controller.in_features - 5
    head.controller.weight.grad = torch.zeros_like(head.controller.weight)
    head.controller.weight.grad[:, context:] = 1.0  # the per-prompt code columns only
    flat = load_bench_script("term_gradients").shared_gradient(model, "head")()
    shared = sum(p.numel() for p in (*head.input_norm.parameters(), *head.input_projection.parameters()))
    assert flat.numel() == shared + head.controller.bias.numel() + head.controller.out_features * context
    assert float(flat.abs().sum()) == 0.0  # a code column's gradient is not a shared one


def test_refuses_a_missing_checkpoint_and_a_baseline_config(synthetic_datasets: dict[str, Path], tmp_path: Path) -> None:
    script = load_bench_script("term_gradients")
    config = _config(tmp_path, synthetic_datasets)
    with pytest.raises(SystemExit, match=r"nope\.pt: no such file"):
        script.main([str(config), "--checkpoint", str(tmp_path / "nope.pt")])
    with pytest.raises(SystemExit, match="must train VerSemi"):
        script.main([str(_config(tmp_path, synthetic_datasets, method="supervised"))])
