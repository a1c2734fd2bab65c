// Validate ServiceMonitor / PrometheusRule objects (JSON array on stdin) against the
// prometheus-operator schemas shipped by @kubernetes-models/prometheus-operator.
// Usage: node validate_crds.mjs /path/to/node_modules/@kubernetes-models/prometheus-operator
// (scripts/check-k8s installs the package into a cache directory, outside the repository.)
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const pkg = process.argv[2];
const models = await import(pathToFileURL(join(pkg, "monitoring.coreos.com", "v1", "index.js")).href);
const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
const counts = {};
for (const obj of objects) {
  const Model = models[obj.kind];
  const where = `${obj.kind}/${obj.metadata?.name} (${obj.metadata?.namespace ?? "no namespace"})`;
  if (!Model) {
    console.log(`${where}: no model for this kind`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    counts[obj.kind] = (counts[obj.kind] ?? 0) + 1;
  } catch (err) {
    console.log(`${where}: ${err.message}`);
    failed++;
  }
}
if (failed) process.exit(1);
console.log(Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ") + " valid");
