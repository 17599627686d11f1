"""A Euclidean loss written as a Python layer: loss = sum((a - b)^2) / (2 N).

The same arithmetic as the built-in EuclideanLoss, written the way a pycaffe user writes
a layer. `self.xp` is numpy on the CPU and CuPy on a GPU, so the layer runs on both.
"""
import netkit as caffe


class EuclideanLossLayer(caffe.Layer):
    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise ValueError("EuclideanLossLayer needs two bottoms")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise ValueError("EuclideanLossLayer inputs must have the same count")
        self.diff = self.xp.zeros_like(bottom[0].data)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data.reshape(self.diff.shape)
        top[0].data[...] = (self.diff ** 2).sum() / bottom[0].shape[0] / 2.0

    def backward(self, top, propagate_down, bottom):
        for i, sign in enumerate((1, -1)):
            if propagate_down[i]:
                scale = sign * top[0].diff / bottom[i].shape[0]
                bottom[i].diff[...] = (self.diff * scale).reshape(bottom[i].diff.shape)
