#!/usr/bin/env bash
# CI: build the sdist and the wheel (the wheel from the sdist, as `python -m build` does), install the
# WHEEL (not editable) into a fresh virtual environment outside the checkout, and run deploykit from
# another directory. The dependencies are not installed again: a path file lets the fresh environment
# see the site-packages of $PYTHON's environment (.venv, set up by `make test`). Its own .pth files
# (the editable deploykit among them) are not processed there, so deploykit comes from the wheel only.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$PWD
python=${PYTHON:-.venv/bin/python}
[[ $python == /* ]] || python=$PWD/$python  # absolute, but not resolved: a venv's python is a symlink
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS

fail() { echo "wheel smoke: FAILED: $*" >&2; exit 1; }
step() { echo "wheel smoke [$((SECONDS - start)) s]: $*"; }

# Build from a copy of the files git knows (tracked, or new and not ignored): no stale egg-info or build/
# of the checkout can add files to the sdist, and the checkout is left as it was.
step "python -m build (sdist, then the wheel from it)"
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/src"
"$python" -m build --outdir "$work/dist" "$work/src" >"$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log"; fail "build"; }
wheels=("$work"/dist/deploykit-*.whl)
[[ ${#wheels[@]} -eq 1 && -f ${wheels[0]} ]] || fail "expected one wheel in dist/, got: $(ls "$work/dist")"
wheel=${wheels[0]}
version=$(basename "$wheel" | cut -d- -f2)

step "install $(basename "$wheel") into a fresh venv"
"$python" -m venv --without-pip "$work/venv"
# Install first, link the dependencies after: pip must not see .venv's editable deploykit as installed.
"$python" -m pip --quiet --python "$work/venv/bin/python" install --no-deps --no-index "$wheel"
deps=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" >"$site/_ci_dependencies.pth"

mkdir "$work/elsewhere"
cd "$work/elsewhere"
unset PYTHONPATH DEPLOYKIT_TARGETS_DIR
deploykit=$work/venv/bin/deploykit

where=$("$work/venv/bin/python" -c 'import deploykit; print(deploykit.__file__)')
[[ $where == "$site"/* ]] || fail "deploykit imported from $where, not from the wheel in $site"

step "deploykit --version"
out=$("$deploykit" --version)
[[ $out == "deploykit $version" ]] || fail "--version says '$out', the wheel is $version"

step "deploykit targets"
out=$("$deploykit" targets)
[[ $(head -1 <<<"$out") == *"shipped with deploykit ($site/deploykit/_data/targets)" ]] \
    || fail "targets are not read from the package: $(head -1 <<<"$out")"
for yaml in "$checkout"/targets/*.yaml; do
    name=$(basename "$yaml" .yaml)
    grep -q "^$name  *shipped " <<<"$out" || fail "deploykit targets does not list $name"
done

step "deploykit blocks convnext_atto"
out=$("$deploykit" blocks convnext_atto)
grep -q "^convnext_atto at 224x224: 12 blocks" <<<"$out" || fail "deploykit blocks: $(head -1 <<<"$out")"

# The smallest real profile: timm's test_vit at 32x32 (6 entries), one short round per entry, isolated
# sums (no fit, no held-out subnets), the sentinel only at the start and the end and never a re-measure,
# explicit run settings (no settings probe).
step "deploykit profile (test_vit at 32x32)"
"$deploykit" profile --target cpu-ort --model test_vit --input-size 32 --out tiny.csv --predictor isolated \
    --fit-samples 0 --holdout 0 --warmup-time 0 --warmup-iters 1 --min-time 0 --min-iters 3 --max-repeats 1 \
    --sentinel-every 0 --max-drift 1 --threads 1 --spinning off >"$work/profile.log" 2>&1 \
    || { tail -20 "$work/profile.log"; fail "deploykit profile"; }
[[ -s tiny.csv && -s tiny.meta.json ]] || fail "deploykit profile wrote no table"

step "passed in $((SECONDS - start)) s"
