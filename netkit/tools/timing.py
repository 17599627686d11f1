"""`netkit time`: per-layer forward/backward milliseconds, Caffe's `caffe time` output."""
import time

from ..layer import TEST, TRAIN
from ..log import fmt, logger
from ..net import Net


def backward_as_in_training(net):
    """A net with no loss (a deploy net) has no backward pass of its own: time the one
    training would run from a loss on its outputs. Every blob computed from learnable
    parameters gets its gradient; the inputs and anything computed from inputs alone do
    not, as a training step would skip them (and as PyTorch does)."""
    logger.info("The net has no loss: timing the backward pass a loss on its outputs "
                "would need (gradients for the parameters and every blob they affect)")
    learned = set()
    for i, layer in enumerate(net.layers):
        has_params = bool(layer.blobs)
        need = [name in learned and layer.allow_force_backward(k)
                for k, name in enumerate(net.layer_bottom_names[i])]
        net.bottom_need_backward[i] = need
        net.layer_need_backward[i] = has_params or any(need)
        if has_params:
            layer.param_propagate_down = [True] * len(layer.blobs)
        if net.layer_need_backward[i]:
            learned.update(net.layer_top_names[i])


def time_net(model, iterations, phase="TRAIN", backend=None, level=0, stages=()):
    """Time `iterations` forward+backward passes; returns (forward_ms, backward_ms, total_ms)
    averaged per iteration."""
    net = Net(model, phase=TRAIN if phase == "TRAIN" else TEST, level=level, stages=stages,
              backend=backend)
    be = net.backend
    if not any(net.layer_need_backward):
        backward_as_in_training(net)
    try:
        logger.info("Performing Forward")
        logger.info("Initial loss: %s", fmt(net.forward_layers()))
        logger.info("Performing Backward")
        net.backward_layers()
        n = len(net.layers)
        fwd, bwd = [0.0] * n, [0.0] * n
        fwd_total = bwd_total = 0.0
        logger.info("*** Benchmark begins ***")
        logger.info("Testing for %d iterations.", iterations)
        total_start = time.perf_counter()
        for it in range(iterations):
            iter_start = time.perf_counter()
            for i, (layer, bottom, top) in enumerate(zip(net.layers, net.bottom_vecs, net.top_vecs)):
                t = time.perf_counter()
                layer.reshape(bottom, top)
                layer.forward(bottom, top)
                be.synchronize()
                fwd[i] += time.perf_counter() - t
            fwd_total += time.perf_counter() - iter_start
            back_start = time.perf_counter()
            for i in range(n - 1, -1, -1):
                if not net.layer_need_backward[i]:
                    continue
                t = time.perf_counter()
                net.layers[i].backward(net.top_vecs[i], net.bottom_need_backward[i],
                                       net.bottom_vecs[i])
                be.synchronize()
                bwd[i] += time.perf_counter() - t
            bwd_total += time.perf_counter() - back_start
            logger.info("Iteration: %d forward-backward time: %s ms.", it + 1,
                        fmt((time.perf_counter() - iter_start) * 1e3))
        total = time.perf_counter() - total_start
        logger.info("Average time per layer: ")
        per = 1e3 / iterations
        for i, name in enumerate(net.layer_names):
            logger.info("%10s\tforward: %s ms.", name, fmt(fwd[i] * per))
            logger.info("%10s\tbackward: %s ms.", name, fmt(bwd[i] * per))
        logger.info("Average Forward pass: %s ms.", fmt(fwd_total * per))
        logger.info("Average Backward pass: %s ms.", fmt(bwd_total * per))
        logger.info("Average Forward-Backward: %s ms.", fmt(total * per))
        logger.info("Total Time: %s ms.", fmt(total * 1e3))
        logger.info("*** Benchmark ends ***")
        return fwd_total * per, bwd_total * per, total * per
    finally:
        net.close()
