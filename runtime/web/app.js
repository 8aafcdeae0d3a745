// The page: verifies the bundle, then annotates dropped or chosen photos in this browser.
import { Annotator } from "./annotator.js";
import { download, toCsv, toXmpZip } from "./export.js";
import { LabelMap } from "./labels.js";

const statusEl = document.getElementById("status");
const results = document.getElementById("results");

function setStatus(text, cls) {
  statusEl.textContent = text;
  statusEl.className = cls;
}

async function start() {
  const started = performance.now();
  const config = await (await fetch("/config.json", { cache: "no-store" })).json();
  const params = new URLSearchParams(location.search);
  let backends = (params.get("backend") || config.backends || "webgpu,wasm").split(",");
  // the WebGPU build only where an adapter exists; otherwise the smaller WebAssembly-only build
  const gpu = backends.includes("webgpu") && "gpu" in navigator && !!(await navigator.gpu.requestAdapter().catch(() => null));
  if (!gpu) backends = backends.filter((b) => b !== "webgpu");
  const ort = await import(gpu ? config.ort : config.ort_wasm);
  ort.env.wasm.wasmPaths = config.wasm_paths;
  // a link can carry these options: threads within the machine's cores, the beam within the server's cap
  const cores = navigator.hardwareConcurrency || 1;
  const asked = Math.trunc(Number(params.get("threads") || config.threads || 0));
  const threads = Number.isFinite(asked) && asked > 0 ? Math.min(asked, cores) : 0;
  ort.env.wasm.numThreads = crossOriginIsolated ? (threads || Math.min(cores, 4)) : 1;
  try {
    const annotator = await Annotator.load(ort, config.bundle, { schemaUrl: config.schema, backends });
    annotator.labelMap = await LabelMap.load(config.labels);
    const ms = performance.now();  // since navigation started: page, bundle fetched and verified, sessions created
    const m = annotator.manifest;
    setStatus(`ready: ${m.source.method || m.kind} bundle (${m.kind}, ${m.precision}, ${m.vocabulary.length} labels) on ${annotator.backend}; page ready in ${ms.toFixed(0)} ms (bundle ${(ms - started).toFixed(0)} ms)`, "ready");
    return { annotator, readyMs: ms, ort, config, options: pageOptions(params, config) };
  } catch (e) {
    setStatus(`error: ${e.message}`, "error");
    throw e;
  }
}

/** The decoding options of the page's URL (?beam=K), or the reason they are refused: a reason
 *  becomes each photo's error, so a link cannot make the page search a beam wider than the cap. */
function pageOptions(params, config) {
  const beam = params.get("beam");
  if (beam === null || beam === "") return {};
  const width = Number(beam);
  if (!Number.isInteger(width) || width < 1) return { refused: `?beam=${beam}: give a whole number of at least 1` };
  if (config.max_beam_width && width > config.max_beam_width) {
    return { refused: `?beam=${width} is more than this page's cap of ${config.max_beam_width} (corel-web --max-beam-width)` };
  }
  return { beamWidth: width };
}

function heatmap(canvas, weights) {
  const n = weights.length, side = Math.round(Math.sqrt(n));
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!weights.length || side * side !== n) return;
  const small = new OffscreenCanvas(side, side);
  const sctx = small.getContext("2d");
  const img = sctx.createImageData(side, side);
  const peak = Math.max(...weights) || 1;
  weights.forEach((w, i) => {
    const v = w / peak;
    img.data.set([255, Math.round(200 * (1 - v)), 0, Math.round(200 * v)], i * 4);
  });
  sctx.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
}

function card(file) {
  const el = document.createElement("div");
  el.className = "card";
  el.dataset.name = file.name;
  const frame = document.createElement("div");
  frame.className = "frame";
  const img = document.createElement("img");
  img.alt = file.name;
  img.src = URL.createObjectURL(file);
  img.onerror = () => img.remove();
  const overlay = document.createElement("canvas");
  frame.append(img, overlay);
  const title = document.createElement("p");
  title.className = "meta";
  title.textContent = file.name;
  el.append(frame, title);
  results.append(el);
  return { el, img, overlay };
}

function show(view, annotation, backend) {
  const list = document.createElement("ul");
  list.className = "labels";
  annotation.labels.forEach((label, i) => {
    const li = document.createElement("li");
    li.textContent = `${label} ${annotation.scores[i].toFixed(3)}`;
    li.dataset.label = label;
    if (annotation.attention.length) {
      li.classList.add("clickable");
      li.title = "show where the model looked for this label";
      li.onclick = () => {
        list.querySelectorAll("li").forEach((x) => x.classList.remove("active"));
        li.classList.add("active");
        view.overlay.width = view.img.naturalWidth || 224;
        view.overlay.height = view.img.naturalHeight || 224;
        heatmap(view.overlay, annotation.attention[i]);
      };
    }
    list.append(li);
  });
  const meta = document.createElement("p");
  meta.className = "meta";
  meta.textContent = `${annotation.ms.toFixed(1)} ms on ${backend}`;
  view.el.append(list, meta);
  view.el.dataset.labels = JSON.stringify(annotation.labels);
}

function fail(view, message) {
  view.el.classList.add("failed");
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = message;
  view.el.append(p);
}

const ready = start();
const shown = [];   // what the page shows, in order: what the export buttons write

async function annotateFiles(files) {
  const { annotator, config, options } = await ready;
  for (const file of files) {
    const view = card(file);
    try {
      if (options.refused) throw new Error(`${file.name}: ${options.refused}`);
      if (config.max_image_bytes && file.size > config.max_image_bytes) {
        throw new Error(`${file.name}: ${file.size.toLocaleString("en")} bytes is more than this page's limit of ${config.max_image_bytes.toLocaleString("en")}`);
      }
      const annotation = await annotator.annotateBlob(file, file.name, { beamWidth: options.beamWidth ?? null });
      show(view, annotation, annotator.backend);
      shown.push({ image: file.name, labels: annotation.labels, scores: annotation.scores });
    } catch (e) {
      const message = unreadable(file.name) || e.message;
      fail(view, message);
      shown.push({ image: file.name, error: message });
    }
    document.getElementById("exports").hidden = false;
  }
}

async function exportCsv() {
  download(toCsv(shown), "corel-annotate.csv", "text/csv");
}

async function exportXmp() {
  const { annotator } = await ready;
  const map = annotator.labelMap;
  download(toXmpZip(shown, map ? (name) => map.path(name) : undefined), "corel-annotate-xmp.zip", "application/zip");
}

document.getElementById("export-csv").addEventListener("click", exportCsv);
document.getElementById("export-xmp").addEventListener("click", exportXmp);

/** Formats browsers do not decode, said as such (other formats fail with the browser's own reason). */
function unreadable(name) {
  const ext = (name.match(/\.([^.]+)$/) || [])[1]?.toLowerCase();
  if (ext === "heic" || ext === "heif") return `${name}: this browser cannot read HEIC/HEIF photos; corel-infer reads them (pip install 'corel-annotate[heif]')`;
  if (["cr2", "cr3", "nef", "arw", "dng", "orf", "rw2", "raf"].includes(ext)) return `${name}: camera RAW files cannot be read here`;
  return null;
}

document.getElementById("files").addEventListener("change", (e) => annotateFiles([...e.target.files]));
const drop = document.getElementById("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); annotateFiles([...e.dataTransfer.files]); });

// For scripted use (tests, corel-bench browser): the same code paths as the page.
window.corel = {
  ready,
  annotateFiles,
  async fetchBlob(url) { const r = await fetch(url); if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`); return r.blob(); },
  async preprocessUrl(url) { const { annotator } = await ready; return Array.from(await annotator.preprocess(await this.fetchBlob(url), url)); },
  async annotateUrl(url, options = {}) { const { annotator } = await ready; return annotator.annotateBlob(await this.fetchBlob(url), url, options); },
  /** Milliseconds of each of ``repeats`` encoder runs at batch 1 on the photo at ``url`` (after ``warmup`` runs). */
  async timeEncoder(url, repeats = 30, warmup = 5) {
    const { annotator } = await ready;
    const x = await annotator.preprocess(await this.fetchBlob(url), url);
    for (let i = 0; i < warmup; i++) await annotator.encode(x, 1);
    const out = [];
    for (let i = 0; i < repeats; i++) { const t = performance.now(); await annotator.encode(x, 1); out.push(performance.now() - t); }
    return out;
  },
};
