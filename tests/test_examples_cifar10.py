"""The CIFAR-10 quick recipe (examples/cifar10) end to end, on synthetic data.

The real CIFAR-10 cannot be downloaded here, so a small LMDB of random 3x32x32 images
stands in for it. The stock solver and net files run unchanged apart from their paths and
iteration counts; the snapshot then loads into the deploy net, whose probabilities OpenCV's
Caffe importer (an implementation we did not write) reproduces.
"""
import math
import os

import numpy as np
import pytest

import netkit
from netkit import TEST, Net
from netkit import netkit_pb2 as pb
from netkit.data.datum import array_to_datum, write_lmdb
from netkit.protoio import read_text, write_binary, write_text
from netkit.weights import array_to_blob_proto

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "cifar10")
SOLVER = os.path.join(EXAMPLE, "cifar10_quick_solver.prototxt")
TRAIN_TEST = os.path.join(EXAMPLE, "cifar10_quick_train_test.prototxt")
DEPLOY = os.path.join(EXAMPLE, "cifar10_quick.prototxt")


def write_cifar_like(directory, n_train=200, n_test=100, seed=0):
    """Random uint8 CIFAR-shaped Datums with labels 0-9 in cifar10_{train,test}_lmdb, and
    the training images' per-pixel mean in mean.binaryproto (as compute_image_mean writes)."""
    rs = np.random.RandomState(seed)
    paths = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rs.randint(0, 256, (n, 3, 32, 32)).astype(np.uint8)
        labels = np.arange(n) % 10
        path = str(directory / ("cifar10_%s_lmdb" % split))
        write_lmdb(path, (("%05d" % i, array_to_datum(img, lab).SerializeToString())
                          for i, (img, lab) in enumerate(zip(images, labels))))
        paths[split] = path
        if split == "train":
            mean = images.mean(axis=0, dtype=np.float64)[np.newaxis]
    paths["mean"] = str(directory / "mean.binaryproto")
    write_binary(paths["mean"], array_to_blob_proto(mean))
    return paths


def recipe_in(directory, max_iter, batch_size=None, **solver_fields):
    """The stock solver and train/test net, with every path moved into `directory`.

    Returns the path of the rewritten solver file.
    """
    data = write_cifar_like(directory)
    net = read_text(TRAIN_TEST, pb.NetParameter())
    data_layers = [layer for layer in net.layer if layer.type == "Data"]
    assert [layer.include[0].phase for layer in data_layers] == [pb.TRAIN, pb.TEST]
    for layer, split in zip(data_layers, ("train", "test")):
        assert layer.data_param.source == "examples/cifar10/cifar10_%s_lmdb" % split
        assert layer.transform_param.mean_file == "examples/cifar10/mean.binaryproto"
        layer.data_param.source = data[split]
        layer.transform_param.mean_file = data["mean"]
        if batch_size:
            layer.data_param.batch_size = batch_size
    net_path = str(directory / "cifar10_quick_train_test.prototxt")
    write_text(net_path, net)

    solver = read_text(SOLVER, pb.SolverParameter())
    assert solver.net == "examples/cifar10/cifar10_quick_train_test.prototxt"
    assert solver.snapshot_prefix == "examples/cifar10/cifar10_quick"
    solver.net = net_path
    solver.snapshot_prefix = str(directory / "cifar10_quick")
    solver.max_iter = max_iter
    for name, value in solver_fields.items():
        if isinstance(value, list):
            del getattr(solver, name)[:]
            getattr(solver, name).extend(value)
        else:
            setattr(solver, name, value)
    solver_path = str(directory / "cifar10_quick_solver.prototxt")
    write_text(solver_path, solver)
    return solver_path


def test_stock_files_carry_caffes_settings():
    solver = read_text(SOLVER, pb.SolverParameter())
    assert (solver.base_lr, solver.momentum, solver.lr_policy) == (
        pytest.approx(0.001), pytest.approx(0.9), "fixed")
    assert solver.weight_decay == pytest.approx(0.004)
    assert list(solver.test_iter) == [100]
    assert (solver.test_interval, solver.display, solver.max_iter, solver.snapshot) == (
        500, 100, 4000, 4000)
    assert solver.solver_mode == pb.SolverParameter.CPU

    net = read_text(TRAIN_TEST, pb.NetParameter())
    by_name = {layer.name: layer for layer in net.layer}
    expected = {"conv1": (32, 0.0001), "conv2": (32, 0.01), "conv3": (64, 0.01)}
    for name, (num_output, std) in expected.items():
        conv = by_name[name].convolution_param
        assert (conv.num_output, conv.pad[0], conv.kernel_size[0], conv.stride[0]) == (
            num_output, 2, 5, 1)
        assert conv.weight_filler.type == "gaussian"
        assert conv.weight_filler.std == pytest.approx(std)
    for name, num_output in (("ip1", 64), ("ip2", 10)):
        ip = by_name[name].inner_product_param
        assert ip.num_output == num_output and ip.weight_filler.std == pytest.approx(0.1)
    for name, pool in (("pool1", pb.PoolingParameter.MAX), ("pool2", pb.PoolingParameter.AVE),
                       ("pool3", pb.PoolingParameter.AVE)):
        p = by_name[name].pooling_param
        assert (p.pool, p.kernel_size, p.stride) == (pool, 3, 2)
    for layer in net.layer:
        if layer.param:
            assert [s.lr_mult for s in layer.param] == [1, 2]
    train = [layer for layer in net.layer if layer.type == "Data"]
    assert [layer.data_param.batch_size for layer in train] == [100, 100]


def test_deploy_net_shapes():
    net = Net(DEPLOY, TEST)
    assert net.blobs["data"].shape == (1, 3, 32, 32)
    # 32 -> pool1 16 -> pool2 8 -> pool3 4 (pooling rounds up): ip1 sees 64 * 4 * 4.
    assert net.blobs["pool3"].shape == (1, 64, 4, 4)
    assert net.params["ip1"][0].shape == (64, 1024)
    assert net.blobs["prob"].shape == (1, 10)
    assert list(net.outputs) == ["prob"]


def test_quick_recipe_trains_snapshots_and_deploys(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 has the Caffe importer")
    # Batches of 25 instead of 100 keep the test quick; 20 iterations read the 200
    # training records two and a half times, wrapping around twice.
    solver_path = recipe_in(tmp_path, max_iter=20, batch_size=25, test_iter=[2],
                            test_interval=10, snapshot=10, display=10)
    solver = netkit.get_solver(solver_path)
    try:
        start = {name: np.array(blobs[0].data, copy=True)
                 for name, blobs in solver.net.params.items()}
        # Tiny initial weights: the scores are near uniform, so the loss is near ln 10.
        # Solver.test returns each output's mean over the test_iter batches.
        scores = solver.test(0)
        assert abs(scores["loss"][0] - math.log(10)) < 0.05
        solver.solve()
        assert solver.iter == 20
        assert math.isfinite(solver.smoothed_loss)
        assert abs(solver.smoothed_loss - math.log(10)) < 0.5
        moved = [not np.array_equal(start[name], blobs[0].data)
                 for name, blobs in solver.net.params.items()]
        assert all(moved)
    finally:
        solver.close()
    for it in (10, 20):
        for ext in (".caffemodel", ".solverstate"):
            assert os.path.isfile(str(tmp_path / ("cifar10_quick_iter_%d%s" % (it, ext))))
    model = str(tmp_path / "cifar10_quick_iter_20.caffemodel")

    deploy = Net(DEPLOY, TEST, weights=model)
    for name, blobs in solver.net.params.items():
        for ours, trained in zip(deploy.params[name], blobs):
            np.testing.assert_array_equal(ours.data, trained.data)
    rs = np.random.RandomState(3)
    x = rs.uniform(-128, 128, (1, 3, 32, 32)).astype(np.float32)
    prob = deploy.forward(data=x)["prob"]
    assert prob.shape == (1, 10)
    assert prob.sum() == pytest.approx(1.0, abs=1e-5)
    assert (prob > 0).all()

    theirs = cv2.dnn.readNetFromCaffe(DEPLOY, model)
    theirs.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    theirs.setInput(x)
    np.testing.assert_allclose(prob, theirs.forward(), atol=1e-5, rtol=0)
    # The trained weights are small, so the probabilities sit near 0.1 whatever the
    # layers compute: compare every intermediate blob relative to its own scale too.
    # OpenCV names outputs by layer: an in-place ReLU's output is the ReLU layer's.
    producers = {"conv1": "conv1", "pool1": "relu1", "conv2": "relu2", "pool2": "pool2",
                 "conv3": "relu3", "pool3": "pool3", "ip1": "ip1", "ip2": "ip2"}
    for name, producer in producers.items():
        theirs.setInput(x)
        ref = theirs.forward(producer)
        ours = deploy.blobs[name].data
        assert ours.shape == ref.shape, name
        scale = np.abs(ref).max()
        assert scale > 0, name
        assert np.abs(ours - ref).max() <= 1e-4 * scale, name


def test_fakegpu_training_matches_cpu_bit_for_bit(tmp_path):
    solver_path = recipe_in(tmp_path, max_iter=2, batch_size=10, test_interval=0,
                            test_iter=[], snapshot=0, snapshot_after_train=False,
                            random_seed=17)
    weights, start = {}, None
    for name in ("cpu", "fakegpu"):
        solver = netkit.get_solver(solver_path, backend=name)
        try:
            if start is None:
                start = [np.array(p.blob.data, copy=True) for p in solver.net.learnable_params]
            solver.solve()
            assert solver.iter == 2
            weights[name] = [solver.backend.asnumpy(p.blob.data)
                             for p in solver.net.learnable_params]
        finally:
            solver.close()
    assert len(weights["cpu"]) == 10
    for cpu, fake in zip(weights["cpu"], weights["fakegpu"]):
        np.testing.assert_array_equal(cpu, fake)
    # Two updates moved every weight blob: the equality is not that of untouched fillers.
    assert all(not np.array_equal(b, c) for b, c in zip(start[::2], weights["cpu"][::2]))
