"""Reading and writing protobuf files: prototxt text, binary messages, atomically."""
import contextlib
import os
import re
import shutil
import socket
import tempfile

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from . import netkit_pb2 as pb
from .errors import NetkitError


def parse_text(text, message, source="<string>"):
    """Parse prototxt text into `message`; errors name source:line:column."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        msg = str(e)
        # ParseError's text starts with "line:col : "; keep only the message.
        if line is not None and msg.startswith("%s:%s : " % (line, col)):
            msg = msg[len("%s:%s : " % (line, col)):]
        where = "%s:%s:%s" % (source, line, col) if line is not None else source
        raise NetkitError("%s: malformed prototxt: %s" % (where, msg)) from None
    return message


def read_text(path, message):
    """Parse the prototxt file at `path` into `message`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise NetkitError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    if b"\x00" in data[:4096]:
        raise NetkitError("%s: a binary file (a .caffemodel or .solverstate?), not prototxt "
                          "text; were two arguments swapped?" % path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Caffe reads bytes: comments in other encodings (GBK, Latin-1) are common in
        # published files. Undecodable bytes become U+FFFD, harmless outside strings.
        text = data.decode("utf-8", errors="replace")
    return parse_text(text, message, path)


def read_binary(path, message):
    """Parse a binary protobuf file (e.g. .caffemodel, .solverstate, .binaryproto)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise NetkitError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    try:
        message.ParseFromString(data)
    except DecodeError as e:
        raise NetkitError("%s: not a valid binary %s: %s"
                          % (path, message.DESCRIPTOR.name, e)) from None
    return message


# Staged files and directories are named .<target>.nk<host>-<pid>.<random>.tmp, so that
# one left by a process that died mid-write (kill -9, power loss) can be told from one a
# live writer still holds: the next staging in that directory on the same host removes it.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_STAGED = re.compile(r"^\..+\.nk(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


def staging_prefix(path):
    """The prefix of this process's staged names for `path` (see _STAGED)."""
    return ".%s.nk%s-%d." % (os.path.basename(path), _HOST, os.getpid())


def remove_stale_staging(directory):
    """Remove staged files and directories in `directory` whose writer, a process on this
    host, no longer runs: what a crash mid-write leaves behind."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _STAGED.match(name)
        if not match or match.group("host") != _HOST or _running(int(match.group("pid"))):
            continue
        stale = os.path.join(directory, name)
        if os.path.isdir(stale) and not os.path.islink(stale):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(stale)


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def check_output_directory(path):
    """Refuse, naming them, an output `path` whose directory does not exist: a staged write
    would otherwise fail on its hidden temporary name. Returns that directory."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise NetkitError("cannot write %s: directory %s does not exist" % (path, directory))
    return directory


def check_output_file(path):
    """check_output_directory for the file `path`, which must not be a directory itself.
    Returns the directory that will hold `path`."""
    directory = check_output_directory(path)
    if os.path.isdir(path):
        raise NetkitError("cannot write %s: it is a directory" % path)
    return directory


def temporary_beside(path):
    """(fd, name) of a new hidden temporary file in `path`'s directory, with the permissions
    a plain open() would give (mkstemp's own are owner-only). Stale ones from crashed
    writers there are removed first."""
    directory = check_output_file(path)
    remove_stale_staging(directory)
    try:
        fd, tmp = tempfile.mkstemp(prefix=staging_prefix(path), suffix=".tmp", dir=directory)
    except OSError as e:
        raise NetkitError("cannot write %s: %s" % (path, e.strerror or e)) from None
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp


@contextlib.contextmanager
def replaced_atomically(path):
    """Yield the name of a new temporary file beside `path` to write; when the block
    succeeds the file is synced to disk and renamed over `path`, when it fails it is
    removed. A crash mid-write leaves any previous `path` intact, never a truncated one."""
    fd, tmp = temporary_beside(path)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if e.filename != tmp:
            raise
        # The staged name means nothing to the user: say which file could not be written.
        raise NetkitError("cannot write %s: %s" % (path, e.strerror or e)) from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path, data):
    """Write bytes (or a list of buffers, one after another) to `path` atomically."""
    with replaced_atomically(path) as tmp:
        with open(tmp, "wb") as f:
            for chunk in ([data] if isinstance(data, (bytes, bytearray)) else data):
                f.write(chunk)


def write_binary(path, message):
    write_atomic(path, message.SerializeToString())


def write_text(path, message):
    write_atomic(path, text_format.MessageToString(message).encode("utf-8"))


def load_net_param(net):
    """A NetParameter from a path, prototxt text, or NetParameter; returns (param, source)."""
    if isinstance(net, pb.NetParameter):
        return net, "<NetParameter>"
    net = os.fspath(net)
    if "\n" in net or "{" in net:
        return parse_text(net, pb.NetParameter(), "<string>"), "<string>"
    return read_text(net, pb.NetParameter()), net
