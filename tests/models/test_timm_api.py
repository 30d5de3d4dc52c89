"""timm's model API on the zoo (cnnkit.models.api): features_only with feature_info,
global_pool, get_classifier/reset_classifier, pretrained_cfg, list_models(pretrained=True)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.models import create_model, list_models

# one model per family, at a size its reductions divide
FAMILIES = [
    ("resnet18", 64, False), ("seresnet18", 64, False), ("resnet20", 32, True), ("vgg11", 64, False),
    ("densenet_bc_100_12", 32, True), ("googlenet", 64, False), ("mobilenet_v1", 64, False),
    ("shufflenet_v1_g3", 64, False), ("fmnet", 32, True),
]  # fmt: skip


@pytest.mark.parametrize(("name", "size", "small"), FAMILIES)
def test_features_only_returns_the_maps_feature_info_describes(name: str, size: int, small: bool) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, small_input=small, features_only=True).eval()
    with torch.no_grad():
        maps = model(torch.randn(2, 3, size, size))
    info = model.feature_info
    assert len(maps) == len(info) >= 3
    assert [m.shape[1] for m in maps] == info.channels()
    assert [size // m.shape[-1] for m in maps] == info.reduction()
    assert info.reduction() == sorted(set(info.reduction()))  # one map per resolution, coarser and coarser


def test_resnet18_features_are_torchvisions_stage_outputs() -> None:
    # torchvision's own feature extraction (FX) on the same weights: the stem's ReLU and layer1-4
    from torchvision.models import resnet18
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    ours = create_model("resnet18", features_only=True).eval()
    tv = resnet18().eval()
    tv.load_state_dict(ours.model.state_dict())
    nodes = ["relu", "layer1", "layer2", "layer3", "layer4"]
    theirs = create_feature_extractor(tv, nodes)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours(x), theirs(x).values(), strict=True):
            torch.testing.assert_close(a, b)
    assert ours.feature_info.channels() == [64, 64, 128, 256, 512]
    assert ours.feature_info.reduction() == [2, 4, 8, 16, 32]


def test_out_indices_and_the_head_does_not_run() -> None:
    model = create_model("resnet18", features_only=True, out_indices=(1, -1)).eval()
    assert model.feature_info.reduction() == [4, 32]
    called = []
    model.model.fc.register_forward_hook(lambda *a: called.append(1))
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [64, 512] and not called
    with pytest.raises(ValueError, match="out of range: the model has 5 feature maps"):
        create_model("resnet18", features_only=True, out_indices=(5,))


def test_global_pool_and_the_classifier() -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, global_pool="max").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = model.forward_features(x).amax(dim=(2, 3))
        torch.testing.assert_close(model(x), model.fc(pooled))
    assert model.get_classifier() is model.fc
    model.reset_classifier(0)  # timm: no classifier, the pooled features
    with torch.no_grad():
        torch.testing.assert_close(model(x), pooled)
    model.reset_classifier(5, global_pool="avg")
    assert model(x).shape == (2, 5) and isinstance(model.get_classifier(), nn.Linear)
    vgg = create_model("vgg11")
    assert vgg.get_classifier() is vgg.classifier[6]
    with pytest.raises(ValueError, match="no global pooling to change"):
        create_model("vgg11", global_pool="max")


def test_pretrained_cfg_and_pretrained_models() -> None:
    cfg = create_model("resnet18").pretrained_cfg
    assert cfg["torchvision_weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert cfg["input_size"] == (3, 224, 224) and cfg["mean"] == (0.485, 0.456, 0.406)
    assert cfg["classifier"] == "fc"
    assert create_model("fmnet", in_chans=1, small_input=True).pretrained_cfg["torchvision_weights"] is None
    pretrained = list_models(pretrained=True)
    assert "resnet18" in pretrained and "vgg16_bn" in pretrained and "fmnet" not in pretrained
    assert set(pretrained) < set(list_models())
