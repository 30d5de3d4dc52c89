"""Weight initialisation schemes of the lecture ("Initialization" slides).

- zero and same-value (constant) initialisation, which the lecture shows to fail:
  with all-zero weights every gradient of the two-layer example y = W1 x, z = W2 y
  is zero, and with equal weights all hidden units get the same gradient, so the
  symmetry between them is never broken;
- random Gaussian N(0, std^2) with a hand-picked std;
- Xavier/Glorot (Glorot & Bengio 2010, "Understanding the difficulty of training
  deep feedforward neural networks"): Var[w] = 2 / (fan_in + fan_out), matching
  the variance of activations and gradients across layers;
- Kaiming/He (He et al. 2015, "Delving deep into rectifiers"): Var[w] = 2 / n with
  n = fan_in (forward) or fan_out (backward), because ReLU zeros half of the
  activations.

All random schemes are ``torch.nn.init``'s own functions. ``init_weights`` applies
a scheme in place to the weights of every convolution and linear layer, sets their
biases to zero and resets normalisation layers to the identity (weight 1, bias 0);
other parameters (PReLU slopes, ...) keep torch's initialisation.
"""

from __future__ import annotations

import difflib
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["INIT_SCHEMES", "WHITEN_EPS", "WHITEN_PATCHES", "first_conv", "init_weights", "whiten_conv_"]

INIT_SCHEMES: tuple[str, ...] = (
    "default",
    "zero",
    "constant",
    "normal",
    "xavier_normal",
    "xavier_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "kaiming_conv",
)

# the keyword options each scheme accepts; anything else is an error, not silently ignored
_OPTIONS: dict[str, frozenset[str]] = {
    "default": frozenset(),
    "zero": frozenset(),
    "constant": frozenset({"value"}),
    "normal": frozenset({"std"}),
    "xavier_normal": frozenset({"gain"}),
    "xavier_uniform": frozenset({"gain"}),
    "kaiming_normal": frozenset({"mode", "nonlinearity", "negative_slope"}),
    "kaiming_uniform": frozenset({"mode", "nonlinearity", "negative_slope"}),
    "kaiming_conv": frozenset({"std", "mode"}),
}

# batch and instance norms share torch's _NormBase; group and layer norm do not
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_WEIGHT_TYPES = (nn.modules.conv._ConvNd, nn.Linear)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def init_weights(
    model: ModuleT,
    scheme: str,
    *,
    value: float | None = None,
    std: float | None = None,
    gain: float | None = None,
    mode: str | None = None,
    nonlinearity: str | None = None,
    negative_slope: float | None = None,
) -> ModuleT:
    """Initialise ``model`` in place with ``scheme`` (one of ``INIT_SCHEMES``) and return it.

    Options, each accepted only by the schemes that use it:

    - ``constant``: ``value`` (required), every weight set to it;
    - ``normal``: ``std`` (default 0.01), weights ~ N(0, std^2);
    - ``xavier_normal`` / ``xavier_uniform``: ``gain`` (default 1), Var = gain^2 * 2/(fan_in + fan_out);
    - ``kaiming_normal`` / ``kaiming_uniform``: ``mode`` ("fan_in" default, or "fan_out"),
      ``nonlinearity`` ("relu" default, gain sqrt(2); see ``torch.nn.init.calculate_gain``) and
      ``negative_slope`` for "leaky_relu"; Var = gain^2 / fan, i.e. 2 / fan for ReLU.
    - ``kaiming_conv``: convolutions Kaiming-normal (``mode`` default fan_in) with
      ReLU's gain, linear layers N(0, std^2) (``std`` default 0.01). He init in every layer
      also multiplies the logits' scale through the three wide linear layers of AlexNet and
      VGG (their first loss 10-14 for 10 classes, chance is 2.3); the small classifier starts
      them near chance while the convolutions keep the signal (the classifier's init of
      torchvision's VGG; its fan_out convolutions shrink the first layer's signal 4.6x, and
      ZFNet on 1,500 photos reached 33% with them, 85% with fan_in: benchmarks/zoo_defaults.py).

    ``"default"`` leaves torch's per-layer initialisation untouched. Every other scheme also
    zeroes the biases of conv and linear layers and sets norm layers to weight 1, bias 0.

    >>> init_weights(nn.Linear(4, 2), "kaiming_normal", mode="fan_out")
    Linear(in_features=4, out_features=2, bias=True)
    """
    if scheme not in _OPTIONS:
        close = difflib.get_close_matches(scheme, INIT_SCHEMES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown init scheme {scheme!r}{hint}; choose from {', '.join(INIT_SCHEMES)}")
    given = {
        name
        for name, val in (
            ("value", value),
            ("std", std),
            ("gain", gain),
            ("mode", mode),
            ("nonlinearity", nonlinearity),
            ("negative_slope", negative_slope),
        )
        if val is not None
    }
    unused = sorted(given - _OPTIONS[scheme])
    if unused:
        accepted = ", ".join(sorted(_OPTIONS[scheme])) or "no options"
        raise ValueError(f"init scheme {scheme!r} does not use {', '.join(unused)}; it takes {accepted}")
    if scheme == "constant" and value is None:
        raise ValueError(
            "init scheme 'constant' needs value=...; e.g. init_weights(model, 'constant', value=0.1)"
        )
    if std is not None and not std > 0:
        raise ValueError(f"init scheme 'normal' needs std > 0; got std={std}")
    if gain is not None and not gain > 0:
        raise ValueError(f"init scheme {scheme!r} needs gain > 0; got gain={gain}")
    if mode is not None and mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init scheme {scheme!r} needs mode 'fan_in' or 'fan_out'; got {mode!r}")
    if negative_slope is not None and nonlinearity != "leaky_relu":
        raise ValueError(
            f"init scheme {scheme!r} uses negative_slope only with nonlinearity='leaky_relu'; "
            f"got nonlinearity={nonlinearity!r}"
        )
    if nonlinearity is not None:
        # calculate_gain raises for names it does not know; fail here, before touching the model
        try:
            nn.init.calculate_gain(nonlinearity, negative_slope)  # type: ignore[arg-type]
        except ValueError as err:
            raise ValueError(f"init scheme {scheme!r}: {err}") from err
    if scheme == "default":
        return model

    for module in model.modules():
        if isinstance(module, _WEIGHT_TYPES):
            weight = module.weight
            if scheme == "zero":
                nn.init.zeros_(weight)
            elif scheme == "constant":
                assert value is not None  # checked above
                nn.init.constant_(weight, value)
            elif scheme == "kaiming_conv":
                if isinstance(module, nn.Linear):
                    nn.init.normal_(weight, mean=0.0, std=0.01 if std is None else std)
                else:
                    nn.init.kaiming_normal_(weight, mode=mode or "fan_in", nonlinearity="relu")  # type: ignore[arg-type]
            elif scheme == "normal":
                nn.init.normal_(weight, mean=0.0, std=0.01 if std is None else std)
            elif scheme == "xavier_normal":
                nn.init.xavier_normal_(weight, gain=1.0 if gain is None else gain)
            elif scheme == "xavier_uniform":
                nn.init.xavier_uniform_(weight, gain=1.0 if gain is None else gain)
            else:
                init_fn = nn.init.kaiming_normal_ if scheme == "kaiming_normal" else nn.init.kaiming_uniform_
                init_fn(
                    weight,
                    a=0.0 if negative_slope is None else negative_slope,
                    mode=mode or "fan_in",  # type: ignore[arg-type]
                    nonlinearity=nonlinearity or "relu",  # type: ignore[arg-type]
                )
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _NORM_TYPES):
            if getattr(module, "weight", None) is not None:
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    return model


# ---------------------------------------------------------------- patch whitening

WHITEN_EPS = 5e-4  # added to each eigenvalue before its square root (airbench's value)
WHITEN_PATCHES = 2_000_000  # patches the covariance is estimated from, at most


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The model's first 2-d convolution in registration order: the stem of every zoo model."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"{type(model).__name__} has no 2-d convolution to whiten")
    return conv


def whiten_conv_(conv: nn.Conv2d, images: torch.Tensor, eps: float = WHITEN_EPS) -> torch.Tensor:
    """Make ``conv`` a frozen patch-whitening layer for ``images`` (normalised, N x C x H x W);
    returns the patch covariance's eigenvalues, largest first.

    The filters are the eigenvectors of the covariance of the ``C x k x k`` patches, each
    divided by the square root of its eigenvalue (plus ``eps``), so the layer's outputs are
    decorrelated with unit variance; half the output channels take the ``out / 2`` leading
    eigenvectors, the other half their negatives, so a ReLU after them keeps both signs
    (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU", sec. 3.2; Page's ResNet-9
    line before it). The weights are frozen (``requires_grad`` off); a bias stays trainable.
    Written here because neither torch nor torchvision has it; the patches come from
    ``F.unfold`` and the eigenvectors from ``torch.linalg.eigh`` (float64).
    """
    if conv.groups != 1:
        raise ValueError(f"a grouped convolution (groups={conv.groups}) cannot be a whitening layer")
    c, (kh, kw) = conv.in_channels, conv.kernel_size
    dims = c * kh * kw
    if images.dim() != 4 or images.shape[1] != c:
        raise ValueError(f"whitening needs images of shape (N, {c}, H, W); got {tuple(images.shape)}")
    if conv.out_channels > 2 * dims:
        raise ValueError(
            f"a {c}x{kh}x{kw} patch has {dims} dimensions, so whitening fills at most {2 * dims} "
            f"output channels; this first convolution has {conv.out_channels} (widen its kernel or drop --whiten)"
        )
    per_image = max((images.shape[2] - kh + 1) * (images.shape[3] - kw + 1), 1)
    images = images[: max(WHITEN_PATCHES // per_image, 1)]
    cov = torch.zeros(dims, dims, dtype=torch.float64)
    n = 0
    for chunk in images.split(256):
        p = F.unfold(chunk.float(), (kh, kw), dilation=conv.dilation).transpose(1, 2).reshape(-1, dims)
        cov += (p.T @ p).double()
        n += len(p)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov / max(n, 1))
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)
    half = (conv.out_channels + 1) // 2
    filters = eigenvectors[:half] / torch.sqrt(eigenvalues[:half, None].clamp_min(0) + eps)
    weight = torch.cat([filters, -filters])[: conv.out_channels].reshape(conv.weight.shape)
    with torch.no_grad():
        conv.weight.copy_(weight.to(conv.weight.dtype))
    conv.weight.requires_grad_(False)
    return eigenvalues.float()
