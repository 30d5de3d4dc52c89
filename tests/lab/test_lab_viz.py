"""cnnkit.viz against definitions written out here: the saliency of a linear classifier is
|W_k| (Simonyan et al. sec. 3), feature maps are F.conv2d of the image, layer statistics are
the std of the activations and of autograd's gradient, and the plots draw what they get."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.viz.maps import (
    feature_maps,
    first_layer_filters,
    plot_feature_maps,
    plot_filters,
    plot_saliency,
    saliency,
)
from cnnkit.viz.plots import plot_rf_growth, plot_schedules
from cnnkit.viz.stats import (
    activation_module_types,
    layer_stats,
    plot_activation_histograms,
    plot_layer_scales,
)


def _conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    )


def test_saliency_of_a_linear_model_is_the_absolute_class_weight_max_over_channels() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(2 * 5 * 5, 4)
    model = nn.Sequential(nn.Flatten(), lin)
    image = torch.randn(2, 5, 5)
    sal, k = saliency(model, image, target=2)
    assert k == 2
    expected = lin.weight[2].detach().view(2, 5, 5).abs().amax(0)
    torch.testing.assert_close(sal, expected)
    # default target: the predicted class
    _, k_pred = saliency(model, image)
    assert k_pred == int(model(image[None]).argmax())
    # parameters keep requires_grad and get no gradient
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_saliency_rejects_a_batch_and_a_bad_class() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="one standardised float image"):
        saliency(model, torch.randn(1, 1, 2, 2))
    with pytest.raises(ValueError, match="out of range"):
        saliency(model, torch.randn(1, 2, 2), target=5)


def test_feature_maps_are_the_convolution_of_the_image_in_eval_mode() -> None:
    net = _conv_net().train()
    image = torch.randn(1, 8, 8)
    name, maps = feature_maps(net, image)
    assert name == "0"
    conv = net[0]
    torch.testing.assert_close(maps, F.conv2d(image[None], conv.weight, conv.bias, padding=1)[0])
    assert net.training  # mode restored
    name, maps = feature_maps(net, image, "1")
    torch.testing.assert_close(maps, torch.tanh(F.conv2d(image[None], conv.weight, conv.bias, padding=1))[0])
    with pytest.raises(ValueError, match="no module 'nope'"):
        feature_maps(net, image, "nope")
    with pytest.raises(ValueError, match="does not output a feature map"):
        feature_maps(net, image, "5")


def test_first_layer_filters_are_the_first_conv_weights() -> None:
    net = _conv_net()
    torch.testing.assert_close(first_layer_filters(net), net[0].weight.detach())
    with pytest.raises(ValueError, match="no Conv2d"):
        first_layer_filters(nn.Linear(2, 2))


def test_layer_stats_match_a_hand_computed_forward_and_backward() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(7, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    stats = layer_stats(net, x, y)
    assert [s.name for s in stats.layers] == ["1"]
    a = torch.tanh(net[0](x)).detach().requires_grad_(True)
    loss = F.cross_entropy(net[2](a), y)
    loss.backward()
    s = stats.layers[0]
    assert s.std == pytest.approx(float(a.detach().std()), rel=1e-5)
    assert s.mean == pytest.approx(float(a.detach().mean()), abs=1e-6)
    assert s.grad_std == pytest.approx(float(a.grad.std()), rel=1e-5)
    assert stats.loss == pytest.approx(float(loss.detach()), rel=1e-6)
    # the weight gradient norms are autograd's; the model's own gradients are left as they were
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    assert stats.weight_grad_norms["0.weight"] == pytest.approx(float(net[0].weight.grad.norm()), rel=1e-5)
    grads_before = net[0].weight.grad.clone()
    layer_stats(net, x, y)
    torch.testing.assert_close(net[0].weight.grad, grads_before)


def test_layer_stats_names_a_reused_module_per_call_and_falls_back_to_convs() -> None:
    act = nn.ReLU()
    net = nn.Sequential(nn.Linear(3, 3), act, nn.Linear(3, 3), act)
    stats = layer_stats(net, torch.randn(4, 3))
    assert [s.name for s in stats.layers] == ["1", "1#2"]
    conv_only = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    assert [s.name for s in layer_stats(conv_only, torch.randn(2, 1, 6, 6)).layers] == ["0", "2"]
    assert nn.Tanh in activation_module_types() and nn.Identity not in activation_module_types()


def test_plots_write_png_files(tmp_path: Path) -> None:
    from cnnkit.train.schedule import Schedule

    net = _conv_net()
    image = torch.randn(1, 8, 8)
    stats = {"a": layer_stats(net, torch.randn(4, 1, 8, 8)), "b": layer_stats(net, torch.randn(4, 1, 8, 8))}
    figs = {
        "filters": lambda p: plot_filters(net, output=p),
        "maps": lambda p: plot_feature_maps(image, feature_maps(net, image)[1], output=p),
        "saliency": lambda p: plot_saliency([image], [saliency(net, image)[0]], titles=["x"], output=p),
        "hist": lambda p: plot_activation_histograms(stats, output=p),
        "scales": lambda p: plot_layer_scales(stats, output=p),
        "lr": lambda p: plot_schedules({"cosine": Schedule("cosine", 20, 5)}, lr=0.1, output=p),
        "rf": lambda p: plot_rf_growth(
            {"net": nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3))}, (1, 16, 16), output=p
        ),
    }
    for name, draw in figs.items():
        path = tmp_path / f"{name}.png"
        draw(path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    with pytest.raises(ValueError, match="as many saliency maps"):
        plot_saliency([image], [])
