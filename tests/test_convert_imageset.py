"""convert_imageset: records pixel for pixel as OpenCV reads the files, Caffe's keys and
Datum bytes, skipped unreadable files, flags, map-size growth, and a net trained on the DB."""
import logging
import os
import subprocess
import sys

import lmdb
import numpy as np
import pytest
from click.testing import CliRunner
from google.protobuf import text_format

cv2 = pytest.importorskip("cv2")

import netkit  # noqa: E402
from netkit import netkit_pb2 as pb  # noqa: E402
from netkit.errors import NetkitError  # noqa: E402
from netkit.data.image import read_list  # noqa: E402
from netkit.tools.convert_imageset import command, convert_imageset  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (relative path, label, source image index, (height, width)); one grey file, one corrupt
# file, a path with spaces, upper-case and .jpeg extensions.
FILES = [
    ("people/astronaut.jpg", 0, 0, (48, 40)),
    ("cats/chelsea.png", 1, 1, (30, 45)),
    ("cups/coffee.JPEG", 2, 2, (40, 60)),
    ("broken.jpg", 1, None, None),
    ("gray/camera.png", 0, 3, (36, 36)),
    ("my photos/rocket 2.jpeg", 2, 4, (43, 64)),
    ("cells/ihc.png", 1, 5, (32, 32)),
    ("people/astronaut_small.jpg", 0, 0, (20, 17)),
]
READABLE = [f for f in FILES if f[2] is not None]


def skimage_photos():
    """Six of scikit-image's sample photographs as BGR (or grey) uint8 arrays."""
    data = pytest.importorskip("skimage.data", reason="scikit-image is not installed "
                               "(pip install scikit-image); the photo folder is skipped")
    rgb = [data.astronaut(), data.chelsea(), data.coffee(), None, data.rocket(),
           data.immunohistochemistry()]
    return [data.camera() if im is None else im[:, :, ::-1] for im in rgb]


def patterns():
    """Six made-up images (gradients, rings, noise, checks), one of them grey."""
    rs = np.random.RandomState(5)
    y, x = np.mgrid[0:96, 0:128].astype(np.float32)
    rings = (127.5 + 127.5 * np.sin(np.hypot(y - 40, x - 70) / 4)).astype(np.uint8)
    checks = (((y // 8 + x // 8) % 2) * 200 + 30).astype(np.uint8)
    images = [np.dstack([rings, checks, (x * 2) % 256]).astype(np.uint8),
              rs.randint(0, 256, (96, 128, 3)).astype(np.uint8),
              np.dstack([(y * 2.6) % 256, rings, 255 - checks]).astype(np.uint8),
              rings,
              cv2.GaussianBlur(rs.randint(0, 256, (96, 128, 3)).astype(np.uint8), (9, 9), 3),
              np.dstack([checks, checks // 2, rings]).astype(np.uint8)]
    return images


@pytest.fixture(scope="module", params=["photos", "patterns"])
def folder(request, tmp_path_factory):
    """ROOT/ and LISTFILE of FILES: JPEG and PNG files of different sizes."""
    sources = skimage_photos() if request.param == "photos" else patterns()
    root = tmp_path_factory.mktemp(request.param)
    for path, label, index, size in FILES:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        if index is None:
            (root / path).write_bytes(b"this is not an image\n" * 20)
            continue
        image = cv2.resize(sources[index], size[::-1], interpolation=cv2.INTER_AREA)
        assert cv2.imwrite(str(root / path), image)
    listfile = root / "list.txt"
    listfile.write_text("".join("%s %d\n" % (path, label) for path, label, _, _ in FILES))
    return str(root) + "/", str(listfile)


def records(db):
    """[(key, value)] of an LMDB in key order."""
    env = lmdb.open(db, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    finally:
        env.close()


def reference(root, path, gray=False, height=0, width=0):
    """What OpenCV gives for one file: (C, H, W) uint8, BGR."""
    image = cv2.imread(root + path, cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    if height and width:
        image = cv2.resize(image, (width, height))
    return image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)


def expected_keys(files=FILES):
    return [("%08d_%s" % (i, path)).encode() for i, (path, _, index, _) in enumerate(files)
            if index is not None]


def convert(folder, tmp_path, name="db", **flags):
    db = str(tmp_path / name)
    convert_imageset(folder[0], folder[1], db, **flags)
    return db


# -- raw records ---------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [{}, {"gray": True}, {"resize_height": 32, "resize_width": 40},
                                   {"gray": True, "resize_height": 20, "resize_width": 24}],
                         ids=["default", "gray", "resize", "gray-resize"])
def test_raw_records_match_opencv(folder, tmp_path, flags):
    db = convert(folder, tmp_path, **flags)
    got = records(db)
    assert [k for k, _ in got] == expected_keys()
    for (key, value), (path, label, _, _) in zip(got, READABLE):
        ref = reference(folder[0], path, flags.get("gray", False),
                        flags.get("resize_height", 0), flags.get("resize_width", 0))
        # Caffe's CVMatToDatum sets encoded=false explicitly, so the field is in the bytes.
        want = pb.Datum(channels=ref.shape[0], height=ref.shape[1], width=ref.shape[2],
                        data=ref.tobytes(), label=label, encoded=False)
        assert value == want.SerializeToString(), path


def test_grey_file_is_three_channels_in_colour_mode(folder, tmp_path):
    got = dict(records(convert(folder, tmp_path)))
    datum = pb.Datum.FromString(got[b"00000004_gray/camera.png"])
    pixels = np.frombuffer(datum.data, np.uint8).reshape(3, 36, 36)
    assert datum.channels == 3
    np.testing.assert_array_equal(pixels[0], pixels[2])


def test_only_one_resize_dimension_keeps_sizes(folder, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="netkit"):
        got = records(convert(folder, tmp_path, resize_height=32))
    assert "both --resize_height and --resize_width" in caplog.text
    first = pb.Datum.FromString(got[0][1])
    assert (first.height, first.width) == (48, 40)


def test_corrupt_file_is_reported_and_skipped(folder, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="netkit"):
        count = convert_imageset(folder[0], folder[1], str(tmp_path / "db"))
    assert count == len(READABLE)
    assert "Could not open or find file %sbroken.jpg" % folder[0] in caplog.text
    assert "Processed %d files." % len(READABLE) in caplog.text
    assert "A total of %d images." % len(FILES) in caplog.text
    keys = [k for k, _ in records(str(tmp_path / "db"))]
    assert b"00000003_broken.jpg" not in keys and b"00000004_gray/camera.png" in keys


# -- encoded records -----------------------------------------------------------------------
def test_encoded_stores_the_original_file_bytes(folder, tmp_path):
    got = records(convert(folder, tmp_path, encoded=True))
    assert [k for k, _ in got] == expected_keys()
    for (_, value), (path, label, _, _) in zip(got, READABLE):
        with open(folder[0] + path, "rb") as f:
            assert value == pb.Datum(data=f.read(), label=label,
                                     encoded=True).SerializeToString(), path


def test_encode_type_png_keeps_png_files_and_reencodes_the_rest(folder, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="netkit"):
        got = records(convert(folder, tmp_path, encode_type="PNG"))
    assert "assuming encoded=true" in caplog.text
    for (_, value), (path, label, _, _) in zip(got, READABLE):
        datum = pb.Datum.FromString(value)
        assert datum.encoded and datum.label == label and not datum.HasField("channels")
        with open(folder[0] + path, "rb") as f:
            original = f.read()
        if path.endswith(".png"):
            assert datum.data == original, path
        else:
            assert datum.data != original and datum.data.startswith(b"\x89PNG"), path
            decoded = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(decoded.transpose(2, 0, 1),
                                          reference(folder[0], path))


def test_encode_type_jpg_keeps_jpeg_files(folder, tmp_path):
    got = records(convert(folder, tmp_path, encode_type="jpg"))
    for (_, value), (path, _, _, _) in zip(got, READABLE):
        data = pb.Datum.FromString(value).data
        if path.endswith(".png"):
            ok, buf = cv2.imencode(".jpg", cv2.imread(folder[0] + path, cv2.IMREAD_COLOR))
            assert ok and data == buf.tobytes(), path
        else:  # .jpg, .JPEG and .jpeg files all count as jpg, as in Caffe's matchExt
            with open(folder[0] + path, "rb") as f:
                assert data == f.read(), path


def test_encoded_resized_records_are_what_opencv_encodes(folder, tmp_path):
    got = records(convert(folder, tmp_path, encoded=True, gray=True,
                          resize_height=32, resize_width=40))
    for (_, value), (path, _, _, _) in zip(got, READABLE):
        ext = os.path.splitext(path)[1].lower()
        ref = reference(folder[0], path, gray=True, height=32, width=40)
        ok, buf = cv2.imencode(ext, ref[0])
        assert ok and pb.Datum.FromString(value).data == buf.tobytes(), path


def test_encoded_path_without_extension_is_an_error(tmp_path, folder):
    listfile = tmp_path / "list.txt"
    listfile.write_text("people/astronaut.jpg 0\nnoextension 1\n")
    with pytest.raises(NetkitError, match=r"list.txt:2: cannot guess the image format"):
        convert_imageset(folder[0], str(listfile), str(tmp_path / "db"), encoded=True)
    with pytest.raises(NetkitError, match="--encode_type xyz"):
        convert_imageset(folder[0], folder[1], str(tmp_path / "db"), encode_type="xyz")
    assert not os.path.exists(tmp_path / "db")


# -- order, sizes, list format -------------------------------------------------------------
def test_shuffle_is_seeded_and_keeps_every_record(folder, tmp_path, caplog):
    plain = records(convert(folder, tmp_path, "plain"))
    with caplog.at_level(logging.INFO, logger="netkit"):
        once = records(convert(folder, tmp_path, "once", shuffle=True, seed=3))
    assert "Shuffling data" in caplog.text
    again = records(convert(folder, tmp_path, "again", shuffle=True, seed=3))
    other = records(convert(folder, tmp_path, "other", shuffle=True, seed=4))
    assert once == again and once != other
    by_path = {k[9:]: v for k, v in plain}
    assert {k[9:]: v for k, v in once} == by_path
    assert [k[9:] for k, _ in once] != [k[9:] for k, _ in plain]
    # Keys number the shuffled list, skipped files included.
    numbers = [int(k[:8]) for k, _ in once]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


def test_check_size_rejects_mixed_sizes_and_leaves_nothing(folder, tmp_path):
    with pytest.raises(NetkitError, match=r"cats/chelsea.png is 3x30x45 but .*people/"
                                          r"astronaut.jpg is 3x48x40 \(--check_size\)"):
        convert(folder, tmp_path, check_size=True)
    assert os.listdir(tmp_path) == []
    db = convert(folder, tmp_path, check_size=True, resize_height=16, resize_width=16)
    assert len(records(db)) == len(READABLE)


def test_list_file_splits_at_the_last_space(tmp_path, caplog):
    listfile = tmp_path / "list.txt"
    listfile.write_bytes(b"a b/c d.jpg 7\r\nplain.png -3\nnolabel.jpg\nx.jpg 5x\n\n")
    with caplog.at_level(logging.WARNING, logger="netkit"):
        entries = read_list(str(listfile))
    assert entries == [(1, "a b/c d.jpg", 7), (2, "plain.png", -3), (3, "nolabel.jpg", 0),
                       (4, "x.jpg", 5), (5, "", 0)]
    assert "list.txt:3: label 'nolabel.jpg' is not an integer" in caplog.text
    assert "3 such lines" in caplog.text


def test_existing_target_and_leveldb_are_errors(folder, tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "keep").write_text("x")
    with pytest.raises(NetkitError, match="already exists"):
        convert(folder, tmp_path)
    assert os.listdir(tmp_path / "db") == ["keep"]
    with pytest.raises(NetkitError, match="leveldb is not supported"):
        convert(folder, tmp_path, "other", backend="leveldb")
    with pytest.raises(NetkitError, match="cannot read the list file"):
        convert_imageset(folder[0], str(tmp_path / "missing.txt"), str(tmp_path / "x"))


def test_map_size_grows_when_full(folder, tmp_path, caplog):
    normal = records(convert(folder, tmp_path, "normal", threads=1))
    with caplog.at_level(logging.INFO, logger="netkit"):
        small = records(convert(folder, tmp_path, "small", map_size=1 << 14, threads=2))
    assert "growing its map size" in caplog.text
    assert small == normal


# -- the command line ----------------------------------------------------------------------
def test_gflags_spellings_on_the_command_line(folder, tmp_path):
    db = str(tmp_path / "cli")
    result = subprocess.run(
        [sys.executable, "-m", "netkit.tools.cli", "convert_imageset", "-gray",
         "--resize_height=20", "-resize_width", "24", "--shuffle=true", "-encoded=false",
         folder[0], folder[1], db], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Processed %d files." % len(READABLE) in result.stderr
    api = convert(folder, tmp_path, "api", gray=True, resize_height=20, resize_width=24,
                  shuffle=True)
    assert records(db) == records(api)


def test_boolean_flag_values_and_help():
    runner = CliRunner()
    result = runner.invoke(command, ["--help"])
    assert result.exit_code == 0 and "seeded shuffle" in result.output
    result = runner.invoke(command, ["--gray=maybe", "a/", "b", "c"])
    assert result.exit_code == 2 and "expects true or false" in result.output


def test_missing_list_file_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "netkit.tools.cli", "convert_imageset", str(tmp_path) + "/",
         str(tmp_path / "nolist.txt"), str(tmp_path / "db")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("netkit: error: ")
    assert "nolist.txt" in result.stderr and "Traceback" not in result.stderr


# -- the database feeds a net --------------------------------------------------------------
TRAIN = """
base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 display: 0 snapshot_prefix: "%s/unused"
net_param {
  layer { name: "data" type: "Data" top: "data" top: "label"
          data_param { source: "%s" batch_size: 7 backend: LMDB }
          transform_param { scale: 0.00390625 } }
  layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
          inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
  layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
}
"""


def test_database_trains_a_net(folder, tmp_path):
    db = convert(folder, tmp_path, resize_height=12, resize_width=10)
    param = text_format.Parse(TRAIN % (tmp_path, db), pb.SolverParameter())
    solver = netkit.get_solver(param)
    try:
        net = solver.net
        net.forward()
        images = [reference(folder[0], path, height=12, width=10) for path, *_ in READABLE]
        np.testing.assert_allclose(net.blobs["data"].data,
                                   np.stack(images).astype(np.float32) / 256, rtol=1e-6)
        np.testing.assert_array_equal(net.blobs["label"].data, [f[1] for f in READABLE])
        first = float(net.blobs["loss"].data)
        solver.step(30)
        net.forward()
        assert float(net.blobs["loss"].data) < 0.5 * first
    finally:
        solver.close()
