// From the chosen folder to patient -> studies -> series -> instances. The DICOMDIR (PS3.10
// 8.6, PS3.3 F.5) names every file; without one, every file's header is read instead.
import * as dicomParser from "dicom-parser";
import { decoderOf, describe, parse, personName, readHeader, text } from "./dicom.js";

/** Files from <input webkitdirectory> or a drop: [{path: "DISC/DICOM/...", file}]. */
export function fromFileList(list) {
  return Array.from(list, (file) => ({ path: file.webkitRelativePath || file.name, file }));
}

export async function fromDrop(items) {
  const out = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      out.push({ path: prefix + entry.name, file });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  };
  const entries = Array.from(items, (i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  for (const entry of entries) await walk(entry, "");
  return out;
}

const norm = (p) => p.replace(/\\/g, "/").toUpperCase();

function dicomdirOf(files) {
  const candidates = files.filter((f) => /(^|\/)DICOMDIR$/i.test(f.path));
  candidates.sort((a, b) => a.path.split("/").length - b.path.split("/").length);
  return candidates[0];
}

function newStudy(uid, attrs) {
  return { uid, date: "", description: "", series: new Map(), ...attrs };
}

function newSeries(uid, attrs) {
  return { uid, modality: "", description: "", number: null, instances: [], notes: [], ...attrs };
}

/** The DICOMDIR's records as a tree, walked by offsets (PS3.3 F.3.2.1: 0004,1400 next,
 * 0004,1420 lower level; offsets count from the file's first byte). */
function records(ds) {
  const seq = ds.elements.x00041220;
  if (!seq || !seq.items) throw new Error("DICOMDIR without directory records");
  const byOffset = new Map();
  for (const item of seq.items) byOffset.set(item.dataOffset - 8, item.dataSet);
  const walk = (offset, seen) => {
    const out = [];
    while (offset && byOffset.has(offset) && !seen.has(offset)) {
      seen.add(offset);
      const rec = byOffset.get(offset);
      out.push({ rec, children: walk(rec.uint32("x00041420"), seen) });
      offset = rec.uint32("x00041400");
    }
    return out;
  };
  const root = ds.uint32("x00041200");
  const tree = walk(root, new Set());
  if (tree.length) return tree;
  // Offsets missing or wrong: fall back to the records' order, each under the last above.
  const level = { PATIENT: 0, STUDY: 1, SERIES: 2 };
  const top = [];
  const stack = [];
  for (const item of seq.items) {
    const node = { rec: item.dataSet, children: [] };
    const depth = level[(item.dataSet.string("x00041430") || "").trim()] ?? 3;
    stack.length = depth;
    (depth === 0 || !stack[depth - 1] ? top : stack[depth - 1].children).push(node);
    stack[depth] = node;
  }
  return top;
}

async function fromDicomdir(entry, files) {
  const ds = await parse(new Uint8Array(await entry.file.arrayBuffer()));
  const base = entry.path.slice(0, entry.path.length - "DICOMDIR".length);
  const byPath = new Map(files.map((f) => [norm(f.path), f]));
  const patient = { name: "", id: "" };
  const studies = new Map();
  const decoder = decoderOf(ds);
  for (const p of records(ds)) {
    if ((p.rec.string("x00041430") || "").trim() === "PATIENT") {
      patient.name ||= personName(text(p.rec, "x00100010", decoder));
      patient.id ||= text(p.rec, "x00100020", decoder);
    }
    for (const s of p.children) {
      const uid = s.rec.string("x0020000d") || `study${studies.size}`;
      const study = studies.get(uid) || newStudy(uid, {
        date: s.rec.string("x00080020") || "",
        description: text(s.rec, "x00081030", decoder),
      });
      studies.set(uid, study);
      for (const r of s.children) {
        const suid = r.rec.string("x0020000e") || `series${study.series.size}`;
        const series = study.series.get(suid) || newSeries(suid, {
          modality: r.rec.string("x00080060") || "",
          description: text(r.rec, "x0008103e", decoder),
          number: r.rec.intString("x00200011") ?? null,
        });
        study.series.set(suid, series);
        for (const leaf of r.children) {
          const id = leaf.rec.string("x00041500");
          if (!id) continue;
          const path = norm(base + id.split("\\").join("/"));
          const type = (leaf.rec.string("x00041430") || "").trim();
          const found = byPath.get(path);
          const number = leaf.rec.intString("x00200013");
          if (!found) {
            series.notes.push(`${id.split("\\").join("/")} is listed in the DICOMDIR but missing`);
            continue;
          }
          series.instances.push({
            file: found.file,
            path: found.path,
            number: Number.isNaN(number) ? null : number ?? null,
            image: type === "IMAGE" || !!leaf.rec.elements.x00280010,
            frames: leaf.rec.intString("x00280008") || null,
          });
        }
      }
    }
  }
  return { patient, studies: finish(studies) };
}

async function fromHeaders(files, progress) {
  const studies = new Map();
  const patient = { name: "", id: "" };
  const unreadable = [];
  let done = 0;
  const queue = files.filter((f) => !/(^|\/)(DICOMDIR|INDEX\.HTM|README\.TXT|VIEWER[^/]*)$/i.test(f.path)
    && !/(^|\/)(IHE_PDI|VIEWER)\//i.test(f.path));
  const worker = async () => {
    while (queue.length) {
      const f = queue.shift();
      try {
        const d = describe(await readHeader(f.file));
        patient.name ||= d.patientName;
        patient.id ||= d.patientId;
        const study = studies.get(d.studyUid) || newStudy(d.studyUid, { date: d.studyDate, description: d.studyDescription });
        studies.set(d.studyUid, study);
        const series = study.series.get(d.seriesUid) || newSeries(d.seriesUid, {
          modality: d.modality, description: d.seriesDescription, number: d.seriesNumber,
        });
        study.series.set(d.seriesUid, series);
        series.instances.push({ file: f.file, path: f.path, number: d.instanceNumber, image: d.hasPixels, frames: d.frames });
      } catch {
        unreadable.push(f.path);
      }
      if (++done % 50 === 0) progress?.(done, files.length);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return { patient, studies: finish(studies), unreadable };
}

function finish(studies) {
  const list = [...studies.values()].map((s) => ({ ...s, series: [...s.series.values()] }));
  for (const study of list) {
    study.series.sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9) || a.uid.localeCompare(b.uid));
    for (const series of study.series) {
      series.instances.sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9) || a.path.localeCompare(b.path));
    }
  }
  return list.sort((a, b) => a.date.localeCompare(b.date) || a.uid.localeCompare(b.uid));
}

/** The study tree of the chosen files: from the DICOMDIR, or from every file's header. */
export async function scan(files, progress) {
  const dir = dicomdirOf(files);
  if (dir) {
    try {
      return await fromDicomdir(dir, files);
    } catch (err) {
      console.warn("DICOMDIR unreadable, reading every file", err);
    }
  }
  return fromHeaders(files, progress);
}

export { dicomParser };
