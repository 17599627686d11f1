"""NetState filtering and Split insertion, pass by pass (Caffe's rules and names)."""
import pytest
from google.protobuf import text_format

from netkit import netkit_pb2 as pb
from netkit.errors import NetkitError
from netkit.graph import filter_net, insert_splits, state_meets_rule


def net(text):
    return text_format.Parse(text, pb.NetParameter())


def state(text):
    return text_format.Parse(text, pb.NetState())


def rule(text):
    return text_format.Parse(text, pb.NetStateRule())


@pytest.mark.parametrize("state_text,rule_text,expected", [
    ("phase: TRAIN", "phase: TRAIN", True),
    ("phase: TRAIN", "phase: TEST", False),
    ("phase: TEST level: 3", "min_level: 2", True),
    ("phase: TEST level: 1", "min_level: 2", False),
    ("phase: TEST level: 3", "max_level: 2", False),
    ("phase: TEST stage: 'a' stage: 'b'", "stage: 'a' stage: 'b'", True),
    ("phase: TEST stage: 'a'", "stage: 'a' stage: 'b'", False),
    ("phase: TEST stage: 'a'", "not_stage: 'a'", False),
    ("phase: TEST stage: 'a'", "not_stage: 'b'", True),
])
def test_state_meets_rule(state_text, rule_text, expected):
    assert state_meets_rule(state(state_text), rule(rule_text)) is expected


def test_filter_include_exclude():
    param = net("""
      layer { name: "a" type: "Input" top: "x" include { phase: TRAIN } }
      layer { name: "b" type: "Input" top: "x" include { phase: TEST } }
      layer { name: "c" type: "ReLU" bottom: "x" top: "x" exclude { stage: "deploy" } }
      layer { name: "d" type: "ReLU" bottom: "x" top: "x"
              include { phase: TRAIN } include { stage: "both" } }
    """)
    names = lambda p: [l.name for l in p.layer]  # noqa: E731
    assert names(filter_net(param, state("phase: TRAIN"))) == ["a", "c", "d"]
    assert names(filter_net(param, state("phase: TEST"))) == ["b", "c"]
    assert names(filter_net(param, state("phase: TEST stage: 'deploy' stage: 'both'"))) == ["b", "d"]
    assert len(param.layer) == 4  # the input is untouched


def test_include_and_exclude_together_is_an_error():
    param = net('layer { name: "a" type: "Input" top: "x" include { phase: TRAIN } '
                'exclude { phase: TEST } }')
    with pytest.raises(NetkitError, match="either include or exclude"):
        filter_net(param, state("phase: TRAIN"))


def test_splits_named_as_caffe():
    param = insert_splits(net("""
      layer { name: "data" type: "Input" top: "data" top: "label" }
      layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" }
      layer { name: "ip2" type: "InnerProduct" bottom: "data" top: "ip2" }
      layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
      layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
    """))
    layers = [(l.name, l.type, list(l.bottom), list(l.top)) for l in param.layer]
    assert layers == [
        ("data", "Input", [], ["data", "label"]),
        ("data_data_0_split", "Split", ["data"], ["data_data_0_split_0", "data_data_0_split_1"]),
        ("label_data_1_split", "Split", ["label"], ["label_data_1_split_0", "label_data_1_split_1"]),
        ("ip", "InnerProduct", ["data_data_0_split_0"], ["ip"]),
        ("ip_ip_0_split", "Split", ["ip"], ["ip_ip_0_split_0", "ip_ip_0_split_1"]),
        ("ip2", "InnerProduct", ["data_data_0_split_1"], ["ip2"]),
        ("loss", "SoftmaxWithLoss", ["ip_ip_0_split_0", "label_data_1_split_0"], ["loss"]),
        ("acc", "Accuracy", ["ip_ip_0_split_1", "label_data_1_split_1"], ["acc"]),
    ]


def test_split_after_in_place_layer_uses_its_producer():
    param = insert_splits(net("""
      layer { name: "data" type: "Input" top: "x" }
      layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }
      layer { name: "a" type: "ReLU" bottom: "x" top: "a" }
      layer { name: "b" type: "ReLU" bottom: "x" top: "b" }
    """))
    assert [l.name for l in param.layer] == ["data", "relu", "x_relu_0_split", "a", "b"]
    assert list(param.layer[3].bottom) == ["x_relu_0_split_0"]


def test_loss_weighted_top_read_again_gets_a_split_carrying_the_loss():
    param = insert_splits(net("""
      layer { name: "data" type: "Input" top: "x" }
      layer { name: "l" type: "ReLU" bottom: "x" top: "y" loss_weight: 2 }
      layer { name: "m" type: "ReLU" bottom: "y" top: "z" }
    """))
    split = param.layer[2]
    assert split.type == "Split" and list(split.top) == ["y_l_0_split_0", "y_l_0_split_1"]
    assert list(split.loss_weight) == [2, 0]
    assert list(param.layer[1].loss_weight) == []
    assert list(param.layer[3].bottom) == ["y_l_0_split_1"]


def test_unknown_bottom_is_reported():
    with pytest.raises(NetkitError, match="unknown bottom blob 'nothing'"):
        insert_splits(net('layer { name: "r" type: "ReLU" bottom: "nothing" top: "y" }'))
