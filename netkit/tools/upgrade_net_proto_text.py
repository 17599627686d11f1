"""netkit upgrade_net_proto_text INPUT OUTPUT: Caffe's upgrade_net_proto_text tool."""
import click


@click.command("upgrade_net_proto_text")
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
def command(input_path, output_path):
    """Upgrade a V0/V1 net prototxt (or one with net-level input fields) to the current format."""
    from .upgrade import upgrade_file
    upgrade_file("net_text", input_path, output_path)
