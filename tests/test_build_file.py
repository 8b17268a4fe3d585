"""BUILD stays true: every module and test has a target, every dep exists, and every import is a dep.

Bazel cannot run offline here, so BUILD is read as Starlark-compatible Python with stub rules.
"""

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ("hit", "tests", "tools")
# Top-level import name -> PyPI distribution in requirements.txt.
DISTRIBUTIONS = {
    "absl": "absl-py", "gin": "gin-config", "h5py": "h5py", "keras": "keras", "numpy": "numpy", "PIL": "pillow",
    "pytest": "pytest", "safetensors": "safetensors",
    "scipy": "scipy", "tensorboard": "tensorboard", "tensorflow": "tensorflow-cpu",
    "tensorflow_datasets": "tensorflow-datasets",
}


def read_build():
    targets = {}

    def rule(kind):
        def record(name, **kwargs):
            assert name not in targets, f"duplicate target {name}"
            targets[name] = {"kind": kind, **kwargs}
        return record

    scope = {
        "load": lambda *args: None, "package": lambda **kwargs: None, "glob": lambda patterns: [],
        "requirement": lambda name: f"@pypi//{name}",
        "py_library": rule("py_library"), "py_test": rule("py_test"), "py_binary": rule("py_binary"),
    }
    with open(os.path.join(ROOT, "BUILD")) as f:
        exec(compile(f.read(), "BUILD", "exec"), scope)  # noqa: S102 (our own file)
    return targets


def python_files():
    for top in SOURCE_DIRS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    yield os.path.relpath(os.path.join(dirpath, name), ROOT)


def requirement_names():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return {line.split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip() for line in lines if line}


def imports_of(path):
    """Top-level module names and hit.* module paths imported by a file."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_file(name):
    """hit.layers.attention -> hit/layers/attention.py (or the package's __init__.py), else None."""
    base = os.path.join(*name.split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.exists(os.path.join(ROOT, candidate)):
            return candidate
    return None


def test_every_python_file_is_in_a_target_and_every_src_exists():
    targets = read_build()
    named = {src for t in targets.values() for src in t.get("srcs", [])}
    missing = sorted(set(python_files()) - named)
    assert not missing, f"not named by any BUILD target: {missing}"
    absent = sorted(src for src in named if not os.path.exists(os.path.join(ROOT, src)))
    assert not absent, f"BUILD names files that do not exist: {absent}"


def test_every_dep_exists():
    targets = read_build()
    requirements = requirement_names()
    for name, target in targets.items():
        for dep in target.get("deps", []):
            if dep.startswith("@pypi//"):
                assert dep[len("@pypi//"):] in requirements, f"{name}: {dep} is not in requirements.txt"
            else:
                assert dep.startswith(":") and dep[1:] in targets, f"{name}: unknown dep {dep}"


def test_every_import_is_a_dep():
    targets = read_build()
    owner = {}
    for name, target in targets.items():
        if target["kind"] == "py_library":
            for src in target["srcs"]:
                owner[src] = name
    stdlib = set(sys.stdlib_module_names)
    for name, target in targets.items():
        deps = set(target.get("deps", []))
        for src in target["srcs"]:
            for module in imports_of(src):
                top = module.split(".")[0]
                if top in ("hit", "tests", "tools"):
                    path = module_file(module)
                    if path is None or owner.get(path, name) == name:
                        continue  # a name imported from a module, or the target's own file
                    assert f":{owner[path]}" in deps, f"{name}: {src} imports {module}; add :{owner[path]}"
                elif top not in stdlib:
                    assert top in DISTRIBUTIONS, f"{src} imports {top}: add it to DISTRIBUTIONS"
                    assert f"@pypi//{DISTRIBUTIONS[top]}" in deps, f"{name}: {src} imports {top}"


def test_tests_run_through_pytest_with_the_conftest():
    targets = read_build()
    test_files = {p for p in python_files() if os.path.basename(p).startswith("test_")}
    tests = {n: t for n, t in targets.items() if t["kind"] == "py_test"}
    assert {t["args"][0] for t in tests.values()} == test_files
    for name, target in tests.items():
        assert target["main"] == "tests/pytest_main.py", name
        assert ":tests_conftest" in target["deps"], name
