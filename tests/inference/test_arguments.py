"""inference/arguments.py: scales height first, sizes and points width first, as the command lines document."""
from __future__ import annotations

import argparse

import pytest

from inference.arguments import (focus_arg, non_negative_int, positive_float, positive_floats, positive_int,
                                 scale_arg, size_arg, tile_arg)


def test_scales_are_height_then_width_and_one_number_scales_both():
    assert scale_arg("4,2") == (4.0, 2.0) and scale_arg("3.5") == (3.5, 3.5)


def test_sizes_and_points_are_width_first():
    assert size_arg("1920x1080") == (1080, 1920) and size_arg("40X30") == (30, 40)
    assert focus_arg("10,2.5") == (2.5, 10.0)


def test_lists_of_positive_numbers_are_comma_separated():
    assert positive_floats("6,8,16") == [6.0, 8.0, 16.0] and positive_floats("2.5") == [2.5]


def test_tiles_are_auto_or_a_whole_number():
    assert tile_arg("auto") is None and tile_arg("0") == 0 and tile_arg("256") == 256


@pytest.mark.parametrize("parse, text", [(scale_arg, "0"), (scale_arg, "inf"), (scale_arg, "2,3,4"), (scale_arg, "x"),
                                         (size_arg, "1920"), (size_arg, "10.5x3"), (size_arg, "0x4"),
                                         (focus_arg, "3"), (tile_arg, "-1"), (positive_int, "0"),
                                         (non_negative_int, "-2"), (positive_float, "nan"),
                                         (positive_floats, "6,0"), (positive_floats, "6,"), (positive_floats, "x"),
                                         (scale_arg, "1_0"), (size_arg, "1_0x2"), (positive_float, "1_0")])
def test_bad_values_are_argument_type_errors(parse, text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)
