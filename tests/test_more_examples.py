"""The examples beyond the quickstart run end to end under their scripted LLM stand-ins.

Each example takes `--llm scripted` (or `main(llm=...)`): a deterministic ScriptedLLM that
reads the prompts the way a capable model would. These tests assert what the examples
claim: the code gets fixed, the agent learns, the optimizers are compared on one budget, a
killed search resumes exactly, and the search gives the same result on Ray as on threads.
"""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    """Import `examples/<name>.py` as a module (examples are scripts, not a package)."""
    module_name = f"opto_example_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


# -- code_optimization.py --------------------------------------------------------------------


def test_code_optimization_fixes_the_sort_function_from_test_feedback(capsys):
    example = load("code_optimization")
    assert example.main(["--llm", "scripted"]) == 0
    out = capsys.readouterr().out
    assert "step 0: 4/7 tests pass" in out and "step 2: 7/7 tests pass" in out
    assert "Sorts 50 random lists correctly: True" in out

    result = example.optimize(example.make_llm("scripted"), show=False)
    assert result["passed"] == [4, 2, 7]  # the first attempt is worse; its feedback fixes it
    assert "for done in range(len(result))" in result["code"]
    assert result["generalizes"]


def test_code_optimization_rejects_forbidden_code_and_keeps_the_old_version():
    from opto.utils.testing import ScriptedLLM

    example = load("code_optimization")
    unsafe = (
        "def sort_numbers(numbers):\n"
        '    """Return a new list with the numbers in ascending order."""\n'
        "    import os\n"
        "    return sorted(numbers)\n"
    )
    replies = [
        json.dumps({"reasoning": "", "answer": "", "suggestion": {"__code0": unsafe}}),
        json.dumps({"reasoning": "", "answer": "", "suggestion": {"__code0": example._ATTEMPT_2}}),
    ]

    def reply(messages, **options):
        name = re.search(r"\(code\) (\w+):", messages[-1]["content"]).group(1)
        return replies.pop(0).replace("__code0", name)

    result = example.optimize(ScriptedLLM(reply), show=False)
    assert result["passed"] == [4, 4, 7]  # the `import os` suggestion changed nothing
    assert "import os" not in result["code"]


# -- sales_assistant.py ----------------------------------------------------------------------


def test_sales_assistant_learns_both_instructions_and_both_functions(capsys):
    example = load("sales_assistant")
    result = example.train(example.make_llm("scripted"))
    assert result["scores"] == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]  # before, then 6 steps
    params = result["parameters"]
    assert params["instruct1"] != "Decide the language"
    assert params["instruct2"] != "Extract name if it's there"
    assert 'greeting = "Hola" if lang == "es" else "Hello"' in params["greet"]
    assert 'return "es"' in params["decide_lang"]
    expected = {m: f"{example.GREETING[r['lang']]}, {r['name']}!" for m, r in example.MESSAGES}
    assert result["greetings"] == expected

    assert example.main(["--llm", "scripted", "--quiet", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "0.25 -> 0.50 -> 1.00 -> 1.00\n" in out and "-> Hola, Lucía!" in out


# -- prompt_optimization_bbh.py ----------------------------------------------------------------


def test_bbh_data_is_thirty_correctly_labelled_boolean_expressions():
    data = json.loads((EXAMPLES / "data" / "bbh_boolean_expressions.json").read_text())
    items = data["train"] + data["test"]
    assert len(items) == 30 and len(data["train"]) == 9
    assert len({item["input"] for item in items}) == 30
    for item in items:
        assert item["input"].endswith(" is")
        assert str(eval(item["input"][: -len(" is")])) == item["target"]


def test_bbh_compares_the_three_optimizers_on_the_same_budget(capsys):
    example = load("prompt_optimization_bbh")
    rows = {row["optimizer"]: row for row in example.compare(example.make_llm("scripted"))}
    assert list(rows) == ["OptoPrime", "TextGrad", "OPRO"]
    for row in rows.values():
        assert row["before"] == pytest.approx(7 / 21)  # same start for everyone
        assert row["calls"] <= 24  # the budget holds, solver calls included
    assert rows["OptoPrime"]["after"] == rows["OPRO"]["after"] == 1.0
    # TextGrad spends ~16 calls per step here: one step fits, so it learns only one rule
    assert rows["TextGrad"]["steps"] == 1 and rows["TextGrad"]["stopped"] == "budget"
    assert rows["TextGrad"]["before"] < rows["TextGrad"]["after"] < 1.0
    assert rows["OptoPrime"]["steps"] > rows["TextGrad"]["steps"]
    assert "`and` before `or`" in rows["OPRO"]["prompt"]

    assert example.main(["--llm", "scripted", "--budget", "40"]) == 0
    out = capsys.readouterr().out
    header, rule, *lines = out.split("\n\n")[1].splitlines()
    assert header.split(" | ")[0].strip() == "optimizer" and set(rule) <= {"-", "+"}
    assert [line.split(" | ")[2].strip() for line in lines] == ["1.00", "1.00", "1.00"]


# -- search_resume.py ------------------------------------------------------------------------


def _summary_without_name(summary):
    return {k: v for k, v in summary.items() if k != "run_name"}


# Trains the example's search in a child process whose scripted LLM (0.3 s a reply) blocks
# once `hold` depths are stored, until the test kills it. Arguments: example, URL, run, hold.
_HELD_TRAINING = """
import importlib.util, sys, time
path, url, name, hold = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
spec = importlib.util.spec_from_file_location("search_resume", path)
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
from opto.utils.testing import ScriptedLLM

def reply(messages, **options):
    time.sleep(0.3)
    if example.steps_stored(url, name) >= hold:
        time.sleep(600)
    return example.scripted_reply(messages, **options)

example.train(ScriptedLLM(reply), url, name)
"""


def test_search_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    pytest.importorskip("sqlalchemy", reason="checkpoints need opto-utils[storage]")
    example = load("search_resume")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    straight = example.train(example.make_llm("scripted"), url, "straight")
    assert straight["depths"] == 5 and straight["stopped"] == "completed"
    assert straight["parameters"]["slope"] > 1.7 and straight["parameters"]["offset"] > 30

    # The child trains like `search_resume.py --mode train --llm scripted`, but its LLM
    # stops replying once two depths are stored: under load it could otherwise finish the
    # search before the SIGKILL lands.
    child_args = [str(EXAMPLES / "search_resume.py"), url, "killed", "2"]
    child = subprocess.Popen(
        [sys.executable, "-c", _HELD_TRAINING, *child_args], stdout=subprocess.DEVNULL
    )
    try:
        while example.steps_stored(url, "killed") < 2 and child.poll() is None:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the search finished before it was killed"
    assert 2 <= example.steps_stored(url, "killed") < 5

    resumed = example.train(example.make_llm("scripted"), url, "killed", resume=True)
    assert _summary_without_name(resumed) == _summary_without_name(straight)

    from opto.trainers import cli

    assert cli.main(["--storage", url, "show", "killed"]) == 0
    shown = capsys.readouterr().out
    assert "steps:   5" in shown and "status:  completed" in shown
    assert "~ slope: 1.75 -> 1.775" in shown


def test_search_resume_demo_kills_its_own_child_and_resumes(tmp_path, capsys):
    pytest.importorskip("sqlalchemy", reason="checkpoints need opto-utils[storage]")
    example = load("search_resume")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    # The demo polls its child and kills it; the child must not finish the 3 remaining
    # depths before the kill lands, so the replies are slow (the resume is as slow).
    argv = ["--llm", "scripted", "--storage", url, "--run-name", "demo", "--delay", "1.0"]
    assert example.main(argv) == 0
    out = capsys.readouterr().out
    # Under load a further depth may be stored between the poll and the kill; any count
    # below 5 is a mid-run kill.
    killed = re.search(r"Killed it with SIGKILL after (\d) of 5 depths\.", out)
    assert killed and 2 <= int(killed.group(1)) < 5, out
    assert "Run 'demo': 5 depths, completed" in out
    assert f"opto-runs --storage {url} show demo" in out
    from opto.utils.storage import open_storage

    with open_storage(url) as storage:
        kinds = [event.kind for event in storage.list_events("demo")]
    assert kinds[:2] == ["started", "resumed"]


# -- ray_scaleout.py -------------------------------------------------------------------------


def test_ray_scaleout_reaches_the_same_parameters_on_threads_and_on_ray():
    pytest.importorskip("ray", reason="needs the extra opto-trainers[ray]")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "ray_scaleout.py"), "--llm", "scripted", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    threads, ray = runs["threads"], runs["ray"]
    assert threads["parameters"] == ray["parameters"]
    assert threads["parameters"]["instruction"] == "Reply in one word: billing, tech or sales."
    assert threads["validation"] == ray["validation"] == [1.0, 1.0, 1.0]
    assert ray["calls"] == threads["calls"] > 0  # remote LLM calls reach the driver's ledger


# -- multi_objective.py ----------------------------------------------------------------------


def test_multi_objective_trades_accuracy_against_cost(tmp_path, capsys):
    pytest.importorskip("sqlalchemy", reason="run storage needs sqlalchemy")
    example = load("multi_objective")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    assert example.main(["--llm", "scripted", "--storage", url]) == 0
    out = capsys.readouterr().out
    # Error alone always wants one more iteration; weighing the cost stops at the knee
    # (a 6th iteration cuts the error by 0.076 but costs 0.25), and the Pareto front's
    # weighted tie-break agrees.
    assert "error only: 8 Newton iterations" in out
    assert "weighted: 5 Newton iterations" in out
    assert "pareto: 5 Newton iterations" in out
    assert "step 4: validation=-1.327, validation/error=0.07721, validation/cost=5" in out

    from opto.trainers import cli

    assert cli.main(["--storage", url, "show", "multi-objective-weighted"]) == 0
    shown = capsys.readouterr().out
    assert "validation/cost=5" in shown and "validation/error=0.0772" in shown
    export = tmp_path / "run.json"
    assert cli.main(["--storage", url, "export", "multi-objective-pareto", "-o", str(export)]) == 0
    steps = json.loads(export.read_text())["steps"]
    assert [s["scores"]["validation/cost"] for s in steps] == [2, 3, 4, 5, 5, 5, 5, 5]
