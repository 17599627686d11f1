"""netkit download_model MODEL_DIR: Caffe's scripts/download_model_binary.py."""
import click


@click.command("download_model")
@click.argument("model_dir", metavar="MODEL_DIR")
@click.option("--url", default=None,
              help="Download from this URL instead of the readme's caffemodel_url.")
def command(model_dir, url):
    """Fetch the trained .caffemodel named in MODEL_DIR/readme.md and check its SHA-1.

    \b
    An interrupted download is resumed on the next run (MODEL_DIR/<caffemodel>.part).
    $NETKIT_MODEL_MIRROR, a base URL, serves <caffemodel> from a mirror.
    """
    from ..zoo import download_model
    download_model(model_dir, url)
