"""Data-parallel training (netkit.parallel): N ranks at batch B step as one process at N*B.

In-process tests run the ranks as threads joined by a loopback communicator (and by a fake
NCCL module on the fakegpu backend); the MPI tests start real processes with the mpiexec
that the mpich wheel installs beside Python (the `mpi` extra).
"""
import ctypes
import os
import shutil
import subprocess
import sys
import threading
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from layertest import make_layer, tops
from netkit import netkit_pb2 as pb
from netkit import parallel
from netkit.backend import get_backend
from netkit.blob import Blob
from netkit.data.datum import array_to_datum, write_lmdb
from netkit.layer import TEST, TRAIN
from netkit.solvers import get_solver, read_solver_param
from netkit.solvers.solver import NONE, SNAPSHOT, STOP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
needs_mpi = pytest.mark.skipif(not os.access(MPIEXEC, os.X_OK),
                               reason="no mpiexec beside Python (pip install '.[mpi]')")

# Float32 round-off of a batch-mean against a mean of half-batch means, carried through a
# few momentum steps: measured about 3e-7 relative; 1e-5 leaves room across BLAS kernels.
RTOL = 1e-5


# -- communicators for in-process ranks ---------------------------------------------------
class Loopback:
    """Ranks as threads of this process: `allreduce` sums the ranks' buffers in rank order
    (so every rank gets the identical sum) and `broadcast` copies the root's."""

    def __init__(self, size):
        self.size = size
        self.slots = [None] * size
        self.barrier = threading.Barrier(size, timeout=60)

    def allreduce(self, rank, buf):
        self.slots[rank] = buf
        self.barrier.wait()
        total = self.slots[0].copy()
        for other in self.slots[1:]:
            total += other
        self.barrier.wait()
        buf[...] = total

    def broadcast(self, rank, buf, root=0):
        self.slots[rank] = buf
        self.barrier.wait()
        source = self.slots[root].copy()
        self.barrier.wait()
        buf[...] = source


class LoopbackRank:
    def __init__(self, group, rank, on_device):
        self.group, self.rank, self.size, self.on_device = group, rank, group.size, on_device

    def allreduce(self, buf):
        self.group.allreduce(self.rank, buf)

    def broadcast(self, buf, root=0):
        self.group.broadcast(self.rank, buf, root)


class FakeNccl:
    """cupy.cuda.nccl's names over host memory: a communicator reads and writes the float32
    buffers at the addresses it is given, as NCCL does with device pointers."""

    NCCL_FLOAT32 = 7  # ncclFloat32
    NCCL_SUM = 0      # ncclSum

    def __init__(self):
        self.groups = {}
        self.calls = []
        fake = self

        class NcclCommunicator:
            def __init__(self, ndev, comm_id, rank):
                self.group = fake.groups.setdefault(comm_id, Loopback(ndev))
                self.rank = rank

            def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
                fake.calls.append(("allReduce", datatype, op, stream))
                assert sendbuf == recvbuf and datatype == fake.NCCL_FLOAT32
                assert op == fake.NCCL_SUM
                self.group.allreduce(self.rank, _floats_at(sendbuf, count))

            def bcast(self, buff, count, datatype, root, stream):
                fake.calls.append(("bcast", datatype, root, stream))
                self.group.broadcast(self.rank, _floats_at(buff, count), root)

        self.NcclCommunicator = NcclCommunicator

    def get_unique_id(self):
        return b"fake-unique-id"


def _floats_at(address, count):
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(address))


def run_ranks(functions):
    """Run each function on its own thread; re-raise the first failure."""
    errors = []

    def guard(fn):
        try:
            fn()
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    threads = [threading.Thread(target=guard, args=(fn,)) for fn in functions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]


# -- a small LMDB classification net ------------------------------------------------------
NET = '''name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  data_param { source: "%(db)s" batch_size: %(batch)d }
  transform_param { scale: 0.00390625 } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  data_param { source: "%(db)s" batch_size: 5 } transform_param { scale: 0.00390625 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" }
                      bias_filler { type: "constant" value: 0.1 } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "pool" top: "pool" }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
%(extra)s'''

SOLVER = '''net: "%(net)s" base_lr: 0.1 momentum: 0.9 weight_decay: 0.005
lr_policy: "inv" gamma: 0.1 power: 0.75 max_iter: %(iters)d display: 1
test_interval: 3 test_iter: 2 snapshot_prefix: "%(prefix)s" random_seed: 7 solver_mode: CPU
%(extra)s
'''


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """tmp_path with a 21-record LMDB `db` (label = record index mod 10); the odd count
    makes the ranks' records shift at every pass, as Caffe's do."""
    monkeypatch.chdir(tmp_path)
    x = np.random.RandomState(0).randint(0, 256, (21, 1, 10, 10)).astype(np.uint8)
    write_lmdb("db", (("%08d" % i, array_to_datum(im, i % 10).SerializeToString())
                      for i, im in enumerate(x)))
    return tmp_path


def write_solver(name, batch, iters=6, extra="", solver_extra=""):
    """net/solver prototxt pair `name`; snapshots go to out_<name>/s_iter_N.*"""
    os.makedirs("out_" + name, exist_ok=True)
    with open(name + "_net.prototxt", "w") as f:
        f.write(NET % {"db": "db", "batch": batch, "extra": extra})
    with open(name + ".prototxt", "w") as f:
        f.write(SOLVER % {"net": name + "_net.prototxt", "iters": iters,
                          "prefix": "out_%s/s" % name, "extra": solver_extra})
    return name + ".prototxt"


def caffemodel(path):
    """{(layer, i): float32 array} straight from the protobuf, for comparing runs."""
    net = pb.NetParameter()
    with open(path, "rb") as f:
        net.ParseFromString(f.read())
    return {(layer.name, i): np.array(blob.data, dtype=np.float32)
            for layer in net.layer for i, blob in enumerate(layer.blobs)}


def assert_same_weights(a, b, rtol=RTOL):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=rtol * np.abs(b[key]).max(),
                                   err_msg=str(key))


def host_params(solver):
    return {(name, i): solver.backend.asnumpy(blob.data)
            for name, blobs in solver.net.params.items() for i, blob in enumerate(blobs)}


def rank_solvers(path, size, backend, comm_of):
    """`size` solvers as Caffe's ranks: data split by rank, seed offset by rank, each
    joined to its communicator `comm_of(rank)` by a DataParallel callback."""
    solvers = []
    for rank in range(size):
        param = read_solver_param(path)
        param.random_seed += rank
        with parallel.solver_position(rank, size):
            s = get_solver(param, backend=backend)
        parallel.DataParallel(s, comm_of(rank))
        solvers.append(s)
    return solvers


# -- DataParallel with in-process ranks ---------------------------------------------------
def stub_solver(backend, values, request=None):
    """What DataParallel uses of a solver: backend, net.learnable_params, callbacks,
    action_request; two params whose data and diff are `values` offset by 100."""
    blobs = []
    for v in values:
        blob = Blob(v.shape, backend)
        blob.data[...] = backend.asarray(v + 100)
        blob.diff[...] = backend.asarray(v)
        blobs.append(blob)
    net = SimpleNamespace(learnable_params=[SimpleNamespace(blob=b) for b in blobs])
    return SimpleNamespace(backend=backend, net=net, callbacks=[], action_request=request,
                           root_solver=True)


@pytest.mark.parametrize("on_device", [False, True])
def test_gradients_averaged_weights_broadcast_requests_agreed(backend, on_device):
    rng = np.random.RandomState(1)
    values = [[rng.randn(2, 3).astype(np.float32), rng.randn(4).astype(np.float32)]
              for _ in range(3)]
    requests = [None, lambda: SNAPSHOT, lambda: NONE]
    group = Loopback(3)
    solvers = [stub_solver(backend, values[r], requests[r]) for r in range(3)]
    syncs = [parallel.DataParallel(s, LoopbackRank(group, r, on_device))
             for r, s in enumerate(solvers)]

    def rank(r):
        def run():
            syncs[r].on_start()
            syncs[r].on_gradients_ready()
        return run

    run_ranks([rank(r) for r in range(3)])
    for r, s in enumerate(solvers):
        assert s.callbacks == [syncs[r]] and s.root_solver == (r == 0)
        for i, prm in enumerate(s.net.learnable_params):
            np.testing.assert_array_equal(backend.asnumpy(prm.blob.data), values[0][i] + 100)
            mean = (values[0][i] + values[1][i] + values[2][i]) * np.float32(1 / 3)
            np.testing.assert_allclose(backend.asnumpy(prm.blob.diff), mean, rtol=1e-6)
        # Rank 1's snapshot request reaches every rank, once.
        assert s.action_request() == SNAPSHOT and s.action_request() == NONE


def test_a_stop_on_one_rank_wins_over_a_snapshot_on_another():
    group = Loopback(2)
    solvers = [stub_solver(get_backend("cpu"), [np.ones(3, np.float32)], lambda: STOP),
               stub_solver(get_backend("cpu"), [np.ones(3, np.float32)], lambda: SNAPSHOT)]
    syncs = [parallel.DataParallel(s, LoopbackRank(group, r, False))
             for r, s in enumerate(solvers)]
    run_ranks([syncs[0].on_gradients_ready, syncs[1].on_gradients_ready])
    assert [s.action_request() for s in solvers] == [STOP, STOP]


def test_two_thread_ranks_match_one_solver_at_twice_the_batch(workdir, backend):
    """SGD with momentum and weight decay: ranks at batch 3 == one solver at batch 6; the
    ranks hold bit-identical weights; rank 1 neither tests nor snapshots."""
    single = get_solver(read_solver_param(write_solver("single", 6)), backend=backend)
    single.step(6)
    group = Loopback(2)
    ranks = rank_solvers(write_solver("ranks", 3), 2, backend,
                         lambda r: LoopbackRank(group, r, False))
    tested = []
    ranks[1].test_all = lambda: tested.append(1)
    run_ranks([lambda: ranks[0].step(6), lambda: ranks[1].step(6)])
    assert tested == []
    assert_same_weights(host_params(ranks[0]), host_params(single))
    for key, value in host_params(ranks[0]).items():
        np.testing.assert_array_equal(host_params(ranks[1])[key], value)
    for s in [single] + ranks:
        s.close()


def test_nccl_communicator_on_fake_devices(workdir):
    """The NCCL path (device buffer, pointers, NCCL_FLOAT32/NCCL_SUM, bcast from rank 0)
    against a fake NCCL on the fakegpu backend: same weights as one process at 2B."""
    single = get_solver(read_solver_param(write_solver("single", 6, iters=3)),
                        backend=get_backend("fakegpu"))
    single.step(3)
    nccl = FakeNccl()
    uid = nccl.get_unique_id()
    ranks = rank_solvers(write_solver("ranks", 3, iters=3), 2, get_backend("fakegpu"),
                         lambda r: parallel.NCCLCommunicator(2, r, uid, nccl, stream=0))
    run_ranks([lambda: ranks[0].step(3), lambda: ranks[1].step(3)])
    assert_same_weights(host_params(ranks[0]), host_params(single))
    for key, value in host_params(ranks[0]).items():
        np.testing.assert_array_equal(host_params(ranks[1])[key], value)
    assert nccl.calls.count(("bcast", 7, 0, 0)) == 2
    assert nccl.calls.count(("allReduce", 7, 0, 0)) == 2 * 3
    for s in [single] + ranks:
        s.close()


# -- the data split -----------------------------------------------------------------------
def test_data_layer_rank_reads_records_r_mod_n(workdir):
    """7 records, 3 ranks, batch 4: rank r reads stream positions r, r+3, ... (wrapping
    as one stream, Caffe's Skip); a TEST-phase layer reads every record."""
    be = get_backend("cpu")
    x = np.zeros((7, 1, 2, 2), np.uint8)
    write_lmdb("seven", (("%08d" % i, array_to_datum(im, i).SerializeToString())
                         for i, im in enumerate(x)))
    text = 'type: "Data" top: "data" top: "label" data_param { source: "seven" batch_size: 4 }'
    for phase, count in ((TRAIN, 3), (TEST, 1)):
        for rank in range(count):
            with parallel.solver_position(rank if phase == TRAIN else 1, 3):
                layer = make_layer(text, be, phase)
                top = tops(be, 2)
                layer.setup([], top)
            try:
                seen = []
                for _ in range(3):
                    layer.forward([], top)
                    seen += be.asnumpy(top[1].data).astype(int).tolist()
            finally:
                layer.close()
            assert seen == [(rank + count * k) % 7 for k in range(12)]


def test_hdf5_rank_reads_rows_r_mod_n_across_files(workdir):
    """Files of 5 and 4 rows, 2 ranks, batch 3: rank r keeps rows r, r+2, ... of the
    9-row stream, across file ends and passes; TEST phase reads all rows."""
    be = get_backend("cpu")
    rows = np.arange(9, dtype=np.float32)
    with h5py.File("a.h5", "w") as f:
        f["label"] = rows[:5]
    with h5py.File("b.h5", "w") as f:
        f["label"] = rows[5:]
    with open("list.txt", "w") as f:
        f.write("a.h5\nb.h5\n")
    text = 'type: "HDF5Data" top: "label" hdf5_data_param { source: "list.txt" batch_size: 3 }'
    for phase, count in ((TRAIN, 2), (TEST, 1)):
        for rank in range(count):
            with parallel.solver_position(rank if phase == TRAIN else 1, 2):
                layer = make_layer(text, be, phase)
                top = tops(be, 1)
                layer.setup([], top)
            seen = []
            for _ in range(5):
                layer.forward([], top)
                seen += be.asnumpy(top[0].data).astype(int).tolist()
            assert seen == [(rank + count * k) % 9 for k in range(15)]


# -- real MPI processes -------------------------------------------------------------------
def netkit(*args, mpi=0, timeout=120):
    """`netkit ARGS` (under `mpiexec -n MPI` when given); stderr holds the log."""
    cmd = [sys.executable, "-m", "netkit.tools.cli"] + list(args)
    if mpi:
        cmd = [MPIEXEC, "-n", str(mpi)] + cmd
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def log_lines(stderr, text):
    return [line for line in stderr.splitlines() if text in line]


@needs_mpi
def test_mpi_two_ranks_match_one_process_at_twice_the_batch(workdir):
    single = netkit("train", "--solver", write_solver("single", 6, solver_extra="snapshot: 4"))
    assert single.returncode == 0, single.stderr[-2000:]
    ranks = netkit("train", "--solver", write_solver("ranks", 3, solver_extra="snapshot: 4"),
                   mpi=2)
    assert ranks.returncode == 0, ranks.stderr[-2000:]
    final = caffemodel("out_ranks/s_iter_6.caffemodel")
    assert_same_weights(final, caffemodel("out_single/s_iter_6.caffemodel"))
    # Rank 0 alone snapshots, tests and reports, as often as the single process does.
    assert sorted(os.listdir("out_ranks")) == sorted(os.listdir("out_single"))
    for text in ("Testing net (#0)", "lr = ", "Snapshotting to", "Optimization Done"):
        assert len(log_lines(ranks.stderr, text)) == len(log_lines(single.stderr, text)), text
    assert log_lines(ranks.stderr, "Data-parallel training: 2 ranks")
    # Resumed at iteration 4, every rank restores the state and reads on where it was.
    resumed = netkit("train", "--solver", "ranks.prototxt", "--snapshot",
                     "out_ranks/s_iter_4.solverstate", mpi=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(caffemodel("out_ranks/s_iter_6.caffemodel"), final, rtol=1e-6)


TROUBLE = '''import os
import signal

import netkit
from netkit import parallel


class Trouble(netkit.Layer):
    """On rank R at forward call K: raise (DO=raise) or send itself SIGINT (DO=sigint)."""

    def setup(self, bottom, top):
        rank, self.at, self.do = self.param_str.split()
        self.mine = parallel.solver_rank() == int(rank)
        self.calls = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        self.calls += 1
        if self.mine and self.calls == int(self.at):
            if self.do == "raise":
                raise ValueError("trouble on purpose")
            os.kill(os.getpid(), signal.SIGINT)

    def backward(self, top, propagate_down, bottom):
        pass
'''


def trouble_solver(do):
    with open("trouble.py", "w") as f:
        f.write(TROUBLE)
    return write_solver("ranks", 3, iters=50, extra=(
        'layer { name: "trouble" type: "Python" bottom: "label" include { phase: TRAIN }\n'
        '  python_param { module: "trouble" layer: "Trouble" param_str: "1 3 %s" } }' % do))


@needs_mpi
def test_mpi_sigint_on_one_rank_stops_all_at_the_same_iteration(workdir):
    result = netkit("train", "--solver", trouble_solver("sigint"), mpi=2)
    assert result.returncode == 0, result.stderr[-2000:]
    # Rank 1's request rode with iteration 2's gradients: both ranks stop after the
    # update to iteration 3, and rank 0 writes the one snapshot.
    assert sorted(os.listdir("out_ranks")) == ["s_iter_3.caffemodel", "s_iter_3.solverstate"]
    assert log_lines(result.stderr, "Optimization stopped early.")


@needs_mpi
def test_mpi_error_on_one_rank_ends_every_rank_with_one_line(workdir):
    result = netkit("train", "--solver", trouble_solver("raise"), mpi=2, timeout=60)
    assert result.returncode != 0
    errors = log_lines(result.stderr, "netkit: error:")
    assert len(errors) == 1, result.stderr[-2000:]
    assert errors[0].startswith("netkit: error: rank 1 of 2:")
    assert "trouble on purpose" in errors[0]
    assert not os.listdir("out_ranks")


@needs_mpi
def test_gpu_list_relaunches_one_process_per_device(workdir):
    """`--gpu 0,1` starts one process per device under the bundled mpiexec; with the
    fakegpu backend standing in for the devices it trains as two ranks would."""
    single = netkit("train", "--solver", write_solver("single", 6))
    ranks = netkit("train", "--solver", write_solver("ranks", 3), "--gpu", "0,1",
                   "--backend", "fakegpu")
    assert ranks.returncode == 0, ranks.stderr[-2000:]
    assert log_lines(ranks.stderr, "Data-parallel training: 2 ranks")
    assert_same_weights(caffemodel("out_ranks/s_iter_6.caffemodel"),
                        caffemodel("out_single/s_iter_6.caffemodel"))


def test_gpu_list_without_a_usable_gpu_is_one_line(workdir):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine may have GPUs")
    result = netkit("train", "--solver", write_solver("ranks", 3), "--gpu", "0,1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("netkit: error: GPU")
    assert len(log_lines(result.stderr, "error")) == 1


@pytest.mark.parametrize("launcher", [{}, {"PMI_SIZE": "1"}, {"OMPI_COMM_WORLD_SIZE": "1"}])
def test_one_process_trains_alone_without_importing_mpi4py(launcher):
    env = {k: v for k, v in os.environ.items() if k not in parallel._LAUNCHER_VARIABLES}
    code = ("import sys; from netkit import parallel; from netkit.tools import cli; "
            "assert parallel.mpi_world() is None; assert 'mpi4py' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=dict(env, **launcher))
