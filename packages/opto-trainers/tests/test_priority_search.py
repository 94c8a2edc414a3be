"""PrioritySearch, its memory and candidates, and the search engine shared by the searches."""

from __future__ import annotations

import math
import threading

import opto_trainers_test_support as S
import pytest
from opto.trainers.algorithms.base import UnknownTrainArgumentError
from opto.trainers.algorithms.priority_search import (
    HeapMemory,
    ModuleCandidate,
    PrioritySearch,
    SearchEngine,
    bind_worker,
)
from opto.trainers.executors import ThreadExecutor
from opto.trainers.guide import Guide


def candidate(created: int, *scores: float) -> ModuleCandidate:
    c = ModuleCandidate(update_dict={"a": created}, created=created)
    c.add_rollouts([{"score": s} for s in scores])
    return c


# -- memory and candidates --------------------------------------------------------------------


def test_memory_trim_keeps_the_true_top_k():
    # The reference kept {1, 5} here (a prefix of the heap array).
    memory = HeapMemory(size=2)
    for created, priority in enumerate([1, 5, 3, 4]):
        memory.push(priority, candidate(created))
    assert [p for p, _ in memory.items()] == [5, 4]


def test_memory_ties_pop_newest_first_and_evict_oldest():
    memory = HeapMemory(size=2)
    for created in range(3):
        memory.push(1.0, candidate(created))
    assert [c.created for c in memory] == [2, 1]
    assert memory.pop()[1].created == 2


def test_memory_best_by_criterion_treats_unscored_as_lowest_and_prefers_the_oldest():
    memory = HeapMemory()
    memory.push(9.0, candidate(0))  # no scores: mean None
    memory.push(0.0, candidate(1, 0.5))
    memory.push(0.0, candidate(2, 0.5))
    assert memory.best(lambda c: c.mean_score()).created == 1
    assert memory.best().created == 0  # without a criterion: the top priority


def test_score_confidence_is_a_clipped_hoeffding_bound():
    c = candidate(0, 0.5, 0.5, 0.5, 0.5)
    lcb, mean, ucb = c.compute_score_confidence(0.0, 1.0, 1.0, 9)
    width = math.sqrt(math.log(10) / 4)
    assert mean == 0.5
    assert lcb == pytest.approx(max(0.0, 0.5 - width))
    assert ucb == pytest.approx(min(1.0, 0.5 + width))
    assert candidate(1).compute_score_confidence(0.0, 1.0, 1.0, 9) == (0.0, None, 1.0)


def test_compressed_candidates_keep_only_scores_and_round_trip():
    c = candidate(3)
    c.add_rollouts([{"score": 1.0, "x": 1, "feedback": "ok"}])
    assert ModuleCandidate.compress(c).rollouts == [{"score": 1.0}]
    again = ModuleCandidate.from_dict(c.to_dict())
    assert (again.update_dict, again.created, again.scores) == ({"a": 3}, 3, [1.0])


# -- the engine -----------------------------------------------------------------------------


def test_bound_workers_keep_names_and_leave_the_agent_alone():
    agent = S.Scale(1)
    worker = bind_worker(agent, {"a": 7})
    assert worker.a.data == 7 and agent.a.data == 1
    assert worker.a is not agent.a and worker.a.name == agent.a.name


@pytest.mark.parametrize("threads", [3, 6])
def test_candidate_by_example_validations_are_in_flight_at_once(threads):
    # 3 candidates x 2 examples: `threads` rollouts must wait at the barrier together,
    # which only happens if that many run concurrently.
    barrier = threading.Barrier(threads, timeout=60)

    class BarrierGuide(Guide):
        def copy(self):
            return self

        def get_feedback(self, query, response, reference=None, **kwargs):
            barrier.wait()
            return float(response == reference), ""

    agent = S.Scale(1)
    with ThreadExecutor(threads) as executor:
        engine = SearchEngine(agent, [], executor)
        rows = engine.score([{"a": 1}, {"a": 2}, {"a": 3}], [1, 2], [3, 6], BarrierGuide())
    assert rows == [[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    assert agent.a.data == 1


def test_failed_validation_rollouts_score_min_score_and_never_touch_the_agent():
    class Flaky(Guide):
        def get_feedback(self, query, response, reference=None, **kwargs):
            if query == 2:
                raise RuntimeError("judge unavailable")
            return float(response == reference), ""

    agent = S.Scale(1)
    engine = SearchEngine(agent, [], ThreadExecutor(4), min_score=-1.0)
    assert engine.score([{"a": 3}], [1, 2], [3, 6], Flaky()) == [[1.0, -1.0]]
    assert agent.a.data == 1


# -- PrioritySearch -------------------------------------------------------------------------


def test_positional_train_reaches_the_target_and_returns_a_result():
    trainer, agent, _ = S.make(PrioritySearch)
    result = trainer.train(
        S.TargetGuide(), S.DATA, batch_size=2, num_candidates=2, num_proposals=2, num_steps=4
    )
    assert agent.a.data == S.TARGET
    assert result.final_parameters == {"a": S.TARGET}
    assert result.best_score == 1.0
    assert result.n_iters == 4 and result.stopped == "max_steps"


def test_unknown_keywords_are_errors_not_optimizer_arguments():
    trainer, _, _ = S.make(PrioritySearch)
    with pytest.raises(UnknownTrainArgumentError, match="memory_size"):
        trainer.train(S.TargetGuide(), S.DATA, memory_size=3)


def test_every_proposal_steps_its_own_optimizer_copy():
    trainer, _, optimizer = S.make(PrioritySearch)
    trainer.train(
        S.TargetGuide(), S.DATA, batch_size=2, num_candidates=1, num_proposals=3, num_steps=1
    )
    stepped = [oid for oid, _ in optimizer.events]
    assert len(stepped) == 3 and len(set(stepped)) == 3
    assert id(optimizer) not in stepped


def test_ucb_priority_needs_a_finite_score_range():
    trainer, _, _ = S.make(PrioritySearch)
    with pytest.raises(ValueError, match="score_range"):
        trainer.train(S.TargetGuide(), S.DATA, score_function="ucb")
    result = trainer.train(
        S.TargetGuide(),
        S.DATA,
        batch_size=2,
        score_function="ucb",
        score_range=(0, 1),
        num_steps=3,
    )
    assert all(math.isfinite(p) for p, _ in trainer.memory.items())
    assert result.n_iters == 3


def test_time_priority_favours_the_newest_candidates():
    trainer, _, _ = S.make(PrioritySearch)
    trainer.score_function = "time"
    assert trainer.compute_exploration_priority(candidate(5)) > (
        trainer.compute_exploration_priority(candidate(2))
    )


def test_no_iteration_wastes_its_rollouts():
    # Each iteration's training rollouts feed that iteration's proposals: with one
    # explorer and one batch, every iteration makes exactly one optimizer step.
    trainer, _, optimizer = S.make(PrioritySearch)
    trainer.train(S.TargetGuide(), S.DATA, batch_size=2, num_candidates=1, num_steps=3)
    assert len(optimizer.events) == 3


def test_epochs_bound_the_search_when_no_step_cap_is_given():
    trainer, _, _ = S.make(PrioritySearch)
    result = trainer.train(S.TargetGuide(), S.DATA, batch_size=2, num_candidates=1)
    assert result.n_iters == 2 and result.n_epochs == 1


def test_separate_validation_set_rescores_the_explorers():
    trainer, _, _ = S.make(PrioritySearch)
    val = {"inputs": [5, 6], "infos": [15, 18]}
    trainer.train(
        S.TargetGuide(), S.DATA, validate_dataset=val, batch_size=2, num_candidates=1, num_steps=1
    )
    (initial,) = [c for c in trainer.memory if c.update_dict == {"a": 1}]
    # 2 training rollouts plus 2 validation rollouts on the validation batch.
    assert initial.num_rollouts == 4


def test_an_interrupt_mid_validation_leaves_the_agent_at_the_last_completed_step():
    reference, ref_agent, _ = S.make(PrioritySearch)
    reference.train(S.TargetGuide(), S.DATA, batch_size=2, num_candidates=1, num_steps=1)
    after_one = ref_agent.a.data
    trainer, agent, _ = S.make(PrioritySearch)
    # Iteration 1 makes 2 validation calls; the 2nd iteration's first one interrupts.
    result = trainer.train(
        S.TargetGuide(),
        S.DATA,
        validate_guide=S.InterruptingGuide(at=3),
        batch_size=2,
        num_candidates=1,
        num_steps=3,
    )
    assert result.stopped == "interrupted"
    assert result.n_iters == 1
    assert agent.a.data == after_one


def test_several_optimizers_each_seed_a_candidate_and_keep_it():
    agent = S.Scale(1)
    first = S.NudgeOptimizer(agent.parameters(), S.ScriptedLLM(S.nudge))
    second = S.NudgeOptimizer(agent.parameters(), S.ScriptedLLM(S.nudge))
    trainer = PrioritySearch(agent, [first, second], num_threads=4, seed=0)
    trainer.train(S.TargetGuide(), S.DATA, batch_size=2, num_candidates=2, num_steps=2)
    assert {c.optimizer_index for c in trainer.memory} == {0, 1}
    assert first.llm.calls > 0 and second.llm.calls > 0


def test_optimizer_not_built_on_the_agent_is_rejected():
    agent, other = S.Scale(1), S.Scale(1)
    with pytest.raises(ValueError, match=r"agent\.parameters"):
        PrioritySearch(agent, S.NudgeOptimizer(other.parameters(), S.ScriptedLLM(S.nudge)))


def test_resume_continues_exactly(tmp_path):
    (straight, straight_agent, _, expected), (second, agent, _, resumed) = S.straight_and_resumed(
        PrioritySearch,
        tmp_path,
        "num_steps",
        4,
        2,
        batch_size=2,
        num_candidates=2,
        num_proposals=2,
    )
    assert resumed.n_iters == 4
    assert resumed.train_scores == expected.train_scores
    assert agent.a.data == straight_agent.a.data
    assert [c.to_dict() for c in second.memory] == [c.to_dict() for c in straight.memory]


def test_real_optoprime_chains_carry_their_memory():
    # OptoPrime with memory: each candidate's optimizer chain continues in bound copies,
    # and the trainer's optimizer ends with the winning chain's memory.
    import json
    import re

    from opto.optimizers import OptoPrime

    def reply(messages, **_):
        text = "\n".join(m["content"] for m in messages)
        variables = text[text.rindex("#Variables") :]
        name, value = re.search(r"\(int\) (\w+)\s*=\s*(-?\d+)", variables).groups()
        feedback = text[text.rindex("#Feedback") :]
        step = 1 if "too small" in feedback else -1 if "too large" in feedback else 0
        return json.dumps({"reasoning": "nudge", "suggestion": {name: int(value) + step}})

    agent = S.Scale(1)
    optimizer = OptoPrime(agent.parameters(), llm=S.ScriptedLLM(reply), memory_size=2)
    trainer = PrioritySearch(agent, optimizer, num_threads=4, seed=0)
    result = trainer.train(
        S.TargetGuide(), S.DATA, batch_size=2, num_candidates=2, num_proposals=2, num_steps=4
    )
    assert agent.a.data == S.TARGET and result.best_score == 1.0
    assert len(optimizer.memory) == 2
    assert all(c.optimizer_state["memory"] for c in trainer.memory if c.created > 1)


def test_short_term_memory_merges_into_the_compressed_long_term_memory():
    trainer, agent, _ = S.make(PrioritySearch)
    trainer.train(
        S.TargetGuide(),
        S.DATA,
        batch_size=2,
        num_candidates=2,
        num_proposals=2,
        memory_update_frequency=2,
        short_term_memory_size=3,
        num_steps=4,
    )
    assert agent.a.data == S.TARGET
    assert len(trainer.short_term_memory) <= 3
    assert trainer.long_term_memory  # merged at iteration 2
    assert all(set(r) == {"score"} for c in trainer.long_term_memory for r in c.rollouts)
    assert any(len(r) > 1 for c in trainer.short_term_memory for r in c.rollouts)


def test_memory_sizes_are_validated():
    trainer, _, _ = S.make(PrioritySearch)
    with pytest.raises(ValueError, match="long_term_memory_size"):
        trainer.train(S.TargetGuide(), S.DATA, long_term_memory_size=0)
    with pytest.raises(ValueError, match="memory_update_frequency"):
        trainer.train(S.TargetGuide(), S.DATA, memory_update_frequency=-1)


def test_coupled_optimizers_share_one_state_per_optimizer():
    trainer, agent, optimizer = S.make(PrioritySearch)
    trainer.train(
        S.TargetGuide(),
        S.DATA,
        batch_size=2,
        num_candidates=2,
        num_steps=3,
        decouple_optimizers=False,
    )
    assert agent.a.data == S.TARGET
    assert all(c.optimizer_state is None for c in trainer.memory if c.created > 1)
    assert optimizer.step_count >= 2  # the shared state advanced over the iterations


@pytest.mark.parametrize(
    ("algorithm", "kwargs"),
    [
        ("PrioritySearch", dict(batch_size=2, num_candidates=2, num_proposals=2, num_steps=3)),
        ("BeamSearch", dict(batch_size=1, max_depth=2, beam_width=2, num_proposals=2)),
        ("UCBSearch", dict(num_search_iterations=3, evaluation_batch_size=2)),
    ],
)
def test_every_executor_reaches_the_same_result(algorithm, kwargs):
    import opto.trainers

    cls = getattr(opto.trainers, algorithm)
    outcomes = []
    for executor in ("serial", "threads", "asyncio"):
        trainer, agent, _ = S.make(cls, executor=executor)
        result = trainer.train(S.TargetGuide(), S.DATA, **kwargs)
        outcomes.append((agent.a.data, result.train_scores, result.best_score))
    assert outcomes[0] == outcomes[1] == outcomes[2]


def test_a_too_large_sample_names_batch_size_times_num_batches():
    trainer, _, _ = S.make(PrioritySearch)
    with pytest.raises(ValueError, match=r"batch_size \* num_batches \(3 \* 2\)=6 is larger"):
        trainer.train(S.TargetGuide(), S.DATA, batch_size=3, num_batches=2, num_steps=1)
