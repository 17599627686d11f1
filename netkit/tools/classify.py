"""netkit classify: class probabilities for image files with a deploy net, printing the
top-k labels as Caffe's cpp_classification example does and optionally saving them as
an .npy file as Caffe's python/classify.py does.

Images go through pycaffe's Classifier: loaded as RGB in [0, 1], resized to
--images_dim, then ten crops (four corners, centre and their mirrors, predictions
averaged) or the centre crop alone (--center_only), transposed to CHW, channels swapped
(RGB -> BGR by default, as Caffe models expect), scaled by --raw_scale, the mean
subtracted, scaled by --input_scale.
"""
import click


def read_mean(path):
    """Per-channel mean from a mean.binaryproto or .npy image (C, H, W): the mean of each
    channel, as cpp_classification uses it (the crop need not match the mean's size)."""
    import numpy as np

    from ..errors import NetkitError
    if path.endswith(".npy"):
        mean = np.load(path)
    else:
        from .. import netkit_pb2 as pb
        from ..protoio import read_binary
        from ..weights import blob_proto_to_array
        mean = blob_proto_to_array(read_binary(path, pb.BlobProto()))
        if mean.ndim == 4:
            mean = mean[0]
    if mean.ndim == 1:
        return mean.astype(np.float32)
    if mean.ndim != 3:
        raise NetkitError("%s: a mean is (channels, height, width) or per channel, got shape %s"
                          % (path, mean.shape))
    return mean.reshape(mean.shape[0], -1).mean(axis=1).astype(np.float32)


def read_labels(path):
    from ..errors import NetkitError
    try:
        with open(path) as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except OSError as e:
        raise NetkitError("%s: cannot read the labels file: %s" % (path, e.strerror)) from None


def numbers(text, kind, option):
    from ..errors import NetkitError
    try:
        return [kind(v) for v in text.split(",")]
    except ValueError:
        raise NetkitError("%s expects comma-separated numbers, got '%s'" % (option, text)) from None


@click.command("classify")
@click.option("--model", "--model_def", "model", required=True, help="Deploy prototxt.")
@click.option("--weights", "--pretrained_model", "weights", required=True,
              help="Trained .caffemodel.")
@click.option("--mean", "--mean_file", "mean_file", default=None,
              help="mean.binaryproto or .npy; its per-channel means are subtracted.")
@click.option("--mean_value", default=None, help="Per-channel means, e.g. 104,117,123 (BGR).")
@click.option("--raw_scale", default=255.0, show_default=True, type=float,
              help="Multiply the [0, 1] pixels by this before subtracting the mean.")
@click.option("--input_scale", default=None, type=float,
              help="Multiply by this after subtracting the mean (e.g. 0.017 for MobileNet).")
@click.option("--channel_swap", default="2,1,0", show_default=True,
              help="Channel order given to the net ('2,1,0': RGB to BGR).")
@click.option("--images_dim", default=None,
              help="H,W the images are resized to before cropping (default: the net input).")
@click.option("--center_only", is_flag=True, help="Only the centre crop, not ten crops.")
@click.option("--labels", default=None, help="One label per line (e.g. synset_words.txt).")
@click.option("--top_k", default=5, show_default=True, type=int)
@click.option("--output", default=None, help="Save the (N, classes) probabilities as .npy.")
@click.option("--gpu", default="-1", show_default=True, help="Device id; -1 is the CPU.")
@click.argument("images", nargs=-1, required=True)
def command(model, weights, mean_file, mean_value, raw_scale, input_scale, channel_swap,
            images_dim, center_only, labels, top_k, output, gpu, images):
    """Classify IMAGES with a deploy net and print the top-k classes of each."""
    import numpy as np

    from ..classifier import Classifier
    from ..errors import NetkitError
    from ..io import load_image
    from .cli import make_backend

    if mean_file and mean_value:
        raise NetkitError("give --mean or --mean_value, not both")
    mean = read_mean(mean_file) if mean_file else (
        np.array(numbers(mean_value, float, "--mean_value"), np.float32) if mean_value else None)
    names = read_labels(labels) if labels else None
    dims = numbers(images_dim, int, "--images_dim") if images_dim else None
    if dims is not None and len(dims) not in (1, 2):
        raise NetkitError("--images_dim expects HEIGHT,WIDTH (or one size for both), got '%s'"
                          % images_dim)
    try:
        classifier = Classifier(model, weights, backend=make_backend(gpu, None),
                                image_dims=dims * (3 - len(dims)) if dims else None,
                                mean=mean, input_scale=input_scale, raw_scale=raw_scale,
                                channel_swap=numbers(channel_swap, int, "--channel_swap"))
    except ValueError as e:  # the Transformer's: mean or channel_swap against the input
        raise NetkitError("%s: %s (--mean/--mean_value and --channel_swap must have one value "
                          "per input channel)" % (model, e)) from None
    inputs = []
    for path in images:
        try:
            inputs.append(load_image(path))
        except (OSError, ValueError, ImportError) as e:
            raise NetkitError("%s: cannot read the image: %s" % (path, e)) from None
    try:
        probs = classifier.predict(inputs, oversample=not center_only)
    except ValueError as e:  # e.g. a crop larger than --images_dim
        raise NetkitError("%s: %s" % (model, e)) from None
    if names is not None and len(names) != probs.shape[1]:
        raise NetkitError("%s has %d labels but the net gives %d classes"
                          % (labels, len(names), probs.shape[1]))
    for path, p in zip(images, probs.reshape(len(images), -1)):
        click.echo("---------- Prediction for %s ----------" % path)
        for k in np.argsort(-p, kind="stable")[:top_k]:
            click.echo('%.4f - "%s"' % (p[k], names[k] if names else k))
    if output:
        np.save(output, probs)
        click.echo("Saved predictions to %s" % output)
    classifier.close()
