"""Data: batches of Datum records from an LMDB, transformed and prefetched (Caffe's DataLayer).

Records are read in key order and the reading wraps to the first record after the last.
Records of one batch may differ in size where transform_param.crop_size crops each, within
its own size, to one (as in Caffe).
Top 0 is the transformed images (N, C, H, W) float32; the optional top 1 is the labels (N,).
A daemon thread keeps `data_param.prefetch` batches ready on the host; forward copies the
next one to the layer's backend.
"""
import copy
import os

import lmdb
from google.protobuf.message import DecodeError

from .. import netkit_pb2 as pb
from ..data import private_rng
from ..data.datum import DatumBatchReader, datum_to_array, first_record
from ..data.transformer import DataTransformer, TransformError
from ..layer import TRAIN, LayerSetupError
from ..log import logger
from ..parallel import solver_count, solver_rank
from ..registry import layers
from .base_data import PrefetchingDataLayer


def check_data_param(p):
    """Refuse a data_param netkit cannot read: LevelDB, a missing source, no batch."""
    if p.HasField("backend") and p.backend != pb.DataParameter.LMDB:
        raise LayerSetupError("data_param.backend %s is not supported; convert the data "
                              "to LMDB" % pb.DataParameter.DB.Name(p.backend))
    if p.batch_size <= 0:
        raise LayerSetupError("data_param.batch_size must be positive, got %d" % p.batch_size)
    if p.prefetch < 1:
        raise LayerSetupError("data_param.prefetch must be at least 1, got %d" % p.prefetch)
    if not os.path.exists(p.source):
        raise LayerSetupError("data_param.source %s does not exist" % (p.source or "''"))
    if os.path.isdir(p.source) and not os.path.isfile(os.path.join(p.source, "data.mdb")):
        # Caffe's default backend is LEVELDB; netkit reads LMDB whatever the default.
        raise LayerSetupError("data_param.source %s is not an LMDB (LevelDB is not "
                              "supported; convert the data to LMDB)" % p.source)


@layers.register("Data")
class DataLayer(PrefetchingDataLayer):
    min_top = 1
    max_top = 2
    legacy_param = "data_param"

    def setup(self, bottom, top):
        p = self.layer_param.data_param
        check_data_param(p)
        # A private random stream, seeded from netkit's: the prefetch thread draws crop
        # offsets and mirror coins from it alone, so a seed gives the same batches.
        rng = private_rng()
        try:
            transformer = DataTransformer(self.transform_param(), self.phase, rng)
        except TransformError as e:
            raise LayerSetupError(str(e)) from None
        try:
            record = first_record(p.source)
            if record is None:
                raise ValueError("the database has no records")
            image = datum_to_array(pb.Datum.FromString(record[1]), transformer.color)
        except (ValueError, ImportError, lmdb.Error, DecodeError) as e:
            raise LayerSetupError("data_param.source %s: %s" % (p.source, e)) from None
        try:
            chw = transformer.output_shape(image.shape)
        except TransformError as e:
            raise LayerSetupError(str(e)) from None
        top[0].reshape((p.batch_size,) + chw)
        logger.info("output data size: %s", ",".join(str(d) for d in top[0].shape))
        if len(top) > 1:
            top[1].reshape((p.batch_size,))
        skip = rng.randint(p.rand_skip) if p.rand_skip else 0
        # Data-parallel ranks share the TRAIN records: rank r of N reads records r, r+N,
        # r+2N, ... (Caffe's DataLayer::Skip); only rank 0 runs TEST nets, reading all.
        rank, count = (solver_rank(), solver_count()) if self.phase == TRAIN else (0, 1)
        # Where the stream starts: the first record and the random state after setup's
        # draws. Every stream (the first, and one after skip_batches) starts from copies.
        self._start = (skip + rank, count, transformer)
        self.start_stream(p.prefetch, p.source)

    def open_stream(self, position):
        """Records from the start fixed at setup, moved `position` batches forward: the
        cursor passes the skipped records without reading them, and the transformer makes
        each skipped batch's random draws (which do not depend on image sizes).

        As in Caffe, records of several sizes in one batch need a crop_size, which crops
        each within its own size."""
        p = self.layer_param.data_param
        first, stride, start = self._start
        transformer = start.with_rng(copy.deepcopy(start.rng))
        reader = DatumBatchReader(p.source, p.batch_size, transformer.color, first,
                                  stride=stride)
        skipping = [position] if position else []

        def load():
            if skipping:
                n = skipping.pop()
                reader.skip_batches(n)
                for _ in range(n):
                    transformer.skip(p.batch_size)
            images, labels = reader.read(mixed_sizes=bool(transformer.crop))
            return transformer(images), labels

        return load, reader.close
