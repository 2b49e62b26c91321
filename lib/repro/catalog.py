"""The chapters of the book, discovered from ``_toc.yml`` and each chapter's front matter.

A chapter is a MyST-Markdown notebook in ``book/`` whose YAML front matter has
a ``repro`` block::

    repro:
      config: repro.grokking:GrokkingConfig   # the typed config class
      claim: one-line headline claim
      budget_s: {smoke: 60, book: 300}         # wall-time budgets on 2 CPU cores

Pages without that block (the introduction) are not chapters.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from .paths import repo_root


class ChapterError(LookupError):
    """An unknown chapter name."""


def front_matter(path: Path) -> dict:
    text = path.read_text()
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    return yaml.safe_load(text[3:end]) or {}


@dataclass(frozen=True)
class Chapter:
    name: str
    path: Path
    title: str
    config_ref: str
    claim: str = ""
    budget_s: dict = field(default_factory=dict)

    @cached_property
    def config_class(self):
        module, _, cls = self.config_ref.partition(":")
        return getattr(importlib.import_module(module), cls)


def _toc_files(root: Path) -> list[str]:
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))
            for part in e.get("parts", []) if isinstance(e, dict) else []:
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


def all_chapters(root: Path | None = None) -> list[Chapter]:
    """Chapters in table-of-contents order."""
    root = root or repo_root()
    out = []
    for rel in _toc_files(root):
        path = root / (rel if rel.endswith(".md") else rel + ".md")
        if not path.exists():
            continue
        meta = front_matter(path).get("repro")
        if not meta:
            continue
        title = next((line[2:].strip() for line in path.read_text().splitlines() if line.startswith("# ")), path.stem)
        out.append(Chapter(path.stem, path, title, meta["config"], meta.get("claim", ""), meta.get("budget_s", {})))
    return out


def get_chapter(name: str, root: Path | None = None) -> Chapter:
    chapters = all_chapters(root)
    for ch in chapters:
        if ch.name == name:
            return ch
    raise ChapterError(f"unknown chapter {name!r}; known chapters: {', '.join(c.name for c in chapters)}")
