// The run-time label map in the page: runtime/label_map.py's twin. corel-web --labels validates the map against the
// bundle and serves it as /labels.json ({labels: {LABEL: {name, path, threshold, exclude}}}); the page applies it the
// same way: per-label thresholds and exclusions before labels are chosen, then names and merges.

export class LabelMap {
  constructor(data) {
    this.entries = (data && data.labels) || {};
  }

  static async load(url) {
    if (!url) return null;
    const r = await fetch(url, { cache: "no-store" });
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return new LabelMap(await r.json());
  }

  display(label) {
    const e = this.entries[label];
    return (e && e.name) || label;
  }

  /** The hierarchy above display name ``name``, the first one the map gives (LabelMap.path). */
  path(name) {
    for (const [label, e] of Object.entries(this.entries)) if (e.path && this.display(label) === name) return e.path;
    return null;
  }

  /** Score bundles: the thresholds with the map's put in, excluded labels at 2 (never reached). */
  thresholds(vocabulary, base) {
    return Float32Array.from(vocabulary, (label, j) => {
      const e = this.entries[label] || {};
      return e.exclude ? 2 : (e.threshold ?? base[j]);
    });
  }

  excluded(vocabulary) {
    return vocabulary.map((label) => !!(this.entries[label] || {}).exclude);
  }

  /** An annotation with the map applied: excluded labels dropped, the rest renamed, labels sharing a name merged at
   * the first one's place with the best score (attention and ids follow their label). */
  apply(a) {
    const out = { ...a, labels: [], scores: [], label_ids: [], attention: [] };
    a.labels.forEach((label, i) => {
      if ((this.entries[label] || {}).exclude) return;
      const name = this.display(label);
      const k = out.labels.indexOf(name);
      if (k >= 0) { out.scores[k] = Math.max(out.scores[k], a.scores[i]); return; }
      out.labels.push(name);
      out.scores.push(a.scores[i]);
      out.label_ids.push(a.label_ids[i]);
      if (a.attention.length) out.attention.push(a.attention[i]);
    });
    return out;
  }
}
