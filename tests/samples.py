"""Decoded audio for tests that compare what a player played with the source."""

from __future__ import annotations

import array
import asyncio
from pathlib import Path

__all__ = ["RATE", "pcm", "position_in_source"]

RATE = 8000  # comparisons run on 8 kHz mono


async def pcm(path: Path, rate: int = RATE) -> array.array[int]:
    """``path`` decoded by ffmpeg to mono 16-bit samples at ``rate``."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-ac", "1",
        "-ar", str(rate), "-f", "s16le", "-", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"ffmpeg could not read {path}"
    samples = array.array("h")
    samples.frombytes(out)
    return samples


def _dot(a: array.array[int], b: array.array[int], at: int, n: int) -> float:
    return float(sum(x * y for x, y in zip(a[at: at + n], b[:n], strict=True)))


def position_in_source(source: array.array[int], played: array.array[int], expected: float,
                       *, within: float = 1.0, rate: int = RATE) -> float:
    """Where in the source (seconds) ``played`` begins: the best correlation of
    its first 0.25 s within ``within`` s of ``expected`` (decoders may differ,
    so no sample-exact match)."""
    n = rate // 4
    probe = played[:n]
    assert len(probe) == n, "too little was played to compare"
    energy = _dot(probe, probe, 0, n) ** 0.5
    lo = max(0, int((expected - within) * rate))
    hi = min(len(source) - n, int((expected + within) * rate))
    best, best_at = -2.0, lo
    for at in range(lo, hi, 2):
        window = source[at: at + n]
        norm = (_dot(window, window, 0, n) ** 0.5) * energy or 1.0
        score = _dot(source, probe, at, n) / norm
        if score > best:
            best, best_at = score, at
    assert best > 0.8, f"what was played matches no part of the source (best {best:.2f})"
    return best_at / rate
