"""The README's two commands are what CI and the tests run: command 2 (the fast tests) and the whole suite
verbatim in .ci/run after the same set-up script that command 1 starts with, and command 1's training part the
demo that test_main.py runs."""

import os
import re
import shlex

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def bash_blocks():
    """The commands of each bash block in the README's "Two commands" section."""
    section = read("README.md").split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [[line for line in block.splitlines() if line.strip() and not line.startswith("#")]
            for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def two_commands():
    commands = bash_blocks()[0]
    assert len(commands) == 2, commands
    return commands


def test_ci_runs_the_set_up_script_command_2_and_the_whole_suite_verbatim():
    setup_and_demo, fast = two_commands()
    (whole,) = bash_blocks()[1]
    setup, demo = setup_and_demo.split(" && ")
    assert setup == "bash tools/setup.sh"
    ci = [line.strip() for line in read(".ci/run").splitlines() if line.strip() and not line.startswith("#")]
    assert setup in ci and fast in ci and whole in ci
    assert ci.index(setup) < ci.index(fast) < ci.index(whole) == len(ci) - 1
    assert fast == '.venv/bin/python -m pytest -q -m "not slow"' and whole == ".venv/bin/python -m pytest -q"


def test_command_1_trains_the_demo_that_the_tests_run():
    demo = two_commands()[0].split(" && ")[1]
    argv = shlex.split(demo)
    assert argv[:3] == [".venv/bin/python", "-m", "hit.main"]
    assert "--gin_file=gin/demo/fashion_mnist_32.gin" in argv and "--model_dir=runs/demo" in argv
    assert os.path.exists(os.path.join(ROOT, "gin/demo/fashion_mnist_32.gin"))
    assert "--gin_file=gin/demo/fashion_mnist_32.gin" in read("tests/test_main.py")
    assert os.access(os.path.join(ROOT, "tools/setup.sh"), os.R_OK)
