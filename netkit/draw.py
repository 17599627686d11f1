"""Pictures of a net's graph, as Caffe's python/draw_net.py draws them.

Layers are boxes labelled with their name, type and, for Convolution, Deconvolution and
Pooling, kernel size, stride and pad; they are coloured by type (Convolution and
Deconvolution red, Pooling orange, InnerProduct purple, others blue, in-place layers
green). Blobs are grey octagons. Edges run bottom blob -> layer -> top blob; an edge out of
a Data layer is labelled with its batch size, one out of a Convolution, Deconvolution or
InnerProduct layer with its num_output. An in-place layer reads and writes the same blob
node, so its two edges form a loop.

The graph is written as DOT text for Graphviz (`to_dot`), or laid out here (`layout`: a
layered drawing in the manner of Graphviz's dot, for machines without Graphviz) and written
as SVG (`to_svg`, no dependencies) or as PNG, PDF ... through matplotlib (`render_image`).
`draw_net_to_file` and `draw_net` are pycaffe's caffe.draw functions.
"""
import collections
import math
import os
import tempfile
from xml.sax.saxutils import escape, quoteattr

from . import netkit_pb2 as pb

LAYER_COLOR = "#6495ED"
LAYER_TYPE_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050",
                     "Pooling": "#FF9900", "InnerProduct": "#CC33FF"}
IN_PLACE_COLOR = "#90EE90"
BLOB_COLOR = "#E0E0E0"
RANKDIRS = ("LR", "TB", "BT", "RL")

Node = collections.namedtuple("Node", "id lines kind color")
Edge = collections.namedtuple("Edge", "src dst label")


class Graph:
    """Nodes (in order of first appearance) and edges of a net's drawing."""

    def __init__(self, name, rankdir):
        self.name = name
        self.rankdir = rankdir
        self.nodes = collections.OrderedDict()
        self.edges = []

    def add_node(self, node):
        self.nodes.setdefault(node.id, node)


# -- the graph of a NetParameter -------------------------------------------------------------
def _first(values, default):
    return values[0] if len(values) else default


def _spatial(kind, values, h, w, default):
    """'kernel size: 5' (or '3x5' where height and width differ), as the layer gives it."""
    if h or w:
        return "%s: %dx%d" % (kind, h, w) if h != w else "%s: %d" % (kind, h)
    return "%s: %d" % (kind, values if isinstance(values, int) else _first(values, default))


def layer_label(layer, rankdir="LR", display_lrm=False):
    """The lines of a layer node's label: name, (type), spatial parameters, lr mults.

    As in Caffe, the parts stand on separate lines when the graph runs left-right (height
    is free) and on one line when it runs top-bottom (width is free).
    """
    parts = [layer.name]
    if layer.type == "Pooling":
        method = pb.PoolingParameter.PoolMethod.Name(layer.pooling_param.pool)
        parts.append("(%s %s)" % (layer.type, method))
    else:
        parts.append("(%s)" % layer.type)
    if layer.type == "Pooling":
        p = layer.pooling_param
        if p.global_pooling:
            parts.append("global pooling")
        else:
            parts += [_spatial("kernel size", p.kernel_size, p.kernel_h, p.kernel_w, 0),
                      _spatial("stride", p.stride, p.stride_h, p.stride_w, 1),
                      _spatial("pad", p.pad, p.pad_h, p.pad_w, 0)]
    elif layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        parts += [_spatial("kernel size", p.kernel_size, p.kernel_h, p.kernel_w, 1),
                  _spatial("stride", p.stride, p.stride_h, p.stride_w, 1),
                  _spatial("pad", p.pad, p.pad_h, p.pad_w, 0)]
    if display_lrm and layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
        mults = [spec.lr_mult for spec in layer.param[:2]] + [1.0] * (2 - len(layer.param[:2]))
        if any(mults):
            parts.append("lr mult: %.1f, %.1f" % tuple(mults))
    if rankdir in ("TB", "BT"):
        return [" ".join(parts)]
    return parts


def edge_label(layer):
    """The label of the edges from a layer to its tops ('' for none), as Caffe's."""
    if layer.type == "Data":
        return "Batch %d" % layer.data_param.batch_size
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return ""


def is_in_place(layer):
    return len(layer.bottom) == 1 and list(layer.top) == list(layer.bottom)


def net_graph(param, rankdir="LR", display_lrm=False, label_edges=True):
    """The Graph of a NetParameter's layers, in Caffe's drawing.

    Layer nodes are named "<layer name>_<type>" and blob nodes "<blob name>_blob", as in
    Caffe, so layers of the same name and type in different phases are drawn once.
    """
    if rankdir not in RANKDIRS:
        raise ValueError("rankdir must be one of %s, got '%s'" % (", ".join(RANKDIRS), rankdir))
    graph = Graph(param.name or "Net", rankdir)
    for layer in param.layer:
        layer_id = "%s_%s" % (layer.name, layer.type)
        for name in layer.bottom:
            graph.add_node(Node(name + "_blob", [name], "blob", BLOB_COLOR))
        color = IN_PLACE_COLOR if is_in_place(layer) else LAYER_TYPE_COLORS.get(layer.type,
                                                                                LAYER_COLOR)
        graph.add_node(Node(layer_id, layer_label(layer, rankdir, display_lrm), "layer", color))
        for name in layer.bottom:
            graph.edges.append(Edge(name + "_blob", layer_id, ""))
        label = edge_label(layer) if label_edges else ""
        for name in layer.top:
            graph.add_node(Node(name + "_blob", [name], "blob", BLOB_COLOR))
            graph.edges.append(Edge(layer_id, name + "_blob", label))
    return graph


# -- DOT -------------------------------------------------------------------------------------
def _dot_id(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_label(lines, record=False):
    escaped = []
    for line in lines:
        line = line.replace("\\", "\\\\").replace('"', '\\"')
        if record:  # braces, bars and angle brackets structure a record's fields
            for ch in "{}|<>":
                line = line.replace(ch, "\\" + ch)
        escaped.append(line)
    return '"%s"' % "\\n".join(escaped)


def to_dot(graph):
    """The graph as Graphviz DOT text: layers as filled records, blobs as octagons."""
    out = ["digraph %s {" % _dot_id(graph.name), "\trankdir=%s;" % graph.rankdir]
    for node in graph.nodes.values():
        shape = "record" if node.kind == "layer" else "octagon"
        out.append('\t%s [label=%s, shape=%s, style=filled, fillcolor="%s"];'
                   % (_dot_id(node.id), _dot_label(node.lines, node.kind == "layer"), shape,
                      node.color))
    for edge in graph.edges:
        attrs = " [label=%s]" % _dot_label([edge.label]) if edge.label else ""
        out.append("\t%s -> %s%s;" % (_dot_id(edge.src), _dot_id(edge.dst), attrs))
    out.append("}")
    return "\n".join(out) + "\n"


# -- layout ----------------------------------------------------------------------------------
FONT_SIZE = 12.0
CHAR_WIDTH = 0.62 * FONT_SIZE  # a generous average for sans-serif text
LINE_HEIGHT = 1.3 * FONT_SIZE
NODE_GAP = 24.0  # between neighbours in a rank
RANK_GAP = 40.0  # between ranks, plus room for edge labels
MARGIN = 12.0


class Shape:
    """A laid-out node: centre (x, y), size (w, h), outline polygon."""

    def __init__(self, node, x, y, w, h):
        self.node, self.x, self.y, self.w, self.h = node, x, y, w, h

    @property
    def outline(self):
        x0, y0, x1, y1 = self.x - self.w / 2, self.y - self.h / 2, self.x + self.w / 2, \
            self.y + self.h / 2
        if self.node.kind == "layer":
            return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        c = min(self.h * 0.3, self.w * 0.3)  # octagon: the rectangle with its corners cut
        return [(x0 + c, y0), (x1 - c, y0), (x1, y0 + c), (x1, y1 - c), (x1 - c, y1),
                (x0 + c, y1), (x0, y1 - c), (x0, y0 + c)]


class Drawing:
    """A graph laid out: shapes, and edges as point lists (the inner points are quadratic
    Bezier control points) with their label and its anchor."""

    def __init__(self, title, width, height, shapes, edges, vertical):
        self.title = title
        self.width, self.height = width, height
        self.shapes = shapes
        self.edges = edges  # [(points, label, (x, y))]
        self.vertical = vertical


def _text_width(text):
    return len(text) * CHAR_WIDTH


def _node_size(node):
    width = max(_text_width(line) for line in node.lines)
    height = len(node.lines) * LINE_HEIGHT
    if node.kind == "layer":
        return width + 16, height + 12
    return width + 28, max(height + 14, 30)


def _ranks(graph):
    """Longest-path ranks over the edges that go forward in order of appearance; the
    others (the write of an in-place layer) are drawn back against the flow."""
    order = {node_id: i for i, node_id in enumerate(graph.nodes)}
    rank = dict.fromkeys(graph.nodes, 0)
    preds = collections.defaultdict(list)
    for edge in graph.edges:
        if order[edge.src] < order[edge.dst]:
            preds[edge.dst].append(edge.src)
    for node_id in graph.nodes:
        if preds[node_id]:
            rank[node_id] = max(rank[p] + 1 for p in preds[node_id])
    return rank


def _neighbours(links):
    """Each node's neighbours in the rank above and in the rank below."""
    up, down = collections.defaultdict(list), collections.defaultdict(list)
    for upper, lower in links:
        up[lower[1]].append(upper[1])
        down[upper[1]].append(lower[1])
    return up, down


def _crossings(rows, links):
    """Edge crossings between neighbouring ranks for the orders in `rows`."""
    pos = {n: i for row in rows for i, n in enumerate(row)}
    by_rank = collections.defaultdict(list)
    for upper, lower in links:
        by_rank[upper[0]].append((pos[upper[1]], pos[lower[1]]))
    total = 0
    for pairs in by_rank.values():
        for i, (a1, b1) in enumerate(pairs):
            for a2, b2 in pairs[i + 1:]:
                total += (a1 - a2) * (b1 - b2) < 0
    return total


def _order(rows, links, sweeps=8):
    """Order each rank by the barycentre of its neighbours in the rank above (down sweeps)
    or below (up sweeps), keeping the order with the fewest crossings."""
    up, down = _neighbours(links)
    best, best_crossings = [list(r) for r in rows], _crossings(rows, links)
    rows = [list(r) for r in rows]
    for sweep in range(sweeps):
        downward = sweep % 2 == 0
        indices = range(1, len(rows)) if downward else range(len(rows) - 2, -1, -1)
        for r in indices:
            near = rows[r - 1] if downward else rows[r + 1]
            pos = {n: i for i, n in enumerate(near)}
            neighbours = up if downward else down
            current = {n: i for i, n in enumerate(rows[r])}

            def barycentre(n):
                ps = [pos[m] for m in neighbours[n] if m in pos]
                return sum(ps) / len(ps) if ps else current[n]
            rows[r].sort(key=lambda n: (barycentre(n), current[n]))
        crossings = _crossings(rows, links)
        if crossings < best_crossings:
            best, best_crossings = [list(r) for r in rows], crossings
    return best


def _place(rows, links, breadth, passes=6):
    """Positions across the ranks: each node near the mean of its neighbours in the rank
    above or below, at least half-size + gap away from the nodes beside it."""
    up, down = _neighbours(links)

    def gap(a, b):
        dummy = isinstance(a, tuple) or isinstance(b, tuple)
        return (breadth[a] + breadth[b]) / 2 + (NODE_GAP / 2 if dummy else NODE_GAP)

    pos = {}
    for row in rows:
        x = 0.0
        for i, n in enumerate(row):
            x = x + gap(row[i - 1], n) if i else 0.0
            pos[n] = x
    for k in range(passes):
        downward = k % 2 == 0
        for row in (rows[1:] if downward else rows[-2::-1]):
            neighbours = up if downward else down
            want = []
            for n in row:
                ps = [pos[m] for m in neighbours[n]]
                want.append(sum(ps) / len(ps) if ps else pos[n])
            left, right = list(want), list(want)
            for i in range(1, len(row)):
                left[i] = max(want[i], left[i - 1] + gap(row[i - 1], row[i]))
            for i in range(len(row) - 2, -1, -1):
                right[i] = min(want[i], right[i + 1] - gap(row[i], row[i + 1]))
            for n, a, b in zip(row, left, right):
                pos[n] = (a + b) / 2
    return pos


def _exit_point(shape, toward):
    """Where the ray from the shape's centre toward `toward` leaves its outline."""
    cx, cy = shape.x, shape.y
    dx, dy = toward[0] - cx, toward[1] - cy
    best = None
    points = shape.outline
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]):
        ex, ey = x2 - x1, y2 - y1
        det = dx * -ey - dy * -ex
        if abs(det) < 1e-12:
            continue
        t = ((x1 - cx) * -ey - (y1 - cy) * -ex) / det
        s = (dx * (y1 - cy) - dy * (x1 - cx)) / det
        if t > 0 and -1e-9 <= s <= 1 + 1e-9 and (best is None or t < best):
            best = t
    if best is None:
        return cx, cy
    return cx + best * dx, cy + best * dy


def layout(graph):
    """Lay the graph out in ranks along graph.rankdir (a Drawing, in pixels, y down).

    The ranks are longest paths from the sources; edges that span several ranks pass
    through virtual points; each rank is ordered by barycentres to keep crossings few;
    nodes sit near their neighbours; parallel and opposite edges bow apart.
    """
    vertical = graph.rankdir in ("TB", "BT")
    sizes = {n: _node_size(node) for n, node in graph.nodes.items()}
    rank = _ranks(graph)
    breadth = {n: (w if vertical else h) for n, (w, h) in sizes.items()}
    depth = {n: (h if vertical else w) for n, (w, h) in sizes.items()}

    # Chains of virtual points for edges that span several ranks.
    chains, links = [], set()
    for k, edge in enumerate(graph.edges):
        a, b = edge.src, edge.dst
        flipped = rank[a] > rank[b]
        if flipped:
            a, b = b, a
        chain = [a] + [("virtual", k, r) for r in range(rank[a] + 1, rank[b])] + [b]
        for n in chain[1:-1]:
            rank[n], breadth[n], depth[n] = n[2], 0.0, 0.0
        for upper, lower in zip(chain, chain[1:]):
            if rank[upper] != rank[lower]:
                links.add(((rank[upper], upper), (rank[lower], lower)))
        chains.append(chain[::-1] if flipped else chain)
    links = sorted(links, key=lambda link: (link[0][0], str(link)))

    rows = [[] for _ in range(max(rank.values(), default=0) + 1)]
    for n in list(graph.nodes) + [n for chain in chains for n in chain[1:-1]]:
        rows[rank[n]].append(n)
    rows = _order(rows, links)
    across = _place(rows, links, breadth)

    # Distance between ranks: their half depths, a gap, and room for edge labels.
    label_room = collections.defaultdict(float)
    for edge, chain in zip(graph.edges, chains):
        if edge.label:
            r = min(rank[chain[0]], rank[chain[1]])
            room = _text_width(edge.label) if not vertical else LINE_HEIGHT
            label_room[r] = max(label_room[r], room)
    halves = [max((depth[n] for n in row), default=0.0) / 2 for row in rows]
    along = [0.0]
    for r in range(1, len(rows)):
        along.append(along[-1] + halves[r - 1] + RANK_GAP + label_room[r - 1] + halves[r])

    low = min((across[n] - breadth[n] / 2 for n in across), default=0.0)
    high = max((across[n] + breadth[n] / 2 for n in across), default=0.0)
    extent_across = high - low + 2 * MARGIN
    extent_along = along[-1] + halves[0] + halves[-1] + 2 * MARGIN

    def point(n):
        a = across[n] - low + MARGIN
        d = along[rank[n]] + halves[0] + MARGIN
        if graph.rankdir in ("BT", "RL"):
            d = extent_along - d
        return (a, d) if vertical else (d, a)

    shapes = collections.OrderedDict()
    for n, node in graph.nodes.items():
        x, y = point(n)
        shapes[n] = Shape(node, x, y, *sizes[n])

    edges = []
    bundles = collections.defaultdict(list)
    for k, (edge, chain) in enumerate(zip(graph.edges, chains)):
        bundles[frozenset((edge.src, edge.dst))].append(k)
    for k, (edge, chain) in enumerate(zip(graph.edges, chains)):
        inner = [point(n) for n in chain[1:-1]]
        src, dst = shapes[edge.src], shapes[edge.dst]
        bundle = bundles[frozenset((edge.src, edge.dst))]
        if len(bundle) > 1 and not inner:
            # Parallel or opposite edges between two nodes: bow each to its own side.
            (ax, ay), (bx, by) = sorted([(src.x, src.y), (dst.x, dst.y)])
            length = math.hypot(bx - ax, by - ay) or 1.0
            offset = (bundle.index(k) - (len(bundle) - 1) / 2) * 2 * NODE_GAP
            inner = [((ax + bx) / 2 - (by - ay) / length * offset,
                      (ay + by) / 2 + (bx - ax) / length * offset)]
        start = _exit_point(src, inner[0] if inner else (dst.x, dst.y))
        end = _exit_point(dst, inner[-1] if inner else (src.x, src.y))
        points = [start] + inner + [end]
        edges.append((points, edge.label, _label_anchor(points, vertical)))
    width, height = (extent_across, extent_along) if vertical else (extent_along, extent_across)
    return Drawing(graph.name, width, height, list(shapes.values()), edges, vertical)


def _label_anchor(points, vertical):
    """Where an edge's label goes: beside the middle of its first stretch (of its first
    curve, from the start to the midpoint after the first control point)."""
    (x0, y0), (x1, y1) = points[0], points[1]
    if len(points) == 2:
        x, y = (x0 + x1) / 2, (y0 + y1) / 2
    else:
        x2, y2 = points[2] if len(points) == 3 else (
            (x1 + points[2][0]) / 2, (y1 + points[2][1]) / 2)
        x, y = 0.25 * x0 + 0.5 * x1 + 0.25 * x2, 0.25 * y0 + 0.5 * y1 + 0.25 * y2
    return (x + 5, y) if vertical else (x, y - LINE_HEIGHT / 2)


def path_segments(points):
    """An edge's points as drawing commands: ('M', p), ('L', p) and ('Q', control, end)."""
    out = [("M", points[0])]
    if len(points) == 2:
        out.append(("L", points[1]))
        return out
    inner = points[1:-1]
    for a, b in zip(inner, inner[1:]):
        out.append(("Q", a, ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)))
    out.append(("Q", inner[-1], points[-1]))
    return out


def arrow_head(points, length=9.0, half_width=4.0):
    """The triangle at an edge's end, pointing along its last stretch."""
    (x0, y0), (x1, y1) = points[-2], points[-1]
    d = math.hypot(x1 - x0, y1 - y0) or 1.0
    ux, uy = (x1 - x0) / d, (y1 - y0) / d
    bx, by = x1 - ux * length, y1 - uy * length
    return [(x1, y1), (bx - uy * half_width, by + ux * half_width),
            (bx + uy * half_width, by - ux * half_width)]


def trim(points, length=9.0):
    """The edge's points with the end pulled back under its arrow head."""
    (x0, y0), (x1, y1) = points[-2], points[-1]
    d = math.hypot(x1 - x0, y1 - y0) or 1.0
    k = min(length, d) / d
    return points[:-1] + [(x1 - (x1 - x0) * k, y1 - (y1 - y0) * k)]


# -- SVG -------------------------------------------------------------------------------------
def _pts(points):
    return " ".join("%.1f,%.1f" % p for p in points)


def to_svg(drawing):
    """The drawing as a standalone SVG document (text)."""
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
           '<svg xmlns="http://www.w3.org/2000/svg" width="%.0fpt" height="%.0fpt" '
           'viewBox="0 0 %.1f %.1f" font-family="Helvetica, Arial, sans-serif" '
           'font-size="%g">' % (drawing.width, drawing.height, drawing.width, drawing.height,
                                FONT_SIZE),
           "<title>%s</title>" % escape(drawing.title),
           '<rect width="100%" height="100%" fill="white"/>']
    for points, label, (lx, ly) in drawing.edges:
        d = " ".join(cmd + " " + " ".join("%.1f,%.1f" % p for p in args)
                     for cmd, *args in path_segments(trim(points)))
        out.append('<g class="edge"><path d="%s" fill="none" stroke="black"/>'
                   '<polygon points="%s" fill="black" stroke="black"/>'
                   % (d, _pts(arrow_head(points))))
        if label:
            anchor = "start" if drawing.vertical else "middle"
            out.append('<text x="%.1f" y="%.1f" text-anchor="%s" dominant-baseline="central">'
                       '%s</text>' % (lx, ly, anchor, escape(label)))
        out.append("</g>")
    for shape in drawing.shapes:
        node = shape.node
        out.append('<g class="node %s" id=%s><title>%s</title>'
                   % (node.kind, quoteattr(node.id), escape(node.id)))
        out.append('<polygon points="%s" fill="%s" stroke="black"/>'
                   % (_pts(shape.outline), node.color))
        top = shape.y - (len(node.lines) - 1) * LINE_HEIGHT / 2
        for i, line in enumerate(node.lines):
            out.append('<text x="%.1f" y="%.1f" text-anchor="middle" '
                       'dominant-baseline="central">%s</text>'
                       % (shape.x, top + i * LINE_HEIGHT, escape(line)))
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -- matplotlib ------------------------------------------------------------------------------
MAX_PIXELS = 30000  # per side: Agg cannot draw much larger images


def image_formats():
    """The file formats matplotlib can write, or None when it is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return set(Figure().canvas.get_supported_filetypes())


def render_image(drawing, fmt, dpi=144):
    """The drawing as an image file's bytes in format `fmt` (png, pdf, ...) via matplotlib.

    One drawing unit is one point, so text keeps the size it was laid out for.
    """
    import io

    from matplotlib.figure import Figure
    from matplotlib.patches import PathPatch, Polygon
    from matplotlib.path import Path

    dpi = min(dpi, MAX_PIXELS * 72.0 / max(drawing.width, drawing.height, 1.0))
    fig = Figure(figsize=(drawing.width / 72.0, drawing.height / 72.0), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, drawing.width)
    ax.set_ylim(drawing.height, 0)
    ax.axis("off")
    codes = {"M": [Path.MOVETO], "L": [Path.LINETO], "Q": [Path.CURVE3, Path.CURVE3]}
    for points, label, (lx, ly) in drawing.edges:
        verts, kinds = [], []
        for cmd, *args in path_segments(trim(points)):
            verts.extend(args)
            kinds.extend(codes[cmd])
        ax.add_patch(PathPatch(Path(verts, kinds), fill=False, lw=1.0, edgecolor="black"))
        ax.add_patch(Polygon(arrow_head(points), closed=True, facecolor="black",
                             edgecolor="black", lw=1.0))
        if label:
            ax.text(lx, ly, label, fontsize=FONT_SIZE, va="center",
                    ha="left" if drawing.vertical else "center")
    for shape in drawing.shapes:
        node = shape.node
        ax.add_patch(Polygon(shape.outline, closed=True, facecolor=node.color,
                             edgecolor="black", lw=1.0))
        top = shape.y - (len(node.lines) - 1) * LINE_HEIGHT / 2
        for i, line in enumerate(node.lines):
            ax.text(shape.x, top + i * LINE_HEIGHT, line, fontsize=FONT_SIZE, ha="center",
                    va="center")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, facecolor="white")
    return buf.getvalue()


# -- pycaffe's caffe.draw ----------------------------------------------------------------------

def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """pycaffe's caffe.draw.draw_net_to_file: draw `caffe_net` (a NetParameter, or a
    prototxt path) into `filename`, its format named by the extension; `phase` (TRAIN,
    TEST or None for all layers) keeps the layers that phase builds."""
    from .tools.draw_net import draw_net_to_file as draw
    draw(caffe_net, filename, rankdir, phase, display_lrm)


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    """pycaffe's caffe.draw.draw_net: the drawing of `caffe_net` as the bytes of an `ext`
    file (png, svg, pdf, ...)."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "net." + ext)
        draw_net_to_file(caffe_net, path, rankdir, phase, display_lrm)
        with open(path, "rb") as f:
            return f.read()
