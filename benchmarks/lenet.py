"""LeNet training step (batch 64, Caffe's stock solver): netkit vs PyTorch CPU, same run.

Times forward+backward (what `netkit time` reports) and the full solver step (forward,
backward, SGD update with momentum 0.9, weight decay 5e-4, bias lr_mult 2) on random
MNIST-shaped data, prints both medians and the ratio netkit / PyTorch.

This machine's environment sets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which force
slower BLAS kernels; the benchmark runs itself twice, once with the environment as given
and once with both variables unset (for this benchmark's own processes only), and says
which is which. Usage: python benchmarks/lenet.py [--iters 200]
"""
import argparse
import os
import statistics
import sys
import time

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


def time_netkit(batch, iters, x, y):
    from netkit.solvers import SGDSolver
    solver = SGDSolver(lenet_solver_param(batch), backend="cpu")
    net = solver.net
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = y
    fb, step = [], []
    for i in range(iters + 10):
        t = time.perf_counter()
        net.clear_param_diffs()
        net.forward_backward()
        t1 = time.perf_counter()
        solver.apply_update()
        solver.iter += 1
        t2 = time.perf_counter()
        if i >= 10:
            fb.append(t1 - t)
            step.append(t2 - t)
    return statistics.median(fb), statistics.median(step)


def time_torch(batch, iters, x, y):
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
    fb, step = [], []
    for i in range(iters + 10):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss_fn(model(xt), yt).backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        if i >= 10:
            fb.append(t1 - t)
            step.append(t2 - t)
    return statistics.median(fb), statistics.median(step)


def run(batch, iters):
    import numpy as np
    rs = np.random.RandomState(0)
    x = rs.uniform(0, 1, (batch, 1, 28, 28)).astype(np.float32)
    y = rs.randint(0, 10, batch).astype(np.float32)
    n_fb, n_step = time_netkit(batch, iters, x, y)
    t_fb, t_step = time_torch(batch, iters, x, y)
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
