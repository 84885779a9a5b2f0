"""saved_model.pb without TensorFlow: tags, signatures, op attributes, layer recognition."""

from __future__ import annotations

from hub_helpers import FIXTURES
from llrnet.hub.formats.savedmodel import node_attrs, read_saved_model, select_meta_graph
from llrnet.hub.recognition.graph import LayerGraph


def test_meta_graphs_tags_and_signatures() -> None:
    graphs = read_saved_model(FIXTURES / "cifar10")
    assert sorted(g.tags for g in graphs) == [(), ("train",)]
    signature = select_meta_graph(graphs, ()).signatures["default"]
    assert sorted(signature.inputs) == ["count", "decay_rate", "x"]
    assert signature.inputs["count"].dtype == "int64" and signature.inputs["count"].shape == ()
    assert signature.inputs["x"].tensor == "x:0"
    assert signature.outputs["default"].shape == (None, 10)


def test_op_attributes_for_the_conversion() -> None:
    graph = select_meta_graph(read_saved_model(FIXTURES / "cifar10"), ()).graph
    convs = [n for n in graph.node if n.op == "Conv2D"]
    strided = [node_attrs(n) for n in convs if node_attrs(n)["strides"] == [1, 2, 2, 1]]
    assert len(convs) == 1 + 3 * 2 + 2 and len(strided) == 4  # stem, blocks, projections
    assert {a["padding"] for a in strided} == {"SAME"}
    assert all(a.get("data_format", "NHWC") == "NHWC" for a in strided)
    bns = [node_attrs(n) for n in graph.node if n.op.startswith("FusedBatchNorm")]
    assert len(bns) == 7 and {round(a["epsilon"], 6) for a in bns} == {0.001}


def test_train_graph_has_moving_average_updates_inference_graph_not() -> None:
    graphs = {g.tags: g for g in read_saved_model(FIXTURES / "latents")}
    train, infer = graphs[("train",)].op_histogram(), graphs[()].op_histogram()
    assert train.get("AssignSub", 0) == 2 * 16  # mean and variance of 5 * 3 + 1 batch norms
    assert infer.get("AssignSub", 0) == 0


def test_layer_graph_recognizes_unfused_batch_norm_roles() -> None:
    meta = select_meta_graph(read_saved_model(FIXTURES / "latents"), ())
    signature = meta.signatures["default"]
    graph = LayerGraph(meta.graph, [signature.inputs["inputs"].tensor],
                       signature.outputs["default"].tensor)
    bns = [layer for layer in graph.layers if layer.kind == "bn"]
    assert len(bns) == 16 and not graph.unsupported
    first = bns[0].params
    prefix = "resnet_v2/block_group_0/block_0/batch_norm_0/"
    assert first == {"variance": prefix + "moving_variance", "offset": prefix + "beta",
                     "mean": prefix + "moving_mean"}
    assert abs(bns[0].attrs["epsilon"] - 1e-5) < 1e-9


def test_fixed_tf_cond_is_folded_to_the_taken_branch() -> None:
    meta = select_meta_graph(read_saved_model(FIXTURES / "imagenet"), ())
    ops = meta.op_histogram()
    assert ops["Switch"] >= 1 and ops["Merge"] == 1
    signature = meta.signatures["default"]
    graph = LayerGraph(meta.graph, [signature.inputs["x"].tensor],
                       signature.outputs["default"].tensor)
    assert not graph.unsupported
    kinds = [layer.kind for layer in graph.layers]
    assert kinds[-2:] == ["mean", "dense"]  # the pooled (true) branch feeds the head
