"""netkit compute_image_mean: the mean image of an LMDB of Datum records (Caffe's tool).

The mean is written as Caffe writes it, a BlobProto with the legacy num (1), channels,
height and width fields and float data: the mean.binaryproto that a Data layer's
transform_param.mean_file names.
"""
import os

import click

from ..errors import NetkitError
from ..log import fmt, logger


def compute_image_mean(db, output=None):
    """The float32 (C, H, W) mean of every record in the LMDB `db`, also written to
    `output` as a BlobProto when given.

    Records may be raw (byte or float) or encoded Datums; encoded ones are decoded with
    their own channels (Caffe's DecodeDatumNative). All must have one shape. Sums are
    exact (float64), where Caffe's float sums round once they pass 2**24.
    """
    import lmdb
    import numpy as np
    from google.protobuf.message import DecodeError

    from .. import netkit_pb2 as pb
    from ..data.datum import datum_to_array, reader_env
    from ..protoio import write_binary

    if not os.path.exists(db):
        raise NetkitError("%s does not exist" % db)
    total, count = None, 0
    try:
        with reader_env(db) as env, env.begin() as txn:
            for key, value in txn.cursor():
                where = "%s record %s" % (db, key.decode("utf-8", "replace"))
                try:
                    datum = pb.Datum.FromString(value)
                    if total is None and datum.encoded:
                        logger.info("Decoding Datum")
                    image = datum_to_array(datum)
                except (DecodeError, ValueError) as e:
                    raise NetkitError("%s: %s" % (where, e)) from None
                except ImportError as e:
                    raise NetkitError(str(e)) from None
                if total is None:
                    logger.info("Starting iteration")
                    total = np.zeros(image.shape, dtype=np.float64)
                elif image.shape != total.shape:
                    raise NetkitError("%s is %s but the first record is %s; all images must "
                                      "be one size (convert_imageset --resize_height "
                                      "--resize_width)" % (where, _shape(image.shape),
                                                           _shape(total.shape)))
                total += image
                count += 1
                if count % 10000 == 0:
                    logger.info("Processed %d files.", count)
    except lmdb.Error as e:
        raise NetkitError("%s: not a readable LMDB: %s" % (db, e)) from None
    if count == 0:
        raise NetkitError("%s has no records" % db)
    if count % 10000:
        logger.info("Processed %d files.", count)
    mean = (total / count).astype(np.float32)
    channels, height, width = mean.shape
    if output:
        logger.info("Write to %s", output)
        proto = pb.BlobProto(num=1, channels=channels, height=height, width=width)
        proto.data.extend(mean.ravel().tolist())
        write_binary(output, proto)
    logger.info("Number of channels: %d", channels)
    for c, value in enumerate(mean.reshape(channels, -1).mean(axis=1, dtype=np.float64)):
        logger.info("mean_value channel [%d]: %s", c, fmt(value))
    return mean


def _shape(shape):
    return "x".join(map(str, shape))


@click.command("compute_image_mean")
@click.argument("input_db", metavar="INPUT_DB")
@click.argument("output_file", metavar="[OUTPUT_FILE]", required=False)
@click.option("--backend", default="lmdb", show_default=True,
              help="The backend of INPUT_DB: lmdb (leveldb is not supported).")
def command(input_db, output_file, backend):
    """Compute the mean image of the Datum records in INPUT_DB.

    The mean is written to OUTPUT_FILE (mean.binaryproto) when given; the mean of each
    channel is printed, for use as transform_param mean_value.
    """
    if backend == "leveldb":
        raise NetkitError("--backend leveldb is not supported: netkit reads LMDB "
                          "(convert the data with --backend lmdb)")
    if backend != "lmdb":
        raise NetkitError("unknown --backend '%s' (known: lmdb)" % backend)
    compute_image_mean(input_db, output_file)
