"""convert_annoset and the AnnotatedData layer on a VOC-style folder of synthetic images:
solid rectangles of distinct colours on grey at known boxes, with VOC XML (also SSD's JSON
and txt) and a label map. The records are read back and checked against the files; the
layer runs SSD's training transform and batch samplers, and every box it emits is checked
against where its rectangle's colour lies in the transformed image."""
import json
import re

import lmdb
import numpy as np
import pytest
from google.protobuf import text_format

from netkit import netkit_pb2 as pb
from netkit.data.prefetch import PrefetchError
from netkit.errors import NetkitError
from netkit.layer import TEST, TRAIN
from netkit.log import logger
from netkit.net import Net
from netkit.rng import set_random_seed
from netkit.tools.cli import main

cv2 = pytest.importorskip("cv2")

GREY = (128, 128, 128)
LABELS = {"cat": 1, "dog": 2, "person": 3}
# Image stem, (height, width), objects: (name, difficult, (xmin, ymin, xmax, ymax) in
# pixel edges, BGR colour). Colours are far apart in hue and far from grey.
IMAGES = [
    ("000001", (320, 400), [("cat", 0, (40, 30, 160, 130), (40, 40, 220)),
                            ("dog", 1, (230, 170, 370, 290), (200, 60, 30))]),
    ("000002", (400, 320), [("cat", 0, (20, 40, 120, 150), (30, 200, 60)),
                            ("person", 0, (170, 60, 300, 200), (40, 210, 220)),
                            ("cat", 0, (60, 250, 260, 380), (200, 40, 200))]),
    ("000003", (300, 360), [("dog", 0, (100, 80, 260, 220), (220, 200, 40))]),
]
MEAN = np.array([104, 117, 123], np.float32)
SIZE = 64  # resize_param height and width


def voc_xml(size, objects, extra=""):
    height, width = size
    parts = ["<annotation><folder>VOC</folder><size><width>%d</width><height>%d</height>"
             "<depth>3</depth></size>" % (width, height)]
    for name, difficult, (x0, y0, x1, y1), _ in objects:
        parts.append("<object><name>%s</name><pose>Left</pose><truncated>0</truncated>"
                     "<difficult>%d</difficult><bndbox><xmin>%d</xmin><ymin>%d</ymin>"
                     "<xmax>%d</xmax><ymax>%d</ymax></bndbox>%s</object>"
                     % (name, difficult, x0, y0, x1, y1, extra))
    return "".join(parts) + "</annotation>"


def cli(*args):
    """`netkit ARGS` in this process: its exit status. main() points netkit's log at the
    stderr of the moment; the log is put back as it was afterwards."""
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        return main([str(a) for a in args])
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """Folder with JPEGImages/*.png, Annotations/*.xml|json|txt, labelmap.prototxt, the list
    files and the converted LMDBs `db` (all images), `empty` (an image with no object) and
    `mixed` (that image, then the third)."""
    root = tmp_path_factory.mktemp("voc")
    for sub in ("JPEGImages", "Annotations"):
        (root / sub).mkdir()
    for stem, size, objects in IMAGES:
        image = np.empty(size + (3,), np.uint8)
        image[...] = GREY
        for _, _, (x0, y0, x1, y1), colour in objects:
            image[y0:y1, x0:x1] = colour
        assert cv2.imwrite(str(root / "JPEGImages" / (stem + ".png")), image)
        # A person's <part> has its own name and box; SSD reads only the object's own.
        (root / "Annotations" / (stem + ".xml")).write_text(voc_xml(
            size, objects, "<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
            "<xmax>2</xmax><ymax>2</ymax></bndbox></part>"))
        (root / "Annotations" / (stem + ".json")).write_text(json.dumps({
            "image": {"height": size[0], "width": size[1]},
            "annotation": [{"category_id": name, "iscrowd": difficult,
                            "bbox": [x0, y0, x1 - x0, y1 - y0]}
                           for name, difficult, (x0, y0, x1, y1), _ in objects]}))
        (root / "Annotations" / (stem + ".txt")).write_text("".join(
            "%d %d %d %d %d\n" % ((LABELS[name],) + box) for name, _, box, _ in objects))
    image = np.full((200, 240, 3), GREY, np.uint8)
    assert cv2.imwrite(str(root / "JPEGImages" / "empty.png"), image)
    (root / "Annotations" / "empty.xml").write_text(voc_xml((200, 240), []))
    (root / "labelmap.prototxt").write_text(
        'item { name: "none_of_the_above" label: 0 display_name: "background" }\n' + "".join(
            'item { name: "%s" label: %d display_name: "%s" }\n' % (n, label, n.title())
            for n, label in LABELS.items()))
    for ext in ("xml", "json", "txt"):
        (root / ("list_%s.txt" % ext)).write_text("".join(
            "JPEGImages/%s.png Annotations/%s.%s\n" % (stem, stem, ext)
            for stem, _, _ in IMAGES))
    (root / "empty.txt").write_text("JPEGImages/empty.png Annotations/empty.xml\n")
    (root / "mixed.txt").write_text("JPEGImages/empty.png Annotations/empty.xml\n"
                                    "JPEGImages/000003.png Annotations/000003.xml\n")
    paths = {"root": root}
    for name, listfile in (("db", "list_xml.txt"), ("empty", "empty.txt"),
                           ("mixed", "mixed.txt")):
        paths[name] = root / name
        assert cli("convert_annoset", "--anno_type=detection", "--label_type=xml",
                   "--label_map_file=%s" % (root / "labelmap.prototxt"), "--check_label=True",
                   "--encode_type=png", "--encoded", "--threads=2",
                   str(root) + "/", root / listfile, paths[name]) == 0
    return paths


def records(db):
    """[(key, AnnotatedDatum)] of an LMDB in key order."""
    env = lmdb.open(str(db), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return [(k.decode(), pb.AnnotatedDatum.FromString(v)) for k, v in txn.cursor()]
    finally:
        env.close()


def expected_groups(size, objects):
    """[(group_label, [(instance_id, box, difficult)])] as SSD groups a file's objects."""
    height, width = size
    groups = {}
    for name, difficult, (x0, y0, x1, y1), _ in objects:
        group = groups.setdefault(LABELS[name], [])
        box = np.array([x0 / width, y0 / height, x1 / width, y1 / height], np.float32)
        group.append((len(group), box, bool(difficult)))
    return list(groups.items())


def groups_of(anno_datum):
    return [(g.group_label, [(a.instance_id, np.array([a.bbox.xmin, a.bbox.ymin, a.bbox.xmax,
                                                       a.bbox.ymax], np.float32),
                              a.bbox.difficult) for a in g.annotation])
            for g in anno_datum.annotation_group]


def assert_groups_equal(got, want):
    assert [(g, [(i, d) for i, _, d in annos]) for g, annos in got] == \
        [(g, [(i, d) for i, _, d in annos]) for g, annos in want]
    for (_, a), (_, b) in zip(got, want):
        for (_, box_a, _), (_, box_b, _) in zip(a, b):
            np.testing.assert_array_equal(box_a, box_b)


# -- convert_annoset -----------------------------------------------------------------------
def test_records_hold_the_files_and_their_boxes(voc):
    got = records(voc["db"])
    assert [k for k, _ in got] == ["%08d_JPEGImages/%s.png" % (i, stem)
                                   for i, (stem, _, _) in enumerate(IMAGES)]
    for (_, anno_datum), (stem, size, objects) in zip(got, IMAGES):
        datum = anno_datum.datum
        assert anno_datum.HasField("type") and anno_datum.type == pb.AnnotatedDatum.BBOX
        assert datum.encoded and datum.label == -1
        assert (datum.channels, datum.height, datum.width) == (3,) + size
        # The PNG file's own bytes are stored, as its extension is the encoding.
        assert datum.data == (voc["root"] / "JPEGImages" / (stem + ".png")).read_bytes()
        assert_groups_equal(groups_of(anno_datum), expected_groups(size, objects))
    (_, empty), = records(voc["empty"])
    assert empty.type == pb.AnnotatedDatum.BBOX and len(empty.annotation_group) == 0


@pytest.mark.parametrize("label_type", ["json", "txt"])
def test_json_and_txt_annotations_give_the_xml_boxes(voc, tmp_path, label_type):
    db = tmp_path / "db"
    assert cli("convert_annoset", "--anno_type", "detection", "--label_type", label_type,
               "--label_map_file", voc["root"] / "labelmap.prototxt", voc["root"],
               voc["root"] / ("list_%s.txt" % label_type), db) == 0
    for (_, got), (stem, size, objects) in zip(records(db), IMAGES):
        want = expected_groups(size, objects)
        if label_type == "txt":  # txt files have no difficult flag
            want = [(g, [(i, box, False) for i, box, _ in annos]) for g, annos in want]
        assert_groups_equal(groups_of(got), want)
        assert not got.datum.encoded  # raw pixels, as OpenCV reads the file
        image = cv2.imread(str(voc["root"] / "JPEGImages" / (stem + ".png")))
        np.testing.assert_array_equal(np.frombuffer(got.datum.data, np.uint8),
                                      image.transpose(2, 0, 1).ravel())


def test_resizing_shuffling_and_grey(voc, tmp_path):
    resized, dims, shuffled = tmp_path / "resized", tmp_path / "dims", tmp_path / "shuffled"
    base = ["convert_annoset", "--anno_type=detection",
            "--label_map_file=%s" % (voc["root"] / "labelmap.prototxt")]
    lists = (voc["root"], voc["root"] / "list_xml.txt")
    assert cli(*base, "--resize_height=30", "--resize_width=50", "--gray", *lists,
               resized) == 0
    assert cli(*base, "--min_dim=360", "--max_dim=420", *lists, dims) == 0
    assert cli(*base, "--shuffle", "--seed=3", *lists, shuffled) == 0
    for (_, got), (stem, size, objects) in zip(records(resized), IMAGES):
        image = cv2.imread(str(voc["root"] / "JPEGImages" / (stem + ".png")),
                           cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(np.frombuffer(got.datum.data, np.uint8),
                                      cv2.resize(image, (50, 30)).ravel())
        assert (got.datum.channels, got.datum.height, got.datum.width) == (1, 30, 50)
        # Boxes stay normalised by the size the annotation file gives.
        assert_groups_equal(groups_of(got), expected_groups(size, objects))
    # Short side up to 360 unless the long side would pass 420: 320x400 -> 336x420 (the
    # long side decides), 400x320 -> 420x336, 300x360 -> 360x432 would pass -> 350x420.
    assert [(d.datum.height, d.datum.width) for _, d in records(dims)] == \
        [(336, 420), (420, 336), (350, 420)]
    got = records(shuffled)
    order = [k.split("_", 1)[1] for k, _ in got]
    assert sorted(order) == sorted("JPEGImages/%s.png" % s for s, _, _ in IMAGES)
    assert [k[:9] for k, _ in got] == ["%08d_" % i for i in range(len(IMAGES))]
    assert records(shuffled) == got


@pytest.mark.parametrize("case", ["unknown name", "bad list line", "no label map",
                                  "float corner", "duplicate name", "label map syntax",
                                  "existing db"])
def test_errors_name_the_file_and_exit_non_zero(voc, tmp_path, capsys, case):
    """One line naming the file (and line, object or field), exit status 1, no database."""
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "JPEGImages" / "a.png").write_bytes(
        (voc["root"] / "JPEGImages" / "000001.png").read_bytes())
    listfile, labelmap = tmp_path / "list.txt", voc["root"] / "labelmap.prototxt"
    listfile.write_text("JPEGImages/a.png a.xml\n")
    objects = [("cat", 0, (1, 2, 3, 4), 0)]
    xml = voc_xml((320, 400), objects)
    db, flags = tmp_path / "db", []
    if case == "unknown name":
        xml, want = xml.replace("cat", "horse"), ["a.xml", "object 1", "unknown name 'horse'"]
    elif case == "bad list line":
        listfile.write_text("JPEGImages/a.png a.xml\nfoo bar baz\n")
        want = ["list.txt:2", "got 3 field(s)"]
    elif case == "no label map":
        labelmap, want = "", ["--label_map_file"]
    elif case == "float corner":
        xml = xml.replace("<xmin>1</xmin>", "<xmin>1.5</xmin>")
        want = ["a.xml", "object 1", "bndbox/xmin '1.5' is not an integer"]
    elif case == "duplicate name":
        labelmap = tmp_path / "labelmap.prototxt"
        labelmap.write_text('item { name: "cat" label: 1 }\nitem { name: "cat" label: 2 }\n')
        flags, want = ["--check_label"], ["labelmap.prototxt", "'cat' is given more than once"]
    elif case == "label map syntax":
        labelmap = tmp_path / "labelmap.prototxt"
        labelmap.write_text('item { name: "cat" label: one }\n')
        want = ["labelmap.prototxt:1:"]
    else:
        db.mkdir()
        want = ["already exists"]
    (tmp_path / "a.xml").write_text(xml)
    status = cli("convert_annoset", "--anno_type=detection", "--label_map_file=%s" % labelmap,
                 *flags, str(tmp_path) + "/", listfile, db)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 1
    assert line.startswith("netkit: error: ")
    for text in want:
        assert text in line
    assert db.exists() == (case == "existing db")
    assert not list(tmp_path.glob(".db.*"))  # no staged database left behind


# -- the AnnotatedData layer ---------------------------------------------------------------
SAMPLERS = """
    batch_sampler { sampler { } max_trials: 1 max_sample: 1 }
""" + "".join("""
    batch_sampler { sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5
                              max_aspect_ratio: 2.0 }
                    sample_constraint { %s_jaccard_overlap: %s } max_trials: 50 max_sample: 1 }
""" % c for c in (("min", 0.1), ("min", 0.3), ("min", 0.5), ("min", 0.7), ("min", 0.9),
                  ("max", 1.0)))

DISTORT = """
    distort_param { brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5
                    contrast_lower: 0.5 contrast_upper: 1.5 hue_prob: 0.5 hue_delta: 18
                    saturation_prob: 0.5 saturation_lower: 0.5 saturation_upper: 1.5
                    random_order_prob: 0.0 }
"""

# SSD's ssd_pascal.py training transform, at SIZE x SIZE.
TRAIN_TRANSFORM = """
    mirror: true mean_value: 104 mean_value: 117 mean_value: 123
    resize_param { prob: 1 resize_mode: WARP height: %d width: %d
                   interp_mode: LINEAR interp_mode: AREA interp_mode: NEAREST
                   interp_mode: CUBIC interp_mode: LANCZOS4 }
    emit_constraint { emit_type: CENTER }
    %%s
    expand_param { prob: 0.5 max_expand_ratio: 4.0 }
""" % (SIZE, SIZE)

TEST_TRANSFORM = """
    mean_value: 104 mean_value: 117 mean_value: 123
    resize_param { prob: 1 resize_mode: WARP height: %d width: %d interp_mode: LINEAR }
""" % (SIZE, SIZE)


def net_text(source, batch_size, transform, samplers="", extra=""):
    return """
layer { name: "data" type: "AnnotatedData" top: "data" top: "label"
  data_param { source: "%s" batch_size: %d backend: LMDB }
  transform_param { %s }
  annotated_data_param { %s label_map_file: "labelmap.prototxt" }
  %s
}""" % (source, batch_size, transform, samplers, extra)


def batches(text, phase, n, backend="cpu", seed=1701):
    """`n` forwards of a net with one AnnotatedData layer: [(data, label)] host copies."""
    set_random_seed(seed)
    net = Net(text, phase, backend=backend)
    try:
        out = []
        for _ in range(n):
            net.forward()
            be = net.backend
            out.append((be.asnumpy(net.blobs["data"].data).copy(),
                        be.asnumpy(net.blobs["label"].data).copy()))
        return out
    finally:
        net.close()


def source_image(stem):
    size, objects = next((s, o) for name, s, o in IMAGES if name == stem)
    image = np.empty(size + (3,), np.uint8)
    image[...] = GREY
    for _, _, (x0, y0, x1, y1), colour in objects:
        image[y0:y1, x0:x1] = colour
    return image


def reference_rows(item_ids):
    """Label rows of the untransformed images `item_ids` (in the batch's order)."""
    rows = []
    for item, index in enumerate(item_ids):
        _, size, objects = IMAGES[index]
        for group, annos in expected_groups(size, objects):
            rows += [[item, group, i] + list(box) + [d] for i, box, d in annos]
    return np.array(rows, np.float32)


def test_test_phase_is_opencv_resize_minus_mean(voc, backend):
    text = net_text(voc["db"], 3, TEST_TRANSFORM)
    first = batches(text, TEST, 2, backend, seed=1)
    again = batches(text, TEST, 2, backend, seed=99)
    for (data, label), (data2, label2) in zip(first, again):
        np.testing.assert_array_equal(data, data2)
        np.testing.assert_array_equal(label, label2)
    data, label = first[0]
    assert data.shape == (3, 3, SIZE, SIZE) and label.shape == (1, 1, 6, 8)
    for item, (stem, _, _) in enumerate(IMAGES):
        want = cv2.resize(source_image(stem), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(data[item], (want - MEAN).transpose(2, 0, 1), atol=1e-4)
    np.testing.assert_allclose(label.reshape(-1, 8), reference_rows([0, 1, 2]), atol=1e-6)
    # The stream wraps: the second batch starts again at the first record.
    np.testing.assert_allclose(first[1][1].reshape(-1, 8)[:, 1:],
                               reference_rows([0, 1, 2])[:, 1:], atol=1e-6)


def test_mirror_flips_image_and_boxes(voc):
    plain = batches(net_text(voc["db"], 3, TEST_TRANSFORM), TEST, 1)[0]
    mirrored = batches(net_text(voc["db"], 3, "mirror: true " + TEST_TRANSFORM), TEST, 6)
    rows = plain[1].reshape(-1, 8)
    flips = []
    for data, label in mirrored:
        got = label.reshape(-1, 8)
        for item in range(3):
            flip = not np.array_equal(data[item], plain[0][item])
            if flip:
                np.testing.assert_array_equal(data[item], plain[0][item][:, :, ::-1])
            want = rows[rows[:, 0] == item].copy()
            if flip:
                want[:, [3, 5]] = 1 - want[:, [5, 3]]
            np.testing.assert_allclose(got[got[:, 0] == item], want, atol=1e-6)
            flips.append(flip)
    assert 0 < sum(flips) < len(flips)


def test_resize_modes_that_keep_the_aspect_ratio(voc):
    """FIT_LARGE_SIZE_AND_PAD: the long side to SIZE, the short side padded (pad_value)
    around the centre, boxes moved past the padding; FIT_SMALL_SIZE (batch 1): the short
    side to SIZE, the long side in proportion. Images as OpenCV resizes them."""
    pad = "resize_param { resize_mode: FIT_LARGE_SIZE_AND_PAD height: %d width: %d " \
          "pad_value: 50 }" % (SIZE, SIZE)
    (data, label), = batches(net_text(voc["db"], 3, pad), TEST, 1)
    rows = reference_rows([0, 1, 2])
    for item, (stem, (h, w), _) in enumerate(IMAGES):
        image = source_image(stem)
        if w > h:
            fit, edge = (SIZE, int(SIZE * h / w)), (SIZE - SIZE * h / w) / 2
            lo = (SIZE - fit[1]) // 2
            want = cv2.copyMakeBorder(cv2.resize(image, fit), lo, SIZE - fit[1] - lo, 0, 0,
                                      cv2.BORDER_CONSTANT, value=(50, 50, 50))
            mine = rows[:, 0] == item
            rows[mine, 4::2] = (edge + rows[mine, 4::2] * (SIZE - 2 * edge)) / SIZE
        else:
            fit, edge = (int(SIZE * w / h), SIZE), (SIZE - SIZE * w / h) / 2
            lo = (SIZE - fit[0]) // 2
            want = cv2.copyMakeBorder(cv2.resize(image, fit), 0, 0, lo, SIZE - fit[0] - lo,
                                      cv2.BORDER_CONSTANT, value=(50, 50, 50))
            mine = rows[:, 0] == item
            rows[mine, 3:7:2] = (edge + rows[mine, 3:7:2] * (SIZE - 2 * edge)) / SIZE
        np.testing.assert_array_equal(data[item], want.transpose(2, 0, 1))
        for row in label.reshape(-1, 8)[label.reshape(-1, 8)[:, 0] == item]:
            extent, _ = colour_extent(data[item].transpose(1, 2, 0), row[3:7] * SIZE)
            assert np.abs(extent - row[3:7] * SIZE).max() <= 1
    np.testing.assert_allclose(label.reshape(-1, 8), rows, atol=1e-5)

    small = "resize_param { resize_mode: FIT_SMALL_SIZE height: %d width: %d }" % (SIZE, SIZE)
    for item, (data, label) in enumerate(batches(net_text(voc["db"], 1, small), TEST, 3)):
        stem, (h, w), _ = IMAGES[item]
        fit = (int(SIZE * w / h), SIZE) if w > h else (SIZE, int(SIZE * h / w))
        np.testing.assert_array_equal(data[0], cv2.resize(source_image(stem), fit)
                                      .transpose(2, 0, 1))
        want = reference_rows([item])
        want[:, 0] = 0
        np.testing.assert_allclose(label.reshape(-1, 8), want, atol=1e-6)


@pytest.mark.parametrize("emit, kept", [
    ("", 6), ("emit_constraint { emit_type: CENTER }", 2),
    ("emit_constraint { emit_type: MIN_OVERLAP emit_overlap: 0.15 }", 5)],
    ids=["none", "CENTER", "MIN_OVERLAP"])
def test_emit_constraint_in_a_centre_crop(voc, emit, kept):
    """A centred 30x30 crop of the 64x64 resize: a box stays when its centre is inside the
    crop (CENTER), when more than 15% of it is (MIN_OVERLAP), or when any of it is; it is
    then clipped to the crop and given in the crop's coordinates."""
    (data, label), = batches(net_text(voc["db"], 3, "crop_size: 30 " + TEST_TRANSFORM + emit),
                             TEST, 1)
    assert data.shape == (3, 3, 30, 30)
    lo, hi = 17 / SIZE, 47 / SIZE
    want = []
    for row in reference_rows([0, 1, 2]):
        x0, y0, x1, y1 = row[3:7]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        inside = (min(x1, hi) - max(x0, lo)) * (min(y1, hi) - max(y0, lo))
        if min(x1, hi) <= max(x0, lo) or min(y1, hi) <= max(y0, lo):
            continue
        if "CENTER" in emit and not (lo <= cx <= hi and lo <= cy <= hi):
            continue
        if "MIN_OVERLAP" in emit and not inside / ((x1 - x0) * (y1 - y0)) > 0.15:
            continue
        clipped = (np.clip(row[3:7], lo, hi) - lo) / (hi - lo)
        want.append(np.concatenate([row[:3], clipped, row[7:]]))
    assert len(want) == kept
    np.testing.assert_allclose(label.reshape(-1, 8), np.array(want), atol=1e-5)


def iou(a, b):
    """Intersection over union of boxes a (4,) and b (4,), written out."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_sampled_boxes_meet_scale_aspect_and_overlap():
    """SSD's sampler: area scale**2 with scale in [min_scale, max_scale], aspect ratio in
    [min_aspect_ratio, max_aspect_ratio] (bounded so the box fits), inside the image, and
    the Jaccard overlap with some object inside the constraint; max_sample caps the count;
    as in SSD only the first kind of constraint a sample_constraint sets decides."""
    from netkit.layers.annotated_data import sample_boxes
    objects = np.array([[0.1, 0.1, 0.4, 0.5], [0.6, 0.5, 0.9, 0.95]], np.float32)
    param = pb.BatchSampler()
    text_format.Parse("sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5 "
                      "max_aspect_ratio: 2.0 } sample_constraint { min_jaccard_overlap: 0.3 "
                      "max_jaccard_overlap: 0.8 } max_trials: 3000", param)
    rng = np.random.RandomState(0)
    boxes = sample_boxes(rng, param, objects)
    assert 100 < len(boxes) < 3000
    for box in boxes:
        assert any(0.3 - 1e-6 <= iou(box, o) <= 0.8 + 1e-6 for o in objects)
    param.max_sample = 5
    assert len(sample_boxes(rng, param, objects)) == 5
    param.ClearField("max_sample")
    param.sample_constraint.Clear()
    param.sample_constraint.min_jaccard_overlap = 0.0
    param.sample_constraint.min_object_coverage = 2.0  # impossible, but not looked at
    boxes = sample_boxes(rng, param, objects)
    assert len(boxes) == 3000
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes >= -1e-6).all() and (boxes <= 1 + 1e-6).all()
    scale = np.sqrt(w * h)
    assert (scale >= 0.3 - 1e-5).all() and (scale <= 1 + 1e-5).all() and scale.max() > 0.99
    assert (w / h >= 0.5 - 1e-4).all() and (w / h <= 2 + 1e-4).all()
    assert len(sample_boxes(rng, param, objects[:0])) == 0  # no object to overlap


def colour_extent(image, box):
    """Pixel-edge bounds (x0, y0, x1, y1) of the region connected to the centre of `box`
    (pixel-edge coordinates) whose colour is that of the centre pixel."""
    cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
    same = np.abs(image - image[cy, cx]).max(axis=2) <= 12
    _, regions = cv2.connectedComponents(same.astype(np.uint8), connectivity=4)
    ys, xs = np.nonzero(regions == regions[cy, cx])
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]), image[cy, cx]


@pytest.mark.parametrize("distort", [False, True], ids=["colours-kept", "distorted"])
def test_training_boxes_bound_their_rectangles(voc, distort):
    """SSD's training pipeline (expand, seven samplers, five interpolations, mirror, and
    optionally colour distortion): each emitted box spans its rectangle's colour region in
    the transformed image within 2 pixels; without distortion the colour is the one the
    box's object was drawn with."""
    text = net_text(voc["db"], 4, TRAIN_TRANSFORM % (DISTORT if distort else ""), SAMPLERS)
    colours = {}  # (group label, instance id, image) -> BGR colour
    for index, (_, size, objects) in enumerate(IMAGES):
        seen = {}
        for name, _, _, colour in objects:
            instance = seen[name] = seen.get(name, -1) + 1
            colours[LABELS[name], instance, index] = colour
    checked, small, changed, shrunk = 0, 0, 0, 0
    record = 0
    for data, label in batches(text, TRAIN, 32):
        assert data.shape == (4, 3, SIZE, SIZE) and label.shape[:2] == (1, 1)
        rows = label.reshape(-1, 8)
        assert (rows[:, 3:7] >= 0).all() and (rows[:, 3:7] <= 1).all()
        assert (rows[:, 3] < rows[:, 5]).all() and (rows[:, 4] < rows[:, 6]).all()
        for item in range(4):
            image = data[item].transpose(1, 2, 0) + MEAN
            index = (record + item) % len(IMAGES)
            originals = {(g, i): box for g, annos in expected_groups(*IMAGES[index][1:])
                         for i, box, _ in annos}
            for row in rows[rows[:, 0] == item]:
                group, instance = int(row[1]), int(row[2])
                assert (group, instance) in originals
                original = originals[group, instance]
                changed += not np.allclose(row[3:7], original, atol=1e-3)
                # Crops enlarge boxes and clipping at most halves a side whose centre
                # stays: only expansion makes both sides shorter than that.
                shrunk += ((row[5:7] - row[3:5]) < 0.45 * (original[2:] - original[:2])).all()
                box = row[3:7] * SIZE
                if min(box[2] - box[0], box[3] - box[1]) < 4:
                    small += 1
                    continue
                extent, colour = colour_extent(image, box)
                assert np.abs(extent - box).max() <= 2, (row, extent)
                if not distort:
                    np.testing.assert_allclose(colour, colours[group, instance, index],
                                               atol=0.5)
                checked += 1
        record += 4
    assert checked > 120 and small < checked / 5
    assert changed > checked / 3  # most boxes were moved by expansion or cropping
    assert shrunk > 5


def _convert(values, alpha, beta):
    """OpenCV's convertTo to 8 bits, written out: round to nearest, saturate."""
    return np.clip(np.rint(values.astype(np.float32) * np.float32(alpha)
                           + np.float32(beta)), 0, 255).astype(np.uint8)


def _hsv(colours, channel, alpha, beta):
    """Rows of colours (V, K, 3) with one of OpenCV's 8-bit HSV channels put through
    _convert with the row's alpha and beta (V, 1)."""
    hsv = cv2.cvtColor(colours, cv2.COLOR_BGR2HSV)
    hsv[..., channel] = _convert(hsv[..., channel], alpha, beta)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _grid(low, high, n):
    return np.linspace(low, high, n, dtype=np.float32)[:, np.newaxis]


PERMUTATIONS = np.array([(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])

# Each distortion alone (probability 1): a grid over its parameter's range, what each
# value of the grid does to colours (K, 3), as (values, K, 3), and the tolerance (OpenCV's
# vectorised HSV conversion of a whole image may differ by 1 from that of a few colours).
DISTORTIONS = {
    "brightness": ("brightness_prob: 1 brightness_delta: 32", _grid(-32, 32, 1281),
                   lambda c, v: _convert(c[np.newaxis], 1, v[:, :, np.newaxis]), 0),
    "contrast": ("contrast_prob: 1 contrast_lower: 0.5 contrast_upper: 1.5",
                 _grid(0.5, 1.5, 5001),
                 lambda c, v: _convert(c[np.newaxis], v[:, :, np.newaxis], 0), 0),
    "saturation": ("saturation_prob: 1 saturation_lower: 0.5 saturation_upper: 1.5",
                   _grid(0.5, 1.5, 1001),
                   lambda c, v: _hsv(np.repeat(c[np.newaxis], len(v), 0), 1, v, 0), 1),
    "hue": ("hue_prob: 1 hue_delta: 18", _grid(-18, 18, 361),
            lambda c, v: _hsv(np.repeat(c[np.newaxis], len(v), 0), 0, 1, v), 1),
    "channel order": ("random_order_prob: 1", PERMUTATIONS,
                      lambda c, v: c[:, v].transpose(1, 0, 2), 0),
}


@pytest.mark.parametrize("kind", list(DISTORTIONS))
def test_each_distortion_is_opencvs_for_some_value_in_its_range(voc, kind):
    """The image after one distortion maps each colour of the source to one colour, and
    that map is the distortion's (as written out here with OpenCV's colour conversions)
    for some value of its range; the value changes from image to image."""
    text, values, apply, tolerance = DISTORTIONS[kind]
    found = []
    for item, (data, _) in enumerate(batches(net_text(voc["db"], 1, "distort_param { %s }"
                                                      % text), TRAIN, 6)):
        source = source_image(IMAGES[item % len(IMAGES)][0])
        out = data[0].transpose(1, 2, 0)
        pixels = source.reshape(-1, 3).astype(np.int32)
        _, first, where = np.unique(pixels @ [1 << 16, 1 << 8, 1], return_index=True,
                                        return_inverse=True)
        colours, mapped = source.reshape(-1, 3)[first], out.reshape(-1, 3)[first]
        np.testing.assert_array_equal(out.reshape(-1, 3), mapped[where])
        errors = np.abs(apply(colours, values).astype(np.float32) - mapped).max(axis=(1, 2))
        assert errors.min() <= tolerance, (kind, mapped)
        found.append(int(errors.argmin()))
    assert len(set(found)) > 1


def test_random_seed_repeats_the_stream(voc):
    text = net_text(voc["db"], 2, TRAIN_TRANSFORM % DISTORT, SAMPLERS)
    one, two, other = (batches(text, TRAIN, 3, seed=s) for s in (5, 5, 6))
    for (a, la), (b, lb) in zip(one, two):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert any(not np.array_equal(a, c) for (a, _), (c, _) in zip(one, other))


def test_no_box_left_gives_one_row_of_minus_ones(voc):
    data, label = batches(net_text(voc["empty"], 2, TEST_TRANSFORM), TEST, 1)[0]
    assert data.shape == (2, 3, SIZE, SIZE)
    np.testing.assert_array_equal(label, np.full((1, 1, 1, 8), -1, np.float32))
    # A centred 8x8 crop of the first image misses both of its boxes.
    data, label = batches(net_text(voc["db"], 1, "crop_size: 8 " + TEST_TRANSFORM),
                          TEST, 1)[0]
    assert data.shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(label, np.full((1, 1, 1, 8), -1, np.float32))
    # Beside an image that keeps boxes, the empty one adds no row.
    label = batches(net_text(voc["mixed"], 2, TEST_TRANSFORM), TEST, 1)[0][1]
    want = reference_rows([2])
    want[:, 0] = 1
    np.testing.assert_allclose(label.reshape(-1, 8), want, atol=1e-6)


def test_records_without_annotation_type_give_datum_labels(voc, tmp_path):
    """--anno_type classification stores "path label" lines without an annotation type;
    the layer's top 1 then holds one Datum label per image, as in SSD."""
    listfile, db = tmp_path / "list.txt", tmp_path / "db"
    listfile.write_text("".join("JPEGImages/%s.png %d\n" % (stem, 7 + i)
                                for i, (stem, _, _) in enumerate(IMAGES)))
    assert cli("convert_annoset", voc["root"], listfile, db) == 0
    assert all(not d.HasField("type") and d.datum.label == 7 + i
               for i, (_, d) in enumerate(records(db)))
    (data, label), = batches(net_text(db, 3, TEST_TRANSFORM), TEST, 1)
    assert data.shape == (3, 3, SIZE, SIZE)
    np.testing.assert_array_equal(label, [7, 8, 9])


def test_sampled_crops_need_a_resize(voc):
    """Without resize_param a sampled crop does not fit the batch: the prefetch error names
    the record and the remedy."""
    sampler = "batch_sampler { sampler { min_scale: 0.5 max_scale: 0.5 } max_trials: 1 }"
    set_random_seed(1)
    net = Net(net_text(voc["db"], 2, "", sampler), TRAIN)
    try:
        with pytest.raises(PrefetchError, match="record 00000000_JPEGImages/000001.png: .*"
                                                "resize_param"):
            net.forward()
    finally:
        net.close()


@pytest.mark.parametrize("transform, samplers, batch, message", [
    ("resize_param { resize_mode: FIT_SMALL_SIZE height: 32 width: 32 }", "", 2,
     "FIT_SMALL_SIZE .*batch_size 1"),
    ("expand_param { max_expand_ratio: 1 }", "", 1, "max_expand_ratio must be greater than 1"),
    ("noise_param { prob: 1 }", "", 1, "noise_param is not supported"),
    ("resize_param { height: 0 width: 32 }", "", 1, "positive height and width"),
    ("crop_size: 500", "", 1, "crop 500x500 is larger than the 320x400 image"),
    ("mean_value: 1 mean_value: 2", "", 1, "give 1 value or one per channel"),
    ("distort_param { contrast_prob: 1 contrast_lower: 2 contrast_upper: 1 }", "", 1,
     "contrast_lower"),
    ("", "batch_sampler { sampler { min_scale: 0 } }", 1,
     r"batch_sampler\[0\].sampler needs 0 < min_scale"),
    ("", "batch_sampler { sampler { min_aspect_ratio: 2 max_aspect_ratio: 1 } }", 1,
     "min_aspect_ratio <= max_aspect_ratio"),
])
def test_bad_parameters_are_one_line_errors(voc, transform, samplers, batch, message):
    with pytest.raises(NetkitError, match="AnnotatedData|data") as info:
        Net(net_text(voc["db"], batch, transform, samplers), TRAIN)
    assert len(str(info.value).splitlines()) == 1
    assert re.search(message, str(info.value)), str(info.value)


def test_missing_source_is_an_error(tmp_path):
    with pytest.raises(NetkitError, match="data_param.source .*nowhere does not exist"):
        Net(net_text(tmp_path / "nowhere", 1, ""), TRAIN)


# -- SSD training from the command line ------------------------------------------------------
SSD_BODY = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2
                            weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2
                            weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "loc" type: "Convolution" bottom: "conv2" top: "loc_map"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loc_perm" type: "Permute" bottom: "loc_map" top: "loc_perm"
        permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc" }
layer { name: "conf" type: "Convolution" bottom: "conv2" top: "conf_map"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "conf_perm" type: "Permute" bottom: "conf_map" top: "conf_perm"
        permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf" }
layer { name: "priors" type: "PriorBox" bottom: "conv2" bottom: "data" top: "priors"
        prior_box_param { min_size: 24 aspect_ratio: 2 flip: false clip: false
                          variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "loc" bottom: "conf"
        bottom: "priors" bottom: "label" top: "mbox_loss" include { phase: TRAIN }
        propagate_down: true propagate_down: true propagate_down: false propagate_down: false
        loss_param { normalization: VALID }
        multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1
                              num_classes: 4 share_location: true match_type: PER_PREDICTION
                              overlap_threshold: 0.5 use_prior_for_matching: true
                              background_label_id: 0 neg_pos_ratio: 3 neg_overlap: 0.5
                              code_type: CENTER_SIZE mining_type: MAX_NEGATIVE } }
layer { name: "conf_reshape" type: "Reshape" bottom: "conf" top: "conf_reshape"
        include { phase: TEST } reshape_param { shape { dim: 0 dim: -1 dim: 4 } } }
layer { name: "conf_softmax" type: "Softmax" bottom: "conf_reshape" top: "conf_softmax"
        include { phase: TEST } softmax_param { axis: 2 } }
layer { name: "conf_prob" type: "Flatten" bottom: "conf_softmax" top: "conf_prob"
        include { phase: TEST } }
layer { name: "detection_out" type: "DetectionOutput" bottom: "loc" bottom: "conf_prob"
        bottom: "priors" top: "detection_out" include { phase: TEST }
        detection_output_param { num_classes: 4 background_label_id: 0
                                 nms_param { nms_threshold: 0.45 top_k: 50 } keep_top_k: 20
                                 code_type: CENTER_SIZE confidence_threshold: 0.01 } }
layer { name: "detection_eval" type: "DetectionEvaluate" bottom: "detection_out"
        bottom: "label" top: "detection_eval" include { phase: TEST }
        detection_evaluate_param { num_classes: 4 background_label_id: 0
                                   overlap_threshold: 0.5 } }
"""


def test_ssd_trains_from_the_command_line(voc, tmp_path, monkeypatch, capfd):
    """convert_annoset's LMDB -> AnnotatedData with SSD's augmentation -> MultiBoxLoss,
    tested by DetectionEvaluate with eval_type "detection": `netkit train` runs it all,
    logs SSD's mAP line and snapshots weights that load back into the test net."""
    monkeypatch.chdir(voc["root"])
    train = net_text(voc["db"], 2, TRAIN_TRANSFORM % DISTORT, SAMPLERS,
                     "include { phase: TRAIN }")
    test = net_text(voc["db"], 1, TEST_TRANSFORM, "", "include { phase: TEST }")
    (tmp_path / "net.prototxt").write_text('name: "ssd"' + train + test + SSD_BODY)
    (tmp_path / "solver.prototxt").write_text(
        'net: "%s" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 max_iter: 12 '
        'test_iter: 3 test_interval: 6 test_initialization: false display: 6 '
        'eval_type: "detection" ap_version: "11point" random_seed: 3 '
        'snapshot_prefix: "%s"' % (tmp_path / "net.prototxt", tmp_path / "ssd"))
    assert cli("train", "--solver", tmp_path / "solver.prototxt") == 0
    log = capfd.readouterr().err
    values = [float(line.rsplit("=", 1)[1]) for line in log.splitlines()
              if "Test net output #0: detection_eval = " in line]
    assert len(values) == 2 and all(0 <= v <= 1 for v in values), log[-2000:]
    assert "Iteration 12, loss = " in log
    net = Net(str(tmp_path / "net.prototxt"), pb.TEST,
              weights=str(tmp_path / "ssd_iter_12.caffemodel"))
    net.close()
