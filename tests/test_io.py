"""netkit.io (pycaffe's caffe.io): image loading and resizing against scikit-image, which
pycaffe's io.py used; crops, the Transformer and proto conversion against closed forms."""
import numpy as np
import pytest

from netkit import io
from netkit import netkit_pb2 as pb

cv2 = pytest.importorskip("cv2", reason="load_image reads files with OpenCV")
skimage = pytest.importorskip("skimage", reason="the reference for load_image and resize")
import skimage.data  # noqa: E402
import skimage.io  # noqa: E402
from skimage.transform import resize as sk_resize  # noqa: E402

# Our bilinear resize vs scikit-image's resize(order=1, anti_aliasing=False), measured on
# photos and random images: at most 3.6e-7 apart (float32 rounding).
RESIZE_ATOL = 1e-6


def photos():
    return [skimage.data.astronaut() / 255.0, skimage.data.coffee() / 255.0]


@pytest.fixture(params=["opencv", "numpy"])
def resize_path(request, monkeypatch):
    """Run a test with OpenCV's resize and with the numpy fallback."""
    if request.param == "numpy":
        monkeypatch.setattr(io, "_cv2", lambda: None)
    return request.param


# -- resize_image ---------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [(227, 227), (100, 150), (31, 29), (5, 3)])
def test_resize_down_matches_skimage_bilinear(resize_path, dims):
    for im in photos():
        ours = io.resize_image(im.astype(np.float32), dims)
        theirs = sk_resize(im, dims, order=1, mode="constant", anti_aliasing=False)
        assert ours.dtype == np.float32 and ours.shape == dims + (3,)
        np.testing.assert_allclose(ours, theirs, atol=RESIZE_ATOL, rtol=0)


@pytest.mark.parametrize("shape,dims", [((13, 17, 3), (40, 61)), ((8, 9, 5), (31, 29)),
                                        ((6, 7, 1), (6, 20))])
def test_resize_up_matches_skimage_bilinear(resize_path, shape, dims):
    im = np.random.RandomState(0).rand(*shape).astype(np.float32)
    ours = io.resize_image(im, dims)
    assert ours.shape == dims + (shape[2],)
    # Border pixels are repeated (OpenCV); scikit-image's mode='edge' does the same ...
    np.testing.assert_allclose(ours, sk_resize(im, dims, order=1, mode="edge",
                                               anti_aliasing=False), atol=RESIZE_ATOL)
    # ... and pycaffe's mode='constant' differs only within half a source pixel of the
    # border, where it blends in zeros.
    theirs = sk_resize(im, dims, order=1, mode="constant", anti_aliasing=False)
    by, bx = (int(np.ceil(d / (2.0 * s))) for d, s in zip(dims, shape[:2]))
    np.testing.assert_allclose(ours[by:-by, bx:-bx], theirs[by:-by, bx:-bx], atol=RESIZE_ATOL)


def test_resize_is_close_to_antialiased_skimage_on_photos():
    """scikit-image >= 0.19 blurs before shrinking when anti_aliasing is not given (as in
    pycaffe's call); netkit does not (OpenCV, and Caffe's convert_imageset, do not)."""
    im = skimage.data.astronaut() / 255.0
    diff = np.abs(io.resize_image(im, (227, 227)) - sk_resize(im, (227, 227), order=1))
    assert diff.mean() < 0.01


def test_resize_nearest_matches_skimage(resize_path):
    im = np.random.RandomState(1).rand(23, 19, 3).astype(np.float32)
    for dims in [(7, 11), (50, 40), (23, 38)]:
        theirs = sk_resize(im, dims, order=0, mode="constant", anti_aliasing=False)
        np.testing.assert_array_equal(io.resize_image(im, dims, interp_order=0), theirs)


def test_resize_paths_agree_beyond_opencv_channel_limit():
    im = np.random.RandomState(2).rand(6, 5, 600).astype(np.float32)
    out = io.resize_image(im, (9, 4))  # too many channels for OpenCV: numpy
    np.testing.assert_allclose(out, sk_resize(im, (9, 4), order=1, mode="edge",
                                              anti_aliasing=False), atol=RESIZE_ATOL)


def test_resize_constant_same_size_and_errors(resize_path):
    im = np.full((10, 12, 3), 0.25, np.float32)
    np.testing.assert_array_equal(io.resize_image(im, (7, 30)), np.full((7, 30, 3), 0.25))
    same = io.resize_image(im, (10, 12))
    assert same is not im and np.array_equal(same, im)
    with pytest.raises(ValueError, match="interp_order"):
        io.resize_image(im, (5, 5), interp_order=3)
    with pytest.raises(ValueError, match=r"\(H, W, K\)"):
        io.resize_image(im[:, :, 0], (5, 5))


# -- load_image -----------------------------------------------------------------------------
def sk_load(path, color):
    """pycaffe's load_image, with today's scikit-image spelling (as_gray)."""
    img = skimage.img_as_float(skimage.io.imread(path, as_gray=not color)).astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_load_image_color_and_gray_match_skimage(tmp_path, ext):
    path = str(tmp_path / ("astronaut." + ext))
    cv2.imwrite(path, skimage.data.astronaut()[:, :, ::-1])  # OpenCV writes BGR
    for color in (True, False):
        ours = io.load_image(path, color=color)
        assert ours.dtype == np.float32 and ours.shape == (512, 512, 3 if color else 1)
        np.testing.assert_allclose(ours, sk_load(path, color), atol=1e-6, rtol=0)
    rgb = io.load_image(path)
    assert rgb[..., 0].mean() > rgb[..., 2].mean()  # the astronaut's suit is red, not blue


def test_load_image_grey_rgba_and_16bit_files(tmp_path):
    rs = np.random.RandomState(3)
    grey = str(tmp_path / "grey.png")
    cv2.imwrite(grey, skimage.data.camera())
    color = io.load_image(grey)
    assert color.shape == (512, 512, 3)
    np.testing.assert_array_equal(color[..., 0], color[..., 2])
    np.testing.assert_allclose(color, sk_load(grey, True), atol=1e-7)
    np.testing.assert_allclose(io.load_image(grey, color=False), sk_load(grey, False), atol=1e-7)

    rgba = str(tmp_path / "rgba.png")
    cv2.imwrite(rgba, rs.randint(0, 256, (20, 30, 4)).astype(np.uint8))
    for c in (True, False):
        np.testing.assert_allclose(io.load_image(rgba, color=c), sk_load(rgba, c), atol=1e-6)

    # 16-bit pixels keep their depth (scikit-image's reader cuts colour ones to 8 bits).
    deep = str(tmp_path / "deep.png")
    bgr = rs.randint(0, 65536, (9, 7, 3)).astype(np.uint16)
    cv2.imwrite(deep, bgr)
    np.testing.assert_allclose(io.load_image(deep), bgr[:, :, ::-1] / 65535.0, atol=1e-7)


def test_load_image_missing_file(tmp_path):
    with pytest.raises(IOError, match="cannot read image"):
        io.load_image(str(tmp_path / "nope.png"))


# -- oversample -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,crop", [((9, 11, 2), (4, 6)), ((8, 8, 3), (5, 5))])
def test_oversample_corners_center_and_mirrors(shape, crop):
    rs = np.random.RandomState(4)
    images = [rs.rand(*shape).astype(np.float32) for _ in range(2)]
    crops = io.oversample(images, crop)
    h, w = shape[:2]
    ch, cw = crop
    assert crops.shape == (20, ch, cw, shape[2]) and crops.dtype == np.float32
    ct, cl = int(h / 2.0 - ch / 2.0), int(w / 2.0 - cw / 2.0)
    for n, im in enumerate(images):
        expected = [im[:ch, :cw], im[:ch, w - cw:], im[h - ch:, :cw], im[h - ch:, w - cw:],
                    im[ct:ct + ch, cl:cl + cw]]
        expected += [e[:, ::-1] for e in expected]
        np.testing.assert_array_equal(crops[10 * n:10 * n + 10], np.stack(expected))
    with pytest.raises(ValueError, match="larger"):
        io.oversample(images, (h + 1, 2))


# -- Transformer ------------------------------------------------------------------------------
def imagenet_transformer(shape=(1, 3, 20, 24)):
    t = io.Transformer({"data": shape})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([104.0, 117.0, 123.0]))
    t.set_input_scale("data", 0.017)
    return t


def test_preprocess_is_the_documented_pipeline():
    im = np.random.RandomState(5).rand(20, 24, 3)
    out = imagenet_transformer().preprocess("data", im)
    mean = np.array([104.0, 117.0, 123.0]).reshape(3, 1, 1)
    expected = ((im[:, :, ::-1].transpose(2, 0, 1) * 255) - mean) * 0.017
    assert out.dtype == np.float32 and out.shape == (3, 20, 24)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_preprocess_resizes_to_the_input_then_deprocess_inverts():
    t = imagenet_transformer()
    im = skimage.data.coffee() / 255.0
    out = t.preprocess("data", im)
    small = sk_resize(im, (20, 24), order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(t.deprocess("data", out), small, atol=1e-5)
    # A batch of one, as net.blobs['data'].data holds it, deprocesses too.
    np.testing.assert_allclose(t.deprocess("data", out[np.newaxis]), small, atol=1e-5)


def test_set_mean_image_is_resized_to_the_input():
    """A mean image of another size (ImageNet's 256x256 for a 227x227 input) is resized
    bilinearly: a ramp along the rows stays a ramp at the mapped row centres."""
    t = io.Transformer({"data": (1, 2, 5, 4)})
    ramp = np.arange(10, dtype=np.float32)[:, None] * 3.0 + 1.0
    mean = np.stack([np.broadcast_to(ramp, (10, 8)), np.full((10, 8), 7.0)])
    t.set_mean("data", mean)
    rows = (np.arange(5) + 0.5) * 2.0 - 0.5
    np.testing.assert_allclose(t.mean["data"][0], np.broadcast_to(rows[:, None] * 3 + 1, (5, 4)),
                               rtol=1e-6)
    np.testing.assert_allclose(t.mean["data"][1], 7.0)
    im = np.zeros((5, 4, 2))
    t.set_transpose("data", (2, 0, 1))
    np.testing.assert_allclose(t.preprocess("data", im), -t.mean["data"], rtol=1e-6)
    # A (H, W) mean applies to every channel.
    t.set_mean("data", np.full((5, 4), 2.0))
    np.testing.assert_allclose(t.preprocess("data", im), -2.0)


def test_transformer_errors_name_the_problem():
    t = io.Transformer({"data": (1, 3, 4, 4)})
    with pytest.raises(Exception, match="label is not one of the net inputs"):
        t.preprocess("label", np.zeros((4, 4, 3)))
    with pytest.raises(Exception, match="Transpose order needs"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(Exception, match="Channel swap needs"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="Mean channels incompatible"):
        t.set_mean("data", np.zeros(4))
    with pytest.raises(ValueError, match="Mean channels incompatible"):
        t.set_mean("data", np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="Mean shape invalid"):
        t.set_mean("data", np.zeros((1, 3, 4, 4)))


# -- blobs and datums -------------------------------------------------------------------------
def test_blobproto_round_trip_with_diff_and_legacy_shape():
    rs = np.random.RandomState(6)
    arr, diff = rs.randn(2, 3, 4).astype(np.float32), rs.randn(2, 3, 4).astype(np.float32)
    blob = io.array_to_blobproto(arr, diff)
    assert list(blob.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(io.blobproto_to_array(blob), arr)
    np.testing.assert_array_equal(io.blobproto_to_array(blob, return_diff=True), diff)
    legacy = pb.BlobProto(num=1, channels=2, height=1, width=3, data=[1, 2, 3, 4, 5, 6])
    assert io.blobproto_to_array(legacy).shape == (1, 2, 1, 3)


def test_blobprotovector_string_round_trip():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((1, 1, 2, 2), np.float32)]
    data = io.arraylist_to_blobprotovector_str(arrays)
    assert isinstance(data, bytes)
    assert len(pb.BlobProtoVector.FromString(data).blobs) == 2
    back = io.blobprotovector_str_to_arraylist(data)
    for a, b in zip(arrays, back):
        np.testing.assert_array_equal(a, b)


def test_datum_round_trips():
    pixels = np.random.RandomState(7).randint(0, 256, (3, 4, 5)).astype(np.uint8)
    datum = io.array_to_datum(pixels, label=7)
    assert datum.data == pixels.tobytes() and not datum.float_data and datum.label == 7
    back = io.datum_to_array(pb.Datum.FromString(datum.SerializeToString()))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, pixels)

    values = pixels.astype(np.float32) / 7
    datum = io.array_to_datum(values)
    assert not datum.data and not datum.HasField("label")
    np.testing.assert_array_equal(io.datum_to_array(datum), values)
    with pytest.raises(ValueError, match="Incorrect array shape"):
        io.array_to_datum(np.zeros((2, 2)))
