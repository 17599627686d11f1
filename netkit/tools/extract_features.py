"""`netkit extract_features`: blobs of a trained net, item by item, into Datum databases.

Caffe's tools/extract_features, argument for argument:

    netkit extract_features PRETRAINED_NET NET BLOB1[,BLOB2...] DB1[,DB2...] \\
        NUM_MINI_BATCHES [lmdb] [CPU|GPU] [DEVICE_ID]

The net runs in the TEST phase NUM_MINI_BATCHES times. After each forward pass every item
n of each named blob becomes one Datum record of its database: float_data holds the item's
values and channels, height and width the blob's (axes 1, 2 and 3, 1 where the blob has
fewer), keyed by the item's number written with ten digits ("0000000000", ...) as Caffe's
format_int writes it. A blob of more than four axes, which Caffe refuses, is stored with
channels = values per item and height = width = 1. The databases are built beside their
final names and renamed into place at the end, so an interrupted run leaves none
half-written.
"""
import math
import os

import click

from ..errors import NetkitError
from ..log import logger

COMMIT_EVERY = 1000  # records per transaction, and per progress line, as in Caffe


def split_names(text, what):
    """'a,b' -> ['a', 'b'], as Caffe splits it; an empty name is an error."""
    names = text.split(",")
    if not all(names):
        raise NetkitError("empty %s name in '%s' (give names separated by single commas, "
                          "without spaces)" % (what, text))
    return names


def blob_datum_shape(shape):
    """(items, channels, height, width) of a blob's Datum records, from its shape."""
    shape = tuple(shape)
    num = shape[0] if shape else 1
    if len(shape) > 4:
        return num, math.prod(shape[1:]), 1, 1
    legacy = shape[1:] + (1,) * (4 - max(len(shape), 1))
    return (num,) + legacy


def feature_records(array, first_index):
    """(key, serialized Datum) of each item of a blob's data (a host array)."""
    from .. import netkit_pb2 as pb
    num, channels, height, width = blob_datum_shape(array.shape)
    rows = array.reshape(num, -1) if num else array.reshape(0, 0)
    for n, row in enumerate(rows):
        datum = pb.Datum(channels=channels, height=height, width=width)
        datum.float_data.extend(row.tolist())
        yield "%010d" % (first_index + n), datum.SerializeToString()


def extract_features(pretrained, model, blob_names, db_names, num_mini_batches,
                     db_type="lmdb", backend=None, map_size=None):
    """Run `model` (TEST phase, weights from `pretrained`) `num_mini_batches` times and
    write the items of each blob of `blob_names` into the new LMDB of the same position in
    `db_names`; returns the number of records written to each."""
    import contextlib

    from ..data.datum import create_lmdb, staged_directory
    from ..layer import TEST
    from ..net import Net

    if db_type == "leveldb":
        raise NetkitError("db type leveldb is not supported: netkit writes LMDB (lmdb), "
                          "which Caffe reads as well")
    if db_type != "lmdb":
        raise NetkitError("unknown db type '%s' (known: lmdb)" % db_type)
    if len(blob_names) != len(db_names):
        raise NetkitError("%d feature blob name(s) (%s) but %d database name(s) (%s): the "
                          "numbers of blob names and database names must be equal"
                          % (len(blob_names), ",".join(blob_names), len(db_names),
                             ",".join(db_names)))
    if num_mini_batches < 0:
        raise NetkitError("the number of mini-batches must be 0 or more, got %d"
                          % num_mini_batches)
    for i, db in enumerate(db_names):
        if db in db_names[:i]:
            raise NetkitError("database %s is named twice; give each feature blob its own "
                              "database" % db)
        if os.path.lexists(db):
            raise NetkitError("%s already exists; remove it or choose another name (Caffe's "
                              "extract_features does not overwrite a database either)" % db)

    net = Net(model, TEST, backend=backend)
    try:
        for name in blob_names:
            if name not in net.blobs:
                raise NetkitError("unknown feature blob name '%s' in the network %s (its "
                                  "blobs: %s)" % (name, net.source, ", ".join(net.blobs)))
        net.copy_from(pretrained)
        with contextlib.ExitStack() as stack:
            envs = []
            for db in db_names:
                logger.info("Opening dataset %s", db)
                env = create_lmdb(stack.enter_context(staged_directory(db)), map_size)
                stack.callback(env.close)
                envs.append(env)
            logger.info("Extracting Features")
            counts = [0] * len(blob_names)
            pending = [[] for _ in blob_names]
            for _ in range(num_mini_batches):
                net.forward_layers()
                for i, name in enumerate(blob_names):
                    data = net.backend.asnumpy(net.blobs[name].data)
                    for record in feature_records(data, counts[i]):
                        pending[i].append(record)
                        counts[i] += 1
                        if counts[i] % COMMIT_EVERY == 0:
                            _commit(envs[i], pending[i], counts[i], name)
                            pending[i] = []
            for i, name in enumerate(blob_names):
                _commit(envs[i], pending[i], counts[i], name)
                envs[i].sync(True)
    except FileExistsError as e:
        raise NetkitError("%s (created while extracting); the extracted features were "
                          "discarded" % e) from None
    finally:
        net.close()
    logger.info("Successfully extracted the features!")
    return counts


def _commit(env, records, count, name):
    """Write one transaction of records and log the count so far, as Caffe does."""
    from ..data.datum import commit_records
    commit_records(env, [(key.encode("ascii"), value) for key, value in records])
    logger.info("Extracted features of %d query images for feature blob %s", count, name)


@click.command("extract_features")
@click.argument("pretrained_net", metavar="PRETRAINED_NET")
@click.argument("model", metavar="NET")
@click.argument("blobs", metavar="BLOB1[,BLOB2...]")
@click.argument("dbs", metavar="DB1[,DB2...]")
@click.argument("num_mini_batches", metavar="NUM_MINI_BATCHES", type=int)
@click.argument("rest", metavar="[lmdb] [CPU|GPU] [DEVICE_ID]", nargs=-1)
@click.option("--backend", default=None,
              help="The database type: lmdb (the default; leveldb is not supported).")
@click.option("--gpu", default=None, metavar="ID",
              help="Run on this GPU (the same as the positional GPU DEVICE_ID).")
def command(pretrained_net, model, blobs, dbs, num_mini_batches, rest, backend, gpu):
    """Extract the features of the input data produced by a trained net.

    \b
    PRETRAINED_NET  the trained weights (.caffemodel or .h5)
    NET             the net prototxt; its TEST phase runs, fed by its data layer
    BLOB1,...       the blobs to save, comma-separated
    DB1,...         one new database per blob, comma-separated
    NUM_MINI_BATCHES  how many forward passes to run

    Each item of a blob becomes one Datum (float_data) keyed 0000000000, 0000000001, ...
    """
    from .cli import make_backend
    rest = list(rest)
    db_type = rest.pop(0) if rest else None
    if backend and db_type and backend != db_type:
        raise NetkitError("the database type is given twice, as %s and --backend %s"
                          % (db_type, backend))
    db_type = backend or db_type or "lmdb"
    if rest:
        mode = rest.pop(0)
        device = rest.pop(0) if rest else "0"
        if rest:
            raise NetkitError("unexpected extra argument(s): %s" % " ".join(rest))
        if mode == "GPU":
            if gpu is not None and gpu != device:
                raise NetkitError("the GPU is given twice, as GPU %s and --gpu %s"
                                  % (device, gpu))
            if not device.isdigit():
                raise NetkitError("DEVICE_ID must be a GPU number (0, 1 ...), got '%s'"
                                  % device)
            gpu = device
        elif mode != "CPU":
            raise NetkitError("expected CPU or GPU after the database type, got '%s'" % mode)
    extract_features(pretrained_net, model, split_names(blobs, "feature blob"),
                     split_names(dbs, "database"), num_mini_batches, db_type,
                     make_backend(gpu, None))
