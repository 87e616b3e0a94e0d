#!/usr/bin/env bash
# Release check: the sdist and the wheel build with no warning (the wheel is built FROM the
# sdist, so the sdist holds what a rebuild needs), the sdist holds what it should, and the
# wheel installed (not editable) into a fresh venv works from a directory outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
python="${PYTHON:-$repo/.venv/bin/python}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
# Python warnings (SetuptoolsDeprecationWarning, ...) and setuptools' WARNING banners; distutils'
# lower-case "warning: byte-compiling is disabled" (PYTHONDONTWRITEBYTECODE) is not one.
if grep -E "WARNING|[A-Za-z]Warning\b|[Dd]eprecat" "$work/build.log"; then
    echo "check_package: the build printed a warning (above)"; exit 1
fi

sdist=$(ls "$work"/dist/*.tar.gz); wheel=$(ls "$work"/dist/*.whl)
tar tzf "$sdist" > "$work/sdist.txt"
for need in pyproject.toml README.md LICENSE CHANGELOG.md hyperadam_optax/pretrained/hyperadam.npz \
            hyperadam_optax/pretrained/l2o_scale.json; do
    grep -q "/$need\$" "$work/sdist.txt" || { echo "check_package: sdist lacks $need"; exit 1; }
done
# Tests, notebooks, research runs and docs stay in the repository on purpose: the sdist is for
# rebuilding the package, the tests need the checkout (README, docs, notebooks).
if grep -E "/(tests|research|experiments|notebooks|docs)/" "$work/sdist.txt"; then
    echo "check_package: sdist holds repository-only files (above)"; exit 1
fi

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel"
cp .ci/wheel_smoke.py "$work/"
(cd "$work" && "$work/venv/bin/python" wheel_smoke.py)
echo "check_package: $(basename "$sdist") and $(basename "$wheel") ok"
