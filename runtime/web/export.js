// What the page shows, taken away: a CSV like corel-infer --format csv, and XMP sidecars in a zip, with the same fields
// corel-infer --write-tags xmp writes (dc:subject, lr:hierarchicalSubject, digiKam:TagsList under a root).
import { strToU8, zipSync } from "/vendor/fflate.mjs";

const ROOT = "corel-annotate";

function csvField(value) {
  const s = String(value);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** ``rows``: [{image, labels, scores} | {image, error}] in the order shown. */
export function toCsv(rows) {
  const lines = [["image", "status", "labels", "scores", "error"]];
  for (const r of rows) {
    lines.push(r.error
      ? [r.image, "error", "", "", r.error]
      : [r.image, "ok", r.labels.join(";"), r.scores.map((s) => s.toFixed(6)).join(";"), ""]);
  }
  return lines.map((l) => l.map(csvField).join(",")).join("\r\n") + "\r\n";
}

function xml(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function bag(tag, items, kind = "Bag") {
  return `   <${tag}>\n    <rdf:${kind}>\n${items.map((i) => `     <rdf:li>${xml(i)}</rdf:li>`).join("\n")}\n    </rdf:${kind}>\n   </${tag}>`;
}

/** One XMP sidecar for ``labels``; ``path(label)`` places a label under the root (a label map's path). */
export function toXmp(labels, path = () => null) {
  const placed = labels.map((l) => (path(l) ? `${ROOT}|${path(l)}|${l}` : `${ROOT}|${l}`));
  return `<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>
<x:xmpmeta xmlns:x='adobe:ns:meta/'>
<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>
 <rdf:Description rdf:about=''
  xmlns:dc='http://purl.org/dc/elements/1.1/'
  xmlns:lr='http://ns.adobe.com/lightroom/1.0/'
  xmlns:digiKam='http://www.digikam.org/ns/1.0/'>
${bag("dc:subject", labels)}
${bag("lr:hierarchicalSubject", placed)}
${bag("digiKam:TagsList", placed.map((p) => p.replace(/\|/g, "/")), "Seq")}
 </rdf:Description>
</rdf:RDF>
</x:xmpmeta>
<?xpacket end='w'?>
`;
}

/** A zip of ``photo.jpg.xmp`` sidecars (darktable and digiKam's naming), one per annotated photo. */
export function toXmpZip(rows, path) {
  const files = {};
  for (const r of rows) if (!r.error) files[`${r.image}.xmp`] = strToU8(toXmp(r.labels, path));
  return zipSync(files, { level: 6, mtime: new Date() });
}

export function download(bytes, name, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([bytes], { type }));
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
