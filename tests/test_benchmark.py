"""``tf_bertopt.cli.benchmark`` and ``tf-bertopt bench``: that they run and report, not how fast."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import cli_helpers
from tf_bertopt import cli
from tf_bertopt.cli import benchmark


def parameters(shapes) -> int:
    return sum(int(np.prod(shape)) for _, shape in shapes)


def test_bert_sets_have_the_published_sizes():
    # Hugging Face's BertModel (encoder + pooler): 109,482,240 and 335,141,888 parameters.
    base, large = benchmark.VARIABLE_SETS["bert-base"](), benchmark.VARIABLE_SETS["bert-large"]()
    assert (len(base), parameters(base)) == (199, 109_482_240)
    assert (len(large), parameters(large)) == (391, 335_141_888)
    assert len({path for path, _ in base}) == len(base)


def test_tiny_set_has_2000_small_variables():
    shapes = benchmark.VARIABLE_SETS["tiny-2000"]()
    assert len(shapes) == 2000 == len({path for path, _ in shapes})
    assert max(int(np.prod(shape)) for _, shape in shapes) <= 1024


@pytest.fixture(scope="module")
def quick_result():
    return benchmark.run_set(
        "quick", ["adamw-reference", "keras-adamw", "lamb"], ["function"], rounds=2, min_seconds=0.0,
        bandwidth=benchmark.Bandwidth(2**16), printer=lambda *_: None,
    )


def test_run_set_reports_every_candidate_against_keras_and_the_floor(quick_result):
    rows = {row["candidate"]: row for row in quick_result["results"]}
    assert list(rows) == ["adamw-reference", "keras-adamw", "lamb"]
    assert rows["keras-adamw"]["ratio_to_keras"] == 1.0
    assert rows["lamb"]["ratio_to_keras"] is None  # no keras-lamb was timed
    for row in rows.values():
        assert len(row["samples_ms"]) == 2
        assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert row["first_call_s"] > 0
        assert math.isclose(row["ratio_to_floor"], row["median_ms"] / row["floor_ms"])
    bytes_per_parameter = {"adamw-reference": 28, "keras-adamw": 28, "lamb": 40}
    for name, row in rows.items():
        floor = bytes_per_parameter[name] * quick_result["parameters"] / quick_result["bandwidth"]["bytes_per_second"]
        assert math.isclose(row["floor_ms"], 1e3 * floor)


def test_table_has_a_row_per_result(quick_result):
    table = benchmark.format_table(quick_result)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(quick_result["results"])
    assert "| keras-adamw | function |" in table


def test_peak_memory_sees_a_temporary():
    memory = benchmark.PeakMemory()
    if not memory.available:  # a platform without /proc: the method says so
        assert memory.measure(lambda: None) is None
        return
    size = 64 * 2**20
    peak = memory.measure(lambda: np.ones(size // 4, np.float32).sum())
    assert 0.9 * size <= peak <= 4 * size


def test_a_set_that_does_not_fit_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(benchmark, "available_memory", lambda: 2**30)
    with pytest.raises(ValueError, match=r"bert-large set with 6 candidates needs about 17\.5 GiB.*fewer --candidates"):
        benchmark.run_set("bert-large", benchmark.CANDIDATES, ["function"], 1, 0.0, bandwidth=None)


def test_cli_quick_run_prints_the_table_and_writes_json(tmp_path):
    output = tmp_path / "bench.json"
    result = cli_helpers.run_cli(
        "bench", "--quick", "--candidates", "adamw-reference,keras-adamw", "--modes", "function", "--json", str(output)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| adamw-reference | function |" in result.stdout
    report = json.loads(output.read_text())
    assert report["command"] == "tf-bertopt bench --quick --candidates adamw-reference,keras-adamw --modes function"
    (quick,) = report["sets"]
    assert quick["set"] == "quick"
    assert [row["candidate"] for row in quick["results"]] == ["adamw-reference", "keras-adamw"]
    assert quick["bandwidth"]["bytes_per_second"] > 0


def test_mirrored_run_times_the_all_reduce_alone_and_each_update_beyond_it(tmp_path):
    output = tmp_path / "bench.json"
    result = cli_helpers.run_cli(
        "bench", "--quick", "--candidates", "adamw,keras-adamw", "--modes", "mirrored", "--json", str(output)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (quick,) = json.loads(output.read_text())["sets"]
    rows = {row["candidate"]: row for row in quick["results"]}
    assert list(rows) == ["adamw", "keras-adamw", "all-reduce"]
    reduced = rows["all-reduce"]["median_ms"]
    for name in ("adamw", "keras-adamw"):
        assert math.isclose(rows[name]["update_ms"], rows[name]["median_ms"] - reduced)
        # Two logical CPUs share one memory: the floor counts both replicas' updates.
        floor = 2 * 28 * quick["parameters"] / quick["bandwidth"]["bytes_per_second"]
        assert math.isclose(rows[name]["floor_ms"], 1e3 * floor)
    keras_update = rows["keras-adamw"]["update_ms"]
    if keras_update > 0:  # a tiny set's update can be lost in the all-reduce's noise
        assert math.isclose(rows["adamw"]["update_ratio_to_keras"], rows["adamw"]["update_ms"] / keras_update)
    assert "| update ms | update × Keras |" in result.stdout
    assert f"all-reduce alone: {reduced:.2f} ms" in result.stdout


@pytest.mark.parametrize(
    "arguments", [["--candidates", "sgd"], ["--sets", "bert-huge"], ["--modes", ""], ["--rounds", "0"]]
)
def test_cli_rejects_bad_choices_with_exit_code_2(arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", *arguments])
    assert exit_info.value.code == 2
    assert "tf-bertopt bench: error:" in capsys.readouterr().err
