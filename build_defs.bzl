"""The macros BUILD is written with: a library per hit package, a binary per tool, a pytest target per test file.

Every `deps` list mixes two kinds of names: labels (":hit_core") stay as they are; any other name is a pip
distribution of requirements.txt. tests/test_build_file.py runs these macros with stub rules, since Bazel cannot
run offline here.
"""

load("@pypi//:requirements.bzl", "requirement")
load("@rules_python//python:defs.bzl", "py_binary", "py_library", "py_test")

def _deps(names):
    return [name if name.startswith(":") else requirement(name) for name in names]

def hit_library(name, srcs, deps = []):
    py_library(name = name, srcs = srcs, deps = _deps(deps))

def hit_package(name, deps = [], srcs = []):
    """:hit_<name>: every .py file under hit/<name>/ (sub-packages included, so new modules need no edit), + srcs."""
    hit_library("hit_" + name, native.glob(["hit/%s/**/*.py" % name]) + srcs, deps)

def hit_tool(name, deps = [], data = []):
    """:<name>: `bazel run` of tools/<name>.py; tests that run or import the tool list it too."""
    py_binary(
        name = name,
        srcs = ["tools/%s.py" % name],
        main = "tools/%s.py" % name,
        data = data,
        deps = _deps([":tools"] + deps),  # tools/__init__.py, for the tests' `import tools.<name>`
    )

def hit_test(name, size, deps = [], data = []):
    """:<name>: pytest on tests/<name>.py, under pytest.ini (two xdist workers) and tests/conftest.py.

    size: Bazel's timeout class (small 60 s, medium 300 s, large 900 s, enormous 3600 s), from the file's measured
    time in the whole suite; BUILD notes the seconds beside each test.
    """
    py_test(
        name = name,
        size = size,
        srcs = ["tests/%s.py" % name, "tests/pytest_main.py"],
        main = "tests/pytest_main.py",
        args = ["tests/%s.py" % name],
        data = ["pytest.ini"] + data,
        deps = _deps([":tests_conftest", "pytest", "pytest-xdist"] + deps),
    )
