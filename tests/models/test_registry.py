"""The registry's contract, after torchvision's models/_api.py: duplicates raise, unknown names list close matches."""

import pytest
import torch
from torch import nn

import cnnkit
from cnnkit.models import registry


def test_duplicate_name_raises() -> None:
    @registry.register_model(name="_test_tiny_dup")
    def tiny(**kwargs: object) -> nn.Module:
        return nn.Identity()

    try:
        with pytest.raises(ValueError, match="already registered"):

            @registry.register_model(name="_test_tiny_dup")
            def tiny2(**kwargs: object) -> nn.Module:
                return nn.Identity()
    finally:
        registry._REGISTRY.pop("_test_tiny_dup")


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet5'.*did you mean.*resnet50"):
        cnnkit.create_model("resnet5")


def test_list_models_fnmatch() -> None:
    names = cnnkit.list_models("resnet*")
    assert names.index("resnet18") < names.index("resnet50") < names.index("resnet101")  # natural order
    assert "resnet18" in names and "resnet152" in names
    assert all(n.startswith("resnet") for n in names)
    assert "densenet121" not in names
    assert cnnkit.list_models("no_such_*") == []


def test_bad_num_classes_and_channels() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        cnnkit.create_model("resnet18", num_classes=0)
    with pytest.raises(ValueError, match="in_chans"):
        cnnkit.create_model("resnet18", in_chans=0)


def test_wrong_channel_count_is_a_clear_error() -> None:
    model = cnnkit.create_model("resnet18", num_classes=10, in_chans=1, small_input=True)
    with pytest.raises(ValueError, match=r"1-channel inputs; got 3 channels"):
        model(torch.zeros(1, 3, 28, 28))


def test_import_is_lazy() -> None:
    """`import cnnkit` loads neither the zoo nor torchvision (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = "import sys, cnnkit; print('cnnkit.models' in sys.modules, 'torchvision' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False", "False"]


def test_pretrained_loads_torchvision_weights_from_local_cache(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pretrained=True` goes through torchvision's weight enum and its hub cache: a state_dict saved
    under the expected file name is found without a network and gives torchvision's outputs."""
    from pathlib import Path

    import torchvision

    hub = Path(str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(hub))
    torch.hub.set_dir(str(hub / "hub"))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    tv = torchvision.models.resnet18()
    ckpt = hub / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(tv.state_dict(), ckpt / weights.url.rsplit("/", 1)[-1])
    try:
        model = cnnkit.create_model("resnet18", pretrained=True).eval()
        x = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(model(x), tv.eval()(x))
        # fine-tuning with 10 classes keeps everything but the new classifier
        ft = cnnkit.create_model("resnet18", pretrained=True, num_classes=10)
        torch.testing.assert_close(ft.conv1.weight, tv.conv1.weight)
        assert ft.fc.weight.shape == (10, 512)
    finally:
        torch.hub.set_dir(str(Path.home() / ".cache" / "torch" / "hub"))


def test_pretrained_unavailable_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no pretrained weights"):
        cnnkit.create_model("mobilenet_v1", pretrained=True)


@pytest.mark.parametrize("name", ["densenet121", "googlenet"])
def test_pretrained_applies_the_family_remap_hook(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's DenseNet checkpoint has the old ``norm.1`` key names and GoogLeNet's carries the
    auxiliary heads; each family's ``remap_state_dict`` hook fits them to the model before loading."""
    import re

    import torchvision

    kwargs = {"aux_logits": True, "init_weights": False} if name == "googlenet" else {}
    tv = getattr(torchvision.models, name)(**kwargs)
    state = tv.state_dict()
    if name == "densenet121":  # as torchvision's DENSENET121 weights file names them
        state = {
            re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()
        }
        assert "features.denseblock1.denselayer1.norm.1.weight" in state
    assert registry.get_model_info(name).remap_state_dict is not None
    monkeypatch.setattr(registry, "_torchvision_state_dict", lambda tv_name: state)
    model = cnnkit.create_model(name, pretrained=True)
    ours = model.state_dict()
    assert not any(k.startswith("aux") for k in ours)
    for key, value in ours.items():
        torch.testing.assert_close(value, tv.state_dict()[key])
