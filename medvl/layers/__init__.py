"""Small ``nn.Module`` building blocks shared by medvl encoders and heads.

Torch only: nothing here imports Lightning (see DESIGN.md, "The dependency rule").
"""

from medvl.layers.attention import Attention, Block, DropPath, LayerScale, drop_path
from medvl.layers.mlp import Mlp
from medvl.layers.patch_embed import ConvStem, PatchEmbed, PatchEmbed3d, to_2tuple, to_3tuple
from medvl.layers.pos_embed import resample_abs_pos_embed

__all__ = [
    "Attention",
    "Block",
    "DropPath",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "PatchEmbed3d",
    "ConvStem",
    "drop_path",
    "resample_abs_pos_embed",
    "to_2tuple",
    "to_3tuple",
]
