#!/usr/bin/env bash
# CI stage: the annotations, the Sphinx site and the docstrings' examples,
# checked against an INSTALLED nnkernels.
#
#   .ci/docs-and-types.sh VENV
#
# VENV is a venv directory where the nnkernels wheel is already installed.
# The stage installs sphinx, numpydoc, myst-parser, mypy and pytest into it, then
#   1. mypy --strict: tests/typing/pass_usage.py passes, and
#      tests/typing/fail_usage.py has an error on exactly its lines marked # E
#   2. the Sphinx site of docs/, with warnings as errors
#   3. the doctests of the public modules' docstrings (--pyargs: the
#      installed modules, not the source files)
# everything from a temporary copy of docs/ and tests/typing/, so that the
# source tree's nnkernels/, which has no compiled modules, cannot shadow the
# installed package.
set -euo pipefail
[ $# -eq 1 ] && [ -x "$1/bin/python" ] || { echo "usage: $0 VENV (a venv with nnkernels installed)" >&2; exit 2; }
venv=$(cd "$1" && pwd)
py=$venv/bin/python
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset PYTHONPATH        # the installed package only

"$py" -m pip install -q sphinx numpydoc myst-parser mypy pytest

cp -r "$repo/docs" "$work/docs"
mkdir -p "$work/tests"
cp -r "$repo/tests/typing" "$work/tests/typing"
cd "$work"
# the package must come from the venv, not from a source tree
installed=$("$py" -c "import nnkernels, os; print(os.path.dirname(nnkernels.__file__))")
case "$installed" in
    "$repo"/*) echo "nnkernels is imported from the source tree ($installed)" >&2; exit 1 ;;
esac
echo "checking the nnkernels installed at $installed"

echo "-- mypy --strict: tests/typing"
"$py" tests/typing/check_types.py

echo "-- sphinx -W: docs/"
"$py" -m sphinx -W --keep-going -q -b html docs "$work/html"
echo "docs built: $(ls "$work"/html/*.html | wc -l) pages"

echo "-- doctests of the public modules"
# every public function's module: the _api_* modules, found in the installed package
api_modules=$("$py" -c "import nnkernels, pkgutil; print(' '.join(sorted('nnkernels.' + m.name for m in pkgutil.iter_modules(nnkernels.__path__) if m.name.startswith('_api_'))))")
echo "modules: $api_modules"
# the Thinc backend's too, where Thinc is installed (CI installs it)
optional=$("$py" -c "import importlib.util as u; print('nnkernels.thinc' if u.find_spec('thinc') else '')")
# shellcheck disable=SC2086
"$py" -m pytest -q -p no:cacheprovider --doctest-modules \
    --pyargs $api_modules nnkernels._dispatch nnkernels._gradcheck nnkernels.mlp $optional
