"""Libraries' private parts are reached only through ytproxy.private: no other
module imports a private module of a library (a name starting with "_", or one
of aiohttp's undocumented internals) nor python-mpd2's client to override it."""

from __future__ import annotations

import ast
from pathlib import Path

import ytproxy

PACKAGE = Path(ytproxy.__file__).parent
# aiohttp's modules below its documented surface (aiohttp, aiohttp.web, aiohttp.typedefs).
AIOHTTP_INTERNALS = ("aiohttp.http", "aiohttp.http_exceptions", "aiohttp.http_parser",
                     "aiohttp.web_protocol", "aiohttp.base_protocol", "aiohttp.client_proto")


def private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                 else [])
        for name in names:
            library = name.split(".")[0]
            if library == "ytproxy" or library == "__future__":
                continue
            if (any(part.startswith("_") for part in name.split("."))
                    or name.startswith(AIOHTTP_INTERNALS) or name == "mpd.asyncio"):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {name}")
    return found


def test_only_ytproxy_private_imports_a_librarys_private_modules() -> None:
    outside = [p for p in PACKAGE.rglob("*.py") if "private" not in p.relative_to(PACKAGE).parts]
    assert outside
    found = [hit for path in outside for hit in private_imports(path)]
    assert found == [], "move these into ytproxy/private/: " + "; ".join(found)


def test_the_check_sees_what_ytproxy_private_imports() -> None:
    seen = [hit for path in (PACKAGE / "private").glob("*.py") for hit in private_imports(path)]
    assert any("aiohttp.http" in hit for hit in seen)
    assert any("yt_dlp.extractor.youtube._base" in hit for hit in seen)
    assert any("mpd.asyncio" in hit for hit in seen)
