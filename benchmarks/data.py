"""Data pipeline throughput: convert_imageset images/s, and the Data layer's delivered
batches/s with transform and prefetch, against what CaffeNet consumes, same run.

Builds a folder of JPEG photos (scikit-image's samples, resized and shifted to make
--images distinct 256x256 images), then measures:
  convert_imageset     images/s into an LMDB, raw Datums and encoded (JPEG) Datums,
                       with --resize 256x256, on every core
  Data layer           images/s delivered by forward() (the prefetch thread decoding,
                       cropping, mirroring and subtracting the mean), for
                       CaffeNet-size batches (256 x 227x227 crops, mirror, mean_file)
                       from the raw and the encoded LMDB, and LeNet-size batches
                       (64 x 28x28 MNIST-shaped, scale 1/256)
  CaffeNet consumption images/s of one training step (forward+backward) at batch 10
and prints whether the Data layer keeps ahead of CaffeNet (ratio > 1 means training
never waits on data).

The CaffeNet step uses BLAS; this machine's environment may set OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE, which slow it: the script unsets both for its own process (and says
so), which makes CaffeNet faster and so the comparison harder for the Data layer.
Usage: python benchmarks/data.py [--images 512] [--batches 6]
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

from blas_env import BLAS_VARS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def make_photos(directory, count):
    """`count` distinct 256x256 JPEGs cut from scikit-image's sample photos; a list file."""
    import cv2
    import numpy as np
    import skimage.data
    sources = [getattr(skimage.data, n)() for n in ("astronaut", "coffee", "chelsea", "rocket")]
    lines = []
    for i in range(count):
        image = sources[i % len(sources)]
        image = cv2.resize(image[:, :, ::-1], (300, 300), interpolation=cv2.INTER_AREA)
        dy, dx = (i * 7) % 44, (i * 13) % 44
        name = "img%05d.jpg" % i
        cv2.imwrite(os.path.join(directory, name), np.ascontiguousarray(image[dy:dy + 256,
                                                                               dx:dx + 256]))
        lines.append("%s %d" % (name, i % 1000))
    with open(os.path.join(directory, "list.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return os.path.join(directory, "list.txt")


def rate(count, seconds):
    return count / seconds if seconds else float("inf")


def time_convert(photos, listfile, db, encoded):
    from netkit.tools.convert_imageset import convert_imageset
    start = time.perf_counter()
    n = convert_imageset(photos + "/", listfile, db, resize_width=256, resize_height=256,
                         encoded=encoded, encode_type="jpg" if encoded else "")
    return rate(n, time.perf_counter() - start)


def data_net(source, batch, transform, shape=None):
    import netkit
    text = ('layer { name: "data" type: "Data" top: "data" top: "label" '
            'data_param { source: "%s" batch_size: %d prefetch: 4 } transform_param { %s } }'
            % (source, batch, transform))
    return netkit.Net(text, phase=netkit.TRAIN)


def time_data_layer(net, batches):
    """Images/s delivered by forward() once the prefetch queue has filled: what a
    training loop that never waits would see."""
    batch = net.blobs["data"].shape[0]
    net.forward()
    time.sleep(3)  # let the prefetch thread fill its queue, as it does during a step
    start = time.perf_counter()
    for _ in range(batches):
        net.forward()
    return rate(batches * batch, time.perf_counter() - start)


def time_data_steady(net, batches):
    """Images/s of the prefetch thread alone (forward() waiting on it every batch)."""
    batch = net.blobs["data"].shape[0]
    for _ in range(5):  # drain the queue
        net.forward()
    start = time.perf_counter()
    for _ in range(batches):
        net.forward()
    return rate(batches * batch, time.perf_counter() - start)


def caffenet_consumption(iters=3):
    sys.path.insert(0, HERE)
    from zoo_nets import build_netkit
    net = build_netkit("bvlc_reference_caffenet", 10)
    net.forward_layers()
    net.backward_layers()
    start = time.perf_counter()
    for _ in range(iters):
        net.forward_layers()
        net.backward_layers()
    return rate(iters * 10, time.perf_counter() - start)


def make_mnist_like(db, count=2048):
    import numpy as np
    from netkit.data.datum import array_to_datum, write_lmdb
    rs = np.random.RandomState(0)
    images = rs.randint(0, 256, (count, 1, 28, 28)).astype(np.uint8)
    write_lmdb(db, (("%08d" % i, array_to_datum(im, i % 10).SerializeToString())
                    for i, im in enumerate(images)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batches", type=int, default=6)
    args = ap.parse_args()
    unset = [v for v in BLAS_VARS if v in os.environ]
    if unset:
        env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
        print("unsetting %s for this benchmark's process" % " and ".join(unset), flush=True)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    import logging
    logging.getLogger("netkit").setLevel(logging.WARNING)
    from netkit.tools.compute_image_mean import compute_image_mean

    work = tempfile.mkdtemp(prefix="netkit_bench_data_")
    try:
        photos = os.path.join(work, "photos")
        os.mkdir(photos)
        listfile = make_photos(photos, args.images)
        raw_db, jpg_db = os.path.join(work, "raw_lmdb"), os.path.join(work, "jpg_lmdb")
        print("convert_imageset, %d JPEG photos -> 256x256 (%d cores):"
              % (args.images, os.cpu_count()))
        print("  raw Datums      %7.0f images/s" % time_convert(photos, listfile, raw_db, False))
        print("  encoded Datums  %7.0f images/s" % time_convert(photos, listfile, jpg_db, True))
        mean = os.path.join(work, "mean.binaryproto")
        compute_image_mean(raw_db, mean)

        results = {}
        caffenet = ('crop_size: 227 mirror: true mean_file: "%s"' % mean)
        for label, db in (("raw LMDB", raw_db), ("encoded LMDB", jpg_db)):
            net = data_net(db, 256, caffenet)
            results[label] = (time_data_layer(net, args.batches),
                              time_data_steady(net, args.batches))
            net.close()
        mnist = os.path.join(work, "mnist_lmdb")
        make_mnist_like(mnist)
        net = data_net(mnist, 64, "scale: 0.00390625")
        lenet = (time_data_layer(net, 50), time_data_steady(net, 50))
        net.close()
        consumed = caffenet_consumption()

        print("Data layer, images/s delivered to forward() (queue full / thread alone):")
        for label, (full, steady) in results.items():
            print("  CaffeNet batch 256, 227 crop + mirror + mean, %-12s %8.0f / %6.0f"
                  % (label, full, steady))
        print("  LeNet batch 64, 28x28, scale                          %8.0f / %6.0f" % lenet)
        print("CaffeNet training step (forward+backward, batch 10): %.1f images/s" % consumed)
        for label, (_, steady) in results.items():
            print("  Data layer (%s) / CaffeNet consumption: %.1fx%s"
                  % (label, steady / consumed,
                     "" if steady > consumed else "  <- training would wait on data"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
