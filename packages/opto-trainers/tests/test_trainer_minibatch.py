"""MinibatchAlgorithm and BasicSearchAlgorithm under a deterministic scripted LLM."""

import threading

import opto_trainers_test_support as S
import pytest
from opto import trace
from opto.optimizers import Optimizer
from opto.trace import bundle, node
from opto.trainers import (
    AlgorithmBase,
    BasicSearchAlgorithm,
    ExactMatchGuide,
    MinibatchAlgorithm,
    Trainer,
    TrainResult,
)
from opto.trainers.algorithms.base import UnknownTrainArgumentError
from opto.trainers.loader import DatasetError
from opto.utils.testing import ScriptedLLM

Agent = S.EchoAgent
Toy = S.StepOptimizer
increment = S.increment

DATA = {"inputs": list(range(6)), "infos": ["v3"] * 6}


def test_minibatch_batched_feedback_and_result():
    agent = Agent()
    optimizer = Toy(agent.parameters(), ScriptedLLM(increment))
    trainer = MinibatchAlgorithm(agent, optimizer, num_threads=4, seed=0)
    result = trainer.train(ExactMatchGuide(), DATA, batch_size=3, num_epochs=2, test_dataset=DATA)
    assert isinstance(result, TrainResult)
    assert result.n_iters == 4 and result.n_epochs == 2
    assert result.final_parameters == {"prompt": "v4"}
    assert [t["step"] for t in result.test_scores] == [0, 1, 2, 3, 4]
    assert [t["score"] for t in result.test_scores] == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert result.best_score == 1.0 and result.best_parameters == {"prompt": "v3"}
    scores, test_score = result  # the reference's return shape
    assert scores == [0.0, 0.0, 0.0, 1.0] and test_score == 0.0
    assert "ID [0]:" in optimizer.seen[0] and "ID [2]:" in optimizer.seen[0]
    assert result.usage["calls"] == 4 * 3 + 4 + 5 * 6
    assert AlgorithmBase is Trainer


def test_unknown_keywords_and_bad_data_are_errors():
    trainer = MinibatchAlgorithm(Agent(), Toy(Agent().parameters(), ScriptedLLM(increment)))
    with pytest.raises(UnknownTrainArgumentError, match="did you mean 'batch_size'"):
        trainer.train(ExactMatchGuide(), DATA, batchsize=2)
    with pytest.raises(DatasetError, match="larger than the training set"):
        trainer.train(ExactMatchGuide(), DATA, batch_size=7)
    with pytest.raises(DatasetError, match="infos"):
        trainer.train(ExactMatchGuide(), {"inputs": [1, 2], "infos": [1]})
    with pytest.raises(TypeError, match="trace Module"):
        MinibatchAlgorithm(object(), None)


@pytest.mark.parametrize("cls", [MinibatchAlgorithm, BasicSearchAlgorithm])
def test_minibatch_family_needs_an_optimizer_at_construction(cls):
    with pytest.raises(ValueError, match=r"needs an optimizer: pass one"):
        cls(Agent())
    with pytest.raises(ValueError, match=r"needs an optimizer: pass one"):
        cls(Agent(), None)


def test_ensure_improvement_rolls_back_worse_updates():
    agent = Agent()
    agent.prompt._set("v3")
    optimizer = Toy(agent.parameters(), ScriptedLLM(increment))
    trainer = MinibatchAlgorithm(agent, optimizer)
    result = trainer.train(ExactMatchGuide(), DATA, batch_size=2, ensure_improvement=True)
    assert result.final_parameters == {"prompt": "v3"}  # v4 scored worse each time
    assert result.train_scores == [1.0, 1.0, 1.0]


def test_basic_search_picks_the_best_proposal_and_keeps_the_current():
    agent = Agent()
    optimizer = Toy(agent.parameters(), ScriptedLLM(default="v5", rules=[]))
    replies = iter(["v5", "v3", "v9", "v1"])
    lock = threading.Lock()

    def proposals(messages, **kwargs):
        with lock:
            return next(replies, "v7")

    optimizer.llm = ScriptedLLM(proposals)
    trainer = BasicSearchAlgorithm(agent, optimizer, num_threads=8)
    result = trainer.train(ExactMatchGuide(), DATA, batch_size=2, num_proposals=4, max_steps=2)
    assert result.final_parameters == {"prompt": "v3"}
    # step 2: every proposal is v7 (score 0), so the current v3 (cached score 1) stays
    assert [h["scores"]["validation"] for h in result.history] == [1.0, 1.0]
    assert result.best_parameters == {"prompt": "v3"}


def test_validation_failure_never_leaves_a_candidate_in_the_agent():
    agent = Agent()
    optimizer = Toy(agent.parameters(), ScriptedLLM(default="v2"))
    calls = []

    class Exploding(ExactMatchGuide):
        def metric(self, query, response, reference=None, **kwargs):
            calls.append(response)
            if response == "v2":
                raise RuntimeError("validator crashed")
            return super().metric(query, response, reference)

    trainer = BasicSearchAlgorithm(agent, optimizer, num_threads=4)
    with pytest.raises(Exception, match="max_errors"):
        trainer.train(
            ExactMatchGuide(),
            DATA,
            validate_guide=Exploding(),
            batch_size=2,
            max_errors=0,
            min_score=0.0,
        )
    assert agent.prompt.data == "v0" and "v2" in calls


def test_train_entry_point_wraps_a_parameter_node():
    from opto.trainers import FunctionGuide, train

    param = node("v0", trainable=True)
    guide = FunctionGuide(lambda q, r, ref: (float(r == ref), f"want {ref}"))
    result = train(
        model=param,
        train_dataset={"inputs": [None], "infos": ["v2"]},
        optimizer=Toy([param], ScriptedLLM(increment)),
        guide=guide,
        logger="JSONLLogger",
        logger_kwargs={"path": "/dev/null"},
        num_epochs=3,
    )
    assert result.final_parameters == {"parameter": "v3"} and result.train_scores == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="unknown algorithm 'Nope'"):
        train(
            model=param, train_dataset=[(None, 1)], algorithm="Nope", optimizer=Toy([param], None)
        )


def test_validation_runs_every_candidate_and_example_at_once():
    """(3 proposals + the current) x 2 validation examples = 8 calls meet at one barrier."""
    barrier = threading.Barrier(8, timeout=60)
    validating = threading.Event()

    def agent_reply(messages, **kwargs):
        if validating.is_set():
            barrier.wait()  # breaks (BrokenBarrierError) unless all 8 calls are in flight
        return messages[-1]["content"].split("|")[0]

    llm = ScriptedLLM(agent_reply)

    @bundle()
    def reply(prompt, x):
        """Answer."""
        return llm(messages=[{"role": "user", "content": f"{prompt}|{x}"}]).content

    @trace.model
    class Waiting:
        def __init__(self):
            self.prompt = node("v0", trainable=True)

        def forward(self, x):
            return reply(self.prompt, x)

    names = iter(["v1", "v2", "v3"])
    lock = threading.Lock()

    def propose(messages, **kwargs):
        with lock:
            value = next(names)
        if value == "v3":
            validating.set()  # all proposals are drawn; validation comes next
        return value

    agent = Waiting()
    trainer = BasicSearchAlgorithm(agent, Toy(agent.parameters(), ScriptedLLM(propose)), 8)
    data = {"inputs": [1, 2], "infos": ["v3", "v3"]}
    result = trainer.train(
        ExactMatchGuide(),
        data,
        batch_size=2,
        num_proposals=3,
        max_steps=1,
        validate_dataset=data,
        eval_frequency=0,
    )
    assert result.final_parameters == {"prompt": "v3"}


@pytest.mark.parametrize(("threshold", "kept"), [(0.0, "v3"), (1.0, "v3"), (1.5, "v2")])
def test_improvement_threshold_tightens_acceptance(threshold, kept):
    agent = Agent()
    agent.prompt._set("v2")
    optimizer = Toy(agent.parameters(), ScriptedLLM(default="v3"))
    result = MinibatchAlgorithm(agent, optimizer).train(
        ExactMatchGuide(),
        {"inputs": [1, 2], "infos": ["v3", "v3"]},
        batch_size=2,
        ensure_improvement=True,
        improvement_threshold=threshold,
    )
    assert result.final_parameters == {"prompt": kept}  # the update gains exactly 1.0


def test_basic_search_keeps_the_current_parameters_on_a_tie():
    from opto.trainers import BasicSearchAlgorithm, ExactMatchGuide
    from opto.trainers.executors import SerialExecutor

    @trace.model
    class Echo:
        def __init__(self):
            self.prompt = trace.node("v0", trainable=True)

        def forward(self, x):
            return self.prompt + ""

    class Next(Optimizer):
        def _step(self, **kwargs):
            (p,) = self.parameters
            return {p: "v" + str(int(p.data[1:]) + 1)}

    agent = Echo()
    data = {"inputs": [1, 2], "infos": ["never"] * 2}  # every candidate scores 0
    trainer = BasicSearchAlgorithm(agent, Next(agent.parameters()), executor=SerialExecutor())
    result = trainer.train(ExactMatchGuide(), data, batch_size=2, num_epochs=2, num_proposals=2)
    assert result.final_parameters == {"prompt": "v0"}
    assert agent.prompt.data == "v0"


@pytest.mark.parametrize("cls", ["MinibatchAlgorithm", "BasicSearchAlgorithm", "PrioritySearch"])
def test_a_plain_function_as_guide_is_a_clear_error(cls):
    import opto.trainers

    agent = Agent()
    trainer = getattr(opto.trainers, cls)(agent, Toy(agent.parameters(), ScriptedLLM(increment)))

    def score(query, response, reference):
        return float(response == reference)

    with pytest.raises(TypeError, match=r"FunctionGuide\(fn\)"):
        trainer.train(score, DATA, batch_size=2)
    with pytest.raises(TypeError, match="test_guide"):
        trainer.train(ExactMatchGuide(), DATA, batch_size=2, test_dataset=DATA, test_guide=score)
    assert agent.prompt.data == "v0"  # nothing ran


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("eval_frequency", -1),
        ("test_frequency", 1.5),
        ("log_frequency", -2),
        ("eval_frequency", True),
    ],
)
def test_bad_frequencies_are_errors(key, value):
    agent = Agent()
    trainer = MinibatchAlgorithm(agent, Toy(agent.parameters(), ScriptedLLM(increment)))
    with pytest.raises(ValueError, match=r"must be None or a non-negative int"):
        trainer.train(ExactMatchGuide(), DATA, batch_size=2, test_dataset=DATA, **{key: value})
    assert agent.prompt.data == "v0"
