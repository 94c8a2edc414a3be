"""`Sampler`: rollouts of module copies over a loader, grouped per module for backward."""

import math

import pytest
from opto import trace
from opto.trainers import BatchRollout, DataLoader, ExactMatchGuide, Sampler, is_node_copy
from opto.trainers.sampler import Rollout, RolloutConfig, sample_rollouts
from opto.trainers.utils import get_original_name, is_module_copy


@trace.model
class Stateful:
    """Returns 1 on its first call: state must not leak between rollouts."""

    def __init__(self):
        self.param = trace.node(1, trainable=True, name="param")
        self.state = 0

    def forward(self, x):
        self.state += 1
        return self.param * self.state


def make_sampler(batch_size=3, subbatch_size=2, **kwargs):
    data = {"inputs": [1, 2, 3, 4, 5], "infos": [1, 1, 1, 1, 1]}
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    return Sampler(loader, ExactMatchGuide(), subbatch_size=subbatch_size, **kwargs)


def test_sample_splits_the_batch_into_subbatches_per_agent(fresh_graph):
    sampler = make_sampler()
    agent = Stateful()
    samples, batch = sampler.sample([agent])
    assert batch == {"inputs": [1, 2, 3], "infos": [1, 1, 1]}
    assert [len(s) for s in samples] == [2, 1]
    assert all(isinstance(s, BatchRollout) for s in samples)
    assert samples[0].module is agent  # the first sub-batch runs on the agent itself
    copy = samples[1].module
    assert copy is not agent and is_module_copy(copy, agent)
    assert copy.param is not agent.param and is_node_copy(copy.param, agent.param)
    assert get_original_name(copy.param) == "param0"
    # every call ran on a fresh copy: the state never exceeded 1, the target is the param
    assert [r.output for s in samples for r in s] == [1, 1, 1]
    assert [r.score for s in samples for r in s] == [1.0, 1.0, 1.0]
    assert agent.state == 0

    two, _ = sampler.sample([agent, Stateful()])
    assert len(two) == 4
    assert two[2].module is not agent


def test_each_batch_rollout_backwards_independently():
    sampler = make_sampler()
    agent = Stateful()
    samples, _ = sampler.sample([agent])
    for group in samples:
        module = group.module
        for r in group:
            r.target.backward("more")
        assert module.param.feedback  # the sub-batch's own parameter got the feedback
    assert agent.param.feedback and samples[1].module.param.feedback


def test_stream_wraps_and_prev_batch_is_reused():
    sampler = make_sampler()
    agent = Stateful()
    sampler.sample([agent])
    _, batch = sampler.sample([agent])
    assert batch["inputs"] == [4, 5, 1]
    assert sampler.n_epochs == 1
    _, again = sampler.sample([agent], use_prev_batch=True)
    assert again == batch


def test_sampler_properties_proxy_the_loader_and_validate():
    sampler = make_sampler()
    assert sampler.batch_size == 3 and sampler.dataset["inputs"][0] == 1
    sampler.dataset = {"inputs": [7, 8, 9], "infos": [7, 8, 9]}
    assert sampler.loader.dataset["inputs"] == [7, 8, 9]
    with pytest.raises(ValueError, match="infos"):
        sampler.dataset = {"inputs": [1], "infos": []}
    with pytest.raises(ValueError, match="subbatch_size"):
        make_sampler(subbatch_size=4)
    with pytest.raises(TypeError, match="list of agents"):
        sampler.sample(Stateful())


def test_custom_forward_is_used_and_score_range_gives_min_score():
    calls = []

    def forward(module, x, guide, info, min_score):
        calls.append(min_score)
        target = module(x)
        return target, 0.5, "fine"

    sampler = make_sampler(forward=forward, score_range=(-1, 1))
    samples, _ = sampler.sample([Stateful()])
    assert sampler.forward is forward
    assert calls == [-1, -1, -1]
    assert samples[0].get_scores() == [0.5, 0.5]


def test_execution_errors_score_the_minimum_with_feedback():
    @trace.bundle()
    def fail(x):
        return 1 / 0

    @trace.model
    class Broken:
        def __init__(self):
            self.p = trace.node(0, trainable=True)

        def forward(self, x):
            return fail(x + self.p)

    sampler = make_sampler(subbatch_size=3)
    samples, _ = sampler.sample([Broken()])
    assert samples[0].get_scores() == [-math.inf] * 3
    assert "ZeroDivisionError" in samples[0][0].feedback


def test_batch_rollout_holds_one_module_and_rollout_config_validates():
    a, b = Stateful(), Stateful()
    group = BatchRollout([Rollout(module=a, x=1, info=1, score=1.0)])
    with pytest.raises(ValueError, match="one module object"):
        group.extend([Rollout(module=b, x=2, info=2)])
    assert group.get_batch() == {"inputs": [1], "infos": [1]}
    assert group.to_list()[0]["score"] == 1.0
    with pytest.raises(ValueError, match="one info per input"):
        RolloutConfig(a, [1, 2], [1], ExactMatchGuide())
    with pytest.raises(TypeError):
        RolloutConfig("agent", [1], [1], ExactMatchGuide())
    batches = sample_rollouts(
        [
            RolloutConfig(a, [1, 2], [1, 1], ExactMatchGuide()),
            RolloutConfig(b, [3], [1], ExactMatchGuide()),
        ],
        num_threads=2,
    )
    assert [len(x) for x in batches] == [2, 1]
    assert batches[1].module is b


def test_update_dicts_move_between_module_copies():
    from opto.trace.nodes import ParameterNode
    from opto.trace.projections import Projection
    from opto.trainers.utils import (
        create_module_from_update_dict,
        deepcopy_module,
        remap_update_dict,
        set_module_parameters,
    )

    class Clip(Projection):
        def project(self, x):
            return min(x, 10)

    @trace.model
    class Two:
        def __init__(self):
            self.a = ParameterNode(1, trainable=True, name="a", projections=[Clip()])
            self.b = ParameterNode(2, trainable=False, name="b")

    agent = Two()
    copy = deepcopy_module(agent)
    update = {copy.a: 50, copy.b: 7}
    remapped = remap_update_dict(agent, update)
    assert remapped == {agent.a: 50, agent.b: 7}
    assert remap_update_dict(Stateful(), update) == {}
    set_module_parameters(agent, update)
    assert agent.a.data == 10  # projected, as an optimizer step would
    assert agent.b.data == 2  # not trainable: untouched
    fresh = create_module_from_update_dict(agent, {agent.a: 3})
    assert fresh.a.data == 3 and agent.a.data == 10 and fresh.a is not agent.a
