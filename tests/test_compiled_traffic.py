"""tf_bertopt.cli.compiled_traffic: bytes an XLA-compiled step reads and writes."""

import pytest
import tensorflow as tf

from tf_bertopt.cli import compiled_traffic

HLO = """\
HloModule step, is_scheduled=true

%fused_computation (param_0: f32[8], param_1: f32[8]) -> f32[8] {
  %param_0 = f32[8]{0} parameter(0)
  %param_1 = f32[8]{0} parameter(1)
  ROOT %add.0 = f32[8]{0} add(%param_0, %param_1)
}

ENTRY %step (arg0.1: f32[8], arg1.1: f32[8]) -> (f32[8], s32[]) {
  %arg0.1 = f32[8]{0} parameter(0), metadata={op_name="XLA_Args"}
  %arg1.1 = f32[8]{0} parameter(1), metadata={op_name="XLA_Args"}
  %count = s32[] constant(1)
  %add_fusion = f32[8]{0} fusion(%arg0.1, %arg1.1), kind=kLoop, calls=%fused_computation
  %twice = f32[8]{0} fusion(%add_fusion, %add_fusion), kind=kLoop, calls=%fused_computation
  ROOT %tuple = (f32[8]{0}, s32[]) tuple(%twice, %count)
}
"""


@pytest.mark.parametrize(
    "shape, expected",
    [("f32[768,3072]{1,0}", 4 * 768 * 3072), ("bf16[10]{0}", 20), ("f32[]", 4), ("(f32[2]{0}, s64[3]{0})", 32), ("token[]", 0)],
)
def test_shape_bytes_counts_every_array_of_a_shape(shape, expected):
    assert compiled_traffic.shape_bytes(shape) == expected


def test_bytes_moved_sums_each_loops_operands_and_result_in_the_entry_computation():
    # add_fusion reads two f32[8] and writes one; twice reads add_fusion once
    # (the same operand twice is one read) and writes one. Parameters,
    # constants and tuples move nothing.
    assert compiled_traffic.bytes_moved(HLO) == (3 * 32) + (2 * 32)


def test_bytes_moved_without_an_entry_computation_is_an_error():
    with pytest.raises(ValueError, match="no ENTRY computation"):
        compiled_traffic.bytes_moved("HloModule empty\n")


def test_a_compiled_in_place_triad_moves_twelve_bytes_per_element():
    a, b = tf.Variable(tf.ones([4096])), tf.Variable(tf.ones([4096]))

    @tf.function(jit_compile=True, autograph=False)
    def triad():
        a.assign(b + 0.5 * a)

    triad()
    assert compiled_traffic.compiled_bytes_per_parameter(triad, 4096) == pytest.approx(12, abs=0.01)
