"""The model zoo (models/*): every deploy net builds with the release's blob shapes and
gives OpenCV's numbers; every train_val filters into its TRAIN and TEST nets with the
same parameter blobs as the deploy net; solvers and readme front matter parse.

OpenCV's Caffe importer (opencv-python-headless < 5) is an implementation we did not
write: it runs each deploy prototxt with a .caffemodel of random weights that netkit
writes, and must agree with netkit to float32 rounding.
"""
import os

import numpy as np
import pytest

from netkit import TEST, TRAIN, Net
from netkit import netkit_pb2 as pb
from netkit.graph import filter_net
from netkit.protoio import read_text
from netkit.upgrade import upgrade_net, upgrade_solver
from netkit.zoo import parse_frontmatter, read_model_info

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS_DIR = os.path.join(ROOT, "models")
REL_L2 = 1e-4

# directory -> deploy input, classifier blob (before Softmax), {blob: shape at batch N}
DEPLOY = {
    "bvlc_reference_caffenet": ((10, 3, 227, 227), "fc8", {
        "conv1": (96, 55, 55), "pool1": (96, 27, 27), "norm1": (96, 27, 27),
        "conv2": (256, 27, 27), "pool2": (256, 13, 13), "conv5": (256, 13, 13),
        "pool5": (256, 6, 6), "fc6": (4096,), "fc7": (4096,)}),
    "bvlc_alexnet": ((10, 3, 227, 227), "fc8", {
        "conv1": (96, 55, 55), "norm1": (96, 55, 55), "pool1": (96, 27, 27),
        "conv2": (256, 27, 27), "pool2": (256, 13, 13), "pool5": (256, 6, 6),
        "fc7": (4096,)}),
    "bvlc_googlenet": ((10, 3, 224, 224), "loss3/classifier", {
        "conv1/7x7_s2": (64, 112, 112), "pool1/3x3_s2": (64, 56, 56),
        "conv2/3x3": (192, 56, 56), "pool2/3x3_s2": (192, 28, 28),
        "inception_3a/output": (256, 28, 28), "inception_3b/output": (480, 28, 28),
        "pool3/3x3_s2": (480, 14, 14), "inception_4a/output": (512, 14, 14),
        "inception_4e/output": (832, 14, 14), "pool4/3x3_s2": (832, 7, 7),
        "inception_5b/output": (1024, 7, 7), "pool5/7x7_s1": (1024, 1, 1)}),
    "vgg16": ((10, 3, 224, 224), "fc8", {
        "conv1_2": (64, 224, 224), "pool1": (64, 112, 112), "pool2": (128, 56, 56),
        "conv3_3": (256, 56, 56), "pool3": (256, 28, 28), "pool4": (512, 14, 14),
        "pool5": (512, 7, 7), "fc6": (4096,), "fc7": (4096,)}),
    "resnet50": ((1, 3, 224, 224), "fc1000", {
        "conv1": (64, 112, 112), "pool1": (64, 56, 56), "res2a_branch1": (256, 56, 56),
        "res2c": (256, 56, 56), "res3a_branch2a": (128, 28, 28), "res3d": (512, 28, 28),
        "res4f": (1024, 14, 14), "res5a_branch1": (2048, 7, 7), "res5c": (2048, 7, 7),
        "pool5": (2048, 1, 1)}),
    "squeezenet1_1": ((10, 3, 227, 227), "pool10", {
        "conv1": (64, 113, 113), "pool1": (64, 56, 56), "fire2/squeeze1x1": (16, 56, 56),
        "fire2/concat": (128, 56, 56), "pool3": (128, 28, 28), "fire5/concat": (256, 28, 28),
        "pool5": (256, 14, 14), "fire9/concat": (512, 14, 14), "conv10": (1000, 14, 14),
        "pool10": (1000, 1, 1)}),
    "mobilenet_v1": ((1, 3, 224, 224), "fc7", {
        "conv1": (32, 112, 112), "conv2_1/dw": (32, 112, 112), "conv2_1/sep": (64, 112, 112),
        "conv2_2/dw": (64, 56, 56), "conv3_2/dw": (128, 28, 28), "conv4_2/sep": (512, 14, 14),
        "conv5_6/dw": (512, 7, 7), "conv6/sep": (1024, 7, 7), "pool6": (1024, 1, 1),
        "fc7": (1000, 1, 1)}),
}
MODELS = sorted(DEPLOY)

# directory -> train batch, test batch, crop, mean (file or values), scale, mirror in TRAIN
DATA = {
    "bvlc_reference_caffenet": (256, 50, 227, "data/ilsvrc12/imagenet_mean.binaryproto", 1, True),
    "bvlc_alexnet": (256, 50, 227, "data/ilsvrc12/imagenet_mean.binaryproto", 1, True),
    "bvlc_googlenet": (32, 50, 224, [104, 117, 123], 1, True),
    "vgg16": (64, 50, 224, [103.939, 116.779, 123.68], 1, True),
    "resnet50": (32, 50, 224, [104, 117, 123], 1, True),
    "squeezenet1_1": (32, 25, 227, [104, 117, 123], 1, False),
    "mobilenet_v1": (32, 50, 224, [103.94, 116.78, 123.68], 0.017, True),
}

# directory -> {loss layer: loss weight} in TRAIN; accuracy layers in TEST
LOSSES = {
    "bvlc_googlenet": {"loss1/loss": 0.3, "loss2/loss": 0.3, "loss3/loss3": 1.0},
    "squeezenet1_1": {"loss": 1.0},
}
ACCURACY = {
    "bvlc_googlenet": ["loss1/top-1", "loss1/top-5", "loss2/top-1", "loss2/top-5",
                       "loss3/top-1", "loss3/top-5"],
    "squeezenet1_1": ["accuracy", "accuracy_top5"],
    "mobilenet_v1": ["top1/acc", "top5/acc"],
}

# Public SHA-1s of the released weights; None where the release published none.
SHA1 = {
    "bvlc_reference_caffenet": "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46",
    "bvlc_alexnet": "9116a64c0fbe4459d18f4bb6b56d647b63920377",
    "bvlc_googlenet": "405fc5acd08a3bb12de8ee5e23a96bec22f08204",
    "vgg16": None,
    "resnet50": "b7c79ccc21ad0479cddc0dd78b1d20c4d722908d",
    "squeezenet1_1": "3397f026368a45ae236403ccc81cfcbe8ebe1bd0",
    "mobilenet_v1": None,
}


def model_file(model, name):
    return os.path.join(MODELS_DIR, model, name)


def read_net(model, name):
    return upgrade_net(read_text(model_file(model, name), pb.NetParameter()))


def phase_net(param, phase):
    state = pb.NetState()
    state.phase = phase
    return filter_net(param, state)


def without_data_layers(param, batch=2):
    """The net with each Data layer (which needs an LMDB) replaced by a DummyData layer
    giving `data` and `label` of the Data layer's crop size, in the same phase."""
    out = pb.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for lp in param.layer:
        if lp.type == "Data":
            dummy = out.layer.add(name=lp.name, type="DummyData", top=list(lp.top))
            dummy.include.extend(lp.include)
            crop = lp.transform_param.crop_size
            dummy.dummy_data_param.shape.add(dim=[batch, 3, crop, crop])
            dummy.dummy_data_param.shape.add(dim=[batch])
        else:
            out.layer.add().CopyFrom(lp)
    return out


def with_constant_fillers(param):
    """A copy whose weight fillers are constant: the blob shapes do not depend on the
    fillers, and filling VGG's 138 M weights with random numbers twice would dominate
    the test's time."""
    out = pb.NetParameter()
    out.CopyFrom(param)
    for lp in out.layer:
        for field in ("convolution_param", "inner_product_param"):
            if lp.HasField(field) and getattr(lp, field).HasField("weight_filler"):
                getattr(lp, field).weight_filler.CopyFrom(pb.FillerParameter(type="constant"))
    return out


def param_shapes(net):
    return {name: [tuple(b.shape) for b in blobs] for name, blobs in net.params.items()}


def deploy_net(model, batch=None):
    """The deploy net, its Input layer's batch set to `batch` when given."""
    param = read_net(model, "deploy.prototxt")
    (data,) = [lp for lp in param.layer if lp.type == "Input"]
    if batch is not None:
        data.input_param.shape[0].dim[0] = batch
    return param


@pytest.fixture(scope="module")
def deploy_params():
    """{model: parameter blob shapes of the deploy net} (built once)."""
    return {m: param_shapes(Net(deploy_net(m, 1), TEST)) for m in MODELS}


# ---- deploy ----

@pytest.mark.parametrize("model", MODELS)
def test_deploy_builds_with_the_release_blob_shapes(model):
    shape, logits, expected = DEPLOY[model]
    net = Net(model_file(model, "deploy.prototxt"), TEST)
    n = shape[0]
    assert net.blobs["data"].shape == shape
    assert list(net.inputs) == ["data"]
    assert list(net.outputs) == ["prob"]
    # Caffe's Softmax keeps the bottom's axes: (N, 1000) after InnerProduct, (N, 1000, 1, 1)
    # after global pooling or a 1x1 convolution.
    prob = net.blobs["prob"].shape
    assert prob[:2] == (n, 1000) and all(d == 1 for d in prob[2:])
    assert net.blobs[logits].shape == prob
    for blob, tail in expected.items():
        assert net.blobs[blob].shape == (n,) + tail, blob
    assert all(layer.type not in ("Data", "SoftmaxWithLoss", "Accuracy") for layer in net.layers)


def test_deploy_parameter_counts(deploy_params):
    """Learnable parameter counts of each architecture as other implementations report them
    (torchvision, Keras): weights and biases, BatchNorm statistics left out."""
    def count(model):
        bn = {lp.name for lp in deploy_net(model).layer if lp.type == "BatchNorm"}
        return sum(int(np.prod(s)) for name, shapes in deploy_params[model].items()
                   if name not in bn for s in shapes)
    assert count("bvlc_alexnet") == count("bvlc_reference_caffenet") == 60965224
    assert count("vgg16") == 138357544
    assert count("bvlc_googlenet") == 6998552
    assert count("squeezenet1_1") == 1235496
    # torchvision's ResNet-50 has 25,557,032 (BatchNorm gammas and betas are the Scale
    # layers here); the release's conv1 also has a bias.
    assert count("resnet50") == 25557032 + 64
    assert count("mobilenet_v1") == 4231976


def test_mobilenet_depthwise_layers_are_grouped_caffe_convolutions():
    param = read_net("mobilenet_v1", "deploy.prototxt")
    depthwise = [lp for lp in param.layer if lp.name.endswith("/dw") and lp.type == "Convolution"]
    assert len(depthwise) == 13
    channels = 32
    shapes = Net(deploy_net("mobilenet_v1", 1), TEST).params
    for lp in depthwise:
        cp = lp.convolution_param
        assert cp.group == cp.num_output == channels, lp.name
        assert cp.engine == pb.ConvolutionParameter.CAFFE and not cp.bias_term
        assert shapes[lp.name][0].shape == (channels, 1, 3, 3)
        channels = shapes[lp.name.replace("/dw", "/sep")][0].shape[0]


# ---- train_val ----

@pytest.mark.parametrize("model", MODELS)
def test_train_val_filters_into_train_and_test_nets(model):
    train_batch, test_batch, crop, mean, scale, mirror = DATA[model]
    param = read_net(model, "train_val.prototxt")
    for phase, batch, source in ((TRAIN, train_batch, "examples/imagenet/ilsvrc12_train_lmdb"),
                                 (TEST, test_batch, "examples/imagenet/ilsvrc12_val_lmdb")):
        net = phase_net(param, phase)
        (data,) = [lp for lp in net.layer if lp.type == "Data"]
        assert list(data.top) == ["data", "label"]
        assert data.data_param.source == source
        assert data.data_param.backend == pb.DataParameter.LMDB
        assert data.data_param.batch_size == batch
        t = data.transform_param
        assert t.crop_size == crop and t.scale == pytest.approx(scale)
        assert t.mirror == (mirror and phase == TRAIN)
        if isinstance(mean, str):
            assert t.mean_file == mean and not t.mean_value
        else:
            assert list(t.mean_value) == pytest.approx(mean) and not t.HasField("mean_file")
        types = [lp.type for lp in net.layer]
        assert "Input" not in types and "Softmax" not in types
        accuracy = [lp.name for lp in net.layer if lp.type == "Accuracy"]
        expected_accuracy = ACCURACY.get(model, ["accuracy"])
        if phase == TEST or model == "squeezenet1_1":  # SqueezeNet reports it in TRAIN too
            assert accuracy == expected_accuracy
        else:
            assert accuracy == []
        losses = {lp.name: (lp.loss_weight[0] if lp.loss_weight else 1.0)
                  for lp in net.layer if lp.type == "SoftmaxWithLoss"}
        assert losses == pytest.approx(LOSSES.get(model, {"loss": 1.0}))


@pytest.mark.parametrize("model", MODELS)
def test_train_val_has_the_deploy_parameter_blobs(model, deploy_params):
    """Both phases build (Data replaced by DummyData) with the deploy net's parameter blobs
    under the same layer names, so released weights fine-tune as they are."""
    param = with_constant_fillers(without_data_layers(read_net(model, "train_val.prototxt")))
    expected = deploy_params[model]
    for phase in (TRAIN, TEST):
        shapes = param_shapes(Net(param, phase))
        extra = set(shapes) - set(expected)
        assert {k: shapes[k] for k in expected} == expected
        if model == "bvlc_googlenet":
            # The auxiliary classifiers exist only for training.
            assert extra == {"loss%d/%s" % (i, n) for i in (1, 2)
                             for n in ("conv", "fc", "classifier")}
        else:
            assert extra == set()


def dummy_batch(net, rng):
    net.blobs["data"].data[...] = rng.uniform(-100, 100, net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, 1000, net.blobs["label"].shape)


def test_train_net_runs_forward_and_backward():
    """SqueezeNet's TRAIN net, with its own fillers, on a batch of 2 dummy images: a finite
    loss and gradients reaching the first layer's weights."""
    net = Net(without_data_layers(read_net("squeezenet1_1", "train_val.prototxt")), TRAIN)
    dummy_batch(net, np.random.default_rng(0))
    loss = net.forward_backward()
    assert np.isfinite(loss) and loss > 0
    assert loss == pytest.approx(float(net.blobs["loss"].data))
    assert np.abs(net.params["conv1"][0].diff).sum() > 0


def test_googlenet_training_loss_weights_the_auxiliary_classifiers():
    """GoogLeNet's TRAIN loss is loss3 + 0.3 (loss1 + loss2), the auxiliary heads' weights."""
    param = with_constant_fillers(without_data_layers(read_net("bvlc_googlenet",
                                                               "train_val.prototxt"), batch=1))
    for lp in param.layer:  # Small random weights so the three losses differ.
        if lp.type in ("Convolution", "InnerProduct"):
            filler = getattr(lp, "convolution_param" if lp.type == "Convolution"
                             else "inner_product_param").weight_filler
            filler.CopyFrom(pb.FillerParameter(type="xavier"))
    net = Net(param, TRAIN)
    dummy_batch(net, np.random.default_rng(0))
    outputs = net.forward()
    assert sorted(outputs) == ["loss1/loss1", "loss2/loss2", "loss3/loss3"]
    losses = {top: float(value) for top, value in outputs.items()}
    assert len(set(losses.values())) == 3 and np.isfinite(net.loss)
    assert net.loss == pytest.approx(losses["loss3/loss3"] + 0.3 * (
        losses["loss1/loss1"] + losses["loss2/loss2"]), rel=1e-5)


# ---- solvers and readmes ----

@pytest.mark.parametrize("model", MODELS)
def test_solver_parses_and_names_the_train_val(model):
    names = ["solver.prototxt"] + (["quick_solver.prototxt"] if model == "bvlc_googlenet" else [])
    for name in names:
        solver = read_text(model_file(model, name), pb.SolverParameter())
        upgrade_solver(solver)
        assert solver.net == "models/%s/train_val.prototxt" % model
        assert os.path.isfile(os.path.join(ROOT, solver.net))
        assert solver.snapshot_prefix.startswith("models/%s/" % model)
        assert solver.base_lr > 0 and solver.max_iter > 0 and solver.momentum == pytest.approx(0.9)
        assert solver.test_iter and solver.test_interval > 0
        # test_iter x the TEST batch covers the 50,000 ILSVRC-2012 validation images.
        assert solver.test_iter[0] * DATA[model][1] == 50000
        # One update sees 256 images (512 for SqueezeNet), through iter_size where the
        # batch is smaller. GoogLeNet's release updates every 32 images.
        batch = DATA[model][0] * solver.iter_size
        assert batch == {"squeezenet1_1": 512, "bvlc_googlenet": 32}.get(model, 256)


def test_solver_hyperparameters_are_the_originals():
    def solver(model, name="solver.prototxt"):
        return read_text(model_file(model, name), pb.SolverParameter())
    caffenet = solver("bvlc_reference_caffenet")
    assert (caffenet.base_lr, caffenet.lr_policy, caffenet.gamma, caffenet.stepsize,
            caffenet.max_iter, caffenet.weight_decay) == (
        pytest.approx(0.01), "step", pytest.approx(0.1), 100000, 450000, pytest.approx(5e-4))
    quick = solver("bvlc_googlenet", "quick_solver.prototxt")
    assert (quick.lr_policy, quick.power, quick.max_iter, quick.weight_decay) == (
        "poly", pytest.approx(0.5), 2400000, pytest.approx(2e-4))
    squeeze = solver("squeezenet1_1")
    assert (squeeze.base_lr, squeeze.lr_policy, squeeze.power, squeeze.max_iter,
            squeeze.iter_size, squeeze.random_seed) == (
        pytest.approx(0.04), "poly", pytest.approx(1.0), 170000, 16, 42)
    assert not squeeze.test_initialization


@pytest.mark.parametrize("model", MODELS)
def test_readme_front_matter(model):
    path = model_file(model, "readme.md")
    with open(path, encoding="utf-8") as f:
        info = parse_frontmatter(f.read(), path)
    for key in ("name", "caffemodel", "caffemodel_url", "license"):
        assert info.get(key), key
    assert info["caffemodel"].endswith(".caffemodel") and "/" not in info["caffemodel"]
    assert info["caffemodel_url"].startswith(("http://", "https://"))
    assert info.get("sha1") == SHA1[model]
    checked = read_model_info(os.path.join(MODELS_DIR, model))  # what download_model reads
    assert checked.get("sha1") == SHA1[model]


# ---- OpenCV parity ----

POOL = 1000003  # a prime


def randomize(net, rng, x):
    """Weights that keep activations at a steady scale through the depth: He (msra)
    normal weights and small biases; each BatchNorm's statistics are those of its bottom
    for the input `x` (as the ResNet release computed them once over a batch), its scale
    factor 1; Scale gammas near 1."""
    pool = rng.standard_normal(POOL, dtype=np.float32)

    def normal(std, shape):
        # Large blobs (fully connected weights) reuse a prime-length pool of normals,
        # which no row length divides: drawing 100 M fresh numbers only costs time.
        size = int(np.prod(shape))
        values = rng.standard_normal(shape, dtype=np.float32) if size <= POOL else \
            np.resize(pool, shape)
        return values * np.float32(std)

    net.blobs["data"].data[...] = x
    for name, layer in zip(net.layer_names, net.layers):
        blobs = net.params.get(name, [])
        if layer.type == "BatchNorm":
            mean, var, factor = blobs
            bottom = net.blobs[net.layer_bottom_names[net.layer_index(name)][0]].data
            mean.data[...] = bottom.mean(axis=(0, 2, 3))
            var.data[...] = bottom.var(axis=(0, 2, 3)) + 0.01
            factor.data[...] = 1
        elif layer.type == "Scale":
            blobs[0].data[...] = rng.uniform(0.5, 1.5, blobs[0].shape)
            blobs[1].data[...] = normal(0.1, blobs[1].shape)
        elif blobs:
            fan_in = int(np.prod(blobs[0].shape[1:]))
            blobs[0].data[...] = normal(np.sqrt(2.0 / fan_in), blobs[0].shape)
            if len(blobs) > 1:
                blobs[1].data[...] = normal(0.1, blobs[1].shape)
        net.forward(start=name, end=name)


def rel_l2(ours, theirs):
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def opencv_parity(model, tmp_path, cv2, backend=None):
    deploy = model_file(model, "deploy.prototxt")
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (1,) + DEPLOY[model][0][1:]).astype(np.float32)
    net = Net(deploy_net(model, 1), TEST)
    randomize(net, rng, x)
    weights = str(tmp_path / (model + ".caffemodel"))
    net.save(weights)
    del net
    logits = DEPLOY[model][1]

    ours_net = Net(deploy_net(model, 1), TEST, weights=weights, backend=backend)
    to_host = ours_net.backend.asnumpy
    prob = to_host(ours_net.forward(data=x)["prob"]).copy()
    ours = {"prob": prob, logits: to_host(ours_net.blobs[logits].data).copy()}
    del ours_net

    cv_net = cv2.dnn.readNetFromCaffe(deploy, weights)
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    if hasattr(cv_net, "enableWinograd"):
        cv_net.enableWinograd(False)
    cv_net.setInput(x)
    theirs = dict(zip(["prob", logits], cv_net.forward(["prob", logits])))

    # Activations neither vanish nor saturate: the classifier spreads its scores.
    assert 0.3 < float(np.std(ours[logits])) < 100
    assert float(prob.max()) < 0.99
    errors = {}
    for blob in ("prob", logits):
        assert ours[blob].size == theirs[blob].size == 1000
        errors[blob] = rel_l2(ours[blob].reshape(-1), theirs[blob].reshape(-1))
        assert errors[blob] <= REL_L2, "%s %s: relative L2 %.3g" % (model, blob, errors[blob])
    assert int(prob.argmax()) == int(theirs["prob"].argmax())
    return errors


@pytest.mark.parametrize("model", [
    m if m != "vgg16" else pytest.param(m, marks=pytest.mark.slow) for m in MODELS])
def test_deploy_matches_opencv_with_random_weights(model, tmp_path):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 provides the Caffe "
                                            "importer")
    opencv_parity(model, tmp_path, cv2)


@pytest.mark.parametrize("model", ["squeezenet1_1", "mobilenet_v1"])
def test_small_deploy_nets_match_opencv_on_each_backend(model, tmp_path, backend):
    """The same comparison with netkit's net on the GPU code path (fakegpu in CI)."""
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless<5 provides the Caffe "
                                            "importer")
    opencv_parity(model, tmp_path, cv2, backend)
