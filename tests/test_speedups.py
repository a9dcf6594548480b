"""The speedups contract: mask / UTF-8 validation / frame parsing / frame encoding.

Every test here runs once per implementation (see ``conftest.speedups_impl``) against
expected values written out by hand or computed by a naive reference. The property
tests at the bottom compare ``_compiled`` with ``_pure`` directly.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from volleyio import _speedups
from volleyio._speedups import _pure

try:
    from volleyio._speedups import _compiled
except ImportError:  # pragma: no cover - exercised only without a compiler
    _compiled = None

KEY = b"\x37\xfa\x21\x3d"


def ref_mask(data: bytes, key: bytes, offset: int = 0) -> bytes:
    return bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(data))


def simd_levels(sp) -> list[int]:
    """Every kernel level the compiled module can run here (just [None] for pure)."""
    if sp is _pure:
        return [None]
    levels = []
    for level in range(4):
        got = sp._set_simd_level(level)
        if got not in levels:
            levels.append(got)
    sp._set_simd_level(-1)
    return levels


@pytest.fixture
def each_level(sp):
    """Iterate over the SIMD levels, restoring the best one afterwards."""

    def gen():
        for level in simd_levels(sp):
            if level is not None:
                sp._set_simd_level(level)
            yield level

    yield gen
    if sp is not _pure:
        sp._set_simd_level(-1)


# --------------------------------------------------------------------- masking


def test_mask_all_offsets_and_small_lengths(sp, each_level):
    data = bytes(range(256)) * 2
    for _level in each_level():
        for n in range(0, 301):
            for offset in range(4):
                expected = ref_mask(data[:n], KEY, offset)
                assert sp.mask(data[:n], KEY, offset) == expected
                buf = bytearray(data[:n])
                assert sp.mask_inplace(buf, KEY, offset) is None
                assert buf == expected


@pytest.mark.parametrize("n", [4095, 65536, 65539, 131072 + 7, (1 << 20) + 1])
def test_mask_large(sp, each_level, n):
    data = os.urandom(n)
    key = os.urandom(4)
    for _level in each_level():
        for offset in (0, 3):
            expected = _pure.mask(data, key, offset)
            assert sp.mask(data, key, offset) == expected
            buf = bytearray(data)
            sp.mask_inplace(buf, key, offset)
            assert buf == expected
    # sanity of the reference itself on a slice
    assert expected[:50] == ref_mask(data[:50], key, 3)


def test_mask_unaligned_views_and_buffer_types(sp, each_level):
    raw = bytearray(os.urandom(1200))
    for _level in each_level():
        for start in range(0, 40):
            for n in (0, 1, 15, 31, 33, 100, 513, 1100):
                chunk = bytes(raw[start : start + n])
                expected = ref_mask(chunk, KEY, start)
                assert sp.mask(memoryview(raw)[start : start + n], KEY, start) == expected
                assert sp.mask(bytearray(chunk), bytearray(KEY), start) == expected
                buf = bytearray(raw)
                sp.mask_inplace(memoryview(buf)[start : start + n], memoryview(KEY), start)
                assert buf[start : start + n] == expected
                assert buf[:start] == raw[:start]
                assert buf[start + n :] == raw[start + n :]


def test_mask_offsets_modulo(sp):
    data = b"abcdefghij"
    for offset in (-7, -1, 4, 5, 1 << 70, -(1 << 70) + 1):
        assert sp.mask(data, KEY, offset) == ref_mask(data, KEY, offset % 4)


def test_mask_is_an_involution_and_returns_bytes(sp):
    data = os.urandom(777)
    once = sp.mask(data, KEY, 2)
    assert type(once) is bytes
    assert sp.mask(once, KEY, 2) == data
    assert sp.mask(b"", KEY) == b""
    assert type(sp.mask(bytearray(b"xy"), KEY)) is bytes


def test_mask_non_contiguous_view(sp):
    base = bytes(range(40))
    view = memoryview(base)[::2]
    assert sp.mask(view, KEY, 1) == ref_mask(base[::2], KEY, 1)


@pytest.mark.parametrize("key", [b"", b"abc", b"abcde", bytearray(b"\x00" * 8)])
def test_mask_bad_key(sp, key):
    with pytest.raises(ValueError):
        sp.mask(b"data", key)
    with pytest.raises(ValueError):
        sp.mask(b"", key)
    with pytest.raises(ValueError):
        sp.mask_inplace(bytearray(b"data"), key)
    with pytest.raises(ValueError):
        sp.encode_frame(1, b"x", mask_key=key)


@pytest.mark.parametrize("buf", [b"readonly", memoryview(b"readonly"), memoryview(bytearray(b"rw")).toreadonly()])
def test_mask_inplace_needs_writable(sp, buf):
    with pytest.raises(TypeError):
        sp.mask_inplace(buf, KEY)
    # even a large read-only buffer
    with pytest.raises(TypeError):
        sp.mask_inplace(bytes(200_000), KEY)


def test_mask_inplace_large_memoryview_of_array(sp):
    import array

    arr = array.array("I", range(50_000))
    raw = arr.tobytes()
    sp.mask_inplace(arr, KEY, 1)
    assert arr.tobytes() == _pure.mask(raw, KEY, 1)


# --------------------------------------------------------------------- UTF-8

VALID = [
    b"",
    b"a",
    b"hello",
    b"\x00\x7f",
    "é".encode(),
    b"\xc2\x80",  # U+0080, first 2-byte
    b"\xdf\xbf",  # U+07FF, last 2-byte
    b"\xe0\xa0\x80",  # U+0800, first 3-byte
    b"\xed\x9f\xbf",  # U+D7FF, just below the surrogates
    b"\xee\x80\x80",  # U+E000, just above
    b"\xef\xbf\xbf",  # U+FFFF
    b"\xf0\x90\x80\x80",  # U+10000, first 4-byte
    b"\xf4\x8f\xbf\xbf",  # U+10FFFF, the last code point
    "日本語テキスト😀🎉 mixed".encode(),
    "\u2028\ufeff".encode(),
]

# (data, offset of the first bad byte; len(data) for a valid but truncated prefix)
INVALID = [
    (b"\x80", 0),  # lone continuation
    (b"a\xbf", 1),
    (b"\xc0\x80", 0),  # overlong NUL (C0/C1 are never valid)
    (b"\xc1\xbf", 0),
    (b"\xe0\x80\x80", 1),  # overlong 3-byte
    (b"\xe0\x9f\xbf", 1),
    (b"\xf0\x80\x80\x80", 1),  # overlong 4-byte
    (b"\xf0\x8f\xbf\xbf", 1),
    (b"\xed\xa0\x80", 1),  # surrogate U+D800
    (b"\xed\xbf\xbf", 1),  # surrogate U+DFFF
    (b"\xf4\x90\x80\x80", 1),  # U+110000
    (b"\xf5\x80\x80\x80", 0),  # lead above F4
    (b"\xf8\x88\x80\x80\x80", 0),
    (b"\xfe", 0),
    (b"\xff", 0),
    (b"\xc2", 1),  # truncated 2-byte
    (b"\xe0\xa0", 2),  # truncated 3-byte
    (b"\xf0\x90\x80", 3),  # truncated 4-byte
    (b"abc\xe2\x82", 5),
    (b"\xc2a", 1),  # lead followed by ASCII
    (b"\xe2\x82a", 2),
    (b"\xf0\x90\x80a", 3),
    (b"\xe2\x82\xac\x80", 3),  # one continuation too many
    (b"\xc2\x80\x80", 2),
    (b"\xf0\x9f\x98\x80\xbf", 4),
    (b"\xc2\xc2\x80", 1),
    (b"\xef\xbf\xbf\xf4\x90", 4),
]


@pytest.mark.parametrize("data", VALID)
def test_utf8_valid(sp, each_level, data):
    for _level in each_level():
        assert sp.validate_utf8(data) == -1
        for pad in (0, 13, 31, 32, 63, 64, 100):
            padded = b"x" * pad + data + b"y" * pad
            assert sp.validate_utf8(padded) == -1
            assert sp.validate_utf8(bytearray(padded)) == -1
            assert sp.validate_utf8(memoryview(padded)) == -1


@pytest.mark.parametrize("data,offset", INVALID)
def test_utf8_invalid(sp, each_level, data, offset):
    truncated = offset == len(data)
    for _level in each_level():
        assert sp.validate_utf8(data) == offset
        for pad in (1, 15, 16, 31, 32, 33, 63, 64, 65, 200):
            prefix = ("é" * (pad // 2) + "a" * (pad % 2)).encode()
            got = sp.validate_utf8(prefix + data)
            assert got == len(prefix) + offset
            if not truncated:
                assert sp.validate_utf8(prefix + data + b"z" * pad) == len(prefix) + offset
                assert sp.validate_utf8(prefix + data + "日本".encode() * pad) == len(prefix) + offset


def test_utf8_bad_byte_at_every_position_of_long_runs(sp, each_level):
    for _level in each_level():
        for filler in (b"a", "é".encode(), "語".encode(), "😀".encode()):
            run = filler * (300 // len(filler))
            for pos in range(0, len(run), len(filler)):
                for bad in (b"\xff", b"\x80", b"\xc0"):
                    data = run[:pos] + bad + run[pos:]
                    assert sp.validate_utf8(data) == pos, (filler, pos, bad)
                # truncated at every position: a lead byte with nothing after it
                assert sp.validate_utf8(run[:pos] + b"\xf0\x9f") == pos + 2


def test_utf8_every_boundary_of_multibyte_forms(sp, each_level):
    cases = {
        # (lead range) -> (valid second-byte range)
        0xE0: (0xA0, 0xBF),
        0xE1: (0x80, 0xBF),
        0xEC: (0x80, 0xBF),
        0xED: (0x80, 0x9F),
        0xEE: (0x80, 0xBF),
        0xEF: (0x80, 0xBF),
        0xF0: (0x90, 0xBF),
        0xF1: (0x80, 0xBF),
        0xF3: (0x80, 0xBF),
        0xF4: (0x80, 0x8F),
    }
    for _level in each_level():
        for lead, (lo, hi) in cases.items():
            tail = b"\x80" * (1 if lead < 0xF0 else 2)
            for second in range(0x70, 0xD0):
                data = b"a" * 40 + bytes((lead, second)) + tail + b"b" * 40
                expected = -1 if lo <= second <= hi else 41
                assert sp.validate_utf8(data) == expected, (hex(lead), hex(second))
        for lead in range(0x80, 0x100):
            data = b"a" * 35 + bytes((lead, 0x80, 0x80, 0x80)) + b"b" * 35
            if lead < 0xC2 or lead > 0xF4:
                expected = 35
            elif lead < 0xE0:
                expected = 37  # second continuation is one too many
            elif lead < 0xF0:
                expected = 36 if lead == 0xE0 else 38
            else:
                expected = 36 if lead == 0xF0 else -1  # F1..F4 80 80 80 is a whole character
            assert sp.validate_utf8(data) == expected, hex(lead)


def test_utf8_long_texts(sp, each_level):
    text = ("Grüße, 世界! Ελληνικά 😀🎉 ascii ascii ascii ascii. " * 2000).encode()
    for _level in each_level():
        assert sp.validate_utf8(text) == -1
        assert sp.validate_utf8(b"a" * 200_000) == -1
        for pos in (0, 1, 31, 32, 4096, 65535, len(text) // 2, len(text) - 1):
            # overwrite a character's first byte with a lone continuation byte
            while text[pos] & 0xC0 == 0x80:
                pos += 1
            bad = text[:pos] + b"\x80" + text[pos + 1 :]
            assert sp.validate_utf8(bad) == pos
        assert sp.validate_utf8(text + b"\xe2\x82") == len(text) + 2


def expected_feed_results(data: bytes, cuts: list[int]) -> tuple[list[int], bool]:
    """What each feed() must return for ``data`` split at ``cuts`` (ref: validate_utf8)."""
    whole = _pure.validate_utf8(data)
    bad = None if whole in (-1, len(data)) else whole
    bounds = [0, *cuts, len(data)]
    out = []
    failed = False
    for a, b in zip(bounds, bounds[1:]):
        if failed:
            out.append(0)
        elif bad is not None and a <= bad < b:
            out.append(bad - a)
            failed = True
        else:
            out.append(-1)
    complete = not failed and whole == -1
    return out, complete


INCREMENTAL_SAMPLES = [
    "aé語😀b".encode(),
    "😀😀".encode(),
    b"ab\xed\xa0\x80cd",
    b"\xe2\x82\xac\xe2\x82",
    b"x\xf0\x90\x80\x80\xf4\x90",
    b"\xc2\xc2",
    ("é" * 40 + "語" * 20).encode() + b"\xff" + b"tail",
]


@pytest.mark.parametrize("data", INCREMENTAL_SAMPLES)
def test_incremental_split_everywhere(sp, data):
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            v = sp.Utf8Validator()
            got = [v.feed(data[:i]), v.feed(data[i:j]), v.feed(data[j:])]
            expected, complete = expected_feed_results(data, [i, j])
            assert got == expected, (i, j)
            assert v.complete == complete


def test_incremental_state_and_reset(sp):
    v = sp.Utf8Validator()
    assert v.complete
    assert v.feed(b"\xf0") == -1
    assert not v.complete
    assert v.feed(b"") == -1
    assert v.feed(bytearray(b"\x9f")) == -1
    assert v.feed(memoryview(b"\x98")) == -1
    assert not v.complete
    assert v.feed(b"\x80") == -1
    assert v.complete
    assert v.feed(b"ok\xc0") == 2
    assert not v.complete
    assert v.feed(b"anything") == 0  # stays failed
    assert v.feed(b"") == 0
    v.reset()
    assert v.complete
    assert v.feed(b"\xe2\x82") == -1
    assert v.feed(b"\x41") == 0  # the pending sequence breaks at this chunk's byte 0
    v.reset()
    long_text = ("語" * 60000).encode()  # large enough for the GIL-released path
    assert v.feed(long_text[:150_001]) == -1
    assert not v.complete
    assert v.feed(long_text[150_001:]) == -1
    assert v.complete
    assert v.feed(long_text[:-1] + b"\x80\x80") == len(long_text)


def test_incremental_validator_pickles_with_its_state(sp):
    import pickle

    v = sp.Utf8Validator()
    assert v.feed(b"ok\xf0\x9f") == -1
    w = pickle.loads(pickle.dumps(v))
    assert not w.complete
    assert w.feed(b"\x98\x80") == -1 and w.complete
    x = pickle.loads(pickle.dumps(v))
    assert x.feed(b"\x41") == 0 and not x.complete
    y = pickle.loads(pickle.dumps(x))
    assert y.feed(b"fine") == 0  # stays failed


# --------------------------------------------------------------------- parse_frames


def hdr(b0: int, length: int, masked: bool, form: str = "min") -> bytes:
    """A frame header with the length in the given form ("min", "16" or "64")."""
    m = 0x80 if masked else 0
    if form == "min":
        form = "7" if length < 126 else ("16" if length < 0x10000 else "64")
    if form == "7":
        return bytes((b0, m | length))
    if form == "16":
        return bytes((b0, m | 126)) + struct.pack("!H", length)
    return bytes((b0, m | 127)) + struct.pack("!Q", length)


def frame(opcode: int, payload: bytes, *, fin=True, rsv=0, key=None, form="min") -> bytes:
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    h = hdr(b0, len(payload), key is not None, form)
    if key is None:
        return h + payload
    return h + key + ref_mask(payload, key)


def parse(sp, data, *, server=True, max_payload=-1, allowed_rsv=0, decode_text=False):
    return sp.parse_frames(data, server, max_payload, allowed_rsv, decode_text)


def test_parse_simple_masked_and_unmasked(sp):
    data = frame(2, b"binary!", key=KEY) + frame(1, "héllo".encode(), key=KEY)
    frames, consumed, err = parse(sp, data)
    assert frames == [(2, True, 0, b"binary!"), (1, True, 0, "héllo".encode())]
    assert consumed == len(data) and err is None
    frames, consumed, err = parse(sp, frame(1, b"hi") + b"\x81", server=False, decode_text=True)
    assert frames == [(1, True, 0, "hi")] and consumed == 4 and err is None
    assert type(frames[0][3]) is str
    assert parse(sp, b"") == ([], 0, None)
    assert parse(sp, bytearray(data)) == parse(sp, memoryview(data)) == parse(sp, data)


def test_parse_payload_types(sp):
    frames, _, _ = parse(sp, frame(2, b"abc", key=KEY) + frame(9, b"", key=KEY))
    assert all(type(f[3]) is bytes for f in frames)
    assert frames[1] == (9, True, 0, b"")
    assert type(frames[0][1]) is bool


@pytest.mark.parametrize(
    "data",
    [
        frame(1, b"x" * 5, key=KEY),
        frame(2, b"y" * 300, key=KEY),
        frame(2, b"z" * 70000, key=KEY),
        frame(1, b"short", key=KEY, form="64"),
    ],
)
def test_parse_incomplete_at_every_split_point(sp, data):
    for cut in range(len(data)):
        if len(data) > 1000 and 20 < cut < len(data) - 20:
            continue
        assert parse(sp, data[:cut]) == ([], 0, None), cut
        # a complete frame before the partial one is returned on its own
        first = frame(9, b"p", key=KEY)
        frames, consumed, err = parse(sp, first + data[:cut])
        assert frames == [(9, True, 0, b"p")] and consumed == len(first) and err is None
    frames, consumed, err = parse(sp, data)
    assert len(frames) == 1 and consumed == len(data) and err is None


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000, 140_000])
@pytest.mark.parametrize("form", ["min", "16", "64"])
def test_parse_length_encodings_including_non_minimal(sp, n, form):
    if form == "16" and n > 0xFFFF:
        return
    payload = os.urandom(n)
    data = frame(2, payload, key=KEY, form=form)
    assert parse(sp, data) == ([(2, True, 0, payload)], len(data), None)
    data = frame(2, payload, form=form)
    assert parse(sp, data, server=False) == ([(2, True, 0, payload)], len(data), None)


def test_parse_64bit_length_top_bit(sp):
    bad = bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 63)
    expected_err = (1002, "frame length has the most significant bit set")
    assert parse(sp, bad) == ([], 0, expected_err)
    ok = frame(2, b"a", key=KEY)
    assert parse(sp, ok + bad) == ([(2, True, 0, b"a")], len(ok), expected_err)
    # checked before the opcode, the mask bit and the size limit
    weird = bytes((0x03, 0x7F)) + struct.pack("!Q", (1 << 64) - 1)
    assert parse(sp, weird, max_payload=0) == ([], 0, expected_err)
    # but only once the 8 length bytes are there
    assert parse(sp, weird[:9]) == ([], 0, None)
    # a large length without the top bit is simply incomplete (no limit given)
    big = bytes((0x82, 0xFF)) + struct.pack("!Q", (1 << 63) - 1)
    assert parse(sp, big) == ([], 0, None)
    assert parse(sp, big, max_payload=1 << 62) == ([], 0, (1009, "frame payload exceeds the size limit"))
    assert parse(sp, big, max_payload=1 << 80) == ([], 0, None)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_parse_reserved_opcodes(sp, opcode):
    ok = frame(0x9, b"", key=KEY)
    data = ok + frame(opcode, b"abc", key=KEY)
    assert parse(sp, data) == ([(9, True, 0, b"")], len(ok), (1002, f"reserved opcode {opcode:#x}"))
    # reported once the (extended) length is known, before the payload arrives
    assert parse(sp, frame(opcode, b"x" * 300, key=KEY)[:4]) == ([], 0, (1002, f"reserved opcode {opcode:#x}"))
    assert parse(sp, frame(opcode, b"x" * 300, key=KEY)[:3]) == ([], 0, None)


def test_parse_control_frame_rules(sp):
    assert parse(sp, frame(9, b"p" * 125, key=KEY))[0] == [(9, True, 0, b"p" * 125)]
    assert parse(sp, frame(9, b"p" * 126, key=KEY)) == ([], 0, (1002, "control frame payload longer than 125 bytes"))
    assert parse(sp, frame(8, b"c" * 125, key=KEY, form="64"))[2] is None
    assert parse(sp, frame(0xA, b"x", key=KEY, fin=False)) == ([], 0, (1002, "fragmented control frame"))
    for rsv in range(1, 8):
        got = parse(sp, frame(8, b"", key=KEY, rsv=rsv), allowed_rsv=7)
        assert got == ([], 0, (1002, "reserved bits set on a control frame"))
    # fragmented beats too-long beats rsv
    assert parse(sp, frame(9, b"x" * 200, key=KEY, fin=False, rsv=4))[2] == (1002, "fragmented control frame")
    assert parse(sp, frame(9, b"x" * 200, key=KEY, rsv=4))[2] == (1002, "control frame payload longer than 125 bytes")


def test_parse_rsv_rules(sp):
    data = frame(1, b"deflated", key=KEY, rsv=4)
    assert parse(sp, data, allowed_rsv=4) == ([(1, True, 4, b"deflated")], len(data), None)
    err = (1002, "reserved bits set without a negotiated extension")
    assert parse(sp, data, allowed_rsv=0) == ([], 0, err)
    assert parse(sp, frame(2, b"x", key=KEY, rsv=2), allowed_rsv=4) == ([], 0, err)
    assert parse(sp, frame(2, b"x", key=KEY, rsv=6), allowed_rsv=4) == ([], 0, err)
    assert parse(sp, frame(2, b"x", key=KEY, rsv=6), allowed_rsv=6)[2] is None
    cont = (1002, "reserved bits set on a continuation frame")
    assert parse(sp, frame(0, b"x", key=KEY, rsv=4), allowed_rsv=7) == ([], 0, cont)
    # a text frame with RSV1 is never decoded to str (the payload is compressed)
    frames, _, err = parse(sp, frame(1, b"\xff\x00", key=KEY, rsv=4), allowed_rsv=4, decode_text=True)
    assert frames == [(1, True, 4, b"\xff\x00")] and err is None


def test_parse_mask_rules(sp):
    assert parse(sp, frame(1, b"x"), server=True) == ([], 0, (1002, "client frame is not masked"))
    assert parse(sp, frame(1, b"x", key=KEY), server=False) == ([], 0, (1002, "server frame is masked"))
    # the mask rule is checked before the size limit, after the opcode/control rules
    assert parse(sp, frame(1, b"x" * 10), server=True, max_payload=1)[2] == (1002, "client frame is not masked")
    assert parse(sp, frame(3, b"x"), server=True)[2] == (1002, "reserved opcode 0x3")
    # reported on the header alone
    assert parse(sp, frame(1, b"x" * 10)[:2], server=True)[2] == (1002, "client frame is not masked")


def test_parse_max_payload_checked_before_payload(sp):
    too_big = (1009, "frame payload exceeds the size limit")
    data = frame(2, b"x" * 1000, key=KEY)
    assert parse(sp, data[:4], max_payload=999) == ([], 0, too_big)  # header only
    assert parse(sp, data, max_payload=999) == ([], 0, too_big)
    assert parse(sp, data, max_payload=1000)[2] is None
    assert parse(sp, data, max_payload=-1)[2] is None
    assert parse(sp, frame(2, b"", key=KEY), max_payload=0)[2] is None
    assert parse(sp, frame(2, b"a", key=KEY), max_payload=0) == ([], 0, too_big)
    ok = frame(9, b"ping", key=KEY)
    assert parse(sp, ok + frame(2, b"x" * 20, key=KEY), max_payload=10) == ([(9, True, 0, b"ping")], len(ok), too_big)


def test_parse_decode_text(sp):
    good = frame(1, "ok é 語 😀".encode(), key=KEY)
    bad = frame(1, b"ok \xed\xa0\x80", key=KEY)
    frames, consumed, err = parse(sp, good + bad, decode_text=True)
    assert frames == [(1, True, 0, "ok é 語 😀")]
    assert consumed == len(good)
    assert err == (1007, "invalid UTF-8 in text frame")
    # without decode_text nothing is validated
    frames, consumed, err = parse(sp, good + bad, decode_text=False)
    assert [f[3] for f in frames] == ["ok é 語 😀".encode(), b"ok \xed\xa0\x80"] and err is None
    # fragments stay bytes (validated incrementally by the caller), even invalid ones
    frag = frame(1, b"\xe2\x82", key=KEY, fin=False) + frame(0, b"\xac", key=KEY)
    frames, _, err = parse(sp, frag, decode_text=True)
    assert frames == [(1, False, 0, b"\xe2\x82"), (0, True, 0, b"\xac")] and err is None
    # truncated UTF-8 in a complete text frame is invalid
    assert parse(sp, frame(1, b"abc\xe2\x82", key=KEY), decode_text=True)[2] == (1007, "invalid UTF-8 in text frame")
    # empty, ASCII, long and non-ASCII text all come back as str
    for text in ["", "a" * 125, "a" * 70000, "é" * 40000, "x" * 65535 + "😀", "a" * 140_000, "é" * 70_000]:
        frames, _, err = parse(sp, frame(1, text.encode(), key=KEY), decode_text=True)
        assert err is None and frames == [(1, True, 0, text)]
        frames, _, err = parse(sp, frame(1, text.encode()), server=False, decode_text=True)
        assert err is None and frames == [(1, True, 0, text)]
    # a bad byte deep inside a long text frame
    long_bad = ("a" * 70000).encode() + b"\xff"
    assert parse(sp, frame(1, long_bad, key=KEY), decode_text=True)[2] == (1007, "invalid UTF-8 in text frame")


def test_parse_many_frames_in_one_chunk(sp):
    texts = [("msg %d é" % i) * (i % 7) for i in range(500)]
    data = b"".join(frame(1, t.encode(), key=os.urandom(4)) for t in texts)
    frames, consumed, err = parse(sp, data, decode_text=True)
    assert [f[3] for f in frames] == texts and consumed == len(data) and err is None


# --------------------------------------------------------------------- encode_frame


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_encode_frame_lengths(sp, n):
    payload = os.urandom(n)
    assert sp.encode_frame(2, payload) == frame(2, payload)
    assert sp.encode_frame(2, payload, mask_key=KEY) == frame(2, payload, key=KEY)
    assert sp.encode_frame(1, bytearray(payload), fin=False, rsv=4, mask_key=bytearray(KEY)) == frame(
        1, payload, fin=False, rsv=4, key=KEY
    )
    assert sp.encode_frame(0, memoryview(payload), True, 7) == frame(0, payload, rsv=7)


@pytest.mark.parametrize("opcode,rsv", [(-1, 0), (16, 0), (1, -1), (1, 8), (1 << 70, 0)])
def test_encode_frame_out_of_range(sp, opcode, rsv):
    with pytest.raises(ValueError):
        sp.encode_frame(opcode, b"x", rsv=rsv)


def test_encode_roundtrip_all_opcodes(sp):
    for opcode in (0, 1, 2, 8, 9, 10):
        for masked in (False, True):
            data = sp.encode_frame(opcode, b"payload", mask_key=KEY if masked else None)
            frames, consumed, err = sp.parse_frames(data, masked, -1, 0, False)
            assert frames == [(opcode, True, 0, b"payload")] and consumed == len(data) and err is None


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_encode_message_is_a_final_unmasked_frame(sp, n):
    payload = os.urandom(n)
    assert sp.encode_message(payload) == frame(2, payload)
    assert sp.encode_message(bytearray(payload)) == frame(2, payload)
    assert sp.encode_message(memoryview(payload)) == frame(2, payload)
    ascii_text = ("abc" * n)[:n]
    assert sp.encode_message(ascii_text) == frame(1, ascii_text.encode())
    text = ("é€😀x" * n)[:n]
    assert sp.encode_message(text) == frame(1, text.encode())


def test_encode_message_text_subclass_and_errors(sp):
    class Text(str):
        pass

    assert sp.encode_message(Text("hé")) == frame(1, "hé".encode())
    with pytest.raises(UnicodeEncodeError):
        sp.encode_message("lone \ud800 surrogate")
    with pytest.raises(TypeError):
        sp.encode_message(12)


# --------------------------------------------------------------------- compiled vs pure


@pytest.fixture
def both(speedups_impl):
    """(pure, compiled) for the property tests; they run once, under the "compiled" param."""
    if _compiled is None:
        if os.environ.get("VOLLEYIO_EXPECT_COMPILED") == "1":
            pytest.fail("the compiled speedups were expected but did not load")
        pytest.skip("compiled speedups not built")
    if speedups_impl != "compiled":
        pytest.skip("compares both implementations directly; runs once")
    yield _pure, _compiled
    _compiled._set_simd_level(-1)


PIECES = ["a", "hello ", "é", "ß", "語", "テキスト", "😀", "🎉", "\u07ff", "\u0800", "\uffff", "\U0010ffff", " " * 40]


@st.composite
def utf8ish(draw):
    """Mostly valid UTF-8 with a few random byte edits, so SIMD blocks are exercised."""
    text = "".join(draw(st.lists(st.sampled_from(PIECES), max_size=60)))
    data = bytearray(text.encode())
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "set" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = bytes([draw(st.sampled_from([0x80, 0xBF, 0xC0, 0xC2, 0xE0, 0xED, 0xF0, 0xF4, 0xF5, 0xFF]))])
        elif kind == "delete" and pos < len(data):
            del data[pos]
        elif kind == "truncate":
            del data[pos:]
    return bytes(data)


SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(data=utf8ish(), level=st.integers(0, 3))
def test_prop_validate_utf8_matches(both, data, level):
    pure, comp = both
    comp._set_simd_level(level)
    assert comp.validate_utf8(data) == pure.validate_utf8(data)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_prop_validate_utf8_random_bytes(both, data):
    pure, comp = both
    assert comp.validate_utf8(data) == pure.validate_utf8(data)


@SETTINGS
@given(data=utf8ish(), cuts=st.lists(st.integers(0, 1000), max_size=5), level=st.integers(0, 3))
def test_prop_incremental_matches(both, data, cuts, level):
    pure, comp = both
    comp._set_simd_level(level)
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    vp, vc = pure.Utf8Validator(), comp.Utf8Validator()
    for a, b in zip(bounds, bounds[1:]):
        assert vc.feed(data[a:b]) == vp.feed(data[a:b])
        assert vc.complete == vp.complete


@SETTINGS
@given(data=st.binary(max_size=600), key=st.binary(min_size=4, max_size=4), offset=st.integers(-10, 10), level=st.integers(0, 3))
def test_prop_mask_matches(both, data, key, offset, level):
    pure, comp = both
    comp._set_simd_level(level)
    assert comp.mask(data, key, offset) == pure.mask(data, key, offset)
    a, b = bytearray(data), bytearray(data)
    comp.mask_inplace(a, key, offset)
    pure.mask_inplace(b, key, offset)
    assert a == b


@st.composite
def frame_stream(draw):
    parts = []
    for _ in range(draw(st.integers(1, 5))):
        opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10, 3, 0xB]))
        payload = draw(st.one_of(utf8ish(), st.binary(max_size=300)))
        fin = draw(st.booleans())
        rsv = draw(st.sampled_from([0, 0, 0, 1, 2, 4, 7]))
        masked = draw(st.booleans())
        key = draw(st.binary(min_size=4, max_size=4)) if masked else None
        form = draw(st.sampled_from(["min", "min", "16", "64"]))
        if form == "16" and len(payload) > 0xFFFF:
            form = "64"
        parts.append(frame(opcode, payload, fin=fin, rsv=rsv, key=key, form=form))
    data = bytearray(b"".join(parts))
    if data and draw(st.booleans()):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) if draw(st.booleans()) else bytes(data)


@SETTINGS
@given(
    data=frame_stream(),
    mask_required=st.booleans(),
    max_payload=st.sampled_from([-1, 0, 5, 125, 200, 1 << 70]),
    allowed_rsv=st.sampled_from([0, 4, 7]),
    decode_text=st.booleans(),
)
def test_prop_parse_frames_matches(both, data, mask_required, max_payload, allowed_rsv, decode_text):
    pure, comp = both
    expected = pure.parse_frames(data, mask_required, max_payload, allowed_rsv, decode_text)
    got = comp.parse_frames(data, mask_required, max_payload, allowed_rsv, decode_text)
    assert got == expected
    assert [type(f[3]) for f in got[0]] == [type(f[3]) for f in expected[0]]


@SETTINGS
@given(data=st.binary(max_size=300), mask_required=st.booleans(), decode_text=st.booleans())
def test_prop_parse_random_bytes_matches(both, data, mask_required, decode_text):
    pure, comp = both
    assert comp.parse_frames(data, mask_required, 100, 4, decode_text) == pure.parse_frames(
        data, mask_required, 100, 4, decode_text
    )


@SETTINGS
@given(message=st.one_of(st.text(max_size=300), st.binary(max_size=70_000)))
def test_prop_encode_message_matches(both, message):
    pure, comp = both
    assert comp.encode_message(message) == pure.encode_message(message)


@SETTINGS
@given(
    opcode=st.sampled_from([0, 1, 2, 8, 9, 10]),
    payload=st.one_of(utf8ish(), st.binary(max_size=400)),
    fin=st.booleans(),
    rsv=st.integers(0, 7),
    key=st.one_of(st.none(), st.binary(min_size=4, max_size=4)),
)
def test_prop_encode_parse_roundtrip(both, opcode, payload, fin, rsv, key):
    pure, comp = both
    encoded = comp.encode_frame(opcode, payload, fin, rsv, key)
    assert encoded == pure.encode_frame(opcode, payload, fin, rsv, key)
    for impl in (pure, comp):
        frames, consumed, err = impl.parse_frames(encoded, key is not None, -1, 7, False)
        if opcode >= 8 and (not fin or rsv or len(payload) > 125):
            assert err is not None and err[0] == 1002
            continue
        if opcode == 0 and rsv:
            assert err == (1002, "reserved bits set on a continuation frame")
            continue
        assert err is None and consumed == len(encoded)
        assert frames == [(opcode, fin, rsv, payload)]


def test_runtime_dispatch_picks_the_best_kernel(sp):
    if sp is _pure:
        pytest.skip("the pure twin has no kernels")
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    import platform

    info = sp._simd_info()
    if platform.machine() in ("x86_64", "AMD64"):
        expected = "avx2" if "avx2" in flags else "sse2"
        assert info["mask"] == expected
        assert info["utf8"] == ("avx2" if "avx2" in flags else "ssse3" if "ssse3" in flags else "scalar")
    # forcing a level and going back works and is reported
    assert sp._set_simd_level(0) == 0
    assert sp._simd_info() == {"mask": "scalar", "utf8": "scalar"}
    sp._set_simd_level(-1)
    assert sp._simd_info() == info


def test_selected_module_matches_fixture(sp):
    assert _speedups.IMPLEMENTATION in ("compiled", "python")
    assert _speedups.parse_frames is sp.parse_frames
    if sp is not _pure:
        info = sp._simd_info()
        assert set(info) == {"mask", "utf8"}


# --------------------------------------------------------------------- buffers of any item format
# Every function works on the buffer's *bytes*: a memoryview of an array('i') has one
# item per int, but its length, offsets and slices here are in bytes (the compiled
# twin reads the raw buffer; the pure one must not count items).


def wide_views(data: bytes) -> list[memoryview]:
    """``data`` seen through views whose len() is not the byte count (where it divides)."""
    views = []
    for fmt in ("H", "i", "q"):
        size = struct.calcsize(fmt)
        if len(data) % size == 0 and len(data):
            views.append(memoryview(bytearray(data)).cast(fmt))
    if len(data) % 2 == 0 and len(data):
        views.append(memoryview(bytearray(data)).cast("B", shape=[len(data) // 2, 2]))
    assert views, "pick a length with at least one non-byte view"
    assert all(len(v) != len(data) for v in views)
    return views


def test_mask_counts_bytes_of_any_buffer_format(sp):
    import array

    for n in (8, 24, 1000, 131072 + 8):
        data = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        for offset in range(4):
            expected = ref_mask(data, KEY, offset) if n < 5000 else _pure.mask(data, KEY, offset)
            for view in wide_views(data):
                assert sp.mask(view, KEY, offset) == expected, (view.format, view.ndim, offset)
                buf = bytearray(data)
                target = memoryview(buf).cast(view.format) if view.ndim == 1 else memoryview(buf).cast("B", shape=[n // 2, 2])
                sp.mask_inplace(target, KEY, offset)
                assert buf == expected, (view.format, view.ndim, offset)
            assert sp.mask(array.array("i", data), KEY, offset) == expected


def test_encode_frame_counts_bytes_of_any_buffer_format(sp):
    for n in (8, 124, 128, 65536 + 8):
        payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        for view in wide_views(payload):
            assert sp.encode_frame(2, view) == frame(2, payload)
            assert sp.encode_frame(2, view, mask_key=KEY) == frame(2, payload, key=KEY)
            assert sp.encode_frame(1, view, fin=False, rsv=4) == frame(1, payload, fin=False, rsv=4)


def test_validate_utf8_counts_bytes_of_any_buffer_format(sp):
    text = "héllo wörld € 😀 語".encode()
    assert len(text) % 2 == 0
    for cut in range(0, len(text) + 1, 2):
        prefix = text[:cut]
        if not prefix:
            continue
        for view in wide_views(prefix):
            assert sp.validate_utf8(view) == sp.validate_utf8(prefix)
    # truncated: the offset reported is the byte length, not the item count
    assert sp.validate_utf8(memoryview(bytearray(b"ab\xe2\x82")).cast("H")) == 4
    assert sp.validate_utf8(memoryview(bytearray(b"abcd\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xe2\x82")).cast("H")) == 14  # 7 items
    # invalid: the byte offset of the bad byte
    assert sp.validate_utf8(memoryview(bytearray(b"\xc3\xa9\xff\x41")).cast("H")) == 2
    assert sp.validate_utf8(memoryview(bytearray(b"abcdefg\xff")).cast("i")) == 7


def test_incremental_validator_counts_bytes_of_any_buffer_format(sp):
    def feed_all(chunks) -> tuple[list[int], bool]:
        v = sp.Utf8Validator()
        return [v.feed(c) for c in chunks], v.complete

    def as_h(data: bytes) -> memoryview:
        return memoryview(bytearray(data)).cast("H")

    # a pending sequence carried over from a non-byte view must be its last *bytes*
    assert feed_all([as_h(b"ab\xe2\x82"), as_h(b"\xacx")]) == ([-1, -1], True)
    assert feed_all([as_h(b"ab\xe2\x82"), as_h(b"\xacx\xff\xff")]) == ([-1, 2], False)
    assert feed_all([as_h(b"ab\xe2\x82"), as_h(b"x\xac")]) == ([-1, 0], False)
    assert feed_all([b"\xf0", as_h(b"\x9f\x98"), as_h(b"\x80!")]) == ([-1, -1, -1], True)
    assert feed_all([as_h(b"ab"), as_h(b"c\xe2"), as_h(b"\x82\xff")]) == ([-1, -1, 1], False)
    text = "héllo wörld € 😀 語 ok!".encode()
    assert len(text) % 2 == 0
    for cut in range(0, len(text) + 1, 2):
        pieces = [p for p in (text[:cut], text[cut:]) if p]
        assert feed_all([as_h(p) for p in pieces]) == feed_all(pieces) == ([-1] * len(pieces), True)


def test_parse_frames_counts_bytes_of_any_buffer_format(sp):
    data = frame(2, b"binary!", key=KEY) + frame(1, "héllo".encode(), key=KEY) + frame(9, b"", key=KEY)
    partial = frame(2, b"x" * 300, key=KEY)[:40]
    for tail in (b"", partial):
        whole = data + tail
        if len(whole) % 2:
            whole += b"\x82"  # a lone first header byte: incomplete, not consumed
        expected = ([(2, True, 0, b"binary!"), (1, True, 0, "héllo"), (9, True, 0, b"")], len(data), None)
        for view in wide_views(whole):
            assert parse(sp, view, decode_text=True) == expected, (view.format, view.ndim)
    # an error is reported at a byte offset too
    bad = frame(2, b"ok", key=KEY) + frame(2, b"unmasked!!")
    assert parse(sp, memoryview(bytearray(bad)).cast("H")) == ([(2, True, 0, b"ok")], 8, (1002, "client frame is not masked"))


class _Index:
    """An int-like that is not an int (numpy integers behave like this)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


@pytest.mark.parametrize("offset", [0.0, 1.0, 2.5, "1", None])
def test_mask_offset_must_be_an_integer(sp, offset):
    with pytest.raises(TypeError):
        sp.mask(b"abcdefgh", KEY, offset)
    with pytest.raises(TypeError):
        sp.mask(b"", KEY, offset)
    with pytest.raises(TypeError):
        sp.mask_inplace(bytearray(b"abcdefgh"), KEY, offset)
    with pytest.raises(TypeError):
        sp.mask_inplace(bytearray(200_000), KEY, offset)


def test_mask_offset_accepts_index_types(sp):
    data = b"abcdefghij"
    assert sp.mask(data, KEY, _Index(5)) == ref_mask(data, KEY, 1)
    assert sp.mask(data, KEY, True) == ref_mask(data, KEY, 1)
    buf = bytearray(data)
    sp.mask_inplace(buf, KEY, _Index(-1))
    assert buf == ref_mask(data, KEY, 3)


def test_non_contiguous_buffers(sp):
    every_other = memoryview(frame(2, b"payload", key=KEY) * 2)[::2]
    assert not every_other.c_contiguous
    # read-only inputs that would have to be copied: BufferError, as a PyBUF_SIMPLE request gives
    with pytest.raises(BufferError):
        sp.encode_frame(2, every_other)
    with pytest.raises(BufferError):
        sp.encode_frame(2, every_other, mask_key=KEY)
    with pytest.raises(BufferError):
        parse(sp, every_other)
    with pytest.raises(BufferError):
        sp.validate_utf8(memoryview(b"abcdef")[::2])
    v = sp.Utf8Validator()
    with pytest.raises(BufferError):
        v.feed(memoryview(b"abcdef")[::2])
    assert v.feed(b"\xe2") == -1  # with a sequence pending, too
    with pytest.raises(BufferError):
        v.feed(memoryview(b"\x82\x00\xac\x00")[::2])
    # mask copies (tested above); mask_inplace cannot write through one: TypeError
    with pytest.raises(TypeError):
        sp.mask_inplace(memoryview(bytearray(10))[::2], KEY)


def test_non_byte_formats_both_twins_agree(both):
    import array

    pure, compiled = both
    text = "語 é 😀 ascii".encode()
    text += b"!" * (-len(text) % 8)
    bad = text[:5] + b"\xff" + text[6:]
    stream = frame(2, text, key=KEY) + frame(1, bad, key=KEY)
    stream += b"\x00" * (-len(stream) % 8)
    for data in (text, bad, stream):
        for view in wide_views(data) + [array.array("i", data)]:
            for offset in range(4):
                assert pure.mask(view, KEY, offset) == compiled.mask(view, KEY, offset)
                a, b = bytearray(data), bytearray(data)
                pure.mask_inplace(memoryview(a).cast("i"), KEY, offset)
                compiled.mask_inplace(memoryview(b).cast("i"), KEY, offset)
                assert a == b
            assert pure.encode_frame(2, view, mask_key=KEY) == compiled.encode_frame(2, view, mask_key=KEY)
            assert pure.validate_utf8(view) == compiled.validate_utf8(view)
            p, c = pure.Utf8Validator(), compiled.Utf8Validator()
            assert [p.feed(view), p.feed(view)] == [c.feed(view), c.feed(view)]
            assert p.complete == c.complete
            for decode_text in (False, True):
                assert pure.parse_frames(view, True, -1, 0, decode_text) == compiled.parse_frames(view, True, -1, 0, decode_text)


def test_no_extensions_environment_offers_only_the_pure_twin() -> None:
    """VOLLEYIO_NO_EXTENSIONS=1 must keep the compiled module out of the whole process."""
    import subprocess
    import sys

    code = (
        "import volleyio._speedups as s, sys;"
        "print(s.IMPLEMENTATION, sorted(s.available()), 'volleyio._speedups._compiled' in sys.modules)"
    )
    env = dict(os.environ, VOLLEYIO_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["python", "['python']", "False"]


# ------------------------------------------------- bad arguments: both twins say the same


class _BadIndex:
    def __index__(self) -> int:
        raise RuntimeError("__index__ failed")


class _BadBool:
    def __bool__(self) -> bool:
        raise RuntimeError("__bool__ failed")


class _Int(int):
    def __repr__(self) -> str:
        return "_Int!"


def _released() -> memoryview:
    view = memoryview(b"abcd")
    view.release()
    return view


#: Argument values that are wrong somewhere (and right elsewhere): every one is tried
#: at every parameter of every function. Factories: buffers may be written to.
ARGUMENT_VALUES: dict[str, object] = {
    "float": lambda: 1.9,
    "float-zero": lambda: 0.0,
    "nan": lambda: float("nan"),
    "inf": lambda: float("inf"),
    "True": lambda: True,
    "False": lambda: False,
    "None": lambda: None,
    "str": lambda: "abcd",
    "str-empty": lambda: "",
    "bytes": lambda: b"abcd",
    "bytes-empty": lambda: b"",
    "bytearray": lambda: bytearray(b"abcdefgh"),
    "int-neg": lambda: -1,
    "int-0": lambda: 0,
    "int-1": lambda: 1,
    "int-4": lambda: 4,
    "int-7": lambda: 7,
    "int-8": lambda: 8,
    "int-15": lambda: 15,
    "int-16": lambda: 16,
    "int-2**63": lambda: 1 << 63,
    "int-huge": lambda: 1 << 70,
    "int-huge-neg": lambda: -(1 << 70),
    "int-subclass": lambda: _Int(2),
    "__index__": lambda: _Index(2),
    "__index__-raises": lambda: _BadIndex(),
    "__bool__-raises": lambda: _BadBool(),
    "memoryview-readonly": lambda: memoryview(b"abcd"),
    "memoryview-non-contiguous": lambda: memoryview(b"abcdefgh")[::2],
    "memoryview-non-contiguous-writable": lambda: memoryview(bytearray(b"abcdefgh"))[::2],
    "memoryview-ints": lambda: memoryview(bytearray(b"abcdefgh")).cast("i"),
    "memoryview-released": _released,
    "list": lambda: [1, 2, 3, 4],
    "object": lambda: object(),
}

_TEXT_AND_RSV = frame(1, "é".encode(), rsv=4, key=KEY) + frame(1, b"ok", key=KEY)

#: (name, how to call it on a module, parameter names, valid arguments) -- the valid
#: call exercises every parameter (each one changes the result).
TWIN_CALLS = {
    "mask": (lambda m: m.mask, ("data", "key", "offset"), lambda: [b"abcdefgh", KEY, 1]),
    "mask_inplace": (lambda m: m.mask_inplace, ("buffer", "key", "offset"), lambda: [bytearray(b"abcdefgh"), KEY, 1]),
    "validate_utf8": (lambda m: m.validate_utf8, ("data",), lambda: [b"h\xc3\xa9"]),
    "Utf8Validator.feed": (lambda m: m.Utf8Validator().feed, ("data",), lambda: [b"h\xc3"]),
    "Utf8Validator.feed-pending": (
        lambda m: _pending_validator(m).feed, ("data",), lambda: [b"\xa9"]
    ),
    "parse_frames": (
        lambda m: m.parse_frames,
        ("data", "mask_required", "max_payload", "allowed_rsv", "decode_text"),
        lambda: [_TEXT_AND_RSV, True, 100, 4, True],
    ),
    "encode_frame": (
        lambda m: m.encode_frame,
        ("opcode", "payload", "fin", "rsv", "mask_key"),
        lambda: [1, b"payload", False, 4, KEY],
    ),
    "encode_message": (lambda m: m.encode_message, ("message",), lambda: ["text"]),
}


def _pending_validator(module):  # type: ignore[no-untyped-def]
    validator = module.Utf8Validator()
    assert validator.feed(b"\xc3") == -1
    return validator


def _outcome(module, call: str, substitutions: dict[int, str], keywords: bool = False) -> tuple[object, ...]:
    """What ``call`` does with the valid arguments, some replaced by ARGUMENT_VALUES:
    ("ok", result, arguments after the call) or (exception type, message)."""
    get, names, valid = TWIN_CALLS[call]
    args = valid()
    for position, value_name in substitutions.items():
        args[position] = ARGUMENT_VALUES[value_name]()  # type: ignore[operator]
    func = get(module)
    try:
        result = func(**dict(zip(names, args))) if keywords else func(*args)
    except Exception as exc:  # noqa: BLE001 - the exception is the result compared
        return type(exc), str(exc)
    written = [bytes(a) if isinstance(a, bytearray) else None for a in args]
    return "ok", result, written


_SINGLE = [
    pytest.param(call, position, value, id=f"{call}-{TWIN_CALLS[call][1][position]}={value}")
    for call in TWIN_CALLS
    for position in range(len(TWIN_CALLS[call][1]))
    for value in ARGUMENT_VALUES
]


def test_twin_calls_are_valid_as_given(both):
    pure, compiled = both
    for call in TWIN_CALLS:
        expected = _outcome(pure, call, {})
        assert expected[0] == "ok", (call, expected)
        assert _outcome(compiled, call, {}) == expected
        assert _outcome(compiled, call, {}, keywords=True) == _outcome(pure, call, {}, keywords=True) == expected


@pytest.mark.parametrize("call,position,value", _SINGLE)
def test_twins_agree_on_every_argument_value(both, call, position, value):
    pure, compiled = both
    for keywords in (False, True):
        assert _outcome(compiled, call, {position: value}, keywords) == _outcome(pure, call, {position: value}, keywords)


@pytest.mark.parametrize("call", [c for c in TWIN_CALLS if len(TWIN_CALLS[c][1]) > 1])
def test_twins_check_arguments_in_the_same_order(both, call):
    # Every pair of parameters, every pair of values: with two bad arguments, both twins
    # report the same one (the first in parameter order).
    pure, compiled = both
    count = len(TWIN_CALLS[call][1])
    for first in range(count):
        for second in range(first + 1, count):
            for a in ARGUMENT_VALUES:
                for b in ARGUMENT_VALUES:
                    subs = {first: a, second: b}
                    assert _outcome(compiled, call, subs) == _outcome(pure, call, subs), (call, subs)


@pytest.mark.parametrize("call", [c for c in TWIN_CALLS if len(TWIN_CALLS[c][1]) > 1])
def test_arguments_are_checked_left_to_right(sp, call):
    count = len(TWIN_CALLS[call][1])
    for first in range(count):
        for a in ARGUMENT_VALUES:
            alone = _outcome(sp, call, {first: a})
            if alone[0] == "ok":
                continue
            for second in range(first + 1, count):
                for b in ARGUMENT_VALUES:
                    assert _outcome(sp, call, {first: a, second: b}) == alone, (call, first, a, second, b)


@SETTINGS
@given(
    call=st.sampled_from(sorted(TWIN_CALLS)),
    picks=st.lists(st.tuples(st.integers(0, 4), st.sampled_from(sorted(ARGUMENT_VALUES))), max_size=5),
    keywords=st.booleans(),
)
def test_prop_twins_agree_on_any_arguments(both, call, picks, keywords):
    pure, compiled = both
    count = len(TWIN_CALLS[call][1])
    subs = {position % count: value for position, value in picks}
    assert _outcome(compiled, call, subs, keywords) == _outcome(pure, call, subs, keywords)


def test_float_opcode_and_rsv_are_type_errors_not_truncated(sp):
    # The compiled twin used to build opcode 1 from 1.9 (issue #12, point 5).
    for args in ((1.9, b"x"), (1, b"x", True, 1.0), (True and 1.0, b"x")):
        with pytest.raises(TypeError, match="'float' object cannot be interpreted as an integer"):
            sp.encode_frame(*args)
    # Anything with __index__ is an integer; bool included (it is an int).
    assert sp.encode_frame(_Index(2), b"x", True, _Index(4)) == frame(2, b"x", rsv=4)
    assert sp.encode_frame(True, b"x") == frame(1, b"x")
    for bad in (1.0, "4", None):
        with pytest.raises(TypeError):
            sp.parse_frames(b"", True, bad, 0, True)
        with pytest.raises(TypeError):
            sp.parse_frames(b"", True, -1, bad, True)


def test_mask_keys_are_bytes_like(sp):
    # (an int used to be taken as bytes(4): a zero key, that is no masking at all)
    for key in (4, "abcd", [1, 2, 3, 4], None, 1.5):
        with pytest.raises(TypeError, match="a bytes-like object is required"):
            sp.mask(b"data", key)
        with pytest.raises(TypeError, match="a bytes-like object is required"):
            sp.mask_inplace(bytearray(4), key)
        if key is not None:  # None: no mask
            with pytest.raises(TypeError, match="a bytes-like object is required"):
                sp.encode_frame(1, b"data", mask_key=key)
    # any buffer of 4 bytes is a key, whatever its shape or format
    for key in (bytearray(KEY), memoryview(KEY + KEY)[::2], memoryview(bytearray(KEY)).cast("i")):
        assert sp.mask(b"data", key) == ref_mask(b"data", bytes(memoryview(key).tobytes()))


def test_argument_count_errors_are_type_errors(both):
    # Wrong argument counts are refused by the calling machinery of each twin: the same
    # exception type, worded by CPython for one and by Cython for the other.
    pure, compiled = both
    calls = [
        ("mask", (b"x",)), ("mask_inplace", ()), ("validate_utf8", ()), ("validate_utf8", (b"", b"")),
        ("parse_frames", (b"",)), ("encode_frame", (1,)), ("encode_message", ()), ("encode_message", ("a", "b")),
    ]
    for name, args in calls:
        for module in (pure, compiled):
            with pytest.raises(TypeError):
                getattr(module, name)(*args)
    # The validator's constructor says exactly the same in both.
    for args, kwargs in (((1,), {}), ((), {"x": 1}), ((1, 2), {"x": 1, "y": 2})):
        outcomes = []
        for module in (pure, compiled):
            with pytest.raises(TypeError) as caught:
                module.Utf8Validator(*args, **kwargs)
            outcomes.append(str(caught.value))
        assert outcomes[0] == outcomes[1]
    for module in (pure, compiled):
        with pytest.raises(TypeError):
            module.encode_frame(1, b"x", bogus=1)
        with pytest.raises(TypeError):
            module.Utf8Validator().feed()
