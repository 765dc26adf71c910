// Frame samples to RGBA: modality LUT (rescale, PS3.3 C.11.1), the linear VOI window
// (PS3.3 C.11.2.1.2.1), MONOCHROME1 inversion (C.7.6.3.1.2), palette colour (C.7.6.3.1.5)
// and YBR_FULL to RGB (C.7.6.3.1.2). Grayscale goes through a lookup table over the stored
// values, so a new window costs one table, not one pass of arithmetic per pixel.

/** PS3.3 C.11.2.1.2.1, output 0..255; the tests compute the same with numpy. */
export function windowValue(x, center, width) {
  if (width <= 1) return x < center - 0.5 ? 0 : 255; // a threshold (C.11.2.1.2.1 needs >= 1)
  const low = center - 0.5 - (width - 1) / 2;
  const high = center - 0.5 + (width - 1) / 2;
  if (x <= low) return 0;
  if (x > high) return 255;
  return Math.round(((x - (center - 0.5)) / (width - 1) + 0.5) * 255);
}

/** The stored value range of the samples: [min, max]. */
export function storedRange(pixels) {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < pixels.length; i++) {
    const v = pixels[i];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return [min, max];
}

/** The window a frame opens with: its own (first) values, else the full range of values. */
export function defaultWindow(image, range) {
  if (image.windowWidth !== undefined && image.windowCenter !== undefined && image.windowWidth >= 1) {
    return { center: image.windowCenter, width: image.windowWidth };
  }
  const lo = range[0] * image.slope + image.intercept;
  const hi = range[1] * image.slope + image.intercept;
  const a = Math.min(lo, hi);
  const b = Math.max(lo, hi);
  return { center: (a + b) / 2 + 0.5, width: Math.max(b - a + 1, 2) };
}

export function isColor(image) {
  return image.samples === 3 || image.photometric === "PALETTE COLOR";
}

let lutCache = null;

function grayLut(image, range, center, width) {
  const key = `${range[0]}|${range[1]}|${image.slope}|${image.intercept}|${center}|${width}|${image.photometric}`;
  if (lutCache && lutCache.key === key) return lutCache;
  const size = range[1] - range[0] + 1;
  const lut = new Uint8ClampedArray(size);
  const invert = image.photometric === "MONOCHROME1";
  for (let i = 0; i < size; i++) {
    const y = windowValue((range[0] + i) * image.slope + image.intercept, center, width);
    lut[i] = invert ? 255 - y : y;
  }
  lutCache = { key, lut, offset: range[0] };
  return lutCache;
}

/** Write one frame into `out` (an ImageData of the frame's size). */
export function paint(out, image, decoded, range, win) {
  const n = image.rows * image.columns;
  const rgba = out.data;
  const px = decoded.pixels;
  if (!isColor(image)) {
    if (range[1] - range[0] < 1 << 20) {
      const { lut, offset } = grayLut(image, range, win.center, win.width);
      for (let i = 0, j = 0; i < n; i++, j += 4) {
        const y = lut[px[i] - offset];
        rgba[j] = y;
        rgba[j + 1] = y;
        rgba[j + 2] = y;
        rgba[j + 3] = 255;
      }
    } else {
      const invert = image.photometric === "MONOCHROME1";
      for (let i = 0, j = 0; i < n; i++, j += 4) {
        let y = windowValue(px[i] * image.slope + image.intercept, win.center, win.width);
        if (invert) y = 255 - y;
        rgba[j] = rgba[j + 1] = rgba[j + 2] = y;
        rgba[j + 3] = 255;
      }
    }
    return;
  }
  if (image.photometric === "PALETTE COLOR") {
    const { r, g, b } = image.palette;
    const pick = (lut, v) => lut.values[Math.min(Math.max(v - lut.first, 0), lut.values.length - 1)];
    for (let i = 0, j = 0; i < n; i++, j += 4) {
      const v = px[i];
      rgba[j] = pick(r, v);
      rgba[j + 1] = pick(g, v);
      rgba[j + 2] = pick(b, v);
      rgba[j + 3] = 255;
    }
    return;
  }
  const shift = image.bitsStored > 8 ? image.bitsStored - 8 : 0;
  const at = decoded.planar
    ? (i, c) => px[c * n + i] >> shift
    : (i, c) => px[3 * i + c] >> shift;
  const ybr = decoded.colorSpace === "YBR_FULL";
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    const a = at(i, 0);
    const b = at(i, 1);
    const c = at(i, 2);
    if (ybr) {
      rgba[j] = a + 1.402 * (c - 128);
      rgba[j + 1] = a - 0.344136 * (b - 128) - 0.714136 * (c - 128);
      rgba[j + 2] = a + 1.772 * (b - 128);
    } else {
      rgba[j] = a;
      rgba[j + 1] = b;
      rgba[j + 2] = c;
    }
    rgba[j + 3] = 255;
  }
}
