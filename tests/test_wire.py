"""The .caffemodel wire-format reader and writer agree with protobuf's own encoding."""
import os
import stat

import numpy as np
import pytest

from netkit import netkit_pb2 as pb
from netkit import wire
from netkit.errors import NetkitError
from netkit.net import Net
from netkit.upgrade import upgrade_net
from netkit.rng import host_rng, set_random_seed
from netkit.weights import Weights, array_to_blob_proto, blob_proto_to_array, read_caffemodel

DEPLOY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } }
        include { phase: TEST } }
"""


def slow_blob(arr, diff=None):
    """A BlobProto built value by value through protobuf's own API."""
    proto = pb.BlobProto()
    if arr.ndim:
        proto.shape.dim.extend(arr.shape)
    proto.data.extend(arr.ravel().tolist())
    if diff is not None:
        proto.diff.extend(diff.ravel().tolist())
    return proto


@pytest.mark.parametrize("shape", [(), (0,), (7,), (2, 3), (4, 3, 2, 2)])
@pytest.mark.parametrize("with_diff", [False, True])
def test_blob_encoding_is_protobufs_byte_for_byte(shape, with_diff):
    rs = np.random.RandomState(0)
    arr = rs.standard_normal(shape).astype(np.float32)
    diff = rs.standard_normal(shape).astype(np.float32) if with_diff else None
    expected = slow_blob(arr, diff).SerializeToString()
    assert wire.encode_blob(arr, diff).tobytes() == expected
    assert array_to_blob_proto(arr, diff).SerializeToString() == expected
    back = blob_proto_to_array(pb.BlobProto.FromString(expected))
    np.testing.assert_array_equal(back, arr.reshape(back.shape))
    assert back.shape == (shape or (1,)) if arr.ndim else back.size == 1


def test_saved_caffemodel_is_protobufs_serialization(tmp_path):
    net = Net(DEPLOY, phase=pb.TEST)
    path = str(tmp_path / "tiny.caffemodel")
    net.save(path)
    expected = pb.NetParameter(name=net.name)
    for name, layer in zip(net.layer_names, net.layers):
        lp = expected.layer.add()
        lp.CopyFrom(layer.layer_param)
        lp.blobs.extend(slow_blob(np.asarray(b.data)) for b in layer.blobs)
    with open(path, "rb") as f:
        assert f.read() == expected.SerializeToString()
    assert net.to_proto() == expected


def test_reader_gives_the_values_protobuf_parses(tmp_path):
    net = Net(DEPLOY, phase=pb.TEST)
    path = str(tmp_path / "tiny.caffemodel")
    net.save(path)
    param, values = read_caffemodel(path)
    full = pb.NetParameter.FromString(open(path, "rb").read())
    assert [name for name, _ in values] == [lp.name for lp in full.layer]
    for (name, arrays), lp in zip(values, full.layer):
        assert len(arrays) == len(lp.blobs)
        for array, proto in zip(arrays, lp.blobs):
            np.testing.assert_array_equal(array, np.array(proto.data, np.float32))
    stripped = pb.NetParameter()
    stripped.CopyFrom(full)
    for lp in stripped.layer:
        for b in lp.blobs:
            del b.data[:]
    assert param == upgrade_net(stripped)  # read as Caffe reads: upgraded


def test_double_unpacked_and_legacy_blobs_load(tmp_path):
    """Old writers: double_data, values one tag each (not packed), num/channels/height/width."""
    rs = np.random.RandomState(1)
    w = rs.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rs.standard_normal(4).astype(np.float32)
    param = pb.NetParameter(name="old")
    lp = param.layer.add(name="conv", type="Convolution")
    doubles = pb.BlobProto(num=4, channels=3, height=3, width=3)
    doubles.double_data.extend(w.astype(np.float64).ravel().tolist())
    unpacked = pb.BlobProto(num=1, channels=1, height=1, width=4)
    # field 5, wire type 5 (fixed32) per value: what a non-packed writer produces
    payload = unpacked.SerializeToString() + b"".join(
        wire.encode_varint(5 << 3 | wire.FIXED32) + v.tobytes() for v in b.astype("<f4"))
    body = wire.encode_layer(lp, [wire.Chunks([doubles.SerializeToString()]),
                                  wire.Chunks([payload])]).tobytes()
    data = pb.NetParameter(name="old").SerializeToString() + wire.length_field(100, body)
    path = tmp_path / "old.caffemodel"
    path.write_bytes(data)
    assert pb.NetParameter.FromString(data).layer[0].blobs[1].data[:] == b.tolist()
    net = Net(DEPLOY, weights=str(path), phase=pb.TEST)
    np.testing.assert_array_equal(net.params["conv"][0].data, w)
    np.testing.assert_array_equal(net.params["conv"][1].data, b)


def test_fork_field_of_another_type_is_dropped_not_fatal(tmp_path):
    """A fork may store its own message under a number netkit's schema uses for another
    (open_nsfw's weights carry field 10001): the layer's other fields and blobs still load."""
    rs = np.random.RandomState(2)
    w = rs.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rs.standard_normal(4).astype(np.float32)
    lp = pb.LayerParameter(name="conv", type="Convolution")
    blobs = [wire.Chunks([array_to_blob_proto(v).SerializeToString()]) for v in (w, b)]
    upsample = pb.LayerParameter.DESCRIPTOR.fields_by_name["upsample_param"].number
    fork = wire.length_field(upsample, b"\xff\xff")          # not an UpsampleParameter
    body = wire.encode_layer(lp, blobs).tobytes() + fork
    with pytest.raises(Exception):
        pb.LayerParameter.FromString(body)
    path = tmp_path / "fork.caffemodel"
    path.write_bytes(pb.NetParameter(name="fork").SerializeToString() +
                     wire.length_field(100, body))
    net = Net(DEPLOY, weights=str(path), phase=pb.TEST)
    np.testing.assert_array_equal(net.params["conv"][0].data, w)
    np.testing.assert_array_equal(net.params["conv"][1].data, b)


def test_loaded_layers_are_not_randomly_filled(tmp_path):
    """Their fillers draw nothing: the random stream is where it was (and no time is spent)."""
    net = Net(DEPLOY, phase=pb.TEST)
    path = str(tmp_path / "tiny.caffemodel")
    net.save(path)
    set_random_seed(5)
    before = host_rng().get_state()[1].copy()
    loaded = Net(DEPLOY, weights=path, phase=pb.TEST)
    np.testing.assert_array_equal(host_rng().get_state()[1], before)
    for name in ("conv", "bn", "fc"):
        for mine, theirs in zip(loaded.params[name], net.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)
    Net(DEPLOY, phase=pb.TEST)  # without weights the fillers do draw
    assert not np.array_equal(host_rng().get_state()[1], before)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_file_is_one_line_error(tmp_path, damage):
    net = Net(DEPLOY, phase=pb.TEST)
    path = tmp_path / "tiny.caffemodel"
    net.save(str(path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 13] if damage == "truncate" else b"\xff" * 40)
    with pytest.raises(NetkitError, match="tiny.caffemodel: not a valid binary NetParameter"):
        Weights(str(path))


def test_empty_file_has_no_weights(tmp_path):
    path = tmp_path / "empty.caffemodel"
    path.write_bytes(b"")
    assert Weights(str(path)).names == set()


def test_saved_weights_get_the_permissions_open_would_give(tmp_path):
    """Not mkstemp's owner-only 0600: other users can read a shared model directory."""
    old = os.umask(0o022)
    try:
        net = Net(DEPLOY, phase=pb.TEST)
        net.save(str(tmp_path / "w.caffemodel"))
        from netkit.weights import save_net_hdf5
        save_net_hdf5(net, str(tmp_path / "w.caffemodel.h5"))
    finally:
        os.umask(old)
    for name in ("w.caffemodel", "w.caffemodel.h5"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name
