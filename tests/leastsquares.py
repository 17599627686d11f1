"""The least-squares net the solver tests share: Input -> InnerProduct(1) -> EuclideanLoss,
whose updates have closed forms (Caffe's gradient-based solver tests use the same idea)."""
import numpy as np
from google.protobuf import text_format

from netkit import netkit_pb2 as pb

N, D = 8, 3
DEFAULT_MULTS = (1, 1, 2, 0)  # lr_mult, decay_mult of the weights, then of the bias
_NET = """
  name: "least_squares"
  layer { name: "data" type: "Input" top: "data" top: "targets"
          input_param { shape { dim: %d dim: %d } shape { dim: %d dim: 1 } } }
  layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
          param { lr_mult: %s decay_mult: %s } param { lr_mult: %s decay_mult: %s }
          inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 1 }
                                bias_filler { type: "gaussian" std: 1 } } }
  layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "targets" top: "loss" }
"""


def least_squares_param(mults=DEFAULT_MULTS):
    """The net as a NetParameter, with the given (lr, decay) multipliers of weight and bias."""
    return text_format.Parse(_NET % ((N, D, N) + tuple(mults)), pb.NetParameter())


def least_squares_data(seed=7):
    """One float32 batch (X (N, D), y (N, 1))."""
    rs = np.random.RandomState(seed)
    return (rs.standard_normal((N, D)).astype(np.float32),
            rs.standard_normal((N, 1)).astype(np.float32))


def feed_once(solver, X, y):
    """Put one batch into the net's Input blobs (kept for every iteration)."""
    solver.net.blobs["data"].data[...] = solver.backend.asarray(X)
    solver.net.blobs["targets"].data[...] = solver.backend.asarray(y)
