#!/usr/bin/python3
"""check-layout.py — the rules of the house that a compiler does not check.

  1. No include circle in lib/, nginx/ or gateway/: a file and its header
     are one node (X.c and X.h), and X includes Y when X.c or X.h includes
     Y.h. In nginx/, where every .c has a header of its own, that is also
     "no two files call each other".
  2. In nginx/, every .c but the module's own has a header of the same
     name, which declares the functions the .c exports and nothing else.
  3. No function in nginx/ is longer than MAX_LINES lines unless the
     comment above it says why, with "Long:".

Prints what it finds and exits 1, or prints nothing and exits 0.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MAX_LINES = 80
DIRS = ["lib/core", "lib/store", "lib", "nginx", "gateway"]
INCLUDE = re.compile(r'^#include "([^"]+)"', re.M)


def sources():
    for d in DIRS:
        path = os.path.join(ROOT, d)
        for name in sorted(os.listdir(path)):
            if name.endswith((".c", ".h")):
                yield os.path.join(d, name)


def node(path):
    return os.path.splitext(path)[0]


def resolve(including, header):
    """The repository path of an #include "header" seen in including."""
    for base in (os.path.dirname(including), "lib", "nginx", "gateway"):
        cand = os.path.normpath(os.path.join(base, header))
        if os.path.exists(os.path.join(ROOT, cand)):
            return cand
    return None


def include_graph(files):
    graph = {}
    for f in files:
        with open(os.path.join(ROOT, f)) as fh:
            text = fh.read()
        edges = graph.setdefault(node(f), set())
        for h in INCLUDE.findall(text):
            target = resolve(f, h)
            if target is not None and node(target) != node(f):
                edges.add(node(target))
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                cycle = visit(m)
                if cycle:
                    return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            cycle = visit(n)
            if cycle:
                return cycle
    return None


FUNC = re.compile(r"^([a-z_][a-z0-9_ \*]*\n)?(\w+)\(([^;{]*?)\)\n\{", re.M)
DECL = re.compile(r"^[a-z_][\w \*]*?\**(\w+)\(", re.M)


def functions(text):
    """(name, is static, first line, line count, comment above) of each
    function defined in text, nginx style (type on its own line)."""
    out = []
    for m in FUNC.finditer(text):
        rettype = m.group(1) or ""
        start = text.count("\n", 0, m.start(2))
        end = text.index("\n}\n", m.end())
        length = text.count("\n", m.start(2), end) + 1
        above = text[:m.start()].rstrip()
        comment = above[above.rfind("/*"):] if above.endswith("*/") else ""
        out.append((m.group(2), rettype.startswith("static"), start + 1,
                    length, comment))
    return out


def check_nginx(problems):
    d = os.path.join(ROOT, "nginx")
    for name in sorted(os.listdir(d)):
        if not name.endswith(".c"):
            continue
        path = os.path.join(d, name)
        with open(path) as fh:
            text = fh.read()
        funcs = functions(text)
        for fn, static, line, length, comment in funcs:
            if length > MAX_LINES and "Long:" not in comment:
                problems.append("nginx/%s:%d: %s is %d lines (over %d, and "
                                "no \"Long:\" above it)"
                                % (name, line, fn, length, MAX_LINES))
        if name == "ngx_http_idempotency_module.c":
            continue
        header = os.path.join(d, name[:-2] + ".h")
        if not os.path.exists(header):
            problems.append("nginx/%s has no header of its own" % name)
            continue
        with open(header) as fh:
            htext = fh.read()
        declared = set(DECL.findall(re.sub(r"/\*.*?\*/", "", htext,
                                           flags=re.S)))
        exported = {fn for fn, static, *_ in funcs if not static}
        for fn in sorted(exported - declared):
            problems.append("nginx/%s exports %s, which its header does not "
                            "declare" % (name, fn))
        for fn in sorted(declared - exported - {"ngx_http_idempotency"}):
            if fn.startswith("ngx_http_idempotency_"):
                problems.append("nginx/%s declares %s, which the .c does "
                                "not define" % (os.path.basename(header), fn))


def main():
    problems = []
    files = list(sources())
    cycle = find_cycle(include_graph(files))
    if cycle:
        problems.append("include circle: " + " -> ".join(cycle))
    check_nginx(problems)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
