"""Layer logic of ENL and NonLocal, shared by both Keras generations.

:class:`ENLBlock` and :class:`NonLocalBlock` are mixins: argument checks,
weight creation, ``call``, config, ``attention_map`` and the weight
interchange (``get_block_weights`` / ``set_block_weights`` / npz). They are
combined with ``keras.layers.Layer`` in :mod:`enl_keras.layers` (Keras 3, any
backend) and with ``tf_keras.layers.Layer`` in :mod:`enl_keras.garden.layers`
(Model Garden), so each behaviour is written once; the math itself lives in
:mod:`enl_keras.ops`. Both Layer classes offer the same ``add_weight``,
``compute_dtype`` and variables with ``.assign`` / ``.numpy``, which is all
this module uses. A subclass sets ``_initializers`` (its framework's
initializer and regularizer modules) and ``_fixed_dtype_weight`` (the keyword
that turns autocasting off for a variable).

Initializers and regularizers, as Keras's ``MultiHeadAttention`` takes them:
``kernel_initializer`` (None: Glorot-uniform per projection, as three separate
``Conv2D`` would get) initialises the fused theta | phi | g kernel and, with
``zero_init=False``, the ``out`` kernel; ``bias_initializer`` (None: zeros)
the biases. ``zero_init=True`` takes precedence for ``out``: its kernel and
bias start at zero whatever the initializers (the block starts as the
identity); pass ``zero_init=False`` to initialise ``out`` with them.
``kernel_regularizer`` / ``bias_regularizer`` apply to every kernel (the
projection and ``out``) / every bias; their losses are in ``layer.losses``.

Weights (the shared (in, out) layout of :mod:`enl_core.params`):
``projection_kernel`` (C, 3 C') = theta | phi | g kernels side by side,
``projection_bias`` (3 C'), ``output_kernel`` (C', C), ``output_bias`` (C),
and ``dct_weights`` (kH, kW) when d is learnable.
"""

from __future__ import annotations

import numbers
import sys

import numpy as np
from keras import ops
from keras.backend import backend

from enl_core import params as enl_params
from enl_core.blocks import check_nl_options
from enl_core.dct import clamped_weights, position_index
from enl_core.validation import (
    DEFAULT_DCT_SIZE,
    clamp_dct_size,
    normalize_dct_size,
    normalize_dct_weights,
    positive_int,
)
from enl_keras import ops as enl_ops

DATA_FORMATS = ("channels_last", "channels_first")


def _static(size) -> int | None:
    """A dimension as a Python int, or None when it is not known statically
    (None, or a symbolic dimension such as JAX's while a functional model is
    traced with unknown H, W: comparing one with a number raises)."""
    return int(size) if isinstance(size, (int, np.integer)) else None


def _check_data_format(data_format):
    if data_format not in DATA_FORMATS:
        raise ValueError(f"`data_format` must be one of {DATA_FORMATS}, received {data_format!r}")
    return data_format


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool, received {value!r} of type "
                        f"{type(value).__name__}")
    return bool(value)


def _is_floating(dtype) -> bool:
    name = getattr(dtype, "name", None) or str(dtype)
    return "float" in name


def _dct_weights_array(dct_weights):
    """A user's fixed ``dct_weights`` as a real numpy array, or a named error."""
    try:
        array = np.asarray(dct_weights)
    except (TypeError, ValueError, RuntimeError) as error:
        # e.g. a torch tensor that requires grad: np.asarray refuses it.
        raise TypeError(f"`dct_weights` must be None, 'learnable' or a numpy-convertible "
                        f"array (detach a framework tensor first), received "
                        f"{type(dct_weights).__name__} {dct_weights!r} ({error})") from error
    if np.iscomplexobj(array):
        raise TypeError(f"`dct_weights` must be real, received complex {dct_weights!r}")
    return array


def _is_tf_keras_tensor(value) -> bool:
    """True for a symbolic tf_keras (Keras 2) tensor, without importing tf_keras."""
    return type(value).__module__.startswith("tf_keras.") and hasattr(value, "type_spec")


def _tf_keras_caller():
    """The tf_keras layer whose ``call`` is running now, or None.

    tf_keras keeps a call context while a tf_keras layer or model runs; only
    consulted when tf_keras is already imported (this module never imports it).
    """
    if "tf_keras" not in sys.modules:
        return None
    try:
        from tf_keras.src.engine import base_layer_utils
    except ImportError:  # another tf_keras layout: the tensor check still applies
        return None
    context = base_layer_utils.call_context()
    return context.layer if context.in_call else None


class _BlockBase:
    """What ENL and NonLocal share: projections, weights, checks, config."""

    _initializers = None  # the framework's initializer module; set by the subclass
    _regularizers = None  # its regularizer module
    _fixed_dtype_weight = {}  # add_weight kwargs that keep a weight in float32

    def _init_block(self, inter_channels, dct_size, zero_init, use_bias, data_format,
                    kernel_initializer, bias_initializer, kernel_regularizer,
                    bias_regularizer):
        if inter_channels is not None:
            inter_channels = positive_int("inter_channels", inter_channels)
        self.inter_channels = inter_channels
        self.dct_size = normalize_dct_size(dct_size)
        self.zero_init = _check_bool("zero_init", zero_init)
        self.use_bias = _check_bool("use_bias", use_bias)
        self.data_format = _check_data_format(data_format)
        self._channel_axis = -1 if data_format == "channels_last" else 1
        self.channels = None
        if not _is_floating(self.compute_dtype):
            raise ValueError(f"`dtype` of {type(self).__name__} must be a floating-point "
                             f"dtype or policy (float32, mixed_float16, ...), received "
                             f"compute dtype {self.compute_dtype!r}")
        self.kernel_initializer = self._lookup("kernel_initializer", kernel_initializer,
                                               self._initializers)
        self.bias_initializer = self._lookup("bias_initializer", bias_initializer,
                                             self._initializers)
        self.kernel_regularizer = self._lookup("kernel_regularizer", kernel_regularizer,
                                               self._regularizers)
        self.bias_regularizer = self._lookup("bias_regularizer", bias_regularizer,
                                             self._regularizers)

    @staticmethod
    def _lookup(name, identifier, module):
        """``module.get(identifier)`` (None stays None), the error naming ``name``."""
        if identifier is None:
            return None
        kind = name.split("_", 1)[1]
        try:
            resolved = module.get(identifier)
        except (TypeError, ValueError) as error:
            resolved, reason = None, f" ({error})"
        else:
            reason = ""  # tf_keras' regularizers.get returns an unknown name unchanged
        if not callable(resolved):
            raise ValueError(f"`{name}` must be None or a Keras {kind} (an instance, a name "
                             f"or a config), received {identifier!r}{reason}")
        return resolved

    def _check_framework(self, inputs):
        """A Keras 3 block must not be used inside a tf_keras model (its weights
        would not be tracked); the tf_keras twins are the Model Garden layers."""
        if self._initializers.__name__.startswith("tf_keras"):
            return
        caller = None if not _is_tf_keras_tensor(inputs) else "a tf_keras functional model"
        if caller is None:
            layer = _tf_keras_caller()
            caller = None if layer is None else f"tf_keras layer {layer.name!r}"
        if caller is not None:
            raise TypeError(f"enl_keras.{type(self).__name__} is a Keras 3 layer and is being "
                            f"called from {caller}, where its weights would not be tracked "
                            f"or trained; use enl_keras.garden.layers.{type(self).__name__}, "
                            f"its tf_keras twin (same arguments and weights)")

    # ----------------------------------------------------------------- build
    def _block_input_shape(self, input_shape):
        """Validates a (B, H, W, C) or (B, C, H, W) shape; returns it as a tuple."""
        shape = tuple(input_shape)
        if len(shape) != 4:
            layout = "(B, H, W, C)" if self._channel_axis == -1 else "(B, C, H, W)"
            raise ValueError(f"`inputs` of {type(self).__name__} must have rank 4 {layout} "
                             f"(data_format={self.data_format!r}), received shape {shape}")
        channels = shape[self._channel_axis]
        if channels is None:
            raise ValueError(f"`inputs` of {type(self).__name__} must have a known channel "
                             f"dimension (axis {self._channel_axis}, "
                             f"data_format={self.data_format!r}), received shape {shape}")
        spatial = shape[2:] if self._channel_axis == 1 else shape[1:3]
        if any(_static(size) is not None and _static(size) < 1 for size in spatial):
            raise ValueError(f"`inputs` of {type(self).__name__} must have a non-empty H x W "
                             f"grid, received shape {shape}")
        if self.channels is not None and int(channels) != self.channels:
            raise ValueError(f"`inputs` of {type(self).__name__} must keep C={self.channels} "
                             f"channels (axis {self._channel_axis}) from the first call, "
                             f"received shape {shape}")
        return shape

    def _build_block(self, input_shape):
        shape = self._block_input_shape(input_shape)
        channels = int(shape[self._channel_axis])
        inter = (enl_params.default_inter_channels(channels) if self.inter_channels is None
                 else self.inter_channels)
        self.channels = channels
        self.resolved_inter_channels = inter
        init = self._initializers
        # Glorot-uniform per projection (fan_in C, fan_out C'), as three separate
        # Conv2D would get, although the three kernels are stored fused.
        fused = init.VarianceScaling(scale=(channels + 3 * inter) / (channels + inter),
                                     mode="fan_avg", distribution="uniform")
        kernel_init = self.kernel_initializer
        bias_init = "zeros" if self.bias_initializer is None else self.bias_initializer
        self.projection_kernel = self.add_weight(
            name="projection_kernel", shape=(channels, 3 * inter),
            initializer=fused if kernel_init is None else kernel_init,
            regularizer=self.kernel_regularizer)
        # Zero `out` makes a new block the identity (docs/ENL-SPEC.md "The block");
        # zero_init wins over the initializers (module docstring).
        self.output_kernel = self.add_weight(
            name="output_kernel", shape=(inter, channels),
            initializer=("zeros" if self.zero_init else
                         init.GlorotUniform() if kernel_init is None else kernel_init),
            regularizer=self.kernel_regularizer)
        self.projection_bias = self.output_bias = None
        if self.use_bias:
            self.projection_bias = self.add_weight(
                name="projection_bias", shape=(3 * inter,), initializer=bias_init,
                regularizer=self.bias_regularizer)
            self.output_bias = self.add_weight(
                name="output_bias", shape=(channels,),
                initializer="zeros" if self.zero_init else bias_init,
                regularizer=self.bias_regularizer)

    # ------------------------------------------------------------------ call
    def _channels_last(self, inputs):
        """Checks a call's input and returns it channels-last."""
        self._check_framework(inputs)
        if not _is_floating(inputs.dtype):
            raise TypeError(f"`inputs` of {type(self).__name__} must be a floating-point "
                            f"tensor, received dtype {inputs.dtype}")
        self._block_input_shape(inputs.shape)
        if self._channel_axis == 1:
            inputs = ops.transpose(inputs, (0, 2, 3, 1))
        return inputs

    def _restore_format(self, outputs):
        if self._channel_axis == 1:
            outputs = ops.transpose(outputs, (0, 3, 1, 2))
        return outputs

    def _weights(self, dtype):
        """The four projection tensors, cast to the compute dtype."""
        def cast(variable):
            return None if variable is None else ops.cast(variable, dtype)
        return (cast(self.projection_kernel), cast(self.projection_bias),
                cast(self.output_kernel), cast(self.output_bias))

    def _dct_scale(self, x):
        """d^2 (kH, kW) for the channels-last input ``x``, in its accumulation dtype
        (cropped to x's grid when static), or None."""
        return None

    def compute_output_shape(self, input_shape):
        return tuple(self._block_input_shape(input_shape))

    def _block_config(self):
        def serialize(value, module):
            return None if value is None else module.serialize(value)
        return {"inter_channels": self.inter_channels, "dct_size": list(self.dct_size),
                "zero_init": self.zero_init, "use_bias": self.use_bias,
                "data_format": self.data_format,
                "kernel_initializer": serialize(self.kernel_initializer, self._initializers),
                "bias_initializer": serialize(self.bias_initializer, self._initializers),
                "kernel_regularizer": serialize(self.kernel_regularizer, self._regularizers),
                "bias_regularizer": serialize(self.bias_regularizer, self._regularizers)}

    # ------------------------------------------------------- attention map
    def _attention_input(self, inputs, position):
        """Channels-last input and the flat query index, checked."""
        if not getattr(self, "built", False):
            self(inputs)
        inputs = ops.convert_to_tensor(inputs)
        if _is_floating(inputs.dtype):
            inputs = ops.cast(inputs, self.compute_dtype)
        x = self._channels_last(inputs)
        height, width = x.shape[1], x.shape[2]
        if height is None or width is None:
            raise ValueError(f"`inputs` of attention_map must have a known H, W, received "
                             f"shape {tuple(inputs.shape)}")
        indices = position if isinstance(position, (tuple, list)) else (position,)
        if len(indices) not in (1, 2) or not all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in indices):
            raise ValueError(f"`position` must be a flat index or a pair (row, col) of ints, "
                             f"received {position!r}")
        row, col = position_index(position, int(height), int(width))
        return x, row * int(width) + col

    # ------------------------------------------------- weight interchange
    def _require_built(self, method):
        if not getattr(self, "built", False) or self.channels is None:
            raise ValueError(f"{type(self).__name__}.{method}() needs a built layer: call it "
                             f"on an input (or call build()) first")

    def get_block_weights(self) -> dict:
        """The block's weights in the shared layout of :mod:`enl_core.params`.

        Returns:
            dict mapping ``enl_core.params.WEIGHT_NAMES`` (and ``dct_weights``
            when d is learnable or custom) to float numpy arrays, kernels as
            (in, out) matrices. Biases are zeros when ``use_bias=False``.

        Raises:
            ValueError: the layer is not built.
        """
        self._require_built("get_block_weights")
        kernel = np.asarray(self.projection_kernel.numpy())
        theta, phi, g = np.split(kernel, 3, axis=1)
        inter = self.resolved_inter_channels
        if self.use_bias:
            bias = np.asarray(self.projection_bias.numpy())
            out_bias = np.asarray(self.output_bias.numpy())
        else:
            bias = np.zeros(3 * inter, dtype=kernel.dtype)
            out_bias = np.zeros(self.channels, dtype=kernel.dtype)
        theta_bias, phi_bias, g_bias = np.split(bias, 3)
        weights = {"theta.kernel": theta, "theta.bias": theta_bias, "phi.kernel": phi,
                   "phi.bias": phi_bias, "g.kernel": g, "g.bias": g_bias,
                   "out.kernel": np.asarray(self.output_kernel.numpy()), "out.bias": out_bias}
        dct = self._dct_weights_array()
        if dct is not None:
            weights["dct_weights"] = dct
        return weights

    def _dct_weights_array(self):
        return None

    def _set_dct_weights(self, dct_weights):
        if dct_weights is not None and not np.all(np.asarray(dct_weights) == 1.0):
            raise ValueError(f"{type(self).__name__} has no DCT weights to set (it uses d = 1); "
                             f"received `dct_weights` {np.asarray(dct_weights)!r}")

    def set_block_weights(self, weights) -> None:
        """Loads weights in the shared layout (the inverse of :meth:`get_block_weights`).

        Args:
            weights: a dict with the ``enl_core.params.WEIGHT_NAMES`` keys (plus
                optional ``dct_weights``), or an ``enl_core.BlockParams``. An
                unbuilt layer is built for the channel count of the weights.

        Raises:
            ValueError: a missing or unexpected key; a shape that does not fit
                this layer's C and C'; non-zero biases for ``use_bias=False``;
                ``dct_weights`` the layer cannot hold.
            TypeError: ``weights`` is neither a dict nor a BlockParams.
        """
        if isinstance(weights, dict):
            params = enl_params.BlockParams.from_dict(weights)
        elif isinstance(weights, enl_params.BlockParams):
            params = weights
        else:
            raise TypeError(f"`weights` must be a dict or an enl_core.BlockParams, received "
                            f"{type(weights).__name__}")
        if not getattr(self, "built", False) or self.channels is None:
            shape = [None, None, None, None]
            shape[self._channel_axis] = params.channels
            self.build(tuple(shape))
            self.built = True  # tf_keras marks a layer built only inside __call__
        expected = (self.channels, self.resolved_inter_channels)
        if (params.channels, params.inter_channels) != expected:
            raise ValueError(f"`weights` must have theta.kernel of shape {expected} "
                             f"(C={expected[0]}, C'={expected[1]}) for this "
                             f"{type(self).__name__}, received shape {params.theta_kernel.shape}")
        biases = np.concatenate([params.theta_bias, params.phi_bias, params.g_bias])
        if not self.use_bias and (np.any(biases != 0) or np.any(params.out_bias != 0)):
            raise ValueError(f"`weights` has non-zero biases but this {type(self).__name__} "
                             f"has use_bias=False")
        dtype = self.projection_kernel.dtype
        dtype = getattr(dtype, "name", None) or str(dtype)
        self.projection_kernel.assign(np.concatenate(
            [params.theta_kernel, params.phi_kernel, params.g_kernel], axis=1).astype(dtype))
        self.output_kernel.assign(params.out_kernel.astype(dtype))
        if self.use_bias:
            self.projection_bias.assign(biases.astype(dtype))
            self.output_bias.assign(params.out_bias.astype(dtype))
        self._set_dct_weights(params.dct_weights)

    def save_npz(self, path) -> None:
        """Writes :meth:`get_block_weights` as the framework-neutral ``.npz``."""
        enl_params.save_npz(path, enl_params.BlockParams.from_dict(self.get_block_weights()))

    def load_npz(self, path) -> None:
        """Reads a file written by any framework's ``save_npz`` into this layer."""
        self.set_block_weights(enl_params.load_npz(path))


class ENLBlock(_BlockBase):
    """Mixin: the ENL layer (see :class:`enl_keras.ENL` for the docs)."""

    def __init__(self, inter_channels=None, position_encoding=True, dct_size=DEFAULT_DCT_SIZE,
                 dct_weights=None, zero_init=True, use_bias=True, data_format="channels_last",
                 kernel_initializer=None, bias_initializer=None, kernel_regularizer=None,
                 bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self._init_block(inter_channels, dct_size, zero_init, use_bias, data_format,
                         kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer)
        self.position_encoding = _check_bool("position_encoding", position_encoding)
        self.learnable_dct_weights = isinstance(dct_weights, str) and dct_weights == "learnable"
        self.fixed_dct_weights = None
        if isinstance(dct_weights, str) and not self.learnable_dct_weights:
            raise ValueError(f"`dct_weights` must be None, 'learnable' or an array of shape "
                             f"dct_size={self.dct_size}, received {dct_weights!r}")
        if dct_weights is not None and not self.learnable_dct_weights:
            self.fixed_dct_weights = normalize_dct_weights(_dct_weights_array(dct_weights),
                                                           self.dct_size)
        if dct_weights is not None and not self.position_encoding:
            raise ValueError(f"`dct_weights` needs position_encoding=True, received "
                             f"dct_weights={dct_weights!r} with position_encoding=False")
        self.dct_weights = None

    def build(self, input_shape):
        self._build_block(input_shape)
        if self.learnable_dct_weights:
            # d stays float32 under mixed precision: it is squared and used in
            # the float32 position sums.
            self.dct_weights = self.add_weight(name="dct_weights", shape=self.dct_size,
                                               initializer="ones", **self._fixed_dtype_weight)

    def call(self, inputs):
        x = self._channels_last(inputs)
        z = enl_ops.enl(x, *self._weights(x.dtype), dct_scale=self._dct_scale(x))
        return self._restore_format(z)

    def _dct_scale(self, x):
        if not self.position_encoding:
            return None
        accumulate = enl_ops.accumulation_dtype(x.dtype)
        if self.learnable_dct_weights:
            return ops.square(ops.cast(self.dct_weights, accumulate))
        height, width = x.shape[1], x.shape[2]
        if height is None or width is None:
            weights = normalize_dct_weights(self.fixed_dct_weights, self.dct_size)
        else:  # only the frequencies the grid holds (ops.position_term crops the rest)
            weights = clamped_weights(int(height), int(width), self.dct_size,
                                      self.fixed_dct_weights)
        return ops.convert_to_tensor(weights**2, dtype=accumulate)

    def _dct_weights_array(self):
        if self.learnable_dct_weights:
            return np.asarray(self.dct_weights.numpy())
        return None if self.fixed_dct_weights is None else self.fixed_dct_weights.copy()

    def _set_dct_weights(self, dct_weights):
        if self.learnable_dct_weights:
            dct_weights = normalize_dct_weights(dct_weights, self.dct_size)  # None: d = 1
            dtype = getattr(self.dct_weights.dtype, "name", None) or str(self.dct_weights.dtype)
            self.dct_weights.assign(dct_weights.astype(dtype))
        elif self.fixed_dct_weights is not None:
            if dct_weights is None or not np.array_equal(np.asarray(dct_weights),
                                                         self.fixed_dct_weights):
                raise ValueError(f"`dct_weights` must equal this layer's fixed dct_weights "
                                 f"{self.fixed_dct_weights.tolist()}, received {dct_weights!r}")
        else:
            super()._set_dct_weights(dct_weights)

    def attention_map(self, inputs, position):
        """Row ``position`` of ENL's effective affinity ``F + L``, per image.

        ``A[i, j] = theta_i . phi_j / N + L[i, j]`` (eq. 5, 10) for the query
        position i, over all j, as an H x W map (the paper's Fig. 1), computed
        in O(N C') without an N x N matrix.

        Args:
            inputs: (B, H, W, C) (or (B, C, H, W) for channels_first) with
                static H, W.
            position: a flat index ``i = p W + q`` or a pair ``(p, q)``.

        Returns:
            (B, H, W) tensor in float32 (float64 for float64 layers).

        Raises:
            ValueError: ``position`` outside the grid; bad ``inputs`` as in call.
        """
        x, index = self._attention_input(inputs, position)
        kernel, bias, _, _ = self._weights(x.dtype)
        return enl_ops.attention_row(x, kernel, bias, index, mode="dot_product",
                                     dct_scale=self._dct_scale(x))

    def get_config(self):
        dct_weights = ("learnable" if self.learnable_dct_weights else
                       None if self.fixed_dct_weights is None else
                       self.fixed_dct_weights.tolist())
        return {**super().get_config(), **self._block_config(),
                "position_encoding": self.position_encoding, "dct_weights": dct_weights}


class NonLocalBlock(_BlockBase):
    """Mixin: the NonLocal layer (see :class:`enl_keras.NonLocal` for the docs)."""

    def __init__(self, mode="embedded_gaussian", inter_channels=None, scale=True,
                 sub_sample=False, position_encoding=False, dct_size=DEFAULT_DCT_SIZE,
                 zero_init=True,
                 use_bias=True, data_format="channels_last", kernel_initializer=None,
                 bias_initializer=None, kernel_regularizer=None, bias_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self._init_block(inter_channels, dct_size, zero_init, use_bias, data_format,
                         kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer)
        self.scale = _check_bool("scale", scale)
        self.sub_sample = _check_bool("sub_sample", sub_sample)
        self.position_encoding = _check_bool("position_encoding", position_encoding)
        check_nl_options(mode, self.sub_sample, self.position_encoding)
        self.mode = mode

    def build(self, input_shape):
        self._check_sub_sample_grid(self._block_input_shape(input_shape))
        self._build_block(input_shape)

    def _check_sub_sample_grid(self, shape, x=None):
        """2x2 pooling needs H, W >= 2 (else no key is left): checked on the
        static shape, and at run time for a dynamic H or W in a TensorFlow
        graph (``tf.debugging``; the other backends always see the shape)."""
        if not self.sub_sample:
            return x
        spatial = [shape[2], shape[3]] if self._channel_axis == 1 else [shape[1], shape[2]]
        if any(_static(s) is not None and _static(s) < 2 for s in spatial):
            raise ValueError(f"`sub_sample` of {type(self).__name__} needs H, W >= 2 (2x2 "
                             f"pooling of the keys), received shape {tuple(shape)}")
        if x is None or all(_static(s) is not None for s in spatial) or backend() != "tensorflow":
            return x
        import tensorflow as tf

        check = tf.debugging.assert_greater_equal(
            tf.shape(x)[1:3], 2, message=f"`sub_sample` of {type(self).__name__} needs H, "
            f"W >= 2 (2x2 pooling of the keys); received (B, H, W, C) shape")
        with tf.control_dependencies([check]):
            return tf.identity(x)

    def call(self, inputs):
        x = self._channels_last(inputs)
        x = self._check_sub_sample_grid(tuple(inputs.shape), x)
        z = enl_ops.nonlocal_block(x, *self._weights(x.dtype), mode=self.mode, scale=self.scale,
                                   sub_sample=self.sub_sample,
                                   dct_scale=self._dct_scale(x))
        return self._restore_format(z)

    def _dct_scale(self, x):
        if not self.position_encoding:
            return None
        height, width = x.shape[1], x.shape[2]
        size = (self.dct_size if height is None or width is None
                else clamp_dct_size(self.dct_size, int(height), int(width)))
        return ops.ones(size, dtype=enl_ops.accumulation_dtype(x.dtype))

    def attention_map(self, inputs, position):
        """Row ``position`` of the NL affinity, per image (the paper's Fig. 1).

        The softmax row (``embedded_gaussian``) or ``theta_i . phi_j / N'``
        (``dot_product``, plus the L row when ``position_encoding``), computed
        in O(N C') for the one query. With ``sub_sample`` the keys are pooled,
        so the map is (H // 2) x (W // 2).

        Args:
            inputs: (B, H, W, C) (or (B, C, H, W)) with static H, W.
            position: a flat index ``i = p W + q`` or a pair ``(p, q)``.

        Returns:
            (B, H', W') tensor in float32 (float64 for float64 layers).
        """
        x, index = self._attention_input(inputs, position)
        kernel, bias, _, _ = self._weights(x.dtype)
        return enl_ops.attention_row(x, kernel, bias, index, mode=self.mode, scale=self.scale,
                                     sub_sample=self.sub_sample,
                                     dct_scale=self._dct_scale(x))

    def get_config(self):
        return {**super().get_config(), **self._block_config(), "mode": self.mode,
                "scale": self.scale, "sub_sample": self.sub_sample,
                "position_encoding": self.position_encoding}
