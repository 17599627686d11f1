"""netkit download_model_from_gist GIST_ID [DIR]: Caffe's scripts/download_model_from_gist.sh."""
import click


@click.command("download_model_from_gist")
@click.argument("gist_id", metavar="GIST_ID")
@click.argument("dirname", metavar="[DIR]", default="models")
def command(gist_id, dirname):
    """Write the files of a model's GitHub gist (ID or USER/ID) into DIR/GIST_ID (DIR: models).

    \b
    $NETKIT_GIST_API replaces https://api.github.com as the gist API's base URL.
    """
    from ..zoo import download_gist
    download_gist(gist_id, dirname)
