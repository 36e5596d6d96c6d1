"""The activation shapes PGGAN really runs, per resolution (default model, default batch)."""

from __future__ import annotations

from dataclasses import dataclass

from fastpggan.networks import nf

# The authors' single-GPU minibatch preset; it fits an 8 GB card at every resolution to 256.
DEFAULT_BATCH = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8}


@dataclass(frozen=True)
class OpShape:
    """One layer's activation ``[batch, channels, res, res]`` at a training resolution."""

    res: int
    batch: int
    channels: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.res, self.res)

    @property
    def id(self) -> str:
        return f"{self.res}px-N{self.batch}-C{self.channels}"


def op_shapes(resolutions: list[int] | None = None) -> list[OpShape]:
    """Shapes for ``resolutions`` (all of 4..256 by default): C = nf(log2(res) - 1)."""
    out = []
    for res in resolutions or sorted(DEFAULT_BATCH):
        stage = res.bit_length() - 2  # log2(res) - 1
        out.append(OpShape(res, DEFAULT_BATCH[res], nf(stage)))
    return out
