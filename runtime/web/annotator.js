// A bundle in the browser: verified graphs in onnxruntime-web sessions, driven from the manifest alone.
import { loadBundle } from "./bundle.js";
import { decode } from "./decoding.js";
import { preprocessBlob } from "./preprocess.js";

function tensorOf(ort, dtype, data, dims) {
  if (dtype === "int64" && !(data instanceof BigInt64Array)) data = BigInt64Array.from(data, (v) => BigInt(v));
  return new ort.Tensor(dtype, data, dims);
}

/** Recurrent rows [R, ...] and per-image constants [B, ...], gathered by each row's image. */
class DecoderState {
  constructor(rows, image, constants) {
    this.rows = rows;       // name -> {data, dims, dtype}
    this.image = image;     // Int32Array: the image of each row
    this.constants = constants;
  }
  get numRows() { return this.image.length; }
  static gather(t, index) {
    const per = t.dims.slice(1).reduce((x, y) => x * y, 1);
    const data = new t.data.constructor(index.length * per);
    index.forEach((src, i) => data.set(t.data.subarray(src * per, (src + 1) * per), i * per));
    return { data, dims: [index.length, ...t.dims.slice(1)], dtype: t.dtype };
  }
  select(index) {
    const rows = {};
    for (const [k, v] of Object.entries(this.rows)) rows[k] = DecoderState.gather(v, index);
    return new DecoderState(rows, Int32Array.from(index, (i) => this.image[i]), this.constants);
  }
  inputs() {
    const out = { ...this.rows };
    const identity = this.image.length === (Object.values(this.constants)[0]?.dims[0] ?? -1) && this.image.every((v, i) => v === i);
    for (const [k, v] of Object.entries(this.constants)) out[k] = identity ? v : DecoderState.gather(v, Array.from(this.image));
    return out;
  }
}

function sigmoid(x) {
  return Math.fround(x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));
}

/** Score bundles with a memory (runtime/memory.py's blend_scores, in float32): ``(1 - w) * sigmoid(logit) + w * memory``
 * for the head's labels, the memory's score alone for the labels after them; [B, V]. */
export function blendScores(probs, memoryScores, count, memory) {
  const head = memory.head_labels, V = memoryScores.length / count;
  const w = Math.fround(memory.weight), keep = Math.fround(1 - w);
  const out = Float32Array.from(memoryScores);
  for (let i = 0; i < count; i++) {
    for (let j = 0; j < head; j++) {
      out[i * V + j] = Math.fround(Math.fround(keep * probs[i * head + j]) + Math.fround(w * memoryScores[i * V + j]));
    }
  }
  return out;
}

/** Sequence bundles (kNN-LM; runtime/memory.py's interpolate_log_probs, in float64): each row's step log-probabilities
 * [R, V + 1] mixed with the memory scores [B, V] of its image: log((1 - w) * p + w * q), where q keeps the step's stop
 * probability and shares the rest among the labels in proportion to the memory scores (a row whose memory scores are
 * all 0 keeps p); weight 0 returns logp unchanged. */
export function interpolateLogProbs(logp, memoryScores, image, weight) {
  if (weight === 0) return logp;
  const W = logp.length / image.length, V = W - 1;
  const out = new Float64Array(logp.length);
  const p = new Float64Array(W), q = new Float64Array(W);
  image.forEach((b, r) => {
    for (let i = 0; i < W; i++) q[i] = p[i] = Math.exp(logp[r * W + i]);
    let mass = 0;
    for (let j = 0; j < V; j++) mass += memoryScores[b * V + j];
    if (mass > 0) for (let j = 0; j < V; j++) q[j] = (1 - p[V]) * (memoryScores[b * V + j] / mass);
    for (let i = 0; i < W; i++) out[r * W + i] = Math.log((1 - weight) * p[i] + weight * q[i]);
  });
  return out;
}

export class Annotator {
  constructor(ort, bundle, sessions, backend) {
    this.ort = ort;
    this.manifest = bundle.manifest;
    this.url = bundle.url;
    this.sessions = sessions;
    this.backend = backend;
    this.vocabulary = bundle.manifest.vocabulary;
    this.memory = bundle.manifest.memory ?? null;
    // a sequence bundle whose memory weight is 0 decodes as without one: its memory graph is not run
    this.runMemory = !!this.memory && (this.manifest.kind === "scores" || this.memory.weight > 0);
  }

  /** Load and verify the bundle at ``url`` and create its sessions (WebGPU first when asked and available). */
  static async load(ort, url, { schemaUrl = "/schema/bundle.schema.json", backends = ["wasm"] } = {}) {
    const bundle = await loadBundle(url, schemaUrl);
    let lastError;
    for (const backend of backends) {
      if (backend === "webgpu" && !("gpu" in navigator)) continue;
      try {
        const sessions = {};
        for (const [name, bytes] of Object.entries(bundle.graphs)) {
          sessions[name] = await ort.InferenceSession.create(bytes, { executionProviders: [backend], graphOptimizationLevel: "all" });
        }
        return new Annotator(ort, bundle, sessions, backend === "wasm" ? `wasm (${ort.env.wasm.numThreads || 1} threads)` : backend);
      } catch (e) {
        lastError = e;
      }
    }
    throw new Error(`${url}: cannot create sessions (${lastError?.message || lastError || "no backend"})`);
  }

  get kind() { return this.manifest.kind; }
  get hasAttention() { return !!(this.manifest.sequence && this.manifest.sequence.attention_output); }

  async preprocess(blob, name) {
    return preprocessBlob(blob, name, this.manifest.preprocess);
  }

  async encode(batch, count) {
    const pre = this.manifest.preprocess;
    const S = pre.image_size;
    const dims = (pre.layout ?? "NCHW") === "NHWC" ? [count, S, S, 3] : [count, 3, S, S];
    const feeds = { [this.manifest.image_input]: new this.ort.Tensor(pre.input_dtype ?? "float32", batch, dims) };
    const result = await this.sessions.encoder.run(feeds);
    const out = {};
    for (const [k, v] of Object.entries(result)) out[k] = { data: v.data, dims: v.dims.slice(), dtype: v.type };
    if (this.runMemory) {  // the memory graph on the encoder's embedding: per-label scores [B, V]
      const { embedding_output: name, scores_output: scores } = this.memory;
      const e = out[name];
      const r = (await this.sessions.memory.run({ [name]: tensorOf(this.ort, e.dtype, e.data, e.dims) }))[scores];
      out[scores] = { data: r.data, dims: r.dims.slice(), dtype: r.type };
    }
    return out;
  }

  /** Label scores [B, V] of a scores bundle: the sigmoid of its logits, blended with its memory's scores when it has one. */
  async scores(batch, count) {
    const enc = await this.encode(batch, count);
    const probs = Float32Array.from(enc[this.manifest.scoring.logits_output].data, sigmoid);
    return this.memory ? blendScores(probs, enc[this.memory.scores_output].data, count, this.memory) : probs;
  }

  /** runtime/scoring.py's select_labels: the labels whose score reaches their threshold, ranked by score relative to
   * their threshold (score / threshold in float64, a threshold of 0 first; ties to the lower threshold, then the lower
   * id), at most topK; fewer than min_labels: the min_labels first of that ranking. */
  labelsFromScores(probs, count, { topK = null, threshold = null } = {}) {
    const sc = this.manifest.scoring, V = this.vocabulary.length;
    const k = topK ?? sc.top_k;
    let thr = Float32Array.from({ length: V }, (_, j) => threshold ?? sc.thresholds[j]);
    const map = this.labelMap, excluded = map ? map.excluded(this.vocabulary) : null;
    if (map) thr = map.thresholds(this.vocabulary, thr);   // its own thresholds; excluded labels never reach theirs
    const out = [];
    for (let i = 0; i < count; i++) {
      const scores = probs.subarray(i * V, (i + 1) * V);
      const row = excluded ? scores.map((p, j) => (excluded[j] ? -1 : p)) : scores;
      const rel = Float64Array.from(thr, (t, j) => (t > 0 ? row[j] / t : Infinity));
      const order = [...Array(V).keys()].sort((a, b) => (rel[b] - rel[a]) || (thr[a] - thr[b]) || (a - b));
      let ids = order.filter((j) => row[j] >= thr[j]);
      if (k) ids = ids.slice(0, k);
      if (ids.length < sc.min_labels) ids = order.slice(0, sc.min_labels);
      out.push(this.mapped({ labels: ids.map((j) => this.vocabulary[j]), label_ids: ids, scores: ids.map((j) => scores[j]), attention: [] }));
    }
    return out;
  }

  decodingConfig(overrides = {}) {
    const d = { ...this.manifest.sequence.decoding };
    for (const [k, v] of Object.entries(overrides)) if (v !== undefined && v !== null) d[k] = v;
    return d;
  }

  startState(encoded) {
    const seq = this.manifest.sequence;
    const rows = {}, constants = {};
    for (const name of Object.values(seq.state)) rows[name] = encoded[name];
    for (const name of seq.constants) constants[name] = encoded[name];
    const batch = (Object.values(rows)[0] || Object.values(constants)[0]).dims[0];
    return new DecoderState(rows, Int32Array.from({ length: batch }, (_, i) => i), constants);
  }

  /** One decoder step; with ``mix`` = {scores: the memory scores [B, V], weight} each row's log-probabilities are mixed
   * with its image's memory scores (interpolateLogProbs) before decoding masks them. */
  async step(tokens, state, mix = null) {
    const seq = this.manifest.sequence;
    const feeds = { [seq.token_input]: tensorOf(this.ort, "int64", tokens, [tokens.length]) };
    for (const [name, t] of Object.entries(state.inputs())) feeds[name] = tensorOf(this.ort, t.dtype, t.data, t.dims);
    const result = await this.sessions.decoder_step.run(feeds);
    const rows = {};
    for (const [out, target] of Object.entries(seq.state)) {
      const r = result[out];
      rows[target] = { data: r.data, dims: r.dims.slice(), dtype: r.type };
    }
    const alpha = seq.attention_output ? result[seq.attention_output] : null;
    let logp = result[seq.log_probs_output].data;
    if (mix && mix.weight > 0) logp = interpolateLogProbs(logp, mix.scores, state.image, mix.weight);
    return {
      logp,
      state: new DecoderState(rows, state.image, state.constants),
      alpha: alpha ? alpha.data : null,
      positions: alpha ? alpha.dims[1] : 0,
    };
  }

  /** Annotate preprocessed images (count photos from preprocess(): Float32Array or Uint8Array, as the manifest says). */
  async annotateBatch(batch, count, { beamWidth = null, topK = null, threshold = null } = {}) {
    if (this.kind === "scores") return this.labelsFromScores(await this.scores(batch, count), count, { topK, threshold });
    const encoded = await this.encode(batch, count);
    const config = this.decodingConfig({ beam_width: beamWidth });
    const mix = this.runMemory ? { scores: encoded[this.memory.scores_output].data, weight: this.memory.weight } : null;
    const results = await decode((t, s) => this.step(t, s, mix), this.startState(encoded), config, this.vocabulary.length, `${this.url}decoder_step`);
    return results.map((r) => this.mapped({
      labels: r.labels.map((j) => this.vocabulary[j]), label_ids: r.labels, scores: r.scores,
      attention: r.alphas.slice(0, r.labels.length).map((a) => Array.from(a)),
    }));
  }

  /** An annotation with the run-time label map (``labelMap``, set by the page from corel-web --labels) applied. */
  mapped(annotation) {
    return this.labelMap ? this.labelMap.apply(annotation) : annotation;
  }

  /** One photo file to its annotation, with the time it took. Errors name the photo. */
  async annotateBlob(blob, name, options = {}) {
    const started = performance.now();
    const tensor = await this.preprocess(blob, name);
    const [annotation] = await this.annotateBatch(tensor, 1, options);
    return { name, ...annotation, ms: performance.now() - started };
  }
}
