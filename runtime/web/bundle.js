// Loading a bundle over HTTP: manifest.json checked against the JSON Schema and the manifest's
// cross-field rules, then every graph fetched and its sha256 compared with the manifest's.
import { validate } from "./schema.js";

export const FORMAT = "corel-annotate/bundle";
export const FORMAT_VERSION = 4;
// Version 3 adds the optional memory section (and memory graph); a version-2 manifest is a version-3 one without it.
// Version 4 adds preprocess.input_dtype (uint8: NHWC pixels, normalised in the graph); a version-3 manifest is float32 NCHW.
export const READABLE_VERSIONS = [2, 3, 4];
const RESERVED = ["start", "stop"]; // the decoder's own tokens (runtime/bundle/vocabulary.py)

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

/** The cross-field rules of runtime/bundle/rules.py (the bounds and choices come with the schema), each
 * tagged with its rule id as runtime/bundle/manifest.py's checks are; returns the first broken one or null. */
export function checkManifest(m) {
  const V = m.vocabulary.length;
  if (m.format !== FORMAT) return `format is ${JSON.stringify(m.format)}, not ${FORMAT}`; // rule: format
  if (!READABLE_VERSIONS.includes(m.format_version)) { // rule: format
    return `format version ${m.format_version}; this runtime reads versions ${READABLE_VERSIONS.join(", ")} (re-export the checkpoint)`; // rule: format
  }
  const seen = new Set();
  for (const label of m.vocabulary) {
    if (!label || /\s/.test(label)) return `vocabulary label ${JSON.stringify(label)} is empty or contains white space`; // rule: vocabulary
    if (seen.has(label)) return `vocabulary label ${JSON.stringify(label)} appears twice`; // rule: vocabulary
    if (RESERVED.includes(label)) return `vocabulary label ${JSON.stringify(label)} is reserved for the decoder`; // rule: vocabulary
    seen.add(label);
  }
  if (V === 0) return "vocabulary is empty"; // rule: vocabulary
  const enc = m.graphs.encoder;
  if (!enc) return "no encoder graph"; // rule: encoder
  if (enc.inputs.length !== 1 || enc.inputs[0].name !== m.image_input) return `graphs.encoder: inputs ${JSON.stringify(enc.inputs.map((t) => t.name))}, expected [${JSON.stringify(m.image_input)}]`; // rule: encoder
  const size = m.preprocess.image_size;
  const layout = m.preprocess.layout ?? "NCHW", inputDtype = m.preprocess.input_dtype ?? "float32";
  const wanted = layout === "NHWC" ? [size, size, 3] : [3, size, size];
  const inShape = enc.inputs[0].shape;
  if (inShape.length !== 4 || wanted.some((want, i) => Number.isInteger(inShape[i + 1]) && inShape[i + 1] !== want)) {
    return `graphs.encoder: input shape ${JSON.stringify(inShape)} does not take [batch, ${wanted.join(", ")}] images (preprocess.layout ${layout})`; // rule: encoder
  }
  if (enc.inputs[0].dtype !== inputDtype) return `graphs.encoder: input dtype ${enc.inputs[0].dtype}, but preprocess.input_dtype is ${inputDtype}`; // rule: encoder
  for (const [name, g] of Object.entries(m.graphs)) {
    for (const t of [...g.inputs, ...g.outputs]) {
      if (t.shape.some((d) => Number.isInteger(d) && d < 0)) return `graphs.${name}: ${t.name} has a negative dimension`; // rule: tensors
    }
    for (const side of [g.inputs, g.outputs]) {
      if (new Set(side.map((t) => t.name)).size !== side.length) return `graphs.${name}: a tensor name appears twice`; // rule: tensors
    }
  }
  const refused = m.kind === "scores" ? checkScores(m, V) : checkSequence(m, V);
  if (refused) return refused;
  const memory = checkMemory(m, V);
  if (memory) return memory;
  const fileRule = (file) => (!(file in m.files) ? `files: no sha256 recorded for ${file}`
    : (file.includes("/") || file.includes("\\") || file.startsWith(".")) ? `file ${file} is outside the bundle` : null);
  for (const g of Object.values(m.graphs)) {
    const problem = fileRule(g.file);
    if (problem) return `graphs: ${problem}`; // rule: files
  }
  for (const [name, engine] of Object.entries(m.engines || {})) {
    if (!(name in m.graphs) || typeof engine.file !== "string") return `engines.${name}: needs a graph of that name and a file`; // rule: engines
    const problem = fileRule(engine.file);
    if (problem) return `engines: ${problem}`; // rule: files
  }
  return null;
}

const graphNames = (m) => Object.keys(m.graphs).filter((name) => name !== "memory").sort().join(",");
const outputShape = (graph, name) => graph.outputs.find((t) => t.name === name).shape;
const widthIs = (shape, want) => shape.length === 2 && (!Number.isInteger(shape[1]) || shape[1] === want);

function checkScores(m, V) {
  const s = m.scoring;
  if (!s || m.sequence) return "a scores bundle needs scoring and no sequence section"; // rule: kind
  if (graphNames(m) !== "encoder") return `a scores bundle has one graph, encoder, and may have memory (got ${Object.keys(m.graphs).sort().join(", ")})`; // rule: kind
  if (!m.graphs.encoder.outputs.some((t) => t.name === s.logits_output)) return `scoring.logits_output ${s.logits_output} is not an encoder output`; // rule: logits
  // with a memory the logits cover only the labels the encoder was trained on (the memory scores the rest)
  const head = m.memory ? m.memory.head_labels : V;
  const shape = outputShape(m.graphs.encoder, s.logits_output);
  if (!widthIs(shape, head)) return `scoring.logits_output shape ${JSON.stringify(shape)}, expected [batch, ${head}]`; // rule: logits
  if (s.thresholds.length !== V) return `scoring.thresholds has ${s.thresholds.length} values for ${V} labels`; // rule: thresholds
  if ((s.min_labels ?? 0) > V) return `scoring.min_labels ${s.min_labels}; between 0 and ${V}`; // rule: scoring-min-labels
  return null;
}

function checkSequence(m, V) {
  const s = m.sequence;
  if (!s || m.scoring) return "a sequence bundle needs sequence and no scoring section"; // rule: kind
  if (graphNames(m) !== "decoder_step,encoder") return `a sequence bundle has encoder and decoder_step graphs, and may have memory (got ${Object.keys(m.graphs).sort().join(", ")})`; // rule: kind
  const step = m.graphs.decoder_step;
  const encOut = new Set(m.graphs.encoder.outputs.map((t) => t.name));
  const fed = [s.token_input, ...Object.values(s.state), ...s.constants];
  const stepIn = step.inputs.map((t) => t.name);
  if (new Set(fed).size !== fed.length) return `sequence: the token, state and constant inputs overlap`; // rule: step-inputs
  if ([...stepIn].sort().join("\u0000") !== [...fed].sort().join("\u0000")) return `sequence: decoder_step inputs ${JSON.stringify(stepIn)} are not the token input, the state's inputs and the constants`; // rule: step-inputs
  const token = step.inputs.find((t) => t.name === s.token_input);
  if (token.dtype !== "int64" || token.shape.length !== 1) return `sequence.token_input ${s.token_input} must be a [batch] int64 input`; // rule: step-inputs
  const stepOut = step.outputs.map((t) => t.name);
  const needed = [s.log_probs_output, ...Object.keys(s.state), ...(s.attention_output ? [s.attention_output] : [])];
  const missing = needed.find((name) => !stepOut.includes(name));
  if (missing !== undefined) return `sequence: decoder_step has no output ${JSON.stringify(missing)}`; // rule: step-outputs
  if (new Set(needed).size !== needed.length) return "sequence: the log-probability, state and attention outputs overlap"; // rule: step-outputs
  const unfed = [...Object.values(s.state), ...s.constants].find((name) => !encOut.has(name));
  if (unfed !== undefined) return `sequence: the encoder has no output ${JSON.stringify(unfed)} for the decoder input of that name`; // rule: state
  const shape = outputShape(step, s.log_probs_output);
  if (!widthIs(shape, V + 1)) return `sequence.log_probs_output shape ${JSON.stringify(shape)}, expected [batch, ${V + 1}]`; // rule: log-probs
  if (s.stop_id !== V || s.start_id !== V + 1) return `sequence: stop_id ${s.stop_id} and start_id ${s.start_id} must be ${V} and ${V + 1}`; // rule: stop-start
  const d = s.decoding;
  if (d.min_labels > d.max_len) return `sequence.decoding: min_labels ${d.min_labels} is more than max_len ${d.max_len}`; // rule: decoding-min-labels
  if (d.forbid_repeat && d.min_labels > V) return `sequence.decoding: min_labels ${d.min_labels} needs that many labels without repeats; the bundle has ${V}`; // rule: decoding-min-labels
  return null;
}

const sameShape = (a, b) => a.length === b.length && a.every((d, i) => d === b[i]);

/** The label memory's rules (runtime/bundle/manifest.py's _check_memory): its graph and tensors. */
function checkMemory(m, V) {
  const mem = m.memory;
  if (mem === undefined || mem === null) return m.graphs.memory ? "graphs.memory: a memory graph needs a memory section" : null; // rule: memory-present
  const graph = m.graphs.memory;
  if (!graph) return "memory: the bundle has no memory graph"; // rule: memory-present
  const embedding = m.graphs.encoder.outputs.find((t) => t.name === mem.embedding_output);
  if (!embedding) return `memory.embedding_output ${mem.embedding_output} is not an encoder output`; // rule: memory-io
  if (graph.inputs.length !== 1 || graph.inputs[0].name !== mem.embedding_output) {
    return `graphs.memory: inputs ${JSON.stringify(graph.inputs.map((t) => t.name))}, expected [${JSON.stringify(mem.embedding_output)}]`; // rule: memory-io
  }
  const scores = graph.outputs.find((t) => t.name === mem.scores_output);
  if (!scores) return `memory.scores_output ${mem.scores_output} is not a memory graph output`; // rule: memory-io
  if (!widthIs(scores.shape, V)) return `memory.scores_output shape ${JSON.stringify(scores.shape)}, expected [batch, ${V}]`; // rule: memory-io
  if (!sameShape(embedding.shape.slice(1), graph.inputs[0].shape.slice(1))) return "graphs.memory: its input does not take the encoder's embedding shape"; // rule: memory-io
  if (mem.k > mem.examples) return `memory: k ${mem.k} must be between 1 and the ${mem.examples} examples`; // rule: memory-k
  if (mem.head_labels > V || (m.kind === "sequence" && mem.head_labels !== V)) {
    return `memory.head_labels ${mem.head_labels}; between 1 and ${V} (all ${V} for a sequence bundle)`; // rule: memory-head
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
