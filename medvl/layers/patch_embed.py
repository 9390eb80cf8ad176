"""Image-to-patch embedding: the "16x16 words" of the Vision Transformer.

Implements the patch projection of Dosovitskiy et al., "An Image is Worth 16x16 Words:
Transformers for Image Recognition at Scale" (ICLR 2021, arXiv:2010.11929): a
convolution whose kernel and stride equal the patch size cuts the image into
non-overlapping patches and projects each to ``embed_dim``. Module and parameter names
(``proj.weight``, ``proj.bias``) follow ``timm.layers.PatchEmbed`` so that weights copy
across with a plain ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["PatchEmbed", "PatchEmbed3d", "ConvStem", "to_2tuple", "to_3tuple"]


def to_2tuple(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Returns ``(x, x)`` for an int and ``tuple(x)`` for a pair."""
    if isinstance(x, int):
        return (x, x)
    x = tuple(int(v) for v in x)
    if len(x) != 2:
        raise ValueError(f"expected an int or a pair, got {x!r}")
    return x  # type: ignore[return-value]


def to_3tuple(x: int | tuple[int, int, int] | list[int]) -> tuple[int, int, int]:
    """Returns ``(x, x, x)`` for an int and ``tuple(x)`` for a triple."""
    if isinstance(x, int):
        return (x, x, x)
    x = tuple(int(v) for v in x)
    if len(x) != 3:
        raise ValueError(f"expected an int or a triple, got {x!r}")
    return x  # type: ignore[return-value]


class PatchEmbed(nn.Module):
    """Splits an image into patches and linearly embeds each one.

    Args:
        img_size: Nominal input size, an int or ``(H, W)``. Fixes ``grid_size`` and
            ``num_patches`` (the size the position embedding is learnt at).
        patch_size: Patch side length, an int or ``(ph, pw)``.
        in_chans: Number of input channels (1 for radiographs).
        embed_dim: Output embedding width ``D``.
        norm_layer: Optional norm applied to the patch tokens; ``None`` for identity.
        bias: Whether the projection has a bias.
        dynamic_img_size: If True, accept any input whose height and width are
            divisible by the patch size; otherwise the input must be ``img_size``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        norm_layer: Callable[[int], nn.Module] | None = None,
        bias: bool = True,
        dynamic_img_size: bool = False,
    ) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        if any(s % p for s, p in zip(self.img_size, self.patch_size)):
            raise ValueError(
                f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}"
            )
        self.grid_size = tuple(s // p for s, p in zip(self.img_size, self.patch_size))
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.dynamic_img_size = dynamic_img_size

        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias
        )
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        """Returns the patch grid ``(gh, gw)`` for an input of size ``(H, W)``."""
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) image batch, got shape {tuple(x.shape)}")
        _, c, h, w = x.shape
        if c != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channels, got {c}")
        if self.dynamic_img_size:
            if h % self.patch_size[0] or w % self.patch_size[1]:
                raise ValueError(
                    f"input size ({h}, {w}) is not divisible by patch size {self.patch_size}"
                )
        elif (h, w) != self.img_size:
            raise ValueError(
                f"input size ({h}, {w}) does not match img_size {self.img_size}; "
                "build with dynamic_img_size=True to accept other sizes"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeds patches.

        Args:
            x: Images, ``(B, C, H, W)``.

        Returns:
            Patch tokens in row-major grid order, ``(B, N, D)`` with
            ``N = (H / ph) * (W / pw)``.
        """
        self._check_input(x)
        x = self.proj(x)  # (B, D, gh, gw)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        return self.norm(x)


class ConvStem(PatchEmbed):
    """Convolutional stem in place of the patchify convolution (ViT_C).

    Xiao et al., "Early Convolutions Help Transformers See Better" (NeurIPS 2021,
    arXiv:2106.14881): a few stride-2 3x3 convolutions (BatchNorm, ReLU), then a 1x1
    projection to ``embed_dim``, reach the same ``patch_size`` downsampling as the
    patchify stem but optimise much faster and more stably from scratch, which is what
    small medical datasets need. The token grid, and so the rest of the ViT, is unchanged.

    Args:
        img_size: Nominal input size.
        patch_size: Total downsampling; must be a power of two (one conv per factor 2).
        in_chans: Input channels.
        embed_dim: Output embedding width ``D``.
        stem_width: Channels of the first convolution; doubled at every later one.
        dynamic_img_size: Accept any input divisible by ``patch_size``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 1,
        embed_dim: int = 768,
        stem_width: int = 24,
        dynamic_img_size: bool = False,
        **unused,
    ) -> None:
        super().__init__(img_size, patch_size, in_chans, embed_dim, dynamic_img_size=dynamic_img_size)
        ph, pw = self.patch_size
        if ph != pw or ph & (ph - 1):
            raise ValueError(f"ConvStem needs a square power-of-two patch size, got {self.patch_size}")
        layers: list[nn.Module] = []
        c_in, c_out = in_chans, stem_width
        for _ in range(ph.bit_length() - 1):  # log2(patch) stride-2 convolutions
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in, c_out = c_out, min(c_out * 2, embed_dim)
        layers.append(nn.Conv2d(c_in, embed_dim, 1))
        self.proj = nn.Sequential(*layers)


class PatchEmbed3d(nn.Module):
    """Splits a volume into (possibly anisotropic) cuboid patches and embeds each one.

    The 3-D analogue of :class:`PatchEmbed` used by ViT-based volume encoders (e.g.
    UNETR, Hatamizadeh et al., WACV 2022, arXiv:2103.10504): a ``Conv3d`` with kernel =
    stride = ``(pd, ph, pw)``. Anisotropic patches (e.g. ``(4, 16, 16)``) suit CT/MR
    series whose slices are thicker than their in-plane spacing.

    Args:
        img_size: Nominal volume size ``(D, H, W)`` (an int for a cube).
        patch_size: Patch size ``(pd, ph, pw)`` (an int for a cube).
        in_chans: Input channels (1 for CT/MR).
        embed_dim: Output embedding width.
        dynamic_img_size: Accept any size divisible by the patch size.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int, int] = 96,
        patch_size: int | tuple[int, int, int] = 16,
        in_chans: int = 1,
        embed_dim: int = 768,
        dynamic_img_size: bool = False,
        **unused,
    ) -> None:
        super().__init__()
        self.img_size, self.patch_size = to_3tuple(img_size), to_3tuple(patch_size)
        if any(s % p for s, p in zip(self.img_size, self.patch_size)):
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        self.grid_size = tuple(s // p for s, p in zip(self.img_size, self.patch_size))
        self.num_patches = self.grid_size[0] * self.grid_size[1] * self.grid_size[2]
        self.in_chans, self.embed_dim, self.dynamic_img_size = in_chans, embed_dim, dynamic_img_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def dynamic_feat_size(self, img_size: tuple[int, ...]) -> tuple[int, int, int]:
        """Returns the patch grid ``(gd, gh, gw)`` for a volume of size ``(D, H, W)``."""
        return tuple(int(s) // p for s, p in zip(img_size, self.patch_size))  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeds patches: ``(B, C, D, H, W) -> (B, N, D_embed)`` in (d, h, w) raster order."""
        if x.ndim != 5:
            raise ValueError(f"expected a (B, C, D, H, W) volume batch, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channels, got {x.shape[1]}")
        size = tuple(x.shape[2:])
        if self.dynamic_img_size:
            if any(s % p for s, p in zip(size, self.patch_size)):
                raise ValueError(f"input size {size} is not divisible by patch size {self.patch_size}")
        elif size != self.img_size:
            raise ValueError(f"input size {size} does not match img_size {self.img_size}")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)
