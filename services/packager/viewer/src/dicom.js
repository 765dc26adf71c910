// Reading Part 10 files (PS3.10 7) with dicom-parser: headers, the image pixel module
// (PS3.3 C.7.6.3) and the bytes of one frame, native or encapsulated (PS3.5 A.4).
import * as dicomParser from "dicom-parser";
import { Unsupported } from "./codecs.js";

const DEFLATED = "1.2.840.10008.1.2.1.99";
const HEADER_PROBE = 16 * 1024; // nearly every header; a longer one is read whole

async function inflateRaw(bytes) {
  const run = async (b) => {
    const stream = new Blob([b]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  };
  try {
    return await run(bytes);
  } catch (err) {
    // The Value of the deflated stream is padded to an even length (PS3.5 A.5, 7.1): a
    // trailing zero after the end of the stream is not an error.
    if (bytes.length && bytes[bytes.length - 1] === 0) return run(bytes.subarray(0, bytes.length - 1));
    throw err;
  }
}

/** Parse a whole file (or its first bytes with untilPixels), inflating a deflated dataset.
 * The File Meta Information is parsed a second time only for a deflated file. */
export async function parse(bytes, { untilPixels = false } = {}) {
  const options = untilPixels ? { untilTag: "x7fe00010" } : {};
  try {
    return dicomParser.parseDicom(bytes, options);
  } catch (err) {
    const meta = dicomParser.readPart10Header(bytes);
    if (meta.string("x00020010") !== DEFLATED) throw err;
    const start = metaEnd(meta);
    const body = await inflateRaw(bytes.subarray(start));
    const whole = new Uint8Array(start + body.length);
    whole.set(bytes.subarray(0, start));
    whole.set(body, start);
    options.inflater = () => whole;
    return dicomParser.parseDicom(bytes, options);
  }
}

function metaEnd(meta) {
  let end = 0;
  for (const el of Object.values(meta.elements)) end = Math.max(end, el.dataOffset + el.length);
  return end;
}

/** The header of a File (a File or Blob): the first bytes, all of it if the probe is short. */
export async function readHeader(file) {
  const probe = new Uint8Array(await file.slice(0, HEADER_PROBE).arrayBuffer());
  try {
    const ds = await parse(probe, { untilPixels: true });
    if (ds.string("x00080018") !== undefined || file.size <= HEADER_PROBE) return ds;
  } catch (err) {
    if (file.size <= HEADER_PROBE) throw err;
  }
  return parse(new Uint8Array(await file.arrayBuffer()), { untilPixels: true });
}

// Specific Character Set (0008,0005; PS3.3 C.12.1.1.2) to a TextDecoder label. Code
// extensions (ISO 2022 escapes) are approximated by the base repertoire's decoder.
const CHARSETS = {
  "ISO_IR 100": "iso-8859-1", "ISO_IR 101": "iso-8859-2", "ISO_IR 109": "iso-8859-3",
  "ISO_IR 110": "iso-8859-4", "ISO_IR 144": "iso-8859-5", "ISO_IR 127": "iso-8859-6",
  "ISO_IR 126": "iso-8859-7", "ISO_IR 138": "iso-8859-8", "ISO_IR 148": "iso-8859-9",
  "ISO_IR 203": "iso-8859-15", "ISO_IR 166": "windows-874", "ISO_IR 192": "utf-8",
  "ISO_IR 13": "shift_jis", "ISO 2022 IR 13": "shift_jis", "ISO 2022 IR 87": "iso-2022-jp",
  "ISO 2022 IR 149": "euc-kr", "ISO 2022 IR 58": "gb18030", GB18030: "gb18030", GBK: "gbk",
  "ISO 2022 IR 100": "iso-8859-1", "ISO 2022 IR 6": "windows-1252",
};

export function decoderOf(ds) {
  const terms = (ds.string("x00080005") || "").split("\\").map((t) => t.trim()).filter(Boolean);
  const label = terms.map((t) => CHARSETS[t]).find(Boolean) || "windows-1252";
  try {
    return new TextDecoder(label);
  } catch {
    return new TextDecoder("windows-1252");
  }
}

/** A text value (SH, LO, PN, ...) decoded in the dataset's character set, trimmed. */
export function text(ds, tag, decoder = decoderOf(ds)) {
  const el = ds.elements[tag];
  if (!el || !el.length) return "";
  const bytes = ds.byteArray.subarray(el.dataOffset, el.dataOffset + el.length);
  return decoder.decode(bytes).replace(/[\0 ]+$/, "").trim();
}

const num = (ds, tag, i = 0) => {
  const v = ds.floatString(tag, i);
  return v === undefined || Number.isNaN(v) ? undefined : v;
};

/** Patient Name (PN, PS3.5 6.2): the alphabetic group as "prefix given middle family
 * suffix", the order INDEX.HTM uses. */
export function personName(value) {
  const [family, given, middle, prefix, suffix] = (value || "").split("=")[0].split("^");
  return [prefix, given, middle, family, suffix].map((p) => (p || "").trim()).filter(Boolean).join(" ");
}

export function describe(ds) {
  const dec = decoderOf(ds);
  const int = (tag) => {
    const v = ds.intString(tag);
    return v === undefined || Number.isNaN(v) ? null : v;
  };
  return {
    sopUid: ds.string("x00080018") || "",
    sopClass: ds.string("x00080016") || "",
    studyUid: ds.string("x0020000d") || "",
    seriesUid: ds.string("x0020000e") || "",
    patientName: personName(text(ds, "x00100010", dec)),
    patientId: text(ds, "x00100020", dec),
    studyDate: ds.string("x00080020") || "",
    studyDescription: text(ds, "x00081030", dec),
    seriesDescription: text(ds, "x0008103e", dec),
    modality: ds.string("x00080060") || "",
    seriesNumber: int("x00200011"),
    instanceNumber: int("x00200013"),
    frames: int("x00280008") || 1,
    hasPixels: !!ds.elements.x7fe00010 || (ds.uint16("x00280010") > 0 && !!ds.uint16("x00280011")),
    position: ds.string("x00200032") || "",
  };
}

/** The Image Pixel module and the modality and VOI LUT values the renderer needs. */
export function imageInfo(ds) {
  const photometric = (ds.string("x00280004") || "MONOCHROME2").trim();
  const info = {
    transferSyntax: ds.string("x00020010") || "1.2.840.10008.1.2",
    rows: ds.uint16("x00280010"),
    columns: ds.uint16("x00280011"),
    samples: ds.uint16("x00280002") || 1,
    bitsAllocated: ds.uint16("x00280100"),
    bitsStored: ds.uint16("x00280101") || ds.uint16("x00280100"),
    signed: ds.uint16("x00280103") === 1,
    planar: ds.uint16("x00280006") || 0,
    photometric,
    frames: ds.intString("x00280008") || 1,
    slope: num(ds, "x00281053") ?? 1,
    intercept: num(ds, "x00281052") ?? 0,
    windowCenter: num(ds, "x00281050"),
    windowWidth: num(ds, "x00281051"),
    modality: ds.string("x00080060") || "",
    palette: photometric === "PALETTE COLOR" ? palette(ds) : null,
  };
  if (!info.rows || !info.columns || !info.bitsAllocated) throw new Unsupported("no image in this file");
  return info;
}

/** Palette Color LUTs (PS3.3 C.7.6.3.1.5): descriptor [entries, first mapped, bits]. */
function palette(ds) {
  const lut = (c) => {
    const d = ds.elements[`x0028110${c}`];
    const data = ds.elements[`x0028120${c}`];
    if (!d || !data) throw new Unsupported("palette colour without its lookup tables");
    const entries = ds.uint16(`x0028110${c}`, 0) || 65536;
    const first = ds.uint16(`x0028110${c}`, 1);
    const bits = ds.uint16(`x0028110${c}`, 2);
    const bytes = ds.byteArray.subarray(data.dataOffset, data.dataOffset + data.length);
    const values = bits === 8 && bytes.length === entries ? Array.from(bytes)
      : Array.from({ length: entries }, (_, i) => (bytes[2 * i] | (bytes[2 * i + 1] << 8)) >> (bits > 8 ? bits - 8 : 0));
    return { first, values };
  };
  return { r: lut(1), g: lut(2), b: lut(3) };
}

/** The bytes of frame `index` (0-based): native (PS3.5 8.1) or encapsulated (PS3.5 A.4). */
export function frameBytes(ds, image, index) {
  const el = ds.elements.x7fe00010;
  if (!el) throw new Unsupported("no pixel data in this file");
  if (el.encapsulatedPixelData) {
    if (el.basicOffsetTable.length || image.frames === 1) {
      return image.frames === 1 && !el.basicOffsetTable.length
        ? dicomParser.readEncapsulatedPixelDataFromFragments(ds, el, 0, el.fragments.length)
        : dicomParser.readEncapsulatedImageFrame(ds, el, index);
    }
    if (el.fragments.length === image.frames) {
      return dicomParser.readEncapsulatedPixelDataFromFragments(ds, el, index, 1);
    }
    const table = dicomParser.createJPEGBasicOffsetTable(ds, el);
    return dicomParser.readEncapsulatedImageFrame(ds, el, index, table);
  }
  const frameSize = (image.rows * image.columns * image.samples * image.bitsAllocated) / 8;
  const start = el.dataOffset + frameSize * index;
  if (start + frameSize > ds.byteArray.length) throw new Error("the file ends inside its pixel data");
  return ds.byteArray.subarray(start, start + frameSize);
}
