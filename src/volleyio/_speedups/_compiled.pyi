"""Type stub for volleyio._speedups._compiled (built from ext/_compiled.pyx).

The compiled module is the pure-Python twin's API with the same signatures; this stub
mirrors ``volleyio._speedups._pure`` exactly. tests/test_packaging.py checks that the
two stay in step (same names, same parameters, same defaults, same annotations).
"""

from typing_extensions import disjoint_base

from ._pure import Buffer, Frame, FrameError

def mask(data: Buffer, key: Buffer, offset: int = 0) -> bytes: ...
def mask_inplace(buffer: bytearray | memoryview, key: Buffer, offset: int = 0) -> None: ...
def validate_utf8(data: Buffer) -> int: ...

@disjoint_base
class Utf8Validator:
    def __init__(self) -> None: ...
    @property
    def complete(self) -> bool: ...
    def reset(self) -> None: ...
    def feed(self, data: Buffer) -> int: ...

def parse_frames(
    data: Buffer,
    mask_required: bool,
    max_payload: int,
    allowed_rsv: int,
    decode_text: bool,
) -> tuple[list[Frame], int, FrameError | None]: ...
def encode_frame(
    opcode: int,
    payload: Buffer,
    fin: bool = True,
    rsv: int = 0,
    mask_key: Buffer | None = None,
) -> bytes: ...
def encode_message(message: str | Buffer) -> bytes: ...

# Compiled-only testing aids (no pure twin): the SIMD kernels in use, and forcing a level.
def _simd_info() -> dict[str, str]: ...
def _set_simd_level(level: int) -> int: ...
