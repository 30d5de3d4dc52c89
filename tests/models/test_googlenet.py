"""GoogLeNet against torchvision's GoogLeNet and the paper's Table 1 (Szegedy et al. 2015)."""

import warnings

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.models.googlenet import INCEPTION_WIDTHS, GoogLeNet, GoogLeNetOutputs, googlenet
from cnnkit.models.registry import load_torchvision_weights

TV_NUM_PARAMS = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.meta["num_params"]  # 6,624,904

# Szegedy et al. 2015, Table 1, "params" column in K (= 1024): the nine Inception modules and the linear layer.
PAPER_TABLE_1_K = {
    "inception3a": 159, "inception3b": 380, "inception4a": 364, "inception4b": 437, "inception4c": 463,
    "inception4d": 580, "inception4e": 840, "inception5a": 1072, "inception5b": 1388, "fc": 1000,
}  # fmt: skip
PAPER_TABLE_1_TOTAL_K = (
    2.7 + 112 + sum(PAPER_TABLE_1_K.values())
)  # + conv 7x7 (2.7K) and conv 3x3 (112K): ~6.8M


def _tv(aux_logits: bool) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.GoogLeNet(aux_logits=aux_logits, transform_input=False, init_weights=False)


def _n(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _weights(m: nn.Module) -> int:
    return sum(x.weight.numel() for x in m.modules() if isinstance(x, nn.Conv2d | nn.Linear))


def test_param_count_and_state_dict_equal_torchvision() -> None:
    ours, tv = googlenet(), _tv(aux_logits=False)
    assert _n(ours) == _n(tv) == TV_NUM_PARAMS == 6_624_904
    a, b = ours.state_dict(), tv.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_aux_logits_state_dict_equals_torchvision() -> None:
    ours, tv = googlenet(aux_logits=True), _tv(aux_logits=True)
    a, b = ours.state_dict(), tv.state_dict()
    assert list(a) == list(b) and any(k.startswith("aux1.") for k in a)
    assert all(a[k].shape == b[k].shape for k in a)
    assert _n(ours) == _n(tv) == 13_004_888


def test_loaded_torchvision_weights_give_equal_outputs_in_eval() -> None:
    tv = _tv(aux_logits=False)
    for m in tv.modules():  # non-trivial running statistics, so the norm layers are exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = googlenet()
    assert load_torchvision_weights(ours, tv.state_dict(), strict=True) == []
    ours.eval(), tv.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))


def test_aux_outputs_equal_torchvision_in_training() -> None:
    """With aux_logits in training mode: (logits, aux_logits2, aux_logits1), as torchvision returns them."""
    tv = _tv(aux_logits=True)
    tv.dropout.p = tv.aux1.dropout.p = tv.aux2.dropout.p = 0.0
    ours = googlenet(aux_logits=True, drop_rate=0.0, aux_drop_rate=0.0)
    ours.load_state_dict(tv.state_dict(), strict=True)
    ours.train(), tv.train()
    x = torch.randn(2, 3, 96, 96)
    out, ref = ours(x), tv(x)
    assert isinstance(out, GoogLeNetOutputs) and out._fields == ("logits", "aux_logits2", "aux_logits1")
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(out.aux_logits1, out.aux_logits2)
    ours.eval()
    with torch.no_grad():
        assert isinstance(ours(x), torch.Tensor)


def test_without_aux_training_returns_tensor() -> None:
    m = googlenet(num_classes=5).train()
    out = m(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)
    assert m.aux1 is None and m.aux2 is None


def test_paper_table_1_params() -> None:
    """With the paper's 5x5 branch and weights only: 3a is 159K, conv2+conv3 112K, total ~6.8M (K = 1024).

    A few rows of Table 1 disagree with its own widths (4c: 463K printed, 497.5K from the
    widths), so the modules are checked to 10% and the total to 1%.
    """
    paper = googlenet(branch3_kernel_size=5, norm_layer="none")
    modules = dict(paper.named_children())
    assert _weights(modules["inception3a"]) // 1024 == 159
    assert _weights(modules["conv2"]) + _weights(modules["conv3"]) == 112 * 1024
    for name, k in PAPER_TABLE_1_K.items():
        assert abs(_weights(modules[name]) / 1024 - k) / k < 0.1, name
    total_k = _weights(paper) / 1024
    assert abs(total_k - PAPER_TABLE_1_TOTAL_K) / PAPER_TABLE_1_TOTAL_K < 0.01
    assert 6.75e3 < total_k < 6.85e3  # "about 6.8M" in the paper's units


def test_torchvision_count_explained_from_paper_count() -> None:
    """6,624,904 = paper-net weights - 3x3-vs-5x5 saving + batch-norm scale/shift + classifier bias."""
    paper_weights = _weights(googlenet(branch3_kernel_size=5, norm_layer="none"))
    saving = sum(
        16 * red * out for (_, _, _, red, out, _) in INCEPTION_WIDTHS.values()
    )  # (25 - 9) per kernel
    bn_channels = sum(m.num_features for m in googlenet().modules() if isinstance(m, nn.BatchNorm2d))
    assert paper_weights == 6_990_272 and saving == 380_928
    assert paper_weights - saving + 2 * bn_channels + 1000 == TV_NUM_PARAMS


@pytest.mark.parametrize("small_input", [False, True])
def test_min_input_size_is_exact(small_input: bool) -> None:
    m = googlenet(num_classes=3, small_input=small_input).eval()
    s = m.min_input_size
    assert s == (2 if small_input else 15)  # torchvision's meta: min_size (15, 15)
    with torch.no_grad():
        assert m(torch.randn(1, 3, s, s)).shape == (1, 3)
        with pytest.raises(ValueError, match=f"at least {s}x{s}"):
            m(torch.randn(1, 3, s - 1, s))
        m._forward_pre_hooks.clear()
        with pytest.raises(RuntimeError):
            m(torch.randn(1, 3, s - 1, s - 1))


@pytest.mark.parametrize("aux_logits", [False, True])
def test_small_input_forward_backward(aux_logits: bool) -> None:
    m = googlenet(num_classes=10, in_chans=1, small_input=True, aux_logits=aux_logits).train()
    assert m.conv1.conv.stride == (1, 1) and isinstance(m.maxpool1, nn.Identity)
    out = m(torch.randn(2, 1, 28, 28))
    outs = tuple(out) if isinstance(out, tuple) else (out,)
    assert len(outs) == (3 if aux_logits else 1) and all(o.shape == (2, 10) for o in outs)
    sum(o.pow(2).mean() for o in outs).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_small_input_keeps_module_names() -> None:
    a, b = googlenet().state_dict(), googlenet(small_input=True).state_dict()
    assert list(a) == list(b)
    assert [k for k in a if a[k].shape != b[k].shape] == ["conv1.conv.weight"]


def test_paper_5x5_branch_option() -> None:
    m = googlenet(branch3_kernel_size=5)
    assert m.inception4a.branch3[1].conv.kernel_size == (5, 5)
    assert googlenet().inception4a.branch3[1].conv.kernel_size == (3, 3)
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("kwargs", [{"drop_rate": 1.0}, {"num_classes": 0}, {"branch3_kernel_size": 7}])
def test_invalid_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        googlenet(**kwargs)


def test_builder_returns_googlenet_and_validates_aux_drop() -> None:
    assert isinstance(googlenet(num_classes=4), GoogLeNet)
    with pytest.raises(ValueError, match="drop_rate"):
        googlenet(aux_logits=True, aux_drop_rate=1.5)
