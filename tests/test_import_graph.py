"""The package's import graph, read from the source (AST, nothing imported): commands are leaves
(no module imports a command module), there is no import circle, and the dependency rules of
docs/architecture.md hold. Imports inside functions count like any other."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "maskgil_jax"
ROOT = "maskgil_jax"

# docs/architecture.md, "Dependency rules": floor -> the floors it may import. A floor is a
# subpackage (`models/`) or a top-level module (`loading`); `errors`, `files` and the package
# itself (`maskgil_jax`, its version) may be imported by every floor.
EVERYWHERE = {"errors", "files", "text_files", "notices", ROOT}
RULES = {
    "errors": set(),
    "files": set(),
    "xla_cpu": set(),
    "configlib/": set(),
    "cli": {"configlib/", "parallel/"},
    "parallel/": {"configlib/"},
    "models/": {"configlib/", "parallel/", "xla_cpu"},
    "decode/": {"configlib/", "models/", "parallel/", "xla_cpu"},
    "interop/": {"configlib/", "models/"},
    "text/": {"configlib/", "models/", "interop/"},
    "data/": {"configlib/", "text/", "cli"},
    "checkpoints": {"configlib/", "interop/", "data/"},
    "loading": {"checkpoints", "configlib/", "interop/", "models/", "parallel/", "text/"},
    "pipeline": {"configlib/", "data/", "decode/", "loading", "models/", "parallel/", "text/"},
    "evaluation/": {"configlib/", "data/", "decode/", "interop/", "loading", "models/",
                    "parallel/"},
    "training/": {"checkpoints", "cli", "configlib/", "data/", "decode/", "interop/", "loading",
                  "models/", "parallel/", "text/"},
}
# modules that are parts of one command (imported by that command alone)
COMMAND_PARTS = {f"{ROOT}.demo_text": f"{ROOT}.demo", f"{ROOT}.app_page": f"{ROOT}.app"}


def modules() -> dict[str, pathlib.Path]:
  found = {}
  for path in PACKAGE.rglob("*.py"):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    found[".".join(parts)] = path
  return found


MODULES = modules()


def imports(name: str, path: pathlib.Path) -> set[str]:
  """The package modules `name` imports (a `from pkg import sub` names the submodule)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
      else:
        module = node.module
      for a in node.names:
        sub = f"{module}.{a.name}"
        out.add(sub if sub in MODULES else module)
  return {m for m in out if m in MODULES and m != name}


GRAPH = {name: imports(name, path) for name, path in MODULES.items()}


def is_command(name: str) -> bool:
  """A module that runs itself under `python -m`: `cli.entry(_main, __name__)` (or a
  `__main__` block)."""
  text = MODULES[name].read_text()
  return "cli.entry(_main, __name__)" in text or 'if __name__ == "__main__":' in text


def floor(name: str) -> str:
  parts = name.split(".")
  if len(parts) == 1:
    return ROOT
  if len(parts) > 2 or MODULES[name].name == "__init__.py":
    return parts[1] + "/"
  return parts[1]


def test_the_graph_is_read():
  """The walk sees the package: commands, library modules and their edges."""
  assert {f"{ROOT}.train", f"{ROOT}.sample", f"{ROOT}.evaluate"} <= {
      n for n in MODULES if is_command(n)}
  assert f"{ROOT}.loading" in GRAPH[f"{ROOT}.pipeline"]
  assert f"{ROOT}.training.trainer" in GRAPH[f"{ROOT}.train"]


def test_no_module_imports_a_command():
  commands = {n for n in MODULES if is_command(n)}
  bad = sorted(f"{n} imports {d}" for n, deps in GRAPH.items() for d in deps
               if d in commands or (d in COMMAND_PARTS and COMMAND_PARTS[d] != n))
  assert not bad, "a command module is imported (move what it shares into the library):\n" + (
      "\n".join(bad))


def circles() -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in sorted(GRAPH[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(GRAPH):
    if v not in index:
      visit(v)
  return found


def test_no_import_circle():
  assert circles() == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if floor(n) in RULES))
def test_dependency_rules_of_the_architecture(name):
  allowed = RULES[floor(name)] | EVERYWHERE | {floor(name)}
  bad = sorted(d for d in GRAPH[name] if floor(d) not in allowed)
  assert not bad, f"{name} ({floor(name)}) may import only {sorted(allowed)}, imports {bad}"


def test_torch_model_imports_nothing_of_the_package():
  """The PyTorch twin can be copied out and used without JAX."""
  assert GRAPH[f"{ROOT}.interop.torch_model"] == set()
