#!/usr/bin/env python3
"""Render a kustomization offline, for machines without kubectl/kustomize.

This implements only the subset of kustomize that Switchboard's k8s/ tree uses, and refuses
anything else loudly instead of rendering it wrong:

  resources            local files (multi-document YAML) and directories with a kustomization
  namespace            set metadata.namespace on every (namespaced) resource
  generatorOptions     disableNameSuffixHash must be true; labels / annotations
  configMapGenerator   files (key=path or path), literals, envs; behavior create|merge|replace;
                       options labels / annotations / disableNameSuffixHash
  patches              path or inline patch; strategic merge (dict, `$patch: delete|replace`,
                       lists of named objects merged by `name`, `null` deletes a key) or JSON 6902
                       (a list of add / replace / remove ops, needs a target); target by
                       group/version/kind/name/namespace
  replicas             name + count on Deployments / StatefulSets
  images               name -> newName / newTag / digest on containers and initContainers

scripts/check-k8s compares this renderer's output with `kubectl kustomize` whenever kubectl is
installed, so the two cannot drift apart silently.

Usage: kustomize_lite.py DIR  (prints the rendered multi-document YAML on stdout)
"""

from __future__ import annotations

import copy
import os
import sys

import yaml

CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService",
}
SUPPORTED_KEYS = {
    "apiVersion", "kind", "resources", "namespace", "generatorOptions", "configMapGenerator",
    "patches", "replicas", "images",
}


class KustomizeError(Exception):
    pass


def load_docs(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def find_kustomization(directory: str) -> str:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    raise KustomizeError(f"no kustomization file in {directory}")


def res_id(r: dict) -> tuple:
    md = r.get("metadata", {})
    return (r.get("apiVersion"), r.get("kind"), md.get("namespace"), md.get("name"))


def parse_env_file(path: str) -> dict:
    data = {}
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if "=" not in line:
                raise KustomizeError(f"{path}:{n}: expected KEY=VALUE")
            key, value = line.split("=", 1)
            key = key.strip()
            if value != value.strip() or value[:1] in "\"'":
                raise KustomizeError(
                    f"{path}:{n}: surrounding whitespace or quotes in values are not supported "
                    "(kustomize keeps them verbatim)")
            data[key] = value
    return data


def split_kv(item: str, what: str) -> tuple[str, str]:
    if "=" not in item:
        raise KustomizeError(f"{what} {item!r}: expected KEY=VALUE")
    k, v = item.split("=", 1)
    return k, v


def build_configmap(gen: dict, base_dir: str, gen_opts: dict) -> dict:
    allowed = {"name", "namespace", "behavior", "files", "literals", "envs", "options"}
    extra = set(gen) - allowed
    if extra:
        raise KustomizeError(f"configMapGenerator {gen.get('name')}: unsupported keys {sorted(extra)}")
    data: dict[str, str] = {}
    for env in gen.get("envs", []) or []:
        data.update(parse_env_file(os.path.join(base_dir, env)))
    for f in gen.get("files", []) or []:
        if "=" in f:
            key, path = f.split("=", 1)
        else:
            key, path = os.path.basename(f), f
        with open(os.path.join(base_dir, path), encoding="utf-8") as fh:
            data[key] = fh.read()
    for lit in gen.get("literals", []) or []:
        k, v = split_kv(lit, "literal")
        data[k] = v
    opts = gen.get("options", {}) or {}
    unknown = set(opts) - {"labels", "annotations", "disableNameSuffixHash"}
    if unknown:
        raise KustomizeError(f"configMapGenerator {gen.get('name')}: unsupported options {sorted(unknown)}")
    no_hash = opts.get("disableNameSuffixHash", gen_opts.get("disableNameSuffixHash", False))
    # merge / replace keep the name (and hash setting) of the ConfigMap they change.
    if not no_hash and gen.get("behavior", "create") == "create":
        raise KustomizeError(
            f"configMapGenerator {gen.get('name')}: name hash suffixes are not implemented; "
            "set generatorOptions.disableNameSuffixHash: true")
    md: dict = {"name": gen["name"]}
    if gen.get("namespace"):
        md["namespace"] = gen["namespace"]
    labels = {**(gen_opts.get("labels") or {}), **(opts.get("labels") or {})}
    annotations = {**(gen_opts.get("annotations") or {}), **(opts.get("annotations") or {})}
    if labels:
        md["labels"] = labels
    if annotations:
        md["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data}


# ---------------------------------------------------------------- strategic merge (subset)

def _named_list(items) -> bool:
    return isinstance(items, list) and all(isinstance(i, dict) and "name" in i for i in items)


def smp_merge(orig, patch):
    if isinstance(patch, dict) and isinstance(orig, dict):
        directive = patch.get("$patch")
        if directive == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        if directive not in (None, "merge"):
            raise KustomizeError(f"unsupported $patch directive {directive!r} in a nested map")
        out = copy.deepcopy(orig)
        for k, v in patch.items():
            if k == "$patch":
                continue
            if k.startswith("$"):
                raise KustomizeError(f"unsupported strategic-merge directive {k}")
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = smp_merge(out[k], v)
            else:
                out[k] = _strip_directives(copy.deepcopy(v))
        return out
    if isinstance(patch, list) and isinstance(orig, list) and _named_list(patch) and _named_list(orig):
        out = copy.deepcopy(orig)
        index = {item["name"]: i for i, item in enumerate(out)}
        for item in patch:
            if item.get("$patch") == "delete":
                if item["name"] in index:
                    out = [o for o in out if o["name"] != item["name"]]
                    index = {o["name"]: i for i, o in enumerate(out)}
                continue
            if item["name"] in index:
                out[index[item["name"]]] = smp_merge(out[index[item["name"]]], item)
            else:
                out.append(_strip_directives(copy.deepcopy(item)))
                index[item["name"]] = len(out) - 1
        return out
    return _strip_directives(copy.deepcopy(patch))


def _strip_directives(v):
    if isinstance(v, dict):
        return {k: _strip_directives(x) for k, x in v.items() if not k.startswith("$")}
    if isinstance(v, list):
        return [_strip_directives(x) for x in v]
    return v


# ---------------------------------------------------------------- JSON 6902 (subset)

def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json6902_apply(doc: dict, ops: list) -> dict:
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op.get("op")
        parts = _pointer(op["path"])
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if kind in ("add", "replace"):
            value = copy.deepcopy(op["value"])
            if isinstance(parent, list):
                if last == "-":
                    if kind != "add":
                        raise KustomizeError("'-' is only valid for add")
                    parent.append(value)
                elif kind == "add":
                    parent.insert(int(last), value)
                else:
                    parent[int(last)] = value
            else:
                if kind == "replace" and last not in parent:
                    raise KustomizeError(f"replace: no such path {op['path']}")
                parent[last] = value
        elif kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                if last not in parent:
                    raise KustomizeError(f"remove: no such path {op['path']}")
                del parent[last]
        else:
            raise KustomizeError(f"unsupported JSON 6902 op {kind!r}")
    return doc


def matches(r: dict, target: dict) -> bool:
    unknown = set(target) - {"group", "version", "kind", "name", "namespace"}
    if unknown:
        raise KustomizeError(f"unsupported patch target selectors {sorted(unknown)}")
    api = r.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    if "kind" in target and target["kind"] != r.get("kind"):
        return False
    if "group" in target and target["group"] != group:
        return False
    if "version" in target and target["version"] != version:
        return False
    md = r.get("metadata", {})
    if "name" in target and target["name"] != md.get("name"):
        return False
    if "namespace" in target and target["namespace"] != md.get("namespace"):
        return False
    return True


def apply_patch(resources: list[dict], entry: dict, base_dir: str) -> list[dict]:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown:
        raise KustomizeError(f"patch entry: unsupported keys {sorted(unknown)}")
    if "path" in entry:
        with open(os.path.join(base_dir, entry["path"]), encoding="utf-8") as f:
            text = f.read()
        label = entry["path"]
    else:
        text = entry["patch"]
        label = "inline patch"
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    if len(docs) != 1:
        raise KustomizeError(f"{label}: exactly one patch document expected")
    patch = docs[0]
    target = entry.get("target")
    if isinstance(patch, list):
        if not target:
            raise KustomizeError(f"{label}: a JSON 6902 patch needs a target")
        hits = [i for i, r in enumerate(resources) if matches(r, target)]
        if not hits:
            raise KustomizeError(f"{label}: no resource matches target {target}")
        for i in hits:
            resources[i] = json6902_apply(resources[i], patch)
        return resources
    if not target:
        target = {"kind": patch.get("kind"), "name": patch.get("metadata", {}).get("name")}
        if patch.get("metadata", {}).get("namespace"):
            target["namespace"] = patch["metadata"]["namespace"]
    hits = [i for i, r in enumerate(resources) if matches(r, target)]
    if not hits:
        raise KustomizeError(f"{label}: no resource matches target {target}")
    if patch.get("$patch") == "delete":
        return [r for i, r in enumerate(resources) if i not in hits]
    for i in hits:
        p = copy.deepcopy(patch)
        if entry.get("target"):
            # With an explicit target the patch's own identity is ignored: it never renames.
            for key in ("apiVersion", "kind"):
                p.pop(key, None)
            md = p.get("metadata")
            if isinstance(md, dict):
                md.pop("name", None)
                md.pop("namespace", None)
        resources[i] = smp_merge(resources[i], p)
    return resources


def set_images(resources: list[dict], images: list[dict]) -> None:
    for r in resources:
        spec = r.get("spec", {}).get("template", {}).get("spec")
        if not spec:
            continue
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            ref = c.get("image", "")
            name = ref.split("@")[0]
            if ":" in name.rsplit("/", 1)[-1]:
                name = name.rsplit(":", 1)[0]
            for img in images:
                unknown = set(img) - {"name", "newName", "newTag", "digest"}
                if unknown:
                    raise KustomizeError(f"images: unsupported keys {sorted(unknown)}")
                if img["name"] != name:
                    continue
                new = img.get("newName", name)
                if img.get("digest"):
                    new += "@" + img["digest"]
                elif img.get("newTag"):
                    new += ":" + str(img["newTag"])
                else:
                    old_tag = ref[len(name):]
                    new += old_tag
                c["image"] = new


def build(directory: str) -> list[dict]:
    kfile = find_kustomization(directory)
    docs = load_docs(kfile)
    if len(docs) != 1:
        raise KustomizeError(f"{kfile}: one document expected")
    k = docs[0]
    unknown = set(k) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported fields {sorted(unknown)}")

    resources: list[dict] = []
    for entry in k.get("resources", []) or []:
        path = os.path.join(directory, entry)
        if os.path.isdir(path):
            resources.extend(build(path))
        elif os.path.isfile(path):
            resources.extend(load_docs(path))
        else:
            raise KustomizeError(f"{kfile}: resource {entry} not found (remote resources unsupported)")

    gen_opts = k.get("generatorOptions", {}) or {}
    unknown = set(gen_opts) - {"disableNameSuffixHash", "labels", "annotations"}
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported generatorOptions {sorted(unknown)}")
    for gen in k.get("configMapGenerator", []) or []:
        cm = build_configmap(gen, directory, gen_opts)
        behavior = gen.get("behavior", "create")
        existing = [i for i, r in enumerate(resources)
                    if r.get("kind") == "ConfigMap" and r["metadata"]["name"] == cm["metadata"]["name"]]
        if behavior == "create":
            if existing:
                raise KustomizeError(f"configMapGenerator {cm['metadata']['name']}: already exists (use behavior: merge)")
            resources.append(cm)
        elif behavior in ("merge", "replace"):
            if len(existing) != 1:
                raise KustomizeError(f"configMapGenerator {cm['metadata']['name']}: behavior {behavior} needs exactly one existing ConfigMap")
            old = resources[existing[0]]
            if behavior == "merge":
                old.setdefault("data", {}).update(cm["data"])
                for key in ("labels", "annotations"):
                    if cm["metadata"].get(key):
                        old["metadata"].setdefault(key, {}).update(cm["metadata"][key])
            else:
                cm["metadata"] = {**old["metadata"], **{x: y for x, y in cm["metadata"].items() if x != "name"}}
                resources[existing[0]] = cm
        else:
            raise KustomizeError(f"configMapGenerator: unknown behavior {behavior!r}")

    if k.get("namespace"):
        for r in resources:
            if r.get("kind") not in CLUSTER_SCOPED:
                r.setdefault("metadata", {})["namespace"] = k["namespace"]

    for entry in k.get("patches", []) or []:
        resources = apply_patch(resources, entry, directory)

    set_images(resources, k.get("images", []) or [])

    for rep in k.get("replicas", []) or []:
        hit = False
        for r in resources:
            if r.get("kind") in ("Deployment", "StatefulSet", "ReplicaSet") and r["metadata"]["name"] == rep["name"]:
                r["spec"]["replicas"] = int(rep["count"])
                hit = True
        if not hit:
            raise KustomizeError(f"replicas: no workload named {rep['name']}")

    ids = [res_id(r) for r in resources]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise KustomizeError(f"{kfile}: duplicate resources {sorted(map(str, dupes))}")
    return resources


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        resources = build(argv[1])
    except (KustomizeError, OSError, yaml.YAMLError, KeyError, ValueError) as e:
        print(f"kustomize_lite: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(resources, sort_keys=False, default_flow_style=False, width=10_000))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
