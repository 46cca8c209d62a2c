"""xxHash32/64 and MurmurHash3's fmix32 as numba functions, bit-identical to the C ones.

`xxh32` is the shingle hash (same as `xxhash.xxh32_intdigest`), `xxh64` the exact-text
hash (`xxhash.xxh64_intdigest`), `fmix32` datasketch's affine32 pre-mix. Every uint32
operation is wrapped in np.uint32(...): numba widens integer arithmetic, and the explicit
truncation both restores modulo-2^32 semantics and lets LLVM keep it 32 bits wide.
"""

from __future__ import annotations

import sys

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_U32 = np.uint32

# xxHash32 primes
_P32_1 = np.uint32(2654435761)
_P32_2 = np.uint32(2246822519)
_P32_3 = np.uint32(3266489917)
_P32_4 = np.uint32(668265263)
_P32_5 = np.uint32(374761393)

# xxHash64 primes
_P64_1 = np.uint64(11400714785074694791)
_P64_2 = np.uint64(14029467366897019727)
_P64_3 = np.uint64(1609587929392839161)
_P64_4 = np.uint64(9650029242287828579)
_P64_5 = np.uint64(2870177450012600261)

# MurmurHash3 fmix32 constants (datasketch's affine32 pre-mix)
_FMIX_M1 = np.uint32(0x85EBCA6B)
_FMIX_M2 = np.uint32(0xC2B2AE35)


@nb.njit(inline="always")
def _rotl32(x, r):
    return _U32((x << _U32(r)) | (x >> _U32(32 - r)))


@nb.njit(inline="always")
def _rotl64(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _unaligned_load(bits: int):
    @intrinsic
    def load(typingctx, arr, idx):
        """Load a native-order uint{bits} at arr.data + idx, unaligned, no bounds check."""
        ret = types.uint32 if bits == 32 else types.uint64

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.gep(ary.data, [args[1]])
            return builder.load(builder.bitcast(ptr, ir.IntType(bits).as_pointer()), align=1)

        return ret(arr, idx), codegen

    return load


_load_u32 = _unaligned_load(32)
_load_u64 = _unaligned_load(64)


@intrinsic
def store_u64(typingctx, arr, idx, value):
    """Store a uint64 at arr.data + idx, unaligned, native byte order, no bounds check."""

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        builder.store(args[2], builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(arr, idx, types.uint64), codegen


load_u64 = _load_u64  # native byte order: for copies, not for hashing


@nb.njit(inline="always")
def _read32_bytes(buf, p):
    return (
        _U32(buf[p])
        | (_U32(buf[p + 1]) << _U32(8))
        | (_U32(buf[p + 2]) << _U32(16))
        | (_U32(buf[p + 3]) << _U32(24))
    )


@nb.njit(inline="always")
def _read64_bytes(buf, p):
    return np.uint64(_read32_bytes(buf, p)) | (
        np.uint64(_read32_bytes(buf, p + 4)) << np.uint64(32)
    )


# xxHash reads little-endian words; unaligned loads are that only on little-endian hosts.
_read32 = _load_u32 if sys.byteorder == "little" else _read32_bytes
_read64 = _load_u64 if sys.byteorder == "little" else _read64_bytes

_S4 = np.uint64(4)
_S8 = np.uint64(8)
_S12 = np.uint64(12)
_S16 = np.uint64(16)
PADDING = 64  # readable bytes `xxh32_padded` may touch after `end`


@nb.njit(inline="always")
def _round32(acc, lane):
    acc = _U32(acc + _U32(lane * _P32_2))
    return _U32(_rotl32(acc, 13) * _P32_1)


@nb.njit(inline="always")
def _stripe(lanes, buf, p):
    """The four accumulators after one 16-byte stripe at buf[p:]."""
    v1, v2, v3, v4 = lanes
    return (
        _round32(v1, _read32(buf, p)),
        _round32(v2, _read32(buf, p + _S4)),
        _round32(v3, _read32(buf, p + _S8)),
        _round32(v4, _read32(buf, p + _S12)),
    )


@nb.njit(inline="always")
def _lanes(seed):
    return (_U32(_U32(seed + _P32_1) + _P32_2), _U32(seed + _P32_2), seed, _U32(seed - _P32_1))


@nb.njit(inline="always")
def _merge(lanes):
    v1, v2, v3, v4 = lanes
    return _U32(_U32(_rotl32(v1, 1) + _rotl32(v2, 7)) + _U32(_rotl32(v3, 12) + _rotl32(v4, 18)))


@nb.njit(inline="always")
def _word_step(h, word):
    return _U32(_rotl32(_U32(h + _U32(word * _P32_3)), 17) * _P32_4)


@nb.njit(inline="always")
def _byte_step(h, byte):
    return _U32(_rotl32(_U32(h + _U32(_U32(byte) * _P32_5)), 11) * _P32_1)


@nb.njit(inline="always")
def _avalanche32(h):
    h ^= h >> _U32(15)
    h = _U32(h * _P32_2)
    h ^= h >> _U32(13)
    h = _U32(h * _P32_3)
    h ^= h >> _U32(16)
    return h


@nb.njit(inline="always")
def xxh32(buf, start, end, seed):
    """XXH32 of buf[start:end] (uint8 array), identical to `xxhash.xxh32_intdigest`."""
    seed = _U32(seed)
    p = np.uint64(start)
    stop = np.uint64(end)
    if end - start >= 16:
        lanes = _lanes(seed)
        while p + _S16 <= stop:
            lanes = _stripe(lanes, buf, p)
            p += _S16
        h = _merge(lanes)
    else:
        h = _U32(seed + _P32_5)
    h = _U32(h + _U32(end - start))
    while p + _S4 <= stop:
        h = _word_step(h, _read32(buf, p))
        p += _S4
    while p < stop:
        h = _byte_step(h, buf[p])
        p += np.uint64(1)
    return _avalanche32(h)


@nb.njit(inline="always")
def xxh32_padded(buf, start, end, seed):
    """`xxh32` for short inputs followed by >= PADDING readable bytes: a second stripe and
    the tail steps are computed unconditionally and selected, not branched on, which saves
    the branch mispredictions of variable-length shingles. Same result as `xxh32`."""
    seed = _U32(seed)
    p = np.uint64(start)
    stop = np.uint64(end)
    if end - start >= 16:
        lanes = _stripe(_lanes(seed), buf, p)
        p += _S16
        second = p + _S16 <= stop
        next_lanes = _stripe(lanes, buf, p)
        lanes = next_lanes if second else lanes
        p += _S16 if second else np.uint64(0)
        while p + _S16 <= stop:
            lanes = _stripe(lanes, buf, p)
            p += _S16
        h = _merge(lanes)
    else:
        h = _U32(seed + _P32_5)
    h = _U32(h + _U32(end - start))
    words = (stop - p) >> np.uint64(2)
    for w in range(3):
        step = _word_step(h, _read32(buf, p + np.uint64(4 * w)))
        h = step if np.uint64(w) < words else h
    p += words << np.uint64(2)
    rest = stop - p
    for j in range(3):
        step = _byte_step(h, buf[p + np.uint64(j)])
        h = step if np.uint64(j) < rest else h
    return _avalanche32(h)


@nb.njit(inline="always")
def fmix32(h):
    """MurmurHash3's 32-bit finalizer, datasketch's affine32 pre-mix."""
    h ^= h >> _U32(16)
    h = _U32(h * _FMIX_M1)
    h ^= h >> _U32(13)
    h = _U32(h * _FMIX_M2)
    h ^= h >> _U32(16)
    return h


@nb.njit(inline="always")
def round64(acc, lane):
    acc = acc + lane * _P64_2
    return _rotl64(acc, 31) * _P64_1


@nb.njit(inline="always")
def _merge64(acc, val):
    acc ^= round64(np.uint64(0), val)
    return acc * _P64_1 + _P64_4


@nb.njit(inline="always")
def avalanche64(h):
    """XXH64's final mix."""
    h ^= h >> np.uint64(33)
    h *= _P64_2
    h ^= h >> np.uint64(29)
    h *= _P64_3
    h ^= h >> np.uint64(32)
    return h


@nb.njit(inline="always")
def xxh64(buf, start, end, seed):
    """XXH64 of buf[start:end] (uint8 array), identical to `xxhash.xxh64_intdigest`."""
    seed = np.uint64(seed)
    p = start
    length = end - start
    if length >= 32:
        v1 = seed + _P64_1 + _P64_2
        v2 = seed + _P64_2
        v3 = seed
        v4 = seed - _P64_1
        limit = end - 32
        while p <= limit:
            v1 = round64(v1, _read64(buf, p))
            v2 = round64(v2, _read64(buf, p + 8))
            v3 = round64(v3, _read64(buf, p + 16))
            v4 = round64(v4, _read64(buf, p + 24))
            p += 32
        h = _rotl64(v1, 1) + _rotl64(v2, 7) + _rotl64(v3, 12) + _rotl64(v4, 18)
        h = _merge64(h, v1)
        h = _merge64(h, v2)
        h = _merge64(h, v3)
        h = _merge64(h, v4)
    else:
        h = seed + _P64_5
    h += np.uint64(length)
    while p + 8 <= end:
        h ^= round64(np.uint64(0), _read64(buf, p))
        h = _rotl64(h, 27) * _P64_1 + _P64_4
        p += 8
    if p + 4 <= end:
        h ^= _read32(buf, p) * _P64_1
        h = _rotl64(h, 23) * _P64_2 + _P64_3
        p += 4
    while p < end:
        h ^= np.uint64(buf[p]) * _P64_5
        h = _rotl64(h, 11) * _P64_1
        p += 1
    return avalanche64(h)
