"""`netkit run SCRIPT [ARGS...]`: a pycaffe script run unchanged, its `import caffe` given
netkit."""
import click


@click.command("run", context_settings={"ignore_unknown_options": True,
                                        "allow_interspersed_args": False})
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(script, args):
    """Run a pycaffe SCRIPT with ARGS as `python SCRIPT ARGS` would, but with `import caffe`
    (caffe.io, caffe.proto.caffe_pb2, caffe.draw, caffe.coord_map, caffe.net_spec ...) giving
    netkit, so scripts written for pycaffe need no edit. Where a real pycaffe is installed
    the script gets that one."""
    import os
    import runpy
    import sys
    from ..log import logger
    from ..pycaffe import alias_caffe
    if not alias_caffe():
        logger.warning("a `caffe` module is installed; %s imports that one, not netkit",
                       script)
    sys.argv = [script] + list(args)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
