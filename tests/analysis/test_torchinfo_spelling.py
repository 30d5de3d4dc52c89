"""``summarize`` as a torchinfo user spells it: the batch inside ``input_size``, ``input_data=``,
``depth=``, and a table (not a dataclass dump) at a prompt and in a notebook."""

from __future__ import annotations

import pytest
import torch

from cnnkit import summarize


def test_input_size_with_the_batch_first_as_torchinfo() -> None:
    ours = summarize("resnet18", (3, 224, 224))
    theirs = summarize("resnet18", input_size=(1, 3, 224, 224))
    # torchvision's ResNet-18: 11,689,512 parameters, 1.81 G mult-adds ("GFLOPS" 1.81 in its docs)
    assert theirs.total_params == ours.total_params == 11_689_512
    assert theirs.total_mult_adds == ours.total_mult_adds and round(theirs.total_mult_adds / 1e9, 2) == 1.81
    assert theirs.input_size == (3, 224, 224) and theirs.batch_size == 1
    assert summarize("resnet18", input_size=(8, 3, 64, 64)).batch_size == 8


def test_input_data_gives_shape_batch_and_dtype() -> None:
    s = summarize("resnet18", input_data=torch.zeros(2, 3, 64, 64, dtype=torch.bfloat16))
    assert (s.input_size, s.batch_size, s.dtype) == ((3, 64, 64), 2, "bfloat16")
    with pytest.raises(ValueError, match="input_size or input_data, not both"):
        summarize("resnet18", (3, 64, 64), input_data=torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="has batch 4, batch_size says 2"):
        summarize("resnet18", (4, 3, 64, 64), batch_size=2)


def test_depth_groups_rows_by_module_prefix() -> None:
    rows = summarize("vgg11", depth=1).rows()
    # torchvision's VGG forward: features, avgpool, a flatten of its own (the root's op), classifier
    assert [r.name for r in rows] == ["features", "avgpool", "(root)", "classifier"]


def test_a_summary_displays_as_its_table() -> None:
    s = summarize("alexnet")
    assert repr(s) == str(s) == s.to_table() and "61,100,840" in repr(s)
    html = s._repr_html_()
    assert html.startswith("<table>") and "<th" in html and "<b>61,100,840</b>" in html
