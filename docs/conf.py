"""Sphinx configuration of the nnkernels manual and API reference.

Build (from any folder but the repository root, so that an installed or
in-place-built nnkernels is imported, never an unbuilt source tree):

    python -m sphinx -W --keep-going -b html path/to/docs path/to/html
"""

import nnkernels

project = "nnkernels"
author = "The nnkernels developers"
copyright = "the nnkernels developers"
release = version = nnkernels.__version__

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "myst_parser",        # the manual's pages are Markdown, used as they are
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# autodoc: signatures in source order, type aliases shown by name
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_type_aliases = {
    name: f"nnkernels._typing.{name}"
    for name in ("FloatArrayLike", "FloatArray", "Loss", "Reduction", "Activation",
                 "FloatArrayT")
}
autodoc_type_aliases["ArrayLike"] = "numpy.typing.ArrayLike"
autodoc_type_aliases["DTypeLike"] = "numpy.typing.DTypeLike"

# numpydoc: the docstrings' own sections; no generated member tables
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# every parameter of a public function documented, none unknown, a summary,
# and an Examples section (the NumPy twins in nnkernels.reference document
# themselves by their compiled counterparts)
numpydoc_validation_checks = {"PR01", "PR02", "SS01", "EX01"}
numpydoc_validation_exclude = {r"^nnkernels\.reference\.", r"\.GradcheckResult$",
                               r"^nnkernels\.mlp\.MLP\.", r"^nnkernels$",
                               r"^nnkernels\.mlp$"}

myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"nnkernels {release}"


def _short_aliases(app, what, name, obj, options, signature, return_annotation):
    """Show the type aliases by their short names in signatures.

    autodoc renders an alias nested in ``Optional``/``tuple`` as
    ``TypeAliasForwardRef('nnkernels._typing.X')``; both forms become ``X``.
    """
    import re

    def shorten(text):
        if text is None:
            return None
        text = re.sub(r"TypeAliasForwardRef\('(?:[\w.]+\.)?(\w+)'\)", r"\1", text)
        return re.sub(r"\bnnkernels\._typing\.(\w+)", r"\1", text)

    return shorten(signature), shorten(return_annotation)


def setup(app):
    app.connect("autodoc-process-signature", _short_aliases)
