"""MATLAB MAT-files (level 5, what `save -v7` and `-v6` write) with numpy only.

Covers what DeepLab's MatWrite/MatRead layers exchange with MATLAB and scipy: named real
numeric arrays of any rank (double, single, integer and logical classes), read from
uncompressed files and from zlib-compressed ones (miCOMPRESSED elements, MATLAB's default
since v7), in either byte order; written uncompressed (or compressed on request), little
endian. Cells, structs, character arrays, sparse and complex arrays are skipped when
another variable is asked for and refused by name when asked for themselves.

MATLAB stores arrays column-major: the array returned for a variable of size
[d1 d2 ... dk] has shape (d1, d2, ..., dk) and A[i, j, ...] is MATLAB's A(i+1, j+1, ...);
`write_mat` takes arrays the same way, so a round trip through MATLAB keeps every index.
"""
import time
import zlib

import numpy as np

from ..errors import NetkitError
from ..protoio import replaced_atomically


class MatFileError(NetkitError):
    """A MAT-file that cannot be read (or a variable it lacks); the message names the file."""


# Data element types (the tag's first word) and their numpy types.
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 5, 6, 14, 15
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8",
              12: "i8", 13: "u8"}

# Array classes (the low byte of the array flags) of the numeric arrays supported.
_MX_CLASS_DTYPES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4",
                    13: "u4", 14: "i8", 15: "u8"}
_MX_CLASS_NAMES = {1: "cell array", 2: "struct", 3: "object", 4: "char array",
                   5: "sparse array", 16: "function handle", 17: "opaque object"}
_MX_DTYPE_CLASSES = {np.dtype(v): k for k, v in _MX_CLASS_DTYPES.items()}
_MI_DTYPE_TYPES = {np.dtype(v): k for k, v in _MI_DTYPES.items()}
_FLAG_COMPLEX, _FLAG_LOGICAL = 0x0800, 0x0200


def read_mat(path):
    """All real numeric variables of the MAT-file at `path`: {name: array}, in file order."""
    return {name: read() for name, numeric, read in _variables(path) if numeric}


def read_variable(path, name):
    """The real numeric array `name` of the MAT-file at `path`, shaped as MATLAB sizes it."""
    found = []
    for var, _, read in _variables(path):
        if var == name:
            return read()
        found.append(var)
    raise MatFileError("%s: the MAT-file has no variable %r (it has %s)"
                       % (path, name, ", ".join(map(repr, found)) or "none"))


def write_mat(path, variables, compress=False):
    """Write {name: array} to `path` as a level-5 MAT-file, atomically. Each array keeps its
    dtype (float64, float32, integer, or bool as logical) and its shape as MATLAB's size;
    0-d arrays become 1x1 and 1-d arrays rows (1xn), as scipy.io.savemat writes them."""
    elements = [_header()]
    for name, array in variables.items():
        element = _matrix_element(path, name, np.asarray(array))
        if compress:
            packed = zlib.compress(element)
            element = _tag(_MI_COMPRESSED, len(packed)) + packed
        elements.append(element)
    with replaced_atomically(path) as tmp:
        with open(tmp, "wb") as f:
            for element in elements:
                f.write(element)


def _header():
    text = "MATLAB 5.0 MAT-file, Platform: netkit, Created on: %s" % time.strftime(
        "%a %b %d %H:%M:%S %Y")
    # 116 bytes of text, 8 of subsystem offset (none), version 0x0100, 'IM' = little endian.
    return text.encode("ascii").ljust(116, b" ") + b"\0" * 8 + b"\x00\x01IM"


def _tag(mi_type, nbytes):
    return np.array([mi_type, nbytes], "<u4").tobytes()


def _element(mi_type, data):
    """One data element: the small format (type and size in one word) for up to 4 bytes,
    else tag + data padded to a multiple of 8 bytes, as MATLAB writes them."""
    if 0 < len(data) <= 4:
        return np.array([len(data) << 16 | mi_type], "<u4").tobytes() + data.ljust(4, b"\0")
    return _tag(mi_type, len(data)) + data + b"\0" * (-len(data) % 8)


def _matrix_element(path, name, array):
    if not name.isidentifier() or not name.isascii() or len(name) > 63:
        raise MatFileError("%s: %r is not a MATLAB variable name (a letter, then letters, "
                           "digits or _, at most 63)" % (path, name))
    flags = 0
    if array.dtype == np.bool_:
        array, flags = array.astype(np.uint8), _FLAG_LOGICAL
    mx_class = _MX_DTYPE_CLASSES.get(array.dtype.newbyteorder("="))
    if mx_class is None:
        raise MatFileError("%s: variable %r has dtype %s; MAT-files hold real float, integer "
                           "or bool arrays" % (path, name, array.dtype))
    shape = array.shape if array.ndim >= 2 else (1,) * (2 - array.ndim) + array.shape
    if max(shape) >= 2 ** 31:
        raise MatFileError("%s: variable %r of shape %s is too large for a level-5 MAT-file"
                           % (path, name, shape))
    data_dtype = array.dtype.newbyteorder("<")
    body = b"".join([
        _element(_MI_UINT32, np.array([flags | mx_class, 0], "<u4").tobytes()),
        _element(_MI_INT32, np.array(shape, "<i4").tobytes()),
        _element(_MI_INT8, name.encode("ascii")),
        _element(_MI_DTYPE_TYPES[array.dtype.newbyteorder("=")],
                 np.asarray(array, data_dtype).tobytes(order="F")),
    ])
    if len(body) >= 2 ** 32:
        raise MatFileError("%s: variable %r of shape %s is too large for a level-5 MAT-file"
                           % (path, name, shape))
    return _tag(_MI_MATRIX, len(body)) + body


def _variables(path):
    """(name, numeric, read) for each variable of the file, in order: `read()` returns the
    array, or raises for a variable that is not a real numeric array (numeric False)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise MatFileError("%s: cannot read the MAT-file: %s"
                           % (path, e.strerror or e)) from None
    order = _check_header(path, data)
    position = 128
    while position < len(data):
        if len(data) - position < 8:
            raise _truncated(path, position, 8, len(data) - position)
        mi_type, nbytes = np.frombuffer(data, order + "u4", 2, position)
        start, position = position + 8, position + 8 + int(nbytes)
        if position > len(data):
            raise _truncated(path, start - 8, int(nbytes) + 8, len(data) - start + 8)
        element = data[start:position]
        if mi_type == _MI_COMPRESSED:
            element = _inflate(path, start - 8, element)
            if len(element) < 8:
                raise _truncated(path, start - 8, 8, len(element))
            mi_type, nbytes = np.frombuffer(element, order + "u4", 2)
            if 8 + int(nbytes) > len(element):
                raise _truncated(path, start - 8, int(nbytes) + 8, len(element))
            element = element[8:8 + int(nbytes)]
        else:
            position += -int(nbytes) % 8
        if mi_type == _MI_MATRIX:
            yield _matrix(path, order, element, start - 8)


def _check_header(path, data):
    """The byte order ('<' or '>') of a level-5 MAT-file, after checking its header."""
    if data[:10] == b"MATLAB 7.3" or data[512:520] == b"\x89HDF\r\n\x1a\n":
        raise MatFileError("%s: a MATLAB v7.3 (HDF5) MAT-file; read it with h5py, or save "
                           "it with `save -v7` for this reader" % path)
    if len(data) < 128:
        raise MatFileError("%s: truncated MAT-file: %d bytes, shorter than the 128-byte "
                           "header" % (path, len(data)))
    order = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if order is None or np.frombuffer(data, order + "u2", 1, 124)[0] != 0x0100:
        raise MatFileError("%s: not a level-5 MAT-file (MATLAB v4 files are not supported)"
                           % path)
    return order


def _truncated(path, offset, needed, available):
    return MatFileError("%s: truncated MAT-file: the element at byte %d needs %d bytes, only "
                        "%d remain" % (path, offset, needed, available))


def _inflate(path, offset, packed):
    """The data of a miCOMPRESSED element; a cut or damaged stream is an error."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(packed)
    except zlib.error as e:
        raise MatFileError("%s: corrupt compressed element at byte %d: %s"
                           % (path, offset, e)) from None
    if not inflater.eof:
        raise MatFileError("%s: truncated MAT-file: the compressed element at byte %d ends "
                           "before its zlib stream does" % (path, offset))
    return out


def _subelements(path, order, data, offset, count):
    """The first `count` (type, bytes) subelements of a matrix element's data."""
    out, position = [], 0
    for _ in range(count):
        if len(data) - position < 8:
            raise _truncated(path, offset, position + 8, len(data))
        word, nbytes = (int(x) for x in np.frombuffer(data, order + "u4", 2, position))
        if word >> 16:  # small data element: size in the upper half, data in the next word
            mi_type, nbytes, start = word & 0xFFFF, word >> 16, position + 4
            position += 8
        else:
            mi_type, start = word, position + 8
            position = start + nbytes + (-nbytes % 8)
        if start + nbytes > len(data):
            raise _truncated(path, offset, start + nbytes, len(data))
        out.append((mi_type, data[start:start + nbytes]))
    return out


def _matrix(path, order, data, offset):
    """(name, numeric, read) of one miMATRIX element (see _variables)."""
    (_, flags), (_, dims), (_, name) = _subelements(path, order, data, offset, 3)
    flags = int(np.frombuffer(flags, order + "u4", 1)[0])
    shape = tuple(int(d) for d in np.frombuffer(dims, order + "i4"))
    name = name.decode("ascii", "replace")
    mx_class = flags & 0xFF

    def read():
        kind = _MX_CLASS_NAMES.get(mx_class)
        if kind is None and mx_class not in _MX_CLASS_DTYPES:
            kind = "array of class %d" % mx_class
        if kind is None and flags & _FLAG_COMPLEX:
            kind = "complex array"
        if kind is not None:
            raise MatFileError("%s: variable %r is a %s; only real numeric arrays are "
                               "supported" % (path, name, kind))
        mi_type, raw = _subelements(path, order, data, offset, 4)[3]
        if mi_type not in _MI_DTYPES:
            raise MatFileError("%s: variable %r stores its values as unknown type %d"
                               % (path, name, mi_type))
        stored = np.dtype(order + _MI_DTYPES[mi_type])
        count = int(np.prod(shape))
        if len(raw) != count * stored.itemsize:
            raise MatFileError("%s: variable %r of size %s holds %d bytes of %s, not %d values"
                               % (path, name, "x".join(map(str, shape)), len(raw),
                                  stored.name, count))
        values = np.frombuffer(raw, stored).astype(_MX_CLASS_DTYPES[mx_class])
        if flags & _FLAG_LOGICAL:
            values = values.astype(np.bool_)
        return values.reshape(shape, order="F")

    numeric = mx_class in _MX_CLASS_DTYPES and not flags & _FLAG_COMPLEX
    return name, numeric, read
