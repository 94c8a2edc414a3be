"""Loggers: JSONL lines, TensorBoard events and MLflow runs read back, silent console
without verbose, install hints.

The TensorBoard and MLflow tests need `opto-trainers[tensorboard]` / `[mlflow]`; the
`loggers` nox session sets OPTO_REQUIRE_LOGGERS=1, which turns a missing extra into a failure.
"""

import importlib
import json
import os
import re
import struct
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
    test_steps = [r["step"] for r in records if r["name"] == "Average test score"]
    assert test_steps == sorted(set(test_steps))  # one record per evaluation


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


def _extra(module: str):
    """The module of an optional extra: a skip without it, unless the `loggers` nox session
    (OPTO_REQUIRE_LOGGERS=1) makes these tests mandatory."""
    if os.environ.get("OPTO_REQUIRE_LOGGERS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def _read_events(path: Path) -> list:
    """The `Event` records of a TensorBoard event file (TFRecord framing, CRCs checked)."""
    from tensorboardX.crc32c import crc32c
    from tensorboardX.proto.event_pb2 import Event

    def masked(data: bytes) -> int:
        crc = crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    events, raw, offset = [], path.read_bytes(), 0
    while offset < len(raw):
        header = raw[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", raw[offset + 8 : offset + 12])[0] == masked(header)
        data = raw[offset + 12 : offset + 12 + length]
        assert struct.unpack("<I", raw[offset + 12 + length : offset + 16 + length])[0] == masked(
            data
        )
        events.append(Event.FromString(data))
        offset += 16 + length
    return events


def test_tensorboard_logger_events_read_back(tmp_path):
    _extra("tensorboardX")
    agent = Agent()
    logger = TensorboardLogger(tmp_path)
    MinibatchAlgorithm(agent, Toy(agent.parameters()), logger=MultiLogger([logger])).train(
        ExactMatchGuide(), DATA, batch_size=2, test_dataset=DATA
    )
    (path,) = [p for p in tmp_path.iterdir() if p.name.startswith("events.out.tfevents")]
    scalars, texts = {}, {}
    for event in _read_events(path):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
            else:
                texts.setdefault(value.tag, []).append(
                    (event.step, value.tensor.string_val[0].decode())
                )
    # The prompt goes v0 -> v1 -> v2; only v2 matches the expected answers. Scalar tags
    # have spaces replaced by `_` (tensorboardX's rule for tag names).
    assert sorted(set(scalars["Average_test_score"])) == [(0, 0.0), (1, 0.0), (2, 1.0)]
    assert scalars["Instantaneous_train_score"] == [(1, 0.0), (2, 0.0)]
    assert texts["Parameter: prompt/text_summary"] == [(1, "v1"), (2, "v2")]


def test_mlflow_logger_file_store_read_back(tmp_path, monkeypatch):
    _extra("mlflow")
    from mlflow.tracking import MlflowClient

    # MLflow 3 keeps local file stores for existing users only, behind this switch.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    # set_tracking_uri also exports MLFLOW_TRACKING_URI: restored after the test.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    agent = Agent()
    logger = MLflowLogger(experiment="opto-test", run_name="toy", tracking_uri=uri)
    run_id = logger._mlflow.active_run().info.run_id
    MinibatchAlgorithm(agent, Toy(agent.parameters()), logger=logger).train(
        ExactMatchGuide(), DATA, batch_size=2, test_dataset=DATA
    )
    logger.close()
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "toy"
    assert client.get_experiment(run.info.experiment_id).name == "opto-test"
    history = client.get_metric_history(run_id, "Average test score")
    assert sorted({(m.step, m.value) for m in history}) == [(0, 0.0), (1, 0.0), (2, 1.0)]
    # Text is an artifact per step, under the metric key with unsafe characters replaced.
    folder = client.download_artifacts(run_id, "Parameter__prompt", str(tmp_path / "out"))
    assert (Path(folder) / "step_1.txt").read_text() == "v1"
    assert (Path(folder) / "step_2.txt").read_text() == "v2"


def test_mlflow_logger_default_store_read_back(tmp_path):
    # MLflow's default store (sqlite:///mlflow.db under MLflow 3, ./mlruns before) must work
    # with what the `mlflow` extra installs. A fresh process: the tracking URI is global.
    _extra("mlflow")
    script = tmp_path / "run.py"
    script.write_text(
        "import json\n"
        "from mlflow.tracking import MlflowClient\n"
        "from opto.trainers.loggers import MLflowLogger\n"
        "logger = MLflowLogger(experiment='opto-default', run_name='r')\n"
        "run_id = logger._mlflow.active_run().info.run_id\n"
        "logger.log_table(3, {'score': 0.25, 'note': 'ok'})\n"
        "logger.close()\n"
        "client = MlflowClient()\n"
        "history = client.get_metric_history(run_id, 'score')\n"
        "print(json.dumps([client.get_run(run_id).info.status,\n"
        "                  [(m.step, m.value) for m in history]]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == ["FINISHED", [[3, 0.25]]]


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
