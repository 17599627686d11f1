"""Loading a large .caffemodel against reading its bytes from disk, same run.

Writes a VGG-16-size model (the fc6/fc7/fc8 shapes plus conv layers: about 550 MB) with
netkit, then times, each as the median of several runs with the file in the page cache:
  read      open(path).read() of the whole file (the floor any loader pays)
  net       netkit.Net(deploy, weights=path): the net built and every blob filled
and prints each as a speed relative to `read` (1.0 = as fast as reading the bytes).
Also times protobuf's own full parse of the file, for comparison.

No BLAS is involved, so OPENBLAS_* variables do not matter here.
Usage: python benchmarks/caffemodel_load.py [--dir /tmp] [--repeat 3]
"""
import argparse
import os
import statistics
import tempfile
import time

# VGG-16's parameter shapes: 13 convolutions, then fc6 (25088 -> 4096), fc7, fc8.
VGG_CONVS = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256),
             (512, 256), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]


def deploy_text():
    layers = ['layer { name: "data" type: "Input" top: "data" '
              'input_param { shape { dim: 1 dim: 3 dim: 7 dim: 7 } } }']
    bottom = "data"
    for i, (out, _) in enumerate(VGG_CONVS):
        layers.append('layer { name: "conv%d" type: "Convolution" bottom: "%s" top: "conv%d" '
                      'convolution_param { num_output: %d kernel_size: 3 pad: 1 '
                      'weight_filler { type: "constant" value: 0.001 } } }' % (i, bottom, i, out))
        bottom = "conv%d" % i
    # 512 x 7 x 7 = 25088 inputs to fc6, as in VGG-16
    for name, out in (("fc6", 4096), ("fc7", 4096), ("fc8", 1000)):
        layers.append('layer { name: "%s" type: "InnerProduct" bottom: "%s" top: "%s" '
                      'inner_product_param { num_output: %d '
                      'weight_filler { type: "constant" value: 0.001 } } }'
                      % (name, bottom, name, out))
        bottom = name
    return 'name: "vgg16_shapes"\n' + "\n".join(layers)


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import netkit
    from netkit import netkit_pb2 as pb

    deploy = deploy_text()
    path = os.path.join(args.dir, "netkit_bench_vgg16_shapes.caffemodel")
    netkit.Net(deploy, phase=netkit.TEST).save(path)
    size = os.path.getsize(path)
    try:
        def read():
            with open(path, "rb") as f:
                return f.read()

        def protobuf_parse():
            return pb.NetParameter.FromString(read())

        read()  # into the page cache
        t_read = median_time(read, args.repeat)
        t_net = median_time(lambda: netkit.Net(deploy, weights=path, phase=netkit.TEST),
                            args.repeat)
        t_protobuf = median_time(protobuf_parse, args.repeat)
        print("caffemodel: %.0f MB (VGG-16 parameter shapes)" % (size / 1e6))
        for label, t in (("read bytes", t_read), ("Net(deploy, weights)", t_net), ("protobuf parse", t_protobuf)):
            print("%-22s %7.3f s  %7.0f MB/s  speed vs read %.2f"
                  % (label, t, size / 1e6 / t, t_read / t))
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
