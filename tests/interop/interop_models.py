"""The seed's LazyMLP and a small CNN, each written in PyTorch and in lazyinit with the same names."""

import jax
import torch

import lazyinit as li
from lazyinit._demo import LazyMLP  # the seed's LazyMLP, as the demo tells it

__all__ = ["CNN", "LazyMLP", "TorchCNN", "TorchLazyMLP"]


class TorchLazyMLP(torch.nn.Module):
    """PyTorch's LazyModuleMixin example, verbatim."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.LazyLinear(10)
        self.relu1 = torch.nn.ReLU()
        self.fc2 = torch.nn.LazyLinear(1)
        self.relu2 = torch.nn.ReLU()

    def forward(self, input):
        x = self.relu1(self.fc1(input))
        return self.relu2(self.fc2(x))


class TorchCNN(torch.nn.Module):
    """Conv, BatchNorm, strided Conv, grouped ConvTranspose, Linear head; all lazy."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.LazyConv2d(4, 3, padding=1)
        self.bn1 = torch.nn.LazyBatchNorm2d()
        self.conv2 = torch.nn.LazyConv2d(8, 3, stride=2, bias=False)
        self.up = torch.nn.LazyConvTranspose2d(4, 2, stride=2, groups=2)
        self.head = torch.nn.LazyLinear(3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.up(torch.relu(self.conv2(x)))
        return self.head(x.mean((2, 3)))


class CNN(li.Layer):
    """TorchCNN in lazyinit, channels-first like PyTorch (the kernels' layout is the same either way)."""

    conv1: li.Layer = li.Conv(4, (3, 3), padding=1, channels_first=True)
    bn1: li.Layer = li.BatchNorm(channels_first=True)
    conv2: li.Layer = li.Conv(8, (3, 3), stride=2, use_bias=False, channels_first=True)
    up: li.Layer = li.ConvTranspose(4, (2, 2), stride=2, groups=2, channels_first=True)
    head: li.Layer = li.Linear(3)

    def __call__(self, params, x, *, train=False):
        x = jax.nn.relu(self.bn1(params["bn1"], self.conv1(params["conv1"], x), train=train))
        x = self.up(params["up"], jax.nn.relu(self.conv2(params["conv2"], x)))
        return self.head(params["head"], x.mean((2, 3)))
