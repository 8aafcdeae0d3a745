// A small JSON Schema checker for the keywords bundle.schema.json uses (the schema pydantic writes
// from the Python manifest dataclasses): type, properties, required, additionalProperties, enum,
// const, minimum, maximum, exclusiveMinimum, items, prefixItems, minItems, maxItems, anyOf, $ref into $defs.  Returns the first problem
// as "path: message", or null when the value conforms.

const TYPES = {
  object: (v) => v !== null && typeof v === "object" && !Array.isArray(v),
  array: (v) => Array.isArray(v),
  string: (v) => typeof v === "string",
  integer: (v) => typeof v === "number" && Number.isInteger(v),
  number: (v) => typeof v === "number" && Number.isFinite(v),
  boolean: (v) => typeof v === "boolean",
  null: (v) => v === null,
};

function resolve(root, node) {
  while (node && node.$ref) {
    const parts = node.$ref.replace(/^#\//, "").split("/");
    node = parts.reduce((n, p) => n[p], root);
  }
  return node;
}

export function validate(root, value, node = root, path = "manifest") {
  node = resolve(root, node);
  if (node.anyOf) {
    const problems = node.anyOf.map((n) => validate(root, value, n, path));
    if (!problems.includes(null)) return problems[0];
  }
  if (node.type) {
    const types = Array.isArray(node.type) ? node.type : [node.type];
    if (!types.some((t) => TYPES[t](value))) return `${path}: expected ${types.join(" or ")}, got ${JSON.stringify(value)}`;
  }
  if ("const" in node && value !== node.const) return `${path}: must be ${JSON.stringify(node.const)}`;
  if (node.enum && !node.enum.includes(value)) return `${path}: must be one of ${node.enum.join(", ")}`;
  if (typeof value === "number") {   // bounds apply to numbers only (a null beside them passes)
    if (node.minimum !== undefined && value < node.minimum) return `${path}: at least ${node.minimum}, got ${value}`;
    if (node.maximum !== undefined && value > node.maximum) return `${path}: at most ${node.maximum}, got ${value}`;
    if (node.exclusiveMinimum !== undefined && !(value > node.exclusiveMinimum)) return `${path}: more than ${node.exclusiveMinimum}, got ${value}`;
  }
  if (Array.isArray(value)) {
    if (node.minItems !== undefined && value.length < node.minItems) return `${path}: at least ${node.minItems} items`;
    if (node.maxItems !== undefined && value.length > node.maxItems) return `${path}: at most ${node.maxItems} items`;
    for (let i = 0; i < value.length; i++) {
      const item = node.prefixItems && i < node.prefixItems.length ? node.prefixItems[i] : node.items;
      if (item) {
        const p = validate(root, value[i], item, `${path}[${i}]`);
        if (p) return p;
      }
    }
  } else if (TYPES.object(value)) {
    for (const key of node.required || []) if (!(key in value)) return `${path}: missing field "${key}"`;
    for (const [key, v] of Object.entries(value)) {
      const sub = node.properties && node.properties[key];
      if (sub) {
        const p = validate(root, v, sub, `${path}.${key}`);
        if (p) return p;
      } else if (node.additionalProperties === false) {
        return `${path}: unknown field "${key}"`;
      } else if (node.additionalProperties && typeof node.additionalProperties === "object") {
        const p = validate(root, v, node.additionalProperties, `${path}.${key}`);
        if (p) return p;
      }
    }
  }
  return null;
}
