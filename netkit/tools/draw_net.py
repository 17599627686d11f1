"""`netkit draw_net NET OUT`: a picture of a net's graph (Caffe's python/draw_net.py).

OUT's extension picks the format. .dot, .gv and .raw get Graphviz DOT text. Pictures
(.svg, .png, .pdf ...) come from Graphviz when it is installed: its `dot` program on the
PATH, or else the `graphviz-pure` program (`pip install 'netkit[draw]'`, which writes svg,
png and jpg). Without either, netkit lays the graph out itself and writes SVG with no
dependencies, or PNG, PDF and the other formats matplotlib knows (`pip install
'netkit[plot]'`).
"""
import os
import shutil
import subprocess
import sysconfig

import click

from ..errors import NetkitError
from ..log import logger

DOT_EXTENSIONS = ("dot", "gv", "raw")
# The formats graphviz-pure writes (it has no pdf or ps yet).
GRAPHVIZ_PURE_FORMATS = ("svg", "png", "jpg", "jpeg", "jpe")


def graphviz_program(fmt):
    """The path of a Graphviz program that can write `fmt`: `dot`, else graphviz-pure
    (on the PATH or beside this Python's scripts), else None."""
    dot = shutil.which("dot")
    if dot:
        return dot
    if fmt in GRAPHVIZ_PURE_FORMATS:
        return shutil.which("graphviz-pure") or shutil.which(
            "graphviz-pure", path=sysconfig.get_path("scripts"))
    return None


def run_graphviz(program, dot_text, fmt):
    """Graphviz's rendering of DOT text in format `fmt` (bytes)."""
    result = subprocess.run([program, "-T" + fmt], input=dot_text.encode("utf-8"),
                            capture_output=True)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise NetkitError("%s -T%s failed: %s" % (os.path.basename(program), fmt,
                                                   message[0] if message else
                                                   "exit status %d" % result.returncode))
    return result.stdout


def draw_net_to_file(model, path, rankdir="LR", phase=None, display_lrm=False,
                     renderer="auto"):
    """Draw the net `model` (prototxt path, text or NetParameter) into `path`.

    `phase` (TRAIN, TEST or None for all layers) keeps the layers the NetState
    {phase} admits, as the Net would build them. `renderer` is "auto" (Graphviz when
    installed, else netkit's own layout), "graphviz" or "builtin". Returns the renderer used.
    """
    from .. import draw, graph, netkit_pb2 as pb
    from ..protoio import load_net_param, write_atomic
    from ..upgrade import upgrade_net

    base = os.path.basename(path)
    fmt = base.rpartition(".")[2].lower() if "." in base else ""
    if not fmt:
        raise NetkitError("%s: give the output file an extension naming its format (.png, "
                          ".svg, .pdf, or .dot for Graphviz text)" % path)
    param, source = load_net_param(model)
    param = upgrade_net(param, source)
    if phase is not None:
        param = graph.filter_net(param, pb.NetState(phase=phase))
    net_graph = draw.net_graph(param, rankdir, display_lrm)
    dot_text = draw.to_dot(net_graph)
    if fmt in DOT_EXTENSIONS:
        write_atomic(path, dot_text.encode("utf-8"))
        return "dot text"
    program = graphviz_program(fmt) if renderer != "builtin" else None
    if program:
        write_atomic(path, run_graphviz(program, dot_text, fmt))
        return os.path.basename(program)
    if renderer == "graphviz":
        raise NetkitError("cannot write .%s with Graphviz: neither its dot program nor "
                          "graphviz-pure%s is installed (pip install 'netkit[draw]')"
                          % (fmt, "" if fmt in GRAPHVIZ_PURE_FORMATS else
                             " (which writes svg, png and jpg)"))
    drawing = draw.layout(net_graph)
    if fmt == "svg":
        write_atomic(path, draw.to_svg(drawing).encode("utf-8"))
        return "builtin"
    formats = draw.image_formats()
    if formats is None:
        raise NetkitError("drawing .%s needs Graphviz (its dot program, or pip install "
                          "'netkit[draw]') or matplotlib (pip install 'netkit[plot]'); "
                          ".svg and .dot need neither" % fmt)
    if fmt not in formats:
        raise NetkitError("cannot write .%s: Graphviz is not installed and matplotlib "
                          "writes only %s" % (fmt, ", ".join("." + f for f in sorted(formats))))
    write_atomic(path, draw.render_image(drawing, fmt))
    return "builtin"


@click.command("draw_net")
@click.argument("input_net_proto_file", metavar="NET")
@click.argument("output_image_file", metavar="OUT")
@click.option("--rankdir", default="LR", show_default=True,
              type=click.Choice(["LR", "TB", "BT", "RL"]),
              help="Direction of the layout: LR (left-right, horizontal), TB (top-bottom, "
                   "vertical), BT or RL.")
@click.option("--phase", default="ALL", show_default=True,
              type=click.Choice(["TRAIN", "TEST", "ALL"]),
              help="Which network phase to draw: TRAIN, TEST, or ALL layers whatever "
                   "their phase.")
@click.option("--display_lrm", is_flag=True,
              help="Show the learning rate multipliers, when non-zero, of the learning "
                   "layers (Convolution, Deconvolution, InnerProduct).")
@click.option("--renderer", default="auto", show_default=True,
              type=click.Choice(["auto", "graphviz", "builtin"]),
              help="Who draws pictures: Graphviz when installed (auto), Graphviz only, "
                   "or netkit's own layout.")
def command(input_net_proto_file, output_image_file, rankdir, phase, display_lrm, renderer):
    """Draw a graph of the net architecture into OUT.

    OUT's extension names the format: .dot, .gv or .raw for Graphviz DOT text; .svg,
    .png, .pdf ... for a picture, drawn by Graphviz when it is installed (its dot program,
    or pip install 'netkit[draw]') and otherwise by netkit itself (.svg needs nothing,
    other formats need matplotlib: pip install 'netkit[plot]').
    """
    from .. import netkit_pb2 as pb
    logger.info("Drawing net to %s", output_image_file)
    phase = None if phase == "ALL" else pb.Phase.Value(phase)
    draw_net_to_file(input_net_proto_file, output_image_file, rankdir, phase, display_lrm,
                     renderer)
