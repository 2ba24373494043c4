"""A small helper that accumulates ONNX nodes and initializers with unique names."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class GraphBuilder:
    def __init__(self, parent: "GraphBuilder | None" = None, prefix: str = "") -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.prefix = parent.prefix if parent else prefix
        # A branch (an ``If`` subgraph) shares its parent's names and initializers: it reads them from the outer scope.
        self.initializers: list[onnx.TensorProto] = parent.initializers if parent else []
        self._counter = parent._counter if parent else itertools.count(1)
        self._ints: dict[tuple[int, ...], str] = parent._ints if parent else {}

    def name(self, hint: str) -> str:
        return f"{self.prefix}{hint}_{next(self._counter)}"

    def const(self, value: Any, hint: str, dtype: Any = None) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, *values: int) -> str:
        """A 1-D int64 constant (shapes, axes, pads, slice bounds), shared by every node that needs the same one."""
        if values not in self._ints:
            self._ints[values] = self.const(np.array(values, np.int64), "i64")
        return self._ints[values]

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int = 1, **attrs: Any):
        names = [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=names[0], **attrs))  # named: the profiler shows it
        return names[0] if outputs == 1 else names

    def output(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        """A node whose output has a fixed name (a graph output)."""
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def branch(self) -> "GraphBuilder":
        return GraphBuilder(parent=self)

    def as_branch(self, name: str, result: str) -> onnx.GraphProto:
        """This (branch) builder's nodes as an ``If`` branch: no inputs, one output, outer values read by name."""
        out = self.op("Identity", [result], "branch_out")
        return helper.make_graph(self.nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])


def zeros_value() -> onnx.TensorProto:
    """``value`` attribute of a float ``ConstantOfShape`` filled with 0."""
    return helper.make_tensor("value", TensorProto.FLOAT, [1], [0.0])
