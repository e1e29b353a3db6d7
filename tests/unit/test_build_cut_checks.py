"""``edge-agent build`` on a ResNet-style multi-exit model (a residual Add whose other input
comes from an earlier layer): the cut checks name the tensor at fault in one line (exit 2,
nothing written), and a build that passes them computes, stage after stage through
onnxruntime, what the whole model computes."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from agent import cli
from engines.bundle import load_bundle

PREFIX = "edge-agent build: error: "


def make_resnet(batch="N", skip_from="a", conv3_weight="w3", seed=0) -> onnx.ModelProto:
    """x -> Conv -> Relu = a -> Conv -> Relu = b -> Conv = c; Add(c, skip_from) -> Relu = d;
    heads: e1 from a, e2 and out from d. ``skip_from="a"`` is a residual jumping over b;
    ``conv3_weight="w2"`` makes the 2nd and 3rd convolutions share one initializer."""
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    inits = [w("w1", 4, 1, 3, 3), w("w2", 4, 4, 3, 3), w("w3", 4, 4, 3, 3), w("we1", 3, 4),
             w("we2", 3, 4), w("wf", 3, 4)]
    if conv3_weight != "w3":
        inits = [i for i in inits if i.name != "w3"]
    pad = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a0"], **pad),
        helper.make_node("Relu", ["a0"], ["a"]),
        helper.make_node("GlobalAveragePool", ["a"], ["g1"]),
        helper.make_node("Flatten", ["g1"], ["f1"]),
        helper.make_node("Gemm", ["f1", "we1"], ["e1"], transB=1),
        helper.make_node("Conv", ["a", "w2"], ["b0"], **pad),
        helper.make_node("Relu", ["b0"], ["b"]),
        helper.make_node("Conv", ["b", conv3_weight], ["c"], **pad),
        helper.make_node("Add", ["c", skip_from], ["r"]),
        helper.make_node("Relu", ["r"], ["d"]),
        helper.make_node("GlobalAveragePool", ["d"], ["g2"]),
        helper.make_node("Flatten", ["g2"], ["f2"]),
        helper.make_node("Gemm", ["f2", "we2"], ["e2"], transB=1),
        helper.make_node("Gemm", ["f2", "wf"], ["out"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "resnet_style",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 3])
         for n in ("e1", "e2", "out")],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime 1.15+ (the Python 3.8 pin)
    onnx.checker.check_model(model)
    return model


def _run(path: str, feeds):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def assert_chain_matches_whole(bundle_dir: str, whole_path: str, seed: int = 0) -> None:
    """Run random inputs through the bundle's stages in turn and compare every head's logits
    with the whole model's."""
    bundle = load_bundle(bundle_dir)
    x = np.random.default_rng(seed).standard_normal((1, 1, 8, 8)).astype(np.float32)
    whole = _run(whole_path, {"x": x})
    cur, compared = x, 0
    for stage in bundle.stages:
        outs = _run(stage.onnx_path, {stage.input_name: cur})
        if stage.logits_output:
            np.testing.assert_allclose(outs[stage.logits_output], whole[stage.logits_output],
                                       rtol=1e-5, atol=1e-5)
            compared += 1
        if stage.feature_output:
            cur = outs[stage.feature_output]
    assert compared == len(bundle.exit_stages)


@pytest.fixture
def resnet(tmp_path):
    path = str(tmp_path / "resnet.onnx")
    onnx.save(make_resnet(), path)
    return path


def _build(path, out, cuts, exits="1:e1", final="out"):
    return cli.main(["build", "--onnx", path, "--cuts", cuts, "--exits", exits, "--final", final,
                     "--out", out])


@pytest.mark.parametrize("cuts,stage", [("b", 2), ("a,b", 3)], ids=["2-stages", "3-stages"])
def test_a_residual_crossing_a_cut_is_refused_naming_the_crossing_tensor(resnet, tmp_path, capsys,
                                                                          cuts, stage):
    """Rule: a cut that a residual connection jumps over (Add(c, a) after the cut b) is refused
    in one line that names the tensor carried across the cut ('a') and the cut, exit 2, nothing
    written; not blamed on the graph input."""
    out = str(tmp_path / "bundle")
    assert _build(resnet, out, cuts) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [PREFIX + "--cuts: 'a' crosses the cut 'b': stage %d (outputs 'out') reads it, "
                   "but it is computed before the cut, by a path that bypasses 'b', so the cut "
                   "does not separate the graph (a skip connection, or an exit head branching "
                   "off before the cut, crosses it); move the cut before the branch or after the "
                   "join" % stage], err
    assert not os.path.exists(out)


def test_cuts_out_of_graph_order_are_still_refused_as_such(resnet, tmp_path, capsys):
    """Rule: cuts given in reverse graph order (no tensor crosses a cut) are refused as cuts
    out of order, one line, exit 2."""
    out = str(tmp_path / "bundle")
    assert _build(resnet, out, "b,a", exits="", final="out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the cuts are not in graph order" in err[0], err
    assert not os.path.exists(out)


@pytest.mark.parametrize("cuts,exits,final,line", [
    ("x,b", "1:e1", "out",
     "--cuts: 'x' is the graph input, where stage 1 starts; name the tensors where one stage "
     "ends and the next begins"),
    ("a,e2", "1:e1", "out",
     "--cuts: no node reads 'e2' (it is only a graph output, an exit head's logits for "
     "example), so no stage can start from it; cut at a tensor that later layers take as input"),
    ("e1,b", "", "out",
     "--cuts: no node reads 'e1' (it is only a graph output, an exit head's logits for "
     "example), so no stage can start from it; cut at a tensor that later layers take as input"),
    ("a,out", "1:e1", "e2",
     "--cuts: no node reads 'out' (it is only a graph output, an exit head's logits for "
     "example), so no stage can start from it; cut at a tensor that later layers take as input"),
], ids=["graph-input", "exit-logits", "unlisted-exit-logits", "final-output"])
def test_a_cut_at_the_graph_input_or_a_graph_output_is_one_line_naming_it(resnet, tmp_path, capsys,
                                                                           cuts, exits, final,
                                                                           line):
    """Rule: a cut naming the graph input, or a tensor no node reads (a head's logits, the final
    output), is refused in one line naming --cuts and the tensor, exit 2, nothing written;
    neither called unknown nor blamed on a skip connection."""
    out = str(tmp_path / "bundle")
    assert _build(resnet, out, cuts, exits, final) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [PREFIX + line], err
    assert not os.path.exists(out)


@pytest.mark.parametrize("skip_from,conv3_weight,cuts", [
    ("a", "w3", "a"),  # the residual lies wholly inside stage 2
    ("b", "w3", "a,b"),  # no residual across a cut
    ("b", "w2", "a,b"),  # w2 is read by stage 2 and by stage 3
], ids=["residual-inside-a-stage", "plain-chain", "shared-initializer"])
def test_stages_chained_compute_what_the_whole_model_computes(tmp_path, skip_from, conv3_weight,
                                                              cuts):
    """Rule: a build the checks accept, a residual inside one stage or one initializer read on
    both sides of a cut included, gives stages whose chained outputs match the whole model's
    logits on a random input."""
    path = str(tmp_path / "m.onnx")
    onnx.save(make_resnet(skip_from=skip_from, conv3_weight=conv3_weight), path)
    out = str(tmp_path / "bundle")
    assert _build(path, out, cuts) == 0
    assert_chain_matches_whole(out, path)
