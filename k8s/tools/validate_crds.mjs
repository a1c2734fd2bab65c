// Validate CRD objects (JSON array on stdin) against the schemas a @kubernetes-models package
// ships: ServiceMonitor / PrometheusRule with @kubernetes-models/prometheus-operator (default),
// HTTPRoute with @kubernetes-models/gateway-api and gateway.networking.k8s.io/v1.
// Usage: node validate_crds.mjs /path/to/node_modules/@kubernetes-models/prometheus-operator
//        node validate_crds.mjs /path/to/node_modules/@kubernetes-models/gateway-api gateway.networking.k8s.io/v1
// (scripts/check-k8s installs the package into a cache directory, outside the repository.)
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const pkg = process.argv[2];
// The API group and version whose models to use (default: prometheus-operator's).
const groupVersion = process.argv[3] ?? "monitoring.coreos.com/v1";
const models = await import(pathToFileURL(join(pkg, ...groupVersion.split("/"), "index.js")).href);
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
