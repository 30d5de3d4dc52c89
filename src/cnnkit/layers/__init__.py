"""The lecture's building blocks, one idea per file; each file's docstring names its paper and slide."""

from cnnkit.layers.act import ACTIVATIONS, QuickGELU, Sine, get_act, quick_gelu, sine
from cnnkit.layers.conv import (
    DepthwiseConv2d,
    DepthwiseSeparableConv2d,
    DilatedConv2d,
    FlattenedConv2d,
    GroupedConv2d,
    PointwiseConv2d,
    SpatialSeparableConv2d,
    TransposedConv2d,
    conv_output_size,
    same_padding,
    transposed_conv_output_size,
)
from cnnkit.layers.cost import CONV_KINDS, conv_mult_adds, conv_params
from cnnkit.layers.dense import DenseBlock, DenseLayer, Transition
from cnnkit.layers.drop import Dropout, DropPath, drop_path, drop_path_rates
from cnnkit.layers.inception import BasicConv2d, Inception, InceptionNaive
from cnnkit.layers.init import INIT_SCHEMES, init_weights
from cnnkit.layers.norm import NORMS, LayerNorm2d, get_norm, get_norm_layer, group_norm
from cnnkit.layers.residual import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from cnnkit.layers.se import SqueezeExcite, squeeze_excite
from cnnkit.layers.shuffle import ChannelShuffle, channel_shuffle

__all__ = [
    "ACTIVATIONS",
    "CONV_KINDS",
    "INIT_SCHEMES",
    "NORMS",
    "BasicBlock",
    "BasicConv2d",
    "Bottleneck",
    "ChannelShuffle",
    "DenseBlock",
    "DenseLayer",
    "DepthwiseConv2d",
    "DepthwiseSeparableConv2d",
    "DilatedConv2d",
    "DropPath",
    "Dropout",
    "FlattenedConv2d",
    "GroupedConv2d",
    "Inception",
    "InceptionNaive",
    "LayerNorm2d",
    "PointwiseConv2d",
    "PreActBasicBlock",
    "PreActBottleneck",
    "QuickGELU",
    "Sine",
    "SpatialSeparableConv2d",
    "SqueezeExcite",
    "Transition",
    "TransposedConv2d",
    "channel_shuffle",
    "conv_mult_adds",
    "conv_output_size",
    "conv_params",
    "drop_path",
    "drop_path_rates",
    "get_act",
    "get_norm",
    "get_norm_layer",
    "group_norm",
    "init_weights",
    "quick_gelu",
    "same_padding",
    "sine",
    "squeeze_excite",
    "transposed_conv_output_size",
]
