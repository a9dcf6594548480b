# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: binding=False, embedsignature=True, embedsignature.format=clinic
# cython: freethreading_compatible=True
# freethreading_compatible: the module declares Py_MOD_GIL_NOT_USED, so importing it on a
# free-threaded build (3.14t) leaves the GIL off. It is safe without the GIL: its only
# module-level state is the SIMD dispatch (function pointers and kernel names in
# vio_simd.c, written by vio_simd_init() while the module is imported, before any call
# can read them, and never again except by the _set_simd_level testing aid) and an
# immutable message string. Functions work on their arguments only; buffers are held
# with PyObject_GetBuffer for the duration of a call. A Utf8Validator object carries
# per-object state: one validator must not be fed from two threads at once (as with the
# pure twin); separate validators in separate threads are fine.
# binding=False: module functions become plain builtins (METH_FASTCALL), which is
# measurably cheaper per call than cyfunctions (about 10 ns on a 20 ns mask call).
"""Compiled twins of ``volleyio._speedups._pure`` (same signatures, same results).

The byte crunching lives in ``vio_simd.c`` (runtime-dispatched AVX2/SSE2/NEON masking,
AVX2/SSSE3 UTF-8 validation); this module is the thin, allocation-lean Python layer
and the whole frame-parsing loop.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyObject_CheckBuffer, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.bytearray cimport PyByteArray_CheckExact, PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.long cimport PyLong_CheckExact
from libc.string cimport memcpy
from libc.stdint cimport uint8_t, uint64_t

cdef extern from "Python.h":
    object PyNumber_Index(object o)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object o)
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)
    bint PyUnicode_IS_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    object PyUnicode_AsUTF8String(object o)

cdef extern from "vio_simd.h" nogil:
    ctypedef struct vio_utf8_state:
        uint8_t need
        uint8_t lo
        uint8_t hi
    void vio_simd_init()
    int vio_simd_set_level(int level)
    const char *vio_mask_impl_name()
    const char *vio_utf8_impl_name()
    void vio_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t *key4)
    Py_ssize_t vio_utf8_check(const uint8_t *s, size_t n)
    Py_ssize_t vio_utf8_feed(vio_utf8_state *st, const uint8_t *s, size_t n)
    int vio_is_ascii(const uint8_t *s, size_t n)

vio_simd_init()

# Buffers at least this large are processed with the GIL released. Below it the
# release/re-acquire costs more than it frees up.
cdef enum:
    NOGIL_MIN = 131072

cdef object _KEY_ERROR = "a WebSocket mask key is exactly 4 bytes"
cdef object _CAST_NON_CONTIGUOUS = "memoryview: casts are restricted to C-contiguous views"

# Argument checks (same order, types and messages as the pure twin): arguments are
# checked in parameter order; a buffer argument must export the buffer protocol (the
# TypeError below), integers go through __index__ (a float is a TypeError, never
# truncated), flags are taken by truth value.


cdef object _not_bytes_like(object obj):
    return TypeError(f"a bytes-like object is required, not '{type(obj).__name__}'")


cdef inline int _get_buffer(object obj, Py_buffer *view) except -1:
    """PyBUF_SIMPLE export of ``obj``, with the twins' TypeError for a non-buffer."""
    if not PyObject_CheckBuffer(obj):
        raise _not_bytes_like(obj)
    PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    return 0


def _simd_info():
    """Which kernels are in use: {"mask": name, "utf8": name}."""
    return {"mask": vio_mask_impl_name().decode(), "utf8": vio_utf8_impl_name().decode()}


def _set_simd_level(int level):
    """Testing aid: 0 scalar, 1 SSE2/NEON, 2 SSSE3, 3 AVX2, -1 best available.

    Clamped to what this CPU supports; returns the level now in effect. It rewrites the
    process-wide dispatch: not to be called while other threads use this module.
    """
    return vio_simd_set_level(level)


cdef inline int _load_key(object key, object offset, uint8_t *out) except -1:
    cdef uint8_t raw[4]
    cdef const char *p
    cdef int shift, i
    if not PyBytes_CheckExact(key):
        if not PyObject_CheckBuffer(key):
            raise _not_bytes_like(key)
        key = bytes(key)
    if PyBytes_GET_SIZE(key) != 4:
        raise ValueError(_KEY_ERROR)
    p = PyBytes_AS_STRING(key)
    if offset is 0:
        memcpy(out, p, 4)
        return 0
    # PyNumber_Index: an int or anything with __index__; a float is a TypeError, as in
    # the pure twin (truncating 1.5 to a key shift would silently mask wrongly).
    shift = <int>(PyNumber_Index(offset) % 4)
    for i in range(4):
        out[i] = <uint8_t>p[(i + shift) & 3]
    return 0


def mask(data, key, offset=0):
    """Return ``data`` XORed with ``key`` repeated, starting at key byte ``offset % 4``."""
    cdef uint8_t k[4]
    cdef Py_buffer view
    cdef Py_ssize_t n
    cdef object out
    cdef uint8_t *dst
    cdef const uint8_t *src
    if PyBytes_CheckExact(data):
        _load_key(key, offset, k)
        n = PyBytes_GET_SIZE(data)
        out = PyBytes_FromStringAndSize(NULL, n)
        dst = <uint8_t *>PyBytes_AS_STRING(out)
        src = <const uint8_t *>PyBytes_AS_STRING(data)
        if n < NOGIL_MIN:
            vio_mask(dst, src, n, k)
        else:
            with nogil:
                vio_mask(dst, src, n, k)
        return out
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except (TypeError, BufferError):
        # Not a contiguous buffer: the pure twin accepts whatever ``bytes()`` does.
        return mask(bytes(data), key, offset)
    try:
        _load_key(key, offset, k)
        n = view.len
        out = PyBytes_FromStringAndSize(NULL, n)
        dst = <uint8_t *>PyBytes_AS_STRING(out)
        src = <const uint8_t *>view.buf
        if n < NOGIL_MIN:
            vio_mask(dst, src, n, k)
        else:
            with nogil:
                vio_mask(dst, src, n, k)
    finally:
        PyBuffer_Release(&view)
    return out


def mask_inplace(buffer, key, offset=0):
    """XOR a writable buffer with ``key`` in place, starting at key byte ``offset % 4``."""
    cdef uint8_t k[4]
    cdef Py_buffer view
    cdef Py_ssize_t n
    cdef uint8_t *p
    if PyByteArray_CheckExact(buffer):
        n = PyByteArray_GET_SIZE(buffer)
        if n < NOGIL_MIN:
            _load_key(key, offset, k)
            vio_mask(<uint8_t *>PyByteArray_AS_STRING(buffer), <uint8_t *>PyByteArray_AS_STRING(buffer), n, k)
            return None
    if not PyObject_CheckBuffer(buffer):
        raise _not_bytes_like(buffer)
    try:
        PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE)
    except BufferError:
        raise TypeError(_CAST_NON_CONTIGUOUS) from None
    try:
        if view.readonly:
            raise TypeError("mask_inplace needs a writable buffer")
        _load_key(key, offset, k)
        n = view.len
        p = <uint8_t *>view.buf
        if n < NOGIL_MIN:
            vio_mask(p, p, n, k)
        else:
            # The buffer export keeps the object from being resized or freed meanwhile.
            with nogil:
                vio_mask(p, p, n, k)
    finally:
        PyBuffer_Release(&view)
    return None


def validate_utf8(data):
    """-1 if valid and complete; else the offset of the first bad byte (len if truncated)."""
    cdef Py_buffer view
    cdef Py_ssize_t r
    if PyBytes_CheckExact(data) and PyBytes_GET_SIZE(data) < NOGIL_MIN:
        return vio_utf8_check(<const uint8_t *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    _get_buffer(data, &view)
    try:
        if view.len < NOGIL_MIN:
            r = vio_utf8_check(<const uint8_t *>view.buf, view.len)
        else:
            with nogil:
                r = vio_utf8_check(<const uint8_t *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return r


cdef class Utf8Validator:
    """Validate UTF-8 arriving in pieces, failing at the first bad byte of any piece.

    Not thread-safe per object: feed one validator from one thread at a time.
    """

    cdef vio_utf8_state _st
    cdef bint _failed

    def __cinit__(self, *args, **kwargs):
        # Arguments are refused with the pure twin's (CPython's) words; a __cinit__
        # without parameters would silently ignore them.
        if kwargs:
            raise TypeError(f"Utf8Validator.__init__() got an unexpected keyword argument '{next(iter(kwargs))}'")
        if args:
            raise TypeError(f"Utf8Validator.__init__() takes 1 positional argument but {len(args) + 1} were given")
        self._st.need = 0
        self._st.lo = 0x80
        self._st.hi = 0xBF
        self._failed = False

    @property
    def complete(self):
        """True when no multi-byte sequence is waiting for its remaining bytes."""
        return self._st.need == 0 and not self._failed

    def reset(self):
        self._st.need = 0
        self._st.lo = 0x80
        self._st.hi = 0xBF
        self._failed = False

    def __reduce__(self):
        return _rebuild_validator, (self._st.need, self._st.lo, self._st.hi, self._failed)

    def feed(self, data):
        """-1 while the stream so far is a valid prefix; else the bad byte's offset in ``data``."""
        cdef Py_buffer view
        cdef Py_ssize_t r
        if self._failed:
            return 0
        _get_buffer(data, &view)
        try:
            if view.len < NOGIL_MIN:
                r = vio_utf8_feed(&self._st, <const uint8_t *>view.buf, view.len)
            else:
                # Safe: a Utf8Validator is not meant to be fed from two threads at once,
                # and the buffer export pins the data.
                with nogil:
                    r = vio_utf8_feed(&self._st, <const uint8_t *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        if r >= 0:
            self._failed = True
            self._st.need = 0
            return r
        return -1


def _rebuild_validator(int need, int lo, int hi, bint failed):
    """Unpickle a Utf8Validator (the pure twin pickles through __slots__)."""
    cdef Utf8Validator v = Utf8Validator()
    if not (0 <= need <= 3 and 0x80 <= lo <= hi <= 0xBF):
        raise ValueError("invalid Utf8Validator state")
    v._st.need = need
    v._st.lo = lo
    v._st.hi = hi
    v._failed = failed
    return v


cdef inline object _text_payload(const uint8_t *src, Py_ssize_t n, bint masked, const uint8_t *key):
    """The payload as str, or None if it is not valid UTF-8."""
    cdef object u
    cdef uint8_t *dst
    if n == 0:
        return ""
    # Optimistically build a compact ASCII str and unmask straight into it.
    u = PyUnicode_New(n, 127)
    dst = <uint8_t *>PyUnicode_DATA(u)
    if masked:
        if n < NOGIL_MIN:
            vio_mask(dst, src, n, key)
        else:
            with nogil:
                vio_mask(dst, src, n, key)
    else:
        memcpy(dst, src, n)
    if vio_is_ascii(dst, n):
        return u
    if vio_utf8_check(dst, n) != -1:
        return None
    return PyUnicode_DecodeUTF8(<const char *>dst, n, NULL)


cdef inline object _bytes_payload(const uint8_t *src, Py_ssize_t n, bint masked, const uint8_t *key):
    cdef object out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
    if masked:
        if n < NOGIL_MIN:
            vio_mask(dst, src, n, key)
        else:
            with nogil:
                vio_mask(dst, src, n, key)
    else:
        memcpy(dst, src, n)
    return out


def parse_frames(data, mask_required, max_payload, allowed_rsv, decode_text):
    """Parse all complete frames at the start of ``data`` (see ``_pure.parse_frames``)."""
    cdef Py_buffer view
    cdef const uint8_t *buf
    cdef Py_ssize_t end, pos = 0, header, start, avail
    cdef uint8_t b0, b1
    cdef int rsv, opcode, arsv
    cdef bint fin, masked
    cdef bint mreq, dtext
    cdef uint64_t length, limit
    cdef bint limited
    cdef list frames = []
    cdef object err = None
    cdef object payload
    cdef const uint8_t *key

    _get_buffer(data, &view)
    try:
        # The other arguments, in parameter order (after data, as in the pure twin).
        mreq = True if mask_required else False
        if not PyLong_CheckExact(max_payload):
            max_payload = PyNumber_Index(max_payload)
        if not PyLong_CheckExact(allowed_rsv):
            allowed_rsv = PyNumber_Index(allowed_rsv)
        dtext = True if decode_text else False
        if max_payload < 0 or max_payload >= 0x8000000000000000:
            limited = False
            limit = 0
        else:
            limited = True
            limit = <uint64_t>max_payload
        arsv = <int>(allowed_rsv & 7)

        buf = <const uint8_t *>view.buf
        end = view.len
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            fin = (b0 & 0x80) != 0
            rsv = (b0 >> 4) & 0x7
            opcode = b0 & 0x0F
            masked = (b1 & 0x80) != 0
            length = b1 & 0x7F
            header = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = (<uint64_t>buf[pos + 2] << 8) | buf[pos + 3]
                header = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = ((<uint64_t>buf[pos + 2] << 56) | (<uint64_t>buf[pos + 3] << 48)
                          | (<uint64_t>buf[pos + 4] << 40) | (<uint64_t>buf[pos + 5] << 32)
                          | (<uint64_t>buf[pos + 6] << 24) | (<uint64_t>buf[pos + 7] << 16)
                          | (<uint64_t>buf[pos + 8] << 8) | <uint64_t>buf[pos + 9])
                header = 10
                if length >> 63:
                    err = (1002, "frame length has the most significant bit set")
                    break

            if opcode > 0x2 and opcode < 0x8 or opcode > 0xA:
                err = (1002, f"reserved opcode {opcode:#x}")
                break
            if opcode >= 0x8:
                if not fin:
                    err = (1002, "fragmented control frame")
                    break
                if length > 125:
                    err = (1002, "control frame payload longer than 125 bytes")
                    break
                if rsv:
                    err = (1002, "reserved bits set on a control frame")
                    break
            elif rsv:
                if opcode == 0x0:
                    err = (1002, "reserved bits set on a continuation frame")
                    break
                if rsv & ~arsv:
                    err = (1002, "reserved bits set without a negotiated extension")
                    break
            if masked != mreq:
                if mreq:
                    err = (1002, "client frame is not masked")
                else:
                    err = (1002, "server frame is masked")
                break
            if limited and length > limit:
                err = (1009, "frame payload exceeds the size limit")
                break

            avail = end - pos - header
            if masked:
                avail -= 4
            if avail < 0 or length > <uint64_t>avail:
                break
            start = end - avail
            key = buf + pos + header
            if dtext and opcode == 0x1 and fin and rsv == 0:
                payload = _text_payload(buf + start, <Py_ssize_t>length, masked, key)
                if payload is None:
                    err = (1007, "invalid UTF-8 in text frame")
                    break
            else:
                payload = _bytes_payload(buf + start, <Py_ssize_t>length, masked, key)
            frames.append((opcode, fin, rsv, payload))
            pos = start + <Py_ssize_t>length
    finally:
        PyBuffer_Release(&view)
    return frames, pos, err


cdef object _build_frame(int b0, const uint8_t *data, Py_ssize_t n, const uint8_t *key):
    """Header + payload (masked with the 4 bytes at ``key`` unless it is NULL)."""
    cdef Py_ssize_t hlen
    cdef uint8_t *out
    cdef int mbit = 0x80 if key != NULL else 0
    if n < 126:
        hlen = 2
    elif n < 0x10000:
        hlen = 4
    else:
        hlen = 10
    if mbit:
        hlen += 4
    frame = PyBytes_FromStringAndSize(NULL, hlen + n)
    out = <uint8_t *>PyBytes_AS_STRING(frame)
    out[0] = <uint8_t>b0
    if n < 126:
        out[1] = <uint8_t>(mbit | n)
    elif n < 0x10000:
        out[1] = <uint8_t>(mbit | 126)
        out[2] = <uint8_t>(n >> 8)
        out[3] = <uint8_t>n
    else:
        out[1] = <uint8_t>(mbit | 127)
        out[2] = <uint8_t>((<uint64_t>n) >> 56)
        out[3] = <uint8_t>((<uint64_t>n) >> 48)
        out[4] = <uint8_t>((<uint64_t>n) >> 40)
        out[5] = <uint8_t>((<uint64_t>n) >> 32)
        out[6] = <uint8_t>(n >> 24)
        out[7] = <uint8_t>(n >> 16)
        out[8] = <uint8_t>(n >> 8)
        out[9] = <uint8_t>n
    if mbit:
        memcpy(out + hlen - 4, key, 4)
        if n < NOGIL_MIN:
            vio_mask(out + hlen, data, n, key)
        else:
            with nogil:
                vio_mask(out + hlen, data, n, key)
    else:
        memcpy(out + hlen, data, n)
    return frame


def encode_frame(opcode, payload, fin=True, rsv=0, mask_key=None):
    """Serialize one frame with the shortest length encoding."""
    cdef Py_buffer view
    cdef uint8_t k[4]
    cdef const uint8_t *key = NULL
    cdef int b0
    # In parameter order, as in the pure twin; a float opcode/rsv is a TypeError.
    if not PyLong_CheckExact(opcode):
        opcode = PyNumber_Index(opcode)
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"opcode out of range: {opcode}")
    _get_buffer(payload, &view)
    try:
        b0 = (0x80 if fin else 0) | <int>opcode
        if not PyLong_CheckExact(rsv):
            rsv = PyNumber_Index(rsv)
        if not 0 <= rsv <= 0x7:
            raise ValueError(f"rsv out of range: {rsv}")
        b0 |= <int>rsv << 4
        if mask_key is not None:
            _load_key(mask_key, 0, k)
            key = k
        return _build_frame(b0, <const uint8_t *>view.buf, view.len, key)
    finally:
        PyBuffer_Release(&view)


def encode_message(message):
    """One final, unmasked frame carrying a whole message: text for ``str``, binary otherwise."""
    cdef Py_buffer view
    if isinstance(message, str):
        if PyUnicode_IS_ASCII(message):
            # ASCII text is its own UTF-8: framed straight from the str, no encoded copy.
            return _build_frame(0x81, <const uint8_t *>PyUnicode_DATA(message), PyUnicode_GET_LENGTH(message), NULL)
        encoded = PyUnicode_AsUTF8String(message)
        return _build_frame(0x81, <const uint8_t *>PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded), NULL)
    _get_buffer(message, &view)
    try:
        return _build_frame(0x82, <const uint8_t *>view.buf, view.len, NULL)
    finally:
        PyBuffer_Release(&view)
