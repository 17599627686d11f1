"""`netkit layer_list`: the registered layer types, one per line, sorted."""
import click


@click.command("layer_list")
def command():
    """Print every layer type a prototxt may use, one per line."""
    import netkit.layers  # noqa: F401  (registers every layer type)
    from ..registry import layers
    for name in layers.names():
        click.echo(name)
