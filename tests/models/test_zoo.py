"""Registry-driven tests for every model (after torchvision's and timm's test_models.py).

Every registered model: forward shape, backward in which every parameter receives a
gradient, no NaN, on the small-input configuration the trainer uses for 28x28 data;
too-small inputs raise a ValueError naming the minimum before any convolution runs.
"""

import pytest
import torch

import cnnkit

ALL_MODELS = cnnkit.list_models()
# The list of names: all must be registered (names are part of the API).
REQUIRED = [
    "alexnet",
    "alexnet_grouped",
    "zfnet",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
    "googlenet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "plain18",
    "plain34",
    "preresnet18",
    "preresnet34",
    "preresnet50",
    "preresnet101",
    "preresnet152",
    "preresnet200",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "wrn_16_4",
    "wrn_28_10",
    "wrn_40_4",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet264",
    "densenet_bc_100_12",
    "seresnet18",
    "seresnet34",
    "seresnet50",
    "seresnet101",
    "seresnet152",
    "seresnext50_32x4d",
    "senet154",
    "mobilenet_v1",
    "mobilenet_v1_conv",
    "shufflenet_v1_g1",
    "shufflenet_v1_g2",
    "shufflenet_v1_g3",
    "shufflenet_v1_g4",
    "shufflenet_v1_g8",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]
HEAVY = {
    "senet154",
    "resnext101_64x4d",
    "resnext101_32x8d",
    "wide_resnet101_2",
    "preresnet200",
    "wrn_28_10",
    "vgg19_bn",
    "vgg19",
    "densenet264",
    "resnet152",
    "seresnet152",
    "preresnet152",
}


def test_all_required_names_registered() -> None:
    missing = sorted(set(REQUIRED) - set(ALL_MODELS))
    assert not missing, f"not registered: {missing}"


def _logits(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # type: ignore[return-value]


def _params(name: str) -> list[pytest.param]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in ALL_MODELS]


@pytest.mark.parametrize("name", _params("small"))
def test_small_input_forward_backward(name: str) -> None:
    model = cnnkit.create_model(name, num_classes=10, in_chans=1, small_input=True)
    model.train()
    x = torch.randn(2, 1, 28, 28)
    out = model(x)
    outs = out if isinstance(out, tuple) else (out,)
    assert _logits(out).shape == (2, 10)
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.float().pow(2).mean() for o in outs).backward()
    no_grad = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not no_grad, f"parameters without a (finite) gradient: {no_grad[:5]}"
    model.eval()
    with torch.no_grad():
        assert _logits(model(x)).shape == (2, 10)


@pytest.mark.parametrize("name", _params("min"))
def test_min_input_size_is_exact(name: str) -> None:
    """The declared minimum runs; one pixel less raises ValueError naming the minimum."""
    model = cnnkit.create_model(name, num_classes=7).eval()
    m = model.min_input_size
    with torch.no_grad():
        assert model(torch.randn(1, 3, m, m)).shape == (1, 7)
    if m > 1:
        with pytest.raises(ValueError, match=f"at least {m}x{m}.*small_input"):
            model(torch.randn(1, 3, m - 1, m - 1))
        # and the minimum is the true one: without the check, the network itself fails one pixel below it
        model._forward_pre_hooks.clear()
        with pytest.raises(RuntimeError), torch.no_grad():
            model(torch.randn(1, 3, m - 1, m - 1))


@pytest.mark.parametrize("name", _params("fx"))
def test_fx_trace_matches_eager(name: str) -> None:
    """Every model is a static graph that torch.fx can trace (no Python shape logic in forward:
    the input check lives in a pre-hook), and the traced graph computes the same outputs."""
    model = cnnkit.create_model(name, num_classes=10, in_chans=1, small_input=True).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), _logits(model(x)))
