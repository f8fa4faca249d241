"""The README is checked against the code: commands, DAGs, settings and schemas."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from dossier import readme
from dossier.cli import build_parser
from dossier.settings import ENVIRONMENT

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def leaf_commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> dict[str, argparse.ArgumentParser]:
    """Every runnable ``dossier`` command path, e.g. ``lender pull``, with its parser."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= leaf_commands(sub, (*prefix, name))
    if not found and prefix:
        found[" ".join(prefix)] = parser
    return found


COMMANDS = leaf_commands(build_parser())


def test_quick_start_is_exactly_the_two_commands() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    code = re.search(r"```sh\n(.*?)```", quick_start, flags=re.S).group(1)
    assert [line.split("#")[0].strip() for line in code.strip().splitlines()] == ["make demo", "make test"]


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"`make (\w+)", README)) | {"demo", "test", "bench", "lint", "airflow"}:
        assert re.search(rf"^{target}:", makefile, flags=re.M), target


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_documented_and_has_help(command: str) -> None:
    assert f"| `dossier {command}` |" in README
    parser = COMMANDS[command]
    assert parser.description
    assert len(parser.format_help()) > 80


def test_the_readme_documents_no_command_that_does_not_exist() -> None:
    documented = set(re.findall(r"^\| `dossier ([a-z -]+)` \|", README, flags=re.M))
    assert documented == set(COMMANDS)


def test_every_dag_is_documented() -> None:
    dag_ids = set()
    for path in (ROOT / "dags").glob("*.py"):
        dag_ids |= set(re.findall(r'dag_id="([a-z_]+)"', path.read_text()))
    assert dag_ids == {"sme_ingest", "sme_dossier_publish"}
    for dag_id in dag_ids:
        assert f"| `{dag_id}` |" in README


def test_every_environment_variable_is_documented() -> None:
    for variable in ENVIRONMENT:
        assert f"`{variable.name}`" in readme.block(README, "environment")


@pytest.mark.parametrize("name", sorted(readme.sections()))
def test_generated_sections_match_the_code(name: str) -> None:
    assert readme.block(README, name) == readme.sections()[name], "run: python -m dossier.readme"


def test_linked_documents_exist() -> None:
    for link in re.findall(r"\]\(([^)#:]+)\)", README):
        assert (ROOT / link).exists(), link
