"""pycaffe's `caffe.io`: image loading and resizing, the Transformer that turns an image
into a net input, crops for oversampled prediction, and BlobProto / Datum conversion.

Images in this module are float arrays laid out (H, W, K), RGB, values in [0, 1] as
`load_image` returns them; a net input is (K, H, W) after `Transformer.preprocess`.
Nothing here needs scikit-image: images are read with OpenCV, and resized with OpenCV
when it is installed, else with the same bilinear interpolation in numpy.

Resizing is OpenCV's INTER_LINEAR (pixel centres aligned, border pixels repeated, no
anti-aliasing), the interpolation Caffe's convert_imageset applies to training images.
It equals scikit-image's `resize(order=1, anti_aliasing=False)`, what pycaffe's io.py
computed with the scikit-image of its day, apart from the outermost pixels when
enlarging, where pycaffe's mode='constant' blends in zeros. (Newer scikit-image blurs
before shrinking unless told not to, so pycaffe on it gives slightly softer inputs.)
"""
import numpy as np

from . import netkit_pb2 as pb
from . import netkit_pb2 as caffe_pb2  # noqa: F401  (pycaffe's caffe.io.caffe_pb2)
from .data.datum import array_to_datum as _array_to_datum
from .data.datum import datum_to_array as _datum_to_array
from .weights import array_to_blob_proto, blob_proto_to_array

# The most channels OpenCV's resize takes (CV_CN_MAX); wider images use numpy.
CV_MAX_CHANNELS = 512
# scikit-image's rgb2gray weights (ITU-R BT.709 luma), which pycaffe's grey loading used.
GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])


def _cv2():
    """OpenCV, or None when it is not installed."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


# -- proto / datum / ndarray conversion ---------------------------------------------------
def blobproto_to_array(blob, return_diff=False):
    """A BlobProto's data (or diff, with return_diff) as a float32 array of the blob's
    shape: the legacy num/channels/height/width when set, else `shape.dim`."""
    return blob_proto_to_array(blob, diff=return_diff)


def array_to_blobproto(arr, diff=None):
    """An N-d array (and optionally its diff, of the same shape) as a BlobProto."""
    return array_to_blob_proto(np.asarray(arr), None if diff is None else np.asarray(diff))


def arraylist_to_blobprotovector_str(arraylist):
    """A list of arrays as a serialized BlobProtoVector (bytes)."""
    vec = pb.BlobProtoVector()
    for arr in arraylist:
        array_to_blob_proto(np.asarray(arr), proto=vec.blobs.add())
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(data):
    """A serialized BlobProtoVector as a list of arrays."""
    vec = pb.BlobProtoVector.FromString(data)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr, label=None):
    """A (C, H, W) array as a Datum: uint8 arrays as `data` bytes, anything else as
    `float_data`. The label is set only when given."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError("Incorrect array shape.")
    datum = _array_to_datum(arr)
    if label is None:
        datum.ClearField("label")
    else:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """A Datum's pixels as a (C, H, W) array: uint8 for byte data (encoded images are
    decoded), float32 for float_data. The label stays in `datum.label`."""
    return _datum_to_array(datum)


# -- image IO -----------------------------------------------------------------------------
def load_image(filename, color=True):
    """An image file as float32 (H, W, 3) RGB, or (H, W, 1) grey, values in [0, 1].

    color=True gives 3 channels (a grey file is repeated into R, G and B; an alpha
    channel is dropped); color=False gives a grey image (colour files are converted with
    scikit-image's luma weights after compositing any alpha over white).
    """
    cv2 = _cv2()
    if cv2 is None:
        raise ImportError("netkit.io.load_image needs OpenCV: "
                          "pip install opencv-python-headless")
    # IMREAD_UNCHANGED keeps 16-bit depth and alpha and, like scikit-image, ignores the
    # EXIF orientation.
    img = cv2.imread(str(filename), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise IOError("cannot read image %s" % filename)
    img = _as_float(img)
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        else:
            img = img[:, :, 2::-1] if img.shape[2] == 3 else np.concatenate(
                [img[:, :, 2::-1], img[:, :, 3:4]], axis=2)  # BGR(A) -> RGB(A)
    if img.ndim == 3 and not color:
        if img.shape[2] == 4:
            alpha = img[:, :, 3:4]
            img = img[:, :, :3] * alpha + (1 - alpha)
        img = img @ GRAY_WEIGHTS
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img, dtype=np.float32)


def _as_float(img):
    """Integer pixels scaled to [0, 1] by their type's maximum (scikit-image's
    img_as_float), in float64 so the grey conversion rounds as scikit-image's does."""
    if np.issubdtype(img.dtype, np.integer):
        return img / float(np.iinfo(img.dtype).max)
    return img.astype(np.float64)


def resize_image(im, new_dims, interp_order=1):
    """Resize an (H, W, K) image to new_dims = (height, width), keeping K channels.

    interp_order 1 is bilinear (OpenCV's INTER_LINEAR), 0 nearest neighbour (OpenCV's
    INTER_NEAREST_EXACT); both sample at pixel centres. Returns float32.
    """
    im = np.asarray(im)
    if im.ndim != 3:
        raise ValueError("resize_image expects an (H, W, K) image, got shape %s"
                         % (im.shape,))
    if interp_order not in (0, 1):
        raise ValueError("interp_order must be 0 (nearest) or 1 (bilinear), got %r"
                         % (interp_order,))
    height, width = (int(d) for d in new_dims)
    if height < 1 or width < 1:
        raise ValueError("new_dims must be positive, got %s" % (tuple(new_dims),))
    im = im.astype(np.float32, copy=False)
    if im.shape[:2] == (height, width):
        return im.copy()
    cv2 = _cv2()
    if cv2 is not None and im.shape[2] <= CV_MAX_CHANNELS:
        flag = cv2.INTER_LINEAR if interp_order == 1 else cv2.INTER_NEAREST_EXACT
        out = cv2.resize(np.ascontiguousarray(im), (width, height), interpolation=flag)
        return out.reshape(height, width, im.shape[2])
    return _resize_numpy(im, height, width, interp_order)


def _source_positions(n_out, n_in):
    """For each output pixel, the source coordinate its centre maps to (clamped to the
    image), as OpenCV computes it: (i + 0.5) * n_in / n_out - 0.5."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    return np.clip(pos, 0, n_in - 1)


def _resize_numpy(im, height, width, interp_order):
    """resize_image without OpenCV: separable interpolation, rows then columns."""
    h, w = im.shape[:2]
    if interp_order == 0:
        rows = np.minimum(np.floor((np.arange(height) + 0.5) * (h / height)), h - 1)
        cols = np.minimum(np.floor((np.arange(width) + 0.5) * (w / width)), w - 1)
        return im[rows.astype(np.intp)][:, cols.astype(np.intp)]
    y = _source_positions(height, h)
    x = _source_positions(width, w)
    y0 = np.floor(y).astype(np.intp)
    x0 = np.floor(x).astype(np.intp)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    fy = (y - y0).astype(np.float32)[:, None, None]
    fx = (x - x0).astype(np.float32)[None, :, None]
    rows = im[y0] * (1 - fy) + im[y1] * fy
    return (rows[:, x0] * (1 - fx) + rows[:, x1] * fx).astype(np.float32)


def oversample(images, crop_dims):
    """The ten crops of each (H, W, K) image: the four corners (top-left, top-right,
    bottom-left, bottom-right) and the centre, then those five mirrored left-right.

    Returns float32 (10 * N, crop_h, crop_w, K), image by image.
    """
    shape = np.asarray(images[0]).shape
    ch, cw = (int(d) for d in crop_dims)
    if ch > shape[0] or cw > shape[1]:
        raise ValueError("crop %dx%d is larger than the %dx%d images"
                         % (ch, cw, shape[0], shape[1]))
    top = int(shape[0] / 2.0 - ch / 2.0)
    left = int(shape[1] / 2.0 - cw / 2.0)
    corners = [(0, 0), (0, shape[1] - cw), (shape[0] - ch, 0),
               (shape[0] - ch, shape[1] - cw), (top, left)]
    crops = np.empty((10 * len(images), ch, cw, shape[2]), dtype=np.float32)
    for n, im in enumerate(images):
        for k, (i, j) in enumerate(corners):
            crops[10 * n + k] = im[i:i + ch, j:j + cw]
            crops[10 * n + 5 + k] = im[i:i + ch, j:j + cw][:, ::-1]
    return crops


# -- preprocessing ------------------------------------------------------------------------
def _host(arr):
    """A numpy array from a host array or a CuPy array (`net.blobs[...].data` on GPU)."""
    if not isinstance(arr, np.ndarray) and hasattr(arr, "get"):
        return arr.get()
    return np.asarray(arr)


class Transformer:
    """Turns images into net inputs and back, per input blob (pycaffe's Transformer).

    `inputs` maps input blob names to their shapes (N, K, H, W), e.g.
    ``{'data': net.blobs['data'].data.shape}``. `preprocess` applies, in this order:
    float32 -> resize to (H, W) -> transpose -> channel swap -> raw scale -> subtract
    mean -> input scale. `deprocess` undoes them in reverse (not the resize).
    """

    def __init__(self, inputs):
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise ValueError("{} is not one of the net inputs: {}".format(in_, self.inputs))

    def preprocess(self, in_, data):
        """An (H', W', K) image -> a (K, H, W) float32 input for blob `in_`."""
        self._check_input(in_)
        caffe_in = _host(data).astype(np.float32)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        transpose = self.transpose.get(in_)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        raw_scale = self.raw_scale.get(in_)
        if raw_scale is not None:
            caffe_in = caffe_in * np.float32(raw_scale)
        mean = self.mean.get(in_)
        if mean is not None:
            caffe_in = caffe_in - mean
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            caffe_in = caffe_in * np.float32(input_scale)
        return np.ascontiguousarray(caffe_in, dtype=np.float32)

    def deprocess(self, in_, data):
        """A (K, H, W) input (or a (1, K, H, W) batch of one) -> the (H, W, K) image."""
        self._check_input(in_)
        image = _host(data).astype(np.float32)
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            image = image / np.float32(input_scale)
        mean = self.mean.get(in_)
        if mean is not None:
            image = image + mean
        raw_scale = self.raw_scale.get(in_)
        if raw_scale is not None:
            image = image / np.float32(raw_scale)
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            image = image[np.argsort(channel_swap), :, :]
        transpose = self.transpose.get(in_)
        if transpose is not None:
            image = image.transpose(np.argsort(transpose))
        return image

    def set_transpose(self, in_, order):
        """The axis order taking an image to the input layout: (2, 0, 1) turns
        (H, W, K) into (K, H, W)."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ValueError("Transpose order needs to have the same number of "
                             "dimensions as the input.")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """The channel order after transposing: (2, 1, 0) turns RGB into BGR, the order
        of the reference ImageNet models."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ValueError("Channel swap needs to have the same number of "
                             "dimensions as the input channels.")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """Multiply the image by `scale` before subtracting the mean: 255 for models
        trained on [0, 255] pixels (CaffeNet, AlexNet) fed [0, 1] images."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """The mean to subtract: one value per channel (shape (K,)), or a whole mean image
        (K, H, W) or (H, W). A mean image of another height and width is resized to the
        input's, as pycaffe does for a 256x256 ImageNet mean and a 227x227 input."""
        self._check_input(in_)
        mean = _host(mean).astype(np.float32)
        channels, in_hw = self.inputs[in_][1], self.inputs[in_][2:]
        if mean.ndim == 1:
            if mean.shape[0] != channels:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if mean.ndim == 2:
                mean = mean[np.newaxis]
            if mean.ndim != 3:
                raise ValueError("Mean shape invalid")
            if mean.shape[0] not in (1, channels):
                raise ValueError("Mean channels incompatible with input.")
            if mean.shape[1:] != in_hw:
                mean = resize_image(mean.transpose(1, 2, 0), in_hw).transpose(2, 0, 1)
        self.mean[in_] = np.ascontiguousarray(mean)

    def set_input_scale(self, in_, scale):
        """Multiply by `scale` after subtracting the mean (raw_scale acts before it)."""
        self._check_input(in_)
        self.input_scale[in_] = scale
