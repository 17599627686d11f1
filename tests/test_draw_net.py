"""draw_net: Caffe's drawing of a net as DOT text, and netkit's own layout as SVG and
matplotlib images where Graphviz is missing."""
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from netkit import draw, netkit_pb2 as pb
from netkit.errors import NetkitError
from netkit.protoio import parse_text
from netkit.tools.draw_net import draw_net_to_file, graphviz_program

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET = os.path.join(ROOT, "examples", "mnist", "lenet_train_test.prototxt")

LENET_LAYERS = ["mnist_Data", "conv1_Convolution", "pool1_Pooling", "conv2_Convolution",
                "pool2_Pooling", "ip1_InnerProduct", "relu1_ReLU", "ip2_InnerProduct",
                "accuracy_Accuracy", "loss_SoftmaxWithLoss"]
LENET_BLOBS = ["data", "label", "conv1", "pool1", "conv2", "pool2", "ip1", "ip2", "accuracy",
               "loss"]
LENET_CHAIN = [("data", "conv1_Convolution"), ("conv1_Convolution", "conv1"),
               ("conv1", "pool1_Pooling"), ("pool1_Pooling", "pool1"),
               ("pool1", "conv2_Convolution"), ("conv2_Convolution", "conv2"),
               ("conv2", "pool2_Pooling"), ("pool2_Pooling", "pool2"),
               ("pool2", "ip1_InnerProduct"), ("ip1_InnerProduct", "ip1"),
               ("ip1", "relu1_ReLU"), ("relu1_ReLU", "ip1"), ("ip1", "ip2_InnerProduct"),
               ("ip2_InnerProduct", "ip2"), ("ip2", "loss_SoftmaxWithLoss"),
               ("label", "loss_SoftmaxWithLoss"), ("loss_SoftmaxWithLoss", "loss")]

# A DOT statement: "id" [attrs];  or  "a" -> "b" [attrs];
_ID = r'"((?:[^"\\]|\\.)*)"'
NODE = re.compile(r"^\s*%s\s*\[(.*)\];$" % _ID)
EDGE = re.compile(r"^\s*%s\s*->\s*%s\s*(?:\[(.*)\])?;$" % (_ID, _ID))
ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,\s]+)')


def parse_dot(text):
    """A tiny reader of the DOT that draw_net writes: (graph attributes, nodes, edges)."""
    lines = text.strip().splitlines()
    assert re.match(r"^digraph %s \{$" % _ID, lines[0]), lines[0]
    assert lines[-1] == "}"
    graph, nodes, edges = {}, {}, []
    for line in lines[1:-1]:
        edge, node = EDGE.match(line), NODE.match(line)
        if edge:
            edges.append((edge.group(1), edge.group(2), attrs(edge.group(3) or "")))
        elif node:
            nodes[node.group(1)] = attrs(node.group(2))
        else:
            key, _, value = line.strip().rstrip(";").partition("=")
            assert value, "not a DOT statement: %r" % line
            graph[key] = value
    for src, dst, _ in edges:
        assert src in nodes and dst in nodes, (src, dst)
    return graph, nodes, edges


def attrs(text):
    return {k: v[1:-1] if v.startswith('"') else v for k, v in ATTR.findall(text)}


def blob(name):
    return name + "_blob"


def canonical(edge):
    """Edge ends with blob nodes written by their blob name."""
    return tuple(e[:-5] if e.endswith("_blob") else e for e in edge[:2])


def lenet_dot(tmp_path, **kw):
    out = tmp_path / "lenet.dot"
    assert draw_net_to_file(LENET, str(out), **kw) == "dot text"
    return parse_dot(out.read_text())


def test_lenet_dot_has_caffes_nodes_edges_and_styles(tmp_path):
    graph, nodes, edges = lenet_dot(tmp_path)
    assert graph == {"rankdir": "LR"}
    assert set(nodes) == set(LENET_LAYERS) | {blob(b) for b in LENET_BLOBS}
    pairs = [canonical(e) for e in edges]
    for edge in LENET_CHAIN + [("label", "accuracy_Accuracy"), ("ip2", "accuracy_Accuracy")]:
        assert edge in pairs, edge
    # Both phases' Data layers share one node (same name and type), with their batch sizes.
    data_labels = sorted(a.get("label") for s, d, a in edges if s == "mnist_Data")
    assert data_labels == ["Batch 100", "Batch 100", "Batch 64", "Batch 64"]
    labels = {canonical(e): e[2].get("label") for e in edges}
    assert labels[("conv1_Convolution", "conv1")] == "20"
    assert labels[("ip1_InnerProduct", "ip1")] == "500"
    assert labels[("pool1_Pooling", "pool1")] is None
    assert nodes["conv1_Convolution"]["label"] == \
        r"conv1\n(Convolution)\nkernel size: 5\nstride: 1\npad: 0"
    assert nodes["pool1_Pooling"]["label"] == \
        r"pool1\n(Pooling MAX)\nkernel size: 2\nstride: 2\npad: 0"
    colors = {n: a["fillcolor"] for n, a in nodes.items()}
    assert colors["conv1_Convolution"] == "#FF5050"
    assert colors["pool2_Pooling"] == "#FF9900"
    assert colors["ip2_InnerProduct"] == "#CC33FF"
    assert colors["loss_SoftmaxWithLoss"] == "#6495ED"
    assert colors["relu1_ReLU"] == "#90EE90"  # in place
    for name in LENET_BLOBS:
        assert nodes[blob(name)] == {"label": name, "shape": "octagon", "style": "filled",
                                     "fillcolor": "#E0E0E0"}
    assert all(nodes[n]["shape"] == "record" for n in LENET_LAYERS)


@pytest.mark.parametrize("phase,present,absent,batch", [
    (pb.TRAIN, [], ["accuracy_Accuracy", blob("accuracy")], "Batch 64"),
    (pb.TEST, ["accuracy_Accuracy", blob("accuracy")], [], "Batch 100"),
])
def test_phase_keeps_the_layers_the_net_builds(tmp_path, phase, present, absent, batch):
    _, nodes, edges = lenet_dot(tmp_path, phase=phase)
    for name in present:
        assert name in nodes
    for name in absent:
        assert name not in nodes
    assert [a.get("label") for s, d, a in edges if s == "mnist_Data"] == [batch, batch]
    assert set(LENET_CHAIN) <= {canonical(e) for e in edges}


def test_vertical_rankdir_puts_a_label_on_one_line(tmp_path):
    graph, nodes, _ = lenet_dot(tmp_path, rankdir="TB")
    assert graph == {"rankdir": "TB"}
    assert nodes["conv2_Convolution"]["label"] == \
        "conv2 (Convolution) kernel size: 5 stride: 1 pad: 0"


def test_display_lrm_shows_the_learning_rate_multipliers(tmp_path):
    _, nodes, _ = lenet_dot(tmp_path, display_lrm=True)
    assert nodes["conv1_Convolution"]["label"].endswith(r"\nlr mult: 1.0, 2.0")
    _, plain, _ = lenet_dot(tmp_path)
    assert "lr mult" not in plain["conv1_Convolution"]["label"]


NET = """
name: "odd \\"net\\""
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "c{1}|<a>" type: "Convolution" bottom: "x" top: "y"
        convolution_param { num_output: 4 kernel_h: 3 kernel_w: 1 stride: 2 pad: 1 } }
layer { name: "p" type: "Pooling" bottom: "y" top: "z"
        pooling_param { pool: AVE global_pooling: true } }
"""


def test_labels_are_escaped_and_give_the_kernel_geometry():
    graph = draw.net_graph(parse_text(NET, pb.NetParameter()), "LR")
    assert graph.nodes["c{1}|<a>_Convolution"].lines == \
        ["c{1}|<a>", "(Convolution)", "kernel size: 3x1", "stride: 2", "pad: 1"]
    assert graph.nodes["p_Pooling"].lines == ["p", "(Pooling AVE)", "global pooling"]
    text = draw.to_dot(graph)
    assert text.startswith('digraph "odd \\"net\\"" {')
    # Record labels escape their field syntax; node names stay as they are.
    assert '"c{1}|<a>_Convolution" [label="c\\{1\\}\\|\\<a\\>\\n(Convolution)' in text
    parse_dot(text)


def test_v1_nets_are_upgraded_before_drawing(tmp_path):
    net = tmp_path / "v1.prototxt"
    net.write_text('name: "old" input: "data" input_dim: 1 input_dim: 1 input_dim: 4 '
                   'input_dim: 4 layers { name: "fc" type: INNER_PRODUCT bottom: "data" '
                   'top: "fc" inner_product_param { num_output: 3 } }')
    out = tmp_path / "v1.gv"
    draw_net_to_file(str(net), str(out))
    _, nodes, edges = parse_dot(out.read_text())
    assert "fc_InnerProduct" in nodes and "input_Input" in nodes
    assert ("fc_InnerProduct", "fc_blob", {"label": "3"}) in edges


# -- netkit's own layout ---------------------------------------------------------------------
INCEPTION = """
name: "branchy"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "b1" type: "Convolution" bottom: "data" top: "b1" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "b1_relu" type: "ReLU" bottom: "b1" top: "b1" }
layer { name: "b2" type: "Convolution" bottom: "b1" top: "b2" convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
layer { name: "c" type: "Pooling" bottom: "data" top: "c" pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "cat" type: "Concat" bottom: "a" bottom: "b2" bottom: "c" bottom: "data" top: "cat" }
layer { name: "sum" type: "Eltwise" bottom: "cat" bottom: "cat" top: "sum" }
"""


def overlap(s, t):
    return abs(s.x - t.x) * 2 < s.w + t.w and abs(s.y - t.y) * 2 < s.h + t.h


@pytest.mark.parametrize("rankdir", ["LR", "TB", "BT", "RL"])
@pytest.mark.parametrize("net", ["lenet", "inception"])
def test_layout_places_nodes_apart_inside_the_page_along_rankdir(rankdir, net):
    param = parse_text(INCEPTION, pb.NetParameter()) if net == "inception" else \
        parse_text(open(LENET).read(), pb.NetParameter())
    graph = draw.net_graph(param, rankdir)
    drawing = draw.layout(graph)
    shapes = {s.node.id: s for s in drawing.shapes}
    assert set(shapes) == set(graph.nodes)
    for s in drawing.shapes:
        assert s.w >= 7 * max(len(line) for line in s.node.lines)
        assert 0 <= s.x - s.w / 2 and s.x + s.w / 2 <= drawing.width
        assert 0 <= s.y - s.h / 2 and s.y + s.h / 2 <= drawing.height
    ids = list(shapes)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            assert not overlap(shapes[a], shapes[b]), (a, b)
    axis, sign = {"LR": ("x", 1), "RL": ("x", -1), "TB": ("y", 1), "BT": ("y", -1)}[rankdir]
    order = list(graph.nodes)
    assert len(drawing.edges) == len(graph.edges)
    for edge, (points, label, _) in zip(graph.edges, drawing.edges):
        src, dst = shapes[edge.src], shapes[edge.dst]
        forward = order.index(edge.src) < order.index(edge.dst)
        # Edges of the data flow run along rankdir; the write of an in-place layer runs back.
        step = (getattr(dst, axis) - getattr(src, axis)) * sign
        assert step > 0 if forward else step < 0, edge
        assert label == edge.label
        # Edges start and end on the outlines of their nodes.
        for (x, y), shape in ((points[0], src), (points[-1], dst)):
            assert abs(x - shape.x) <= shape.w / 2 + 1e-6
            assert abs(y - shape.y) <= shape.h / 2 + 1e-6
            assert abs(x - shape.x) >= shape.w / 2 - 1e-6 - shape.h * 0.3 or \
                abs(y - shape.y) >= shape.h / 2 - 1e-6 - shape.h * 0.3


def test_svg_is_well_formed_and_names_every_layer(tmp_path):
    out = tmp_path / "lenet.svg"
    assert draw_net_to_file(LENET, str(out), renderer="builtin") == "builtin"
    root = ET.parse(str(out)).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == ns + "svg"
    texts = [t.text for t in root.iter(ns + "text")]
    for layer in LENET_LAYERS:
        assert layer.rpartition("_")[0] in texts
    groups = [g for g in root.iter(ns + "g")]
    assert sum("node" in g.get("class") for g in groups) == 20
    assert sum(g.get("class") == "edge" for g in groups) == 24
    width, height = (float(v) for v in root.get("viewBox").split()[2:])
    assert width > 1000 and 100 < height < width


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_and_pdf_through_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    png, pdf = tmp_path / "lenet.png", tmp_path / "lenet.pdf"
    assert draw_net_to_file(LENET, str(png), rankdir="TB", renderer="builtin") == "builtin"
    data = png.read_bytes()
    width, height = png_size(data)
    assert height > width > 400 and len(data) > 20000
    draw_net_to_file(LENET, str(pdf), renderer="builtin")
    assert pdf.read_bytes().startswith(b"%PDF")


def test_missing_or_unable_renderers_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(draw, "image_formats", lambda: None)
    with pytest.raises(NetkitError, match=r"needs Graphviz .*netkit\[draw\].*"
                                          r"matplotlib \(pip install 'netkit\[plot\]'\)"):
        draw_net_to_file(LENET, str(tmp_path / "x.png"), renderer="builtin")
    monkeypatch.setattr(draw, "image_formats", lambda: {"png", "pdf"})
    with pytest.raises(NetkitError, match=r"cannot write \.bmp: .*writes only \.pdf, \.png"):
        draw_net_to_file(LENET, str(tmp_path / "x.bmp"), renderer="builtin")
    with pytest.raises(NetkitError, match="give the output file an extension"):
        draw_net_to_file(LENET, str(tmp_path / "picture"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(NetkitError, match=r"cannot write \.pdf with Graphviz.*writes svg, png"):
        draw_net_to_file(LENET, str(tmp_path / "x.pdf"), renderer="graphviz")
    assert not list(tmp_path.iterdir())


FAKE_DOT = """#!%s
import sys
open(sys.argv[0] + ".args", "w").write(" ".join(sys.argv[1:]))
open(sys.argv[0] + ".in", "w").write(sys.stdin.read())
if sys.argv[1] == "-Tfail":
    sys.stderr.write("Error: <stdin>: syntax error in line 1\\nmore\\n")
    sys.exit(1)
sys.stdout.write("rendered " + sys.argv[1])
"""


def test_graphviz_dot_renders_when_it_is_on_the_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text(FAKE_DOT % sys.executable)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert graphviz_program("pdf") == str(fake)
    out = tmp_path / "lenet.pdf"
    assert draw_net_to_file(LENET, str(out), rankdir="BT") == "dot"
    assert out.read_text() == "rendered -Tpdf"
    assert (bin_dir / "dot.args").read_text() == "-Tpdf"
    # Graphviz gets the same DOT text as a .dot file holds.
    draw_net_to_file(LENET, str(tmp_path / "same.dot"), rankdir="BT")
    assert (bin_dir / "dot.in").read_text() == (tmp_path / "same.dot").read_text()
    with pytest.raises(NetkitError, match=r"^dot -Tfail failed: Error: <stdin>: syntax error "
                                          r"in line 1$"):
        draw_net_to_file(LENET, str(tmp_path / "x.fail"))
    assert not (tmp_path / "x.fail").exists()
    assert draw_net_to_file(LENET, str(tmp_path / "own.svg"), renderer="builtin") == "builtin"


def test_real_graphviz_renders_svg(tmp_path):
    program = graphviz_program("svg")
    if program is None:
        pytest.skip("neither Graphviz's dot nor graphviz-pure is installed")
    out = tmp_path / "lenet.svg"
    draw_net_to_file(LENET, str(out), renderer="graphviz")
    root = ET.parse(str(out)).getroot()
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for layer in LENET_LAYERS:
        assert layer.rpartition("_")[0] in text


def test_cli_takes_caffes_flags(tmp_path):
    out = tmp_path / "lenet.gv"
    result = subprocess.run([sys.executable, "-m", "netkit.tools.cli", "draw_net", LENET,
                             str(out), "-rankdir", "TB", "-phase=TEST", "--display_lrm"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Drawing net to %s" % out in result.stderr
    graph, nodes, _ = parse_dot(out.read_text())
    assert graph == {"rankdir": "TB"} and "accuracy_Accuracy" in nodes
    assert "lr mult: 1.0, 2.0" in nodes["ip1_InnerProduct"]["label"]
    bad = subprocess.run([sys.executable, "-m", "netkit.tools.cli", "draw_net",
                          str(tmp_path / "missing.prototxt"), str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("netkit: error: ")
    assert "missing.prototxt" in bad.stderr and "Traceback" not in bad.stderr
