"""netkit convert_imageset: image files and their labels -> an LMDB of Datum records.

Caffe's tools/convert_imageset, flag for flag: the same list file format, the same keys
("%08d_" + path, numbered by list position), the same Datum bytes (BGR, channels-height-
width, uint8, as OpenCV's imread gives them), the same rule for storing encoded images.
Images are decoded by a thread pool (OpenCV releases the GIL) and written in list order.
"""
import collections
import os
import random
import time

import click

from ..data import shape_text
from ..data.image import opencv, read_list
from ..errors import NetkitError
from ..log import logger

# gflags' spellings of a boolean value.
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


class GflagsCommand(click.Command):
    """A click command that also takes gflags' boolean spellings `--flag=true|false`
    (for options declared as `--flag/--noflag`, which already gives gflags' `--noflag`)."""

    def parse_args(self, ctx, args):
        pairs = {}
        for p in self.params:
            if isinstance(p, click.Option) and p.is_flag and p.secondary_opts:
                for name in p.opts:
                    pairs[name] = (name, p.secondary_opts[0])
        out = []
        for i, arg in enumerate(args):
            if arg == "--":
                out.extend(args[i:])
                break
            name, eq, value = arg.partition("=")
            if eq and name in pairs:
                if value.lower() in _TRUE:
                    arg = pairs[name][0]
                elif value.lower() in _FALSE:
                    arg = pairs[name][1]
                else:
                    raise click.BadParameter("expects true or false, got '%s'" % value,
                                             ctx=ctx, param_hint=name)
            out.append(arg)
        return super().parse_args(ctx, out)


def file_extension(path):
    """The lower-case file extension of the last path component, '' if it has none."""
    return os.path.splitext(os.path.basename(path))[1][1:].lower()


def _matches_extension(filename, encoding):
    """Caffe's matchExt: does the file already have the wanted encoding (jpeg counts as jpg)?"""
    ext = file_extension(filename)
    return ext == encoding or (encoding == "jpg" and ext == "jpeg")


def encoded_bytes(cv2, filename, image, encoding, resized):
    """The image as `encoding` bytes: the file's own when it is unchanged and already in
    that encoding (as Caffe keeps it), else OpenCV's encoding of the decoded pixels."""
    if not resized and _matches_extension(filename, encoding):
        with open(filename, "rb") as f:
            return f.read()
    ok, buf = cv2.imencode("." + encoding, image)
    if not ok:
        raise NetkitError("%s: OpenCV could not encode the image as %s" % (filename, encoding))
    return buf.tobytes()


def read_image_to_datum(cv2, filename, label, height, width, is_color, encoding):
    """One image file -> (serialized Datum, (C, H, W)), or None when OpenCV cannot read it.

    Caffe's ReadImageToDatum: imread in colour (3 channels) or grey (1), resized with
    linear interpolation when both `height` and `width` are positive. With an `encoding`,
    the Datum holds compressed bytes: the file's own bytes when no resize was asked for and
    its extension already is the encoding, otherwise the image re-encoded by OpenCV.
    """
    import numpy as np

    from .. import netkit_pb2 as pb
    from ..data.datum import array_to_datum

    image = cv2.imread(filename, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None
    if height > 0 and width > 0:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    chw = image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)
    if not encoding:
        datum = array_to_datum(chw, label)
        datum.encoded = False  # Caffe sets it explicitly, so its records carry the field
    else:
        data = encoded_bytes(cv2, filename, image, encoding, resized=bool(height or width))
        datum = pb.Datum(data=data, label=label, encoded=True)
    return datum.SerializeToString(), chw.shape


def in_order(pool, fn, jobs, ahead):
    """fn(job) for every job, run on `pool` up to `ahead` jobs early, yielded in job order."""
    pending = collections.deque()
    for job in jobs:
        pending.append(pool.submit(fn, job))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def decoding_threads(threads):
    """`threads` when positive, else one per CPU core this process may run on."""
    if threads and threads > 0:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def convert_imageset(root_folder, listfile, db_name, gray=False, shuffle=False, seed=0,
                     backend="lmdb", resize_width=0, resize_height=0, check_size=False,
                     encoded=False, encode_type="", threads=0, map_size=None):
    """Convert the images listed in `listfile` (paths relative to `root_folder`) into a
    new LMDB `db_name` of Datum records; returns the number of records written.

    The database is built in a temporary directory beside `db_name` and renamed into place
    at the end, so an interrupted run leaves nothing half-written. Images OpenCV cannot
    read are skipped with an error line naming them; the others keep the key of their list
    position. `shuffle` orders the list by a random.Random(seed) shuffle (Caffe's order is
    not reproducible). `map_size` is the starting LMDB map size; it doubles when full.
    """
    if backend == "leveldb":
        raise NetkitError("--backend leveldb is not supported: netkit writes LMDB "
                          "(--backend lmdb), which Caffe reads as well")
    if backend != "lmdb":
        raise NetkitError("unknown --backend '%s' (known: lmdb)" % backend)
    if os.path.lexists(db_name):
        raise NetkitError("%s already exists; remove it or choose another name (Caffe's "
                          "convert_imageset does not overwrite a database either)" % db_name)
    cv2 = opencv()
    start = time.time()
    entries = read_list(listfile)
    if shuffle:
        logger.info("Shuffling data")
        random.Random(seed).shuffle(entries)
    logger.info("A total of %d images.", len(entries))

    encode_type = encode_type.lower()
    if encode_type and not encoded:
        logger.info("encode_type specified, assuming encoded=true.")
    height, width = max(0, resize_height), max(0, resize_width)
    if bool(height) != bool(width):
        logger.warning("images are resized only when both --resize_height and "
                       "--resize_width are given (as in Caffe); keeping their sizes")
    encodings = _encodings(cv2, entries, listfile, encoded, encode_type,
                           must_write=bool(height or width))
    root = root_folder
    if root and not root.endswith(("/", os.sep)) and os.path.isdir(root):
        root += os.sep
    threads = decoding_threads(threads)

    stats = {"skipped": 0}

    def jobs():
        for (_, path, label), encoding in zip(entries, encodings):
            yield root + path, label, height, width, not gray, encoding

    def load(job):
        return read_image_to_datum(cv2, *job) if job[0] != root else None

    def records(pool):
        first = None
        loaded = in_order(pool, load, jobs(), ahead=4 * threads + 8)
        for line_id, ((number, path, _), result) in enumerate(zip(entries, loaded)):
            if result is None:
                stats["skipped"] += 1
                if path:
                    logger.error("Could not open or find file %s", root + path)
                else:
                    logger.error("%s:%d names no image file; skipped", listfile, number)
                continue
            value, shape = result
            if check_size:
                if first is None:
                    first = (path, shape)
                elif shape != first[1]:
                    raise NetkitError(
                        "%s is %s but %s is %s (--check_size); give --resize_height and "
                        "--resize_width to make all images one size" % (
                            root + path, shape_text(shape), root + first[0],
                            shape_text(first[1])))
            yield "%08d_%s" % (line_id, path), value

    count = write_image_db(db_name, records, threads, map_size, "convert_imageset")
    seconds = time.time() - start
    logger.info("Wrote %d records to %s in %.1f s (%.0f images/s); %d of %d images could "
                "not be read.", count, db_name, seconds, count / max(seconds, 1e-9),
                stats["skipped"], len(entries))
    if count == 0:
        logger.warning("%s holds no records: no listed image could be read", db_name)
    return count


def _encodings(cv2, entries, listfile, encoded, encode_type, must_write):
    """The encoding of each entry's Datum ('' = raw pixels), checked before any work:
    --encode_type, or with --encoded alone the file's own extension (as Caffe guesses it)."""
    if encode_type:
        if not cv2.haveImageWriter("." + encode_type):
            raise NetkitError("--encode_type %s: OpenCV cannot write this image format"
                              % encode_type)
        return [encode_type] * len(entries)
    if not encoded:
        return [""] * len(entries)
    encodings = []
    for number, path, _ in entries:
        ext = file_extension(path)
        if path and not ext:
            raise NetkitError("%s:%d: cannot guess the image format of '%s' for --encoded "
                              "(it has no file extension); give --encode_type"
                              % (listfile, number, path))
        if must_write and ext and not cv2.haveImageWriter("." + ext):
            raise NetkitError("%s:%d: OpenCV cannot write .%s images, needed to store "
                              "resized images encoded; give --encode_type"
                              % (listfile, number, ext))
        encodings.append(ext)
    return encodings


def write_image_db(db_name, records, threads, map_size, tool):
    """Write the (key, value) pairs `records(pool)` yields (images decoded on a thread pool)
    into a new LMDB `db_name`, staged so that a failure leaves nothing under that name;
    return the number of records."""
    from concurrent.futures import ThreadPoolExecutor

    from ..data.datum import staged_directory, write_lmdb

    cv2 = opencv()
    level = cv2.utils.logging.getLogLevel()
    # OpenCV's own warning for an unreadable file would duplicate netkit's error line.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=tool)
    try:
        with staged_directory(db_name) as tmp:
            return write_lmdb(tmp, records(pool), map_size=map_size,
                              on_commit=lambda n: logger.info("Processed %d files.", n))
    except FileExistsError:
        raise NetkitError("%s was created by someone else while converting; the converted "
                          "database was discarded" % db_name) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        cv2.utils.logging.setLogLevel(level)


# The image and database flags convert_imageset and convert_annoset share, in help order.
DB_OPTIONS = [
    click.option("--gray/--nogray", default=False,
                 help="Treat images as grayscale ones (1 channel)."),
    click.option("--shuffle/--noshuffle", default=False,
                 help="Randomly shuffle the order of images and their labels. The order is a "
                      "seeded shuffle (--seed): the same list gives the same order, unlike "
                      "Caffe's, which changes from run to run."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed of the --shuffle order."),
    click.option("--backend", default="lmdb", show_default=True,
                 help="The backend for storing the result: lmdb (leveldb is not supported)."),
    click.option("--resize_width", type=int, default=0,
                 help="Width images are resized to (with --resize_height; 0 keeps the size)."),
    click.option("--resize_height", type=int, default=0,
                 help="Height images are resized to (with --resize_width; 0 keeps the size)."),
    click.option("--check_size/--nocheck_size", default=False,
                 help="Check that all images have the same size (after any resize)."),
    click.option("--encoded/--noencoded", default=False,
                 help="Store the encoded image in the Datum: the file's own bytes unless it "
                      "is resized or --encode_type differs from its extension."),
    click.option("--encode_type", default="",
                 help="What type to encode images as ('png', 'jpg', ...); implies --encoded."),
    click.option("--threads", type=int, default=0,
                 help="Image decoding threads (default: one per CPU core)."),
    click.option("--map_size", type=int, default=None, hidden=True,
                 help="Starting LMDB map size in bytes (it doubles when full)."),
]


def db_options(command):
    """Apply DB_OPTIONS to a click command."""
    for option in reversed(DB_OPTIONS):
        command = option(command)
    return command


@click.command("convert_imageset", cls=GflagsCommand)
@click.argument("root_folder", metavar="ROOTFOLDER/")
@click.argument("listfile", metavar="LISTFILE")
@click.argument("db_name", metavar="DB_NAME")
@db_options
def command(root_folder, listfile, db_name, gray, shuffle, seed, backend, resize_width,
            resize_height, check_size, encoded, encode_type, threads, map_size):
    """Convert a set of images to the LMDB format used as input for the Data layer.

    \b
    LISTFILE holds one image a line, its path relative to ROOTFOLDER/ and its label:
        subfolder1/file1.JPEG 7
    Records are Caffe's Datum (BGR, channels x height x width, uint8), keyed
    "%08d_<path>" by list position, so Caffe reads the database too.
    """
    convert_imageset(root_folder, listfile, db_name, gray=gray, shuffle=shuffle, seed=seed,
                     backend=backend, resize_width=resize_width, resize_height=resize_height,
                     check_size=check_size, encoded=encoded, encode_type=encode_type,
                     threads=threads, map_size=map_size)
