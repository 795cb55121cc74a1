"""LoSA adapters over frozen backbone activations and the fusion that merges them.

Every adapter reads cached activations of one tapped layer, ``tokens [B, T, cells, C]`` with
``cells = t_sub * grid * grid`` (t-major), and ``mask [B, T]`` (True = valid step); padded steps never
influence valid outputs and come out as exact zeros.

* ``short.py`` - :class:`ShortRangeAdapter`: fine local context from the tokens of steps t-w..t+w
  (space-time layout aware by default: motion direction; ``mode="pooled"`` is the first design).
* ``long.py`` - :class:`LongRangeAdapter`: one token per step, masked self-attention (long range).
* ``side.py`` - :class:`SideAdapter`: the AdaTAD-style side adapter baseline.
* ``fusion.py`` - the Long-Short-range gated fusion (and sum / sigmoid / concat alternatives).
* ``common.py`` - token checks, sin-cos positions, MLP.
"""
from losa.adapters.common import check_tokens, sinusoidal_positions
from losa.adapters.long import LongRangeAdapter
from losa.adapters.short import ShortRangeAdapter
from losa.adapters.side import SideAdapter

__all__ = ["LongRangeAdapter", "ShortRangeAdapter", "SideAdapter", "check_tokens", "sinusoidal_positions"]
