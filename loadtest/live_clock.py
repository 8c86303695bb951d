"""A wall clock burned into a video's pictures, for glass-to-glass latency read from the screen.

One row of large blocks at the top of the picture: a white and a black reference block (the
reader's threshold lies halfway between them, whatever a codec did to levels), then the wall
clock's milliseconds modulo 2**32 in 32 blocks (most significant first), then a CRC-8 of those
four bytes in 8 more. Blocks are 30 x 48 pixels at 720p (15 x 24 at 360p, the ladder's lowest
rung): large enough that x264 at low bitrates keeps them black or white, and the reader samples
only each block's middle, away from ringing at its edges. The reader is live_clock.js, the same
file the benchmark's page loads; tests/loadtest proves it through real H.264 encodes.
"""

from __future__ import annotations

REFS = 2
DATA_BITS = 32
CHECK_BITS = 8
CELLS = REFS + DATA_BITS + CHECK_BITS
# Geometry at 1280 x 720; other sizes scale it (the reader does the same).
BASE_WIDTH, BASE_HEIGHT = 1280, 720
X0, CELL_W, Y0, CELL_H = 10, 30, 8, 48
WHITE, BLACK = 235, 16  # limited-range luma, as x264 expects it


def crc8(data: bytes) -> int:
    """CRC-8, polynomial 0x07 (ATM HEC without the final XOR)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def cell_values(ms: int) -> list[int]:
    """The luma of each block, left to right, for wall-clock milliseconds `ms`."""
    value = ms % 2**32
    check = crc8(value.to_bytes(4, "big"))
    bits = [(value >> (31 - i)) & 1 for i in range(DATA_BITS)]
    bits += [(check >> (7 - i)) & 1 for i in range(CHECK_BITS)]
    return [WHITE, BLACK] + [WHITE if bit else BLACK for bit in bits]


def draw(planes: bytearray, width: int, height: int, ms: int) -> None:
    """Burn `ms` into a yuv420p picture (`planes`: Y, then U, then V, no padding), in place; the
    blocks' chroma is set neutral so they are pure grey levels."""
    sx, sy = width / BASE_WIDTH, height / BASE_HEIGHT
    top, bottom = round(Y0 * sy), round((Y0 + CELL_H) * sy)
    luma = width * height
    for index, level in enumerate(cell_values(ms)):
        left, right = round((X0 + index * CELL_W) * sx), round((X0 + (index + 1) * CELL_W) * sx)
        run = bytes([level]) * (right - left)
        for row in range(top, bottom):
            planes[row * width + left: row * width + right] = run
    # Chroma (half size in both directions) under the whole row of blocks.
    cw = width // 2
    left, right = round(X0 * sx) // 2, (round((X0 + CELLS * CELL_W) * sx) + 1) // 2
    grey = b"\x80" * (right - left)
    for plane in (luma, luma + luma // 4):
        for row in range(top // 2, (bottom + 1) // 2):
            planes[plane + row * cw + left: plane + row * cw + right] = grey


def background(width: int, height: int, frames: int) -> list[bytes]:
    """`frames` yuv420p pictures of ffmpeg's moving test pattern (a publisher's picture is never
    still: x264 has work to do and the blocks must survive it)."""
    import subprocess

    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
         f"testsrc2=size={width}x{height}:rate=30", "-frames:v", str(frames),
         "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
        check=True, capture_output=True, timeout=120).stdout
    size = width * height * 3 // 2
    return [raw[i * size:(i + 1) * size] for i in range(frames)]
