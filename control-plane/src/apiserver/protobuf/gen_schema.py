#!/usr/bin/env python3
"""Generates `schema.txt`: the protobuf field tables the request-body decoder needs.

Why: kubectl's typed verbs send `application/vnd.kubernetes.protobuf` bodies. Decoding them
needs, per message, each field's tag, JSON name and wire kind. The `k8s-pb` crate has all of
that as prost attributes, but depending on it would compile ~40k lines of structs we never
use. So this script reads k8s-pb's *source* once and writes a compact text table that the
decoder `include_str!`s.

JSON names: prost snake-cased the proto names (which are the JSON names), and snake case
loses acronyms (`hostIP` -> `host_ip`). Each name is therefore resolved against the JSON
keys that k8s-openapi's serde code accepts for the same struct (same module, struct name
compared case-insensitively, all Kubernetes versions merged), falling back to any
k8s-openapi struct, then to naive lowerCamel (reported on stderr).
A message field k8s-openapi does not know, whose own fields k8s-openapi lists on the parent,
is a Go embedded struct (`json:",inline"`) and is written as `-`.

Only messages reachable from ROOTS (the catalog's kinds plus a few request types) are
written, to keep the table small.

Usage (from the repository root, after `cargo fetch` has unpacked both crates):

    python3 control-plane/src/apiserver/protobuf/gen_schema.py \
        > control-plane/src/apiserver/protobuf/schema.txt

Output format, one message per block:

    @api.core.v1.ConfigMap                  message (its k8s-pb module path + name)
    1 metadata apimachinery.pkg.apis.meta.v1.ObjectMeta
    2 data map:string:string
    3 binaryData map:string:bytes
    4 immutable bool
    ...                                     `tag jsonName [*]kind`; `*` = repeated;
                                            kind is a scalar, `map:K:V`, or a message name;
                                            jsonName `-` = embedded (inline) message
"""

import glob
import os
import re
import sys

# Kinds the API server serves (control-plane/src/registry/catalog.rs RESOURCES) plus request
# bodies of subresources and deletes. A unit test checks the catalog is covered.
ROOTS = [
    "api.core.v1.Namespace", "api.core.v1.Pod", "api.core.v1.Service", "api.core.v1.Endpoints",
    "api.core.v1.ConfigMap", "api.core.v1.Secret", "api.core.v1.Node", "api.core.v1.Event",
    "api.core.v1.ServiceAccount", "api.core.v1.PersistentVolume",
    "api.core.v1.PersistentVolumeClaim", "api.core.v1.Binding",
    "api.apps.v1.Deployment", "api.apps.v1.ReplicaSet", "api.apps.v1.DaemonSet",
    "api.apps.v1.StatefulSet", "api.apps.v1.ControllerRevision",
    "api.batch.v1.Job", "api.batch.v1.CronJob",
    "api.autoscaling.v2.HorizontalPodAutoscaler", "api.autoscaling.v1.Scale",
    "api.discovery.v1.EndpointSlice",
    "api.networking.v1.Ingress", "api.networking.v1.IngressClass",
    "api.coordination.v1.Lease", "api.storage.v1.StorageClass",
    "api.policy.v1.PodDisruptionBudget", "api.policy.v1.Eviction",
    "api.events.v1.Event",
    "apimachinery.pkg.apis.meta.v1.DeleteOptions",
]

# Decoded specially (their JSON form is not an object of their fields); not expanded.
SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time", "apimachinery.pkg.apis.meta.v1.MicroTime",
    "apimachinery.pkg.apis.meta.v1.Duration", "apimachinery.pkg.apis.meta.v1.FieldsV1",
    "apimachinery.pkg.api.resource.Quantity", "apimachinery.pkg.util.intstr.IntOrString",
    "apimachinery.pkg.runtime.RawExtension",
}

SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
           "fixed32", "fixed64", "sfixed32", "sfixed64", "double", "float"}


def crate_dir(name):
    hits = sorted(glob.glob(os.path.expanduser(f"~/.cargo/registry/src/*/{name}/src")))
    if not hits:
        sys.exit(f"{name} not found under ~/.cargo/registry/src (run `cargo fetch` with it)")
    return hits[-1]


def norm(name):
    return name.replace("r#", "").replace("_", "").lower()


def parse_pb(root):
    """module.Struct -> [(tag, rust_name, repeated, kind, type_expr)], with type refs resolved."""
    messages = {}
    for path in glob.glob(f"{root}/**/mod.rs", recursive=True):
        module = os.path.relpath(os.path.dirname(path), root).replace(os.sep, ".")
        lines = open(path, encoding="utf-8").read().split("\n")
        current = None
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            m = re.match(r"pub struct (\w+) \{", line)
            if m:
                current = f"{module}.{m.group(1)}"
                messages[current] = []
            elif line.startswith("#[prost(") and current:
                attr = line
                while not attr.endswith(")]"):
                    i += 1
                    attr += lines[i].strip()
                decl = ""
                while True:
                    i += 1
                    decl += lines[i].strip()
                    if decl.startswith("pub ") and decl.endswith(",") and decl.count("<") == decl.count(">"):
                        break
                fm = re.match(r"pub ([\w#]+):(.*),$", decl)
                messages[current].append(field(module, attr, fm.group(1), fm.group(2)))
            elif line == "}":
                current = None
            i += 1
    return messages


def resolve(module, ty):
    """`super::super::x::Y` seen from `module` -> dotted full name."""
    parts = module.split(".")
    segs = ty.split("::")
    while segs[0] == "super":
        parts.pop()
        segs.pop(0)
    return ".".join(parts + segs)


def last_type(expr):
    """The innermost non-wrapper type path of a Rust type expression."""
    names = re.findall(r"[\w:]+", expr)
    wrappers = ("::core::option::Option", "::prost::alloc::vec::Vec", "::prost::alloc::boxed::Box",
                "::prost::alloc::collections::BTreeMap", "::prost::alloc::string::String")
    names = [n for n in names if n not in wrappers]
    return names[-1]


def field(module, attr, name, ty):
    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
    repeated = ", repeated" in attr
    m = re.search(r'btree_map = "(\w+), (\w+)"', attr)
    if m:
        value = m.group(2)
        if value == "message":
            value = resolve(module, last_type(ty))
        return (tag, name, False, f"map:{m.group(1)}:{value}")
    kind = re.match(r"#\[prost\((\w+)", attr).group(1)
    if kind == "message":
        kind = resolve(module, last_type(ty))
    elif kind not in SCALARS:
        sys.exit(f"unsupported prost kind in {module}: {attr}")
    return (tag, name, repeated, kind)


def parse_openapi(root):
    """(module, lower struct name) -> {norm: json}, and a global {norm: {json}}."""
    per_struct, anywhere = {}, {}
    for path in glob.glob(f"{root}/**/*.rs", recursive=True):
        text = open(path, encoding="utf-8").read()
        module = os.path.relpath(os.path.dirname(path), root).replace(os.sep, ".")
        for struct in re.findall(r"pub struct (\w+) \{", text):
            keys = re.findall(r'"([A-Za-z0-9$_.-]+)" => Field::Key_', text)
            per_struct[(module, struct.lower())] = {norm(k): k for k in keys}
            for k in keys:
                anywhere.setdefault(norm(k), set()).add(k)
    return per_struct, anywhere


def json_name(full, rust, kind, messages, per_struct, anywhere):
    module, _, struct = full.rpartition(".")
    known = per_struct.get((module, struct.lower()), {})
    if norm(rust) in known:
        return known[norm(rust)]
    inner = [norm(f[1]) for f in messages.get(kind, [])]
    if known and any(name in known for name in inner):
        # A Go embedded struct (`json:",inline"`, e.g. Probe's ProbeHandler): the parent's
        # JSON has the embedded message's fields, not one named after it.
        return "-"
    candidates = anywhere.get(norm(rust), set())
    if len(candidates) == 1:
        return next(iter(candidates))
    words = rust.replace("r#", "").split("_")
    guess = words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])
    print(f"warning: {full}.{rust}: no k8s-openapi name, guessed {guess}", file=sys.stderr)
    return guess


def main():
    messages = parse_pb(crate_dir("k8s-pb-0.9.0"))
    # Newest Kubernetes version first: k8s-pb knows fields v1_33 does not.
    openapi = crate_dir("k8s-openapi-0.29.0")
    per_struct, anywhere = {}, {}
    for version in sorted(glob.glob(f"{openapi}/v1_*"), key=lambda p: int(p.rsplit("_", 1)[1])):
        structs, names = parse_openapi(version)
        for key, fields in structs.items():
            per_struct.setdefault(key, {}).update(fields)
        for key, jsons in names.items():
            anywhere.setdefault(key, set()).update(jsons)
    todo, seen = list(ROOTS), set()
    while todo:
        name = todo.pop()
        if name in seen or name in SPECIAL:
            continue
        if name not in messages:
            sys.exit(f"unknown message {name}")
        seen.add(name)
        for (_, _, _, kind) in messages[name]:
            target = kind.split(":")[-1]
            if target not in SCALARS:
                todo.append(target)
    out = ["# Generated by gen_schema.py from k8s-pb 0.9.0 and k8s-openapi 0.29.0 (v1_33). Do not edit."]
    for name in sorted(seen):
        out.append(f"@{name}")
        for (tag, rust, repeated, kind) in messages[name]:
            out.append(f"{tag} {json_name(name, rust, kind, messages, per_struct, anywhere)} {'*' if repeated else ''}{kind}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
