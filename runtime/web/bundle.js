// Loading a bundle over HTTP: manifest.json checked against the JSON Schema and the manifest's
// cross-field rules, then every graph fetched and its sha256 compared with the manifest's.
import { validate } from "./schema.js";

export const FORMAT = "corel-annotate/bundle";
export const FORMAT_VERSION = 2;

async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url, { cache: "no-store" });
  } catch (e) {
    throw new Error(`${what}: cannot fetch (${e.message || e})`);
  }
  if (!response.ok) throw new Error(`${what}: HTTP ${response.status}`);
  return response;
}

export async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The rules the schema cannot say (the same as runtime/manifest.py's check()). */
export function checkManifest(m) {
  const V = m.vocabulary.length;
  if (m.format !== FORMAT) return `format is ${JSON.stringify(m.format)}, not ${FORMAT}`;
  if (m.format_version !== FORMAT_VERSION) {
    return `format version ${m.format_version}; this runtime reads version ${FORMAT_VERSION} (re-export the checkpoint)`;
  }
  if (!m.graphs.encoder) return "no encoder graph";
  for (const [name, g] of Object.entries(m.graphs)) {
    if (!(g.file in m.files)) return `graph ${name}: its file ${g.file} has no sha256 in files`;
    if (g.file.includes("/") || g.file.includes("\\") || g.file.startsWith(".")) return `graph ${name}: file ${g.file} is outside the bundle`;
  }
  if (!m.graphs.encoder.inputs.some((t) => t.name === m.image_input)) return `image_input ${m.image_input} is not an encoder input`;
  const encOut = new Set(m.graphs.encoder.outputs.map((t) => t.name));
  if (m.kind === "scores") {
    if (!m.scoring || m.sequence) return "a scores bundle needs scoring and no sequence section";
    if (m.scoring.thresholds.length !== V) return `scoring.thresholds has ${m.scoring.thresholds.length} values for ${V} labels`;
    if (!encOut.has(m.scoring.logits_output)) return `scoring.logits_output ${m.scoring.logits_output} is not an encoder output`;
  } else {
    const s = m.sequence;
    if (!s || m.scoring) return "a sequence bundle needs sequence and no scoring section";
    if (!m.graphs.decoder_step) return "a sequence bundle needs a decoder_step graph";
    if (s.stop_id !== V) return `sequence.stop_id ${s.stop_id} should be ${V} (the vocabulary size)`;
    if (s.start_id !== V + 1) return `sequence.start_id ${s.start_id} should be ${V + 1}`;
    const stepIn = new Set(m.graphs.decoder_step.inputs.map((t) => t.name));
    const stepOut = new Set(m.graphs.decoder_step.outputs.map((t) => t.name));
    if (!stepIn.has(s.token_input)) return `sequence.token_input ${s.token_input} is not a decoder_step input`;
    if (!stepOut.has(s.log_probs_output)) return `sequence.log_probs_output ${s.log_probs_output} is not a decoder_step output`;
    for (const [out, inp] of Object.entries(s.state)) {
      if (!stepOut.has(out) || !stepIn.has(inp) || !encOut.has(inp)) return `sequence.state ${out} -> ${inp} does not connect the graphs`;
    }
    for (const c of s.constants) if (!stepIn.has(c) || !encOut.has(c)) return `sequence.constants ${c} is not an encoder output and decoder_step input`;
    const d = s.decoding;
    if (d.beam_width < 1 || d.max_len < 1 || d.min_labels < 0 || d.min_labels > d.max_len) return "sequence.decoding: bad beam_width, max_len or min_labels";
  }
  return null;
}

/** Fetch and verify a bundle: returns {manifest, graphs: {name: Uint8Array}, url}. Throws one-line errors. */
export async function loadBundle(url, schemaUrl) {
  const base = url.endsWith("/") ? url : url + "/";
  const text = await (await fetchOk(base + "manifest.json", `${base}manifest.json`)).text();
  let manifest;
  try {
    manifest = JSON.parse(text);
  } catch (e) {
    throw new Error(`${base}manifest.json: not JSON (${e.message})`);
  }
  const schema = await (await fetchOk(schemaUrl, schemaUrl)).json();
  const problem = validate(schema, manifest) || checkManifest(manifest);
  if (problem) throw new Error(`${base}manifest.json: ${problem}`);
  const graphs = {};
  for (const [name, g] of Object.entries(manifest.graphs)) {
    const buffer = await (await fetchOk(base + g.file, `${base}${g.file}`)).arrayBuffer();
    const digest = await sha256Hex(buffer);
    if (digest !== manifest.files[g.file]) {
      throw new Error(`${base}${g.file}: sha256 ${digest.slice(0, 12)}… does not match the manifest (${manifest.files[g.file].slice(0, 12)}…); the bundle was modified`);
    }
    graphs[name] = new Uint8Array(buffer);
  }
  return { manifest, graphs, url: base };
}
