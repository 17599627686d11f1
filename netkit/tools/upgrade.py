"""What Caffe's upgrade_* tools do, shared by the three upgrade commands: read a file in an
old format, upgrade it as every read would, and write it back in the current format.

As in Caffe, a file that needs no upgrade is still written (an error line says so), and the
output is written atomically, so OUTPUT may be INPUT.
"""
from ..log import logger

# kind -> (message name, binary?, what the log line calls the output)
KINDS = {
    "net_text": ("NetParameter", False, "NetParameter text proto"),
    "net_binary": ("NetParameter", True, "NetParameter binary proto"),
    "solver_text": ("SolverParameter", False, "SolverParameter text proto"),
}


def upgrade_file(kind, input_path, output_path):
    """Upgrade the `kind` file at `input_path` and write it to `output_path`."""
    from .. import netkit_pb2 as pb
    from .. import protoio
    from .. import upgrade
    name, binary, what = KINDS[kind]
    read = protoio.read_binary if binary else protoio.read_text
    param = read(input_path, getattr(pb, name)())
    if name == "SolverParameter":
        needed = upgrade.solver_needs_upgrade(param)
        upgrade.upgrade_solver(param, input_path)
    else:
        needed = upgrade.net_needs_upgrade(param)
        param = upgrade.upgrade_net(param, input_path, copy=False)
    if not needed:
        logger.error("File already in latest proto format: %s", input_path)
    (protoio.write_binary if binary else protoio.write_text)(output_path, param)
    logger.info("Wrote upgraded %s to %s", what, output_path)
