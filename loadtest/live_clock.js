// Reads the clock loadtest/live_clock.py burns into pictures (see its docstring for the layout).
// readClock(rgba, width, height): `rgba` holds at least the top 60/720 of a width x height
// picture (canvas getImageData order); returns the burned milliseconds modulo 2**32, or null when
// the blocks are unreadable (no picture yet, a torn frame, a failed check).
(function (root) {
  const REFS = 2, DATA_BITS = 32, CHECK_BITS = 8;
  const X0 = 10, CELL_W = 30, Y0 = 8, CELL_H = 48, BASE_W = 1280, BASE_H = 720;

  function crc8(bytes) {
    let crc = 0;
    for (const b of bytes) {
      crc ^= b;
      for (let i = 0; i < 8; i++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
    }
    return crc;
  }

  // Mean brightness of a block's middle half in each direction (edges ring after compression).
  function level(rgba, width, height, index) {
    const sx = width / BASE_W, sy = height / BASE_H;
    const left = (X0 + index * CELL_W) * sx, w = CELL_W * sx;
    const top = Y0 * sy, h = CELL_H * sy;
    const x1 = Math.round(left + w / 4), x2 = Math.max(x1 + 1, Math.round(left + 3 * w / 4));
    const y1 = Math.round(top + h / 4), y2 = Math.max(y1 + 1, Math.round(top + 3 * h / 4));
    let sum = 0, n = 0;
    for (let y = y1; y < y2; y++) {
      for (let x = x1; x < x2; x++) {
        const i = (y * width + x) * 4;
        sum += rgba[i] + rgba[i + 1] + rgba[i + 2];
        n += 3;
      }
    }
    return sum / n;
  }

  function readClock(rgba, width, height) {
    const white = level(rgba, width, height, 0), black = level(rgba, width, height, 1);
    if (white - black < 64) return null;
    const mid = (white + black) / 2;
    const bits = [];
    for (let i = 0; i < DATA_BITS + CHECK_BITS; i++) {
      bits.push(level(rgba, width, height, REFS + i) > mid ? 1 : 0);
    }
    let value = 0;
    for (let i = 0; i < DATA_BITS; i++) value = value * 2 + bits[i];
    let check = 0;
    for (let i = DATA_BITS; i < DATA_BITS + CHECK_BITS; i++) check = check * 2 + bits[i];
    const bytes = [Math.floor(value / 2 ** 24) & 0xff, Math.floor(value / 2 ** 16) & 0xff,
                   Math.floor(value / 2 ** 8) & 0xff, value & 0xff];
    return crc8(bytes) === check ? value : null;
  }

  // How far behind `nowMs` (Date.now()) a burned clock is, in ms (the clock wraps every 49 days).
  function latency(burned, nowMs) {
    const diff = (nowMs % 2 ** 32 - burned + 2 ** 32) % 2 ** 32;
    return diff > 2 ** 31 ? diff - 2 ** 32 : diff;
  }

  root.readClock = readClock;
  root.clockLatency = latency;
  root.CLOCK_STRIP = (Y0 + CELL_H + 4) / BASE_H;  // fraction of the height the reader needs
})(typeof module !== "undefined" ? module.exports : window);
