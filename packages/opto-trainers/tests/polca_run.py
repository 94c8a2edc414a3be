"""The training script of test_polca's kill-and-resume test (not a test module).

`python polca_run.py DB RUN_NAME RESUME(0|1) [slow]` trains POLCA (epsilon-net on the
offline n-gram embeddings, summarizer on a scripted LLM) on the shared `Scale` task and
prints the result, the summarizer's state and the memory as JSON. `slow` slows the
optimizer's LLM and stops it once 3 steps are stored, so the test's SIGKILL lands mid-run.
"""

import json
import sys
import time

from opto.trainers import POLCA
from opto.utils.testing import ScriptedLLM
from support import DATA, NudgeOptimizer, Scale, TargetGuide, hold_once_stored, nudge

STEPS = 8


def summarize(messages, **kwargs):
    text = messages[-1]["content"]
    return f"<reasoning>seen</reasoning><summary>{text.count('too small')} too small</summary>"


def main(db, run_name, resume, slow):
    def slow_nudge(messages, **kwargs):
        if slow:
            time.sleep(0.05)
            hold_once_stored(db, run_name, 3)
        return nudge(messages)

    agent = Scale(-4)
    optimizer = NudgeOptimizer(agent.parameters(), ScriptedLLM(slow_nudge))
    trainer = POLCA(agent, optimizer, num_threads=2, seed=0)
    result = trainer.train(
        TargetGuide(),
        DATA,
        batch_size=2,
        num_candidates=2,
        num_proposals=2,
        num_steps=STEPS,
        use_summarizer=True,
        summarizer_llm=ScriptedLLM(summarize),
        storage=f"sqlite:///{db}",
        run_name=run_name,
        resume=resume,
    )
    return {
        "stopped": result.stopped,
        "parameters": result.final_parameters,
        "train_scores": result.train_scores,
        "n_iters": result.n_iters,
        "summarizer": trainer.summarizer.state_dict(),
        "memory": [c.to_dict() for c in trainer.memory],
    }


if __name__ == "__main__":
    db_path, name, resume_flag = sys.argv[1:4]
    slow = len(sys.argv) > 4
    print(json.dumps(main(db_path, name, resume_flag == "1", slow)))
