"""Per-plan network geometry: anisotropic plans pool and convolve in-plane, one set of weights for all."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from versemi.cli.plan import format_plans
from versemi.data.plans import DEFAULT_PATCH_VOXELS, DatasetPlan, Plans, PlansError, plan_dataset
from versemi.network import build_model
from versemi.network.backbones import Conv3d, Resample
from versemi.network.geometry import NetworkGeometry, plan_geometry

from tests.data.test_plans import ACDC, HIPPOCAMPUS, LEFT_ATRIUM

DEPTH = 4  # the CPU recipe's U-Net


def _unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model({"num_prompts": 3, "backbone": "unet", "base_filters": 4, "depth": DEPTH}).eval()


def test_acdc_keeps_slices_at_the_bottleneck_while_the_hippocampus_pools_isotropically() -> None:
    acdc = plan_dataset(ACDC, DEFAULT_PATCH_VOXELS, 2 ** (DEPTH - 1))
    hippocampus = plan_dataset(HIPPOCAMPUS, DEFAULT_PATCH_VOXELS, 2 ** (DEPTH - 1))
    assert acdc.patch_size[2] == 8  # 8 slices of 10 mm
    assert acdc.network is not None and hippocampus.network is not None
    assert acdc.network.bottleneck_size(acdc.patch_size)[2] >= 2
    assert acdc.network.pool[0] == (2, 2, 1) and acdc.network.kernel[0] == (3, 3, 1)  # in-plane first
    assert hippocampus.network.is_isotropic

    # The network really keeps those slices: the bottleneck tensor of an 8-slice ACDC patch.
    model = _unet()
    x, y, z = acdc.patch_size
    _, bottleneck = model.backbone(torch.zeros(1, 1, z, y, x), acdc.network)
    assert bottleneck.shape[2] == acdc.network.bottleneck_size(acdc.patch_size)[2] >= 2
    _, iso = model.backbone(torch.zeros(1, 1, z, y, x))
    assert iso.shape[2] == 1  # what the isotropic network did to ACDC


def test_left_atrium_plan_is_isotropic() -> None:
    plan = plan_dataset(LEFT_ATRIUM, DEFAULT_PATCH_VOXELS, 2 ** (DEPTH - 1))
    assert plan.network is not None and plan.network.is_isotropic


def test_rule_stops_pooling_small_axes_and_goes_isotropic_once_spacing_catches_up() -> None:
    g = plan_geometry((0.8, 0.8, 5.0), (64, 64, 8), 5)
    # 5 mm vs 0.8 mm: in-plane only until the in-plane spacing reaches 3.2 mm (ratio < 2 from then on);
    # then z pools 8 -> 4 and stops (a pooled axis keeps >= 4 voxels).
    assert g.pool == ((2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 1))
    assert g.kernel[:3] == ((3, 3, 1), (3, 3, 1), (3, 3, 3))
    assert g.divisor == (16, 16, 2)


def test_isotropic_geometry_is_the_network_without_one() -> None:
    model = _unet()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x, [0, 1]), model(x, [0, 1], NetworkGeometry.isotropic(DEPTH)))


def test_one_set_of_weights_serves_every_geometry() -> None:
    model = _unet()
    names = [n for n, _ in model.named_parameters()]
    acdc = plan_dataset(ACDC, DEFAULT_PATCH_VOXELS, 2 ** (DEPTH - 1)).network
    x = torch.randn(1, 1, 8, 32, 32)
    model.train()
    model(x, [0, 1, 2], acdc).sum().backward()
    grads_anisotropic = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    model.zero_grad()
    model(torch.randn(1, 1, 16, 16, 16), [0, 1, 2]).sum().backward()
    grads_isotropic = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    # Both geometries train the same parameters: nothing is private to a plan.
    assert grads_anisotropic == grads_isotropic
    assert len(grads_isotropic) > 0.9 * len(names)


def test_in_plane_kernel_is_the_centre_of_the_3d_kernel() -> None:
    torch.manual_seed(0)
    conv = Conv3d(2, 3, 3, padding=1, bias=True)
    x = torch.randn(1, 2, 5, 7, 6)
    expected = F.conv3d(x, conv.weight[:, :, 1:2], conv.bias, padding=(0, 1, 1))
    assert torch.allclose(conv(x, (1, 3, 3)), expected, atol=1e-6)
    # In-plane: a slice never reads its neighbours.
    x2 = x.clone()
    x2[:, :, 0] += 10.0
    assert torch.allclose(conv(x, (1, 3, 3))[:, :, 1:], conv(x2, (1, 3, 3))[:, :, 1:], atol=1e-5)


def test_unpooled_axis_keeps_its_size_up_and_down() -> None:
    torch.manual_seed(0)
    down = Resample(torch.nn.Conv3d, 2, 4, "none", torch.nn.ReLU)
    up = Resample(torch.nn.ConvTranspose3d, 4, 2, "none", torch.nn.ReLU)
    x = torch.randn(1, 2, 6, 8, 8)
    d = down(x, (1, 2, 2))
    assert d.shape == (1, 4, 6, 4, 4)
    assert up(d, (1, 2, 2)).shape == (1, 2, 6, 8, 8)
    # A volume constant along the unpooled axis gives what the 2x2x2 kernel gives on it (the sum).
    const = x[:, :, :1].expand(-1, -1, 2, -1, -1)
    assert torch.allclose(down(const, (2, 2, 2)), down(const[:, :, :1], (1, 2, 2)), atol=1e-5)


def test_plans_store_the_geometry_and_version_1_plans_read_as_isotropic() -> None:
    plan = plan_dataset(ACDC, DEFAULT_PATCH_VOXELS, 8)
    plans = Plans({plan.dataset: plan}, size_divisor=8)
    back = Plans.from_dict(plans.to_dict())
    assert back.datasets[plan.dataset].network == plan.network
    old = plans.to_dict()
    old["version"] = 1
    del old["datasets"][plan.dataset]["network"]
    assert Plans.from_dict(old).datasets[plan.dataset].network is None
    old["version"] = 99
    with pytest.raises(PlansError, match="version 99"):
        Plans.from_dict(old)
    assert "bottleneck 13 x 13 x 4" in format_plans(plans)


def test_isotropic_setting_plans_no_geometry() -> None:
    assert plan_dataset(ACDC, DEFAULT_PATCH_VOXELS, 8, network_geometry="isotropic").network is None
    with pytest.raises(PlansError, match="network_geometry"):
        plan_dataset(ACDC, DEFAULT_PATCH_VOXELS, 8, network_geometry="2d")


def test_geometry_of_another_depth_is_refused() -> None:
    model = _unet()
    with pytest.raises(ValueError, match="stages"):
        model(torch.zeros(1, 1, 16, 16, 16), [0], NetworkGeometry.isotropic(DEPTH + 1))


def test_dataset_plan_round_trip_keeps_geometry() -> None:
    plan = plan_dataset(ACDC, DEFAULT_PATCH_VOXELS, 8)
    assert DatasetPlan.from_dict(plan.to_dict()) == plan


def test_checkpoints_planned_before_geometries_load_as_isotropic(tmp_path) -> None:
    from versemi.checkpoint import Checkpoint
    from versemi.models import resolve_default_model

    _, path = resolve_default_model()
    payload = torch.load(path, map_location="cpu", weights_only=True)
    plans = payload["plans"]  # made version 1, as checkpoints were before plan geometries existed
    plans["version"] = 1
    for plan in plans["datasets"].values():
        del plan["network"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    ckpt = Checkpoint.load(old)
    assert all(plan.network is None for plan in ckpt.plans.datasets.values())
    model = ckpt.build_model().eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 8, 104, 104), [0], None).shape == (1, 1, 8, 104, 104)


def test_the_shipped_default_model_carries_each_plans_geometry() -> None:
    from versemi.checkpoint import Checkpoint
    from versemi.models import resolve_default_model

    _, path = resolve_default_model()
    plans = Checkpoint.load(path).plans
    acdc = plans.datasets["Dataset003_ACDC"]
    assert acdc.network is not None and acdc.network.bottleneck_size(acdc.patch_size)[2] >= 2
    assert plans.datasets["Dataset001_Hippocampus"].network.is_isotropic
