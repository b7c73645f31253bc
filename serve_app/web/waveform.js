// Waveforms drawn from the service's peaks (min/max pairs per slice of the stem), so a row
// shows its stem before, and without, decoding any audio.

export function draw(canvas, peaks, color) {
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const height = Math.max(1, Math.round(canvas.clientHeight * dpr));
  canvas.width = width;
  canvas.height = height;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, width, height);
  g.fillStyle = color;
  const n = peaks.min.length;
  const mid = height / 2;
  // full scale fills the row; quieter stems are scaled up so that their shape stays visible
  const top = Math.max(0.05, ...peaks.max.map(Math.abs), ...peaks.min.map(Math.abs));
  for (let x = 0; x < width; x++) {
    const from = Math.floor((x * n) / width);
    const to = Math.max(from + 1, Math.floor(((x + 1) * n) / width));
    let lo = 0;
    let hi = 0;
    for (let i = from; i < to && i < n; i++) {
      lo = Math.min(lo, peaks.min[i]);
      hi = Math.max(hi, peaks.max[i]);
    }
    const y0 = mid - (hi / top) * mid;
    const y1 = mid - (lo / top) * mid;
    g.fillRect(x, y0, 1, Math.max(1, y1 - y0));
  }
}
