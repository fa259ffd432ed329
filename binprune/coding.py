"""Lossless coding of binary masks, close to the ``log2 C(n, k)`` bound.

A mask with ``n`` entries of which ``k`` are kept carries at most ``log2 C(n, k)`` bits of
information once ``n`` and ``k`` are known. Each mask is coded with whichever of these is
shortest (all known to the decoder from ``n``, ``k`` and a small parameter):

``"none"`` / ``"all"``
    ``k == 0`` or ``k == n``: nothing to store.
``"golomb"``
    Golomb code of the gaps between consecutive positions of the *minority* symbol (the kept
    entries when ``k <= n / 2``, the removed ones otherwise), with the Golomb parameter ``m``
    chosen per mask by trying candidates on the actual gaps. For a random mask this costs about
    ``log2(n / k) + 1.4`` bits per minority entry, within a few percent of the bound.
``"bitmap"``
    One bit per entry; shortest only near 50% density.

Golomb bit layout (chosen so that decoding is vectorized, without a loop over code words): the
code words are split into three bit strings written one after the other,

1. the high ``b - 1`` bits of every truncated-binary remainder (fixed width, ``b = ceil(log2 m)``);
2. the one extra low bit of each remainder whose high part is ``>= u = 2**b - m``;
3. the quotients ``gap // m`` in unary (``q`` ones then a zero).

The total length equals that of the interleaved Golomb code; bits are packed most significant
first (``numpy.packbits``) and the last byte is zero-padded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MaskCode",
    "encode_mask",
    "decode_mask",
    "mask_bound_bits",
    "golomb_bits",
    "CODINGS",
]

CODINGS = ("none", "all", "golomb", "golomb_complement", "bitmap")


def mask_bound_bits(n: int, k: int) -> float:
    """``log2 C(n, k)``: the bits needed to tell one ``k``-subset of ``n`` positions from all others."""
    if not 0 <= k <= n:
        raise ValueError(f"k={k} is outside [0, {n}]")
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


@dataclass(frozen=True)
class MaskCode:
    """One coded mask: ``coding`` (one of :data:`CODINGS`), its parameter (the Golomb ``m``, 0
    otherwise), the exact number of meaningful bits, and the packed bytes."""

    coding: str
    param: int
    bits: int
    data: bytes


def _gaps(positions: np.ndarray) -> np.ndarray:
    """Zero-based gaps: the number of majority entries before each minority entry."""
    prev = np.concatenate(([-1], positions[:-1]))
    return positions - prev - 1


def _golomb_parts(m: int) -> tuple[int, int]:
    """``(b, u)`` of the truncated binary code of remainders in ``[0, m)``."""
    b = (m - 1).bit_length()  # ceil(log2 m); 0 for m == 1
    return b, (1 << b) - m


def golomb_bits(gaps: np.ndarray, m: int) -> int:
    """Exact length in bits of the Golomb code of ``gaps`` with parameter ``m``."""
    gaps = np.asarray(gaps, dtype=np.int64)
    q = gaps // m
    total = int(q.sum()) + gaps.size
    b, u = _golomb_parts(m)
    if b > 0:
        r = gaps - q * m
        total += gaps.size * (b - 1) + int(np.count_nonzero(r >= u))
    return total


def _candidate_parameters(n: int, count: int) -> list[int]:
    """Golomb parameters worth trying: all small ones and a fine geometric grid around the
    optimum for a geometric gap distribution (``m ~ ln 2 * n / count``)."""
    mean_gap = max((n - count) / max(count, 1), 1.0)
    center = max(1.0, math.log(2) * mean_gap)
    grid = {int(round(center * 1.03 ** i)) for i in range(-40, 41)}
    grid.update(range(1, 33))
    return sorted(m for m in grid if 1 <= m <= max(n, 1))


def _best_golomb(gaps: np.ndarray, n: int) -> tuple[int, int]:
    best = None
    for m in _candidate_parameters(n, gaps.size):
        bits = golomb_bits(gaps, m)
        if best is None or bits < best[1]:
            best = (m, bits)
    assert best is not None
    return best


def _golomb_encode(gaps: np.ndarray, m: int) -> tuple[np.ndarray, int]:
    """Bit array (uint8 of 0/1) of the three-part Golomb layout."""
    gaps = np.asarray(gaps, dtype=np.int64)
    q = gaps // m
    r = gaps - q * m
    b, u = _golomb_parts(m)
    pieces = []
    if b > 0:
        code = np.where(r < u, r, r + u)  # r < u: b-1 bits; else b bits whose top b-1 are >= u
        high = np.where(r < u, r, code >> 1)
        if b > 1:
            shifts = np.arange(b - 2, -1, -1, dtype=np.int64)
            pieces.append(((high[:, None] >> shifts[None, :]) & 1).astype(np.uint8).ravel())
        extra_mask = r >= u
        pieces.append((code[extra_mask] & 1).astype(np.uint8))
    unary = np.zeros(int(q.sum()) + gaps.size, dtype=np.uint8)
    ends = np.cumsum(q + 1) - 1  # position of each terminating zero
    starts = ends - q
    ones = np.repeat(starts, q) + (np.arange(int(q.sum())) - np.repeat(np.cumsum(q) - q, q))
    unary[ones] = 1
    pieces.append(unary)
    bits = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8)
    return bits, int(bits.size)


def _golomb_decode(bits: np.ndarray, count: int, m: int) -> np.ndarray:
    """Inverse of :func:`_golomb_encode`: ``count`` gaps from a 0/1 bit array."""
    b, u = _golomb_parts(m)
    pos = 0
    r = np.zeros(count, dtype=np.int64)
    if b > 0:
        high = np.zeros(count, dtype=np.int64)
        if b > 1:
            width = b - 1
            chunk = bits[pos : pos + count * width]
            if chunk.size != count * width:
                raise ValueError("mask data ends inside the remainder bits")
            weights = (1 << np.arange(width - 1, -1, -1, dtype=np.int64))
            high = chunk.reshape(count, width).astype(np.int64) @ weights
            pos += count * width
        long = high >= u
        n_extra = int(np.count_nonzero(long))
        extra = bits[pos : pos + n_extra].astype(np.int64)
        if extra.size != n_extra:
            raise ValueError("mask data ends inside the remainder bits")
        pos += n_extra
        r = high.copy()
        r[long] = 2 * high[long] + extra - u
    zeros = np.flatnonzero(bits[pos:] == 0)
    if zeros.size < count:
        raise ValueError("mask data ends inside the unary quotients")
    zeros = zeros[:count]
    q = np.diff(np.concatenate(([-1], zeros))) - 1
    if count and pos + int(zeros[-1]) + 1 != bits.size:
        raise ValueError("mask data hold bits after the last code word")
    return q * m + r


def encode_mask(mask: np.ndarray) -> MaskCode:
    """Code a boolean mask (any shape; read in C order) with the shortest available coding."""
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    n = flat.size
    k = int(np.count_nonzero(flat))
    if k == 0:
        return MaskCode("none", 0, 0, b"")
    if k == n:
        return MaskCode("all", 0, 0, b"")
    complement = k > n - k
    positions = np.flatnonzero(~flat if complement else flat)
    gaps = _gaps(positions)
    m, bits = _best_golomb(gaps, n)
    if bits < n:
        stream, length = _golomb_encode(gaps, m)
        assert length == bits
        return MaskCode("golomb_complement" if complement else "golomb", m, bits, np.packbits(stream).tobytes())
    return MaskCode("bitmap", 0, n, np.packbits(flat.astype(np.uint8)).tobytes())


def decode_mask(code: MaskCode | tuple[str, int, int, bytes], n: int, k: int) -> np.ndarray:
    """Flat boolean mask of ``n`` entries with ``k`` kept from a :class:`MaskCode`.

    Raises ``ValueError`` when the data are inconsistent with ``n`` and ``k`` (a corrupted file
    that slipped past the checksum, or a coding this version does not know).
    """
    coding, param, nbits, data = code if isinstance(code, tuple) else (code.coding, code.param, code.bits, code.data)
    if not 0 <= k <= n:
        raise ValueError(f"keep count {k} is outside [0, {n}]")
    if len(data) != (nbits + 7) // 8:
        raise ValueError(f"mask data hold {len(data)} bytes, expected {(nbits + 7) // 8} for {nbits} bits")
    if coding == "none" or coding == "all":
        if (coding == "none") != (k == 0) or (coding == "all") != (k == n):
            raise ValueError(f"coding {coding!r} does not fit keep count {k} of {n}")
        return np.full(n, coding == "all", dtype=bool)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits]
    if coding == "bitmap":
        if nbits != n:
            raise ValueError(f"bitmap holds {nbits} bits for {n} entries")
        flat = bits.astype(bool)
    elif coding in ("golomb", "golomb_complement"):
        if param < 1:
            raise ValueError(f"invalid Golomb parameter {param}")
        complement = coding == "golomb_complement"
        count = n - k if complement else k
        gaps = _golomb_decode(bits, count, param)
        positions = np.cumsum(gaps + 1) - 1
        if count and (positions[-1] >= n or np.any(gaps < 0)):
            raise ValueError("decoded positions fall outside the mask")
        flat = np.zeros(n, dtype=bool)
        flat[positions] = True
        if complement:
            flat = ~flat
    else:
        raise ValueError(f"unknown mask coding {coding!r}; known: {', '.join(CODINGS)}")
    if int(np.count_nonzero(flat)) != k:
        raise ValueError(f"decoded mask keeps {int(np.count_nonzero(flat))} entries, expected {k}")
    return flat
