"""The `netkit` command: Caffe's tool interface (train, test, time, device_query ...).

Caffe's single-dash flags work as they do with gflags: `-solver x`, `-solver=x` and
`--solver x` are the same.
"""
import re
import signal
import sys

import click

from ..errors import NetkitError
from ..log import env_level, fmt, logger, loss_suffix, setup_logging

_SINGLE_DASH = re.compile(r"^-([A-Za-z][A-Za-z0-9_]+)(=.*)?$")


def normalize_argv(argv):
    """gflags style `-name[=value]` -> `--name[=value]` (single letters stay as they are);
    `netkit run SCRIPT ARGS` leaves the script's arguments as they are."""
    if argv[:1] == ["run"]:
        return list(argv)
    return ["-" + a if _SINGLE_DASH.match(a) else a for a in argv]


def parse_gpus(spec):
    """--gpu value -> list of device ids ([] for CPU): -1 | N | N,M | all."""
    spec = (spec or "").strip()
    if spec in ("", "-1"):
        return []
    if spec == "all":
        try:  # counting makes no CUDA context (each training process uses its own device)
            import cupy
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception:
            count = 0
        if count:
            return list(range(count))
        from ..backend import BackendError, GPUBackend
        try:
            GPUBackend(0)
        except BackendError as e:  # no usable GPU: say why
            raise NetkitError(str(e)) from None
    try:
        return [int(x) for x in spec.split(",")]
    except ValueError:
        raise NetkitError("--gpu expects -1, N, N,M,... or all, got '%s'" % spec) from None


def make_backend(gpu, backend, index=None):
    """The Backend for --gpu / --backend; a GPU that cannot be used is a one-line error.

    A --gpu list names one device per training process; `index` (this process's place
    among those on its machine) picks one. Without it the command uses a single device.
    """
    from ..backend import BackendError, get_backend
    if backend:
        return get_backend(backend)
    try:
        gpus = parse_gpus(gpu)
        if index is None and len(gpus) > 1:
            raise NetkitError("--gpu %s names several devices; this command uses one" % gpu)
        if gpus:
            index = index or 0
            if index >= len(gpus):
                raise NetkitError("--gpu %s names %d device(s), too few for training process "
                                  "#%d on this machine (one device per process)"
                                  % (gpu, len(gpus), index))
            logger.info("Using GPU %d", gpus[index])
            return get_backend("gpu", gpus[index])
        logger.info("Use CPU.")
        return get_backend("cpu")
    except BackendError as e:
        raise NetkitError(str(e)) from None


def stages_of(stage):
    return [s for s in (stage or "").split(",") if s]


gpu_option = click.option("--gpu", default=None, metavar="IDS",
                          help="GPU ids: -1 (CPU), N, N,M or all.")
backend_option = click.option("--backend", type=click.Choice(["cpu", "gpu", "fakegpu"]),
                              default=None, hidden=True)
level_option = click.option("--level", default=0, type=int, help="Net state level.")
stage_option = click.option("--stage", default="", help="Comma-separated net state stages.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netkit")
def cli():
    """netkit: Caffe-style deep learning. Nets and solvers are prototxt files.

    \b
    netkit train --solver examples/mnist/lenet_solver.prototxt
    netkit test  --model lenet_train_test.prototxt --weights lenet_iter_10000.caffemodel
    netkit time  --model lenet_train_test.prototxt
    """


@cli.command()
@click.option("--solver", required=False, help="Solver prototxt.")
@click.option("--snapshot", default="", help="A .solverstate to resume training from.")
@click.option("--weights", default="", help="Comma-separated .caffemodel files to fine-tune from.")
@gpu_option
@backend_option
@level_option
@stage_option
@click.option("--sigint_effect", default="stop", type=click.Choice(["stop", "snapshot", "none"]),
              help="What Ctrl-C does: stop (snapshot then exit), snapshot, or none.")
@click.option("--sighup_effect", default="snapshot",
              type=click.Choice(["stop", "snapshot", "none"]), help="What SIGHUP does.")
@click.pass_context
def train(ctx, solver, snapshot, weights, gpu, backend, level, stage, sigint_effect,
          sighup_effect):
    """Train a net (Caffe's `caffe train`).

    \b
    Data-parallel: one process per rank, gradients averaged over the ranks each iteration.
    mpirun -n 2 netkit train --solver S            (CPU processes, MPI)
    netkit train --solver S --gpu 0,1              (one process per GPU, NCCL)
    """
    from .. import parallel
    if not solver:
        raise NetkitError("need a solver definition to train (--solver solver.prototxt)")
    if snapshot and weights:
        raise NetkitError("give a snapshot to resume training or weights to fine-tune, not both")
    world = parallel.mpi_world()
    with parallel.abort_on_error(world):
        _train(ctx, world, solver, snapshot, weights, gpu, backend, level, stage,
               sigint_effect, sighup_effect)


def _train(ctx, world, solver, snapshot, weights, gpu, backend, level, stage, sigint_effect,
           sighup_effect):
    """The train command as one rank of `world` (an MPICommunicator, or None alone)."""
    import logging
    import numpy as np
    from .. import netkit_pb2 as pb
    from .. import parallel
    from ..solvers import get_solver, read_solver_param
    # Like Caffe, no float-overflow chatter: a diverging run ends with one error line.
    np.seterr(over="ignore", invalid="ignore", divide="ignore")
    if world is not None and world.rank != 0:
        logger.setLevel(logging.WARNING)  # rank 0 reports progress (Caffe's root_solver)
    param = read_solver_param(solver)
    param.train_state.level = level
    param.train_state.stage.extend(stages_of(stage))
    if gpu is None and backend is None and param.HasField("solver_mode") \
            and param.solver_mode == pb.SolverParameter.GPU:
        # The file asks for its device_id (Caffe's rule without --gpu); without a usable GPU
        # netkit says why and trains on the CPU, as get_solver does.
        try:
            make_backend(str(param.device_id), None)
            gpu = str(param.device_id)
        except NetkitError as e:
            from ..backend import gpu_fallback_note
            logger.warning("%s: %s", solver, gpu_fallback_note(e))
    gpus = parse_gpus(gpu)
    if world is None and len(gpus) > 1:
        if parallel.launched_by_mpi():
            raise NetkitError("--gpu %s names %d devices but MPI started one process; start "
                              "one per device (mpirun -n %d)" % (gpu, len(gpus), len(gpus)))
        for i in range(len(gpus)):
            make_backend(gpu, backend, i)  # a device that cannot be used: its reason, here
        logger.info("Using GPUs %s: one process each", ", ".join(map(str, gpus)))
        parallel.relaunch(len(gpus), ctx.find_root().obj["argv"])
    be = make_backend(gpu, backend, world.local_rank() if world is not None else None)
    param.solver_mode = pb.SolverParameter.GPU if be.name == "gpu" else pb.SolverParameter.CPU
    rank, count = (world.rank, world.size) if world is not None else (0, 1)
    if world is not None:
        logger.info("Data-parallel training: %d ranks", count)
        if param.random_seed >= 0:
            param.random_seed += rank  # each rank draws its own crops and masks (Caffe)
    with parallel.solver_position(rank, count):
        s = get_solver(param, backend=be, source=solver)
    requests = []
    effects = {signal.SIGINT: sigint_effect, signal.SIGHUP: sighup_effect}

    def handler(signum, frame):
        requests.append(effects[signum])

    for signum, effect in effects.items():
        signal.signal(signum, handler if effect != "none" else signal.SIG_IGN)
    s.action_request = lambda: requests.pop(0) if requests else "none"
    if world is not None:
        comm = parallel.nccl_communicator(world) if be.name == "gpu" else world
        parallel.DataParallel(s, comm)
    logger.info("Starting Optimization")
    if snapshot:
        logger.info("Resuming from %s", snapshot)
    elif weights:
        logger.info("Finetuning from %s", weights)
        s.copy_weights(weights)
    try:
        s.solve(snapshot or None)
    finally:
        s.close()


@cli.command()
@click.option("--model", required=False, help="Net prototxt.")
@click.option("--weights", default="", help="Trained .caffemodel file(s), comma-separated.")
@click.option("--iterations", default=50, type=click.IntRange(min=1),
              help="Number of batches to run.")
@gpu_option
@backend_option
@level_option
@stage_option
def test(model, weights, iterations, gpu, backend, level, stage):
    """Score a trained net on its TEST phase (Caffe's `caffe test`)."""
    from ..layer import TEST
    from ..net import Net
    import numpy as np
    if not model:
        raise NetkitError("need a model definition to score (--model net.prototxt)")
    if not weights:
        raise NetkitError("need model weights to score (--weights net.caffemodel)")
    be = make_backend(gpu, backend)
    net = Net(model, TEST, weights=weights, level=level, stages=stages_of(stage), backend=be)
    logger.info("Running for %d iterations.", iterations)
    totals, loss = None, 0.0
    try:
        for i in range(iterations):
            loss += net.forward_layers()
            batch = [(n, be.asnumpy(net.blobs[n].data).ravel()) for n in net.outputs]
            for name, values in batch:
                for v in values:
                    logger.info("Batch %d, %s = %s", i, name, fmt(v))
            flat = [v for _, values in batch for v in values.astype(np.float64)]
            totals = flat if totals is None else [a + b for a, b in zip(totals, flat)]
    finally:
        net.close()
    logger.info("Loss: %s", fmt(loss / iterations))
    names = [n for n, values in batch for _ in values]
    for name, total in zip(names, totals or []):
        mean = total / iterations
        logger.info("%s = %s%s", name, fmt(mean),
                    loss_suffix(net.output_loss_weight(name), mean))


@cli.command("time")
@click.option("--model", required=False, help="Net prototxt.")
@click.option("--iterations", default=50, type=click.IntRange(min=1),
              help="Number of timed iterations.")
@click.option("--phase", default="TRAIN", type=click.Choice(["TRAIN", "TEST"]))
@gpu_option
@backend_option
@level_option
@stage_option
def time_(model, iterations, phase, gpu, backend, level, stage):
    """Time forward and backward per layer (Caffe's `caffe time`)."""
    from .timing import time_net
    if not model:
        raise NetkitError("need a model definition to time (--model net.prototxt)")
    time_net(model, iterations, phase, make_backend(gpu, backend), level, stages_of(stage))


@cli.command("device_query")
@gpu_option
def device_query(gpu):
    """Show what CuPy sees of the GPU(s)."""
    from ..backend import BackendError, GPUBackend
    ids = parse_gpus(gpu if gpu is not None else "0")
    if not ids:
        raise NetkitError("device_query needs a GPU id (--gpu N, N,M or all); --gpu -1 is the "
                          "CPU, which has no device to query")
    for i in ids:
        try:
            be = GPUBackend(i)
        except BackendError as e:
            raise NetkitError(str(e)) from None
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(i)
        logger.info("Querying GPUs %d", i)
        for key in ("name", "totalGlobalMem", "multiProcessorCount", "major", "minor",
                    "clockRate", "sharedMemPerBlock", "maxThreadsPerBlock"):
            value = props.get(key)
            if isinstance(value, bytes):
                value = value.decode()
            logger.info("%s: %s", key, value)
        be.synchronize()


@cli.command("convert_mnist_data")
@click.argument("out_dir", default="examples/mnist")
@click.option("--url", default=None, help="Base URL of the MNIST idx .gz files "
              "(default: $NETKIT_MNIST_URL or a public mirror).")
def convert_mnist_data(out_dir, url):
    """Write OUT_DIR/mnist_train_lmdb and mnist_test_lmdb as Caffe Datum records."""
    from ..data.mnist import convert_mnist_data as convert
    convert(out_dir, url)


def _add_tool_commands():
    """Every module in netkit.tools that defines a click command named `command` becomes a
    subcommand, so each tool lives in its own module (module imports must stay light)."""
    import importlib
    import pkgutil
    from .. import tools
    for info in pkgutil.iter_modules(tools.__path__):
        if info.name == "cli":
            continue
        command = getattr(importlib.import_module("%s.%s" % (tools.__name__, info.name)),
                          "command", None)
        if isinstance(command, click.Command):
            cli.add_command(command)


_add_tool_commands()


def main(argv=None):
    argv = normalize_argv(sys.argv[1:] if argv is None else argv)
    setup_logging(level=env_level())
    try:
        cli.main(args=argv, prog_name="netkit", standalone_mode=False, obj={"argv": argv})
    except NetkitError as e:
        click.echo("netkit: error: %s" % e, err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except OSError as e:
        click.echo("netkit: error: %s" % e, err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
