"""netkit's data tools, data layers and upgraders against BVLC Caffe's own
(tests/caffe_reference/make_tools.py ran Caffe's convert_imageset, compute_image_mean,
convert_mnist_data, upgrade_net_proto_text/_binary, upgrade_solver_proto_text and pycaffe on
small PNG and JPEG images, IDX files and old-format nets it made):

- netkit's Data and ImageData layers on Caffe's LMDBs and images give pycaffe's tops;
- netkit's convert_imageset on the same images and flags writes Caffe's records (keys in
  order, Datum fields, pixels); compute_image_mean gives Caffe's mean of Caffe's LMDBs;
  convert_mnist_data writes Caffe's records of the same IDX files;
- netkit's upgraders give the NetParameter / SolverParameter Caffe's upgraders write.

JPEG: where netkit's OpenCV decodes (or encodes) a JPEG that Caffe's OpenCV 4.5.1 with
libjpeg-turbo 2.0.6 decoded (or encoded), the pixels depend on the libjpeg version, not on
netkit. Today they agree to the bit; the bounded tolerances below (JPEG_DECODE_LEVELS,
JPEG_ENCODE_LEVELS) only let another libjpeg round differently. Everything else (PNG, raw
records, file bytes stored as they are, resizing, keys, fields, transforms, means) is exact.
"""
import gzip
import json
import os
import shutil

import lmdb
import numpy as np
import pytest
from click.testing import CliRunner

cv2 = pytest.importorskip("cv2")

from netkit import netkit_pb2 as pb  # noqa: E402
from netkit.layer import TEST  # noqa: E402
from netkit.net import Net  # noqa: E402
from netkit.protoio import read_binary, read_text  # noqa: E402
from netkit.tools.cli import cli  # noqa: E402
from netkit.upgrade import upgrade_net, upgrade_solver  # noqa: E402

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "caffe_reference",
                         "tools")
with open(os.path.join(REFERENCE, "manifest.json")) as _f:
    MANIFEST = json.load(_f)
IMAGES = MANIFEST["images"]
UPGRADE = MANIFEST["upgrade"]

# Grey levels by which another libjpeg may decode a JPEG differently (IDCT and chroma
# upsampling rounding) ...
JPEG_DECODE_LEVELS = 1
# ... and by which pixels of an image re-encoded as JPEG may differ after decoding
# (quantisation of a DCT coefficient rounding the other way moves several pixels).
JPEG_ENCODE_LEVELS = 4


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A copy of Caffe's files (the nets name their LMDBs, list and mean by relative path)."""
    work = tmp_path_factory.mktemp("caffe_tools") / "work"
    shutil.copytree(REFERENCE, work)
    return work


@pytest.fixture
def workdir(reference, monkeypatch):
    monkeypatch.chdir(reference)
    return reference


def netkit(*args):
    """Run a netkit command in this process, as `netkit ARGS` would; fails on an error."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output


def records(db):
    """[(key, value)] of an LMDB in key order."""
    env = lmdb.open(str(db), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    finally:
        env.close()


def is_jpeg(data):
    return data[:2] == b"\xff\xd8"


def is_jpeg_file(path):
    return os.path.splitext(path)[1].lower() in (".jpg", ".jpeg")


def decode(data):
    """Encoded Datum bytes -> (C, H, W) uint8 with the file's own channels."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)


def assert_pixels(got, want, levels, what):
    """Equal pixels, or within `levels` grey levels where a JPEG codec is involved."""
    assert got.shape == want.shape, what
    if levels == 0:
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=0,
                                   atol=levels, err_msg=what)


# -- Data and ImageData layers ---------------------------------------------------------------
def item_jpeg_levels(layer):
    """For each record or list line the layer reads: by how many grey levels a JPEG decoder
    netkit runs on it may differ from Caffe's (0: no JPEG decoded by netkit)."""
    if layer.type == "Data":
        out = []
        for _, value in records(layer.data_param.source):
            datum = pb.Datum.FromString(value)
            out.append(JPEG_DECODE_LEVELS if datum.encoded and is_jpeg(datum.data) else 0)
        return out
    with open(layer.image_data_param.source) as f:
        paths = [line.rstrip("\n").rpartition(" ")[0] for line in f]
    return [JPEG_DECODE_LEVELS if is_jpeg_file(path) else 0 for path in paths]


@pytest.mark.parametrize("case", MANIFEST["data_nets"])
def test_data_layer_tops_are_pycaffes(workdir, backend, case):
    """TEST-phase Data / ImageData nets: centred crops of records of one or several sizes,
    mean_file and mean_value, scale, force_color / force_gray, is_color and new_height /
    new_width, over FORWARDS batches that wrap around the end of the data."""
    path = "net_%s.prototxt" % case
    layer = read_text(path, pb.NetParameter()).layer[0]
    batch = (layer.data_param if layer.type == "Data" else layer.image_data_param).batch_size
    levels = item_jpeg_levels(layer)
    scale = abs(layer.transform_param.scale)
    want = np.load("tops_%s.npz" % case)
    net = Net(path, TEST, backend=backend)
    try:
        for i in range(MANIFEST["forwards"]):
            net.forward()
            data = backend.asnumpy(net.blobs["data"].data)
            labels = backend.asnumpy(net.blobs["label"].data)
            np.testing.assert_array_equal(labels, want["label_%d" % i])
            assert data.dtype == np.float32 and data.shape == want["data_%d" % i].shape
            for j in range(batch):
                item = (i * batch + j) % len(levels)
                np.testing.assert_allclose(data[j], want["data_%d" % i][j], rtol=0,
                                           atol=levels[item] * scale,
                                           err_msg="batch %d item %d" % (i, j))
    finally:
        net.close()


def test_data_cases_cover_exact_and_mixed_sizes():
    """The fixture has what the test above relies on: exact items in every case, and
    Data and ImageData batches that mix image sizes (which only a crop makes one)."""
    sizes = {tuple(image["size"]) for image in IMAGES}
    assert len(sizes) >= 4
    assert "data_mean_value_mixed_sizes" in MANIFEST["data_nets"]
    assert "image_data_color_crop" in MANIFEST["data_nets"]
    assert {is_jpeg_file(image["path"]) for image in IMAGES} == {True, False}
    assert {image["grey"] for image in IMAGES} == {True, False}


# -- convert_imageset ------------------------------------------------------------------------
def record_levels(path, caffes):
    """By how many grey levels netkit's decoded pixels of a Caffe record may differ: 0, or
    the JPEG allowance when a JPEG codec made or reads them."""
    if caffes.encoded and is_jpeg(caffes.data):
        return JPEG_ENCODE_LEVELS
    return JPEG_DECODE_LEVELS if is_jpeg_file(path) else 0


@pytest.mark.parametrize("case", sorted(MANIFEST["convert_imageset"]))
def test_convert_imageset_writes_caffes_records(workdir, tmp_path, case):
    """The same keys in the same order, the same Datum fields (channels, height, width,
    label, encoded: their values and which are set), the file's own bytes where Caffe kept
    them, and the same pixels (raw, or decoded where Caffe re-encoded the image)."""
    db = tmp_path / "db"
    netkit("convert_imageset", *MANIFEST["convert_imageset"][case], "images/", "list.txt", db)
    ours, caffes = records(db), records("lmdb_" + case)
    assert [key for key, _ in ours] == [key for key, _ in caffes]
    assert len(caffes) == len(IMAGES)
    for (key, value), (_, want) in zip(ours, caffes):
        path = key[len("00000000_"):].decode()
        got, ref = pb.Datum.FromString(value), pb.Datum.FromString(want)
        assert [(f.name, v) for f, v in got.ListFields() if f.name != "data"] == \
            [(f.name, v) for f, v in ref.ListFields() if f.name != "data"], key
        levels = record_levels(path, ref)
        if not ref.encoded:
            if levels == 0:
                assert value == want, key  # the very bytes
            shape = (ref.channels, ref.height, ref.width)
            assert_pixels(np.frombuffer(got.data, np.uint8).reshape(shape),
                          np.frombuffer(ref.data, np.uint8).reshape(shape), levels, key)
            continue
        with open(os.path.join("images", path), "rb") as f:
            original = f.read()
        if ref.data == original:
            assert got.data == original, "%s: Caffe stored the file's own bytes" % key
        else:
            assert got.data != original, "%s: Caffe re-encoded the image" % key
            assert is_jpeg(got.data) == is_jpeg(ref.data), key
            assert_pixels(decode(got.data), decode(ref.data), levels, key)


def test_convert_imageset_cases_cover_both_kinds_of_encoded_record(workdir):
    """Among Caffe's encoded records are files stored as they are and images re-encoded
    (resized, or in another format), PNG and JPEG."""
    kept, made = set(), set()
    for case in MANIFEST["convert_imageset"]:
        for key, value in records("lmdb_" + case):
            datum = pb.Datum.FromString(value)
            if datum.encoded:
                with open(os.path.join("images", key[9:].decode()), "rb") as f:
                    (kept if f.read() == datum.data else made).add(is_jpeg(datum.data))
    assert kept == {True, False} and made == {True, False}


# -- compute_image_mean ----------------------------------------------------------------------
def logged_means(lines):
    prefix = "mean_value channel ["
    return [float(line.split("]: ")[1]) for line in lines if prefix in line]


@pytest.mark.parametrize("mean", sorted(MANIFEST["compute_image_mean"]))
def test_compute_image_mean_gives_caffes_mean(workdir, tmp_path, mean, log_lines):
    """The BlobProto Caffe writes (legacy num/channels/height/width, float data) and the
    per-channel means it logs for mean_value; of Caffe's raw and encoded LMDBs."""
    db = MANIFEST["compute_image_mean"][mean]
    out = tmp_path / "mean.binaryproto"
    netkit("compute_image_mean", db, out)
    ours, caffes = read_binary(str(out), pb.BlobProto()), read_binary(mean, pb.BlobProto())
    assert [(f.name, v) for f, v in ours.ListFields() if f.name != "data"] == \
        [(f.name, v) for f, v in caffes.ListFields() if f.name != "data"]
    # Caffe sums in float, exact below 2**24, and divides once: the same floats as netkit.
    # Records of an encoded LMDB that hold JPEG bytes are decoded by netkit's libjpeg.
    jpeg = any(pb.Datum.FromString(v).encoded and is_jpeg(pb.Datum.FromString(v).data)
               for _, v in records(db))
    got, want = np.array(ours.data, np.float32), np.array(caffes.data, np.float32)
    if jpeg:
        np.testing.assert_allclose(got, want, rtol=0, atol=JPEG_DECODE_LEVELS)
    else:
        np.testing.assert_array_equal(got, want)
    with open("compute_image_mean_%s.log" % db[len("lmdb_"):]) as f:
        caffe_logged = logged_means(f)
    assert len(caffe_logged) == caffes.channels
    np.testing.assert_allclose(logged_means(log_lines), caffe_logged, rtol=1e-5,
                               atol=JPEG_DECODE_LEVELS if jpeg else 0)


# -- convert_mnist_data ----------------------------------------------------------------------
def test_convert_mnist_data_writes_caffes_records(workdir, tmp_path):
    """The IDX files Caffe's convert_mnist_data read, served as the four official .gz files
    of a mirror: both LMDBs hold Caffe's records, byte for byte ("%08d" keys, Datums of
    channels 1, height, width, data and label)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for split in ("train", "t10k"):
        for kind, idx in (("images", "idx3"), ("labels", "idx1")):
            with open(os.path.join("mnist", "%s-%s-ubyte" % (kind, idx)), "rb") as f:
                raw = f.read()
            (mirror / ("%s-%s-%s-ubyte.gz" % (split, kind, idx))).write_bytes(
                gzip.compress(raw))
    out = tmp_path / "out"
    netkit("convert_mnist_data", out, "--url", mirror.as_uri() + "/")
    caffes = records(os.path.join("mnist", "lmdb"))
    assert len(caffes) == MANIFEST["mnist_items"]
    for split in ("train", "test"):
        assert records(out / ("mnist_%s_lmdb" % split)) == caffes


# -- upgraders -------------------------------------------------------------------------------
def already_current(name):
    with open(os.path.join("upgrade", name + ".log")) as f:
        return "File already in latest proto format" in f.read()


@pytest.mark.parametrize("name", UPGRADE["net_text"])
def test_upgrade_net_proto_text_gives_caffes_net(workdir, tmp_path, name, log_lines):
    """V0 nets (padding layers, every V0 field and layer type), V1 nets (enum types,
    blobs_lr / weight_decay, param names and share modes, transform fields in the data
    layers' own messages, every V1 layer type with its parameters), net-level inputs
    (input_dim, input_shape), BatchNorm param specs, and a net already current."""
    source = os.path.join("upgrade", name + ".prototxt")
    out = tmp_path / "out.prototxt"
    netkit("upgrade_net_proto_text", source, out)
    caffes = read_text(os.path.join("upgrade", name + ".upgraded.prototxt"), pb.NetParameter())
    assert read_text(str(out), pb.NetParameter()) == caffes
    assert upgrade_net(read_text(source, pb.NetParameter())) == caffes
    assert ("File already in latest proto format: %s" % source in log_lines) == \
        already_current(name)


@pytest.mark.parametrize("name", UPGRADE["net_binary"])
def test_upgrade_net_proto_binary_gives_caffes_file(workdir, tmp_path, name):
    """V1 and V0 .caffemodel files (written with Caffe's own caffe_pb2) with their weights:
    netkit writes the very bytes Caffe writes."""
    source = os.path.join("upgrade", name + ".caffemodel")
    out = tmp_path / "out.caffemodel"
    netkit("upgrade_net_proto_binary", source, out)
    caffe_file = os.path.join("upgrade", name + ".upgraded.caffemodel")
    caffes = read_binary(caffe_file, pb.NetParameter())
    assert read_binary(str(out), pb.NetParameter()) == caffes
    assert sum(len(layer.blobs) for layer in caffes.layer) >= 4
    with open(caffe_file, "rb") as f:
        assert out.read_bytes() == f.read()


@pytest.mark.parametrize("name", UPGRADE["solver_text"])
def test_upgrade_solver_proto_text_gives_caffes_solver(workdir, tmp_path, name, log_lines):
    """Every solver_type enum value, a solver with an inline V1 net (which the solver tool
    leaves as it is), and a solver already current."""
    source = os.path.join("upgrade", name + ".prototxt")
    out = tmp_path / "out.prototxt"
    netkit("upgrade_solver_proto_text", source, out)
    caffes = read_text(os.path.join("upgrade", name + ".upgraded.prototxt"),
                       pb.SolverParameter())
    assert read_text(str(out), pb.SolverParameter()) == caffes
    assert upgrade_solver(read_text(source, pb.SolverParameter())) == caffes
    assert ("File already in latest proto format: %s" % source in log_lines) == \
        already_current(name)


def test_upgrade_cases_cover_every_solver_type_and_old_format():
    types = set()
    for name in UPGRADE["solver_text"]:
        param = read_text(os.path.join(REFERENCE, "upgrade", name + ".prototxt"),
                          pb.SolverParameter())
        if param.HasField("solver_type"):
            types.add(param.solver_type)
    assert types == set(pb.SolverParameter.SolverType.values())
    kinds = set()
    for name in UPGRADE["net_text"]:
        param = read_text(os.path.join(REFERENCE, "upgrade", name + ".prototxt"),
                          pb.NetParameter())
        kinds.add("v0" if any(v1.HasField("layer") for v1 in param.layers) else
                  "v1" if param.layers else "input" if param.input else "v2")
    assert kinds == {"v0", "v1", "input", "v2"}
