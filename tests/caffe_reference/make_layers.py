"""Generate tests/caffe_reference/layers.npz: every layer's forward and backward in BVLC Caffe.

This script runs under *real* BVLC Caffe's pycaffe (python3 + `import caffe`), not under
netkit. The reference numbers in the repository came from Debian bullseye's `python3-caffe`
(BVLC master at git 99bd997, 2018-08-21, CPU build), run in a chroot:

    mkdir -p /tmp/bullseye-root/tmp/ref
    cp tests/caffe_reference/make_layers.py /tmp/bullseye-root/tmp/ref/
    chroot /tmp/bullseye-root env OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 \\
        GLOG_minloglevel=2 python3 /tmp/ref/make_layers.py /tmp/ref/layers.npz
    cp /tmp/bullseye-root/tmp/ref/layers.npz tests/caffe_reference/layers.npz

(`make_layers.py OUT.npz CASE ...` writes only the named cases, for debugging one.) The
output is deterministic: seeds come from the case names, and Caffe's CPU math runs on one
OpenBLAS thread.

For each case below it builds a one-layer net: an Input layer (and, where Caffe's
force_backward cannot be used, Parameter layers) for the bottoms, then the layer under test.
It fills the bottoms with seeded random data suited to the layer (integer labels in range,
positive inputs where the math needs them, values away from kinks), fills the layer's
parameter blobs with seeded random values, runs forward, sets seeded random top diffs (a loss
top keeps the loss weight Caffe put in its diff), zeroes the parameter diffs, runs backward
and stores, in one compressed file, for case C:

    C/prototxt        the tested LayerParameter as Caffe read it (text format)
    C/phase           "TRAIN" or "TEST"
    C/bottom<i>       bottom data
    C/param<i>        the layer's parameter blobs before forward
    C/top<i>          top data after forward
    C/param_fwd<i>    parameter blobs after forward, only where forward changed them
                      (BatchNorm's running statistics in TRAIN)
    C/top_diff<i>     the top diffs backward read       (only for cases with a backward)
    C/bottom_diff<i>  bottom diffs, only for bottoms Caffe propagated to
    C/param_diff<i>   parameter diffs (zeroed before backward)

Backward modes (`wiring`):
    "force"  force_backward: true; Caffe propagates to every bottom its layer allows
             (AllowForceBackward), as in Caffe's own layer tests.
    "wired"  for layers whose index/label bottoms would abort under force_backward (Embed,
             Filter, BatchReindex, InfogainLoss with an H bottom): the bottoms in `diff` come
             from Parameter layers (so they need backward), the rest from the Input layer,
             and a non-loss layer gets loss_weight: 1 on its tops so that the Net runs its
             backward; the top diffs are then overwritten with random values.
    "none"   no backward (Accuracy, ArgMax, Threshold, ... have none in Caffe).
A bottom diff is recorded only if Caffe wrote all of it (bottom diffs are NaN before forward).
"""
import sys
import zlib

import numpy as np

import caffe

DEFAULT_OUT = "layers.npz"

CASES = []


def case(name, layer, bottoms, ntop=1, phase="TRAIN", wiring="force", diff=(),
         params=None, top_loss_weight=False):
    """`layer`: LayerParameter text without name/bottom/top; `bottoms(rs)` -> list of arrays;
    `params(rs, shapes)` -> list of arrays (default: normal * 0.5);
    `diff`: for wiring "wired", the indices of bottoms to propagate to;
    `top_loss_weight`: for wiring "wired" on a non-loss layer, add loss_weight: 1 per top."""
    CASES.append(dict(name=name, layer=layer, bottoms=bottoms, ntop=ntop, phase=phase,
                      wiring=wiring, diff=tuple(diff), params=params,
                      top_loss_weight=top_loss_weight))


# -- data helpers -----------------------------------------------------------------------------
def randn(rs, *shape):
    return rs.standard_normal(shape).astype(np.float32)


def away(rs, *shape, margin=0.1, at=0.0, scale=1.0):
    """Normal values at least `margin` away from `at` (a kink)."""
    x = rs.standard_normal(shape) * scale
    return (at + np.sign(x) * (np.abs(x) + margin)).astype(np.float32)


def distinct(rs, *shape, lo=-2.0, hi=2.0):
    """Values spread so that no two are within (hi - lo) / count (for max/argmax ties)."""
    n = int(np.prod(shape))
    v = lo + (hi - lo) * (rs.permutation(n) + 0.5 + 0.3 * rs.rand(n)) / n
    return v.reshape(shape).astype(np.float32)


def positive(rs, *shape, lo=0.2, hi=2.0):
    return rs.uniform(lo, hi, shape).astype(np.float32)


def labels(rs, num, *shape):
    return rs.randint(0, num, shape).astype(np.float32)


def probs(rs, n, k):
    e = np.exp(rs.standard_normal((n, k)))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def b(*fns):
    """bottoms(rs) from per-bottom functions of rs."""
    return lambda rs: [f(rs) for f in fns]


# -- cases ------------------------------------------------------------------------------------
X = lambda rs: randn(rs, 2, 3, 7, 9)  # noqa: E731

# Convolution
case("conv_basic", 'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 }',
     b(X))
case("conv_pad_stride", 'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 '
     'pad: 1 stride: 2 }', b(X))
case("conv_stride3", 'type: "Convolution" convolution_param { num_output: 2 kernel_size: 2 '
     'stride: 3 }', b(X))
case("conv_dilation", 'type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 '
     'pad: 2 dilation: 2 }', b(X))
case("conv_group", 'type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 '
     'group: 2 pad: 1 }', b(lambda rs: randn(rs, 1, 4, 6, 7)))
case("conv_depthwise", 'type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 '
     'group: 3 pad: 1 stride: 2 }', b(X))
case("conv_depthwise_mult2", 'type: "Convolution" convolution_param { num_output: 6 '
     'kernel_size: 3 group: 3 }', b(X))
case("conv_rect_nobias", 'type: "Convolution" convolution_param { num_output: 4 kernel_h: 3 '
     'kernel_w: 2 pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1 bias_term: false }', b(X))
case("conv_rect_dilation", 'type: "Convolution" convolution_param { num_output: 2 kernel_h: 2 '
     'kernel_w: 3 dilation: 2 dilation: 1 pad: 1 pad: 2 stride: 1 stride: 2 }', b(X))
case("conv_1x1", 'type: "Convolution" convolution_param { num_output: 5 kernel_size: 1 }',
     b(lambda rs: randn(rs, 2, 3, 4, 5)))
case("conv_3d", 'type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 pad: 1 '
     'stride: 2 }', b(lambda rs: randn(rs, 2, 2, 4, 5, 5)))
case("conv_3d_aniso", 'type: "Convolution" convolution_param { num_output: 2 kernel_size: 2 '
     'kernel_size: 3 kernel_size: 1 stride: 1 stride: 2 stride: 1 }',
     b(lambda rs: randn(rs, 1, 2, 3, 5, 4)))

# Deconvolution
D = lambda rs: randn(rs, 2, 3, 4, 5)  # noqa: E731
case("deconv_basic", 'type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 3 }',
     b(D))
case("deconv_pad_stride", 'type: "Deconvolution" convolution_param { num_output: 2 '
     'kernel_size: 3 pad: 1 stride: 2 }', b(D))
case("deconv_group", 'type: "Deconvolution" convolution_param { num_output: 6 kernel_size: 3 '
     'group: 3 stride: 2 }', b(lambda rs: randn(rs, 1, 3, 4, 5)))
case("deconv_depthwise", 'type: "Deconvolution" convolution_param { num_output: 3 '
     'kernel_size: 4 group: 3 stride: 2 pad: 1 }', b(D))
case("deconv_rect_nobias", 'type: "Deconvolution" convolution_param { num_output: 2 '
     'kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 1 bias_term: false }', b(D))
case("deconv_dilation", 'type: "Deconvolution" convolution_param { num_output: 2 '
     'kernel_size: 3 dilation: 2 pad: 1 }', b(D))
case("deconv_3d", 'type: "Deconvolution" convolution_param { num_output: 2 kernel_size: 2 '
     'stride: 2 }', b(lambda rs: randn(rs, 2, 2, 2, 3, 3)))

# Pooling (distinct values: no ties inside a MAX window). STOCHASTIC has no case: BVLC's
# Pooling implements it on the GPU only (Forward_cpu/Backward_cpu are NOT_IMPLEMENTED).
case("pool_max", 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
     b(lambda rs: distinct(rs, 2, 3, 7, 9)))
case("pool_max_ceil", 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
     b(lambda rs: distinct(rs, 2, 3, 8, 10)))  # ceil adds a clipped last window
case("pool_max_pad", 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 '
     'pad: 1 }', b(lambda rs: distinct(rs, 2, 3, 7, 8)))
case("pool_max_pad_clip", 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 '
     'pad: 2 }', b(lambda rs: distinct(rs, 1, 2, 6, 7)))  # last window dropped: starts in pad
case("pool_max_mask", 'type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }',
     b(lambda rs: distinct(rs, 2, 2, 5, 7)), ntop=2)
case("pool_max_rect", 'type: "Pooling" pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 '
     'stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0 }', b(lambda rs: distinct(rs, 2, 2, 6, 7)))
case("pool_max_global", 'type: "Pooling" pooling_param { pool: MAX global_pooling: true }',
     b(lambda rs: distinct(rs, 2, 3, 4, 5)))
case("pool_ave", 'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 }',
     b(lambda rs: randn(rs, 2, 3, 8, 10)))
case("pool_ave_pad", 'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 '
     'pad: 1 }', b(lambda rs: randn(rs, 2, 3, 8, 10)))
case("pool_ave_pad_clip", 'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 '
     'pad: 2 }', b(lambda rs: randn(rs, 1, 2, 6, 7)))
case("pool_ave_rect", 'type: "Pooling" pooling_param { pool: AVE kernel_h: 2 kernel_w: 3 '
     'stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 1 }', b(lambda rs: randn(rs, 2, 2, 5, 6)))
case("pool_ave_global", 'type: "Pooling" pooling_param { pool: AVE global_pooling: true }',
     b(lambda rs: randn(rs, 2, 3, 4, 5)))

# InnerProduct
IPX = lambda rs: randn(rs, 2, 3, 4, 5)  # noqa: E731
case("ip_basic", 'type: "InnerProduct" inner_product_param { num_output: 6 }', b(IPX))
case("ip_axis2", 'type: "InnerProduct" inner_product_param { num_output: 6 axis: 2 }', b(IPX))
case("ip_axis_neg", 'type: "InnerProduct" inner_product_param { num_output: 3 axis: -1 }',
     b(IPX))
case("ip_transpose", 'type: "InnerProduct" inner_product_param { num_output: 6 '
     'transpose: true }', b(IPX))
case("ip_nobias", 'type: "InnerProduct" inner_product_param { num_output: 6 '
     'bias_term: false }', b(lambda rs: randn(rs, 4, 7)))

# LRN
case("lrn_across", 'type: "LRN" lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 }',
     b(lambda rs: randn(rs, 2, 7, 3, 4)))
case("lrn_across3_k2", 'type: "LRN" lrn_param { local_size: 3 alpha: 0.3 beta: 0.6 k: 2 }',
     b(lambda rs: randn(rs, 2, 4, 3, 3)))
case("lrn_within", 'type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 '
     'norm_region: WITHIN_CHANNEL }', b(lambda rs: randn(rs, 2, 2, 5, 6)))
case("lrn_within5", 'type: "LRN" lrn_param { local_size: 5 alpha: 2 beta: 0.5 '
     'norm_region: WITHIN_CHANNEL }', b(lambda rs: randn(rs, 1, 2, 6, 7)))

# Neurons
N = (2, 3, 4, 5)
case("relu", 'type: "ReLU"', b(lambda rs: away(rs, *N)))
case("relu_leaky", 'type: "ReLU" relu_param { negative_slope: 0.1 }', b(lambda rs: away(rs, *N)))
case("prelu", 'type: "PReLU"', b(lambda rs: away(rs, *N)))
case("prelu_shared", 'type: "PReLU" prelu_param { channel_shared: true }',
     b(lambda rs: away(rs, *N)))
case("prelu_2d", 'type: "PReLU"', b(lambda rs: away(rs, 4, 5)))
case("elu", 'type: "ELU"', b(lambda rs: away(rs, *N)))
case("elu_alpha", 'type: "ELU" elu_param { alpha: 0.3 }', b(lambda rs: away(rs, *N)))
case("sigmoid", 'type: "Sigmoid"', b(lambda rs: randn(rs, *N) * 3))
case("tanh", 'type: "TanH"', b(lambda rs: randn(rs, *N) * 2))
case("absval", 'type: "AbsVal"', b(lambda rs: away(rs, *N)))


def _bnll_input(rs):
    x = randn(rs, *N) * 3
    x.flat[:4] = [60.0, -60.0, 49.0, 51.0]  # both sides of Caffe's threshold 50
    return x


case("bnll", 'type: "BNLL"', b(_bnll_input))
case("power_square", 'type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }',
     b(lambda rs: randn(rs, *N)))
case("power_sqrt", 'type: "Power" power_param { power: 0.5 scale: 0.5 shift: 0.1 }',
     b(lambda rs: positive(rs, *N)))
case("power_cube", 'type: "Power" power_param { power: 3 scale: -0.7 shift: 0.2 }',
     b(lambda rs: randn(rs, *N)))
case("power_one", 'type: "Power" power_param { power: 1 scale: 2 shift: -1 }',
     b(lambda rs: randn(rs, *N)))
case("power_zero", 'type: "Power" power_param { power: 0 scale: 2 shift: 1 }',
     b(lambda rs: randn(rs, *N)))
case("power_neg", 'type: "Power" power_param { power: -1.5 scale: 1.5 shift: 0.2 }',
     b(lambda rs: positive(rs, *N)))
case("power_default", 'type: "Power"', b(lambda rs: randn(rs, *N)))
case("exp", 'type: "Exp"', b(lambda rs: randn(rs, *N)))
case("exp_base2", 'type: "Exp" exp_param { base: 2 scale: 0.5 shift: -0.3 }',
     b(lambda rs: randn(rs, *N)))
case("log", 'type: "Log"', b(lambda rs: positive(rs, *N)))
case("log_base10", 'type: "Log" log_param { base: 10 scale: 2 shift: 0.5 }',
     b(lambda rs: positive(rs, *N)))
case("threshold", 'type: "Threshold" threshold_param { threshold: 0.2 }',
     b(lambda rs: away(rs, *N, at=0.2)), wiring="none")
case("dropout_test", 'type: "Dropout" dropout_param { dropout_ratio: 0.3 }',
     b(lambda rs: randn(rs, *N)), phase="TEST")
case("swish", 'type: "Swish"', b(lambda rs: randn(rs, *N) * 2))
case("swish_beta", 'type: "Swish" swish_param { beta: 1.7 }', b(lambda rs: randn(rs, *N) * 2))


def _clip_input(rs):
    x = randn(rs, *N)
    x = np.where(np.abs(x + 0.5) < 0.05, x - 0.1, x)
    return np.where(np.abs(x - 0.7) < 0.05, x + 0.1, x).astype(np.float32)


case("clip", 'type: "Clip" clip_param { min: -0.5 max: 0.7 }', b(_clip_input))

# Softmax and losses
case("softmax", 'type: "Softmax"', b(lambda rs: randn(rs, 2, 5, 3, 4) * 2))
case("softmax_axis2", 'type: "Softmax" softmax_param { axis: 2 }',
     b(lambda rs: randn(rs, 2, 3, 4, 5) * 2))
case("softmax_2d", 'type: "Softmax" softmax_param { axis: -1 }', b(lambda rs: randn(rs, 4, 6)))

SWL_X = lambda rs: randn(rs, 2, 5, 3, 4) * 2  # noqa: E731
SWL_L = lambda rs: labels(rs, 5, 2, 1, 3, 4)  # noqa: E731
case("swl_2d", 'type: "SoftmaxWithLoss"', b(lambda rs: randn(rs, 6, 5) * 2,
                                            lambda rs: labels(rs, 5, 6)))
case("swl_spatial", 'type: "SoftmaxWithLoss"', b(SWL_X, SWL_L))
case("swl_ignore", 'type: "SoftmaxWithLoss" loss_param { ignore_label: 2 }', b(SWL_X, SWL_L))
case("swl_full", 'type: "SoftmaxWithLoss" loss_param { ignore_label: 2 normalization: FULL }',
     b(SWL_X, SWL_L))
case("swl_batch", 'type: "SoftmaxWithLoss" loss_param { ignore_label: 2 '
     'normalization: BATCH_SIZE }', b(SWL_X, SWL_L))
case("swl_none", 'type: "SoftmaxWithLoss" loss_param { ignore_label: 2 normalization: NONE }',
     b(SWL_X, SWL_L))
case("swl_normalize_false", 'type: "SoftmaxWithLoss" loss_param { ignore_label: 2 '
     'normalize: false }', b(SWL_X, SWL_L))
case("swl_normalize_true", 'type: "SoftmaxWithLoss" loss_param { normalize: true }',
     b(SWL_X, SWL_L))
case("swl_axis2", 'type: "SoftmaxWithLoss" softmax_param { axis: 2 }',
     b(lambda rs: randn(rs, 2, 3, 5), lambda rs: labels(rs, 5, 2, 3)))
# (BVLC's SoftmaxWithLoss cannot have a second top: its inner Softmax copies the loss weights)
case("swl_weight", 'type: "SoftmaxWithLoss" loss_weight: 2.5', b(SWL_X, SWL_L))


def _swl_clamp(rs):
    x = randn(rs, 4, 3)
    lab = np.array([0, 1, 2, 0], np.float32)
    x[0] = [-100.0, 100.0, 0.0]  # p(label) underflows: Caffe clamps at FLT_MIN (loss 87.3365)
    return [x, lab]


case("swl_clamp", 'type: "SoftmaxWithLoss"', _swl_clamp)

SCE_X = lambda rs: randn(rs, 3, 4, 2) * 3  # noqa: E731
case("sigmoid_ce", 'type: "SigmoidCrossEntropyLoss"',
     b(SCE_X, lambda rs: rs.rand(3, 4, 2).astype(np.float32)))


def _sce_ignore(rs):
    x = randn(rs, 3, 4, 2) * 3
    x.flat[:2] = [40.0, -40.0]  # the stable log(1 + exp(-|x|)) form
    t = labels(rs, 2, 3, 4, 2)
    t.flat[3::5] = -1
    return [x, t]


case("sigmoid_ce_ignore", 'type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: -1 '
     'normalization: VALID }', _sce_ignore)
case("sigmoid_ce_none_weight", 'type: "SigmoidCrossEntropyLoss" loss_weight: 0.5 '
     'loss_param { normalization: NONE }', b(SCE_X, lambda rs: labels(rs, 2, 3, 4, 2)))
case("sigmoid_ce_full", 'type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: -1 '
     'normalization: FULL }', _sce_ignore)
case("euclidean", 'type: "EuclideanLoss"', b(lambda rs: randn(rs, 4, 3, 2),
                                             lambda rs: randn(rs, 4, 3, 2)))
case("euclidean_weight", 'type: "EuclideanLoss" loss_weight: 3', b(lambda rs: randn(rs, 5, 3),
                                                                   lambda rs: randn(rs, 5, 3)))
def _hinge(rs):
    # values away from the hinges at x = 1 (true class) and x = -1 (others)
    x = rs.uniform(-2.5, 2.5, (6, 5))
    x = np.where(np.abs(np.abs(x) - 1) < 0.1, x * 1.3, x).astype(np.float32)
    return [x, labels(rs, 5, 6)]


case("hinge_l1", 'type: "HingeLoss"', _hinge)
case("hinge_l2", 'type: "HingeLoss" hinge_loss_param { norm: L2 }', _hinge)
case("hinge_l2_weight", 'type: "HingeLoss" loss_weight: 2 hinge_loss_param { norm: L2 }',
     lambda rs: [_hinge(rs)[0].reshape(6, 5, 1, 1), labels(rs, 5, 6)])


def _contrastive(rs):
    a = randn(rs, 6, 4, 1, 1) * 0.5
    bb = randn(rs, 6, 4, 1, 1) * 0.5
    y = np.array([1, 0, 1, 0, 0, 1], np.float32).reshape(6, 1, 1, 1)
    return [a, bb, y]


case("contrastive", 'type: "ContrastiveLoss"', _contrastive)
case("contrastive_legacy", 'type: "ContrastiveLoss" contrastive_loss_param { '
     'legacy_version: true }', _contrastive)
case("contrastive_margin", 'type: "ContrastiveLoss" contrastive_loss_param { margin: 2.5 }',
     _contrastive)


def _infogain(rs, shape=(4, 5), lshape=(4,), k=5):
    x = randn(rs, *shape) * 2
    lab = labels(rs, k, *lshape)
    h = rs.uniform(0, 1, (1, 1, k, k)).astype(np.float32)
    return [x, lab, h]


case("infogain", 'type: "InfogainLoss"', _infogain, wiring="wired", diff=[0])
case("infogain_spatial_ignore", 'type: "InfogainLoss" loss_param { ignore_label: 1 }',
     lambda rs: _infogain(rs, (2, 5, 3), (2, 3)), wiring="wired", diff=[0])
case("infogain_axis2_full", 'type: "InfogainLoss" infogain_loss_param { axis: 2 } '
     'loss_param { normalization: FULL }', lambda rs: _infogain(rs, (2, 3, 4), (2, 3), 4),
     wiring="wired", diff=[0])


def _mlogistic(rs):
    p = probs(rs, 5, 4)
    lab = np.array([0, 1, 2, 3, 1], np.float32)
    p[4, 1] = 1e-25  # below Caffe's kLOG_THRESHOLD 1e-20
    return [p, lab]


case("multinomial_logistic", 'type: "MultinomialLogisticLoss"', _mlogistic)

# Accuracy and ArgMax (no backward)
ACC = lambda rs: [distinct(rs, 8, 5), labels(rs, 5, 8)]  # noqa: E731
case("accuracy", 'type: "Accuracy"', ACC, phase="TEST", wiring="none")
case("accuracy_top3", 'type: "Accuracy" accuracy_param { top_k: 3 }', ACC, phase="TEST",
     wiring="none")
case("accuracy_ignore", 'type: "Accuracy" accuracy_param { ignore_label: 1 }', ACC,
     phase="TEST", wiring="none")
case("accuracy_per_class", 'type: "Accuracy" accuracy_param { top_k: 2 }', ACC, ntop=2,
     phase="TEST", wiring="none")
case("accuracy_spatial", 'type: "Accuracy" accuracy_param { ignore_label: 0 }',
     lambda rs: [distinct(rs, 2, 4, 3, 5), labels(rs, 4, 2, 3, 5)], ntop=2, phase="TEST",
     wiring="none")
case("argmax", 'type: "ArgMax"', b(lambda rs: distinct(rs, 4, 6)), wiring="none")
case("argmax_maxval", 'type: "ArgMax" argmax_param { out_max_val: true }',
     b(lambda rs: distinct(rs, 3, 2, 2, 3)), wiring="none")
case("argmax_top3_maxval", 'type: "ArgMax" argmax_param { top_k: 3 out_max_val: true }',
     b(lambda rs: distinct(rs, 4, 6)), wiring="none")
case("argmax_axis1", 'type: "ArgMax" argmax_param { axis: 1 }',
     b(lambda rs: distinct(rs, 2, 5, 3, 4)), wiring="none")
case("argmax_axis2_top2_maxval", 'type: "ArgMax" argmax_param { axis: 2 top_k: 2 '
     'out_max_val: true }', b(lambda rs: distinct(rs, 2, 3, 5, 2)), wiring="none")
case("argmax_axis_neg_top2", 'type: "ArgMax" argmax_param { axis: -1 top_k: 2 }',
     b(lambda rs: distinct(rs, 2, 3, 5)), wiring="none")

# Shape layers
case("concat", 'type: "Concat"', b(lambda rs: randn(rs, 2, 2, 3, 4),
                                   lambda rs: randn(rs, 2, 3, 3, 4),
                                   lambda rs: randn(rs, 2, 1, 3, 4)))
case("concat_axis2", 'type: "Concat" concat_param { axis: 2 }',
     b(lambda rs: randn(rs, 2, 3, 2, 4), lambda rs: randn(rs, 2, 3, 5, 4)))
case("concat_axis_neg", 'type: "Concat" concat_param { axis: -1 }',
     b(lambda rs: randn(rs, 2, 3, 2), lambda rs: randn(rs, 2, 3, 4)))
case("concat_dim_legacy", 'type: "Concat" concat_param { concat_dim: 0 }',
     b(lambda rs: randn(rs, 1, 3, 2), lambda rs: randn(rs, 3, 3, 2)))
case("slice_points", 'type: "Slice" slice_param { slice_point: 1 slice_point: 3 }',
     b(lambda rs: randn(rs, 2, 5, 3, 4)), ntop=3)
case("slice_equal_axis2", 'type: "Slice" slice_param { axis: 2 }',
     b(lambda rs: randn(rs, 2, 3, 4, 3)), ntop=2)
case("slice_dim_legacy", 'type: "Slice" slice_param { slice_dim: 0 slice_point: 2 }',
     b(lambda rs: randn(rs, 5, 3)), ntop=2)
case("split", 'type: "Split"', b(lambda rs: randn(rs, 2, 3, 4)), ntop=3)
case("flatten", 'type: "Flatten"', b(lambda rs: randn(rs, 2, 3, 4, 5)))
case("flatten_axes", 'type: "Flatten" flatten_param { axis: 1 end_axis: 2 }',
     b(lambda rs: randn(rs, 2, 3, 4, 5)))
case("flatten_axis2", 'type: "Flatten" flatten_param { axis: 2 }',
     b(lambda rs: randn(rs, 2, 3, 4, 5)))
case("reshape", 'type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 2 } }',
     b(lambda rs: randn(rs, 2, 3, 4, 5)))
case("reshape_axis", 'type: "Reshape" reshape_param { shape { dim: 12 } axis: 1 num_axes: 2 }',
     b(lambda rs: randn(rs, 2, 3, 4, 5)))
case("reshape_insert", 'type: "Reshape" reshape_param { shape { dim: 1 } axis: -1 '
     'num_axes: 0 }', b(lambda rs: randn(rs, 2, 3)))
case("crop", 'type: "Crop" crop_param { axis: 2 offset: 1 }',
     b(lambda rs: randn(rs, 2, 3, 7, 9), lambda rs: randn(rs, 2, 3, 4, 5)))
case("crop_offsets", 'type: "Crop" crop_param { axis: 1 offset: 1 offset: 2 offset: 3 }',
     b(lambda rs: randn(rs, 2, 3, 7, 9), lambda rs: randn(rs, 2, 2, 4, 5)))
case("crop_default", 'type: "Crop"',
     b(lambda rs: randn(rs, 2, 3, 7, 9), lambda rs: randn(rs, 1, 1, 4, 5)))
case("eltwise_sum", 'type: "Eltwise"', b(lambda rs: randn(rs, 2, 3, 4),
                                         lambda rs: randn(rs, 2, 3, 4)))
case("eltwise_sum_coeff", 'type: "Eltwise" eltwise_param { operation: SUM coeff: 1 '
     'coeff: -0.5 coeff: 2 }', b(lambda rs: randn(rs, 2, 3, 4), lambda rs: randn(rs, 2, 3, 4),
                                 lambda rs: randn(rs, 2, 3, 4)))
case("eltwise_prod", 'type: "Eltwise" eltwise_param { operation: PROD }',
     b(lambda rs: away(rs, 2, 3, 4), lambda rs: away(rs, 2, 3, 4),
       lambda rs: away(rs, 2, 3, 4)))
case("eltwise_prod_unstable", 'type: "Eltwise" eltwise_param { operation: PROD '
     'stable_prod_grad: false }', b(lambda rs: away(rs, 2, 3, 4), lambda rs: away(rs, 2, 3, 4)))


def _eltwise_max(rs):
    v = distinct(rs, 3, 2, 3, 4)
    return [v[0], v[1], v[2]]


case("eltwise_max", 'type: "Eltwise" eltwise_param { operation: MAX }', _eltwise_max)
case("tile", 'type: "Tile" tile_param { tiles: 3 }', b(lambda rs: randn(rs, 2, 3, 2)))
case("tile_axis_neg", 'type: "Tile" tile_param { axis: -1 tiles: 2 }',
     b(lambda rs: randn(rs, 2, 3, 4)))
case("tile_axis0", 'type: "Tile" tile_param { axis: 0 tiles: 2 }',
     b(lambda rs: randn(rs, 2, 3)))
R = lambda rs: away(rs, 2, 3, 4)  # noqa: E731
case("reduction_sum", 'type: "Reduction"', b(R))
case("reduction_sum_axis1", 'type: "Reduction" reduction_param { operation: SUM axis: 1 }',
     b(R))
case("reduction_asum", 'type: "Reduction" reduction_param { operation: ASUM axis: 1 '
     'coeff: 0.5 }', b(R))
case("reduction_sumsq", 'type: "Reduction" reduction_param { operation: SUMSQ axis: 2 }',
     b(R))
case("reduction_mean", 'type: "Reduction" reduction_param { operation: MEAN axis: 1 '
     'coeff: -2 }', b(R))
case("reduction_mean_all", 'type: "Reduction" reduction_param { operation: MEAN }', b(R))
case("reduction_asum_neg", 'type: "Reduction" reduction_param { operation: ASUM axis: -1 }',
     b(R))

# Embed, Filter, BatchReindex: index bottoms (no gradient; force_backward would abort)
case("embed", 'type: "Embed" embed_param { input_dim: 7 num_output: 4 }',
     b(lambda rs: np.array([[0, 3, 6], [3, 3, 1]], np.float32)), wiring="wired",
     top_loss_weight=True)
case("embed_nobias", 'type: "Embed" embed_param { input_dim: 5 num_output: 3 '
     'bias_term: false }', b(lambda rs: labels(rs, 5, 2, 2, 3)), wiring="wired",
     top_loss_weight=True)
case("filter", 'type: "Filter"', b(lambda rs: randn(rs, 5, 3, 2, 2), lambda rs: randn(rs, 5, 4),
                                   lambda rs: np.array([1, 0, 1, 1, 0], np.float32)),
     ntop=2, wiring="wired", diff=[0, 1], top_loss_weight=True)
case("batch_reindex", 'type: "BatchReindex"',
     b(lambda rs: randn(rs, 5, 3, 2), lambda rs: np.array([4, 0, 0, 2, 4, 4], np.float32)),
     wiring="wired", diff=[0], top_loss_weight=True)


# BatchNorm: blobs are (mean sum, variance sum, scale factor)
def _bn_params(rs, shapes):
    c = shapes[0]
    factor = 1.7
    return [(randn(rs, *c) * factor).astype(np.float32),
            (positive(rs, *c, lo=0.3, hi=2.0) * factor).astype(np.float32),
            np.array([factor], np.float32).reshape(shapes[2])]


BN = lambda rs: randn(rs, 4, 3, 2, 3) * 2 + 0.5  # noqa: E731
case("batchnorm_global", 'type: "BatchNorm"', b(BN), phase="TEST", params=_bn_params)
case("batchnorm_global_eps", 'type: "BatchNorm" batch_norm_param { eps: 0.01 }', b(BN),
     phase="TEST", params=_bn_params)
case("batchnorm_train", 'type: "BatchNorm"', b(BN), params=_bn_params)
case("batchnorm_train_fraction", 'type: "BatchNorm" batch_norm_param { '
     'moving_average_fraction: 0.9 eps: 0.001 }', b(BN), params=_bn_params)
case("batchnorm_train_global", 'type: "BatchNorm" batch_norm_param { use_global_stats: true }',
     b(BN), params=_bn_params)
case("batchnorm_test_batchstats", 'type: "BatchNorm" batch_norm_param { '
     'use_global_stats: false }', b(BN), phase="TEST", params=_bn_params)
case("batchnorm_2d", 'type: "BatchNorm"', b(lambda rs: randn(rs, 6, 4)), params=_bn_params)

# Scale and Bias
S = lambda rs: randn(rs, 2, 3, 4, 5)  # noqa: E731
case("scale_bias", 'type: "Scale" scale_param { bias_term: true }', b(S))
case("scale_nobias", 'type: "Scale"', b(S))
case("scale_axis2", 'type: "Scale" scale_param { axis: 2 num_axes: 2 bias_term: true }', b(S))
case("scale_scalar", 'type: "Scale" scale_param { num_axes: 0 bias_term: true }', b(S))
case("scale_all", 'type: "Scale" scale_param { axis: 0 num_axes: -1 }', b(S))
case("scale_bottom", 'type: "Scale" scale_param { axis: 0 }',
     b(S, lambda rs: randn(rs, 2, 3)))
case("scale_bottom_bias", 'type: "Scale" scale_param { bias_term: true }',
     b(S, lambda rs: randn(rs, 3, 4)))
case("bias", 'type: "Bias"', b(S))
case("bias_axis_numaxes", 'type: "Bias" bias_param { axis: -2 num_axes: 2 }', b(S))
case("bias_bottom", 'type: "Bias"', b(S, lambda rs: randn(rs, 3, 4)))

# MVN
MV = lambda rs: randn(rs, 2, 3, 4, 5) * 2 + 1  # noqa: E731
case("mvn", 'type: "MVN"', b(MV))
case("mvn_mean_only", 'type: "MVN" mvn_param { normalize_variance: false }', b(MV))
case("mvn_across", 'type: "MVN" mvn_param { across_channels: true }', b(MV))
case("mvn_across_mean_only", 'type: "MVN" mvn_param { across_channels: true '
     'normalize_variance: false }', b(MV))
case("mvn_eps", 'type: "MVN" mvn_param { eps: 0.001 }', b(lambda rs: randn(rs, 2, 3, 2, 2)))

# SPP and Im2col
case("spp_max", 'type: "SPP" spp_param { pyramid_height: 3 }',
     b(lambda rs: distinct(rs, 2, 3, 7, 9)))
case("spp_ave", 'type: "SPP" spp_param { pyramid_height: 2 pool: AVE }',
     b(lambda rs: randn(rs, 2, 2, 5, 6)))
case("spp_height1", 'type: "SPP" spp_param { pyramid_height: 1 }',
     b(lambda rs: distinct(rs, 2, 2, 3, 4)))
case("im2col", 'type: "Im2col" convolution_param { kernel_size: 3 pad: 1 stride: 2 }',
     b(lambda rs: randn(rs, 2, 3, 5, 6)))
case("im2col_rect_dilation", 'type: "Im2col" convolution_param { kernel_h: 2 kernel_w: 3 '
     'dilation: 2 stride_h: 1 stride_w: 2 }', b(lambda rs: randn(rs, 2, 2, 6, 7)))
case("im2col_3d", 'type: "Im2col" convolution_param { kernel_size: 2 }',
     b(lambda rs: randn(rs, 1, 2, 3, 3, 4)))


# Recurrent layers: x (T x N x ...), cont (T x N)
def _cont(rs):
    return np.array([[0, 1], [1, 1], [0, 1]], np.float32)


case("rnn", 'type: "RNN" recurrent_param { num_output: 5 }',
     b(lambda rs: randn(rs, 3, 2, 4), _cont))
case("rnn_static", 'type: "RNN" recurrent_param { num_output: 3 }',
     b(lambda rs: randn(rs, 3, 2, 4), _cont, lambda rs: randn(rs, 2, 3)))
case("rnn_expose", 'type: "RNN" recurrent_param { num_output: 3 expose_hidden: true }',
     b(lambda rs: randn(rs, 3, 2, 2, 2), _cont, lambda rs: randn(rs, 1, 2, 3)), ntop=2)
case("lstm", 'type: "LSTM" recurrent_param { num_output: 4 }',
     b(lambda rs: randn(rs, 3, 2, 3), _cont))
case("lstm_static", 'type: "LSTM" recurrent_param { num_output: 3 }',
     b(lambda rs: randn(rs, 3, 2, 3), _cont, lambda rs: randn(rs, 2, 2)))
case("lstm_expose", 'type: "LSTM" recurrent_param { num_output: 3 expose_hidden: true }',
     b(lambda rs: randn(rs, 3, 2, 2), _cont, lambda rs: randn(rs, 1, 2, 3),
       lambda rs: randn(rs, 1, 2, 3)), ntop=3)
case("lstm_unit", 'type: "LSTMUnit"', b(lambda rs: randn(rs, 1, 2, 3),
                                       lambda rs: randn(rs, 1, 2, 12),
                                       lambda rs: np.array([[1, 0]], np.float32)), ntop=2)

# Ties, kinks and edge values: both sides read the same float32 bits, so Caffe's choices at
# exact ties (first or last maximum, > or >=) and at kinks are reproducible and must match.
def grid(rs, *shape, values=(-1.0, 0.0, 1.0)):
    return rs.choice(np.asarray(values, np.float32), size=shape).astype(np.float32)


G = lambda rs: grid(rs, 2, 3, 4, 5)  # noqa: E731
case("relu_kink", 'type: "ReLU" relu_param { negative_slope: 0.25 }', b(G))
case("prelu_kink", 'type: "PReLU"', b(G))
case("elu_kink", 'type: "ELU" elu_param { alpha: 0.5 }', b(G))
case("absval_kink", 'type: "AbsVal"', b(G))
case("threshold_tie", 'type: "Threshold" threshold_param { threshold: 1 }', b(G),
     wiring="none")
case("clip_bounds", 'type: "Clip" clip_param { min: -1 max: 0 }',
     b(lambda rs: grid(rs, 2, 3, 4, 5, values=(-1.5, -1.0, -0.5, 0.0, 0.5))))
case("pool_max_ties", 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 '
     'pad: 1 }', b(lambda rs: grid(rs, 2, 2, 6, 7, values=(0.0, 1.0))), ntop=2)
case("spp_max_ties", 'type: "SPP" spp_param { pyramid_height: 2 }',
     b(lambda rs: grid(rs, 1, 2, 4, 5, values=(-1.0, 0.0, 1.0))))
case("eltwise_max_ties2", 'type: "Eltwise" eltwise_param { operation: MAX }',
     b(lambda rs: grid(rs, 2, 3, 4, values=(0.0, 1.0)),
       lambda rs: grid(rs, 2, 3, 4, values=(0.0, 1.0))))
case("eltwise_max_ties3", 'type: "Eltwise" eltwise_param { operation: MAX }',
     b(lambda rs: grid(rs, 2, 3, 4, values=(0.0, 1.0)),
       lambda rs: grid(rs, 2, 3, 4, values=(0.0, 1.0)),
       lambda rs: grid(rs, 2, 3, 4, values=(0.0, 1.0))))
case("argmax_ties", 'type: "ArgMax" argmax_param { top_k: 3 out_max_val: true }',
     b(lambda rs: grid(rs, 5, 6, values=(0.0, 1.0, 2.0))), wiring="none")
case("argmax_ties_axis", 'type: "ArgMax" argmax_param { axis: 1 top_k: 2 }',
     b(lambda rs: grid(rs, 2, 5, 3, values=(0.0, 1.0))), wiring="none")
case("accuracy_ties", 'type: "Accuracy" accuracy_param { top_k: 2 }',
     lambda rs: [grid(rs, 10, 4, values=(0.0, 1.0)), labels(rs, 4, 10)], ntop=2,
     phase="TEST", wiring="none")
case("accuracy_absent_class", 'type: "Accuracy"',
     lambda rs: [distinct(rs, 6, 5), np.array([0, 1, 1, 3, 0, 3], np.float32)], ntop=2,
     phase="TEST", wiring="none")
case("accuracy_all_ignored", 'type: "Accuracy" accuracy_param { ignore_label: 2 }',
     lambda rs: [distinct(rs, 3, 4), np.full(3, 2, np.float32)], ntop=2, phase="TEST",
     wiring="none")


def _hinge_kink(rs):
    x = grid(rs, 6, 4, values=(-1.0, 0.0, 1.0, 2.0))
    return [x, labels(rs, 4, 6)]


case("hinge_l1_kink", 'type: "HingeLoss"', _hinge_kink)
case("swl_all_ignored", 'type: "SoftmaxWithLoss" loss_param { ignore_label: 1 }',
     lambda rs: [randn(rs, 3, 4), np.ones(3, np.float32)])
case("sigmoid_ce_all_ignored", 'type: "SigmoidCrossEntropyLoss" loss_param { '
     'ignore_label: -1 normalization: VALID }',
     lambda rs: [randn(rs, 3, 2), np.full((3, 2), -1, np.float32)])
case("softmax_large", 'type: "Softmax"', b(lambda rs: randn(rs, 3, 4) * 40))
case("batchnorm_global_zero", 'type: "BatchNorm"', b(BN), phase="TEST",
     params=lambda rs, shapes: [np.zeros(s, np.float32) for s in shapes])


def _contrastive_far(rs):
    a, bb, y = _contrastive(rs)
    bb[1] = a[1] + 3  # dissimilar pair beyond the margin: no gradient
    bb[3] = a[3]  # dissimilar pair at distance 0
    return [a, bb, y]


case("contrastive_far", 'type: "ContrastiveLoss"', _contrastive_far)
case("contrastive_legacy_far", 'type: "ContrastiveLoss" contrastive_loss_param { '
     'legacy_version: true }', _contrastive_far)
case("euclidean_reshaped", 'type: "EuclideanLoss"', b(lambda rs: randn(rs, 4, 6),
                                                      lambda rs: randn(rs, 4, 2, 3)))
case("power_scale0", 'type: "Power" power_param { power: 2 scale: 0 shift: 1.5 }',
     b(lambda rs: randn(rs, *N)))
case("bias_scalar", 'type: "Bias" bias_param { num_axes: 0 }', b(S))
case("conv_bigpad", 'type: "Convolution" convolution_param { num_output: 2 kernel_size: 2 '
     'pad: 3 stride: 2 }', b(lambda rs: randn(rs, 1, 2, 5, 6)))
case("deconv_gap", 'type: "Deconvolution" convolution_param { num_output: 2 kernel_size: 2 '
     'stride: 3 }', b(lambda rs: randn(rs, 1, 2, 3, 4)))
case("deconv_bigpad", 'type: "Deconvolution" convolution_param { num_output: 2 '
     'kernel_size: 5 pad: 3 stride: 2 }', b(lambda rs: randn(rs, 1, 2, 4, 5)))
case("pool_max_gap", 'type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 3 }',
     b(lambda rs: distinct(rs, 1, 2, 8, 7)))
case("pool_ave_gap", 'type: "Pooling" pooling_param { pool: AVE kernel_size: 2 stride: 3 '
     'pad: 1 }', b(lambda rs: randn(rs, 1, 2, 8, 7)))
case("pool_ave_k1_pad", 'type: "Pooling" pooling_param { pool: AVE kernel_size: 2 stride: 1 '
     'pad: 1 }', b(lambda rs: randn(rs, 1, 2, 3, 4)))
case("concat_single", 'type: "Concat"', b(lambda rs: randn(rs, 2, 3)))
case("slice_single", 'type: "Slice"', b(lambda rs: randn(rs, 2, 3)))

case("conv_axis2", 'type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 '
     'axis: 2 }', b(lambda rs: randn(rs, 2, 2, 3, 5, 6)))
case("deconv_group_nobias", 'type: "Deconvolution" convolution_param { num_output: 4 '
     'kernel_size: 2 stride: 2 group: 2 bias_term: false }', b(lambda rs: randn(rs, 2, 4, 3, 3)))
case("ip_transpose_axis2", 'type: "InnerProduct" inner_product_param { num_output: 3 axis: 2 '
     'transpose: true }', b(IPX))
case("softmax_axis0", 'type: "Softmax" softmax_param { axis: 0 }', b(lambda rs: randn(rs, 3, 4)))
case("swl_axis2_ignore", 'type: "SoftmaxWithLoss" softmax_param { axis: 2 } '
     'loss_param { ignore_label: 0 }',
     b(lambda rs: randn(rs, 2, 3, 5), lambda rs: labels(rs, 5, 2, 3)))
case("scale_bottom_scalar", 'type: "Scale"', b(S, lambda rs: np.array(1.7, np.float32)))
case("bias_bottom_scalar", 'type: "Bias"', b(S, lambda rs: np.array(-0.6, np.float32)))
case("tile_one", 'type: "Tile" tile_param { tiles: 1 }', b(lambda rs: randn(rs, 2, 3)))
case("flatten_2d", 'type: "Flatten"', b(lambda rs: randn(rs, 4, 3)))
case("reshape_infer_first", 'type: "Reshape" reshape_param { shape { dim: -1 dim: 0 dim: 5 } }',
     b(lambda rs: randn(rs, 2, 3, 4, 5)))
case("rnn_one_step", 'type: "RNN" recurrent_param { num_output: 2 }',
     b(lambda rs: randn(rs, 1, 3, 2), lambda rs: np.array([[0, 1, 0]], np.float32)))
case("lstm_no_cont", 'type: "LSTM" recurrent_param { num_output: 2 }',
     b(lambda rs: randn(rs, 4, 1, 3), lambda rs: np.zeros((4, 1), np.float32)))
case("lstm_unit_cont0", 'type: "LSTMUnit"', b(lambda rs: randn(rs, 1, 3, 2),
                                             lambda rs: randn(rs, 1, 3, 8),
                                             lambda rs: np.zeros((1, 3), np.float32)), ntop=2)
case("dummy_constant", 'type: "DummyData" dummy_data_param { shape { dim: 2 dim: 3 } '
     'shape { dim: 4 } data_filler { type: "constant" value: 0.5 } '
     'data_filler { type: "constant" value: -2 } }', lambda rs: [], ntop=2, wiring="none")
case("input", 'type: "Input" input_param { shape { dim: 2 dim: 3 } }', lambda rs: [],
     wiring="none")

case("conv_force_nd", 'type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 '
     'stride: 2 pad: 1 force_nd_im2col: true }', b(lambda rs: randn(rs, 2, 2, 5, 6)))
case("ip_axis0", 'type: "InnerProduct" inner_product_param { num_output: 3 axis: 0 }',
     b(lambda rs: randn(rs, 2, 3, 2)))
case("sigmoid_ce_reshaped", 'type: "SigmoidCrossEntropyLoss"',
     b(lambda rs: randn(rs, 3, 8), lambda rs: rs.rand(3, 4, 2).astype(np.float32)))
case("accuracy_axis2", 'type: "Accuracy" accuracy_param { axis: 2 top_k: 2 }',
     lambda rs: [distinct(rs, 2, 3, 5), labels(rs, 5, 2, 3)], phase="TEST", wiring="none")


def _with_255(rs, x, lab):
    lab = lab.copy()
    lab.flat[::3] = 255  # segmentation's "void": ignored, never used as an index
    return [x, lab]


case("swl_ignore_255", 'type: "SoftmaxWithLoss" loss_param { ignore_label: 255 }',
     lambda rs: _with_255(rs, SWL_X(rs), SWL_L(rs)))
case("accuracy_ignore_255", 'type: "Accuracy" accuracy_param { ignore_label: 255 }',
     lambda rs: _with_255(rs, distinct(rs, 2, 4, 3, 5), labels(rs, 4, 2, 3, 5)), ntop=2,
     phase="TEST", wiring="none")
case("infogain_ignore_255", 'type: "InfogainLoss" loss_param { ignore_label: 255 }',
     lambda rs: _with_255(rs, *_infogain(rs)[:2]) + [_infogain(rs)[2]], wiring="wired",
     diff=[0])


def _prod_zeros(rs):
    xs = [away(rs, 2, 3, 4) for _ in range(3)]
    xs[0].flat[::4] = 0
    xs[1].flat[::6] = 0  # some positions with two zero factors
    return xs


case("eltwise_prod_zeros", 'type: "Eltwise" eltwise_param { operation: PROD }', _prod_zeros)
case("batchnorm_train_single", 'type: "BatchNorm"', b(lambda rs: randn(rs, 1, 3)),
     params=_bn_params)
case("mvn_across_2d", 'type: "MVN" mvn_param { across_channels: true }',
     b(lambda rs: randn(rs, 4, 6) * 2 + 1))
# (a selector of all zeros crashes BVLC's Filter: SIGFPE on the empty top)
case("filter_all", 'type: "Filter"', b(lambda rs: randn(rs, 3, 2),
                                       lambda rs: np.array([1, 2, -1], np.float32)),
     wiring="wired", diff=[0], top_loss_weight=True)
case("exp_scale", 'type: "Exp" exp_param { scale: 0.5 shift: 1 }', b(lambda rs: randn(rs, *N)))
case("slice_axis0", 'type: "Slice" slice_param { axis: 0 slice_point: 1 }',
     b(lambda rs: randn(rs, 3, 2, 2)), ntop=2)

# Parameter, Silence
case("parameter", 'type: "Parameter" parameter_param { shape { dim: 2 dim: 3 dim: 4 } }',
     lambda rs: [])
case("silence", 'type: "Silence"', b(lambda rs: randn(rs, 2, 3), lambda rs: randn(rs, 4)),
     ntop=0)


# -- generator --------------------------------------------------------------------------------
def net_text(c, bottoms):
    """The net prototxt for case `c` and the text of the layer under test."""
    nb = len(bottoms)
    bnames = ["b%d" % i for i in range(nb)]
    tnames = ["t%d" % i for i in range(c["ntop"])]
    from_param = set(c["diff"]) if c["wiring"] == "wired" else set()
    lines = []
    if c["wiring"] == "force":
        lines.append("force_backward: true")
    inputs = [i for i in range(nb) if i not in from_param]
    if inputs:
        shapes = "".join(" shape {%s }" % "".join(" dim: %d" % d for d in bottoms[i].shape)
                         for i in inputs)
        tops = "".join(' top: "%s"' % bnames[i] for i in inputs)
        lines.append('layer { name: "input" type: "Input"%s input_param {%s } }'
                     % (tops, shapes))
    for i in sorted(from_param):
        dims = "".join(" dim: %d" % d for d in bottoms[i].shape)
        lines.append('layer { name: "src%d" type: "Parameter" top: "%s" '
                     'parameter_param { shape {%s } } }' % (i, bnames[i], dims))
    layer = 'name: "%s" %s' % (c["name"], c["layer"])
    layer += "".join(' bottom: "%s"' % n for n in bnames)
    layer += "".join(' top: "%s"' % n for n in tnames)
    if c["top_loss_weight"]:
        layer += " loss_weight: 1" * c["ntop"]
    lines.append("layer { %s }" % layer)
    return "\n".join(lines) + "\n", layer, bnames, tnames


def run_case(c, workdir):
    rs = np.random.RandomState(zlib.crc32(c["name"].encode()) & 0x7fffffff)
    bottoms = [np.asarray(x, np.float32) for x in c["bottoms"](rs)]
    text, layer_text, bnames, tnames = net_text(c, bottoms)
    path = "%s/%s.prototxt" % (workdir, c["name"])
    with open(path, "w") as f:
        f.write(text)
    phase = caffe.TRAIN if c["phase"] == "TRAIN" else caffe.TEST
    net = caffe.Net(path, phase)
    layer = net.layer_dict[c["name"]]
    out = {"prototxt": np.array(layer_text), "phase": np.array(c["phase"])}
    for i, x in enumerate(bottoms):
        if i in c["diff"] and c["wiring"] == "wired":  # Parameter's forward shares its blob
            net.params["src%d" % i][0].data[...] = x
        else:
            net.blobs[bnames[i]].data[...] = x
        out["bottom%d" % i] = x
    shapes = [p.data.shape for p in layer.blobs]
    if c["params"] is not None:
        values = c["params"](rs, shapes)
    else:
        values = [randn(rs, *s) * 0.5 for s in shapes]
    for i, (p, v) in enumerate(zip(layer.blobs, values)):
        p.data[...] = v
        out["param%d" % i] = p.data.copy()
    for n in bnames:  # NaN marks what backward does not write (before forward: HingeLoss
        net.blobs[n].diff[...] = np.nan  # keeps its margins in bottom[0]'s diff until backward)
    for i in c["diff"] if c["wiring"] == "wired" else ():
        net.params["src%d" % i][0].diff[...] = np.nan  # forward shares it with the bottom
    net.forward()
    for i, n in enumerate(bnames):
        assert np.array_equal(net.blobs[n].data, bottoms[i]), "bottom %d changed" % i
    for i, t in enumerate(tnames):
        out["top%d" % i] = net.blobs[t].data.copy()
    for i, p in enumerate(layer.blobs):
        if not np.array_equal(p.data, out["param%d" % i]):
            out["param_fwd%d" % i] = p.data.copy()
    if c["wiring"] == "none":
        return out
    for p in layer.blobs:
        p.diff[...] = 0
    loss_weights = net.blob_loss_weights
    for i, t in enumerate(tnames):
        if c["top_loss_weight"] or loss_weights[t] == 0:
            net.blobs[t].diff[...] = randn(rs, *net.blobs[t].diff.shape)
        out["top_diff%d" % i] = net.blobs[t].diff.copy()
    net.backward()
    for i, n in enumerate(bnames):
        d = net.blobs[n].diff
        nan = np.isnan(d)
        if nan.all():
            continue
        if nan.any():
            raise RuntimeError("%s: backward wrote part of bottom %d" % (c["name"], i))
        out["bottom_diff%d" % i] = d.copy()
    for i, p in enumerate(layer.blobs):
        out["param_diff%d" % i] = p.diff.copy()
    return out


def main(argv):
    import os
    import tempfile
    dest = argv[1] if len(argv) > 1 else DEFAULT_OUT
    only = set(argv[2:])
    caffe.set_mode_cpu()
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    arrays = {}
    with tempfile.TemporaryDirectory() as workdir:
        for c in CASES:
            if only and c["name"] not in only:
                continue
            for key, value in run_case(c, workdir).items():
                arrays["%s/%s" % (c["name"], key)] = value
    np.savez_compressed(dest, **arrays)
    print("%d cases, %d arrays -> %s (%d bytes)"
          % (len({k.split("/")[0] for k in arrays}), len(arrays), dest, os.path.getsize(dest)))


if __name__ == "__main__":
    main(sys.argv)
