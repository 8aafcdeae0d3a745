// Loading a bundle over HTTP: manifest.json checked against the JSON Schema and the manifest's
// cross-field rules, then every graph fetched and its sha256 compared with the manifest's.
import { validate } from "./schema.js";

export const FORMAT = "corel-annotate/bundle";
export const FORMAT_VERSION = 3;
// Version 3 adds the optional memory section (and memory graph); a version-2 manifest is a version-3 one without it.
export const READABLE_VERSIONS = [2, 3];

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

/** The rules the schema cannot say (the same as runtime/bundle/manifest.py's check()). */
export function checkManifest(m) {
  const V = m.vocabulary.length;
  if (m.format !== FORMAT) return `format is ${JSON.stringify(m.format)}, not ${FORMAT}`;
  if (!READABLE_VERSIONS.includes(m.format_version)) {
    return `format version ${m.format_version}; this runtime reads versions ${READABLE_VERSIONS.join(", ")} (re-export the checkpoint)`;
  }
  if (!m.graphs.encoder) return "no encoder graph";
  for (const [name, g] of Object.entries(m.graphs)) {
    if (!(g.file in m.files)) return `graph ${name}: its file ${g.file} has no sha256 in files`;
    if (g.file.includes("/") || g.file.includes("\\") || g.file.startsWith(".")) return `graph ${name}: file ${g.file} is outside the bundle`;
  }
  if (!m.graphs.encoder.inputs.some((t) => t.name === m.image_input)) return `image_input ${m.image_input} is not an encoder input`;
  const encOut = new Set(m.graphs.encoder.outputs.map((t) => t.name));
  const methodGraphs = Object.keys(m.graphs).filter((name) => name !== "memory").sort().join(",");
  if (m.kind === "scores") {
    if (!m.scoring || m.sequence) return "a scores bundle needs scoring and no sequence section";
    if (methodGraphs !== "encoder") return `a scores bundle has one graph, encoder, and may have memory (got ${Object.keys(m.graphs).sort().join(", ")})`;
    if (m.scoring.thresholds.length !== V) return `scoring.thresholds has ${m.scoring.thresholds.length} values for ${V} labels`;
    if (!encOut.has(m.scoring.logits_output)) return `scoring.logits_output ${m.scoring.logits_output} is not an encoder output`;
    // with a memory the logits cover only the labels the encoder was trained on (the memory scores the rest)
    const head = m.memory ? m.memory.head_labels : V;
    const shape = m.graphs.encoder.outputs.find((t) => t.name === m.scoring.logits_output).shape;
    if (shape.length !== 2 || (Number.isInteger(shape[1]) && shape[1] !== head)) {
      return `scoring.logits_output shape ${JSON.stringify(shape)}, expected [batch, ${head}]`;
    }
  } else {
    const s = m.sequence;
    if (!s || m.scoring) return "a sequence bundle needs sequence and no scoring section";
    if (!m.graphs.decoder_step) return "a sequence bundle needs a decoder_step graph";
    if (methodGraphs !== "decoder_step,encoder") return `a sequence bundle has encoder and decoder_step graphs, and may have memory (got ${Object.keys(m.graphs).sort().join(", ")})`;
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
  return checkMemory(m, V);
}

const sameShape = (a, b) => a.length === b.length && a.every((d, i) => d === b[i]);

/** The label memory's rules (runtime/bundle/manifest.py's _check_memory): its graph, tensors and settings. */
function checkMemory(m, V) {
  const mem = m.memory;
  if (mem === undefined || mem === null) return m.graphs.memory ? "graphs.memory: a memory graph needs a memory section" : null;
  const graph = m.graphs.memory;
  if (!graph) return "memory: the bundle has no memory graph";
  const embedding = m.graphs.encoder.outputs.find((t) => t.name === mem.embedding_output);
  if (!embedding) return `memory.embedding_output ${mem.embedding_output} is not an encoder output`;
  if (graph.inputs.length !== 1 || graph.inputs[0].name !== mem.embedding_output) {
    return `graphs.memory: inputs ${JSON.stringify(graph.inputs.map((t) => t.name))}, expected [${JSON.stringify(mem.embedding_output)}]`;
  }
  const scores = graph.outputs.find((t) => t.name === mem.scores_output);
  if (!scores) return `memory.scores_output ${mem.scores_output} is not a memory graph output`;
  if (scores.shape.length !== 2 || (Number.isInteger(scores.shape[1]) && scores.shape[1] !== V)) {
    return `memory.scores_output shape ${JSON.stringify(scores.shape)}, expected [batch, ${V}]`;
  }
  if (!sameShape(embedding.shape.slice(1), graph.inputs[0].shape.slice(1))) return "graphs.memory: its input does not take the encoder's embedding shape";
  if (mem.examples < 1 || mem.k < 1 || mem.k > mem.examples) return `memory: k ${mem.k} must be between 1 and the ${mem.examples} examples`;
  if (!(mem.temperature > 0) || !(mem.weight >= 0 && mem.weight <= 1)) {
    return `memory: temperature ${mem.temperature} must be > 0 and weight ${mem.weight} in [0, 1]`;
  }
  if (mem.head_labels < 1 || mem.head_labels > V || (m.kind === "sequence" && mem.head_labels !== V)) {
    return `memory.head_labels ${mem.head_labels}; between 1 and ${V} (all ${V} for a sequence bundle)`;
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
