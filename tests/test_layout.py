"""The package layout holds: imports go from higher levels to lower ones only, no module imports itself round a
cycle, package __init__ files hold only their docstring, and a low-level import loads no model it does not use.

Read statically with `ast` (nothing is imported), over every import in hit/, those inside functions included.
`python tests/test_layout.py` prints the import graph: each module and the hit modules it imports.
"""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lowest first. A module may import its own package and any lower level; data and gan share a level and may not
# import each other. "root" is hit.main and hit.configs.
LEVELS = {"core": 0, "layers": 1, "models": 2, "data": 3, "gan": 3, "train": 4, "tasks": 5, "eval": 6,
          "inference": 7, "bench": 8, "root": 9}
ROOT_FILES = {"__init__.py", "main.py", "configs.py"}
# Known violations, each "importer -> imported": why it is allowed for now. Empty: there are none.
ALLOWED = {}


def modules():
    """Module name -> path relative to ROOT, for every .py file under hit/."""
    found = {}
    for dirpath, dirnames, files in os.walk(os.path.join(ROOT, "hit")):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in files:
            if name.endswith(".py"):
                path = os.path.relpath(os.path.join(dirpath, name), ROOT)
                parts = path[:-len(".py")].split(os.sep)
                found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path, known):
    """(line, hit module) for every hit import of a file: `from a.b import c` is a.b.c when that is a module."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; write the absolute one"
            found += [(node.lineno, f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known
                       else node.module) for alias in node.names]
    return sorted({(line, name) for line, name in found if name == "hit" or name.startswith("hit.")})


def import_graph():
    """Module -> sorted hit modules it imports (the package `hit` itself left out: Python runs it first anyway)."""
    known = modules()
    return {module: sorted({name for _, name in imports(path, known) if name != "hit"})
            for module, path in sorted(known.items())}


def level_of(module):
    """(package, level): hit.gan.losses is ("gan", 3); hit.main and hit.configs are ("root", 9)."""
    parts = module.split(".")
    package = parts[1] if len(parts) > 1 and os.path.isdir(os.path.join(ROOT, "hit", parts[1])) else "root"
    assert package in LEVELS, f"{module}: package hit.{package} has no level in LEVELS"
    return package, LEVELS[package]


def test_imports_go_down_the_levels():
    known = modules()
    wrong = []
    for module, path in sorted(known.items()):
        if module == "hit":
            continue
        package, level = level_of(module)
        for line, name in imports(path, known):
            if name == "hit":
                continue  # the root package's environment defaults; Python runs them before any hit module
            to_package, to_level = level_of(name)
            if to_package == package or to_level < level:
                continue
            if f"{module} -> {name}" not in ALLOWED:
                wrong.append(f"{path}:{line}: {module} ({package}, level {level}) imports {name} "
                             f"({to_package}, level {to_level})")
    assert not wrong, "imports against the levels (lowest first: core, layers, models, data|gan, train, tasks, " \
        "eval, inference, bench, root):\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = import_graph()
    done, path = set(), []

    def visit(module):  # depth-first; a module met again while still on the path closes a cycle
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for name in graph.get(module, ()):
            cycle = visit(name)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in graph:
        cycle = visit(module)
        assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_package_inits_hold_only_a_docstring():
    for module, path in modules().items():
        if not path.endswith("__init__.py"):
            continue
        with open(os.path.join(ROOT, path)) as f:
            body = ast.parse(f.read()).body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        if module == "hit":  # `import os` and the two environment defaults, read before TensorFlow's import
            lines = [ast.unparse(node) for node in body]
            assert lines[0] == "import os" and len(lines) <= 3, f"{path}: {lines}"
            assert all(line.startswith("os.environ.setdefault(") for line in lines[1:]), f"{path}: {lines}"
        else:
            assert not body, f"{path}:{body[0].lineno}: a package __init__ holds only its docstring"


def test_the_root_holds_only_main_and_configs():
    entries = os.listdir(os.path.join(ROOT, "hit"))
    files = {e for e in entries if os.path.isfile(os.path.join(ROOT, "hit", e))}
    assert files <= ROOT_FILES, f"hit/ holds only {sorted(ROOT_FILES)} and packages; found {sorted(files - ROOT_FILES)}"
    packages = {e for e in entries if os.path.isdir(os.path.join(ROOT, "hit", e)) and e != "__pycache__"}
    assert packages <= set(LEVELS), f"packages without a level: {sorted(packages - set(LEVELS))}"


@pytest.mark.slow
def test_low_level_imports_load_no_models():
    # What each import loads, from fresh interpreters (in parallel: each spends its time importing TensorFlow).
    forbidden = {"hit.train.checkpoints": ("hit.models.", "hit.tasks.", "hit.data."),
                 "hit.eval.evaluator": ("hit.tasks.", "hit.train.trainer")}
    code = "import {}, sys; print(' '.join(sorted(m for m in sys.modules if m.startswith('hit.'))))"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    runs = {module: subprocess.Popen([sys.executable, "-c", code.format(module)], cwd=ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE) for module in forbidden}
    for module, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, f"import {module} failed:\n{err[-2000:]}"
        loaded = [m for m in out.split() if m.startswith(forbidden[module]) or m in forbidden[module]]
        assert not loaded, f"import {module} loads {loaded}"


if __name__ == "__main__":
    for module, names in import_graph().items():
        print(f"{module} -> {', '.join(names) if names else '(none)'}")
