"""The bit-exact integer reference: the single source of truth for the C++ kernels and the RTL units.

Modules (docs/numerics.md): `fixed` the §1 primitives and `QTensor`, `luts` every lookup table (run
`python -m trilevel.intref.luts --header H --memh DIR` to emit them), `layers` linear / LayerNorm /
GELU, `blocks` the attention and MLP halves of a transformer block, `topk` token and connection
selection, `optim` AdamW and SGD-momentum, `fracs` the host's frac control. Kernels take a leading
batch dimension [B, T, D]; their uniform convention is described in `layers`.
"""
