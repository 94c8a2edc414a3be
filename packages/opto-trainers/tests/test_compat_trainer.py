"""`opto.trainer`: trace-opt's module paths re-export opto.trainers and warn once."""

import subprocess
import sys
import textwrap
import warnings

import opto.trainers as new


def _import_compat():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import opto.trainer
        import opto.trainer.algorithms
        import opto.trainer.algorithms.algorithm
        import opto.trainer.algorithms.basic_algorithm
        import opto.trainer.algorithms.basic_algorithms
        import opto.trainer.algorithms.beamsearch_algorithm
        import opto.trainer.algorithms.priority_search
        import opto.trainer.algorithms.UCBsearch
        import opto.trainer.evaluators
        import opto.trainer.guide
        import opto.trainer.loader
        import opto.trainer.loggers
        import opto.trainer.objectives
        import opto.trainer.sampler
        import opto.trainer.train
        import opto.trainer.utils
    return opto.trainer


def test_anchor_module_paths_hold_the_opto_trainers_objects():
    old = _import_compat()
    assert old.train is new.train  # the function, not the train submodule
    assert old.DataLoader is new.DataLoader
    assert old.loader.DataLoader is new.DataLoader
    assert old.guide.AutoGuide is new.Guide and old.guide.VerbalJudgeGuide is new.VerbalJudgeGuide
    assert old.utils.batch_run is new.batch_run and old.utils.async_run is new.async_run
    assert old.utils.is_node_copy is new.is_node_copy and old.utils.batchify is new.batchify
    assert old.evaluators.evaluate_vector is new.evaluate_vector
    assert old.sampler.Sampler is new.Sampler
    assert old.loggers.ConsoleLogger is new.ConsoleLogger
    assert old.objectives.ObjectiveConfig is new.ObjectiveConfig
    assert old.objectives.select_top_k is new.select_top_k
    assert old.objectives.normalize_score is old.objectives.to_score_dict
    algorithms = old.algorithms
    assert algorithms.MinibatchAlgorithm is new.MinibatchAlgorithm
    assert algorithms.PrioritySearch is new.PrioritySearch
    assert algorithms.basic_algorithms.BasicSearchAlgorithm is new.BasicSearchAlgorithm
    assert algorithms.basic_algorithm.evaluate is new.evaluate
    assert algorithms.beamsearch_algorithm.BeamsearchAlgorithm is new.BeamSearch
    assert algorithms.UCBsearch.UCBSearchAlgorithm is new.UCBSearch
    assert algorithms.algorithm.AbstractAlgorithm is new.Trainer
    assert algorithms.priority_search.PrioritySearch is new.PrioritySearch
    assert "DataLoader" in dir(old) and "MinibatchAlgorithm" in dir(algorithms)


def test_import_warns_once_with_the_fix():
    code = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            import opto.trainer.loader
            import opto.trainer.algorithms.basic_algorithms
            from opto.trainer import DataLoader
        deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)
                        and "opto.trainer" in str(w.message)]
        assert len(deprecations) == 1, [str(w.message) for w in caught]
        assert "import from opto.trainers" in str(deprecations[0].message)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    # under Python's default filters the importing script sees it, attributed to its line
    plain = subprocess.run(
        [sys.executable, "-c", "import opto.trainer.loader"], capture_output=True, text=True
    )
    assert plain.returncode == 0
    assert "<string>:1: DeprecationWarning: opto.trainer is the trace-opt name" in plain.stderr


def test_unknown_names_raise_attribute_error():
    old = _import_compat()
    for module in (old, old.algorithms):
        try:
            module.NoSuchThing
        except AttributeError as exc:
            assert "NoSuchThing" in str(exc)
        else:
            raise AssertionError("expected AttributeError")


def test_opentrace_style_training_script_runs_on_the_old_paths():
    """A script written for OpenTrace's `opto.trainer` runs with no change but the warning."""
    import re

    from opto.utils.testing import ScriptedLLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from opto import trace
        from opto.optimizers import OptoPrime
        from opto.trainer import train
        from opto.trainer.algorithms.basic_algorithms import MinibatchAlgorithm
        from opto.trainer.guide import Guide
        from opto.trainer.loader import DataLoader
        from opto.trainer.utils import batch_run

    @trace.model
    class Doubler:
        def __init__(self):
            self.factor = trace.node(1, trainable=True)

        def forward(self, x):
            return self.factor * x

    class Exact(Guide):
        def get_feedback(self, query, response, reference=None, **kwargs):
            if response == reference:
                return 1.0, "Correct"
            return 0.0, f"expected {reference}, got {response}"

    def propose(messages, **options):
        name = re.search(r"\(int\) (\w+)=", messages[-1]["content"]).group(1)
        return f'{{"reasoning": "double it", "suggestion": {{"{name}": 2}}}}'

    agent = Doubler()
    data = {"inputs": [1, 2, 3], "infos": [2, 4, 6]}
    loader = DataLoader(data, batch_size=3, shuffle=False)
    xs, infos = next(loader)  # the loader is an iterator, as in OpenTrace
    assert xs == [1, 2, 3]
    algorithm = MinibatchAlgorithm(agent, OptoPrime(agent.parameters(), llm=ScriptedLLM(propose)))
    algorithm.train(Exact(), data, num_epochs=1, batch_size=3, num_threads=2)
    assert agent.factor.data == 2
    scores = batch_run(max_workers=3)(lambda m, x, info: Exact()(x, m(x).data, info)[0])(
        agent, xs, infos
    )
    assert scores == [1.0, 1.0, 1.0]

    # the one-call entry point, as OpenTrace's examples use it
    fresh = Doubler()
    train(
        model=fresh,
        train_dataset=data,
        algorithm="MinibatchAlgorithm",
        optimizer="OptoPrime",
        optimizer_kwargs={"llm": ScriptedLLM(propose)},
        guide=Exact(),
        num_epochs=1,
        batch_size=3,
    )
    assert fresh.factor.data == 2
