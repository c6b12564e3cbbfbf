"""How many bytes per parameter an XLA-compiled step moves, read from its optimized HLO.

A memory-bound step costs what it reads and writes. After XLA's passes the
entry computation is a sequence of loops (``fusion``) and a few other
instructions; each reads its operands and writes its result. Summing those
sizes gives the traffic XLA planned, and so the best the compiled step can
do at a given bandwidth, whatever the machine.

For AdamWeightDecay on XLA:CPU this shows why the step cannot reach the
28-bytes floor: XLA:CPU has no multi-output loop fusion, so the new ``m``, the
new ``v`` and the new ``w`` are three loops, the last reading what the first
two wrote: ``12 + 12 + 16 = 40`` bytes per parameter (see the README's
performance section). XLA:GPU has a multi-output fusion pass (not
measured here: no GPU was available).
"""

from __future__ import annotations

import re

_ELEMENT_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(.*?\)|\S+)\s+([\w\-]+)\((.*?)\)(?:,|$)")
# Instructions that move no data of their own.
_FREE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all", "partition-id", "replica-id"}


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape such as ``f32[768,3072]{1,0}`` or a tuple of them."""
    total = 0
    for element_type, dims in _ARRAY.findall(shape):
        if element_type not in _ELEMENT_BYTES:
            continue
        count = 1
        for dim in filter(None, dims.split(",")):
            count *= int(dim)
        total += count * _ELEMENT_BYTES[element_type]
    return total


def entry_instructions(hlo_text: str) -> list[tuple[str, str, str, list[str]]]:
    """``(name, shape, opcode, operand names)`` of each instruction of the ENTRY computation."""
    instructions, inside = [], False
    for line in hlo_text.splitlines():
        if line.startswith("ENTRY "):
            inside = True
            continue
        if inside and line.startswith("}"):
            break
        if inside:
            match = _INSTRUCTION.match(line)
            if match:
                name, shape, opcode, operands = match.groups()
                instructions.append((name, shape, opcode, re.findall(r"%([\w.\-]+)", operands)))
    if not inside:
        raise ValueError("no ENTRY computation in the HLO text")
    return instructions


def bytes_moved(hlo_text: str) -> int:
    """Bytes the ENTRY computation's instructions read and write, each operand counted once per instruction."""
    shapes, total = {}, 0
    for name, shape, opcode, operands in entry_instructions(hlo_text):
        shapes[name] = shape
        if opcode not in _FREE:
            total += shape_bytes(shape) + sum(shape_bytes(shapes.get(operand, "")) for operand in set(operands))
    return total


def compiled_bytes_per_parameter(step, parameters: int) -> float:
    """Bytes per parameter that ``step`` (a ``tf.function(jit_compile=True)`` taking no arguments) moves."""
    hlo_text = step.experimental_get_compiler_ir()(stage="optimized_hlo")
    return bytes_moved(hlo_text) / parameters
