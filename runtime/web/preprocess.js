// Photos to encoder inputs, the same rules as runtime/preprocessing.py (Pillow):
// EXIF orientation applied, transparency composited on white, grey and palette images to RGB,
// "draft" decoding emulated by box reduction (the browser decodes every pixel; Pillow's JPEG draft
// mode downscales in the DCT domain, within a few 1/255 of a box average), then Pillow's separable
// resampling with its antialiasing support (filter support scaled by the downscale factor,
// 22-bit fixed-point coefficients, 8-bit rounding after each pass), then normalisation.

export const PRECISION_BITS = 32 - 8 - 2;

const FILTERS = {
  bilinear: { support: 1.0, f: (x) => { x = Math.abs(x); return x < 1.0 ? 1.0 - x : 0.0; } },
  bicubic: {
    support: 2.0,
    f: (x) => {
      const a = -0.5; x = Math.abs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    },
  },
};

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output pixel, [first input, count] and int weights. */
function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  const ss = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.f((x + xmin - center + 0.5) * ss);
      kk[xx * ksize + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) if (ww !== 0.0) kk[xx * ksize + x] /= ww;
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  const ints = new Float64Array(kk.length);
  const one = 2 ** PRECISION_BITS;
  for (let i = 0; i < kk.length; i++) ints[i] = kk[i] < 0 ? Math.trunc(-0.5 + kk[i] * one) : Math.trunc(0.5 + kk[i] * one);
  return { bounds, kk: ints, ksize };
}

function clip8(v) {
  const x = Math.floor(v / 2 ** PRECISION_BITS);
  return x < 0 ? 0 : x > 255 ? 255 : x;
}

/** Resize RGB pixels (Uint8Array, 3 per pixel) as Pillow's Image.resize does for 8-bit images. */
export function resizeRGB(src, width, height, outW, outH, interpolation = "bilinear") {
  const filter = FILTERS[interpolation];
  if (!filter) throw new Error(`unknown interpolation ${interpolation}`);
  const half = 2 ** (PRECISION_BITS - 1);
  let cur = src, w = width;
  if (outW !== width) {
    const { bounds, kk, ksize } = coefficients(width, outW, filter);
    const out = new Uint8Array(outW * height * 3);
    for (let y = 0; y < height; y++) {
      const row = y * width * 3;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1], k = xx * ksize;
        let r = half, g = half, b = half;
        for (let x = 0; x < xmax; x++) {
          const p = row + (x + xmin) * 3, c = kk[k + x];
          r += src[p] * c; g += src[p + 1] * c; b += src[p + 2] * c;
        }
        const o = (y * outW + xx) * 3;
        out[o] = clip8(r); out[o + 1] = clip8(g); out[o + 2] = clip8(b);
      }
    }
    cur = out; w = outW;
  }
  if (outH !== height) {
    const { bounds, kk, ksize } = coefficients(height, outH, filter);
    const out = new Uint8Array(w * outH * 3);
    for (let yy = 0; yy < outH; yy++) {
      const ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1], k = yy * ksize;
      for (let x = 0; x < w; x++) {
        let r = half, g = half, b = half;
        for (let y = 0; y < ymax; y++) {
          const p = ((y + ymin) * w + x) * 3, c = kk[k + y];
          r += cur[p] * c; g += cur[p + 1] * c; b += cur[p + 2] * c;
        }
        const o = (yy * w + x) * 3;
        out[o] = clip8(r); out[o + 1] = clip8(g); out[o + 2] = clip8(b);
      }
    }
    cur = out;
  }
  return cur;
}

/** Pillow's Image.reduce(factor): the mean of each factor x factor block (partial blocks at the edges). */
export function reduceRGB(src, width, height, factor) {
  const outW = Math.ceil(width / factor), outH = Math.ceil(height / factor);
  const out = new Uint8Array(outW * outH * 3);
  for (let yy = 0; yy < outH; yy++) {
    const y1 = Math.min(height, (yy + 1) * factor);
    for (let xx = 0; xx < outW; xx++) {
      const x1 = Math.min(width, (xx + 1) * factor);
      let r = 0, g = 0, b = 0, n = 0;
      for (let y = yy * factor; y < y1; y++) {
        for (let x = xx * factor; x < x1; x++) {
          const p = (y * width + x) * 3;
          r += src[p]; g += src[p + 1]; b += src[p + 2]; n++;
        }
      }
      const o = (yy * outW + xx) * 3;
      out[o] = Math.floor((r + n / 2) / n); out[o + 1] = Math.floor((g + n / 2) / n); out[o + 2] = Math.floor((b + n / 2) / n);
    }
  }
  return { data: out, width: outW, height: outH };
}

function isJpeg(bytes) {
  return bytes.length > 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

/** Decode an image file (Blob) to RGB pixels with its EXIF orientation applied and alpha on white. */
export async function decodeImage(blob, name, maxPixels = 89478485) {
  const head = new Uint8Array(await blob.slice(0, 4).arrayBuffer());
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (e) {
    throw new Error(`${name}: cannot read image (${e.message || e.name || e})`);
  }
  const { width, height } = bitmap;
  if (width * height > maxPixels) {
    bitmap.close();
    throw new Error(`${name}: refused, ${width}x${height} is more than ${maxPixels} pixels (decompression-bomb guard)`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return { data: rgb, width, height, jpeg: isJpeg(head) };
}

/** The manifest's decode rule: with "draft", only the pixels an image_size square resize needs. */
export function draftReduce(image, size) {
  let { data, width, height } = image;
  if (image.jpeg) {
    const s = Math.min(Math.floor(width / size), Math.floor(height / size));
    const scale = s >= 8 ? 8 : s >= 4 ? 4 : s >= 2 ? 2 : 1;
    if (scale > 1) ({ data, width, height } = reduceRGB(data, width, height, scale));
  }
  const factor = Math.min(Math.floor(width / size), Math.floor(height / size));
  if (factor >= 2) ({ data, width, height } = reduceRGB(data, width, height, factor));
  return { data, width, height };
}

/** RGB pixels to the encoder's input for one photo, as the manifest's preprocess declares it
 * (runtime/preprocessing.py::preprocess): input_dtype "uint8" gives the resized 8-bit pixels (the graph
 * normalises), "float32" (bundles before format 4) normalises here; in the declared layout. */
export function toTensor(image, pre) {
  const S = pre.image_size;
  let src = image;
  if (pre.decode === "draft") src = draftReduce(image, S);
  const px = resizeRGB(src.data, src.width, src.height, S, S, pre.interpolation);
  const nchw = (pre.layout ?? "NCHW") === "NCHW";
  if ((pre.input_dtype ?? "float32") === "uint8") {
    if (!nchw) return px;
    const out = new Uint8Array(3 * S * S);
    for (let c = 0; c < 3; c++) for (let i = 0; i < S * S; i++) out[c * S * S + i] = px[i * 3 + c];
    return out;
  }
  const out = new Float32Array(3 * S * S);
  const scale = Math.fround(pre.scale);
  for (let c = 0; c < 3; c++) {
    const mean = Math.fround(pre.mean[c]), std = Math.fround(pre.std[c]);
    for (let i = 0; i < S * S; i++) {
      out[nchw ? c * S * S + i : i * 3 + c] = Math.fround(Math.fround(Math.fround(px[i * 3 + c] * scale) - mean) / std);
    }
  }
  return out;
}

export async function preprocessBlob(blob, name, pre) {
  return toTensor(await decodeImage(blob, name), pre);
}
