"""Block addressing: the one vocabulary freezing, cutting and profiling share.

Every backbone is an ordered list of named blocks from input to output. A :class:`BlockList` is
sliced like a Python list (``model.blocks[:-3]``, as Keras users write ``model.layers[:-3]``) and
indexed by name (``model.blocks["stage3"]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from torch import nn

from headstart.errors import OutOfRange, UnknownName


@dataclass(frozen=True, eq=False)
class Block:
    """One addressable block of a backbone: its position, name and module."""

    index: int
    name: str
    module: nn.Module

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def __repr__(self) -> str:
        return f"Block({self.index}, {self.name!r}, params={self.num_parameters():,})"


class BlockList(Sequence[Block]):
    """An ordered, sliceable view of blocks; ``blocks[:-3]``, ``blocks[2]`` and ``blocks["stage3"]`` work."""

    def __init__(self, blocks: Sequence[Block]) -> None:
        self._blocks = list(blocks)

    @overload
    def __getitem__(self, key: int | str) -> Block: ...
    @overload
    def __getitem__(self, key: slice) -> BlockList: ...
    def __getitem__(self, key: int | str | slice) -> Block | BlockList:
        if isinstance(key, slice):
            return BlockList(self._blocks[key])
        if isinstance(key, str):
            for block in self._blocks:
                if block.name == key:
                    return block
            raise UnknownName(f"No block named {key!r}; blocks are {self.names()}")
        return self._blocks[key]

    def __len__(self) -> int:
        return len(self._blocks)

    def __iter__(self) -> Iterator[Block]:
        return iter(self._blocks)

    def names(self) -> list[str]:
        return [b.name for b in self._blocks]

    def index_of(self, key: int | str) -> int:
        """Position of a block given its index (negative allowed) or name."""
        if isinstance(key, str):
            return self[key].index
        if not -len(self) <= key < len(self):
            raise OutOfRange(f"Block index {key} out of range for {len(self)} blocks {self.names()}")
        return key % len(self)

    def __repr__(self) -> str:
        return f"BlockList({self.names()})"


