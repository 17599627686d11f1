"""Image files read as Caffe's ReadImageToCVMat reads them (OpenCV, BGR, optional resize),
and Caffe's image list files ("path label" lines).

OpenCV is optional (`pip install opencv-python-headless`); it is imported only when an
image file is read.
"""
import os
import re

import numpy as np

from ..errors import NetkitError
from ..log import logger

# atoi's reading of a label: leading blanks, a sign, digits; anything after is ignored.
_ATOI = re.compile(r"\s*([+-]?\d+)")

_INT32 = 2 ** 31


def opencv():
    """OpenCV's cv2 module, or a one-line NetkitError saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise NetkitError("reading image files needs OpenCV, which is not installed: "
                          "pip install opencv-python-headless") from None
    return cv2


def read_image(cv2, path, height=0, width=0, is_color=True):
    """One image file -> uint8 array (C, H, W), BGR; None when OpenCV cannot read it.

    As Caffe's ReadImageToCVMat: imread in colour (3 channels) or grey (1 channel), then
    resized with linear interpolation to (height, width) when both are positive.
    """
    if not os.path.isfile(path):
        return None  # (before OpenCV, which would print a warning of its own)
    image = cv2.imread(path, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None
    if height > 0 and width > 0:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)


def read_list(listfile):
    """LISTFILE -> [(line number, path, label)].

    Each line is "relative/path label", split at its last space as Caffe does (so paths
    may hold spaces), and the label read as C's atoi reads it. A line without a space is
    all path, with atoi of the whole line as its label, also as in Caffe; such labels, and
    any that are not plain integers, are reported once.
    """
    try:
        with open(listfile, "rb") as f:
            data = f.read()
    except OSError as e:
        raise NetkitError("%s: cannot read the list file: %s"
                          % (listfile, e.strerror or e)) from None
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    entries, odd = [], []
    for number, raw in enumerate(lines, 1):
        line = os.fsdecode(raw.rstrip(b"\r"))
        path, space, text = line.rpartition(" ")
        if not space:
            path, text = line, line
        match = _ATOI.match(text)
        label = int(match.group(1)) if match else 0
        if not -_INT32 <= label < _INT32:
            raise NetkitError("%s:%d: label %d does not fit a 32-bit Datum label"
                              % (listfile, number, label))
        if match is None or match.end() != len(text):
            odd.append((number, text, label))
        entries.append((number, path, label))
    if odd:
        number, text, label = odd[0]
        logger.warning("%s:%d: label '%s' is not an integer; it reads as %d, as in Caffe "
                       "(%d such line%s; lines are 'path label')", listfile, number, text,
                       label, len(odd), "" if len(odd) == 1 else "s")
    return entries
