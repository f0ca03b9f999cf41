"""mini-Xception (Arriaga et al. 2017), the FER2013 facial-expression CNN, ported to PyTorch from its Keras HDF5 file.

The layer semantics follow Keras: channels-last kernels transposed to PyTorch's layout, BatchNormalization with
epsilon 1e-3, and TensorFlow "same" padding (extra padding at the bottom/right) for the strided max pools.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elmd_sdk.errors import InputError

KERAS_BN_EPS = 1e-3


class TFSameMaxPool2d(nn.Module):
    """Max pooling with TensorFlow's "same" padding: padding split as evenly as possible, the extra on the far side."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def _pads(self, size: int) -> tuple[int, int]:
        total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel_size - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, ceil(H/s), ceil(W/s))
        top, bottom = self._pads(x.shape[-2])
        left, right = self._pads(x.shape[-1])
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D without bias: a 3x3 depthwise convolution then a 1x1 pointwise one."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W) -> (B, out, H, W)
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """One Xception block: two separable convolutions and a strided max pool, plus a strided 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(out_channels, eps=KERAS_BN_EPS)
        self.sep1 = SeparableConv2d(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=KERAS_BN_EPS)
        self.sep2 = SeparableConv2d(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=KERAS_BN_EPS)
        self.pool = TFSameMaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W) -> (B, out, ceil(H/2), ceil(W/2))
        main = self.pool(self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x))))))
        return main + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """Grayscale 64x64 face in [-1, 1] -> seven expression logits, via a (128, 4, 4) feature map."""

    in_size = 64
    channels = (8, 16, 32, 64, 128)

    def __init__(self, num_classes: int = 7) -> None:
        super().__init__()
        c = self.channels
        self.conv1 = nn.Conv2d(1, c[0], 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0], eps=KERAS_BN_EPS)
        self.conv2 = nn.Conv2d(c[0], c[0], 3, bias=False)
        self.bn2 = nn.BatchNorm2d(c[0], eps=KERAS_BN_EPS)
        self.blocks = nn.ModuleList(ResidualBlock(c[i], c[i + 1]) for i in range(4))
        self.head = nn.Conv2d(c[-1], num_classes, 3, padding=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map before the classifier: (B, 1, 64, 64) -> (B, 128, 4, 4)."""
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))  # (B, 8, 60, 60)
        for block in self.blocks:
            x = block(x)  # 60 -> 30 -> 15 -> 8 -> 4
        return x

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Expression logits from the feature map: 3x3 convolution then global average: (B, 128, h, w) -> (B, 7)."""
        return self.head(features).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 64, 64) -> (B, 7)
        return self.classify(self.forward_features(x))

    @classmethod
    def from_keras_hdf5(cls, path: str | Path) -> MiniXception:
        """Build the network and copy in the weights of a Keras 2 ``emotion_model.hdf5`` (read with h5py, no Keras)."""
        import h5py

        model = cls()
        try:
            with h5py.File(path, "r") as h5:
                weights = h5["model_weights"]
                tensors = {
                    name: torch.from_numpy(np.asarray(weights[layer][layer + "_1"][var]))
                    for name, (layer, var) in _keras_names(model).items()
                }
        except (OSError, KeyError) as exc:
            raise InputError(f"not a mini-Xception Keras weight file ({exc})", file=path) from None
        state = {}
        for name, value in tensors.items():
            if value.ndim == 4:  # Keras (kh, kw, in, out) / depthwise (kh, kw, in, 1) -> PyTorch (out, in, kh, kw)
                value = value.permute(2, 3, 0, 1) if "depthwise" in name else value.permute(3, 2, 0, 1)
            state[name] = value.contiguous()
        missing, _ = model.load_state_dict(state, strict=False)
        if [name for name in missing if not name.endswith("num_batches_tracked")]:  # no Keras counterpart
            raise InputError(f"weights missing for {missing}", file=path)
        return model


def _keras_names(model: MiniXception) -> dict[str, tuple[str, str]]:
    """PyTorch parameter/buffer name -> (Keras layer, variable) for every weight of the Keras model."""
    bn_vars = {
        "weight": "gamma:0",
        "bias": "beta:0",
        "running_mean": "moving_mean:0",
        "running_var": "moving_variance:0",
    }
    names: dict[str, tuple[str, str]] = {
        "conv1.weight": ("conv2d_1", "kernel:0"),
        "conv2.weight": ("conv2d_2", "kernel:0"),
    }
    names |= {f"bn{i}.{ours}": (f"batch_normalization_{i}", keras) for i in (1, 2) for ours, keras in bn_vars.items()}
    for k in range(1, 5):  # Keras numbers layers in creation order: block k has these indices
        p = f"blocks.{k - 1}"
        names[f"{p}.shortcut.weight"] = (f"conv2d_{k + 2}", "kernel:0")
        for j, sep in ((1, 2 * k - 1), (2, 2 * k)):
            names[f"{p}.sep{j}.depthwise.weight"] = (f"separable_conv2d_{sep}", "depthwise_kernel:0")
            names[f"{p}.sep{j}.pointwise.weight"] = (f"separable_conv2d_{sep}", "pointwise_kernel:0")
        for ours_bn, keras_index in (("shortcut_bn", 3 * k), ("bn1", 3 * k + 1), ("bn2", 3 * k + 2)):
            for ours, keras in bn_vars.items():
                names[f"{p}.{ours_bn}.{ours}"] = (f"batch_normalization_{keras_index}", keras)
    names["head.weight"] = ("conv2d_7", "kernel:0")
    names["head.bias"] = ("conv2d_7", "bias:0")
    return names
