"""`netkit time`: Caffe's report, and a deploy net's backward timed as training runs it."""
import os

import numpy as np

from netkit.layer import TEST
from netkit.net import Net
from netkit.tools.timing import backward_as_in_training, time_net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET_DEPLOY = os.path.join(ROOT, "examples", "mnist", "lenet.prototxt")


def test_deploy_net_backward_covers_every_parameter_but_not_the_input():
    net = Net(LENET_DEPLOY, phase=TEST)
    assert not any(net.layer_need_backward)  # no loss: Caffe's net has no backward pass
    backward_as_in_training(net)
    names = net.layer_names
    need = dict(zip(names, net.layer_need_backward))
    assert need["conv1"] and need["ip2"] and need["prob"] and not need["data"]
    assert net.bottom_need_backward[names.index("conv1")] == [False]  # the input
    assert net.bottom_need_backward[names.index("pool1")] == [True]
    rs = np.random.RandomState(0)
    for blobs in net.params.values():  # the deploy file has no fillers: all zeros
        for b in blobs:
            b.data[...] = rs.standard_normal(b.shape) * 0.1
    net.blobs["data"].data[...] = rs.rand(*net.blobs["data"].shape)
    net.forward_layers()
    net.blobs["prob"].diff[...] = 1.0 / net.blobs["prob"].count
    net.blobs["prob"].diff[:, 0] -= 0.5  # any gradient that does not vanish under softmax
    net.backward_layers()
    for name, blobs in net.params.items():
        assert all(np.abs(b.diff).sum() > 0 for b in blobs), name
    assert not np.asarray(net.blobs["data"].diff).any()


def test_time_reports_caffes_lines(caplog):
    caplog.set_level("INFO", logger="netkit")
    forward, backward, total = time_net(LENET_DEPLOY, 2, phase="TEST")
    assert forward > 0 and backward > 0 and total >= forward + backward * 0.5
    text = caplog.text
    for line in ("*** Benchmark begins ***", "Testing for 2 iterations.",
                 "conv1\tbackward: ", "Average Forward-Backward: ", "Total Time: ",
                 "The net has no loss: timing the backward pass"):
        assert line in text, line
