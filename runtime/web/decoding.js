// Greedy and beam-search decoding around the single-step decoder graph: the rules of
// runtime/search.py (token ids: labels 0..V-1, stop = V, start = V + 1; stop masked before
// min_labels, labels masked at max_len and, with forbid_repeat, once emitted; beam ranking by summed
// log-probability, ties to the lower parent slot then the lower token; a stop among the first K
// finishes its hypothesis, scored logprob / normaliser(n); exact early stopping; every live
// hypothesis of every image stepped in one decoder call).

export function normaliser(config, numTokens) {
  if (!config.length_penalty) return 1.0;
  const base = config.length_penalty_formula === "n^alpha" ? numTokens : (5.0 + numTokens) / 6.0;
  return base ** config.length_penalty;
}

function checked(logp, rows, V, t, source) {
  const W = V + 1;
  if (logp.length !== rows * W) throw new Error(`${source}: ${logp.length} log-probabilities at step ${t}; expected ${rows} x ${W}`);
  const out = Float64Array.from(logp);
  for (let i = 0; i < out.length; i++) {
    if (Number.isNaN(out[i]) || out[i] === Infinity) {
      throw new Error(`${source}: non-finite log-probability ${out[i]} at step ${t} (row ${Math.floor(i / W)}, token ${i % W}); the graph overflowed or is broken`);
    }
  }
  return out;
}

function mask(logp, r, W, used, t, config) {
  const V = W - 1, o = r * W;
  if (config.forbid_repeat) for (const id of used) logp[o + id] = -Infinity;
  if (t === config.max_len) for (let i = 0; i < V; i++) logp[o + i] = -Infinity;
  if (t < config.min_labels) logp[o + V] = -Infinity;
}

/** step(tokens: number[], state) -> {logp: Float32Array [R*(V+1)], state, alpha: Float32Array|null, positions} */
export async function greedy(step, state, config, V, source = "decoder") {
  const W = V + 1, STOP = V;
  const out = Array.from({ length: state.numRows }, () => ({ labels: [], scores: [], logprob: 0, alphas: [] }));
  let rows = out.map((_, i) => i);
  let tokens = rows.map(() => V + 1);
  let used = rows.map(() => new Set());
  for (let t = 0; t <= config.max_len; t++) {
    const res = await step(tokens, state);
    state = res.state;
    const logp = checked(res.logp, rows.length, V, t, source);
    const live = [];
    const next = [];
    for (let r = 0; r < rows.length; r++) {
      mask(logp, r, W, used[r], t, config);
      let best = 0;
      for (let i = 1; i < W; i++) if (logp[r * W + i] > logp[r * W + best]) best = i;
      const d = out[rows[r]], chosen = logp[r * W + best];
      d.logprob += chosen;
      if (res.alpha) d.alphas.push(res.alpha.slice(r * res.positions, (r + 1) * res.positions));
      if (best !== STOP) {
        d.labels.push(best);
        d.scores.push(Math.exp(chosen));
        used[r].add(best);
        live.push(r);
        next.push(best);
      }
    }
    if (!live.length) break;
    rows = live.map((r) => rows[r]);
    used = live.map((r) => used[r]);
    tokens = next;
    state = state.select(live);
  }
  return out;
}

export async function beamSearch(step, state, config, V, source = "decoder") {
  const K = config.beam_width, W = V + 1, STOP = V;
  const B = state.numRows;
  const out = Array.from({ length: B }, () => ({ labels: [], scores: [], logprob: 0, alphas: [] }));
  const bestValue = new Array(B).fill(-Infinity);
  const nMax = Math.max(normaliser(config, config.min_labels + 1), normaliser(config, config.max_len + 1));
  // per active image: K slots, each null (dead) or {score, seq, probs, used: Set, alphas}
  let active = Array.from({ length: B }, (_, b) => ({ image: b, slots: [{ score: 0, seq: [], probs: [], used: new Set(), alphas: [] }, ...new Array(K - 1).fill(null)] }));
  for (let t = 0; t <= config.max_len; t++) {
    const liveRows = [];
    for (const a of active) a.slots.forEach((s) => { if (s) liveRows.push(s); });
    const tokens = liveRows.map((s) => (t === 0 ? V + 1 : s.seq[t - 1]));
    const res = await step(tokens, state);
    state = res.state;
    const logp = checked(res.logp, liveRows.length, V, t, source);
    liveRows.forEach((s, r) => {
      mask(logp, r, W, s.used, t, config);
      s.row = r;
      if (res.alpha) s.alphas = [...s.alphas, res.alpha.slice(r * res.positions, (r + 1) * res.positions)];
    });
    const nextActive = [];
    const parentRows = [];
    for (const a of active) {
      const cand = [];
      a.slots.forEach((s, p) => {
        if (!s) return;
        for (let w = 0; w < W; w++) {
          const total = s.score + logp[s.row * W + w];
          if (total !== -Infinity) cand.push({ total, p, w, idx: p * W + w });
        }
      });
      cand.sort((x, y) => (y.total - x.total) || (x.idx - y.idx));
      const top = cand.slice(0, 2 * K);
      let bestJ = -1, bestV = -Infinity;
      top.forEach((c, j) => {
        if (j < K && c.w === STOP) {
          const v = c.total / normaliser(config, t + 1);
          if (v > bestV) { bestV = v; bestJ = j; }
        }
      });
      if (bestJ >= 0 && bestV > bestValue[a.image]) {
        const c = top[bestJ], s = a.slots[c.p];
        bestValue[a.image] = bestV;
        out[a.image] = { labels: s.seq.slice(0, t), scores: s.probs.slice(0, t), logprob: c.total, alphas: s.alphas.slice() };
      }
      const ext = top.filter((c) => c.w !== STOP).slice(0, K);
      const newScoreMax = ext.length ? ext[0].total : -Infinity;
      const bound = t + 1 <= config.max_len ? newScoreMax / nMax : -Infinity;
      const done = !ext.length || bestValue[a.image] >= bound;
      if (done) continue;
      const slots = new Array(K).fill(null);
      ext.forEach((c, slot) => {
        const s = a.slots[c.p];
        const used = new Set(s.used); used.add(c.w);
        slots[slot] = { score: c.total, seq: [...s.seq, c.w], probs: [...s.probs, Math.exp(logp[s.row * W + c.w])], used, alphas: s.alphas };
        parentRows.push(s.row);
      });
      nextActive.push({ image: a.image, slots });
    }
    if (!nextActive.length) break;
    state = state.select(parentRows);
    active = nextActive;
  }
  return out;
}

export function checkLabels(config, V) {
  if (config.forbid_repeat && config.min_labels > V) {
    throw new Error(`min_labels ${config.min_labels} needs at least that many labels without repeats; the vocabulary has ${V}`);
  }
}

export async function decode(step, state, config, V, source) {
  checkLabels(config, V);
  return (config.beam_width === 1 ? greedy : beamSearch)(step, state, config, V, source);
}
