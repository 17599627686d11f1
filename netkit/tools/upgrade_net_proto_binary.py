"""netkit upgrade_net_proto_binary INPUT OUTPUT: Caffe's upgrade_net_proto_binary tool."""
import click


@click.command("upgrade_net_proto_binary")
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
def command(input_path, output_path):
    """Upgrade a V0/V1 binary net (.caffemodel) to the current format, weights included."""
    from .upgrade import upgrade_file
    upgrade_file("net_binary", input_path, output_path)
