"""Optimisers (lecture: "Learning Rates"): SGD with momentum / Nesterov, Adam, AdamW, and weight
decay that skips norm weights and biases (Goyal et al. 2017; timm's default) unless asked.

The decay groups are checked by identity and by behaviour: with a zero gradient, one SGD step
shrinks a decayed tensor by exactly (1 - lr * wd) (L2 decay: p <- p - lr (g + wd p)) and one
AdamW step by (1 - lr * wd) (decoupled decay, Loshchilov & Hutter 2019), while the excluded
tensors do not move.
"""

import pytest
import torch
from torch import nn

from cnnkit.train.optim import OPTIMIZERS, build_optimizer, param_groups


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm([4, 5, 5])  # a norm whose scale is 3-D, not 1-D
        self.fc = nn.Linear(100, 3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.gn(self.bn(self.conv(x))))
        return self.frozen(self.fc(x.flatten(1)))


def _ids(params: list[nn.Parameter]) -> set[int]:
    return {id(p) for p in params}


def test_decay_skips_norm_weights_and_biases() -> None:
    m = _Net()
    decay, no_decay = param_groups(m, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert _ids(decay["params"]) == {id(m.conv.weight), id(m.fc.weight)}
    skipped = [m.conv.bias, m.bn.weight, m.bn.bias, m.gn.weight, m.gn.bias, m.ln.weight, m.ln.bias, m.fc.bias]
    assert _ids(no_decay["params"]) == _ids(skipped)
    assert len(decay["params"]) + len(no_decay["params"]) == len(_ids(decay["params"] + no_decay["params"]))


def test_decay_norm_bias_decays_everything_trainable() -> None:
    m = _Net()
    groups = param_groups(m, 0.05, decay_norm_bias=True)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.05
    assert _ids(groups[0]["params"]) == {id(p) for p in m.parameters() if p.requires_grad}
    assert id(m.frozen.weight) not in _ids(groups[0]["params"])


def test_tied_parameter_appears_once() -> None:
    emb = nn.Linear(4, 4, bias=False)
    head = nn.Linear(4, 4, bias=False)
    head.weight = emb.weight
    groups = param_groups(nn.Sequential(emb, head), 0.1)
    assert [len(g["params"]) for g in groups] == [1, 0]


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_decay_acts_only_on_the_decay_group(name: str) -> None:
    torch.manual_seed(0)
    m = _Net()
    for p in m.parameters():  # non-trivial values for every tensor, norms included
        p.data.uniform_(0.5, 1.5)
    lr, wd = 0.1, 0.2
    opt = build_optimizer(m, name, lr=lr, momentum=0.0 if name == "sgd" else 0.9, weight_decay=wd)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None  # zero loss gradient: only decay moves p
    opt.step()
    for n, p in m.named_parameters():
        if n in ("conv.weight", "fc.weight"):
            # SGD: p - lr * wd * p; AdamW: p * (1 - lr * wd) -- the same number for a zero gradient
            assert torch.allclose(p, before[n] * (1 - lr * wd), rtol=1e-6), n
        else:
            assert torch.equal(p, before[n]), f"{n} must not decay"


def test_sgd_momentum_and_nesterov() -> None:
    m = _Net()
    opt = build_optimizer(m, "sgd", lr=0.3, momentum=0.8, weight_decay=1e-4)
    assert type(opt) is torch.optim.SGD
    for g in opt.param_groups:
        assert g["lr"] == 0.3 and g["momentum"] == 0.8 and g["nesterov"] is True
    plain = build_optimizer(m, "sgd", lr=0.3, momentum=0.8, nesterov=False)
    assert all(g["nesterov"] is False for g in plain.param_groups)
    # Nesterov needs momentum: with momentum 0 it is plain SGD instead of torch's error
    no_mom = build_optimizer(m, "sgd", lr=0.3, momentum=0.0, nesterov=True)
    assert all(g["nesterov"] is False and g["momentum"] == 0.0 for g in no_mom.param_groups)


def test_nesterov_update_matches_its_formula() -> None:
    # v <- mu v + g ; p <- p - lr (g + mu v)   (Sutskever et al. 2013, as torch writes it)
    p = nn.Parameter(torch.tensor([1.0]))
    model = nn.Module()
    model.w = p
    opt = build_optimizer(model, "sgd", lr=0.1, momentum=0.9, nesterov=True)
    v, ref = 0.0, 1.0
    for g in (0.5, -0.25, 1.0):
        p.grad = torch.tensor([g])
        opt.step()
        v = 0.9 * v + g
        ref -= 0.1 * (g + 0.9 * v)
        assert p.item() == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize(("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_family_hyperparameters(name: str, cls: type) -> None:
    m = _Net()
    opt = build_optimizer(m, name, lr=2e-3, momentum=0.85, weight_decay=0.03)
    assert type(opt) is cls
    decay, no_decay = opt.param_groups
    assert decay["lr"] == no_decay["lr"] == 2e-3
    assert decay["betas"] == (0.85, 0.999)
    assert decay["weight_decay"] == 0.03 and no_decay["weight_decay"] == 0.0


def test_unknown_optimizer_raises_with_close_match() -> None:
    with pytest.raises(ValueError, match="did you mean adamw"):
        build_optimizer(_Net(), "adam_w", lr=0.1)
    with pytest.raises(ValueError, match="choose from sgd, adam, adamw"):
        build_optimizer(_Net(), "lbfgs", lr=0.1)
    assert OPTIMIZERS == ("sgd", "adam", "adamw")


def test_bad_hyperparameters_raise() -> None:
    cases = [
        ("lr", {"lr": -0.1}),
        ("lr", {"lr": 0.0}),
        ("lr", {"lr": float("nan")}),
        ("weight decay", {"lr": 0.1, "weight_decay": -1.0}),  # torch does not check it per group
        ("momentum", {"lr": 0.1, "momentum": -0.5}),
        ("momentum", {"lr": 0.1, "momentum": 1.0}),
    ]
    for name in OPTIMIZERS:
        for what, kwargs in cases:
            with pytest.raises(ValueError, match=what):
                build_optimizer(_Net(), name, **kwargs)


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_is_the_recursion_with_timms_warmup(warmup: bool) -> None:
    """W_ema <- d_t W_ema + (1 - d_t) W at the t-th average, d_t = min(decay, (1+t)/(10+t)) with warm-up;
    without it, the same numbers as torch's own get_ema_multi_avg_fn."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from cnnkit.train.optim import ema_update_fn

    decay = 0.9
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ours = AveragedModel(model, multi_avg_fn=ema_update_fn(decay, warmup=warmup), use_buffers=True)
    torchs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    g = torch.Generator().manual_seed(0)
    expect = None
    for t in range(12):
        with torch.no_grad():
            model[0].weight.copy_(torch.randn(2, 3, generator=g))
        model(torch.randn(4, 3, generator=g))  # moves the BN running statistics (buffers)
        ours.update_parameters(model)
        torchs.update_parameters(model)
        w = model[0].weight.detach().clone()
        if expect is None:
            expect = w  # the first call copies
        else:
            d = min(decay, (1 + t) / (10 + t)) if warmup else decay
            expect = d * expect + (1 - d) * w
        torch.testing.assert_close(ours.module[0].weight, expect, rtol=1e-6, atol=1e-7)
    same = torch.allclose(ours.module[1].running_mean, torchs.module[1].running_mean)
    assert same is (not warmup)  # warm-up follows the recent weights more closely early on
