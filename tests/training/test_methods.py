"""Every loss term of every method is wired to the right images, prompts and gradients."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from versemi.labels import LabelSpace
from versemi.network.segmenter import build_model
from versemi.training.cutmix import prompt_targets
from versemi.training.losses import SegmentationLossConfig
from versemi.training.methods import StepContext, TrainingBatch, build_method

SHAPE = (16, 16, 16)


@pytest.fixture
def label_space() -> LabelSpace:
    return LabelSpace.from_dataset_labels(
        {
            "A": {"labels": {"background": 0, "organ_a": 1}},
            "B": {"labels": {"background": 0, "spleen": 1, "liver": 2}},
        }
    )


@pytest.fixture
def model(label_space: LabelSpace) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model({"num_prompts": len(label_space), "base_filters": 4, "depth": 3})


def make_batch(label_space: LabelSpace, datasets: list[str], unlabeled: int = 2, seed: int = 0) -> TrainingBatch:
    g = torch.Generator().manual_seed(seed)
    n = len(datasets)
    images = torch.randn((n, 1, *SHAPE), generator=g)
    labels = torch.zeros((n, 1, *SHAPE), dtype=torch.uint8)
    labels[..., 4:10, 4:10, 4:10] = 1
    for i, d in enumerate(datasets):
        if d == "B":
            labels[i, 0, 8:14, 8:14, 8:14] = 2
    u = torch.randn((unlabeled, 1, *SHAPE), generator=g) if unlabeled else None
    return TrainingBatch(images, prompt_targets(labels, datasets, label_space), datasets, u)


class Recorder:
    """A forward function that keeps the logits (with their gradient) of its last call."""

    def __init__(self, model: torch.nn.Module, num_prompts: int) -> None:
        self.model, self.ids, self.logits = model, torch.arange(num_prompts), None
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.model(images, self.ids)
        if out.requires_grad:
            out.retain_grad()
        self.logits = out
        return out


def run(method: Any, batch: TrainingBatch, model: torch.nn.Module, n_prompts: int, step: int = 10,
        teacher: Any = None, seed: int = 1) -> tuple[Any, Recorder]:
    rec = Recorder(model, n_prompts)
    ctx = StepContext(rec, teacher, step, 20, torch.Generator().manual_seed(seed))
    return method.losses(batch, ctx), rec


def test_unlabeled_images_only_change_the_unlabeled_terms(label_space: LabelSpace, model: torch.nn.Module) -> None:
    method = build_method("versemi", 2, label_space, SegmentationLossConfig())
    batch = make_batch(label_space, ["A", "B", "B"])
    zeroed = TrainingBatch(batch.images, batch.annotation, batch.datasets, torch.zeros_like(batch.unlabeled))
    a, _ = run(method, batch, model, len(label_space))
    b, _ = run(method, zeroed, model, len(label_space))
    for term in ("supervised", "synthetic", "auxiliary"):
        assert a.terms[term] == pytest.approx(b.terms[term], abs=1e-6), term
    assert a.terms["consistency"] != pytest.approx(b.terms["consistency"], abs=1e-6)
    assert a.terms["cube"] != pytest.approx(b.terms["cube"], abs=1e-6)
    stage1, _ = run(build_method("versemi", 1, label_space, SegmentationLossConfig()), batch, model, len(label_space))
    assert set(stage1.terms) == {"supervised", "synthetic", "auxiliary"}
    assert stage1.terms["supervised"] == pytest.approx(a.terms["supervised"], abs=1e-6)


def test_supervised_loss_gives_no_gradient_to_prompts_a_dataset_does_not_annotate(
    label_space: LabelSpace, model: torch.nn.Module
) -> None:
    method = build_method("supervised", 1, label_space, SegmentationLossConfig())
    losses, rec = run(method, make_batch(label_space, ["A", "A"], unlabeled=0), model, len(label_space))
    losses.total.backward()
    grad = rec.logits.grad.abs().flatten(2).sum(2)  # (B, P)
    organ = label_space.prompt_id("organ_a")
    assert (grad[:, organ] > 0).all()
    others = [i for i in range(len(label_space)) if i != organ]
    assert (grad[:, others] == 0).all()


def test_stage1_terms_reach_the_right_channels(label_space: LabelSpace, model: torch.nn.Module) -> None:
    synthetic = label_space.synthetic_id
    only_synthetic = build_method("versemi", 1, label_space, SegmentationLossConfig(),
                                  {"versemi": {"supervised_weight": 0, "auxiliary_weight": 0}})
    losses, rec = run(only_synthetic, make_batch(label_space, ["A", "B"], unlabeled=0), model, len(label_space))
    losses.total.backward()
    grad = rec.logits.grad.abs().flatten(2).sum(2)
    assert (grad[:2] == 0).all()  # the un-mixed labeled images get nothing from the synthetic term
    assert (grad[2:, synthetic] > 0).all() and (grad[2:, :synthetic] == 0).all()

    only_aux = build_method("versemi", 1, label_space, SegmentationLossConfig(),
                            {"versemi": {"supervised_weight": 0, "synthetic_weight": 0}})
    model.zero_grad()
    losses, rec = run(only_aux, make_batch(label_space, ["A", "B"], unlabeled=0), model, len(label_space))
    losses.total.backward()
    grad = rec.logits.grad.abs().flatten(2).sum(2)
    assert (grad[:2] == 0).all() and (grad[2:, synthetic] == 0).all()
    assert (grad[2:, :synthetic] > 0).any()


@pytest.mark.parametrize("target, real_grad, synthetic_grad", [
    ("synthetic", True, False), ("aggregate", False, True), ("none", True, True),
])
def test_consistency_stop_gradient_side(label_space: LabelSpace, model: torch.nn.Module, target: str,
                                        real_grad: bool, synthetic_grad: bool) -> None:
    options = {"versemi": {"supervised_weight": 0, "synthetic_weight": 0, "auxiliary_weight": 0, "cube_weight": 0,
                           "consistency_rampup": 0, "consistency_target": target}}
    method = build_method("versemi", 2, label_space, SegmentationLossConfig(), options)
    losses, rec = run(method, make_batch(label_space, ["A", "B"]), model, len(label_space))
    assert losses.terms["consistency_weight"] == 1.0
    losses.total.backward()
    # Without the synthetic and auxiliary terms no CutMix image is forwarded: the last 2 are the unlabeled.
    assert rec.logits.shape[0] == 4
    grad = rec.logits.grad[2:].abs().flatten(2).sum(2)  # the unlabeled (mixed) images
    assert bool((grad[:, :-1] > 0).any()) is real_grad
    assert bool((grad[:, -1] > 0).any()) is synthetic_grad
    assert (rec.logits.grad[:2] == 0).all()


@pytest.mark.parametrize("prompts, other_dataset_grad", [("all", True), ("dataset", False)])
def test_consistency_max_over_all_prompts_or_the_batch_dataset_s(label_space: LabelSpace, model: torch.nn.Module,
                                                                  prompts: str, other_dataset_grad: bool) -> None:
    """``consistency_prompts: dataset`` leaves the other datasets' prompts out of the max: with the real
    side trained (target ``synthetic``), a batch of dataset B's scans sends no gradient to A's prompt."""
    options = {"versemi": {"supervised_weight": 0, "synthetic_weight": 0, "auxiliary_weight": 0, "cube_weight": 0,
                           "consistency_rampup": 0, "consistency_target": "synthetic",
                           "consistency_prompts": prompts}}
    method = build_method("versemi", 2, label_space, SegmentationLossConfig(), options)
    organ_a = label_space.prompt_id("organ_a")
    b_ids = [i for i, _ in label_space.prompts_for_dataset("B")]
    assert method.consistency_prompt_ids(["B", "B"]) == (b_ids if prompts == "dataset" else method.real_ids)
    def organ_a_loudest(images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # A's prompt firing on B's scans (as the left-atrium prompt does on cine MRI): the max of "all".
        logits = model(images, ids)
        return logits + 5.0 * (torch.arange(logits.shape[1]) == organ_a).view(1, -1, 1, 1, 1)

    losses, rec = run(method, make_batch(label_space, ["B", "B"]), organ_a_loudest, len(label_space))
    losses.total.backward()
    grad = rec.logits.grad[2:].abs().flatten(2).sum(2)
    assert bool((grad[:, organ_a] > 0).any()) is other_dataset_grad
    assert bool((grad[:, b_ids] > 0).any()) is not other_dataset_grad  # A's prompt is the max everywhere
    with pytest.raises(ValueError, match="consistency_prompts must be one of"):
        build_method("versemi", 2, label_space, SegmentationLossConfig(), {"versemi": {"consistency_prompts": "x"}})


def test_cube_loss_trains_only_the_synthetic_prompt_inside_the_cube(
    label_space: LabelSpace, model: torch.nn.Module
) -> None:
    """The pasted cube supervises the synthetic prompt only (the method note): every real prompt,
    annotated by the donor's dataset or not, gets exactly zero gradient from it, and so does every
    voxel outside the cube."""
    options = {"versemi": {"supervised_weight": 0, "synthetic_weight": 0, "auxiliary_weight": 0,
                           "consistency_weight": 0}}
    method = build_method("versemi", 2, label_space, SegmentationLossConfig(), options)
    losses, rec = run(method, make_batch(label_space, ["A", "B"]), model, len(label_space))
    assert losses.terms["cube"] > 0
    losses.total.backward()
    grad = rec.logits.grad
    synthetic = label_space.synthetic_id
    assert (grad[:2] == 0).all()  # labeled images: nothing
    assert (grad[2:, :synthetic] == 0).all()  # real prompts of the unlabeled mixes: nothing
    per_image = grad[2:, synthetic].abs()
    assert (per_image.flatten(1).sum(1) > 0).all()
    # Only inside one box per image (the pasted cube): the gradient's support is a box.
    for support in per_image > 0:
        idx = support.nonzero()
        lo, hi = idx.min(0).values, idx.max(0).values + 1
        box = torch.zeros_like(support)
        box[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
        assert bool((support <= box).all())
        assert float(support.float().sum()) / float(box.float().sum()) > 0.5
        assert float(box.float().sum()) < support.numel()


def test_cutmix_partners_are_the_donors_when_given(label_space: LabelSpace, model: torch.nn.Module) -> None:
    batch = make_batch(label_space, ["A", "A"], unlabeled=0)
    donors = make_batch(label_space, ["B", "B"], unlabeled=0, seed=5)
    with_donors = TrainingBatch(batch.images, batch.annotation, batch.datasets, None, donors.images,
                                donors.annotation, donors.datasets)
    method = build_method("versemi", 1, label_space, SegmentationLossConfig())
    _, rec = run(method, with_donors, model, len(label_space))
    seen = {}
    rec_forward = rec.model

    def forward(images: torch.Tensor) -> torch.Tensor:
        seen["images"] = images
        return rec_forward(images, rec.ids)

    ctx = StepContext(forward, None, 0, 10, torch.Generator().manual_seed(1))
    method.losses(with_donors, ctx)
    mixed = seen["images"][2:]
    # Every mixed voxel is the host's or the donor's (never another host image).
    from_host = torch.isclose(mixed, batch.images)
    from_donor = torch.isclose(mixed, donors.images)
    assert bool((from_host | from_donor).all()) and bool(from_donor.any())
    pool_images, _ = with_donors.labeled_pool()
    assert pool_images.shape[0] == 4


def test_consistency_ramps_up(label_space: LabelSpace, model: torch.nn.Module) -> None:
    method = build_method("versemi", 2, label_space, SegmentationLossConfig(), {"versemi": {"consistency_rampup": 0.5}})
    early, _ = run(method, make_batch(label_space, ["A", "B"]), model, len(label_space), step=0)
    late, _ = run(method, make_batch(label_space, ["A", "B"]), model, len(label_space), step=10)
    assert early.terms["consistency_weight"] < 0.01 and late.terms["consistency_weight"] == 1.0


def test_ema_teacher_provides_the_target(label_space: LabelSpace, model: torch.nn.Module) -> None:
    method = build_method("versemi", 2, label_space, SegmentationLossConfig(), {"versemi": {"ema_teacher": True}})
    assert method.uses_teacher
    teacher = Recorder(model, len(label_space))
    run(method, make_batch(label_space, ["A", "B"]), model, len(label_space), teacher=teacher)
    assert teacher.calls == 1
    with pytest.raises(ValueError, match="needs a target side"):
        build_method("versemi", 2, label_space, SegmentationLossConfig(),
                     {"versemi": {"ema_teacher": True, "consistency_target": "none"}})
    with pytest.raises(ValueError, match="unknown key"):
        build_method("versemi", 2, label_space, SegmentationLossConfig(), {"versemi": {"ema": True}})


@pytest.mark.parametrize("name", ["mean_teacher", "bcp"])
def test_baselines_use_the_teacher_and_unlabeled_images(label_space: LabelSpace, model: torch.nn.Module, name: str) -> None:
    method = build_method(name, 1, label_space, SegmentationLossConfig())
    assert method.uses_teacher and method.uses_unlabeled
    teacher = Recorder(model, len(label_space))
    losses, rec = run(method, make_batch(label_space, ["A", "B"]), model, len(label_space), teacher=teacher)
    assert teacher.calls == 1 and rec.calls == 1
    assert torch.isfinite(losses.total)
    losses.total.backward()
    assert rec.logits.grad[:, -1].abs().sum() == 0  # baselines never train the synthetic prompt


@pytest.mark.parametrize("prompts, other_dataset_grad", [("all", True), ("dataset", False)])
def test_mean_teacher_consistency_over_all_prompts_or_the_batch_dataset_s(
    label_space: LabelSpace, model: torch.nn.Module, prompts: str, other_dataset_grad: bool
) -> None:
    """``mean_teacher.consistency_prompts: dataset``: dataset B's unlabeled scans train only B's prompts."""
    options = {"mean_teacher": {"consistency_rampup": 0, "consistency_prompts": prompts}}
    method = build_method("mean_teacher", 1, label_space, SegmentationLossConfig(), options)
    teacher = Recorder(model, len(label_space))
    losses, rec = run(method, make_batch(label_space, ["B", "B"]), model, len(label_space), teacher=teacher)
    assert losses.terms["consistency_weight"] == pytest.approx(0.1)
    losses.total.backward()
    grad = rec.logits.grad[2:].abs().flatten(2).sum(2)  # the unlabeled images
    organ_a = label_space.prompt_id("organ_a")
    b_ids = [i for i, _ in label_space.prompts_for_dataset("B")]
    assert bool((grad[:, organ_a] > 0).any()) is other_dataset_grad
    assert (grad[:, b_ids] > 0).all()
    with pytest.raises(ValueError, match="mean_teacher.consistency_prompts must be one of"):
        build_method("mean_teacher", 1, label_space, SegmentationLossConfig(),
                     {"mean_teacher": {"consistency_prompts": "x"}})


def test_cube_loss_dice_only_drops_the_cross_entropy_of_the_cube(label_space: LabelSpace, model: torch.nn.Module) -> None:
    batch = make_batch(label_space, ["A", "B", "B"])
    cfg = SegmentationLossConfig()
    dice_ce, _ = run(build_method("versemi", 2, label_space, cfg, {"versemi": {"cube_loss": "dice_ce"}}),
                     batch, model, len(label_space))
    dice_only, _ = run(build_method("versemi", 2, label_space, cfg), batch, model, len(label_space))  # default
    dice_part, _ = run(build_method("versemi", 2, label_space, SegmentationLossConfig(ce_weight=0.0)),
                       batch, model, len(label_space))
    assert dice_only.terms["cube"] == pytest.approx(dice_part.terms["cube"], abs=1e-6)
    assert dice_only.terms["cube"] < dice_ce.terms["cube"]
    for term in ("supervised", "synthetic", "auxiliary", "consistency"):
        assert dice_only.terms[term] == pytest.approx(dice_ce.terms[term], abs=1e-6), term
    with pytest.raises(ValueError, match="cube_loss"):
        build_method("versemi", 2, label_space, cfg, {"versemi": {"cube_loss": "ce"}})
