"""ResNet encoders from MONAI shared by the UCMT students and the slice detector."""

from __future__ import annotations

import torch
from monai.networks.nets import ResNet
from torch import nn

__all__ = ["ResNetEncoder"]


class ResNetEncoder(nn.Module):
    """A MONAI 2D ResNet used as a feature pyramid (no classification head).

    Args:
        block: ``"basic"`` or ``"bottleneck"`` (x4 channel expansion; ResNet-50 uses it).
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        widths: planes per stage, e.g. (64, 128, 256, 512).
        in_channels: 1 for a slice, 3 for a 2.5D triplet.
        stem_downsample: stride-2 stem and max pool (standard); off keeps full resolution for
            small slices.

    ``forward`` returns the four stage outputs; stage ``i`` is at 1/2**i of the stem output.
    """

    def __init__(
        self, block: str, layers: tuple[int, ...], widths: tuple[int, ...], in_channels: int, stem_downsample: bool
    ):
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"layers and widths need 4 stages, got {layers}, {widths}")
        self.net = ResNet(
            block=block,
            layers=list(layers),
            block_inplanes=list(widths),
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7 if stem_downsample else 3,
            conv1_t_stride=2 if stem_downsample else 1,
            no_max_pool=not stem_downsample,
            num_classes=1,
            feed_forward=False,
        )
        expansion = 4 if block == "bottleneck" else 1
        self.channels = tuple(w * expansion for w in widths)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        h = n.act(n.bn1(n.conv1(x)))
        return h if n.no_max_pool else n.maxpool(h)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(x)
        feats = []
        for layer in (self.net.layer1, self.net.layer2, self.net.layer3, self.net.layer4):
            h = layer(h)
            feats.append(h)
        return feats
