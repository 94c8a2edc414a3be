"""A run killed with SIGKILL mid-epoch and resumed ends exactly like an uninterrupted run.

The file is also the training script: `python test_resume_kill.py DB RUN_NAME RESUME
[HOLD] [ALGORITHM]` trains (MinibatchAlgorithm by default, or a search trainer of
`opto.trainers`) under a deterministic scripted LLM and prints the result as JSON. A HOLD
above 0 makes the LLM slow and stops it once HOLD steps are stored, so the test's signal
always lands mid-run.
"""

import json
import re
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("sqlalchemy", reason="checkpoints need opto-utils[storage]")

STEPS = 8  # 16 examples, batch 2, 1 epoch

#: Keywords of the search trainers killed and resumed here (beside MinibatchAlgorithm).
SEARCHES = {
    "StreamingPrioritySearch": dict(num_candidates=3, num_proposals=1),
    "ParetobasedPS": dict(num_candidates=2, num_proposals=1),
}


def train(db, run_name, resume, hold, algorithm="MinibatchAlgorithm"):
    # Run as a script, so this file's directory is on sys.path: the shared test support
    # imports as plain `support`.
    import opto.trainers
    from opto.trainers import ExactMatchGuide, MinibatchAlgorithm
    from opto.utils.testing import ScriptedLLM
    from support import StepOptimizer, hold_once_stored, prompt_agent

    def agent_reply(messages, **kwargs):
        if hold:
            time.sleep(0.05)
            hold_once_stored(db, run_name, hold)
        prompt, x = messages[-1]["content"].split("|")
        return prompt if int(x) % 3 else prompt + "!"

    Agent = prompt_agent(ScriptedLLM(agent_reply))

    def propose(messages, **kwargs):
        text = messages[-1]["content"]
        number = int(re.search(r"value=v(\d+)", text).group(1))
        return f"v{(number * 3 + text.count('Incorrect') + 1) % 5}"

    agent = Agent()
    optimizer = StepOptimizer(agent.parameters(), ScriptedLLM(propose), show_feedback=True)
    if algorithm == "MinibatchAlgorithm":
        trainer, options = MinibatchAlgorithm(agent, optimizer, 2, seed=3), {}
    else:
        trainer = getattr(opto.trainers, algorithm)(agent, optimizer, num_threads=2, seed=3)
        options = SEARCHES[algorithm]
    data = {"inputs": list(range(16)), "infos": [f"v{i % 4}" for i in range(16)]}
    result = trainer.train(
        ExactMatchGuide(),
        data,
        batch_size=2,
        test_dataset=data,
        eval_frequency=3,
        storage=f"sqlite:///{db}",
        run_name=run_name,
        resume=resume,
        **options,
    )
    return {
        "stopped": result.stopped,
        "parameters": result.final_parameters,
        "train_scores": result.train_scores,
        "test_scores": result.test_scores,
        "n_iters": result.n_iters,
        "n_epochs": result.n_epochs,
    }


def _script(tmp_path, name, *extra):
    return [sys.executable, __file__, str(tmp_path / "runs.db"), name, *extra]


def _steps_done(db, name):
    import opto_trainers_test_support as S

    return S.steps_done(db, name)


@pytest.mark.parametrize("algorithm", ["MinibatchAlgorithm", *SEARCHES])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, algorithm):
    import opto_trainers_test_support as S

    uninterrupted = S.run_script(_script(tmp_path, "full", "0", "0", algorithm))
    assert uninterrupted["n_iters"] == STEPS
    S.kill_once_stored(
        _script(tmp_path, "killed", "0", "3", algorithm), tmp_path / "runs.db", "killed", 3
    )
    assert 3 <= _steps_done(tmp_path / "runs.db", "killed") < STEPS
    resumed = S.run_script(_script(tmp_path, "killed", "1", "0", algorithm))
    assert resumed == uninterrupted


def test_ctrl_c_stops_cleanly_and_resume_matches_uninterrupted(tmp_path):
    db = tmp_path / "runs.db"
    import opto_trainers_test_support as S

    uninterrupted = S.run_script(_script(tmp_path, "full", "0"))
    child = subprocess.Popen(
        _script(tmp_path, "interrupted", "0", "2"), stdout=subprocess.PIPE, text=True
    )
    while _steps_done(db, "interrupted") < 2 and child.poll() is None:
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate()
    assert child.returncode == 0
    stopped = json.loads(out)
    assert stopped["stopped"] == "interrupted" and 2 <= stopped["n_iters"] < STEPS
    assert S.run_script(_script(tmp_path, "interrupted", "1")) == uninterrupted


if __name__ == "__main__":
    from support import release_holds_on_sigint

    release_holds_on_sigint()  # the Ctrl-C test's run evaluates once more after the signal
    db_path, name, resume_flag = sys.argv[1:4]
    hold_after = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    algorithm = sys.argv[5] if len(sys.argv) > 5 else "MinibatchAlgorithm"
    print(json.dumps(train(db_path, name, resume_flag == "1", hold_after, algorithm)))
