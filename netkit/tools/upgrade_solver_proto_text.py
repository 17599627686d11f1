"""netkit upgrade_solver_proto_text INPUT OUTPUT: Caffe's upgrade_solver_proto_text tool."""
import click


@click.command("upgrade_solver_proto_text")
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
def command(input_path, output_path):
    """Upgrade a solver prototxt (the deprecated solver_type enum) to the current format."""
    from .upgrade import upgrade_file
    upgrade_file("solver_text", input_path, output_path)
