"""ReLU6 (MobileNet-v2 forks): the rectifier clipped at 6."""
from ..layer import Layer
from ..registry import layers


@layers.register("ReLU6")
class ReLU6Layer(Layer):
    """top = min(max(x, 0) + negative_slope * min(x, 0), 6), elementwise.

    `negative_slope` (default 0) comes from `relu6_param` (MobileNet-YOLO's fork, a
    ReLUParameter) or, when that is absent, from `relu_param` (NVIDIA Caffe). Backward,
    as MobileNet-YOLO's: top_diff times 1 on (0, 6), negative_slope at or below 0, and 0
    from 6 up. Reading x or the clipped top gives the same slopes, so it runs in place.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.layer_param
        relu = p.relu6_param if p.HasField("relu6_param") else p.relu_param
        self.slope = relu.negative_slope

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xp, x = self.xp, bottom[0].data
        out = xp.maximum(x, 0)
        if self.slope:
            out += self.xp.float32(self.slope) * xp.minimum(x, 0)
        top[0].data[...] = xp.minimum(out, 6)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp, x = self.xp, bottom[0].data
        slope = xp.where(x > 0, xp.float32(1), xp.float32(self.slope))
        bottom[0].diff[...] = xp.where(x < 6, top[0].diff * slope, xp.float32(0))
