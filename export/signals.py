"""A layer's input as the formulations need it: one source tensor, its layouts and dtypes made on demand.

A layout names the order of the axes: ``"TBC"`` time-major (what ``Scan`` emits), ``"BTC"`` batch-major,
``"BCT"`` channels before time (what ``Conv`` and the ``features`` input use). A conversion (a
``Transpose`` and/or a ``Cast``) is made once and shared by every formulation that asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onnx import TensorProto

import numpy as np

from export.graph_builder import GraphBuilder

DTYPES = {"float": TensorProto.FLOAT, "uint8": TensorProto.UINT8, "bool": TensorProto.BOOL}


def permutation(source: str, target: str) -> list[int]:
    return [source.index(axis) for axis in target]


@dataclass
class Signal:
    builder: GraphBuilder
    name: str
    layout: str
    dtype: str
    channels: int
    binary: bool  # 0/1 values (spikes): the integer formulations need it
    _made: dict[tuple[str, str], str] = field(default_factory=dict)

    def get(self, layout: str, dtype: str = "float") -> str:
        key = (layout, dtype)
        if key == (self.layout, self.dtype):
            return self.name
        if key in self._made:
            return self._made[key]
        b = self.builder
        if dtype != self.dtype:  # cast in the source layout, then transpose
            name = self._made.get((self.layout, dtype)) or b.op("Cast", [self.name], f"as_{dtype}", to=DTYPES[dtype])
            self._made[(self.layout, dtype)] = name
        else:
            name = self.name
        if layout != self.layout:
            name = b.op("Transpose", [name], f"to_{layout}", perm=permutation(self.layout, layout))
        self._made[key] = name
        return name

    def within(self, branch: GraphBuilder) -> "Signal":
        """The same signal inside an ``If`` branch, which makes its own conversions of the source (reading an
        outer conversion instead stops onnxruntime from optimising that one: it warns at every load)."""
        return Signal(branch, self.name, self.layout, self.dtype, self.channels, self.binary)


@dataclass(frozen=True)
class Currents:
    """A layer's synaptic current (bias included), float, in ``layout``."""

    name: str
    layout: str

    def time_axis(self) -> int:
        return self.layout.index("T")


@dataclass(frozen=True)
class Context:
    """Values every layer may read: ``steps``/``batch`` as 1-element int64, ``time_index`` ``(T, 1)`` int64."""

    steps: str
    batch: str
    time_index: str


def context_of(b: GraphBuilder, name: str, layout: str) -> Context:
    """The :class:`Context` of a graph whose input ``name`` has ``layout``."""
    shape = b.op("Shape", [name], "input_shape")
    steps = b.op("Slice", [shape, b.ints(layout.index("T")), b.ints(layout.index("T") + 1)], "steps")
    batch = b.op("Slice", [shape, b.ints(layout.index("B")), b.ints(layout.index("B") + 1)], "batch")
    time = b.op("Range", [b.const(np.int64(0), "zero"), b.op("Squeeze", [steps], "t"), b.const(np.int64(1), "one")], "time")
    return Context(steps=steps, batch=batch, time_index=b.op("Unsqueeze", [time, b.ints(1)], "time_index"))
