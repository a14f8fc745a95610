"""ResNet in lazyinit: torchvision's ``ResNet`` with ``BasicBlock``s, its layers named as there.

Convolutions without bias, each followed by a ``BatchNorm``; a block adds its input (through
``downsample``, a 1x1 convolution and a ``BatchNorm``, where the shape changes). The model
takes PyTorch's ``(N, C, H, W)`` images: :func:`lazyinit.channels_first` makes every
``Conv``, ``BatchNorm`` and pooling layer channels-first, so nothing is transposed.
``train=True`` (with ``li.apply(..., mutable=True)``) normalizes with the batch's statistics
and updates the running ones and ``count`` (PyTorch's ``num_batches_tracked``).

``tests/interop/test_ports.py`` checks it against the real model; ``docs/porting.md`` walks a port.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

import lazyinit as li

from . import Act


def _conv_bn(width: int, kernel: int, stride: int) -> tuple[li.Layer, li.Layer]:
    # a tuple kernel size: the Conv's rank is known without a sample (the seed flow)
    return li.Conv(width, (kernel, kernel), stride, kernel // 2, use_bias=False), li.BatchNorm()


class BasicBlock(li.Layer):
    conv1: li.Layer
    bn1: li.Layer
    relu: li.Layer
    conv2: li.Layer
    bn2: li.Layer
    downsample: li.Layer | None = None

    def __call__(self, params: Any, x: jax.Array, *, train: bool = False) -> jax.Array:
        out = self.bn1(params["bn1"], self.conv1(params["conv1"], x), train=train)
        out = self.relu(params["relu"], out)
        out = self.bn2(params["bn2"], self.conv2(params["conv2"], out), train=train)
        if self.downsample is not None:
            x = self.downsample(params["downsample"], x, train=train)
        return self.relu(params["relu"], out + x)


def block(width: int, stride: int, downsample: bool) -> BasicBlock:
    conv1, bn1 = _conv_bn(width, 3, stride)
    conv2, bn2 = _conv_bn(width, 3, 1)
    down = li.Sequential(list(_conv_bn(width, 1, stride))) if downsample else None
    return BasicBlock(conv1, bn1, Act(li.nn.relu), conv2, bn2, down)


class ResNet(li.Layer):
    conv1: li.Layer
    bn1: li.Layer
    relu: li.Layer
    maxpool: li.Layer
    layers: tuple[li.Layer, ...]  # torchvision's layer1, layer2, ...
    avgpool: li.Layer
    fc: li.Layer

    def children(self) -> dict[str, li.Layer]:
        named = dict(conv1=self.conv1, bn1=self.bn1, relu=self.relu, maxpool=self.maxpool)
        stages = {f"layer{i + 1}": stage for i, stage in enumerate(self.layers)}
        return {**named, **stages, "avgpool": self.avgpool, "fc": self.fc}

    def __call__(self, params: Any, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = self.bn1(params["bn1"], self.conv1(params["conv1"], x), train=train)
        x = self.maxpool(params["maxpool"], self.relu(params["relu"], x))
        for i, stage in enumerate(self.layers):
            x = stage(params[f"layer{i + 1}"], x, train=train)
        return self.fc(params["fc"], self.avgpool(params["avgpool"], x))


def resnet(
    widths: Sequence[int] = (64, 128, 256, 512),
    blocks: Sequence[int] = (2, 2, 2, 2),
    num_classes: int = 1000,
) -> ResNet:
    """A ResNet of ``BasicBlock``s (the defaults: ResNet-18), taking ``(N, C, H, W)`` images."""
    stages, previous = [], widths[0]
    for i, (width, n) in enumerate(zip(widths, blocks)):
        stride = 1 if i == 0 else 2
        first = block(width, stride, downsample=stride != 1 or width != previous)
        stages.append(li.Sequential([first] + [block(width, 1, False) for _ in range(n - 1)]))
        previous = width
    conv1, bn1 = _conv_bn(widths[0], 7, 2)
    pools = li.MaxPool(3, 2, 1), li.GlobalAvgPool()
    model = ResNet(
        conv1, bn1, Act(li.nn.relu), pools[0], tuple(stages), pools[1], li.Linear(num_classes)
    )
    return li.channels_first(model)


# --- mapping ---
# Nothing: nn.Conv2d, nn.BatchNorm2d (num_batches_tracked included) and nn.Linear are built-in
# pairs, and the layers are channels-first as PyTorch's.
# --- end of mapping ---
