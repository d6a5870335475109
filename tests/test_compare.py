"""harness.compare.same: the one rule for "the same setting" (protocol card and adapters)."""
import math

from harness.compare import same


def test_numbers_compare_with_a_relative_tolerance_and_bools_are_not_numbers():
    assert same(0.0005, 5e-4) and same(24, 24.0) and same(1e9, 1e9 + 0.5)
    assert not same(0.01, 0.0100001) and not same(0.7, 0.5)
    assert not same(True, 1) and not same(False, 0) and same(True, True)
    assert not same("24", 24)


def test_nan_equals_only_nan():
    assert same(math.nan, float("nan"))
    assert not same(math.nan, 0.0) and not same(1.0, math.nan)


def test_containers_compare_element_by_element():
    assert same({"a": 1, "b": [1, 2]}, {"b": [1.0, 2], "a": 1})
    assert same((0.5, 2), [5e-1, 2.0])
    assert not same([1, 2], [2, 1]) and not same([1, 2], [1, 2, 3])
    assert not same({"a": 1}, {"a": 1, "b": 2}) and not same({"a": [0.7]}, {"a": [0.5]})


def test_other_values_compare_as_json():
    assert same(None, None) and same("nms", "nms")
    assert not same(None, 0) and not same("nms", "NMS")
