"""`netkit time` against BVLC Caffe's own `caffe time`, same net, same run.

Both time forward+backward of a training net (default: examples/mnist/lenet_train_test,
batch 64, reading the MNIST LMDBs; made with `netkit convert_mnist_data` when missing),
alternating one `netkit time` and one `caffe time` run of --iterations each, --rounds times,
and print each run's "Average Forward-Backward", both medians and the ratio netkit / Caffe.

Caffe is either a `caffe` binary on this system (--caffe PATH) or one installed in a
Debian root (--caffe-root DIR, run through chroot, which needs root): Debian bullseye
packages BVLC Caffe (master 99bd997, 2018-08-21) as `caffe`, CPU-only, on OpenBLAS:

    debootstrap --variant=minbase bullseye /srv/bullseye http://deb.debian.org/debian
    chroot /srv/bullseye apt-get install -y --no-install-recommends caffe libopenblas0-pthread
    python benchmarks/caffe_cpu.py --caffe-root /srv/bullseye \\
        --caffe-env OPENBLAS_CORETYPE=SkylakeX

That OpenBLAS (0.3.13) does not recognise newer Intel server CPUs and falls back to its
slowest (Prescott) kernels; --caffe-env OPENBLAS_CORETYPE=SkylakeX gives Caffe the AVX-512
kernels this machine can run (the benchmark prints what Caffe's OpenBLAS chose). Caffe can
also run on Intel's MKL (Caffe's `BLAS := mkl` build), e.g. the libraries of PyPI's `mkl`
wheel copied into the root's /opt/mkl:

    --caffe-env LD_PRELOAD=/opt/mkl/libmkl_rt.so.3 --caffe-env LD_LIBRARY_PATH=/opt/mkl \
    --caffe-env MKL_THREADING_LAYER=GNU

The netkit runs use the environment as given; the --caffe-env settings apply to Caffe only.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
AVERAGE = re.compile(r"Average Forward-Backward: ([0-9.]+) ms")
CORE = re.compile(r"^Core: (\S+)", re.M)


def ensure_mnist(model):
    """Make the MNIST LMDBs the stock LeNet net reads, if it is that net and they are missing."""
    mnist = os.path.join(ROOT, "examples", "mnist")
    if os.path.abspath(model).startswith(mnist) and \
            not os.path.isdir(os.path.join(mnist, "mnist_train_lmdb")):
        subprocess.run([sys.executable, "-m", "netkit", "convert_mnist_data", mnist],
                       check=True, cwd=ROOT)


def stage_for_chroot(caffe_root, model):
    """Copy the repository's examples (the net and the data it names by relative path) into
    the Debian root, so that Caffe there sees them at the same relative paths."""
    work = tempfile.mkdtemp(prefix="netkit-bench-", dir=os.path.join(caffe_root, "tmp"))
    rel = os.path.relpath(os.path.abspath(model), ROOT)
    top = rel.split(os.sep)[0]
    shutil.copytree(os.path.join(ROOT, top), os.path.join(work, top),
                    ignore=shutil.ignore_patterns("*.caffemodel", "*.solverstate"))
    return work, "/" + os.path.relpath(work, caffe_root), rel


def average_ms(cmd, label):
    run = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True)
    match = AVERAGE.search(run.stdout)
    if run.returncode or not match:
        sys.exit("%s failed (exit %d):\n%s" % (label, run.returncode, run.stdout[-3000:]))
    return float(match.group(1)), run.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--caffe", help="path of BVLC Caffe's caffe tool")
    where.add_argument("--caffe-root", help="a Debian root with the caffe package (chroot)")
    ap.add_argument("--caffe-env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment for the Caffe runs only (repeatable)")
    ap.add_argument("--model", default=os.path.join(ROOT, "examples", "mnist",
                                                    "lenet_train_test.prototxt"))
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--force-backward", action="store_true",
                    help="time a copy of the model with force_backward: true (for deploy "
                         "nets: with no loss, caffe time skips every bottom gradient, "
                         "netkit time computes them)")
    args = ap.parse_args()

    ensure_mnist(args.model)
    # Caffe runs under `env SETTINGS`: inside the root when chrooted (a library preloaded
    # there is not on the host)
    settings = ["OPENBLAS_VERBOSE=2"] + args.caffe_env
    timing = ["time", "-iterations", str(args.iterations)]
    model = os.path.relpath(os.path.abspath(args.model), ROOT)
    forced = None
    if args.force_backward:
        with open(args.model) as f:
            text = "force_backward: true\n" + f.read()
        forced = tempfile.mkdtemp(prefix="netkit-bench-")
        model = os.path.join(forced, os.path.basename(args.model))
        with open(model, "w") as f:
            f.write(text)
    netkit_cmd = [sys.executable, "-m", "netkit", "time", "-model", model] + timing[1:]
    staged = None
    if args.caffe_root:
        staged, inside, rel = stage_for_chroot(args.caffe_root, args.model)
        if forced:
            shutil.copy(model, os.path.join(staged, rel))
        caffe_cmd = ["chroot", args.caffe_root, "env"] + settings + [
            "sh", "-c", "cd %s && exec caffe %s" % (inside, " ".join(timing + ["-model", rel]))]
    else:
        caffe_cmd = ["env"] + settings + [args.caffe] + timing + ["-model", os.path.abspath(model)]
    blas = ", ".join("%s=%s" % (v, os.environ[v]) for v in ("OPENBLAS_CORETYPE",
                                                              "OPENBLAS_L2_SIZE")
                     if v in os.environ) or "no OpenBLAS overrides"
    print("model %s%s, %d iterations per run, %d rounds; netkit environment: %s; Caffe: %s"
          % (os.path.relpath(args.model, ROOT), " (force_backward)" if forced else "",
             args.iterations, args.rounds, blas,
             " ".join(args.caffe_env) or "environment as given"), flush=True)
    ours, theirs = [], []
    try:
        for k in range(args.rounds):
            ms, _ = average_ms(netkit_cmd, "netkit time")
            ours.append(ms)
            ms, out = average_ms(caffe_cmd, "caffe time")
            theirs.append(ms)
            # (with a preloaded BLAS such as MKL, OpenBLAS still loads but computes nothing)
            core = None if any(kv.startswith("LD_PRELOAD=") for kv in settings) \
                else CORE.search(out)
            print("round %d: netkit %.2f ms, Caffe %.2f ms%s" % (
                k + 1, ours[-1], theirs[-1],
                " (Caffe's OpenBLAS core: %s)" % core.group(1) if core else ""), flush=True)
    finally:
        for folder in (staged, forced):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
    a, b = statistics.median(ours), statistics.median(theirs)
    print("median Average Forward-Backward: netkit %.2f ms, BVLC Caffe %.2f ms, "
          "ratio netkit / Caffe %.2fx" % (a, b, a / b))


if __name__ == "__main__":
    main()
