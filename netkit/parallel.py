"""Data-parallel training: one solver per rank, every rank applying the same update.

This is Caffe's multi-GPU scheme (its NCCL class), run as one process per rank:

- At the first iteration rank 0's weights (after --weights or --snapshot) are broadcast,
  so every rank starts from the same net.
- After each iteration's forward/backward passes (all iter_size of them) the param diffs
  are summed over the ranks and scaled by 1/N. The solver then normalizes by iter_size,
  regularizes and updates as usual, so N ranks at batch B take the step one process takes
  at batch N*B (when each rank's loss is a mean over its whole batch: BATCH_SIZE
  normalization, or VALID without ignored labels).
- Rank r's Data and HDF5Data layers read records r, r+N, r+2N, ... of the source in the
  TRAIN phase (Caffe's Skip by solver_count); random seeds are offset by the rank.
- Rank 0 alone tests, snapshots and logs progress (Caffe's root_solver).
- A stop or snapshot request (a signal) on any rank rides with the gradients, so all ranks
  act on it at the same iteration (one that comes during rank 0's test pass waits for the
  pass to end); an error on one rank aborts them all.

Ranks talk through a communicator: `MPICommunicator` (mpi4py, host arrays) or
`NCCLCommunicator` (CuPy's NCCL bindings, device arrays, bootstrapped through MPI). Each
sums a float32 buffer in place across ranks (`allreduce`) and copies rank 0's into the
others (`broadcast`); anything with those two methods, `rank`, `size` and `on_device` can
stand in for them. mpi4py is imported only when the environment shows an MPI launcher.
"""
import contextlib
import os
import shutil
import sys
import time

import numpy as np

from .errors import NetkitError

# Environment variables that MPI launchers set in the processes they start, holding the
# number of processes: Open MPI, MPICH's and Intel MPI's Hydra (and Slurm's PMI-2),
# MVAPICH. PMIx launchers set PMIX_RANK, without the count.
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_LAUNCHER_VARIABLES = _SIZE_VARIABLES + ("PMIX_RANK",)

# Caffe::solver_rank() and Caffe::solver_count(), read by data layers at setup.
_position = {"rank": 0, "count": 1}


def solver_rank():
    """This process's rank among the data-parallel solvers (0 when training alone)."""
    return _position["rank"]


def solver_count():
    """How many data-parallel solvers share the training (1 when training alone)."""
    return _position["count"]


@contextlib.contextmanager
def solver_position(rank, count):
    """Build nets inside this block as solver `rank` of `count`: their TRAIN-phase data
    layers read records rank, rank+count, rank+2*count, ..."""
    saved = dict(_position)
    _position.update(rank=rank, count=count)
    try:
        yield
    finally:
        _position.update(saved)


# -- communicators ------------------------------------------------------------------------
def launched_by_mpi():
    """True when an MPI launcher (mpirun, mpiexec, srun) started this process."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def mpi_world():
    """An MPICommunicator on MPI's COMM_WORLD when an MPI launcher started more than one
    process, else None (mpi4py is not imported unless a launcher may have started several)."""
    sizes = [os.environ[name] for name in _SIZE_VARIABLES if name in os.environ]
    if not launched_by_mpi() or sizes[:1] == ["1"]:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise NetkitError("started by an MPI launcher but mpi4py is not installed "
                          "(pip install 'netkit[mpi]')") from None
    if MPI.COMM_WORLD.Get_size() < 2:
        return None
    return MPICommunicator(MPI.COMM_WORLD)


class MPICommunicator:
    """Sums and broadcasts host float32 arrays over an mpi4py communicator."""

    on_device = False

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    def allreduce(self, buf):
        from mpi4py import MPI
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    def broadcast(self, buf, root=0):
        self.comm.Bcast(buf, root=root)

    def broadcast_object(self, obj, root=0):
        """A picklable object from `root` (the NCCL unique id)."""
        return self.comm.bcast(obj, root=root)

    def local_rank(self):
        """This process's index among the ranks on its machine (it picks the GPU); every
        rank must call it (it is a collective operation)."""
        from mpi4py import MPI
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            return local.Get_rank()
        finally:
            local.Free()

    def abort(self, code=1):
        """End every rank (MPI_Abort): a rank that fails must not leave the others waiting."""
        self.comm.Abort(code)


class NCCLCommunicator:
    """Sums and broadcasts float32 device arrays through NCCL, one GPU per process.

    `uid` is NCCL's unique id from `nccl.get_unique_id()` on rank 0, handed to every rank
    (see `nccl_communicator`). The operations are queued on `stream` (default: CuPy's
    current stream), after the kernels that computed the diffs and before those that
    apply them, so no host synchronization is needed. `nccl` is the binding module
    (default `cupy.cuda.nccl`).
    """

    on_device = True

    def __init__(self, size, rank, uid, nccl=None, stream=None):
        if nccl is None:
            from cupy.cuda import nccl
        self._nccl = nccl
        self._stream = stream
        self.rank, self.size = rank, size
        self._comm = nccl.NcclCommunicator(size, uid, rank)

    def _stream_ptr(self):
        if self._stream is not None:
            return self._stream
        import cupy
        return cupy.cuda.get_current_stream().ptr

    def allreduce(self, buf):
        nccl = self._nccl
        ptr = _address(buf)
        self._comm.allReduce(ptr, ptr, buf.size, nccl.NCCL_FLOAT32, nccl.NCCL_SUM,
                             self._stream_ptr())

    def broadcast(self, buf, root=0):
        self._comm.bcast(_address(buf), buf.size, self._nccl.NCCL_FLOAT32, root,
                         self._stream_ptr())


def _address(buf):
    """The data pointer NCCL reads: a CuPy array's CUDA array interface (an array without
    one, such as the fakegpu backend's, gives its host address)."""
    iface = getattr(buf, "__cuda_array_interface__", None) or buf.__array_interface__
    return iface["data"][0]


def nccl_communicator(world):
    """An NCCLCommunicator over the ranks of the MPICommunicator `world`: rank 0 draws the
    unique id and MPI hands it to the others. Select each rank's device first."""
    from cupy.cuda import nccl
    uid = world.broadcast_object(nccl.get_unique_id() if world.rank == 0 else None)
    return NCCLCommunicator(world.size, world.rank, uid, nccl)


@contextlib.contextmanager
def abort_on_error(world):
    """With several ranks, an exception on this one prints one line and ends every rank
    (the others would wait for it forever at the next all-reduce)."""
    try:
        yield
    except BaseException as e:
        if world is None:
            raise
        text = str(e) if isinstance(e, NetkitError) else "%s: %s" % (type(e).__name__, e)
        first = (text.strip().splitlines() or [type(e).__name__])[0]
        sys.stderr.write("netkit: error: rank %d of %d: %s\n" % (world.rank, world.size, first))
        sys.stderr.flush()
        time.sleep(0.5)  # let the launcher forward the line before it kills every rank
        world.abort(1)


def relaunch(count, argv):
    """Run this netkit command again as `count` MPI processes (one per GPU of a --gpu
    list), through the mpiexec that `pip install 'netkit[mpi]'` puts beside Python, or the
    one on PATH. Does not return."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
    if mpiexec is None:
        raise NetkitError("training on %d GPUs runs one process per GPU under MPI, and no "
                          "mpiexec was found: pip install 'netkit[mpi]', or start it with "
                          "mpirun -n %d" % (count, count))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(mpiexec, [mpiexec, "-n", str(count), sys.executable, "-m", "netkit.tools.cli"]
             + list(argv))


# -- the solver side ----------------------------------------------------------------------
class DataParallel:
    """Makes `solver` rank `comm.rank` of data-parallel training (a solver callback).

    The learnable params travel as one flat float32 buffer (Caffe's Params), on the device
    for a communicator that works there and on the host otherwise. Two extra slots carry
    this rank's stop and snapshot requests, summed with the gradients, so every rank sees
    the same request at the same iteration.
    """

    def __init__(self, solver, comm):
        from .solvers.solver import NONE
        self.solver, self.comm = solver, comm
        self.backend = solver.backend
        self.blobs = [prm.blob for prm in solver.net.learnable_params]
        self.count = sum(blob.count for blob in self.blobs)
        xp = self.backend.xp if comm.on_device else np
        self.buffer = xp.zeros(self.count + 2, dtype=np.float32)
        self._local_request = solver.action_request
        self._agreed = NONE
        self._started = False
        solver.root_solver = comm.rank == 0
        solver.action_request = self._agreed_request
        solver.callbacks.append(self)

    def on_start(self):
        if not self._started:
            self._started = True
            self._pack("data")
            self.comm.broadcast(self.buffer[:self.count], root=0)
            self._unpack("data")

    def on_gradients_ready(self):
        from .solvers.solver import NONE, SNAPSHOT, STOP
        self._pack("diff")
        request = self._local_request() if self._local_request else NONE
        flags = np.array([request == STOP, request == SNAPSHOT], dtype=np.float32)
        self.buffer[self.count:] = self.backend.asarray(flags) if self.comm.on_device else flags
        self.comm.allreduce(self.buffer)
        self.buffer[:self.count] *= np.float32(1.0 / self.comm.size)
        self._unpack("diff")
        flags = self.buffer[self.count:]
        stop, snapshot = self.backend.asnumpy(flags) if self.comm.on_device else flags
        self._agreed = STOP if stop else SNAPSHOT if snapshot else NONE

    def _agreed_request(self):
        """The request all ranks agreed on at this iteration's all-reduce, once."""
        from .solvers.solver import NONE
        request, self._agreed = self._agreed, NONE
        return request

    def _to_buffer(self, arr):
        """A backend array -> the buffer's side (host or device)."""
        return arr if self.comm.on_device else self.backend.asnumpy(arr)

    def _from_buffer(self, part):
        """A slice of the buffer -> a backend array."""
        return part if self.comm.on_device else self.backend.asarray(part)

    def _pack(self, field):
        offset = 0
        for blob in self.blobs:
            self.buffer[offset:offset + blob.count] = self._to_buffer(getattr(blob, field)).ravel()
            offset += blob.count

    def _unpack(self, field):
        offset = 0
        for blob in self.blobs:
            part = self.buffer[offset:offset + blob.count].reshape(blob.shape)
            getattr(blob, field)[...] = self._from_buffer(part)
            offset += blob.count
