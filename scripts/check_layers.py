#!/usr/bin/env python3
"""check_layers.py - the engine's files keep to their layers.

Reads the layer table (scripts/layers.txt by default): one layer a line,

    <layer-number> <layer-name> <file-glob> [<file-glob> ...]

(a lower number is a lower layer; globs are relative to the source root; '#' starts a comment).
Parses every `#include "..."` of every file under engine/ and uring/ and fails on

  1. an include from a file to a file of a higher layer,
  2. an include circle between files (each circle is printed),
  3. a file under engine/ or uring/ that no layer lists (or that two layers list).

With --objects PATH... (object files, or directories searched for *.o; the call check), reads the
defined and undefined symbols of each object with nm, maps each object to its source file, and
also fails on

  4. a call that points up: a function defined in a higher-layer file, used by a lower-layer one,
  5. a circle of calls between files (each circle is printed).

Objects whose source file no longer exists in the tree are skipped (stale build outputs).

--report prints the violations and exits 0 (for a tree that does not keep its layers yet).
Exit status: 0 when clean (or --report), 1 on a violation, 2 on a usage or table error.
"""

import argparse
import fnmatch
import os
import re
import subprocess
import sys

SCANNED_DIRS = ("engine", "uring")
SOURCE_EXT = (".c", ".h")
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


class TableError(Exception):
    pass


def read_layers(path):
    """[(number, name, [globs])], sorted by number."""
    layers = []
    seen = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) < 3:
                raise TableError(f"{path}:{lineno}: want '<number> <name> <glob>...'")
            try:
                num = int(parts[0])
            except ValueError:
                raise TableError(f"{path}:{lineno}: layer number '{parts[0]}' is not an integer")
            if num in seen:
                raise TableError(f"{path}:{lineno}: layer {num} listed twice")
            seen.add(num)
            layers.append((num, parts[1], parts[2:]))
    if not layers:
        raise TableError(f"{path}: no layers")
    return sorted(layers)


def scanned_files(root):
    out = []
    for d in SCANNED_DIRS:
        top = os.path.join(root, d)
        for dirpath, _, names in os.walk(top):
            for n in names:
                if n.endswith(SOURCE_EXT):
                    out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


def layer_of_files(files, layers):
    """{file: (number, name)} and a list of problems (files in two layers)."""
    where = {}
    problems = []
    for f in files:
        hits = [(num, name) for num, name, globs in layers
                if any(fnmatch.fnmatchcase(f, g) for g in globs)]
        if len(hits) > 1:
            problems.append(f"{f}: listed by more than one layer: "
                            + ", ".join(f"{n} {nm}" for n, nm in hits))
        if hits:
            where[f] = hits[0]
    return where, problems


def resolve_include(root, src, name):
    """The include's path relative to root, or None when it is not a file of the tree."""
    for base in (os.path.dirname(src), "", "include"):
        cand = os.path.normpath(os.path.join(base, name))
        if os.path.isfile(os.path.join(root, cand)):
            return cand
    return None


def include_graph(root, files):
    """{file: {included file: line number}} for the quoted includes that name files of root."""
    graph = {}
    for f in files:
        edges = {}
        with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                m = INCLUDE_RE.match(line)
                if not m:
                    continue
                tgt = resolve_include(root, f, m.group(1))
                if tgt is not None and tgt != f:
                    edges.setdefault(tgt, lineno)
        graph[f] = edges
    return graph


def strongly_connected(graph):
    """Tarjan's SCCs of a {node: iterable of nodes} graph (iterative); only those with a cycle."""
    index = {}
    low = {}
    on_stack = set()
    stack = []
    sccs = []
    counter = [0]
    nodes = set(graph)
    for es in graph.values():
        nodes.update(es)
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph.get(v, ()):
                    sccs.append(sorted(comp))
    return sorted(sccs)


def cycle_through(graph, members, start):
    """A shortest cycle through start inside members, as a list of nodes (start first)."""
    prev = {start: None}
    queue = [start]
    while queue:
        nxt = []
        for v in queue:
            for w in sorted(graph.get(v, ())):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    path.reverse()
                    return path
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        queue = nxt
    return None


def circles(graph, comp):
    """The circles of one strongly connected component: a shortest one through each of its
    nodes, each circle once (rotated to start at its least node)."""
    members = set(comp)
    seen = set()
    out = []
    for start in comp:
        cyc = cycle_through(graph, members, start)
        if cyc is None:
            continue
        i = cyc.index(min(cyc))
        cyc = cyc[i:] + cyc[:i]
        if tuple(cyc) not in seen:
            seen.add(tuple(cyc))
            out.append(cyc)
    return sorted(out, key=lambda c: (len(c), c))


def fmt_layer(where, f):
    num, name = where[f]
    return f"{num} {name}"


def check_includes(root, files, where, graph):
    out = []
    for f in files:
        if f not in where:
            continue
        for tgt, lineno in sorted(graph[f].items()):
            if tgt in where and where[tgt][0] > where[f][0]:
                out.append(f"include points up: {f}:{lineno} (layer {fmt_layer(where, f)}) "
                           f"includes {tgt} (layer {fmt_layer(where, tgt)})")
    for comp in strongly_connected(graph):
        for cyc in circles(graph, comp):
            out.append("include circle: " + " -> ".join(cyc + [cyc[0]]))
    return out


# --- the call check ----------------------------------------------------------------------------

def object_files(paths):
    objs = []
    for p in paths:
        if os.path.isdir(p):
            for dirpath, _, names in os.walk(p):
                objs.extend(os.path.join(dirpath, n) for n in names if n.endswith(".o"))
        elif os.path.isfile(p):
            objs.append(p)
        else:
            raise TableError(f"object path {p} does not exist")
    return sorted(objs)


def source_of_object(obj, files):
    """The source file (relative to root) an object was compiled from: foo/engine/db.c.o,
    foo/engine/db.o -> engine/db.c. None when no scanned file matches."""
    p = obj.replace(os.sep, "/")
    stem = p[:-2]  # drop ".o"
    cands = [stem] if stem.endswith(".c") else [stem + ".c"]
    best = None
    for f in files:
        if not f.endswith(".c"):
            continue
        for c in cands:
            if c == f or c.endswith("/" + f):
                if best is None or len(f) > len(best):
                    best = f
    return best


def nm_symbols(nm, objs):
    """{object: (defined functions, undefined symbols)}, from two runs of nm over all objects."""
    out = {o: (set(), set()) for o in objs}
    for flags, which in ((["--defined-only", "-g"], 0), (["--undefined-only"], 1)):
        res = subprocess.run([nm, "-A"] + flags + objs, capture_output=True, text=True)
        if res.returncode != 0:
            raise TableError(f"{nm}: {res.stderr.strip()}")
        for line in res.stdout.splitlines():
            # "path/to/x.o:0000000000000000 T name" or "path/to/x.o:                 U name"
            obj, _, rest = line.rpartition(":")
            parts = rest.split()
            if obj not in out or len(parts) < 2:
                continue
            if which == 0 and parts[-2] not in ("T", "W", "i"):
                continue
            out[obj][which].add(parts[-1])
    return out


def check_calls(nm, objects, files, where):
    out = []
    definer = {}
    uses = {}
    skipped = []
    srcs = {}
    for obj in objects:
        src = source_of_object(obj, files)
        if src is None:
            skipped.append(obj)
        else:
            srcs[obj] = src
    syms = nm_symbols(nm, sorted(srcs)) if srcs else {}
    for obj, src in sorted(srcs.items()):
        defined, undefined = syms[obj]
        for s in defined:
            definer.setdefault(s, src)
        uses.setdefault(src, set()).update(undefined)
    for obj in skipped:
        print(f"check_layers: skipped {obj} (no source file of the tree matches it)",
              file=sys.stderr)
    graph = {}
    by_pair = {}
    for src, syms in uses.items():
        for s in syms:
            tgt = definer.get(s)
            if tgt is None or tgt == src:
                continue
            graph.setdefault(src, set()).add(tgt)
            by_pair.setdefault((src, tgt), set()).add(s)
    for (src, tgt), syms in sorted(by_pair.items()):
        if src in where and tgt in where and where[tgt][0] > where[src][0]:
            names = sorted(syms)
            shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6
                                            else "")
            out.append(f"call points up: {src} (layer {fmt_layer(where, src)}) calls {tgt} "
                       f"(layer {fmt_layer(where, tgt)}): {shown}")
    for comp in strongly_connected(graph):
        if len(comp) > 2:
            out.append(f"call circles among {len(comp)} files: {' '.join(comp)}")
        for cyc in circles(graph, comp):
            steps = []
            for a, b in zip(cyc, cyc[1:] + cyc[:1]):
                steps.append(f"{a} -[{sorted(by_pair[(a, b)])[0]}]-> ")
            out.append("call circle: " + "".join(steps) + cyc[0])
    return out, len(uses)


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.path.dirname(here), help="source root")
    ap.add_argument("--layers", default=None, help="layer table (default scripts/layers.txt)")
    ap.add_argument("--objects", nargs="+", default=[], metavar="PATH",
                    help="object files or directories of them (enables the call check)")
    ap.add_argument("--nm", default=os.environ.get("NM", "nm"), help="nm program")
    ap.add_argument("--report", action="store_true",
                    help="print the violations, exit 0 whatever they are")
    args = ap.parse_args(argv)

    root = os.path.abspath(args.root)
    layers_path = args.layers or os.path.join(root, "scripts", "layers.txt")
    try:
        layers = read_layers(layers_path)
        files = scanned_files(root)
        where, problems = layer_of_files(files, layers)
        for f in files:
            if f not in where:
                problems.append(f"{f}: in no layer of {os.path.relpath(layers_path, root)}")
        graph = include_graph(root, files)
        problems += check_includes(root, files, where, graph)
        ncalls = 0
        if args.objects:
            calls, ncalls = check_calls(args.nm, object_files(args.objects), files, where)
            problems += calls
    except (TableError, OSError) as e:
        print(f"check_layers: {e}", file=sys.stderr)
        return 2

    for p in problems:
        print(p)
    what = f"{len(files)} files in {len(layers)} layers"
    if args.objects:
        what += f", calls of {ncalls} objects"
    if problems:
        print(f"check_layers: {len(problems)} violations ({what})",
              file=sys.stderr if not args.report else sys.stdout)
        return 0 if args.report else 1
    print(f"check_layers: no violations ({what})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
