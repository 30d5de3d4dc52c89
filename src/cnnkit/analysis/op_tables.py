"""The op-name tables of the analysis, as data: which rule handles each PyTorch call by name.

:mod:`cnnkit.analysis.tracer` looks a call's name up here to choose its handler
(:mod:`cnnkit.analysis.handlers`, :mod:`cnnkit.analysis.products`);
:mod:`cnnkit.analysis.aten` uses :data:`ATEN_FREE` for the ATen operations of calls
without a rule, and :mod:`cnnkit.analysis.meta` uses :data:`METADATA_INPLACE` while
building a model on ``meta``. Nothing here imports torch.
"""

from __future__ import annotations

__all__ = [
    "ATEN_FREE",
    "BINARY",
    "COMPARE",
    "CONCATS",
    "DROPOUTS",
    "DUNDER",
    "FACTORIES",
    "INPLACE_FROM_RESULT",
    "LAST_TWO_SWAPS",
    "MATMULS",
    "METADATA",
    "METADATA_INPLACE",
    "NORMS",
    "REDUCTIONS",
    "RESAMPLES",
    "SAVES_BOTH",
    "SAVES_NOTHING",
    "SAVES_RESULT",
    "TRANSPOSES",
    "UNARY",
    "UNARY_INPLACE",
    "VIEWS",
]


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ---------------------------------------------------------------------------- ATen fallback

# ATen operations that do no multiply-accumulate (their work is elementwise, a reduction,
# a normalisation, pooling, resampling or data movement), used for calls without a rule.
ATEN_FREE = _names(
    """
    _adaptive_avg_pool2d _adaptive_avg_pool3d _local_scalar_dense _log_softmax _native_batch_norm_legit
    _native_batch_norm_legit_functional _native_batch_norm_legit_no_training _reshape_alias _softmax
    _to_copy _unsafe_index _unsafe_view abs adaptive_avg_pool1d adaptive_max_pool2d adaptive_max_pool3d add
    alias amax amin any all arange argmax argmin as_strided avg_pool2d avg_pool3d batch_norm bernoulli
    bitwise_and bitwise_not bitwise_or bitwise_xor cat ceil channel_shuffle clamp clamp_max clamp_min clone
    col2im constant_pad_nd contiguous copy copy_ cos cumsum detach diagonal div elu embedding empty
    empty_like empty_strided eq erf exp exp2 expand expand_copy expm1 fill fill_ flip floor floor_divide
    fmod full full_like gather ge gelu gt hardsigmoid hardswish hardtanh im2col index index_put index_select
    layer_norm le leaky_relu lift_fresh linspace log log1p log2 logical_and logical_not logical_or logsumexp
    lt masked_fill max max_pool2d_with_indices max_pool3d_with_indices maximum mean min minimum mish mul
    native_batch_norm native_channel_shuffle native_dropout native_group_norm native_layer_norm ne neg
    new_empty new_empty_strided new_full new_ones new_zeros norm linalg_vector_norm ones ones_like permute
    pixel_shuffle pixel_unshuffle pow prelu _prelu_kernel prod reciprocal reflection_pad1d reflection_pad2d
    relu remainder repeat replication_pad1d replication_pad2d reshape roll round rsqrt rsub scalar_tensor
    scatter select sgn sigmoid sign silu sin slice softplus split split_with_sizes sqrt squeeze stack std
    sub sum t tanh threshold topk sort transpose tril triu unbind unfold unsqueeze upsample_bicubic2d
    upsample_bilinear2d upsample_linear1d upsample_nearest1d upsample_nearest2d upsample_nearest3d
    upsample_trilinear3d var var_mean view where zero_ zeros zeros_like _pin_memory lift
    _assert_tensor_metadata sym_size sym_numel sym_stride clone_ selu celu _safe_softmax
    """
)
# ---------------------------------------------------------------------------- what backward keeps

# Which tensor autograd keeps for backward (derivatives.yaml; checked with saved_tensors_hooks):
# the output for these, the input for the other elementwise ops, both for sqrt and rsqrt ...
SAVES_RESULT = frozenset(["relu", "sigmoid", "tanh", "softmax", "log_softmax", "exp", "reciprocal"])
SAVES_BOTH = frozenset(["sqrt", "rsqrt"])
# ... and in place, these backward from their result (same storage), while the other in-place
# activations (hardtanh_/ReLU6, silu_, hardswish_, hardsigmoid_, mish_, clamp_, threshold_) make
# autograd keep a copy of their input: in-place ReLU6 saves no memory in training.
INPLACE_FROM_RESULT = frozenset(["relu", "leaky_relu", "elu", "selu", "celu", "sigmoid", "tanh", "rrelu"])
SAVES_NOTHING = frozenset(
    ["neg", "contiguous", "clone", "detach", "channel_shuffle", "native_channel_shuffle"]
)

# ---------------------------------------------------------------------------- name -> handler

# calls that read a tensor's metadata: run as they are, recorded nowhere
METADATA = _names(
    """
    size dim shape dtype device numel stride is_contiguous ndim ndimension element_size nelement
    requires_grad is_floating_point is_complex layout is_cuda is_meta is_cpu is_sparse is_quantized
    is_mkldnn data_ptr storage_offset __len__ __hash__ __format__ __repr__ __bool__ item tolist grad_fn
    is_leaf names __index__ __int__ __float__ untyped_storage _base _is_view get_device __reduce_ex__
    __deepcopy__ grad output_nr _version is_inference is_nested __contains__ has_names is_signed __array__
    _cdata itemsize nbytes __dir__ __sizeof__ __str__ is_shared __iter__ __reversed__
    """
)
# shape and data-movement calls that run for real (views on meta tensors are cheap)
VIEWS = _names(
    """
    view reshape flatten unflatten squeeze unsqueeze expand expand_as view_as reshape_as contiguous narrow
    select getitem __getitem__ unbind chunk split tensor_split hsplit vsplit repeat tile clone detach to
    type type_as float half double bfloat16 int long bool short byte char cpu cuda requires_grad_ roll flip
    index_select gather nan_to_num fill zero copy setitem __setitem__ channel_shuffle native_channel_shuffle
    pixel_shuffle pixel_unshuffle data movedim moveaxis swapaxes swapdims masked_select take diagonal tril
    triu new_tensor _assert retain_grad register_hook as_strided unfold broadcast_to broadcast_tensors
    atleast_2d atleast_3d ravel squeeze_ unsqueeze_ resize_ scatter scatter_add index_put index_add where
    sort topk argmax argmin argsort cumsum cumprod embedding one_hot lerp addcmul addcdiv std var std_mean
    var_mean norm max min logsumexp prod all any count_nonzero isnan isinf isfinite linspace
    """
)
# calls that make new tensors from nothing but sizes
FACTORIES = _names(
    """
    new_zeros new_ones new_full new_empty zeros_like ones_like full_like empty_like rand_like randn_like
    randint_like zeros ones empty full arange tensor as_tensor eye rand randn randint meshgrid
    """
)
# name -> position of the ``inplace`` argument
UNARY_INPLACE = {
    "relu": 1,
    "relu6": 1,
    "hardtanh": 3,
    "leaky_relu": 2,
    "elu": 2,
    "selu": 1,
    "celu": 2,
    "silu": 1,
    "hardswish": 1,
    "hardsigmoid": 1,
    "mish": 1,
    "threshold": 3,
    "rrelu": 4,
}
UNARY = _names(
    """
    sigmoid tanh gelu softplus softsign logsigmoid tanhshrink softshrink hardshrink exp log sqrt rsqrt abs
    neg reciprocal sin cos erf sign floor ceil round square clamp clip clamp_min clamp_max log_softmax
    softmax softmin exp2 log2 log1p expm1 sgn prelu trunc frac sinc
    """
)
NORMS = frozenset(
    ["batch_norm", "layer_norm", "group_norm", "instance_norm", "local_response_norm", "rms_norm"]
)

# name -> kind of the elementwise binary operation
BINARY = {
    "add": "add",
    "sub": "sub",
    "subtract": "sub",
    "rsub": "sub",
    "mul": "mul",
    "multiply": "mul",
    "div": "div",
    "divide": "div",
    "true_divide": "div",
    "truediv": "div",
    "floor_divide": "floordiv",
    "floordiv": "floordiv",
    "remainder": "mod",
    "mod": "mod",
    "fmod": "mod",
    "pow": "pow",
    "float_power": "pow",
    "maximum": "maximum",
    "minimum": "minimum",
    "fmax": "maximum",
    "fmin": "minimum",
    "atan2": "atan2",
    "hypot": "atan2",
    "bitwise_and": "and",
    "bitwise_or": "or",
    "bitwise_xor": "xor",
    "and": "and",
    "or": "or",
    "xor": "xor",
    "lshift": "shift",
    "rshift": "shift",
    "bitwise_left_shift": "shift",
    "bitwise_right_shift": "shift",
}
COMPARE = _names(
    """
    eq ne lt le gt ge greater less greater_equal less_equal not_equal logical_and logical_or logical_xor
    """
)
MATMULS = frozenset(["matmul", "mm", "bmm", "addmm", "baddbmm", "mv", "addmv"])
DROPOUTS = frozenset(
    [
        "dropout",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "alpha_dropout",
        "feature_alpha_dropout",
        "feature_dropout",
    ]
)
CONCATS = frozenset(["cat", "concat", "concatenate"])
REDUCTIONS = frozenset(["mean", "sum", "amax", "amin", "nansum", "nanmean"])
RESAMPLES = frozenset(["interpolate", "upsample", "upsample_nearest", "upsample_bilinear"])
TRANSPOSES = frozenset(["transpose", "swapaxes", "swapdims"])
LAST_TWO_SWAPS = frozenset(["t", "T", "mT", "adjoint", "H", "mH"])  # the last two axes swap

# dunder (without the underscores) -> (name, in-place, reversed)
_ARITHMETIC = [
    "add",
    "sub",
    "mul",
    "truediv",
    "floordiv",
    "mod",
    "pow",
    "and",
    "or",
    "xor",
    "lshift",
    "rshift",
    "matmul",
]
DUNDER: dict[str, tuple[str, bool, bool]] = {
    **{core: (core, False, False) for core in _ARITHMETIC},
    **{"i" + core: (core, True, False) for core in _ARITHMETIC},
    **{"r" + core: (core, False, True) for core in _ARITHMETIC},
    **{core: (core, False, False) for core in ["eq", "ne", "lt", "le", "gt", "ge"]},
    "div": ("div", False, False),
    "idiv": ("div", True, False),
    "rdiv": ("div", False, True),
    "neg": ("neg", False, False),
    "pos": ("positive", False, False),
    "abs": ("abs", False, False),
    "invert": ("bitwise_not", False, False),
    "getitem": ("getitem", False, False),
    "setitem": ("setitem", False, False),
}

# ---------------------------------------------------------------------------- building on meta

# In-place calls that change a tensor's metadata, not its values; everything else in place is a
# no-op on a meta tensor (which has no values), so initialisers are skipped while building.
METADATA_INPLACE = _names(
    """
    requires_grad_ resize_ resize_as_ squeeze_ unsqueeze_ t_ transpose_ swapdims_ swapaxes_ as_strided_ set_
    detach_ share_memory_ rename_ retain_grad
    """
)
