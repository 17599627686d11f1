"""`netkit gradcheck`: Caffe's gradient checker on the layers of a net, as built."""
import click


@click.command("gradcheck")
@click.option("--model", required=False, help="Net prototxt.")
@click.option("--layer", "layer_names", multiple=True, metavar="NAME",
              help="Layer to check (repeatable); default every layer with a gradient.")
@click.option("--phase", default="TRAIN", type=click.Choice(["TRAIN", "TEST"]))
@click.option("--weights", default="", help="Comma-separated .caffemodel files to start from.")
@click.option("--stepsize", default=1e-2, type=float, help="Finite difference step.")
@click.option("--threshold", default=1e-3, type=float,
              help="Largest |analytic - numeric| / max(|analytic|, |numeric|, 1) to pass.")
@click.option("--kink", default=0.0, type=float,
              help="Skip bottom elements x with ||x| - kink| < kink_range (0: ReLU's kink).")
@click.option("--kink_range", default=None, type=float,
              help="Half-width of the kink (default: the stepsize, so ReLU inputs at 0 are "
                   "skipped; <= 0: off).")
@click.option("--max_checks", default=200, type=int,
              help="Elements sampled per blob (0: every element).")
@click.option("--seed", default=1701, type=int, help="Seed of inputs, samples and R.")
@click.option("--gpu", default=None, metavar="ID", help="GPU id (-1 or absent: CPU).")
@click.option("--backend", type=click.Choice(["cpu", "gpu", "fakegpu"]), default=None,
              hidden=True)
@click.option("--level", default=0, type=int, help="Net state level.")
@click.option("--stage", default="", help="Comma-separated net state stages.")
def command(model, layer_names, phase, weights, stepsize, threshold, kink, kink_range,
            max_checks, seed, gpu, backend, level, stage):
    """Check each layer's backward against central differences on the bottoms it sees in
    a forward pass (Input tops get gaussian values); one line per bottom and parameter
    blob with its worst relative error and PASS/FAIL (SKIP: every element at the kink).
    Exits 1 if any blob fails. Max pooling and other argmax layers fail where two inputs
    lie within a step of each other: a smaller --stepsize or --layer narrows that down."""
    from ..errors import NetkitError
    from ..gradcheck import check_net
    from ..layer import TEST, TRAIN
    from ..net import Net
    from ..rng import set_random_seed
    from .cli import make_backend
    if not model:
        raise NetkitError("need a model definition to check (--model net.prototxt)")
    if kink_range is None:
        kink_range = stepsize
    set_random_seed(seed)
    net = Net(model, phase=TRAIN if phase == "TRAIN" else TEST, weights=weights or None,
              level=level, stages=[s for s in stage.split(",") if s],
              backend=make_backend(gpu, backend))
    try:
        checks = check_net(net, list(layer_names) or None, input_seed=seed, stepsize=stepsize,
                           threshold=threshold, kink=kink, kink_range=kink_range, seed=seed,
                           max_checks=max_checks or None)
    finally:
        net.close()
    failed = total = 0
    for check in checks:
        where = "%s (%s)" % (check.name, check.type)
        if check.skipped:
            if layer_names:
                click.echo("%s: nothing to check: %s" % (where, check.skipped))
            continue
        bottom_names = net.layer_bottom_names[check.index]
        for r in check.results:
            what = r.what
            if what.startswith("bottom["):
                what += " '%s'" % bottom_names[int(what[7:-1])]
            status = "FAIL" if not r.passed else "PASS" if r.checked else "SKIP"
            kinked = " (%d at the kink)" % r.at_kink if r.at_kink else ""
            line = "%s %s: worst relative error %.3g over %d of %d elements%s: %s" % (
                where, what, r.worst, r.checked, r.count, kinked, status)
            if not r.passed:
                line += " (element %d: analytic %.6g, numeric %.6g)" % (
                    r.element, r.analytic, r.numeric)
            click.echo(line)
            total += 1
            failed += not r.passed
    if failed:
        raise NetkitError("gradient check failed for %d of %d blobs (threshold %g)"
                          % (failed, total, threshold))
