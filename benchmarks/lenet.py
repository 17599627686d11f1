"""LeNet training step (batch 64, Caffe's stock solver): netkit vs PyTorch CPU, same run.

Times forward+backward (what `netkit time` reports) and the full solver step (forward,
backward, SGD update with momentum 0.9, weight decay 5e-4, bias lr_mult 2) on random
MNIST-shaped data, netkit and PyTorch alternating in blocks of 10 steps, and prints both
medians and the ratio netkit / PyTorch.

This machine's environment sets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which force
slower BLAS kernels; the benchmark runs itself twice, once with the environment as given
and once with both variables unset (for this benchmark's own processes only), and says
which is which. Usage: python benchmarks/lenet.py [--iters 200]
"""
import argparse
import os
import sys

from alternate import time_blocks
from blas_env import run_as_given_and_unset

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def lenet_solver_param(batch):
    from google.protobuf import text_format
    from netkit import netkit_pb2 as pb
    with open(os.path.join(ROOT, "examples", "mnist", "lenet_solver.prototxt")) as f:
        param = text_format.Parse(f.read(), pb.SolverParameter())
    with open(os.path.join(ROOT, "examples", "mnist", "lenet_train_test.prototxt")) as f:
        net = text_format.Parse(f.read(), pb.NetParameter())
    # Replace the LMDB layers by an Input layer so both sides time compute, not I/O.
    layers = [l for l in net.layer if l.type != "Data"]
    del net.layer[:]
    data = net.layer.add()
    data.name, data.type = "data", "Input"
    data.top.extend(["data", "label"])
    data.input_param.shape.add().dim.extend([batch, 1, 28, 28])
    data.input_param.shape.add().dim.extend([batch])
    net.layer.extend(layers)
    param.ClearField("net")
    param.net_param.CopyFrom(net)
    param.test_interval = 0
    del param.test_iter[:]
    param.display = 0
    param.snapshot = 0
    return param


def netkit_steps(batch, x, y):
    """(forward+backward, full solver step) closures for netkit on data x, labels y."""
    from netkit.solvers import SGDSolver
    solver = SGDSolver(lenet_solver_param(batch), backend="cpu")
    net = solver.net
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = y

    def forward_backward():
        net.clear_param_diffs()
        net.forward_backward()

    def step():
        forward_backward()
        solver.apply_update()
        solver.iter += 1
    return forward_backward, step


def torch_steps(batch, x, y):
    """The same two closures for the PyTorch mirror (torch.optim.SGD has Caffe's algebra
    here up to where the learning rate multiplies: lr outside the momentum history)."""
    import torch
    import torch.nn as nn
    torch.set_num_threads(2)
    model = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5),
                          nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                          nn.Linear(500, 10))
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([{"params": weights, "lr": 0.01, "weight_decay": 5e-4},
                           {"params": biases, "lr": 0.02, "weight_decay": 0.0}], momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype("int64"))

    def forward_backward():
        opt.zero_grad(set_to_none=False)
        loss_fn(model(xt), yt).backward()

    def step():
        forward_backward()
        opt.step()
    return forward_backward, step


def run(batch, iters):
    import numpy as np
    rs = np.random.RandomState(0)
    x = rs.uniform(0, 1, (batch, 1, 28, 28)).astype(np.float32)
    y = rs.randint(0, 10, batch).astype(np.float32)
    n_fb, n_step = netkit_steps(batch, x, y)
    t_fb, t_step = torch_steps(batch, x, y)
    # The contenders alternate in blocks of 10 steps, so both meet the same machine.
    n_fb, t_fb = time_blocks([n_fb, t_fb], iters, block=10)
    n_step, t_step = time_blocks([n_step, t_step], iters, block=10)
    print("  forward+backward: netkit %.2f ms, PyTorch %.2f ms, ratio %.2fx"
          % (n_fb * 1e3, t_fb * 1e3, n_fb / t_fb))
    print("  full SGD step:    netkit %.2f ms, PyTorch %.2f ms, ratio %.2fx"
          % (n_step * 1e3, t_step * 1e3, n_step / t_step))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run(args.batch, args.iters)
        return
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--iters", str(args.iters),
           "--batch", str(args.batch)]
    print("LeNet batch %d, median of %d steps, 2 threads" % (args.batch, args.iters))
    run_as_given_and_unset(cmd)


if __name__ == "__main__":
    main()
