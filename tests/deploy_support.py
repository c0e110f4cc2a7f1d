"""Reading the Dockerfile, .dockerignore and Makefile without a Docker engine."""

from __future__ import annotations

import fnmatch
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """CMD/ENTRYPOINT/RUN arguments as a list (JSON exec form, or the shell form split)."""
        text = self.args.strip()
        if text.startswith("["):
            return json.loads(text)
        return shlex.split(text)


def dockerfile(path: Path = ROOT / "Dockerfile") -> list[Instruction]:
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    return instructions


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[Instruction]


def stages(instructions: list[Instruction]) -> list[Stage]:
    """The build stages in order: ``FROM base [AS name]`` and the instructions up to the next FROM."""
    result: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(name, words[0], []))
        elif result:
            result[-1].instructions.append(ins)
    return result


def external_bases(instructions: list[Instruction]) -> list[str]:
    """The images the build starts from (a FROM naming an earlier stage is not one)."""
    names, bases = set(), []
    for stage in stages(instructions):
        if stage.base not in names:
            bases.append(stage.base)
        names.add(stage.name)
    return bases


def copy_from_stages(instructions: list[Instruction]) -> list[tuple[str, str, str]]:
    """(stage, source, destination) of every ``COPY --from=stage``."""
    triples = []
    for ins in instructions:
        words = shlex.split(ins.args)
        stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        if ins.keyword == "COPY" and stage:
            *sources, dest = [w for w in words if not w.startswith("--")]
            triples += [(stage, src, dest) for src in sources]
    return triples


def copy_sources(instructions: list[Instruction]) -> list[tuple[str, str]]:
    """(source, destination) of every COPY/ADD from the build context."""
    pairs = []
    for ins in instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        parts = [p for p in shlex.split(ins.args) if not p.startswith("--")]
        if any(p.startswith("--from") for p in shlex.split(ins.args)):
            continue
        *sources, dest = parts
        pairs += [(s, dest) for s in sources]
    return pairs


def env_defaults(instructions: list[Instruction]) -> dict[str, str]:
    env = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerignore_patterns(path: Path = ROOT / ".dockerignore") -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; ``!`` re-includes.

    A file is also matched by a pattern naming one of its parent folders.
    """
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.strip("/")
        if body == "**" or any(fnmatch.fnmatchcase(c, body) or fnmatch.fnmatchcase(c, body.replace("**/", ""))
                               for c in candidates):
            result = not negate
    return result


def context_files(source: str, root: Path = ROOT, patterns: list[str] | None = None) -> list[Path]:
    """The files of one COPY source that reach the build context."""
    patterns = dockerignore_patterns() if patterns is None else patterns
    path = root / source
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [f for f in files if not ignored(str(f.relative_to(root)), patterns)]


def makefile_run_command(path: Path = ROOT / "Makefile") -> list[str]:
    """The gunicorn command of ``make run``, with the venv's bin/ prefix removed."""
    lines = path.read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("run:")))
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        if "gunicorn" in line:
            words = shlex.split(line.strip())
            words[0] = words[0].rsplit("/", 1)[-1]
            return words
    raise AssertionError("no gunicorn command under the Makefile's run target")


def requirement_files(path: Path) -> list[Path]:
    """``path`` and every file it includes with ``-r`` (requirements.txt includes requirements-serve.txt)."""
    files = [path]
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("-r", "--requirement"):
            files += requirement_files(path.parent / parts[1])
    return files


def cached_venv(requirements: Path, name: str) -> Path:
    """A virtualenv with ``requirements`` and nothing else, as a Docker pip layer holds it.

    Built once and kept in ~/.cache/cxr-covid/, keyed by the requirement files' sha256 and the
    Python version (Docker also keeps the layer while the file is unchanged);
    CONTAINER_VENV_FRESH=1 rebuilds it.
    """
    import hashlib
    import os
    import shutil
    import subprocess
    import sys

    digest = hashlib.sha256(sys.version.encode())
    for file in requirement_files(requirements):
        digest.update(file.read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cxr-covid"
    venv = cache / f"{name}-{digest.hexdigest()[:16]}"
    marker = venv / ".complete"
    if marker.exists() and os.environ.get("CONTAINER_VENV_FRESH") != "1":
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements)],
                            capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"pip install -r {requirements} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")
    marker.write_text(requirements.name)
    return venv
