"""Small ``nn.Module`` building blocks shared by medvl encoders and heads.

Torch only: nothing here imports Lightning (see DESIGN.md, "The dependency rule").
"""

from medvl.layers.attention import Attention, Block, DropPath, LayerScale, drop_path
from medvl.layers.attention_pool import AttentionPoolLatent
from medvl.layers.mlp import GluMlp, Mlp
from medvl.layers.patch_embed import ConvStem, PatchEmbed, PatchEmbed3d, to_2tuple, to_3tuple
from medvl.layers.pos_embed import resample_abs_pos_embed
from medvl.layers.rope import apply_rope, pad_rope, rope_2d

__all__ = [
    "Attention",
    "AttentionPoolLatent",
    "Block",
    "DropPath",
    "GluMlp",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "PatchEmbed3d",
    "ConvStem",
    "apply_rope",
    "drop_path",
    "pad_rope",
    "resample_abs_pos_embed",
    "rope_2d",
    "to_2tuple",
    "to_3tuple",
]
