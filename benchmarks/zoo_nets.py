"""Zoo nets forward+backward (what `netkit time` reports): netkit vs PyTorch CPU, same run.

For each model in models/ (default: bvlc_reference_caffenet, bvlc_googlenet, resnet50) at
the deploy file's batch (CaffeNet 10) or --batch, builds the netkit Net and a PyTorch
mirror of the same graph (built layer by layer from the netkit Net, sharing its weights,
through torch.nn.functional), and times one training-style step on each: forward, then
backward from the outputs with gradients for every parameter and every blob they affect,
none for the input. The two alternate in blocks; medians and netkit / PyTorch ratios are
printed. Both use 2 threads.

This machine's environment may set OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which force
slower BLAS kernels; the script runs itself twice, with the environment as given and with
both variables unset (for this benchmark's own processes only), and says which is which.
Usage: python benchmarks/zoo_nets.py [--models caffenet,googlenet,resnet50] [--iters 10]
"""
import argparse
import os
import sys

from alternate import time_blocks
from blas_env import run_as_given_and_unset

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = {"caffenet": "bvlc_reference_caffenet", "alexnet": "bvlc_alexnet",
          "googlenet": "bvlc_googlenet", "resnet50": "resnet50", "vgg16": "vgg16",
          "squeezenet": "squeezenet1_1", "mobilenet": "mobilenet_v1"}


def build_netkit(model, batch):
    import numpy as np
    import netkit
    from netkit.tools.timing import backward_as_in_training
    from netkit.protoio import load_net_param
    param, _ = load_net_param(os.path.join(ROOT, "models", model, "deploy.prototxt"))
    if batch:
        for layer in param.layer:
            if layer.type == "Input":
                for shape in layer.input_param.shape:
                    shape.dim[0] = batch
    net = netkit.Net(param, phase=netkit.TEST)
    rs = np.random.RandomState(0)
    for name, blobs in net.params.items():
        for b in blobs:
            fan_in = max(1, b.count // b.shape[0]) if len(b.shape) > 1 else 1
            b.data[...] = rs.standard_normal(b.shape) * np.sqrt(2.0 / fan_in)
            if len(b.shape) == 1 and net.layers[net.layer_names.index(name)].type == "BatchNorm":
                b.data[...] = 1.0  # mean, variance and the moving-average factor
    for name in net.inputs:
        net.blobs[name].data[...] = rs.uniform(-1, 1, net.blobs[name].shape)
    backward_as_in_training(net)
    return net


class TorchMirror:
    """The netkit Net's graph run by torch.nn.functional, with copies of its weights."""

    def __init__(self, net):
        import torch
        self.torch = torch
        self.net = net
        self.weights = {name: [torch.tensor(b.data, requires_grad=True) for b in blobs]
                        for name, blobs in net.params.items()}
        self.inputs = {name: torch.tensor(net.blobs[name].data) for name in net.inputs}

    def forward(self):
        blobs = dict(self.inputs)
        for name, layer, bottoms, tops in zip(self.net.layer_names, self.net.layers,
                                             self.net.layer_bottom_names, self.net.layer_top_names):
            if layer.type == "Input":
                continue
            outs = self.layer(layer, [blobs[b] for b in bottoms], self.weights.get(name, []))
            for t, out in zip(tops, outs):
                blobs[t] = out
        return [blobs[name] for name in self.net.outputs]

    def layer(self, layer, x, w):
        import torch.nn.functional as F
        torch, lp, kind = self.torch, layer.layer_param, layer.type
        if kind == "Convolution":
            p = lp.convolution_param
            pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad[0] if p.pad else 0,) * 2
            stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") else \
                (p.stride[0] if p.stride else 1,) * 2
            dilation = p.dilation[0] if p.dilation else 1
            return [F.conv2d(x[0], w[0], w[1] if len(w) > 1 else None, stride, pad, dilation,
                             p.group)]
        if kind == "ReLU":
            slope = lp.relu_param.negative_slope
            return [F.leaky_relu(x[0], slope) if slope else F.relu(x[0])]
        if kind == "Pooling":
            p = lp.pooling_param
            if p.global_pooling:
                kernel, stride, pad = x[0].shape[2:], 1, 0
            else:
                kernel, stride, pad = p.kernel_size, p.stride, p.pad
            if p.pool == 0:
                return [F.max_pool2d(x[0], kernel, stride, pad, ceil_mode=True)]
            return [F.avg_pool2d(x[0], kernel, stride, pad, ceil_mode=True)]
        if kind == "LRN":
            p = lp.lrn_param
            return [F.local_response_norm(x[0], p.local_size, p.alpha, p.beta, p.k)]
        if kind == "InnerProduct":
            return [F.linear(x[0].flatten(1), w[0], w[1] if len(w) > 1 else None)]
        if kind == "Dropout":
            return [x[0]]  # TEST phase: identity, as netkit's
        if kind == "Concat":
            return [torch.cat(x, dim=lp.concat_param.axis)]
        if kind == "Softmax":
            return [F.softmax(x[0], dim=1)]
        if kind == "BatchNorm":
            scale = w[2].detach()[0]
            factor = 0 if scale == 0 else 1 / scale
            return [F.batch_norm(x[0], w[0].detach() * factor, w[1].detach() * factor,
                                 eps=lp.batch_norm_param.eps)]
        if kind == "Scale":
            shape = (1, -1, 1, 1)
            out = x[0] * w[0].view(shape)
            return [out + w[1].view(shape) if len(w) > 1 else out]
        if kind == "Eltwise":
            out = x[0]
            for other in x[1:]:
                out = out + other
            return [out]
        if kind == "Split":
            return [x[0]] * len(lp.top)
        raise NotImplementedError("no PyTorch mirror for layer type %s" % kind)


def run(models, iters, batch):
    import numpy as np
    import torch
    torch.set_num_threads(2)
    import logging
    logging.getLogger("netkit").setLevel(logging.WARNING)
    for key in models:
        net = build_netkit(MODELS.get(key, key), batch)
        mirror = TorchMirror(net)
        outputs = mirror.forward()
        net.forward_layers()
        for name, out in zip(net.outputs, outputs):
            diff = np.abs(out.detach().numpy() - net.blobs[name].data)
            assert diff.max() <= 1e-3 * max(1.0, np.abs(net.blobs[name].data).max()), \
                "%s: the PyTorch mirror disagrees with netkit on %s" % (key, name)
        seeds = [np.random.RandomState(1).standard_normal(net.blobs[n].shape).astype(np.float32)
                 for n in net.outputs]

        def netkit_step():
            net.forward_layers()
            for name, seed in zip(net.outputs, seeds):
                net.blobs[name].diff[...] = seed
            net.backward_layers()

        torch_seeds = [torch.from_numpy(s) for s in seeds]

        def torch_step():
            outs = mirror.forward()
            torch.autograd.backward(outs, torch_seeds)

        n_t, t_t = time_blocks([netkit_step, torch_step], iters)
        print("  %-10s batch %3d: netkit %8.1f ms, PyTorch %8.1f ms, ratio %.2fx"
              % (key, net.blobs[net.inputs[0]].shape[0], n_t * 1e3, t_t * 1e3, n_t / t_t),
              flush=True)
        net.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="caffenet,googlenet,resnet50")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--batch", type=int, default=0, help="default: the deploy file's")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    models = args.models.split(",")
    if args.child:
        run(models, args.iters, args.batch)
        return
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--iters", str(args.iters),
           "--models", args.models, "--batch", str(args.batch)]
    print("forward+backward, median of %d steps, 2 threads" % args.iters)
    run_as_given_and_unset(cmd)


if __name__ == "__main__":
    main()
