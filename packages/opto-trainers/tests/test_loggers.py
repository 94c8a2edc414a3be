"""Loggers: JSONL lines, TensorBoard events, silent console without verbose, install hints."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from opto import trace
from opto.optimizers import Optimizer
from opto.trace import node
from opto.trainers import (
    ConsoleLogger,
    ExactMatchGuide,
    JSONLLogger,
    MinibatchAlgorithm,
    MultiLogger,
)
from opto.trainers.loggers import MissingExtraError, MLflowLogger, TensorboardLogger


@trace.model
class Agent:
    def __init__(self):
        self.prompt = node("v0", trainable=True)

    def forward(self, x):
        return self.prompt + ""


class Toy(Optimizer):
    def _step(self, **kwargs):
        (p,) = self.parameters
        return {p: "v" + str(int(p.data[1:]) + 1)}


DATA = {"inputs": [1, 2, 3, 4], "infos": ["v2"] * 4}


def test_jsonl_logger_writes_one_line_per_record(tmp_path):
    path = tmp_path / "log.jsonl"
    agent = Agent()
    trainer = MinibatchAlgorithm(agent, Toy(agent.parameters()), logger=JSONLLogger(path))
    trainer.train(ExactMatchGuide(), DATA, batch_size=2, test_dataset=DATA)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    names = {r["name"] for r in records}
    assert {"Average test score", "Instantaneous train score", "Parameter: prompt"} <= names
    assert [r["data"] for r in records if r["name"] == "Parameter: prompt"] == ["v1", "v2"]


def test_jsonl_lines_follow_the_export_rule_and_repr_what_json_cannot_hold(tmp_path):
    path = tmp_path / "log.jsonl"
    logger = JSONLLogger(path)
    logger.log("scores", {"nan": float("nan"), "inf": float("inf"), "obj": object, "n": 2}, 3)
    logger.close()
    line = path.read_text().strip()
    record = json.loads(line, parse_constant=lambda token: pytest.fail(f"bare {token}"))
    assert record["data"] == {"nan": None, "inf": None, "obj": repr(object), "n": 2}


def test_nothing_is_printed_without_verbose(capsys):
    agent = Agent()
    MinibatchAlgorithm(agent, Toy(agent.parameters())).train(
        ExactMatchGuide(), DATA, batch_size=2, test_dataset=DATA
    )
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_nothing_is_printed_without_verbose_when_the_app_configures_no_logging(tmp_path):
    # pytest installs logging handlers, so run a plain script: a run that stops on its LLM
    # budget logs a warning, which Python's last-resort handler would print to stderr.
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import support as S\n"
        "from opto.trainers import MinibatchAlgorithm, ExactMatchGuide\n"
        "from opto.utils.testing import ScriptedLLM\n"
        "agent = S.EchoAgent()\n"
        "optimizer = S.StepOptimizer(agent.parameters(), ScriptedLLM(S.increment))\n"
        "data = {'inputs': [1, 2, 3, 4], 'infos': ['v2'] * 4}\n"
        "result = MinibatchAlgorithm(agent, optimizer).train(\n"
        "    ExactMatchGuide(), data, batch_size=2, max_llm_calls=4, verbose=False\n"
        ")\n"
        "assert result.stopped == 'budget', result.stopped\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_verbose_shows_progress_and_evaluation_table(capsys):
    agent = Agent()
    MinibatchAlgorithm(agent, Toy(agent.parameters()), logger=ConsoleLogger()).train(
        ExactMatchGuide(), DATA, batch_size=2, test_dataset=DATA, verbose=True
    )
    err = capsys.readouterr().err
    assert "Average test score" in err and re.search(r"2/2", err)


def test_tensorboard_logger_writes_events(tmp_path):
    pytest.importorskip("tensorboardX")
    logger = TensorboardLogger(tmp_path)
    MultiLogger([logger]).log("score", 0.5, 1)
    logger.log("text", "hello", 1)
    logger.close()
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_missing_extra_names_the_install_command():
    try:
        import mlflow  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"opto-trainers\[mlflow\]"):
            MLflowLogger()
    else:
        pytest.skip("mlflow is installed")


def test_jsonl_lines_are_standard_json(tmp_path):
    import math

    path = tmp_path / "log.jsonl"
    logger = JSONLLogger(path)
    logger.log("score", math.nan, 1)
    logger.log("scores", {"a": math.inf, "b": [1.5, -math.inf]}, 2)
    logger.close()

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    lines = [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]
    assert [line["data"] for line in lines] == [None, {"a": None, "b": [1.5, None]}]
