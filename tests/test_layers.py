"""The floors of the house: which package may import which, and the one door to SQL and to Ray.

    run_study.py  ->  reports  ->  study  ->  search_spaces  ->  trainers

Each package imports only from its own floor and the ones below (the arrows); SQL libraries are
imported only by the store (`study/store.py` with its schema, engine, Optuna table shapes and
migrations) and Ray only by `study/ray_tune.py`. Checked on the source, so a new import that
breaks the rule fails here, not in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ["trainers", "search_spaces", "study", "reports"]  # bottom to top
SQL = {"sqlalchemy", "alembic", "sqlite3", "psycopg"}
STORE = {"study/store.py", "study/schema.py", "study/engine.py", "study/optuna_schema.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return {name.split(".")[0] for name in names}


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", FLOORS)
def test_a_package_imports_only_its_own_floor_and_those_below(package):
    above = set(FLOORS[FLOORS.index(package) + 1 :])
    for path in _sources(package):
        wrong = _imports(path) & above
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}, a floor above {package}"


def test_only_the_store_speaks_sql_and_only_ray_tune_imports_ray():
    code = [p for floor in FLOORS for p in _sources(floor)] + [ROOT / "run_study.py"]
    for path in code:
        name = path.relative_to(ROOT).as_posix()
        imported = _imports(path)
        if name not in STORE and not name.startswith("study/migrations/"):
            assert not imported & SQL, f"{name} imports {imported & SQL}: go through the Store"
        if name != "study/ray_tune.py":
            assert "ray" not in imported, f"{name} imports Ray: go through study.ray_tune"


def test_every_package_says_what_lives_there_and_who_may_import_it():
    for package in FLOORS:
        doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
        assert doc and "May import" in doc and "Imported by" in doc, package
