"""Solver: Caffe's training loop, shared by every update rule.

`step(n)` runs Caffe's iteration: clear diffs -> maybe test -> iter_size x forward/backward
-> smoothed loss and display -> callbacks -> apply_update -> snapshot / signal handling.
`apply_update` = learning rate -> clip -> normalize -> regularize -> compute_update_value
(the per-rule hook) -> net update. The learning rate is folded into the update value, as
in Caffe, so `blob.update()` is `data -= diff`.
"""
import abc
import math
import os
import time
import types

import numpy as np

from .. import netkit_pb2 as pb
from ..backend import BackendError, get_backend, gpu_fallback_note
from ..detection_map import mean_average_precision
from ..errors import NetkitError
from ..log import default_logging, fmt, logger, loss_suffix
from ..net import Net
from ..protoio import read_binary, read_text, write_binary
from ..rng import set_random_seed
from ..upgrade import upgrade_solver
from .lr_policy import learning_rate

# Solver actions requested by signals (Caffe's SolverAction).
NONE, STOP, SNAPSHOT = "none", "stop", "snapshot"


def read_solver_param(path):
    """A SolverParameter from a prototxt file, with Caffe's snapshot_prefix defaulting:
    unset -> the solver file's path without extension; a directory -> dir/<file stem>."""
    param = read_text(path, pb.SolverParameter())
    upgrade_solver(param, path)
    stem = os.path.splitext(path)[0]
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = stem
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, os.path.basename(stem))
    return param


class Solver(abc.ABC):
    """Base solver. `Solver(param_or_path, backend="cpu")`."""

    type_name = None
    # How many history blobs the rule keeps per learnable param. Caffe's history_ holds
    # them set after set (all params' first blobs, then all params' second blobs), and
    # the SolverState stores history_ in that order.
    history_sets = 1

    def __init__(self, solver, backend=None, weights=None, source=None):
        default_logging()
        if isinstance(solver, pb.SolverParameter):
            self.param, self.source = solver, source or "<SolverParameter>"
        else:
            self.source = os.fspath(solver)
            self.param = read_solver_param(self.source)
        p = self.param
        self.backend = get_backend(backend) if backend is not None else self._mode_backend()
        if p.random_seed >= 0:
            set_random_seed(p.random_seed)
        self.iter = 0
        self.current_step = 0
        self.callbacks = []
        # Caffe's root_solver: the only one of data-parallel ranks that tests and
        # snapshots (netkit.parallel clears it on the other ranks).
        self.root_solver = True
        self.action_request = None  # function returning NONE/STOP/SNAPSHOT (signals)
        self.requested_early_exit = False
        self.losses = []
        self.smoothed_loss = 0.0
        self._check_param()
        self.net = self._build_train_net()
        self.test_nets = self._build_test_nets()
        if weights:
            self.copy_weights(weights)
        self.history = [self.backend.xp.zeros(prm.blob.shape, dtype=np.float32)
                        for _ in range(self.history_sets) for prm in self.net.learnable_params]
        self._scratch = {}

    def scratch(self, blob, slot=0):
        """Scratch shaped like `blob` (Caffe's per-param update_ and temp_, which are never
        snapshotted): buffer `slot` is as large as the largest param and each param views
        its prefix, so an update allocates nothing per iteration and the scratch costs one
        param's memory, not the net's. The content is whatever the last user left."""
        if slot not in self._scratch:
            largest = max([prm.blob.count for prm in self.net.learnable_params] + [1])
            self._scratch[slot] = self.backend.xp.empty(largest, dtype=np.float32)
        return self._scratch[slot][:blob.data.size].reshape(blob.data.shape)

    def _mode_backend(self):
        """No backend given: an explicit `solver_mode: GPU` asks for device_id (Caffe's
        rule); without a usable GPU netkit says why and trains on the CPU."""
        p = self.param
        if p.HasField("solver_mode") and p.solver_mode == pb.SolverParameter.GPU:
            try:
                return get_backend("gpu", p.device_id)
            except BackendError as e:
                logger.warning("%s: %s", self.source, gpu_fallback_note(e))
                return get_backend("cpu")
        return get_backend(None)

    # -- construction ----------------------------------------------------------------------
    def _check_param(self):
        p = self.param
        if p.average_loss < 1:
            raise NetkitError("%s: average_loss should be >= 1" % self.source)
        if p.iter_size < 1:
            raise NetkitError("%s: iter_size should be >= 1" % self.source)
        if p.HasField("test_interval") and p.test_interval and not p.test_iter \
                and (p.test_net or p.test_net_param or p.HasField("net") or p.HasField("net_param")) \
                and (p.test_net or p.test_net_param):
            raise NetkitError("%s: test_iter must be given for each test net" % self.source)

    def _check_snapshot_directory(self):
        """Caffe's CheckSnapshotWritePermissions, before any training: a snapshot_prefix in
        a missing directory would otherwise fail at the first snapshot, hours in."""
        directory = os.path.dirname(os.path.abspath(self.param.snapshot_prefix))
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            raise NetkitError("%s: cannot write to snapshot prefix '%s'; make sure that the "
                              "directory %s exists and is writable"
                              % (self.source, self.param.snapshot_prefix, directory))

    def _net_source(self):
        p = self.param
        sources = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
        if not sources:
            raise NetkitError("%s: the solver names no net (set 'net' or 'train_net')" % self.source)
        if len(sources) > 1:
            raise NetkitError("%s: give exactly one of net, net_param, train_net, "
                              "train_net_param (found %s)" % (self.source, ", ".join(sources)))
        return getattr(p, sources[0])

    def _build_train_net(self):
        p = self.param
        model = self._net_source()
        param = model if isinstance(model, pb.NetParameter) else None
        if param is None:
            from ..protoio import load_net_param
            param, _ = load_net_param(model)
        state = pb.NetState()
        state.phase = pb.TRAIN
        state.MergeFrom(param.state)
        state.MergeFrom(p.train_state)
        logger.info("Creating training net from %s", model if isinstance(model, str) else "net_param")
        return Net(model, state=state, backend=self.backend)

    def _build_test_nets(self):
        p = self.param
        models = list(p.test_net_param) + list(p.test_net)
        general = p.net_param if p.HasField("net_param") else (p.net if p.HasField("net") else None)
        if general is not None:
            models += [general] * max(0, len(p.test_iter) - len(models))
        if len(p.test_iter) != len(models):
            raise NetkitError("%s: %d test_iter values for %d test nets"
                              % (self.source, len(p.test_iter), len(models)))
        if p.test_state and len(p.test_state) != len(models):
            raise NetkitError("%s: test_state must be given once per test net" % self.source)
        nets = []
        for i, model in enumerate(models):
            state = pb.NetState()
            state.phase = pb.TEST
            if p.test_state:
                state.MergeFrom(p.test_state[i])
            state.phase = pb.TEST
            logger.info("Creating test net (#%d) specified by %s", i,
                        model if isinstance(model, str) else "net_param")
            nets.append(Net(model, state=state, backend=self.backend))
        return nets

    def copy_weights(self, weights):
        """Fine-tuning: copy comma-separated .caffemodel files into the train and test nets."""
        for path in filter(None, weights.split(",")):
            for net in [self.net] + self.test_nets:
                net.copy_from(path)

    # -- the loop --------------------------------------------------------------------------
    def solve(self, resume_file=None):
        p = self.param
        logger.info("Solving %s", self.net.name)
        logger.info("Learning Rate Policy: %s", p.lr_policy)
        if self.root_solver and (p.snapshot or p.snapshot_after_train):
            self._check_snapshot_directory()
        self.requested_early_exit = False
        if resume_file:
            logger.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if not self.root_solver:
            return
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            logger.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            loss = self.net.forward_layers()
            self._update_smoothed_loss(loss, start_iter)
            logger.info("Iteration %d, loss = %s", self.iter, fmt(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        logger.info("Optimization Done.")

    def step(self, iters):
        p = self.param
        if iters > 0:
            try:  # an unknown lr_policy, or one without its fields: before the first pass
                learning_rate(p, self.iter, self.current_step)
            except NetkitError as e:
                raise NetkitError("%s: %s" % (self.source, e)) from None
        start_iter, stop_iter = self.iter, self.iter + iters
        self.losses, self.smoothed_loss = [], 0.0
        last_iter, timer = self.iter, time.time()
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if self.root_solver and p.test_interval and self.iter % p.test_interval == 0 and (
                    self.iter > 0 or p.test_initialization):
                self.test_all()
                if self.requested_early_exit:
                    break
            if p.random_seed >= 0:
                # Each iteration's random draws (Dropout masks) depend only on the seed and
                # the iteration, so a resumed run draws exactly what a straight one does.
                self.backend.reseed(p.random_seed * 1000003 + self.iter)
            for cb in self.callbacks:
                cb.on_start()
            display = p.display and self.iter % p.display == 0
            loss = 0.0
            for _ in range(p.iter_size):
                batch_loss = self.net.forward_backward()
                if not math.isfinite(batch_loss):
                    self._raise_diverged_loss(batch_loss)
                loss += batch_loss
            loss /= p.iter_size
            self._update_smoothed_loss(loss, start_iter)
            if display:
                lapse = time.time() - timer
                per_s = (self.iter - last_iter) / (lapse or 1)
                logger.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter,
                            fmt(per_s), fmt(lapse), p.display, fmt(self.smoothed_loss))
                timer, last_iter = time.time(), self.iter
                self._log_outputs(self.net, "Train", None)
            for cb in self.callbacks:
                cb.on_gradients_ready()
            self._check_finite_gradients()
            self.apply_update()
            self.iter += 1
            request = self._requested_action()
            if self.root_solver and ((p.snapshot and self.iter % p.snapshot == 0)
                                     or request == SNAPSHOT):
                self.snapshot()
            if request == STOP:
                self.requested_early_exit = True
                break

    # -- divergence ------------------------------------------------------------------------
    # A non-finite loss or gradient stops training before the update and before any
    # snapshot, so the last good snapshot is never replaced by a diverged one. The checks
    # cost one host float test of the loss and one device sum over the param diffs per
    # iteration; only after a failure do they search for the first bad layer.
    def _raise_diverged_loss(self, loss):
        """Rerun forward layer by layer (data layers keep the batch they read) and name
        the first layer, in forward order, whose top data is not finite."""
        net, xp = self.net, self.backend.xp
        culprit = "no top is non-finite on a rerun of forward"
        for i, layer in enumerate(net.layers):
            bottom, top = net.bottom_vecs[i], net.top_vecs[i]
            if not layer.is_data:
                layer.reshape(bottom, top)
                layer.forward(bottom, top)
            bad = [j for j, blob in enumerate(top) if not bool(xp.isfinite(blob.data).all())]
            if bad:
                culprit = "the first non-finite top is '%s' of layer '%s' (type %s)" % (
                    net.layer_top_names[i][bad[0]], net.layer_names[i], layer.layer_param.type)
                break
        raise NetkitError("training diverged at iteration %d: the loss is %s; %s"
                          % (self.iter, fmt(loss), culprit))

    def _check_finite_gradients(self):
        """Sum every param diff on the device (NaN and inf survive a sum); only if the sum
        is not finite look for the first non-finite diff by layer order and blob index."""
        params = self.net.learnable_params
        if not params:
            return
        total = params[0].blob.diff.sum()
        for prm in params[1:]:
            total = total + prm.blob.diff.sum()
        if math.isfinite(float(total)):
            return
        xp = self.backend.xp
        for name, layer in zip(self.net.layer_names, self.net.layers):
            for i, blob in enumerate(layer.blobs):
                if not bool(xp.isfinite(blob.diff).all()):
                    raise NetkitError("training diverged at iteration %d: the diff of param "
                                      "%d of layer '%s' is not finite" % (self.iter, i, name))

    def _check_finite_weights(self):
        for name, layer in zip(self.net.layer_names, self.net.layers):
            for i, blob in enumerate(layer.blobs):
                if not bool(self.backend.xp.isfinite(blob.data).all()):
                    raise NetkitError("training diverged at iteration %d: param %d of layer "
                                      "'%s' is not finite; not snapshotting" % (self.iter, i, name))

    def _requested_action(self):
        return self.action_request() if self.action_request else NONE

    def _update_smoothed_loss(self, loss, start_iter):
        n = self.param.average_loss
        if len(self.losses) < n:
            self.losses.append(loss)
            size = len(self.losses)
            self.smoothed_loss = (self.smoothed_loss * (size - 1) + loss) / size
        else:
            idx = (self.iter - start_iter) % n
            self.smoothed_loss += (loss - self.losses[idx]) / n
            self.losses[idx] = loss

    def _log_outputs(self, net, kind, scores):
        """'    Train net output #k: name = v (* w = wv loss)' lines, as Caffe prints them."""
        k = 0
        for name in net.outputs:
            weight = net.output_loss_weight(name)
            values = (self.backend.asnumpy(net.blobs[name].data).ravel() if scores is None
                      else scores[name])
            for v in values:
                logger.info("    %s net output #%d: %s = %s%s", kind, k, name, fmt(v),
                            loss_suffix(weight, v))
                k += 1

    def test_all(self):
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def test(self, i):
        """Run test net i for test_iter batches; log and return each output's mean."""
        p = self.param
        logger.info("Iteration %d, Testing net (#%d)", self.iter, i)
        net = self.test_nets[i]
        self.share_trained_layers(net)
        scores, loss = None, 0.0
        detection = p.eval_type == "detection"
        for _ in range(p.test_iter[i]):
            request = self._requested_action()
            while request != NONE:
                if request == SNAPSHOT:
                    self.snapshot()
                elif request == STOP:
                    self.requested_early_exit = True
                request = self._requested_action()
            if self.requested_early_exit:
                break
            iter_loss = net.forward_layers()
            if p.test_compute_loss:
                loss += iter_loss
            if detection:
                batch = {n: [self.backend.asnumpy(net.blobs[n].data)] for n in net.outputs}
            else:
                batch = {n: self.backend.asnumpy(net.blobs[n].data).astype(np.float64).ravel()
                         for n in net.outputs}
            scores = batch if scores is None else {n: scores[n] + batch[n] for n in scores}
        if self.requested_early_exit:
            logger.info("Test interrupted.")
            return
        if scores is None:  # test_iter: 0 tests nothing, and Caffe then prints no outputs
            return {}
        if p.test_compute_loss:
            logger.info("Test loss: %s", fmt(loss / p.test_iter[i]))
        if detection:
            means = self._detection_scores(scores or {})
        else:
            means = {n: v / p.test_iter[i] for n, v in (scores or {}).items()}
        self._log_outputs(net, "Test", means)
        return means

    def _detection_scores(self, tops):
        """SSD's eval_type "detection": each output's DetectionEvaluate rows, gathered over
        the test iterations, become its mean average precision."""
        p, means = self.param, {}
        for name, batches in tops.items():
            mean_ap, per_class = mean_average_precision(batches, p.ap_version)
            if p.show_per_class_result:
                for label, ap in sorted(per_class.items()):
                    logger.info("class%d: %s", label, fmt(ap))
            means[name] = np.array([mean_ap])
        return means

    def share_trained_layers(self, net):
        """Point `net`'s (a test net's) parameter blobs at the train net's, by layer name."""
        net.share_with(self.net)

    # -- pycaffe's Solver API ---------------------------------------------------------------
    def add_callback(self, on_start, on_gradients_ready):
        """Call `on_start()` before each iteration's forward and `on_gradients_ready()`
        after its backward (pycaffe's add_callback; data-parallel sync uses the same)."""
        self.callbacks.append(types.SimpleNamespace(on_start=on_start,
                                                    on_gradients_ready=on_gradients_ready))

    def share_weights(self, net):
        """Make `net` use this solver's trained parameters by layer name (pycaffe)."""
        self.share_trained_layers(net)

    @property
    def lr(self):
        """The current learning rate (pycaffe's solver.lr)."""
        return self.get_learning_rate()

    def close(self):
        """Stop the data layers' prefetch threads of every net."""
        for net in [self.net] + self.test_nets:
            net.close()

    # -- the update ------------------------------------------------------------------------
    def get_learning_rate(self):
        p = self.param
        if p.lr_policy == "step" and p.stepsize > 0:
            self.current_step = self.iter // p.stepsize  # recorded in the SolverState
        if p.lr_policy == "multistep" and self.current_step < len(p.stepvalue) \
                and self.iter >= p.stepvalue[self.current_step]:
            self.current_step += 1
            logger.info("MultiStep Status: Iteration %d, step = %d", self.iter, self.current_step)
        return float(np.float32(learning_rate(p, self.iter, self.current_step)))

    def apply_update(self):
        p = self.param
        rate = self.get_learning_rate()
        if p.display and self.iter % p.display == 0:
            logger.info("Iteration %d, lr = %s", self.iter, fmt(rate))
        self.clip_gradients()
        for i, prm in enumerate(self.net.learnable_params):
            self.normalize(prm)
            self.regularize(prm)
            self.compute_update_value(i, prm, rate)
        for prm in self.net.learnable_params:
            prm.blob.update()

    def clip_gradients(self):
        clip = self.param.clip_gradients
        if clip < 0:
            return
        sumsq = sum(float((prm.blob.diff * prm.blob.diff).sum())
                    for prm in self.net.learnable_params)
        l2norm = np.sqrt(sumsq)
        if l2norm > clip:
            scale = clip / l2norm
            logger.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by "
                        "scale factor %s", fmt(l2norm), fmt(clip), fmt(scale))
            for prm in self.net.learnable_params:
                prm.blob.diff *= np.float32(scale)

    def normalize(self, prm):
        if self.param.iter_size > 1:
            prm.blob.diff *= np.float32(1.0 / self.param.iter_size)

    def regularize(self, prm):
        p = self.param
        decay = p.weight_decay * prm.decay_mult
        if not decay:
            return
        blob = prm.blob
        xp, temp = self.backend.xp, self.scratch(blob)
        if p.regularization_type == "L2":
            xp.multiply(blob.data, np.float32(decay), out=temp)
        elif p.regularization_type == "L1":
            xp.sign(blob.data, out=temp)
            temp *= np.float32(decay)
        else:
            raise NetkitError("unknown regularization_type '%s' (known: L1, L2)"
                              % p.regularization_type)
        blob.diff += temp

    @abc.abstractmethod
    def compute_update_value(self, i, prm, rate):
        """Turn param i's diff into the step to subtract (the update rule's only hook)."""

    # -- snapshots -------------------------------------------------------------------------
    def snapshot_filename(self, extension):
        return "%s_iter_%d%s" % (self.param.snapshot_prefix, self.iter, extension)

    def snapshot(self):
        """Write the weights and the solver state (Caffe's Snapshot); returns both paths.
        Refuses to write non-finite weights, which would replace a good snapshot."""
        self._check_finite_weights()
        hdf5 = self.param.snapshot_format == pb.SolverParameter.HDF5
        if hdf5:
            model = self.snapshot_filename(".caffemodel.h5")
            logger.info("Snapshotting to HDF5 file %s", model)
            from ..weights import save_net_hdf5
            save_net_hdf5(self.net, model, write_diff=self.param.snapshot_diff)
            return model, self._snapshot_state_hdf5(model)
        model = self.snapshot_filename(".caffemodel")
        logger.info("Snapshotting to binary proto file %s", model)
        self.net.save(model, write_diff=self.param.snapshot_diff)
        state = pb.SolverState()
        state.iter = self.iter
        state.learned_net = model
        state.current_step = self.current_step
        from ..weights import array_to_blob_proto
        for h in self.history:
            array_to_blob_proto(self.backend.asnumpy(h), proto=state.history.add())
        path = self.snapshot_filename(".solverstate")
        logger.info("Snapshotting solver state to binary proto file %s", path)
        write_binary(path, state)
        return model, path

    def _snapshot_state_hdf5(self, model):
        """Caffe's SnapshotSolverStateToHDF5: int datasets "iter" and "current_step" of
        shape (1,), string dataset "learned_net", group "history" with datasets "0".."k"."""
        from ..weights import write_hdf5_atomic, write_hdf5_string
        path = self.snapshot_filename(".solverstate.h5")
        logger.info("Snapshotting solver state to HDF5 file %s", path)

        def fill(f):
            f.create_dataset("iter", data=np.array([self.iter], dtype=np.int32))
            write_hdf5_string(f, "learned_net", model)
            f.create_dataset("current_step", data=np.array([self.current_step], dtype=np.int32))
            history = f.create_group("history")
            for i, h in enumerate(self.history):
                history.create_dataset(str(i), data=self.backend.asnumpy(h).astype(np.float32))

        write_hdf5_atomic(path, fill)
        return path

    def _read_state_hdf5(self, path):
        """(iter, learned_net, current_step, history arrays) from a .solverstate.h5."""
        import h5py
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise NetkitError("%s: cannot read as HDF5: %s" % (path, e)) from None
        with f:
            for name in ("iter", "current_step", "history"):
                if name not in f:
                    raise NetkitError("%s: HDF5 solver state has no '%s'" % (path, name))
            learned = f["learned_net"][()] if "learned_net" in f else b""
            learned = learned.decode("utf-8") if isinstance(learned, bytes) else str(learned)
            history = f["history"]
            arrays = [np.asarray(history[str(i)], dtype=np.float32) if str(i) in history
                      else None for i in range(len(history))]
            if any(a is None for a in arrays):
                raise NetkitError("%s: history datasets must be named 0..%d"
                                  % (path, len(history) - 1))
            return (int(np.asarray(f["iter"]).ravel()[0]), learned,
                    int(np.asarray(f["current_step"]).ravel()[0]), arrays)

    def restore(self, path):
        """Load a .solverstate (binary) or .solverstate.h5 (HDF5, by extension as Caffe)."""
        from ..weights import blob_proto_to_array
        if path.endswith((".caffemodel", ".caffemodel.h5")):
            raise NetkitError("%s is a weights file; --snapshot resumes from a .solverstate "
                              "(to start from weights, give --weights)" % path)
        if path.endswith(".h5"):
            it, learned, step, arrays = self._read_state_hdf5(path)
        else:
            state = read_binary(path, pb.SolverState())
            it, learned, step = state.iter, state.learned_net, state.current_step
            arrays = [blob_proto_to_array(proto) for proto in state.history]
        if learned:
            self.net.copy_from(learned)
        if len(arrays) != len(self.history):
            raise NetkitError("%s: solver state has %d history blobs, a %s solver on this "
                              "net keeps %d" % (path, len(arrays), self.type_name,
                                                len(self.history)))
        for h, arr in zip(self.history, arrays):
            if arr.size != h.size:
                raise NetkitError("%s: history blob shape %s does not fit parameter %s"
                                  % (path, arr.shape, h.shape))
            h[...] = self.backend.asarray(arr.reshape(h.shape))
        self.iter = it
        self.current_step = step
        p = self.param
        self._replay_data(self.net, self.iter * p.iter_size)
        if p.test_interval:
            tests = sum(1 for it in range(0, self.iter, p.test_interval)
                        if it > 0 or p.test_initialization)
            for net, n in zip(self.test_nets, p.test_iter):
                self._replay_data(net, tests * n)

    def _replay_data(self, net, batches):
        """Advance the net's data layers past the batches the snapshotted run consumed, so
        a resumed run reads (and draws crops and mirrors) exactly as an uninterrupted one.
        Caffe restarts its data at the first record instead; continuing is what users want.
        A layer with `skip_batches` moves its stream without making the batches; others
        run forward `batches` times."""
        for i, layer in enumerate(net.layers):
            if not layer.is_data:
                continue
            skip = getattr(layer, "skip_batches", None)
            if skip is not None:
                skip(batches)
            else:
                for _ in range(batches):
                    layer.forward(net.bottom_vecs[i], net.top_vecs[i])
