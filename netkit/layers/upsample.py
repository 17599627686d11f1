"""Upsample: SegNet's max-unpooling (two bottoms) or the YOLOv3 ports' nearest-neighbour
upsampling (one bottom). Both forks register this type name and share upsample_param."""
from ..layer import Layer, LayerSetupError
from ..registry import layers


@layers.register("Upsample")
class UpsampleLayer(Layer):
    """Enlarges the height and width of a 4-D bottom.

    With two bottoms (caffe-segnet), bottom[1] is the argmax mask top of a MAX Pooling
    layer, the same shape as bottom[0]: each value goes to the flat position h * W + w
    its mask names in a zeroed output plane. The output is `upsample_h` x `upsample_w`,
    else H * scale_h - pad_out_h by W * scale_w - pad_out_w (`scale` sets both scales;
    pad_out needs scale 2). As in the fork, a position named twice keeps the later
    value, and backward reads each bottom diff from the top diff at its mask position;
    the mask gets no gradient.

    With one bottom (YOLOv3 ports), each value is repeated scale_h x scale_w times
    (nearest neighbour); backward sums each block of top diffs. An unset `scale` is
    SegNet's default 2 in both forms (the YOLOv3 ports' own message defaults to 1).
    """
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param.upsample_param
        exact = p.HasField("upsample_h") and p.HasField("upsample_w")
        if not (exact or (not p.HasField("scale") and p.HasField("scale_h")
                          and p.HasField("scale_w"))
                or (not p.HasField("scale_h") and not p.HasField("scale_w"))):
            raise LayerSetupError("upsample_param needs upsample_h and upsample_w, or scale, "
                                  "or scale_h and scale_w (not scale with scale_h/scale_w)")
        self.unpool = len(bottom) == 2
        lowest = 2 if self.unpool else 1
        self.size = None
        if exact:
            if not self.unpool:
                raise LayerSetupError("upsample_param.upsample_h/upsample_w need the SegNet "
                                      "form: a second bottom with the pooling mask")
            if p.upsample_h <= 1 or p.upsample_w <= 1:
                raise LayerSetupError("upsample_param.upsample_h and upsample_w must be > 1, "
                                      "got %d x %d" % (p.upsample_h, p.upsample_w))
            self.size = (p.upsample_h, p.upsample_w)
            return
        if p.HasField("scale_h"):
            self.scale_h, self.scale_w = p.scale_h, p.scale_w
        else:
            self.scale_h = self.scale_w = p.scale
        if self.scale_h < lowest or self.scale_w < lowest:
            raise LayerSetupError("upsample_param scale must be >= %d, got %d x %d"
                                  % (lowest, self.scale_h, self.scale_w))
        self.pad_h, self.pad_w = int(p.pad_out_h), int(p.pad_out_w)
        if (self.pad_h or self.pad_w) and not self.unpool:
            raise LayerSetupError("upsample_param.pad_out_h/pad_out_w need the SegNet "
                                  "form: a second bottom with the pooling mask")
        if self.pad_h and self.scale_h != 2:
            raise LayerSetupError("upsample_param.pad_out_h needs scale_h 2, got %d"
                                  % self.scale_h)
        if self.pad_w and self.scale_w != 2:
            raise LayerSetupError("upsample_param.pad_out_w needs scale_w 2, got %d"
                                  % self.scale_w)

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise LayerSetupError("Upsample bottom[0] must be 4-D (N, C, H, W), got shape %s"
                                  % (bottom[0].shape,))
        num, channels, height, width = bottom[0].shape
        if self.unpool and bottom[1].shape != bottom[0].shape:
            raise LayerSetupError("Upsample bottom[1] (the pooling mask) must have bottom[0]'s "
                                  "shape %s, got %s" % (bottom[0].shape, bottom[1].shape))
        if self.size:
            out_h, out_w = self.size
        else:
            out_h = height * self.scale_h - self.pad_h
            out_w = width * self.scale_w - self.pad_w
        top[0].reshape(num, channels, out_h, out_w)

    def _positions(self, bottom, top):
        """Flat indices into top of each bottom value, from the mask (checked in range)."""
        xp = self.xp
        num, channels, height, width = bottom[0].shape
        plane = top[0].shape[2] * top[0].shape[3]
        mask = bottom[1].data.reshape(num * channels, height * width).astype(xp.int64)
        outside = self.backend.asnumpy(xp.logical_or(mask < 0, mask >= plane).any())
        if outside:
            raise LayerSetupError("Upsample mask holds an index outside the %d x %d output "
                                  "plane: check that the scale matches the pooling layer "
                                  "that made the mask" % top[0].shape[2:])
        rows = xp.arange(num * channels, dtype=xp.int64)[:, None] * plane
        return (mask + rows).reshape(-1)

    def forward(self, bottom, top):
        if self.unpool:
            self.positions = self._positions(bottom, top)
            out = top[0].data.reshape(-1)
            out[...] = 0
            out[self.positions] = bottom[0].data.reshape(-1)
            return
        num, channels, height, width = bottom[0].shape
        blocks = top[0].data.reshape(num, channels, height, self.scale_h, width, self.scale_w)
        blocks[...] = bottom[0].data[:, :, :, None, :, None]

    def backward(self, top, propagate_down, bottom):
        if self.unpool and propagate_down[1]:
            bottom[1].diff[...] = 0
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        if self.unpool:
            diff[...] = top[0].diff.reshape(-1)[self.positions].reshape(diff.shape)
            return
        num, channels, height, width = diff.shape
        blocks = top[0].diff.reshape(num, channels, height, self.scale_h, width, self.scale_w)
        diff[...] = blocks.sum(axis=(3, 5))

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0
