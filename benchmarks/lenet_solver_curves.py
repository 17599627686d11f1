"""LeNet test-accuracy curves for Caffe's MNIST solver files: netkit vs a PyTorch mirror.

Not a speed benchmark: it asks whether an accuracy a solver file reaches is a property of
the file or of netkit. For each solver file it trains netkit's solver and a PyTorch LeNet
that starts from netkit's initial weights, reads the training LMDB in the same order
(batch 64, wrapping as Caffe's Data layer does), uses the same learning-rate schedule,
lr_mult and weight decay, and updates with torch.optim's rule for the same solver type.
Both are tested on the 10,000 test images every test_interval iterations, side by side.

Where torch.optim's algebra differs from Caffe's (printed with the results): SGD and
Nesterov keep lr out of the momentum history (the same for a fixed rate, close for a
slowly decaying one); Adam adds delta after bias-correcting sqrt(v) where Caffe adds it
before. RMSProp, AdaGrad and AdaDelta are the same algebra.

Needs the MNIST LMDBs (sh examples/mnist/create_mnist.sh) and torch. Run from the
repository root (the solver files' paths are relative to it):
    python benchmarks/lenet_solver_curves.py [--solvers rmsprop,adam] [--iters 10000]
"""
import argparse
import logging
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLVERS = {"sgd": "lenet_solver", "nesterov": "lenet_solver_nesterov",
           "adagrad": "lenet_solver_adagrad", "adadelta": "lenet_adadelta_solver",
           "adam": "lenet_solver_adam", "rmsprop": "lenet_solver_rmsprop"}
DIFFERENCES = {
    "SGD": "torch SGD keeps lr out of the momentum history (Caffe's history holds lr * g)",
    "Nesterov": "torch SGD(nesterov) keeps lr out of the momentum history",
    "Adam": "torch Adam adds delta after bias-correcting sqrt(v); Caffe adds it before",
}


def load_lmdb(path, scale):
    import lmdb
    from netkit import netkit_pb2 as pb
    images, labels = [], []
    with lmdb.open(path, readonly=True, lock=False) as env, env.begin() as txn:
        for _, value in txn.cursor():
            datum = pb.Datum.FromString(value)
            images.append(np.frombuffer(datum.data, np.uint8))
            labels.append(datum.label)
    return (np.stack(images).reshape(-1, 1, 28, 28).astype(np.float32) * scale,
            np.array(labels, dtype=np.int64))


class TorchLeNet:
    """Caffe's LeNet (conv-pool-conv-pool-ip-relu-ip) on torch.nn.functional."""

    LAYERS = ("conv1", "conv2", "ip1", "ip2")

    def __init__(self, net):
        import torch
        self.torch = torch
        self.params = {name: [torch.tensor(np.array(b.data), requires_grad=True)
                              for b in net.params[name]] for name in self.LAYERS}

    def __call__(self, x):
        F = self.torch.nn.functional
        p = self.params
        x = F.max_pool2d(F.conv2d(x, *p["conv1"]), 2)
        x = F.max_pool2d(F.conv2d(x, *p["conv2"]), 2)
        x = F.relu(F.linear(x.flatten(1), *p["ip1"]))
        return F.linear(x, *p["ip2"])

    def optimizer(self, param):
        """torch.optim's rule for the solver type; weights lr_mult 1, biases 2, as LeNet."""
        import torch.optim as optim
        from netkit.solvers import solver_type
        kind = solver_type(param)
        decay = param.weight_decay
        groups = [{"params": [p[0] for p in self.params.values()], "lr": param.base_lr},
                  {"params": [p[1] for p in self.params.values()], "lr": 2 * param.base_lr}]
        for g in groups:
            g["initial_lr"] = g["lr"]
        if kind in ("SGD", "Nesterov"):
            return optim.SGD(groups, momentum=param.momentum, weight_decay=decay,
                             nesterov=kind == "Nesterov")
        if kind == "AdaGrad":
            return optim.Adagrad(groups, eps=param.delta, weight_decay=decay)
        if kind == "AdaDelta":
            return optim.Adadelta(groups, rho=param.momentum, eps=param.delta,
                                  weight_decay=decay)
        if kind == "Adam":
            return optim.Adam(groups, betas=(param.momentum, param.momentum2), eps=param.delta,
                              weight_decay=decay)
        if kind == "RMSProp":
            return optim.RMSprop(groups, alpha=param.rms_decay, eps=param.delta,
                                 weight_decay=decay)
        raise SystemExit("no torch.optim mirror for solver type %s" % kind)


def curves(name, iters, seed):
    import torch
    import netkit
    from netkit.solvers import read_solver_param, solver_type
    from netkit.solvers.lr_policy import learning_rate
    torch.set_num_threads(2)
    # Read the databases before the solver's data layers open them (lmdb allows one
    # environment per path and process).
    train_x, train_y = load_lmdb("examples/mnist/mnist_train_lmdb", 0.00390625)
    test_x, test_y = map(torch.from_numpy, load_lmdb("examples/mnist/mnist_test_lmdb",
                                                     0.00390625))
    path = os.path.join("examples", "mnist", SOLVERS[name] + ".prototxt")
    param = read_solver_param(path)
    if seed is not None:
        param.random_seed = seed  # another draw of the initial weights, for both
    solver = netkit.get_solver(param, source=path)
    param = solver.param
    interval = param.test_interval
    param.test_interval = 0  # tested below, at the same points for both
    mirror = TorchLeNet(solver.net)
    opt = mirror.optimizer(param)
    batch, cursor, rows = 64, 0, []
    for it in range(iters):
        scale = learning_rate(param, it, 0) / param.base_lr
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * scale
        index = (cursor + np.arange(batch)) % len(train_x)
        cursor = (cursor + batch) % len(train_x)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(mirror(torch.from_numpy(train_x[index])),
                                          torch.from_numpy(train_y[index])).backward()
        opt.step()
        if (it + 1) % interval == 0 or it + 1 == iters:
            solver.step(it + 1 - solver.iter)
            ours = solver.test(0)["accuracy"][0]
            with torch.no_grad():
                theirs = (mirror(test_x).argmax(1) == test_y).double().mean().item()
            rows.append((it + 1, ours, theirs))
            print("%-9s iter %5d  netkit %.4f  torch %.4f" % (name, it + 1, ours, theirs),
                  flush=True)
    solver.close()
    return solver_type(param), rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--solvers", default="rmsprop,adam", help=",".join(SOLVERS))
    ap.add_argument("--iters", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=None,
                    help="random_seed for the initial weights (default: the file's)")
    args = ap.parse_args()
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    logging.getLogger("netkit").setLevel(logging.WARNING)
    for name in args.solvers.split(","):
        kind, rows = curves(name, args.iters, args.seed)
        ours, theirs = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
        print("%s (%s): final netkit %.4f torch %.4f; best netkit %.4f torch %.4f; "
              "mean of the last half netkit %.4f torch %.4f"
              % (name, kind, ours[-1], theirs[-1], ours.max(), theirs.max(),
                 ours[len(ours) // 2:].mean(), theirs[len(theirs) // 2:].mean()))
        if kind in DIFFERENCES:
            print("  (%s)" % DIFFERENCES[kind])


if __name__ == "__main__":
    main()
