"""BUILD stays true: every module and test has a target, every dep exists, every import is a dep, and every test
runs through pytest with a Bazel size.

Bazel cannot run offline here, so BUILD and the build_defs.bzl it loads run as Starlark-compatible Python with stub
rules: the macros really run, and glob really expands (relative to the repository root, `**` included).
"""

import ast
import glob
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ("hit", "tests", "tools")
# Top-level import name -> PyPI distribution in requirements.txt.
DISTRIBUTIONS = {
    "absl": "absl-py", "gin": "gin-config", "h5py": "h5py", "keras": "keras", "numpy": "numpy", "PIL": "pillow",
    "pytest": "pytest", "safetensors": "safetensors",
    "scipy": "scipy", "tensorboard": "tensorboard", "tensorflow": "tensorflow-cpu",
    "tensorflow_datasets": "tensorflow-datasets",
}
SIZES = ("small", "medium", "large", "enormous")


def bazel_glob(include, exclude=(), allow_empty=False):
    """Bazel's glob: files only, sorted; a pattern that matches nothing is an error (Bazel 8's default)."""
    def expand(pattern):
        return {p for p in glob.glob(pattern, root_dir=ROOT, recursive=True) if os.path.isfile(os.path.join(ROOT, p))}

    found = set()
    for pattern in include:
        assert expand(pattern) or allow_empty, f"glob({pattern!r}) matches nothing"
        found |= expand(pattern)
    return sorted(found - {p for pattern in exclude for p in expand(pattern)})


def read_build():
    """Target name -> its attributes, as BUILD declares them through the macros of build_defs.bzl."""
    targets = {}

    def rule(kind):
        def record(name, **kwargs):
            assert name not in targets, f"duplicate target {name}"
            targets[name] = {"kind": kind, **kwargs}
        return record

    rules = {kind: rule(kind) for kind in ("py_binary", "py_library", "py_test")}

    def run(path):
        """Executes a Starlark file; its global names, as load() hands them on."""
        def load(label, *symbols):
            if label == "@pypi//:requirements.bzl":
                module = {"requirement": lambda name: f"@pypi//{name}"}
            elif label == "@rules_python//python:defs.bzl":
                module = rules
            else:
                assert label.startswith("//:"), f"{path}: load({label!r}) is not a file of this package"
                module = run(label[len("//:"):])
            for symbol in symbols:
                scope[symbol] = module[symbol]

        scope = {"load": load, "package": lambda **kwargs: None, "glob": bazel_glob,
                 "native": types.SimpleNamespace(glob=bazel_glob)}
        with open(os.path.join(ROOT, path)) as f:
            exec(compile(f.read(), path, "exec"), scope)  # noqa: S102 (our own files)
        return scope

    run("BUILD")
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
    libraries = [src for t in targets.values() if t["kind"] == "py_library" for src in t["srcs"]]
    twice = sorted({src for src in libraries if libraries.count(src) > 1})
    assert not twice, f"in two libraries: {twice}"


def test_every_dep_exists():
    targets = read_build()
    requirements = requirement_names()
    for name, target in targets.items():
        for dep in target.get("deps", []):
            if dep.startswith("@pypi//"):
                assert dep[len("@pypi//"):] in requirements, f"{name}: {dep} is not in requirements.txt"
            else:
                assert dep.startswith(":") and dep[1:] in targets, f"{name}: unknown dep {dep}"
        for item in target.get("data", []):
            known = item[1:] in targets if item.startswith(":") else os.path.exists(os.path.join(ROOT, item))
            assert known, f"{name}: data {item} is neither a target nor a file"


def owners(targets):
    """File -> the target its imports are checked with: its library, else the binary (a tool) or test listing it."""
    owner = {}
    for kind in ("py_binary", "py_library"):  # libraries second: hit/main.py is :hit's, though :main lists it too
        for name, target in targets.items():
            if target["kind"] == kind:
                owner.update(dict.fromkeys(target["srcs"], name))
    return owner


def test_every_import_is_a_dep():
    """Package granularity: importing hit.gan.losses needs :hit_gan, unless the file is in :hit_gan itself."""
    targets = read_build()
    owner = owners(targets)
    stdlib = set(sys.stdlib_module_names)
    for name, target in targets.items():
        deps = set(target.get("deps", []))
        for src in target["srcs"]:
            if owner.get(src, name) != name:  # checked with its library, which this target must then depend on
                assert f":{owner[src]}" in deps, f"{name}: lists {src} of :{owner[src]}; add that dep"
                continue
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
        assert target["size"] in SIZES, f"{name}: size {target['size']!r} is not one of {SIZES}"
