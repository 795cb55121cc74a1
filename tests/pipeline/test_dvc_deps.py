"""dvc.yaml declares the code each stage runs, so DVC never serves results of older code.

1. Completeness: each stage's command is a console script; every project module it can import
   (transitively, lazy imports inside functions included, package ``__init__`` files included) lies
   under one of the stage's deps, and every code dep exists (no stale path).
2. Behaviour: in a scratch DVC project made of this checkout's code and dvc.yaml (placeholder data),
   editing one source file makes ``dvc status`` report exactly the stages that import it.
"""
from __future__ import annotations

import ast
import os
import shutil
from contextlib import contextmanager
from importlib.metadata import distribution
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("losa", "storage", "stages", "pipeline")
CODE_DIRS = PACKAGES


def _module_file(name: str) -> Path | None:
    """The file of project module ``name`` (a .py module or a package's __init__.py), else None."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path) -> set[str]:
    """Module names imported anywhere in ``path`` (``from a import b`` yields ``a`` and ``a.b``)."""
    names: set[str] = set()
    pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def import_closure(module: str) -> set[Path]:
    """Every project file that importing ``module`` may execute (parents' __init__ included)."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            f = _module_file(".".join(parts[:i]))
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(_imports(f))
    return seen


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _scripts() -> dict[str, str]:
    """Console scripts of the installed project (`pip install -e .`, as CI does)."""
    return {ep.name: ep.value for ep in distribution("losa-pipeline").entry_points if ep.group == "console_scripts"}


def stage_code(stage: dict) -> set[Path]:
    """Project files the stage's command runs (console script → module → import closure)."""
    script = stage["cmd"].split()[0]
    module = _scripts()[script].split(":")[0]
    return import_closure(module)


def _code_deps(stage: dict) -> list[Path]:
    return [ROOT / d for d in stage.get("deps", []) if Path(d).parts[0] in CODE_DIRS]


def _covered(path: Path, deps: list[Path]) -> bool:
    return any(path == d or d in path.parents for d in deps)


@pytest.mark.parametrize("name", sorted(_stages()))
def test_dvc_yaml_lists_every_module_a_stage_imports(name):
    stage = _stages()[name]
    code, deps = stage_code(stage), _code_deps(stage)
    missing = sorted(str(p.relative_to(ROOT)) for p in code if not _covered(p, deps))
    assert not missing, f"dvc.yaml stage {name!r} lacks deps for: {missing}"
    # listing more than the stage imports only costs a re-run; a path that is gone breaks `dvc repro`
    gone = sorted(str(d.relative_to(ROOT)) for d in deps if not d.exists())
    assert not gone, f"dvc.yaml stage {name!r} lists code that does not exist: {gone}"


def test_import_closure_follows_lazy_and_relative_imports():
    closure = import_closure("pipeline.cli_eval")
    # cli_eval imports stages.infer.predict only inside main() (lazy import for a fast --help)
    assert ROOT / "stages" / "infer" / "predict.py" in closure
    assert ROOT / "stages" / "__init__.py" in closure or not (ROOT / "stages" / "__init__.py").exists()
    assert ROOT / "stages" / "extract" / "run.py" not in closure  # evaluation never extracts


# ---------------------------------------------------------------------------- dvc status after an edit
@contextmanager
def _repo(proj: Path):
    """The scratch project opened with DVC's Python API (cwd inside it, as the dvc CLI would run)."""
    from dvc.repo import Repo

    old = os.getcwd()
    os.chdir(proj)
    try:
        with Repo(str(proj)) as repo:
            yield repo
    finally:
        os.chdir(old)


def _scratch_project(tmp: Path) -> Path:
    """This checkout's code, dvc.yaml and params.yaml plus placeholder data deps and outs, committed
    to a fresh DVC project (no git, no cache pushes) so that ``dvc status`` starts clean."""
    proj = tmp / "proj"
    proj.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in CODE_DIRS:
        shutil.copytree(ROOT / d, proj / d, ignore=ignore)
    for f in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / f, proj / f)
    stages = _stages()
    for stage in stages.values():
        paths = [d for d in stage.get("deps", []) if Path(d).parts[0] not in CODE_DIRS]
        for kind in ("outs", "metrics", "plots"):
            paths += [next(iter(o)) if isinstance(o, dict) else o for o in stage.get(kind, [])]
        for p in paths:
            target = proj / p
            if target.exists():
                continue
            if target.suffix:  # a file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(f"placeholder {p}\n")
            else:  # a folder output / dependency
                target.mkdir(parents=True, exist_ok=True)
                (target / "placeholder").write_text(f"placeholder {p}\n")
    from dvc.repo import Repo

    Repo.init(str(proj), no_scm=True).close()
    (proj / ".dvc" / "config").write_text("[core]\n    no_scm = True\n    analytics = false\n")
    with _repo(proj) as repo:
        repo.commit(force=True)
    return proj


def _changed(proj: Path) -> set[str]:
    """Stages whose deps (or params) differ from the lock: what `dvc repro` would re-run first."""
    with _repo(proj) as repo:
        return set(repo.status())


@pytest.mark.slow  # ~15 s alone, 30 s on a loaded 2-core machine (DVC hashes the copied code)
def test_code_edit_reruns_exactly_the_stages_that_import_it(tmp_path):
    proj = _scratch_project(tmp_path)
    assert _changed(proj) == set(), "a freshly committed project must be up to date"
    stages = _stages()
    for rel in ("losa/head/actionformer.py", "stages/extract/decode.py", "stages/rundir.py"):
        expected = {n for n, s in stages.items() if ROOT / rel in stage_code(s)}
        assert expected, rel  # the edit must matter to at least one stage
        target = proj / rel
        original = target.read_text()
        target.write_text(original + "\n# edited\n")
        assert _changed(proj) == expected, rel
        target.write_text(original)  # reverted: the next edit's status sees only the next edit
    assert _changed(proj) == set()
    # the expectations are not trivial: a model edit is not an extraction edit
    assert {n for n, s in stages.items() if ROOT / "losa/head/actionformer.py" in stage_code(s)} >= {"train"}
    assert "extract" not in {n for n, s in stages.items() if ROOT / "losa/head/actionformer.py" in stage_code(s)}
