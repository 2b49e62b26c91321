"""Sphinx extension (listed in ``_config.yml``): a ``.md`` download button on every chapter page.

The site is built from the executed notebooks (``repro.book.stage_site``), so Jupyter Book's download
menu offers the chapter's ``.ipynb`` (with the outputs the page shows) but not its MyST source.  This
copies ``book/<chapter>.md`` from the repository next to the notebook under ``_build/html/_sources/``
and adds a ``.md`` entry to the menu, so readers can take either home.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .paths import repo_root


def _markdown_source(docname: str) -> Path | None:
    path = repo_root() / f"{docname}.md"
    return path if path.is_file() else None


def add_markdown_download(app, pagename, templatename, context, doctree):
    """After sphinx-book-theme built the header buttons: add the chapter's .md to its download menu."""
    if context.get("page_source_suffix") != ".ipynb" or "header_buttons" not in context:
        return
    source = _markdown_source(pagename)
    if source is None:
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    for group in context["header_buttons"]:
        if group.get("label") == "download-buttons":
            buttons = group["buttons"]
            at = next((i + 1 for i, b in enumerate(buttons) if b.get("label") == "download-source-button"),
                      len(buttons))
            buttons.insert(at, {
                "type": "link",
                "url": f"{context['pathto']('_sources', 1)}/{pagename}.md",
                "text": ".md",
                "tooltip": "Download the chapter's MyST Markdown source (opens as a notebook with jupytext)",
                "icon": "fas fa-file-lines",
                "label": "download-markdown-button",
            })


def inherit_html_handlers(app) -> None:
    """Give the ``singlehtml`` builder (``make pdf``) every node handler registered for ``html``.

    Sphinx looks handlers up by builder name and falls back to the format
    (``html``) only when no extension registered anything for the name.
    sphinx-exercise registers its nodes for ``singlehtml`` explicitly, which
    switches the fallback off, so nodes registered for ``html`` only (e.g.
    sphinx-jupyterbook-latex's ``HiddenCellNode``) became unknown there.
    """
    if app.builder.name != "singlehtml":
        return
    handlers = app.registry.translation_handlers
    single = handlers.setdefault("singlehtml", {})
    for node_name, visitors in handlers.get("html", {}).items():
        single.setdefault(node_name, visitors)


def setup(app):
    app.connect("html-page-context", add_markdown_download, priority=600)  # the theme's buttons come at 501
    app.connect("builder-inited", inherit_html_handlers)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
