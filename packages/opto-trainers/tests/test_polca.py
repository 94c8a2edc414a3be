"""POLCA: the epsilon-net over candidate embeddings, the Summarizer, resume, budgets,
multi-objective guides and executors."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
import threading
from pathlib import Path

import opto_trainers_test_support as S
import pytest
from opto.trainers import POLCA, PrioritySearch, Summarizer
from opto.trainers.objectives import ObjectiveConfig
from opto.trainers.search import Candidate
from opto.trainers.search.polca import EmbeddingShapeError, epsilon_net, parameter_text
from opto.trainers.search.summarizer import SummaryFormatError, render_rollout
from opto.utils.testing import ScriptedLLM

TRAIN = dict(batch_size=2, num_candidates=2, num_proposals=2)


class CircleEmbedder:
    """Embeds "a: N" as the point at angle N * step on the unit circle; records each call."""

    def __init__(self, step: float = 1.0) -> None:
        self.step = step
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, texts):
        with self.lock:
            self.calls.append(list(texts))
        angles = [int(t.split(": ")[1]) * self.step for t in texts]
        return [[math.cos(a), math.sin(a)] for a in angles]

    @property
    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]


def summary_llm(messages, **kwargs):
    """A scripted summarizer: counts the failed rollouts it was shown."""
    text = messages[-1]["content"]
    return f"<reasoning>read</reasoning><summary>{text.count('too small')} too small</summary>"


def point(x: float, y: float = 0.0, created: int = 0) -> Candidate:
    return Candidate({"a": x}, created=created, embedding=[x, y])


# -- the epsilon-net ---------------------------------------------------------------------------


def test_epsilon_net_admits_farthest_first_and_drops_near_duplicates():
    known = [point(0.0)]
    new = [point(0.05), point(1.0), point(1.02), point(0.5), point(2.0)]
    kept = epsilon_net(new, known, 0.1)
    # 2.0 (distance 2) first, then 1.0 (1), then 0.5 (0.5); 1.02 is 0.02 from 1.0 and
    # 0.05 is 0.05 from the known 0.0: near-duplicates.
    assert [c.paramset["a"] for c in kept] == [1.0, 0.5, 2.0]
    assert [c.paramset["a"] for c in epsilon_net(new, known, 0.01)] == [0.05, 1.0, 1.02, 0.5, 2.0]
    assert epsilon_net(new, known, 5.0) == []


def test_epsilon_net_without_known_candidates_keeps_the_first_of_duplicates():
    a, b, c = point(1.0), point(1.0), point(3.0)
    assert epsilon_net([a, b, c], [], 0.1) == [a, c]
    assert epsilon_net([a, b], [], 0.0) == [a]  # equal points are never farther than 0


def test_parameter_text_is_sorted_path_value_lines():
    assert parameter_text({"b": 2, "a": "x"}) == "a: x\nb: 2"


def test_epsilon_zero_is_priority_search_and_embeds_nothing():
    embedder = CircleEmbedder()
    polca, polca_agent, _ = S.make(POLCA)
    expected_trainer, agent, _ = S.make(PrioritySearch)
    result = polca.train(
        S.TargetGuide(), S.DATA, num_steps=4, epsilon=0, embedding_model=embedder, **TRAIN
    )
    expected = expected_trainer.train(S.TargetGuide(), S.DATA, num_steps=4, **TRAIN)
    assert embedder.calls == []
    assert result.train_scores == expected.train_scores
    assert polca_agent.a.data == agent.a.data == S.TARGET
    assert [c.to_dict() for c in polca.memory] == [c.to_dict() for c in expected_trainer.memory]


def test_distinct_proposals_are_kept_and_carry_their_embedding():
    embedder = CircleEmbedder(step=0.5)  # neighbours are 0.49 apart: distinct at 0.1
    trainer, agent, _ = S.make(POLCA)
    trainer.logger = S.RecordingLogger()
    result = trainer.train(S.TargetGuide(), S.DATA, num_steps=4, embedding_model=embedder, **TRAIN)
    assert agent.a.data == S.TARGET and result.best_score == 1.0
    values = sorted(c.paramset["a"] for c in trainer.memory)
    assert values == sorted(set(values))  # a value already known is never validated twice
    for c in trainer.memory:
        angle = c.paramset["a"] * 0.5
        assert c.embedding == pytest.approx([math.cos(angle), math.sin(angle)])
    dropped = trainer.logger.values("Update/num_dropped_by_epsilon_net")
    assert dropped and not any(dropped)  # every proposal was new and far enough


def test_near_duplicate_proposals_are_dropped_before_validation():
    # Every parameter text embeds to one point: each proposal duplicates the seed.
    guide = CountingGuide()
    trainer, agent, _ = S.make(POLCA)
    trainer.logger = S.RecordingLogger()
    trainer.train(
        guide, S.DATA, num_steps=3, embedding_model=lambda texts: [[1.0, 0.0]] * len(texts), **TRAIN
    )
    assert [c.paramset for c in trainer.memory] == [{"a": 1}]
    assert agent.a.data == 1
    dropped = trainer.logger.values("Update/num_dropped_by_epsilon_net")
    assert len(dropped) == 3 and all(n > 0 for n in dropped)
    assert guide.calls == 3 * 2  # the explorer's training rollouts only: nothing validated


class CountingGuide(S.TargetGuide):
    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def copy(self):
        return self

    def get_feedback(self, query, response, reference=None, **kwargs):
        with self.lock:
            self.calls += 1
        return super().get_feedback(query, response, reference)


def test_default_embeddings_are_the_offline_ngram_vectorizer(monkeypatch):
    monkeypatch.delenv("OPTO_EMBEDDING_MODEL", raising=False)
    trainer, agent, _ = S.make(POLCA)
    trainer.train(S.TargetGuide(), S.DATA, num_steps=3, **TRAIN)
    assert agent.a.data == S.TARGET
    assert trainer.embedder.model_name == "ngram"
    (seed,) = [c for c in trainer.memory if c.paramset == {"a": 1}]
    assert math.fsum(v * v for v in seed.embedding) == pytest.approx(1.0)


def test_near_duplicate_prompts_under_ngram_embeddings():
    trainer, _, _ = S.make(POLCA)
    trainer.train(S.TargetGuide(), S.DATA, num_steps=1, epsilon=0.35, **TRAIN)
    prompt = "Answer the question briefly and cite the source of every claim you make."
    known = Candidate({"a": prompt}, created=1)
    near = Candidate({"a": prompt.replace("briefly", "briefy")}, created=2)
    far = Candidate({"a": "Think step by step, then give only the final number."}, created=3)
    kept = trainer.filter_candidates([near, far], [known])
    assert kept == [far]
    assert known.embedding is not None and near.embedding is not None


def test_option_errors_name_the_fix():
    trainer, _, _ = S.make(POLCA)
    with pytest.raises(ValueError, match=r"epsilon must be a finite number >= 0.*epsilon=0\.1"):
        trainer.train(S.TargetGuide(), S.DATA, epsilon=-1)
    with pytest.raises(TypeError, match="embedding_model must be a model id"):
        trainer.train(S.TargetGuide(), S.DATA, embedding_model=3)
    with pytest.raises(ValueError, match="pass use_summarizer=True"):
        trainer.train(S.TargetGuide(), S.DATA, summarizer_llm=ScriptedLLM(summary_llm))
    with pytest.raises(ValueError, match="max_candidates_in_prompt"):
        trainer.train(S.TargetGuide(), S.DATA, use_summarizer=True, max_candidates_in_prompt=0)
    with pytest.raises(TypeError, match="did you mean 'epsilon'"):
        trainer.train(S.TargetGuide(), S.DATA, epsilom=0.2)
    with pytest.raises(EmbeddingShapeError, match="one vector of one fixed length per text"):
        trainer.train(
            S.TargetGuide(), S.DATA, num_steps=2, embedding_model=lambda texts: [[1.0]], **TRAIN
        )


# -- the summarizer ---------------------------------------------------------------------------


def scored(value: int, created: int, *rows: dict) -> Candidate:
    candidate = Candidate({"a": value}, created=created)
    candidate.add_rollouts(rows)
    return candidate


def test_rollouts_render_as_markdown_with_none_for_missing_pieces():
    text = render_rollout(
        {"prompt": "Be brief."},
        {"x": 2, "output": 4, "score": 0.5, "score_dict": {"acc": 0.5}, "feedback": None},
    )
    assert "#### Parameters\n- `prompt`: Be brief." in text
    assert "#### Input\n2" in text and "#### Output\n4" in text
    assert "- Score: 0.5" in text and "- Metrics: acc=0.5" in text
    assert "- Feedback: (none)" in text
    bare = render_rollout(None, {"score": None})
    assert bare.count("(none)") == 5
    assert "…" in render_rollout({}, {"output": "x" * 50}, limit=10)


def test_summarizer_prompt_merges_the_previous_summary_with_new_trajectories():
    prompts = []

    def llm(messages, **kwargs):
        prompts.append(messages)
        return "<reasoning>r</reasoning>\n<summary>\n raise a \n</summary>"

    summarizer = Summarizer(ScriptedLLM(llm), current_summary="start low")
    good = {"x": 1, "output": 3, "score": 1.0, "feedback": "correct"}
    bad = {"x": 2, "output": 2, "score": 0.0, "feedback": "too small"}
    assert summarizer.summarize([scored(3, 1, good, bad)]) == "raise a"
    system, user = prompts[0]
    assert system["role"] == "system" and "parameters" in system["content"]
    content = user["content"]
    assert "# Previous summary\nstart low" in content
    assert "### Successful rollout" in content and "- Feedback: correct" in content
    assert "### Failed rollout" in content and "- Feedback: too small" in content
    assert "<summary>" in content and "<reasoning>" in content
    # Nothing new to read: no call, the summary stays.
    assert summarizer.summarize([scored(3, 1, good)]) == "raise a" and len(prompts) == 1
    only_good = scored(4, 2, good)
    summarizer.summarize([only_good])
    assert "### Failed rollout\n\n(none)" in prompts[1][1]["content"]


def test_summarizer_honours_max_candidates_in_prompt_with_a_seeded_choice():
    def run(seed):
        prompts = []

        def llm(messages, **kwargs):
            prompts.append(messages[-1]["content"])
            return "<summary>ok</summary>"

        summarizer = Summarizer(ScriptedLLM(llm), max_candidates_in_prompt=2, seed=seed)
        pool = [scored(v, v, {"score": 1.0, "x": v}) for v in range(5)]
        for _ in range(3):
            summarizer.summarize(pool)
        return prompts, summarizer

    prompts, summarizer = run(seed=7)
    assert [p.count("## Candidate ") for p in prompts] == [2, 2, 1]
    shown = [
        int(line.split(": ")[1])
        for p in prompts
        for line in p.splitlines()
        if line.startswith("- `a`")
    ]
    assert sorted(shown) == [0, 1, 2, 3, 4]  # each candidate summarized exactly once
    assert run(seed=7)[0] == prompts
    assert summarizer.state_dict()["rounds"] == 3
    copy = Summarizer(max_candidates_in_prompt=2)
    copy.load_state_dict(json.loads(json.dumps(summarizer.state_dict())))
    assert copy.state_dict() == summarizer.state_dict()


def test_a_reply_without_summary_is_a_typed_error_and_keeps_the_summary():
    summarizer = Summarizer(ScriptedLLM(["I think you should raise it."]), current_summary="s0")
    candidate = scored(1, 1, {"score": 0.0})
    with pytest.raises(SummaryFormatError, match="no <summary>"):
        summarizer.summarize([candidate])
    assert summarizer.summary == "s0" and summarizer.summarized == set()
    with pytest.raises(ValueError, match=r"lacks \{trajectories\}"):
        Summarizer(user_prompt_template="{previous_summary} only")


def test_polca_passes_the_summary_to_the_optimizers_feedback():
    trainer, agent, optimizer = S.make(POLCA)
    trainer.train(
        S.TargetGuide(),
        S.DATA,
        num_steps=4,
        use_summarizer=True,
        summarizer_llm=ScriptedLLM(summary_llm),
        **TRAIN,
    )
    assert agent.a.data == S.TARGET
    summary = trainer.summarizer.summary
    assert summary.endswith("too small") and trainer.summarizer.summarized
    last = optimizer.events[-1][1]
    assert last.endswith(f"--- Summary of past attempts ---\n{summary}")
    assert all(len(r) > 1 for c in trainer.memory for r in c.rollouts)  # full rollouts kept


def test_polca_logs_a_failed_summary_and_keeps_searching(caplog):
    trainer, agent, optimizer = S.make(POLCA)
    with caplog.at_level(logging.WARNING, logger="opto.trainers.search.polca"):
        trainer.train(
            S.TargetGuide(),
            S.DATA,
            num_steps=4,
            use_summarizer=True,
            summarizer_llm=ScriptedLLM(lambda messages, **kw: "no tags here"),
            **TRAIN,
        )
    assert agent.a.data == S.TARGET
    assert any("SummaryFormatError" in r.getMessage() for r in caplog.records)
    assert trainer.summarizer.summary == ""
    assert not any("Summary of past attempts" in feedback for _, feedback in optimizer.events)


# -- resume, budgets, objectives, executors ---------------------------------------------------


def polca_run(tmp_path, embedder, steps, **kwargs):
    trainer, agent, _optimizer = S.make(POLCA)
    result = trainer.train(
        S.TargetGuide(),
        S.DATA,
        num_steps=steps,
        embedding_model=embedder,
        use_summarizer=True,
        summarizer_llm=ScriptedLLM(summary_llm),
        **TRAIN,
        **kwargs,
    )
    return trainer, agent, result


def test_resume_continues_exactly_without_embedding_again(tmp_path):
    storage = dict(storage=f"sqlite:///{tmp_path / 'runs.db'}", run_name="r")
    straight_embedder, first_embedder, second_embedder = (CircleEmbedder(0.5) for _ in "abc")
    straight, straight_agent, expected = polca_run(tmp_path, straight_embedder, 5)
    polca_run(tmp_path, first_embedder, 2, **storage)
    second, agent, resumed = polca_run(tmp_path, second_embedder, 5, resume=True, **storage)
    assert resumed.n_iters == 5 and resumed.train_scores == expected.train_scores
    assert agent.a.data == straight_agent.a.data
    assert [c.to_dict() for c in second.memory] == [c.to_dict() for c in straight.memory]
    assert second.summarizer.state_dict() == straight.summarizer.state_dict()
    # The restored candidates kept their vectors: only new proposals were embedded.
    assert len(first_embedder.texts) + len(second_embedder.texts) == len(straight_embedder.texts)


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
    script = Path(__file__).with_name("polca_run.py")
    db = tmp_path / "runs.db"

    def command(name, *extra):
        return [sys.executable, str(script), str(db), name, *extra]

    uninterrupted = S.run_script(command("full", "0"))
    assert uninterrupted["n_iters"] == 8 and uninterrupted["summarizer"]["summary"]
    S.kill_once_stored(command("killed", "0", "slow"), db, "killed", 3)
    assert 3 <= S.steps_done(db, "killed") < 8
    assert S.run_script(command("killed", "1")) == uninterrupted


def test_llm_budget_stops_the_search_cleanly():
    trainer, agent, _optimizer = S.make(POLCA)
    result = trainer.train(
        S.TargetGuide(),
        S.DATA,
        num_steps=10,
        max_llm_calls=7,
        use_summarizer=True,
        summarizer_llm=ScriptedLLM(summary_llm),
        **TRAIN,
    )
    assert result.stopped == "budget" and 1 <= result.n_iters < 10
    assert result.usage["calls"] <= 7
    assert agent.a.data == result.final_parameters["a"]


def test_multi_objective_guides_score_and_summarize_by_metrics():
    prompts = []

    def llm(messages, **kwargs):
        prompts.append(messages[-1]["content"])
        return "<summary>closer</summary>"

    config = ObjectiveConfig(mode="pareto", minimize={"size"}, weights={"closeness": 1.0})
    trainer, agent, _ = S.make(POLCA)
    result = trainer.train(
        S.MetricsGuide(),
        S.DATA,
        num_steps=4,
        objective_config=config,
        use_summarizer=True,
        summarizer_llm=ScriptedLLM(llm),
        **TRAIN,
    )
    assert agent.a.data == S.TARGET
    assert all(c.mean_score_dict() for c in trainer.memory if c.num_rollouts)
    assert "best_mean/closeness" in result.history[-1]["scores"]
    assert any("- Metrics: closeness=" in p and "size=" in p for p in prompts)


def test_every_executor_reaches_the_same_result():
    outcomes = []
    for executor in ("serial", "threads", "asyncio"):
        trainer, agent, _ = S.make(POLCA, executor=executor)
        result = trainer.train(
            S.TargetGuide(),
            S.DATA,
            num_steps=3,
            use_summarizer=True,
            summarizer_llm=ScriptedLLM(summary_llm),
            **TRAIN,
        )
        outcomes.append(
            (
                agent.a.data,
                result.train_scores,
                trainer.summarizer.state_dict(),
                [c.to_dict() for c in trainer.memory],
            )
        )
    assert outcomes[0] == outcomes[1] == outcomes[2]


@pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="needs the litellm extra")
@pytest.mark.filterwarnings("ignore::UserWarning:pydantic")
def test_hosted_embeddings_over_http_count_in_the_runs_usage():
    from opto.utils.llm import LiteLLMEmbedder
    from opto.utils.testing import OpenAIServer, ServerReply

    circle = CircleEmbedder(0.5)
    with OpenAIServer(
        default=lambda request: ServerReply.embeddings(circle(request["input"]))
    ) as server:
        embedder = LiteLLMEmbedder("openai/test-embedding", api_base=server.base_url, api_key="sk")
        trainer, agent, optimizer = S.make(POLCA)
        result = trainer.train(
            S.TargetGuide(), S.DATA, num_steps=3, embedding_model=embedder, **TRAIN
        )
    assert agent.a.data == S.TARGET
    assert {r["_path"] for r in server.requests} == {"/v1/embeddings"}
    assert result.usage["calls"] == optimizer.llm.calls + len(server.requests)
    assert trainer._config["embedding_model"] == "openai/test-embedding"


def test_the_anchor_module_paths_export_polca_and_the_summarizer():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import opto.trainer
        import opto.trainer.algorithms
        import opto.trainer.algorithms.polca
        import opto.trainer.summarizer
    import opto.trainers.algorithms

    assert opto.trainer.POLCA is opto.trainer.algorithms.POLCA is POLCA
    assert opto.trainer.algorithms.polca.POLCA is opto.trainers.algorithms.POLCA is POLCA
    assert opto.trainer.summarizer.Summarizer is opto.trainer.Summarizer is Summarizer
    assert opto.trainers.algorithms.Summarizer is Summarizer


def test_vectors_of_another_length_than_the_stored_ones_are_refused():
    trainer, _, _ = S.make(POLCA)
    trainer.train(S.TargetGuide(), S.DATA, num_steps=1, embedding_model=CircleEmbedder(), **TRAIN)
    trainer.embedder = lambda texts: [[1.0, 0.0, 0.0] for _ in texts]  # another model
    with pytest.raises(EmbeddingShapeError, match="stored vectors of lengths \\[2\\]"):
        trainer.filter_candidates([Candidate({"a": 9}, created=99)], [])


def test_the_constructor_takes_the_reference_options_as_train_defaults():
    embedder = CircleEmbedder()
    agent = S.Scale(1)
    optimizer = S.NudgeOptimizer(agent.parameters(), ScriptedLLM(S.nudge))
    trainer = POLCA(agent, optimizer, seed=0, epsilon=0.2, embedding_model=embedder)
    trainer.train(S.TargetGuide(), S.DATA, num_steps=2, **TRAIN)
    assert trainer.epsilon == 0.2 and embedder.calls
    trainer.train(S.TargetGuide(), S.DATA, num_steps=1, epsilon=0, **TRAIN)
    assert trainer.epsilon == 0.0 and trainer.embedder is None
    with pytest.raises(ValueError, match="epsilon must be a finite number"):
        POLCA(agent, optimizer, epsilon=-0.5)
    with pytest.raises(TypeError, match="pass other options to train"):
        POLCA(agent, optimizer, num_candidates=3)


def test_the_summarizer_defaults_to_the_optimizers_llm():
    def both(messages, **kwargs):
        if "# Previous summary" in messages[-1]["content"]:
            return summary_llm(messages)
        return S.nudge(messages)

    agent = S.Scale(1)
    optimizer = S.NudgeOptimizer(agent.parameters(), ScriptedLLM(both))
    trainer = POLCA(agent, optimizer, num_threads=2, seed=0, use_summarizer=True)
    trainer.train(S.TargetGuide(), S.DATA, num_steps=3, **TRAIN)
    assert trainer.summarizer.llm is optimizer.llm
    assert trainer.summarizer.summary.endswith("too small")
