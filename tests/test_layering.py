"""Packages reach one another only through what each one's ``__all__`` offers.

The rule, checked over every module under ``ytproxy/`` (parsed with ``ast``,
imports inside functions and ``TYPE_CHECKING`` blocks included):

- A *package* is a directory under ``ytproxy/`` with an ``__init__.py``
  (``ytproxy/cache``), or a top-level module (``ytproxy/models.py``), which is
  its own package; ``ytproxy/__init__.py`` is the root package.  New ones are
  found by walking the tree, so they are covered without a change here.
- Within a package, modules import anything of one another, private names too.
- From another package, a module imports only names in that package's
  ``__all__`` (its ``__init__.py``'s, or the top-level module's own), by any
  path: ``from ytproxy.cache.service import TrackCache`` is allowed when
  ``TrackCache`` is in ``ytproxy.cache.__all__`` (and is the same object
  there).  A name with a leading underscore never crosses (dunders such as
  ``__version__`` are not private).  A top-level module without ``__all__``
  offers its every public name; every directory package must define one.
- A package may offer whole submodules instead (``ytproxy.private``: one
  module per library): a name in its ``__all__`` that is one of its modules
  makes that module's own ``__all__`` the face for imports from it
  (``from ytproxy.private.aiohttp import payload_writer``).
- ``import ytproxy.x.y`` of another package is allowed only for the package
  itself (``import ytproxy.x``); its submodules are its own business.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "ytproxy"


@dataclass(frozen=True)
class Package:
    name: str  # "cache", "models"; "" for ytproxy/__init__.py
    init: Path  # the file whose __all__ is the package's face
    exports: frozenset[str] | None  # None: a top-level module without __all__

    def offered_module(self, name: str) -> Path | None:
        """The module ``name`` of this package when its ``__all__`` offers it whole."""
        path = self.init.parent / f"{name}.py"
        offered = self.init.name == "__init__.py" and name in (self.exports or ())
        return path if offered and path.exists() else None


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _private(name: str) -> bool:
    return name.startswith("_") and not _dunder(name)


def declared_all(path: Path) -> frozenset[str] | None:
    """The strings ``__all__`` is assigned (and extended with) in a module; None if never."""
    found: set[str] | None = None
    for node in ast.parse(path.read_text(), str(path)).body:
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = node.value
        if value is None:
            continue
        if not isinstance(value, ast.List | ast.Tuple):
            raise AssertionError(f"{path}:{node.lineno}: __all__ must be a literal list")
        found = found or set()
        for element in value.elts:
            if not (isinstance(element, ast.Constant) and isinstance(element.value, str)):
                raise AssertionError(f"{path}:{node.lineno}: __all__ holds a non-string")
            found.add(element.value)
    return None if found is None else frozenset(found)


def packages(root: Path) -> dict[str, Package]:
    found: dict[str, Package] = {"": Package("", root / "__init__.py",
                                             declared_all(root / "__init__.py"))}
    for path in sorted(root.iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            init = path / "__init__.py"
            found[path.name] = Package(path.name, init, declared_all(init))
        elif path.suffix == ".py" and path.stem != "__init__":
            found[path.stem] = Package(path.stem, path, declared_all(path))
    return found


def _package_of(root: Path, path: Path) -> str:
    parts = path.relative_to(root).parts
    if len(parts) == 1:
        return "" if parts[0] == "__init__.py" else parts[0].removesuffix(".py")
    return parts[0]


def _absolute(root: Path, path: Path, node: ast.ImportFrom) -> str:
    """The dotted module a ``from`` import names, relative ones resolved."""
    if not node.level:
        return node.module or ""
    parts = ["ytproxy", *path.relative_to(root).with_suffix("").parts]
    base = parts[:-node.level]  # a module's own name, then one package per dot
    if path.name == "__init__.py":
        base = parts[:len(parts) - node.level]
    return ".".join([*base, *([node.module] if node.module else [])])


def _refusals(root: Path, path: Path, node: ast.ImportFrom, own: str,
              known: dict[str, Package], top: str) -> list[str]:
    module = _absolute(root, path, node)
    parts = module.split(".")
    if parts[0] != top:
        return []
    target = parts[1] if len(parts) > 1 else ""
    out: list[str] = []
    for alias in node.names:
        name = alias.name
        # `from ytproxy import cache` names a package, not a name of the root's.
        here = name if target == "" and name in known else target
        if here == own:
            continue
        if _private(name):
            out.append(f"{name} is private to {top}" + (f".{here}" if here else ""))
        elif name == "*":
            out.append(f"a star import from {module}")
        elif here != target:
            continue  # a whole package, by its public name
        elif here not in known:
            out.append(f"{module}: no such package")
        elif len(parts) > 2 and (whole := known[here].offered_module(parts[2])) is not None:
            if name not in (declared_all(whole) or ()):
                out.append(f"{name} (from {module}) is not in {module}.__all__")
        elif (offered := known[here].exports) is not None and name not in offered:
            out.append(f"{name} (from {module}) is not in {top}"
                       + (f".{here}" if here else "") + ".__all__")
    return out


def violations(root: Path, top: str = "ytproxy") -> list[str]:
    """Every cross-package import that breaks the rule, as ``file:line: why``."""
    known = packages(root)
    problems = [f"{p.init.relative_to(root.parent)}:1: package "
                f"{'.'.join(filter(None, (top, p.name)))} has no __all__"
                for p in known.values() if p.exports is None and p.init.name == "__init__.py"]
    for path in sorted(root.rglob("*.py")):
        own = _package_of(root, path)
        where = path.relative_to(root.parent)
        found: list[tuple[int, str]] = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(node.lineno, f"import {alias.name}: import the package "
                                        f"{top}.{alias.name.split('.')[1]}, not its module")
                          for alias in node.names
                          if alias.name.startswith(f"{top}.") and alias.name.count(".") > 1
                          and alias.name.split(".")[1] != own]
            elif isinstance(node, ast.ImportFrom):
                found += [(node.lineno, why) for why in _refusals(root, path, node, own, known,
                                                                  top)]
        problems += [f"{where}:{line}: {why}" for line, why in sorted(found)]
    return problems


def test_every_import_across_packages_uses_a_public_name() -> None:
    problems = violations(ROOT)
    assert not problems, "\n".join(problems)


def test_every_name_offered_is_there_and_the_same_object_by_any_path() -> None:
    """``__all__`` names what the package really binds, and a deep import
    (``ytproxy.cache.service.TrackCache``) gets the object the package offers."""
    problems: list[str] = []
    for package in packages(ROOT).values():
        if package.name == "__main__":
            continue  # running it is `python -m ytproxy`
        dotted = "ytproxy" + (f".{package.name}" if package.name else "")
        module = importlib.import_module(dotted)
        for name in sorted(package.exports or ()):
            if package.offered_module(name) is not None:
                importlib.import_module(f"{dotted}.{name}")  # a whole module offered
            if not hasattr(module, name):
                problems.append(f"{package.init.relative_to(ROOT.parent)}: {dotted}.__all__ "
                                f"names {name}, which it lacks")
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.module
                    and node.module.startswith("ytproxy.") and node.module.count(".") > 1):
                continue
            target = node.module.split(".")[1]
            if target == _package_of(ROOT, path):
                continue
            if packages(ROOT)[target].offered_module(node.module.split(".")[2]) is not None:
                continue  # the module is the face itself
            face = importlib.import_module(f"ytproxy.{target}")
            deep = importlib.import_module(node.module)
            where = f"{path.relative_to(ROOT.parent)}:{node.lineno}"
            problems += [f"{where}: {node.module}.{a.name} is not ytproxy.{target}.{a.name}"
                         for a in node.names
                         if getattr(deep, a.name, None) is not getattr(face, a.name, None)]
    assert not problems, "\n".join(problems)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "ytproxy"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_check_names_each_bad_import_by_file_and_line(tmp_path: Path) -> None:
    """The checker itself, on a small tree: what it must refuse, and what it must let by."""
    root = _tree(tmp_path, {
        "__init__.py": '__all__ = ["__version__"]\n__version__ = "1"\n',
        "models.py": '__all__ = ["Track"]\nclass Track: ...\nclass Other: ...\n',
        "loose.py": "def helper(): ...\ndef _hidden(): ...\n",
        "cache/__init__.py": 'from ytproxy.cache.service import TrackCache\n'
                             '__all__ = ["TrackCache"]\n',
        "cache/service.py": "class TrackCache: ...\nclass AudioCache: ...\n_SLOTS = 2\n",
        "cache/body.py": "from ytproxy.cache.service import _SLOTS, AudioCache\n",
        "nofence/__init__.py": "",
        "private/__init__.py": '__all__ = ["aio"]\n',
        "private/aio.py": '__all__ = ["hook"]\ndef hook(): ...\ndef other(): ...\n',
        "http/__init__.py": '__all__ = []\n',
        "http/app.py": (
            "from ytproxy import __version__\n"
            "from ytproxy.cache.service import TrackCache\n"
            "from ytproxy.cache import TrackCache as Cache\n"
            "from ytproxy.models import Track\n"
            "from ytproxy.loose import helper\n"
            "def later():\n"
            "    from ytproxy.cache.service import AudioCache\n"  # line 7
            "    from ytproxy.cache.service import _SLOTS\n"  # line 8
            "from ytproxy.models import Other\n"  # line 9
            "from ytproxy.loose import _hidden\n"  # line 10
            "import ytproxy.cache.service\n"  # line 11
            "from ..cache.service import AudioCache as Relative\n"  # line 12
            "from .routes import anything\n"  # line 13: its own package
            "from ytproxy.private.aio import hook\n"  # line 14: an offered module's name
            "from ytproxy.private.aio import other\n"  # line 15
        ),
    })
    assert violations(root) == [
        "ytproxy/nofence/__init__.py:1: package ytproxy.nofence has no __all__",
        "ytproxy/http/app.py:7: AudioCache (from ytproxy.cache.service) is not in "
        "ytproxy.cache.__all__",
        "ytproxy/http/app.py:8: _SLOTS is private to ytproxy.cache",
        "ytproxy/http/app.py:9: Other (from ytproxy.models) is not in ytproxy.models.__all__",
        "ytproxy/http/app.py:10: _hidden is private to ytproxy.loose",
        "ytproxy/http/app.py:11: import ytproxy.cache.service: import the package "
        "ytproxy.cache, not its module",
        "ytproxy/http/app.py:12: AudioCache (from ytproxy.cache.service) is not in "
        "ytproxy.cache.__all__",
        "ytproxy/http/app.py:15: other (from ytproxy.private.aio) is not in "
        "ytproxy.private.aio.__all__",
    ]


def test_the_resolver_package_does_not_import_its_worker_module() -> None:
    """A yt-dlp worker runs as ``python -m ytproxy.resolve.ytdlp_process``: were
    the package's face to import that module first, runpy would warn on the
    worker's stderr (which the daemon logs) on every start."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, ytproxy.resolve; "
         "print('ytproxy.resolve.ytdlp_process' in sys.modules)"],
        cwd=ROOT.parent, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr


# The packages from the top down: a module imports only from packages below its
# own (the root modules, ytproxy/*.py, are the bottom, and import one another).
# A /proxy request reads the same way down: http → playback → cache, upstream →
# resolve, and never back into http.
LAYERS = ("__main__", "cli", "http", "services", "playback", "follower", "cache", "library",
          "upstream", "resolve", "private")


def upward_imports(root: Path, top: str = "ytproxy") -> list[str]:
    """Every import of a package at or above the importer's layer, as ``file:line: why``."""
    known = packages(root)

    def rank(name: str) -> int:
        return LAYERS.index(name) if name in LAYERS else len(LAYERS)  # a root module

    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        own = _package_of(root, path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                parts = _absolute(root, path, node).split(".")
                if parts[0] != top:
                    continue
                names = ([parts[1]] if len(parts) > 1
                         else [a.name for a in node.names if a.name in known] or [""])
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names
                         if a.name.startswith(f"{top}.")]
            for target in names:
                if target in (own, "") or rank(own) == rank(target) == len(LAYERS):
                    continue  # its own package, the root package, or root to root
                if rank(target) <= rank(own):
                    problems.append(f"{path.relative_to(root.parent)}:{node.lineno}: "
                                    f"{own or top} imports {target}, which is not below it")
    return problems


def test_imports_flow_down_the_layers() -> None:
    assert set(LAYERS) - {"__main__"} <= set(packages(ROOT)), "a layer names no package"
    unranked = {p for p in packages(ROOT) if p and p not in LAYERS and (ROOT / p).is_dir()}
    assert not unranked, f"packages with no place in LAYERS: {sorted(unranked)}"
    problems = upward_imports(ROOT)
    assert not problems, "\n".join(problems)


def test_the_direction_check_names_an_import_that_goes_up(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": '__all__ = []\n',
        "models.py": '__all__ = ["Track"]\nclass Track: ...\n',
        "errors.py": "from ytproxy.models import Track\n",  # root to root: fine
        "cache/__init__.py": '__all__ = []\n',
        "cache/service.py": "from ytproxy.models import Track\n"
                            "from ytproxy.playback import Playback\n",  # line 2: up
        "playback/__init__.py": '__all__ = ["Playback"]\nclass Playback: ...\n',
        "playback/service.py": "from ytproxy.cache import service\n",  # down: fine
        "resolve/__init__.py": '__all__ = []\n',
        "config.py": "import ytproxy.resolve\n",  # line 1: a root module reaching up
    })
    assert upward_imports(root) == [
        "ytproxy/cache/service.py:2: cache imports playback, which is not below it",
        "ytproxy/config.py:1: config imports resolve, which is not below it",
    ]
