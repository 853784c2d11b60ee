"""VNet and UNet3D: shapes, norms, divisibility, parameter counts, a training step."""

from __future__ import annotations

import pytest
import torch

from vesselseg.config import ModelConfig
from vesselseg.errors import ConfigError
from vesselseg.losses import masked_dice_bce_loss
from vesselseg.models import build_model, count_parameters, group_count
from vesselseg.models.unet3d import UNet3D
from vesselseg.models.vnet import VNet

MODELS = {"vnet": VNet, "unet": UNet3D}
SMALL = {"base_channels": 4, "depth": 3}


@pytest.mark.parametrize("name", ["vnet", "unet"])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_output_shape_matches_input(name: str, norm: str) -> None:
    model = MODELS[name](norm=norm, **SMALL)
    x = torch.randn(2, 1, 32, 32, 32)
    assert model(x).shape == (2, 1, 32, 32, 32)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 16, 8, 24)).shape == (1, 1, 16, 8, 24)


@pytest.mark.parametrize("name", ["vnet", "unet"])
def test_several_input_channels(name: str) -> None:
    model = MODELS[name](in_channels=3, base_channels=4, depth=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, 8, 8)).shape == (1, 1, 8, 8, 8)


def test_vnet_depth_one() -> None:
    model = VNet(base_channels=4, depth=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 5, 7, 9)).shape == (1, 1, 5, 7, 9)


@pytest.mark.parametrize("name", ["vnet", "unet"])
def test_build_model_picks_the_class(name: str) -> None:
    model = build_model(ModelConfig(name=name, **SMALL))
    assert type(model) is MODELS[name]
    assert build_model(ModelConfig(name=name, **SMALL), in_channels=2) is not None


@pytest.mark.parametrize("name", ["unet", "unet2d"])
def test_build_model_bad_depth_raises_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="model.depth"):
        build_model(ModelConfig(name=name, depth=1))


@pytest.mark.parametrize("name", ["vnet", "unet"])
def test_indivisible_input_raises(name: str) -> None:
    model = MODELS[name](**SMALL)  # needs multiples of 4
    with pytest.raises(ValueError, match=r"divisible by 2\*\*\(depth-1\) = 4"):
        model(torch.randn(1, 1, 16, 18, 16))
    with pytest.raises(ValueError, match="Z, Y, X"):
        model(torch.randn(1, 16, 16, 16))


@pytest.mark.parametrize("name", ["vnet", "unet"])
def test_parameter_counts(name: str) -> None:
    small = count_parameters(MODELS[name](base_channels=4, depth=3))
    large = count_parameters(MODELS[name](base_channels=8, depth=3))
    assert 0 < small < large
    frozen = MODELS[name](base_channels=4, depth=3)
    frozen.head.requires_grad_(False)
    assert count_parameters(frozen) < small


def test_group_count_divides_channels() -> None:
    assert group_count(4, 8) == 4
    assert group_count(16, 8) == 8
    assert group_count(12, 8) == 6
    assert group_count(7, 8) == 7
    assert group_count(10, 3) == 2
    model = VNet(norm="group", groups=8, base_channels=4, depth=3)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 for m in norms)
    assert {m.num_groups for m in norms} == {4, 8}


@pytest.mark.parametrize("name", ["vnet", "unet"])
def test_dropout_in_train_mode(name: str) -> None:
    model = MODELS[name](dropout=0.5, **SMALL)
    assert any(isinstance(m, torch.nn.Dropout3d) for m in model.modules())
    x = torch.randn(2, 1, 16, 16, 16)
    torch.manual_seed(0)
    first = model.train()(x)
    torch.manual_seed(1)
    second = model(x)
    assert first.shape == (2, 1, 16, 16, 16)
    assert not torch.allclose(first, second)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", ["vnet", "unet"])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_one_step_reduces_the_masked_loss(name: str, norm: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name](norm=norm, **SMALL).train()
    x = torch.randn(2, 1, 16, 16, 16)
    target = torch.randint(0, 3, (2, 1, 16, 16, 16))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = masked_dice_bce_loss(model(x), target)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = masked_dice_bce_loss(model(x), target)
    assert after.item() < before.item()
