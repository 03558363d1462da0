"""A tiny ONNX model built by hand, shared by the runtime and measurement tests."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_onnx(path: Path) -> Path:
    """Conv 3→8 3×3 → ReLU → Conv 8→4 3×3, dynamic batch."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 16, 16])
    graph = helper.make_graph(nodes, "tiny", [x], [y], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _external_tensor(name: str, location: str = "secret.txt") -> TensorProto:
    """A float tensor whose data would be read from the file ``location`` beside the model."""
    tensor = numpy_helper.from_array(np.zeros(3, np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def external_data_models() -> dict[str, onnx.ModelProto]:
    """Models that refer to an external file where the format lets them: an initializer, a
    ``Constant`` inside a function body, a ``Constant``'s ``sparse_value``, a sparse initializer, and a
    ``Constant`` inside an ``If`` branch."""
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    opsets = [helper.make_opsetid("", 17)]
    sparse = helper.make_sparse_tensor(_external_tensor("v"),
                                       numpy_helper.from_array(np.array([0], np.int64), "i"), [3])

    def model(nodes, inputs=(), **graph) -> onnx.ModelProto:
        return helper.make_model(helper.make_graph(nodes, "g", list(inputs), [out], **graph),
                                 opset_imports=opsets)

    add = helper.make_node("Add", ["x", "c"], ["y"])
    body = [helper.make_node("Constant", [], ["c"], value=_external_tensor("c")), add]
    function = helper.make_function("custom", "F", ["x"], ["y"], body, opsets)
    in_function = helper.make_model(
        helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="custom")], "g", [x], [out]),
        opset_imports=[*opsets, helper.make_opsetid("custom", 1)], functions=[function])
    branch = helper.make_graph([helper.make_node("Constant", [], ["y"], value=_external_tensor("b"))], "b",
                               [], [out])
    flag = numpy_helper.from_array(np.array(True), "flag")
    return {
        "initializer": model([add], [x], initializer=[_external_tensor("c")]),
        "function": in_function,
        "sparse_value": model([helper.make_node("Constant", [], ["y"], sparse_value=sparse)]),
        "sparse_initializer": model([helper.make_node("Identity", ["v"], ["y"])],
                                    sparse_initializer=[sparse]),
        "subgraph": model([helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=branch)],
                          initializer=[flag]),
    }
