"""LeNet's vision layers, forward+backward: netkit (numpy) vs PyTorch CPU, same run.

Times conv1 (20 5x5 on 1x28x28), pool1 (MAX 2/2), conv2 (50 5x5), pool2 (MAX 2/2), ip1 (500)
and ip2 (10) at batch 64, each alone and chained, with the parameter gradients and every
bottom gradient except the data's, as a training step computes them. PyTorch runs the same
ops through torch.nn.functional with 2 threads. The two take turns in blocks of steps; the
script prints medians and netkit / PyTorch ratios ("total" is the six chained).

This machine's environment may set OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which force
slower BLAS kernels; the script runs itself twice, with the environment as given and with
both variables unset, and says which is which. Usage:
    python benchmarks/layers_vision.py [--iters 100] [--batch 64]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

from blas_env import BLAS_VARS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

LAYERS = [
    ("conv1", 'type: "Convolution" convolution_param { num_output: 20 kernel_size: 5 '
              'weight_filler { type: "xavier" } }'),
    ("pool1", 'type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }'),
    ("conv2", 'type: "Convolution" convolution_param { num_output: 50 kernel_size: 5 '
              'weight_filler { type: "xavier" } }'),
    ("pool2", 'type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }'),
    ("ip1", 'type: "InnerProduct" inner_product_param { num_output: 500 '
            'weight_filler { type: "xavier" } }'),
    ("ip2", 'type: "InnerProduct" inner_product_param { num_output: 10 '
            'weight_filler { type: "xavier" } }'),
]


def netkit_chain(batch):
    """The six layers wired bottom to top on the cpu backend, set up and shaped."""
    import numpy as np
    from google.protobuf import text_format
    import netkit.layers  # noqa: F401  (registers every layer)
    from netkit import netkit_pb2 as pb
    from netkit.blob import Blob
    from netkit.registry import layers
    data = Blob((batch, 1, 28, 28))
    data.data[...] = np.random.RandomState(0).rand(batch, 1, 28, 28)
    chain, bottom = [], data
    for name, text in LAYERS:
        param = text_format.Parse(text, pb.LayerParameter(name=name))
        layer = layers.get(param.type)(param, backend="cpu")
        top = Blob(())
        layer.setup([bottom], [top])
        layer.reshape([bottom], [top])
        layer.forward([bottom], [top])
        top.diff[...] = np.random.RandomState(1).standard_normal(top.shape)
        chain.append((layer, bottom, top, bottom is not data))
        bottom = top
    return chain


def netkit_steps(batch):
    """name -> (forward, backward) callables, for each layer and for the whole chain."""
    def forward(layer, bottom, top, propagate):
        layer.reshape([bottom], [top])
        layer.forward([bottom], [top])

    def backward(layer, bottom, top, propagate):
        for p in layer.blobs:
            p.diff[...] = 0
        layer.backward([top], [propagate], [bottom])

    chain = netkit_chain(batch)
    steps = {name: (lambda e=e: forward(*e), lambda e=e: backward(*e))
             for (name, _), e in zip(LAYERS, chain)}
    steps["total"] = (lambda: [forward(*e) for e in chain],
                      lambda: [backward(*e) for e in reversed(chain)])
    return steps


def torch_steps(batch):
    """name -> a callable running forward and backward in PyTorch (2 threads)."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.rand(batch, 1, 28, 28)
    w1, b1 = torch.randn(20, 1, 5, 5, requires_grad=True), torch.zeros(20, requires_grad=True)
    w2, b2 = torch.randn(50, 20, 5, 5, requires_grad=True), torch.zeros(50, requires_grad=True)
    w3, b3 = torch.randn(500, 800, requires_grad=True), torch.zeros(500, requires_grad=True)
    w4, b4 = torch.randn(10, 500, requires_grad=True), torch.zeros(10, requires_grad=True)
    ops = [
        ("conv1", lambda a: F.conv2d(a, w1, b1), x),
        ("pool1", lambda a: F.max_pool2d(a, 2, 2), torch.randn(batch, 20, 24, 24)),
        ("conv2", lambda a: F.conv2d(a, w2, b2), torch.randn(batch, 20, 12, 12)),
        ("pool2", lambda a: F.max_pool2d(a, 2, 2), torch.randn(batch, 50, 8, 8)),
        ("ip1", lambda a: F.linear(a.flatten(1), w3, b3), torch.randn(batch, 50, 4, 4)),
        ("ip2", lambda a: F.linear(a, w4, b4), torch.randn(batch, 500)),
    ]

    def run(op, a):
        y = op(a)
        y.backward(torch.ones_like(y))

    def chain():
        y = x
        for _, op, _ in ops:
            y = op(y)
        y.backward(torch.ones_like(y))
    steps = {name: (lambda op=op, a=a.requires_grad_(a is not x): run(op, a))
             for name, op, a in ops}
    steps["total"] = chain
    return steps


def clock(fn):
    t = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - t)


def report(batch, iters, rounds=5):
    """Medians of netkit forward, backward and PyTorch forward+backward. The two alternate
    in blocks of iters / rounds steps: blocks, not single steps, because OpenBLAS's and
    PyTorch's thread pools slow each other down when their calls interleave closely."""
    nk, th = netkit_steps(batch), torch_steps(batch)
    print("%-6s %9s %9s %11s %11s %7s" % ("layer", "nk fwd", "nk bwd", "nk fwd+bwd",
                                          "torch f+b", "ratio"))
    block = max(1, iters // rounds)
    for name in [n for n, _ in LAYERS] + ["total"]:
        forward, backward = nk[name]
        ours, theirs = [], []
        for _ in range(rounds):
            for i in range(block + 3):
                sample = (clock(forward), clock(backward))
                if i >= 3:
                    ours.append(sample)
            for i in range(block + 3):
                sample = clock(th[name])
                if i >= 3:
                    theirs.append(sample)
        fwd, bwd = (statistics.median(s) for s in zip(*ours))
        both = statistics.median(f + b for f, b in ours)
        ref = statistics.median(theirs)
        print("%-6s %9.3f %9.3f %11.3f %11.3f %7.2f" % (name, fwd, bwd, both, ref, both / ref),
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        report(args.batch, args.iters)
        return
    settings = [("environment as given (%s)" % ", ".join(
        "%s=%s" % (v, os.environ.get(v, "unset")) for v in BLAS_VARS), dict(os.environ))]
    settings.append(("%s unset" % " and ".join(BLAS_VARS),
                     {k: v for k, v in os.environ.items() if k not in BLAS_VARS}))
    for title, env in settings:
        print("== times in ms, batch %d, %s" % (args.batch, title), flush=True)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                        "--iters", str(args.iters), "--batch", str(args.batch)],
                       env=env, check=True)


if __name__ == "__main__":
    main()
