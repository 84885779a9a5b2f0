"""Write the TF-Hub test fixtures with TensorFlow (run with the optional ``tf`` extra).

    .venv-tf/bin/python scripts/make_hub_fixtures.py [--out tests/fixtures/hub]
    .venv-tf/bin/python scripts/make_hub_fixtures.py --resnet152 /tmp/r152  # benchmark module

Writes, under ``--out``:

* ``latents/``, ``linear/``: a tiny ``llr-pretrain-adv`` pair in TF1 Hub layout
  (``tfhub_module.pb``, ``saved_model.pb`` with tag sets {} and {"train"},
  ``variables/``). Latents: a pre-activation ResNet v2 under a ``resnet_v2``
  scope with Sonnet-style names (``conv2d/w``, ``batch_norm/beta``,
  ``moving_mean``...), TF "SAME" padding, unfused batch norm with offset only
  (Sonnet's default) and moving averages updated at ``decay_rate`` in the
  "train" graph, stride in the *last* unit of a stage with a 1x1 max-pool
  subsample shortcut (TF-slim's convention), biases on the stem and on the
  un-normalized convolutions. Signature ``default``: ``inputs`` [N,H,W,3],
  ``decay_rate`` -> [N,1,1,C]; linear: ``inputs`` [N,1,1,C] -> [N,1,1,2]
  (a 1x1 convolution).
* ``imagenet/``: a tiny ResNet v2 classifier like ``local-linearity/imagenet/1``
  (inputs ``x``, ``decay_rate``; a ``use_global_pool`` flag selecting the
  pooled branch of a ``tf.cond``, as in the latents module; stride in the
  *first* unit; no conv biases; batch norm with scale; dense head).
* ``cifar10/``: a tiny softplus WRN like ``local-linearity/cifar10/1`` (inputs
  ``x``, ``decay_rate``, ``count``; fused batch norm, epsilon 1e-3, resource
  variables).
* ``dm_latents.tar.gz``, ``dm_linear.tar.gz``, ``dm_cifar10.tar.gz``: modules built the way
  DeepMind's public LLR code builds its networks
  (``deepmind/local_linearity_regularizer``) and exported through
  tensorflow_hub's own TF1 module API (``hub.create_module_spec`` +
  ``Module.export``, tag sets {} and {"train"}), as the released modules were.
  Every batch norm is DeepMind's: ``gamma``, ``beta``, a float scalar
  ``accumulation_counter``, ``accumulated_mean``, ``accumulated_var``; the
  batch statistics ``E[x^2] - E[x]^2`` are computed in both graphs, used only
  in "train" (with the counter and moving-average updates), and inference
  normalizes with ``tf.nn.batch_normalization`` on the accumulated statistics
  (epsilon 1e-5). ``dm_latents``: a ResNet v2 under ``resnet_v2`` (image input
  ``inputs``, plus ``decay_rate``; ref variables); ``dm_linear``: ``snt.Linear``-style
  matmul head on ``[N, 1, 1, C]``; ``dm_cifar10``: DeepMind's WRN-10-1 under
  ``wide_res_net`` (``init_conv`` to ``16 * width``, ``resnet_lay_{l}_block_{i}``
  with a ``shortcut_x`` projection in every layer's first block applied after
  its first BN + softplus, head ``linear``; inputs ``x``, ``decay_rate``,
  ``count``; resource variables). Stored as archives, the form tfhub.dev serves,
  because two graphs of small ops compress well.
* ``golden_*.npz``: inputs and TensorFlow's outputs (no pickles).
* ``checkpoints/``: bundles written by TF's SaveV2 covering every dtype,
  scalars, strings, a partitioned variable, many variables (several index data
  blocks) and several data shards, with ``golden.npz`` / ``golden_strings.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
v1.disable_resource_variables()  # TF1 Hub modules hold ref variables (VariableV2)
v1.disable_control_flow_v2()  # and TF1 control flow (Switch/Merge), not If functions
SEED = 20190601
MODULE_DEF = b"\x08\x01"  # ModuleDef { format: FORMAT_V3 }


class Builder:
    """Creates Sonnet-style variables with random, non-trivial values."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.updates: list[tf.Operation] = []
        self.values: list[tuple[object, np.ndarray]] = []

    def var(self, name, value, trainable=True):
        # Zeros initializer + a load after init keeps the values out of the graph.
        value = np.asarray(value, np.float32)
        variable = v1.get_variable(name, shape=value.shape, initializer=v1.zeros_initializer(),
                                   trainable=trainable)
        self.values.append((variable, value))
        return variable

    def load(self, session) -> None:
        for variable, value in self.values:
            variable.load(value, session)

    def conv(self, x, out_ch, k, stride, name, *, bias, padding="SAME"):
        in_ch = int(x.shape[-1])
        with v1.variable_scope(name):
            w = self.var("w", self.rng.normal(0, math.sqrt(2.0 / (k * k * in_ch)),
                                              (k, k, in_ch, out_ch)))
            y = tf.nn.conv2d(x, w, [1, stride, stride, 1], padding)
            if bias:
                y = tf.nn.bias_add(y, self.var("b", self.rng.normal(0, 0.1, out_ch)))
        return y

    def batch_norm(self, x, name, *, training, decay_rate, eps, scale, fused=False):
        c = int(x.shape[-1])
        with v1.variable_scope(name):
            beta = self.var("beta", self.rng.normal(0, 0.2, c))
            gamma = self.var("gamma", 1 + self.rng.normal(0, 0.2, c)) if scale else None
            mean = self.var("moving_mean", self.rng.normal(0, 0.2, c), trainable=False)
            variance = self.var("moving_variance", self.rng.uniform(0.5, 1.5, c),
                                trainable=False)
            if training:
                batch_mean, batch_var = tf.nn.moments(x, [0, 1, 2])
                self.updates.append(v1.assign_sub(mean, (mean - batch_mean) * decay_rate))
                self.updates.append(v1.assign_sub(variance, (variance - batch_var) * decay_rate))
                return tf.nn.batch_normalization(x, batch_mean, batch_var, beta, gamma, eps)
            if fused:
                if gamma is None:
                    gamma = tf.ones([c])
                y, _, _ = v1.nn.fused_batch_norm(x, gamma, beta, mean=mean, variance=variance,
                                                 epsilon=eps, is_training=False)
                return y
            return tf.nn.batch_normalization(x, mean, variance, beta, gamma, eps)


def resnet_v2(b: Builder, x, *, units, widths, stem_width, stride_in, training, decay_rate,
              eps, scale, conv_bias):
    with v1.variable_scope("resnet_v2"):
        net = b.conv(x, stem_width, 7, 2, "conv2d", bias=conv_bias)
        net = tf.nn.max_pool2d(net, 3, 2, "SAME", name="max_pool")
        for stage, (count, width) in enumerate(zip(units, widths)):
            with v1.variable_scope(f"block_group_{stage}"):
                for unit in range(count):
                    if stride_in == "first":
                        stride = 2 if (unit == 0 and stage > 0) else 1
                    else:
                        stride = 2 if (unit == count - 1 and stage < len(units) - 1) else 1
                    with v1.variable_scope(f"block_{unit}"):
                        net = _bottleneck(b, net, width, stride, training, decay_rate, eps,
                                          scale, conv_bias)
        net = b.batch_norm(net, "batch_norm", training=training, decay_rate=decay_rate,
                           eps=eps, scale=scale)
        net = tf.nn.relu(net)
        # Like the real module's ``use_global_pool``: a flag fixed in the graph
        # selecting the pooled branch of a tf.cond (the importer folds it).
        use_global_pool = v1.placeholder_with_default(True, [], name="use_global_pool")
        return tf.cond(use_global_pool,
                       lambda: tf.reduce_mean(net, [1, 2], keepdims=True, name="global_pool"),
                       lambda: net)


def _bottleneck(b, x, width, stride, training, decay_rate, eps, scale, conv_bias):
    in_ch = int(x.shape[-1])
    bn = dict(training=training, decay_rate=decay_rate, eps=eps, scale=scale)
    preact = tf.nn.relu(b.batch_norm(x, "batch_norm_0", **bn))
    if in_ch != 4 * width:
        shortcut = b.conv(preact, 4 * width, 1, stride, "shortcut_conv", bias=conv_bias)
    elif stride > 1:
        shortcut = tf.nn.max_pool2d(x, 1, stride, "SAME", name="subsample")
    else:
        shortcut = x
    net = b.conv(preact, width, 1, 1, "conv_0", bias=False)
    net = tf.nn.relu(b.batch_norm(net, "batch_norm_1", **bn))
    net = b.conv(net, width, 3, stride, "conv_1", bias=False)
    net = tf.nn.relu(b.batch_norm(net, "batch_norm_2", **bn))
    net = b.conv(net, 4 * width, 1, 1, "conv_2", bias=conv_bias)
    return net + shortcut


def wide_resnet(b: Builder, x, *, depth, width, num_classes, training, decay_rate, eps):
    n = (depth - 4) // 6
    bn = dict(training=training, decay_rate=decay_rate, eps=eps, scale=True, fused=True)
    with v1.variable_scope("wide_resnet", use_resource=True):
        net = b.conv(x, 16, 3, 1, "conv2d", bias=False)
        channels = 16
        for group, stride in enumerate((1, 2, 2)):
            out = 16 * width * 2**group
            with v1.variable_scope(f"block_group_{group}"):
                for unit in range(n):
                    s = stride if unit == 0 else 1
                    with v1.variable_scope(f"block_{unit}"):
                        preact = tf.nn.softplus(b.batch_norm(net, "batch_norm_0", **bn))
                        if channels != out or s != 1:
                            shortcut = b.conv(preact, out, 1, s, "shortcut_conv", bias=False)
                        else:
                            shortcut = net
                        y = b.conv(preact, out, 3, s, "conv_0", bias=False)
                        y = tf.nn.softplus(b.batch_norm(y, "batch_norm_1", **bn))
                        y = b.conv(y, out, 3, 1, "conv_1", bias=False)
                        net = y + shortcut
                    channels = out
        net = tf.nn.softplus(b.batch_norm(net, "batch_norm", **bn))
        net = tf.reduce_mean(net, [1, 2])
        with v1.variable_scope("linear"):
            w = b.var("w", b.rng.normal(0, 1 / math.sqrt(channels), (channels, num_classes)))
            bias = b.var("b", b.rng.normal(0, 0.1, num_classes))
            return tf.matmul(net, w) + bias


def dense_head(b: Builder, latents, num_classes, scope):
    channels = int(latents.shape[-1])
    with v1.variable_scope(scope):
        flat = tf.reshape(latents, [-1, channels])
        w = b.var("w", b.rng.normal(0, 1 / math.sqrt(channels), (channels, num_classes)))
        bias = b.var("b", b.rng.normal(0, 0.1, num_classes))
        return tf.matmul(flat, w) + bias


def export_module(out: Path, build, seed: int) -> dict[str, np.ndarray]:
    """Build ``build(builder, training) -> (inputs, outputs)`` per tag set; export; run."""
    if out.exists():
        shutil.rmtree(out)
    tmp = Path(tempfile.mkdtemp()) / "export"
    saver_builder = v1.saved_model.Builder(str(tmp))
    goldens: dict[str, np.ndarray] = {}
    graphs = {}
    for tags in ([], ["train"]):
        graph = tf.Graph()
        with graph.as_default():
            b = Builder(np.random.default_rng(seed))
            inputs, outputs, feed = build(b, bool(tags))
            signature = v1.saved_model.signature_def_utils.build_signature_def(
                inputs={k: v1.saved_model.utils.build_tensor_info(v) for k, v in inputs.items()},
                outputs={k: v1.saved_model.utils.build_tensor_info(v)
                         for k, v in outputs.items()},
                method_name="")
            if b.updates:
                v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, tf.group(*b.updates))
            with v1.Session(graph=graph) as session:
                session.run(v1.global_variables_initializer())
                b.load(session)
                if not tags:
                    saver_builder.add_meta_graph_and_variables(
                        session, tags, signature_def_map={"default": signature},
                        strip_default_attrs=True)
                    values = session.run(outputs, {inputs[k]: v for k, v in feed.items()})
                    goldens.update({f"in_{k}": np.asarray(v) for k, v in feed.items()})
                    goldens.update({f"out_{k}": v for k, v in values.items()})
                else:
                    saver_builder.add_meta_graph(tags, signature_def_map={"default": signature},
                                                 strip_default_attrs=True)
            graphs[tuple(tags)] = graph
    saver_builder.save()
    shutil.copytree(tmp, out)
    (out / "tfhub_module.pb").write_bytes(MODULE_DEF)
    return goldens


def latents_fixture(out: Path, *, units=(2, 1, 1, 1), widths=(4, 8, 16, 32), stem_width=8,
                    size=32, batch=3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED + 1)
    images = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
    preprocessed = _preprocess_eager(images)

    def build(b, training):
        x = v1.placeholder(tf.float32, [None, None, None, 3], name="inputs")
        decay = v1.placeholder_with_default(tf.constant(0.1), [], name="decay_rate")
        latents = resnet_v2(b, x, units=units, widths=widths, stem_width=stem_width,
                            stride_in="last", training=training, decay_rate=decay, eps=1e-5,
                            scale=False, conv_bias=True)
        return ({"inputs": x, "decay_rate": decay}, {"default": latents},
                {"inputs": preprocessed, "decay_rate": np.float32(0.1)})

    goldens = export_module(out / "latents", build, SEED)
    latents = goldens["out_default"]

    def build_linear(b, training):
        x = v1.placeholder(tf.float32, [None, 1, 1, latents.shape[-1]], name="inputs")
        logits = b.conv(x, 2, 1, 1, "linear", bias=True)
        return {"inputs": x}, {"default": logits}, {"inputs": latents}

    linear = export_module(out / "linear", build_linear, SEED + 7)
    return {
        "images": images,  # [0, 1] NHWC, before the submission's preprocessing
        "preprocessed": preprocessed,
        "latents": latents,
        "logits": linear["out_default"],
        "bird_logit": linear["out_default"][:, 0, 0, 1],
    }


def _preprocess_eager(images: np.ndarray) -> np.ndarray:
    """challenge.md section 6: central crop 0.875, TF1 bilinear resize back, 2x - 1."""
    size = images.shape[1:3]
    graph = tf.Graph()
    with graph.as_default():
        x = tf.constant(images)
        x = tf.image.central_crop(x, 0.875)
        x = v1.image.resize_bilinear(x, size, align_corners=False)
        x = (x - 0.5) * 2
        with v1.Session(graph=graph) as session:
            return session.run(x)


def imagenet_fixture(out: Path, *, units=(1, 2, 1, 1), widths=(4, 8, 16, 32), stem_width=8,
                     num_classes=10, size=32, batch=3, name="imagenet") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED + 2)
    images = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)

    def build(b, training):
        x = v1.placeholder(tf.float32, [None, None, None, 3], name="x")
        decay = v1.placeholder_with_default(tf.constant(0.1), [], name="decay_rate")
        latents = resnet_v2(b, x, units=units, widths=widths, stem_width=stem_width,
                            stride_in="first", training=training, decay_rate=decay, eps=1e-5,
                            scale=True, conv_bias=False)
        logits = dense_head(b, latents, num_classes, "logits")
        return ({"x": x, "decay_rate": decay}, {"default": logits},
                {"x": images * 2 - 1, "decay_rate": np.float32(0.1)})

    goldens = export_module(out / name, build, SEED + 3)
    return {"images": images, "logits": goldens["out_default"]}


def cifar10_fixture(out: Path, *, depth=10, width=1, num_classes=10, size=16,
                    batch=3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED + 4)
    images = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
    mean = np.array([125.3, 123.0, 113.9], np.float32) / 255
    std = np.array([63.0, 62.1, 66.7], np.float32) / 255

    def build(b, training):
        x = v1.placeholder(tf.float32, [None, None, None, 3], name="x")
        decay = v1.placeholder_with_default(tf.constant(0.1), [], name="decay_rate")
        count = v1.placeholder_with_default(tf.constant(0, tf.int64), [], name="count")
        logits = wide_resnet(b, x, depth=depth, width=width, num_classes=num_classes,
                             training=training, decay_rate=decay, eps=1e-3)
        return ({"x": x, "decay_rate": decay, "count": count}, {"default": logits},
                {"x": (images - mean) / std, "decay_rate": np.float32(0.1),
                 "count": np.int64(0)})

    goldens = export_module(out / "cifar10", build, SEED + 5)
    return {"images": images, "logits": goldens["out_default"]}


MANY = 2000


def many_name(i: int) -> str:
    """Names of the many-variables checkpoint (value of variable i: i / 2)."""
    return f"model/layer_{i:04d}/" + "a_very_long_sonnet_style_scope_name_" * 4 + "variable"


def checkpoint_fixtures(out: Path) -> None:
    """Bundles written by TF's SaveV2 (the same writer Saver uses) plus their goldens."""
    rng = np.random.default_rng(SEED + 6)
    folder = out / "checkpoints"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    numeric = {
        "f32": rng.normal(size=(3, 4)).astype(np.float32),
        "f64": rng.normal(size=(5,)).astype(np.float64),
        "f16": rng.normal(size=(2, 3)).astype(np.float16),
        "i8": rng.integers(-128, 128, (7,)).astype(np.int8),
        "i16": rng.integers(-2**15, 2**15, (2, 2)).astype(np.int16),
        "i32": rng.integers(-2**31, 2**31, (4,)).astype(np.int32),
        "i64": rng.integers(-2**62, 2**62, (3,)).astype(np.int64),
        "u8": rng.integers(0, 256, (2, 3, 4)).astype(np.uint8),
        "u16": rng.integers(0, 2**16, (5,)).astype(np.uint16),
        "bool": rng.integers(0, 2, (6,)).astype(bool),
        "scalar_f32": np.float32(3.25),
        "scalar_i64": np.int64(-7),
        "empty": np.zeros((0, 3), np.float32),
        "global_step": np.int64(123456),
        "scope/with/slashes/w": rng.normal(size=(2, 2, 3, 4)).astype(np.float32),
    }
    bf16_source = rng.normal(size=(4, 3)).astype(np.float32)
    strings = {"str_vector": [b"hello", b"", b"\x00\xff bytes", "ünïcode".encode()],
               "str_scalar": [b"a scalar string"], "str_matrix": [b"a", b"bb", b"ccc", b"dddd"]}
    string_shapes = {"str_vector": [4], "str_scalar": [], "str_matrix": [2, 2]}
    partitioned = rng.normal(size=(6, 4)).astype(np.float32)

    names, specs, tensors = [], [], []
    for name, value in numeric.items():
        names.append(name)
        specs.append("")
        tensors.append(tf.constant(value))
    bf16 = tf.cast(tf.constant(bf16_source), tf.bfloat16)
    names.append("bf16")
    specs.append("")
    tensors.append(bf16)
    for name, value in strings.items():
        names.append(name)
        specs.append("")
        tensors.append(tf.reshape(tf.constant(value), string_shapes[name]))
    for start, length in ((0, 2), (2, 3), (5, 1)):
        names.append("partitioned")
        specs.append(f"6 4 {start},{length}:-")
        tensors.append(tf.constant(partitioned[start : start + length]))
    tf.raw_ops.SaveV2(prefix=str(folder / "dtypes" / "ckpt"), tensor_names=names,
                      shape_and_slices=specs, tensors=tensors)
    golden = dict(numeric)
    golden["bf16"] = tf.cast(bf16, tf.float32).numpy()
    golden["partitioned"] = partitioned
    np.savez(folder / "dtypes" / "golden.npz", **golden)
    (folder / "dtypes" / "golden_strings.json").write_text(json.dumps(
        {k: {"shape": string_shapes[k], "hex": [s.hex() for s in v]}
         for k, v in strings.items()}, indent=1))

    # Many variables: the index outgrows one 256 KiB data block.
    many = {many_name(i): np.float32(i * 0.5) for i in range(MANY)}
    tf.raw_ops.SaveV2(prefix=str(folder / "many" / "ckpt"), tensor_names=list(many),
                      shape_and_slices=[""] * len(many),
                      tensors=[tf.constant(v) for v in many.values()])

    # Three data shards, merged into one index (what a sharded Saver writes).
    sharded = {f"shard_var_{i}": rng.normal(size=(i + 1, 3)).astype(np.float32)
               for i in range(6)}
    prefixes = []
    items = list(sharded.items())
    for shard in range(3):
        prefix = str(folder / "sharded" / f"tmp_{shard}")
        part = items[shard::3]
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=[k for k, _ in part],
                          shape_and_slices=[""] * len(part),
                          tensors=[tf.constant(v) for _, v in part])
        prefixes.append(prefix)
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=prefixes,
                                  destination_prefix=str(folder / "sharded" / "ckpt"))
    np.savez(folder / "sharded" / "golden.npz", **sharded)


def _import_tensorflow_hub():
    """tensorflow_hub 0.15.0, the last release with the TF1 module API (``native_module``).

    On TF 2.21 its package ``__init__`` fails importing the estimator and
    feature-column modules (TF dropped ``tf.compat.v1.estimator``); neither is
    used here, so empty stand-ins are registered first. No installed file is
    changed.
    """
    import sys
    import types

    stubs = {"tensorflow_hub.estimator": ("LatestModuleExporter", "register_module_for_export"),
             "tensorflow_hub.feature_column": ("image_embedding_column",
                                               "sparse_text_embedding_column",
                                               "text_embedding_column"),
             "tensorflow_hub.feature_column_v2": ("text_embedding_column_v2",)}
    for name, attributes in stubs.items():
        if name not in sys.modules:
            stub = types.ModuleType(name)
            for attribute in attributes:
                setattr(stub, attribute, None)
            sys.modules[name] = stub
    import tensorflow_hub as hub

    if not hub.__version__.startswith("0.15."):
        raise SystemExit(f"tensorflow_hub 0.15.x is needed (TF1 module export), got "
                         f"{hub.__version__}")
    return hub


class DeepMindBuilder:
    """Variables of DeepMind-style networks, values drawn by name (same in every graph).

    ``hub.create_module_spec`` calls the module function once per tag set and the
    export builds a third graph, so values are keyed by variable name and loaded
    after the module is instantiated (zeros initializers keep them out of the graph).
    """

    def __init__(self, values: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        self.values = values
        self.rng = rng

    def var(self, name, draw, shape, trainable=True):
        full = f"{v1.get_variable_scope().name}/{name}".lstrip("/")
        if full not in self.values:
            self.values[full] = np.asarray(draw(shape), np.float32)
        return v1.get_variable(name, shape=shape, initializer=v1.zeros_initializer(),
                               trainable=trainable)

    def conv(self, x, out_ch, k, stride, name):
        """``snt.Conv2D``: HWIO ``w``, no bias, SAME padding."""
        in_ch = int(x.shape[-1])
        with v1.variable_scope(name):
            w = self.var("w", lambda s: self.rng.normal(0, math.sqrt(2.0 / (k * k * in_ch)), s),
                         (k, k, in_ch, out_ch))
            return tf.nn.conv2d(x, w, [1, stride, stride, 1], "SAME")

    def linear(self, x, out, name="linear"):
        """``snt.Linear``: ``matmul(x, w) + b``."""
        in_ch = int(x.shape[-1])
        with v1.variable_scope(name, use_resource=False):
            w = self.var("w", lambda s: self.rng.normal(0, 1 / math.sqrt(in_ch), s), (in_ch, out))
            b = self.var("b", lambda s: self.rng.normal(0, 0.1, s), (out,))
            return tf.matmul(x, w) + b

    def batch_norm(self, x, *, is_training, test_local_stats, decay_rate, eps=1e-5):
        """DeepMind's LLR ``BatchNorm`` (hub-modules.md section 6), scope ``BatchNorm``,
        ``BatchNorm_1``, ... within the enclosing scope."""
        c = int(x.shape[-1])
        with v1.variable_scope(None, default_name="BatchNorm"):
            axis = list(range(x.shape.ndims - 1))
            mean = tf.reduce_mean(x, axis=axis)
            var = tf.reduce_mean(x ** 2, axis=axis) - mean ** 2
            gamma = self.var("gamma", lambda s: 1 + self.rng.normal(0, 0.2, s), (c,))
            beta = self.var("beta", lambda s: self.rng.normal(0, 0.2, s), (c,))
            counter = self.var("accumulation_counter",
                               lambda s: np.float32(self.rng.integers(1, 10**5)), (),
                               trainable=False)
            acc_mean = self.var("accumulated_mean", lambda s: self.rng.normal(0, 0.2, s), (c,),
                                trainable=False)
            acc_var = self.var("accumulated_var", lambda s: self.rng.uniform(0.5, 1.5, s), (c,),
                               trainable=False)
            if is_training:
                v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, tf.group([
                    v1.assign_add(counter, 1.0),
                    v1.assign_sub(acc_mean, decay_rate * (acc_mean - mean)),
                    v1.assign_sub(acc_var, decay_rate * (acc_var - var)),
                ]))
            return tf.nn.batch_normalization(
                x, mean if test_local_stats else acc_mean, var if test_local_stats else acc_var,
                offset=beta, scale=gamma, variance_epsilon=eps)


def dm_resnet_v2(b: DeepMindBuilder, x, *, units, widths, stem_width, bn):
    """A ResNet v2 (stride in a stage's first unit) with DeepMind's batch norm."""
    with v1.variable_scope("resnet_v2", use_resource=False):
        net = b.conv(x, stem_width, 7, 2, "conv2d")
        net = tf.nn.max_pool2d(net, 3, 2, "SAME", name="max_pool")
        for stage, (count, width) in enumerate(zip(units, widths)):
            for unit in range(count):
                stride = 2 if (unit == 0 and stage > 0) else 1
                with v1.variable_scope(f"block_group_{stage}/block_{unit}"):
                    preact = tf.nn.relu(b.batch_norm(net, **bn))
                    shortcut = (b.conv(preact, 4 * width, 1, stride, "shortcut_conv")
                                if int(net.shape[-1]) != 4 * width or stride > 1 else net)
                    y = b.conv(preact, width, 1, 1, "conv_0")
                    y = b.conv(tf.nn.relu(b.batch_norm(y, **bn)), width, 3, stride, "conv_1")
                    y = b.conv(tf.nn.relu(b.batch_norm(y, **bn)), 4 * width, 1, 1, "conv_2")
                    net = y + shortcut
        net = tf.nn.relu(b.batch_norm(net, **bn))
        return tf.reduce_mean(net, [1, 2], keepdims=True, name="global_pool")


def dm_wide_resnet(b: DeepMindBuilder, x, *, depth, width, num_classes, bn):
    """DeepMind's ``WideResNet`` (``wide_resnet.py``) with softplus."""
    n = (depth - 4) // 6
    with v1.variable_scope("wide_res_net", use_resource=True):
        net = b.conv(x, 16 * width, 3, 1, "init_conv")
        for layer, size in enumerate((16 * width, 32 * width, 64 * width)):
            for i in range(n):
                stride = 2 if (layer != 0 and i == 0) else 1
                with v1.variable_scope(f"resnet_lay_{layer}_block_{i}"):
                    orig = net
                    for j in range(2):
                        net = tf.nn.softplus(b.batch_norm(net, **bn))
                        if i == 0 and j == 0:
                            orig = net  # the projection reads the first activation
                        net = b.conv(net, size, 3, stride if j == 0 else 1, f"conv_{j}")
                    net = net + (b.conv(orig, size, 1, stride, "shortcut_x") if i == 0 else orig)
        net = tf.nn.softplus(b.batch_norm(net, **bn))
        net = tf.reduce_mean(net, axis=[1, 2], keepdims=False, name="avg_pool")
        return b.linear(net, num_classes)


def export_hub_module(out: Path, module_fn, feed: dict[str, np.ndarray], seed: int
                      ) -> dict[str, np.ndarray]:
    """``module_fn(builder, is_training)`` -> (inputs, output); exported with
    tensorflow_hub's TF1 API (tag sets {} and {"train"}) as the archive ``out``
    (``.tar.gz``, members sorted, no owners or times); returns TensorFlow's output."""
    hub = _import_tensorflow_hub()
    values: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(seed)

    def fn(is_training):
        inputs, output = module_fn(DeepMindBuilder(values, rng), is_training)
        hub.add_signature(inputs=inputs, outputs=output)

    spec = hub.create_module_spec(fn, tags_and_args=[(set(), {"is_training": False}),
                                                     ({"train"}, {"is_training": True})])
    folder = Path(tempfile.mkdtemp()) / "module"
    with tf.Graph().as_default():
        module = hub.Module(spec)
        result = module({k: tf.constant(v) for k, v in feed.items()})
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            for name, variable in module.variable_map.items():
                variable.load(values[name], session)
            module.export(str(folder), session)
            golden = {"out_default": session.run(result)}
    write_archive(folder, out)
    shutil.rmtree(folder.parent)
    return golden


def write_archive(folder: Path, out: Path) -> None:
    """``folder``'s files as a reproducible ``.tar.gz`` (paths relative to it)."""
    import gzip
    import tarfile

    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w") as archive:
        for path in sorted(folder.rglob("*")):
            info = archive.gettarinfo(str(path), arcname=path.relative_to(folder).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if path.is_file():
                with open(path, "rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)


def dm_fixtures(out: Path) -> None:
    """The modules built the DeepMind way, and their golden outputs."""
    rng = np.random.default_rng(SEED + 8)
    images = rng.uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
    preprocessed = _preprocess_eager(images)

    def bn_args(is_training, decay_rate):
        # the training code's two calls: nominal pass / evaluation
        return dict(is_training=is_training, test_local_stats=is_training, decay_rate=decay_rate)

    def latents_fn(b, is_training):
        x = v1.placeholder(tf.float32, [None, None, None, 3], name="inputs")
        decay = v1.placeholder(tf.float32, [], name="decay_rate")
        latents = dm_resnet_v2(b, x, units=(1, 1, 1, 1), widths=(4, 8, 16, 32), stem_width=8,
                               bn=bn_args(is_training, decay))
        return {"inputs": x, "decay_rate": decay}, latents

    latents = export_hub_module(out / "dm_latents.tar.gz", latents_fn,
                                {"inputs": preprocessed, "decay_rate": np.float32(0.1)},
                                SEED + 9)["out_default"]

    def linear_fn(b, is_training):
        x = v1.placeholder(tf.float32, [None, 1, 1, latents.shape[-1]], name="inputs")
        logits = b.linear(tf.reshape(x, [-1, latents.shape[-1]]), 2)
        return {"inputs": x}, tf.reshape(logits, [-1, 1, 1, 2])

    logits = export_hub_module(out / "dm_linear.tar.gz", linear_fn, {"inputs": latents},
                               SEED + 10)["out_default"]
    np.savez(out / "golden_dm_latents.npz", images=images, preprocessed=preprocessed,
             latents=latents, logits=logits, bird_logit=logits[:, 0, 0, 1])

    cifar = rng.uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    mean = np.array([125.3, 123.0, 113.9], np.float32) / 255
    std = np.array([63.0, 62.1, 66.7], np.float32) / 255

    def wrn_fn(b, is_training):
        x = v1.placeholder(tf.float32, [None, None, None, 3], name="x")
        decay = v1.placeholder(tf.float32, [], name="decay_rate")
        count = v1.placeholder(tf.int32, [], name="count")
        logits = dm_wide_resnet(b, x, depth=10, width=1, num_classes=10,
                                bn=bn_args(is_training, decay))
        return {"x": x, "decay_rate": decay, "count": count}, logits

    wrn = export_hub_module(out / "dm_cifar10.tar.gz", wrn_fn,
                            {"x": (cifar - mean) / std, "decay_rate": np.float32(0.1),
                             "count": np.int32(0)}, SEED + 11)["out_default"]
    np.savez(out / "golden_dm_cifar10.npz", images=cifar, logits=wrn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/hub"))
    parser.add_argument("--only-deepmind", action="store_true",
                        help="write only the modules built the DeepMind way (dm_*)")
    parser.add_argument("--resnet152", type=Path, default=None,
                        help="instead: write a full-size ResNet-152 v2 module here (benchmark)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.resnet152 is not None:
        goldens = imagenet_fixture(args.resnet152, units=(3, 8, 36, 3),
                                   widths=(64, 128, 256, 512), stem_width=64,
                                   num_classes=1000, size=64, batch=2, name="module")
        np.savez(args.resnet152 / "golden.npz", **goldens)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    dm_fixtures(args.out)
    if args.only_deepmind:
        return
    np.savez(args.out / "golden_latents.npz", **latents_fixture(args.out))
    np.savez(args.out / "golden_imagenet.npz", **imagenet_fixture(args.out))
    np.savez(args.out / "golden_cifar10.npz", **cifar10_fixture(args.out))
    checkpoint_fixtures(args.out)


if __name__ == "__main__":
    main()
