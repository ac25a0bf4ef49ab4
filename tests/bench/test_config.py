"""BenchConfig validation, quick mode and JSON round trip."""

import pytest

from enl_experiments.bench import config as config_lib
from enl_experiments.bench.config import BenchConfig, parse_image_size


def test_parse_image_size():
    assert parse_image_size("800x1088") == (800, 1088)
    assert parse_image_size("256X384") == (256, 384)
    for bad in ("800", "800x", "axb", "0x64", "1x2x3"):
        with pytest.raises(ValueError, match="image"):
            parse_image_size(bad)


def test_padded_image_size_is_a_multiple_of_64():
    assert BenchConfig(image_size=(800, 1088)).padded_image_size == (832, 1088)
    assert BenchConfig(image_size=(256, 384)).padded_image_size == (256, 384)


def test_default_spans_the_issue_range_and_quick_is_smaller():
    default = BenchConfig()
    assert min(default.sides) ** 2 == 1024 and max(default.sides) ** 2 == 65536
    quick = config_lib.quick_config()
    assert quick.quick and max(quick.sides) < max(default.sides)
    assert quick.image_size[0] * quick.image_size[1] < 800 * 1088


def test_environment_selects_quick(monkeypatch):
    monkeypatch.setenv("BENCH_QUICK", "1")
    assert config_lib.from_environment().quick
    monkeypatch.setenv("BENCH_QUICK", "0")
    assert not config_lib.from_environment().quick


def test_json_round_trip():
    config = config_lib.quick_config(sections=("torch",))
    assert BenchConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown"):
        BenchConfig.from_json({**config.to_json(), "bogus": 1})


@pytest.mark.parametrize("field, value, match", [
    ("sides", (), "sides"),
    ("sides", (32, 0), "sides"),
    ("channels", 0, "channels"),
    ("max_repeats", 1, "max_repeats"),
    ("max_call_s", 0, "max_call_s"),
    ("sections", ("gpu",), "sections"),
    ("detectors", ("retinanet",), "detectors"),
    ("device", "tpu", "device"),
    ("reuse_heap", "false", "reuse_heap"),
    ("keras_xla", 1, "keras_xla"),
])
def test_bad_fields_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        BenchConfig(**{field: value})


def test_the_command_line_times_the_default_heap_only_when_asked():
    from enl_experiments.bench import cli

    parse = cli.build_parser().parse_args
    assert cli.config_from_args(parse([])).reuse_heap is True
    assert cli.config_from_args(parse(["--default-heap"])).reuse_heap is False
