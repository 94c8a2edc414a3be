"""What a registry shows for each distribution: licence, URLs, classifiers, README links.

The built artefacts themselves (LICENSE inside every wheel and sdist, `twine check`, the
plain-pip install of the four folders) are checked by the `wheels` nox session.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["utils", "trace", "optimizers", "trainers"]
REPOSITORY = "https://github.com/opto-dev/opto"
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _project(name: str) -> dict:
    text = (ROOT / "packages" / f"opto-{name}" / "pyproject.toml").read_text()
    return tomllib.loads(text)["project"]


def test_the_root_license_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 opto developers" in text


@pytest.mark.parametrize("name", LAYERS)
def test_each_distribution_ships_the_root_license(name):
    # Each distribution builds from its own folder, so it carries a copy of the root file.
    project = _project(name)
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    copy = ROOT / "packages" / f"opto-{name}" / "LICENSE"
    assert copy.read_bytes() == (ROOT / "LICENSE").read_bytes(), f"cp LICENSE {copy}"


@pytest.mark.parametrize("name", LAYERS)
def test_each_distribution_names_its_pythons_and_status(name):
    project = _project(name)
    classifiers = project["classifiers"]
    assert project["requires-python"] == f">={PYTHONS[0]}"
    listed = [c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c)]
    assert listed == PYTHONS
    assert "Development Status :: 3 - Alpha" in classifiers
    assert "Typing :: Typed" in classifiers
    # PEP 639: the licence is the `license` expression; a License classifier beside it is
    # rejected by registries.
    assert not [c for c in classifiers if c.startswith("License ::")]


@pytest.mark.parametrize("name", LAYERS)
def test_each_distribution_links_to_its_source_docs_and_changelog(name):
    urls = _project(name)["urls"]
    assert urls["Homepage"] == REPOSITORY
    assert urls["Source"] == f"{REPOSITORY}/tree/main/packages/opto-{name}"
    assert urls["Changelog"] == f"{REPOSITORY}/blob/main/packages/opto-{name}/CHANGELOG.md"
    assert urls["Documentation"] == f"{REPOSITORY}/blob/main/docs/guide.md"
    for url in urls.values():
        path = url.removeprefix(f"{REPOSITORY}/").split("#")[0]
        for prefix in ("tree/main/", "blob/main/"):
            if path.startswith(prefix):
                assert (ROOT / path.removeprefix(prefix)).exists(), url


@pytest.mark.parametrize("name", LAYERS)
def test_readme_links_work_on_a_registry_page(name):
    # The README is the long description: a registry page has no repository to resolve
    # relative links against.
    readme = (ROOT / "packages" / f"opto-{name}" / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert not relative, f"make these absolute ({REPOSITORY}/blob/main/...): {relative}"
    for target in targets:
        if target.startswith(f"{REPOSITORY}/blob/main/"):
            path = target.removeprefix(f"{REPOSITORY}/blob/main/").split("#")[0]
            assert (ROOT / path).exists(), target


# Every `uv sync` / `uv run` command the docs, examples and error messages suggest.
HINT_SOURCES = [
    ROOT / "README.md",
    *sorted(ROOT.glob("docs/*.md")),
    *sorted(ROOT.glob("packages/*/README.md")),
    *sorted(ROOT.glob("packages/*/src/opto/**/*.py")),
    *sorted(ROOT.glob("examples/*.py")),
]
_VALUED = {"--extra", "--group", "--package", "--python", "-p"}


def _uv_hints() -> dict[str, list[str]]:
    """{command: [where]} with the command cut to `uv sync|run` and its options."""
    found: dict[str, list[str]] = {}
    for path in HINT_SOURCES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.finditer(r"\buv (sync|run)\b([^`\"#()]*)", line):
                words, options = match.group(2).split(), []
                while words and words[0].startswith("-"):
                    option = words.pop(0)
                    options.append(option)
                    if option in _VALUED and words:
                        options.append(words.pop(0))
                command = " ".join(["uv", match.group(1), *options])
                found.setdefault(command, []).append(f"{path.relative_to(ROOT)}:{number}")
    return found


def _declared_extras() -> set[str]:
    extras: set[str] = set()
    for name in LAYERS:
        project = tomllib.loads((ROOT / "packages" / f"opto-{name}" / "pyproject.toml").read_text())
        extras.update(project["project"].get("optional-dependencies", {}))
    return extras


def _expand_templates(hints: dict[str, list[str]]) -> dict[str, list[str]]:
    """A hint written for any extra (`--extra <extra>` / `{extra}`) stands for each one."""
    expanded: dict[str, list[str]] = {}
    for command, where in hints.items():
        if "<extra>" in command or "{extra}" in command:
            for extra in sorted(_declared_extras()):
                concrete = command.replace("<extra>", extra).replace("{extra}", extra)
                expanded.setdefault(concrete, []).extend(where)
        else:
            expanded.setdefault(command, []).extend(where)
    return expanded


HINTS = _expand_templates(_uv_hints())


def test_extra_hints_name_the_workspace_members():
    # At the workspace root `uv sync --extra X` fails: the root project has no extras.
    assert any("--extra" in command for command in HINTS)
    wrong = {
        command: where
        for command, where in HINTS.items()
        if "--extra" in command and not {"--all-packages", "--package"} & set(command.split())
    }
    assert not wrong, f"add --all-packages to these hints: {wrong}"


@pytest.mark.skipif(shutil.which("uv") is None, reason="needs the uv program")
@pytest.mark.parametrize("command", sorted(HINTS))
def test_uv_hint_works_from_the_workspace_root(command, tmp_path):
    # What the command would install, resolved from uv.lock into a throwaway environment;
    # `uv run` options are those of `uv sync`.
    options = command.split()[2:]
    lock = [] if "--locked" in options else ["--frozen"]
    args = ["uv", "sync", *options, *lock, "--dry-run", "--offline"]
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "env")}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{command} ({HINTS[command]}): {done.stderr}"


def _section(markdown: str, heading: str) -> str:
    return markdown.split(heading, 1)[1].split("\n## ", 1)[0]


def test_guide_installs_a_checkout_with_plain_pip_in_one_command():
    installing = _section((ROOT / "docs" / "guide.md").read_text(), "## Installing")
    commands = [c.replace("\\\n", " ") for c in re.findall(r"```bash\n(.*?)```", installing, re.S)]
    pip = [line for c in commands for line in c.splitlines() if "pip install ./packages/" in line]
    assert pip, "docs/guide.md#installing shows the plain-pip install of a checkout"
    folders = re.findall(r"\./packages/(opto-\w+)(?=\s|$)", pip[0])
    assert folders == [f"opto-{name}" for name in LAYERS]


def test_docs_say_what_the_storage_dependencies_really_are():
    trainers = [d.split(">")[0] for d in _project("trainers")["dependencies"]]
    assert "sqlalchemy" in trainers  # a hard dependency: trainers checkpoint through storage
    extras = _project("utils")["optional-dependencies"]
    assert [d.split(">")[0] for d in extras["storage"]] == ["sqlalchemy"]
    assert {d.split(">")[0].split("[")[0] for d in extras["postgres"]} == {"sqlalchemy", "psycopg"}
    guide = _section((ROOT / "docs" / "guide.md").read_text(), "## Installing")
    assert "SQLAlchemy is a dependency of `opto-trainers`" in guide
    readme = (ROOT / "packages" / "opto-trainers" / "README.md").read_text()
    depends = readme.split("- Depends on:", 1)[1].split("\n- ", 1)[0]
    assert "SQLAlchemy" in depends
    assert "need `opto-utils[storage]`" not in readme
    utils_readme = (ROOT / "packages" / "opto-utils" / "README.md").read_text()
    assert "| `postgres` | SQLAlchemy, psycopg |" in utils_readme
