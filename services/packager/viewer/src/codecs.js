// Pixel data decoders, one per transfer syntax (PS3.5 A.4, 8). Parsing and the compressed
// codecs come from maintained packages (docs/media.md); RLE (PS3.5 G.3) and the native
// layouts are a few lines each. The WebAssembly of each codec is inlined in the bundle
// (a page on file:// cannot fetch it) and compiled only when a frame first needs it.
import { Decoder as LosslessDecoder } from "jpeg-lossless-decoder-js";
import charlsFactory from "@cornerstonejs/codec-charls/decodewasmjs";
import charlsWasm from "@cornerstonejs/codec-charls/decodewasm";
import turboFactory from "@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasmjs";
import turboWasm from "@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasm";
import openjpegFactory from "@cornerstonejs/codec-openjpeg/decodewasmjs";
import openjpegWasm from "@cornerstonejs/codec-openjpeg/decodewasm";

export const SYNTAXES = {
  "1.2.840.10008.1.2": { name: "Implicit VR Little Endian", kind: "native" },
  "1.2.840.10008.1.2.1": { name: "Explicit VR Little Endian", kind: "native" },
  "1.2.840.10008.1.2.1.99": { name: "Deflated Explicit VR Little Endian", kind: "native" },
  "1.2.840.10008.1.2.2": { name: "Explicit VR Big Endian", kind: "native" },
  "1.2.840.10008.1.2.5": { name: "RLE Lossless", kind: "rle" },
  "1.2.840.10008.1.2.4.50": { name: "JPEG Baseline", kind: "jpeg" },
  "1.2.840.10008.1.2.4.51": { name: "JPEG Extended", kind: "jpeg" },
  "1.2.840.10008.1.2.4.57": { name: "JPEG Lossless", kind: "jpeg-lossless" },
  "1.2.840.10008.1.2.4.70": { name: "JPEG Lossless SV1", kind: "jpeg-lossless" },
  "1.2.840.10008.1.2.4.80": { name: "JPEG-LS Lossless", kind: "jpeg-ls" },
  "1.2.840.10008.1.2.4.81": { name: "JPEG-LS Near-Lossless", kind: "jpeg-ls" },
  "1.2.840.10008.1.2.4.90": { name: "JPEG 2000 Lossless", kind: "j2k" },
  "1.2.840.10008.1.2.4.91": { name: "JPEG 2000", kind: "j2k" },
  "1.2.840.10008.1.2.4.201": { name: "HTJ2K Lossless", kind: "j2k" },
  "1.2.840.10008.1.2.4.202": { name: "HTJ2K Lossless RPCL", kind: "j2k" },
  "1.2.840.10008.1.2.4.203": { name: "HTJ2K", kind: "j2k" },
};

export class Unsupported extends Error {}

const modules = {};
function wasmModule(name, factory, binary) {
  // wasmBinary: emscripten instantiates from these bytes and never fetches a .wasm file.
  if (!modules[name]) modules[name] = factory({ wasmBinary: binary, locateFile: (p) => p });
  return modules[name];
}

function viaEmscripten(module, className, bytes) {
  const decoder = new module[className]();
  try {
    decoder.getEncodedBuffer(bytes.length).set(bytes);
    decoder.decode();
    const info = decoder.getFrameInfo();
    const out = decoder.getDecodedBuffer().slice(); // copy out of the wasm heap
    return { info, bytes: out };
  } finally {
    decoder.delete();
  }
}

function typed(bytes, bitsAllocated, signed) {
  const buf = bytes.byteOffset % 2 ? bytes.slice() : bytes;
  if (bitsAllocated <= 8) return signed ? new Int8Array(buf.buffer, buf.byteOffset, buf.length) : buf;
  if (bitsAllocated === 16) {
    const C = signed ? Int16Array : Uint16Array;
    return new C(buf.buffer, buf.byteOffset, buf.length >> 1);
  }
  if (bitsAllocated === 32) {
    const b = buf.byteOffset % 4 ? buf.slice() : buf;
    const C = signed ? Int32Array : Uint32Array;
    return new C(b.buffer, b.byteOffset, b.length >> 2);
  }
  throw new Unsupported(`${bitsAllocated} bits allocated per sample`);
}

/** Sign-extend or mask values stored in fewer bits than allocated (PS3.5 8.1.1). */
function fitBitsStored(pixels, image) {
  const { bitsStored, bitsAllocated, signed } = image;
  if (bitsAllocated <= 8 && bitsStored === 8) return pixels;
  if (bitsStored >= bitsAllocated || bitsAllocated > 16) return pixels;
  const mask = (1 << bitsStored) - 1;
  const sign = 1 << (bitsStored - 1);
  const out = signed ? new Int32Array(pixels.length) : pixels;
  for (let i = 0; i < pixels.length; i++) {
    let v = pixels[i] & mask;
    if (signed && v & sign) v -= mask + 1;
    out[i] = v;
  }
  return out;
}

function swap16(bytes) {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    out[i] = bytes[i + 1];
    out[i + 1] = bytes[i];
  }
  return out;
}

/** RLE Lossless (PS3.5 G.3): a 64-byte header of segment offsets, one PackBits segment per
 * byte plane, most significant byte first; the result is planar per sample. */
function decodeRle(frame, image) {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const segments = view.getUint32(0, true);
  const pixels = image.rows * image.columns;
  const bytesPer = image.bitsAllocated / 8;
  if (segments !== bytesPer * image.samples) throw new Error(`RLE: ${segments} segments`);
  const planes = new Uint8Array(pixels * segments);
  for (let s = 0; s < segments; s++) {
    let pos = view.getUint32(4 + 4 * s, true);
    const end = s + 1 < segments ? view.getUint32(8 + 4 * s, true) : frame.length;
    let out = s * pixels;
    const stop = out + pixels;
    while (pos < end && out < stop) {
      const n = (frame[pos++] << 24) >> 24;
      if (n >= 0) {
        for (let k = 0; k <= n && out < stop; k++) planes[out++] = frame[pos++];
      } else if (n !== -128) {
        const v = frame[pos++];
        for (let k = 0; k < 1 - n && out < stop; k++) planes[out++] = v;
      }
    }
  }
  // Reassemble: sample c, byte b (0 = most significant) is segment c * bytesPer + b.
  const out = new Uint8Array(pixels * segments);
  for (let c = 0; c < image.samples; c++) {
    for (let b = 0; b < bytesPer; b++) {
      const seg = planes.subarray((c * bytesPer + b) * pixels);
      const shift = bytesPer - 1 - b; // little-endian byte index within the sample
      for (let i = 0; i < pixels; i++) out[(i * image.samples + c) * bytesPer + shift] = seg[i];
    }
  }
  return out;
}

/**
 * Decode one frame to samples: {pixels: TypedArray, samples, planar, colorSpace}.
 * colorSpace is the photometric interpretation of the decoded values ("RGB" once a codec
 * converted YCbCr).
 */
export async function decodeFrame(frame, image) {
  const syntax = SYNTAXES[image.transferSyntax];
  if (!syntax) throw new Unsupported(`transfer syntax ${image.transferSyntax} is not supported`);
  let bytes;
  let planar = image.planar;
  let colorSpace = image.photometric;
  switch (syntax.kind) {
    case "native":
      bytes = image.transferSyntax === "1.2.840.10008.1.2.2" && image.bitsAllocated === 16 ? swap16(frame) : frame;
      break;
    case "rle":
      bytes = decodeRle(frame, image);
      planar = 0;
      break;
    case "jpeg-lossless": {
      const d = new LosslessDecoder();
      const out = d.decode(frame.buffer, frame.byteOffset, frame.byteLength, image.bitsAllocated > 8 ? 2 : 1);
      bytes = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
      planar = 0;
      break;
    }
    case "jpeg": {
      if (image.bitsStored > 8) throw new Unsupported("12-bit JPEG Extended is not supported");
      const r = viaEmscripten(await wasmModule("turbo", turboFactory, turboWasm), "JPEGDecoder", frame);
      bytes = r.bytes;
      planar = 0;
      if (image.samples === 3) colorSpace = "RGB"; // libjpeg-turbo converts YCbCr to RGB
      break;
    }
    case "jpeg-ls": {
      const r = viaEmscripten(await wasmModule("charls", charlsFactory, charlsWasm), "JpegLSDecoder", frame);
      bytes = r.bytes;
      planar = 0;
      break;
    }
    case "j2k": {
      const r = viaEmscripten(await wasmModule("openjpeg", openjpegFactory, openjpegWasm), "J2KDecoder", frame);
      bytes = r.bytes;
      planar = 0;
      if (image.samples === 3) colorSpace = "RGB"; // YBR_ICT / YBR_RCT come out as RGB
      break;
    }
    default:
      throw new Unsupported(`transfer syntax ${image.transferSyntax} is not supported`);
  }
  let pixels = typed(bytes, image.bitsAllocated, image.signed && image.samples === 1);
  if (image.samples === 1) pixels = fitBitsStored(pixels, image);
  const expected = image.rows * image.columns * image.samples;
  if (pixels.length < expected) throw new Error(`frame holds ${pixels.length} of ${expected} samples`);
  return { pixels, planar, colorSpace };
}
