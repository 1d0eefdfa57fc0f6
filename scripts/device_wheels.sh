#!/usr/bin/env bash
# Wheels for a bare GPU box, into .whl/ (git-ignored) for `run(carry=[".whl"])`: the packages that
# scripts/device_checks.sh needs and that box lacks (it has Python 3.12, torch, numpy, pandas, pyarrow, scipy,
# scikit-learn, safetensors, transformers; not deepspeed, open_clip, pydantic, ray, mlflow). Versions are this
# project's pins, read from the project venv; deepspeed is an sdist, so it is built here into a pure wheel
# (its CUDA ops are JIT-built there only if used; radscale uses torch's fused AdamW, no DeepSpeed op).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(scripts/bootstrap.sh)
py_version=${DEVICE_PYTHON:-3.12}
out=.whl
rm -rf "$out" && mkdir -p "$out"
ver() { "$venv/bin/python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
specs=()
for name in pydantic pydantic_core annotated-types typing-inspection typing_extensions open_clip_torch ftfy wcwidth \
        hjson timm; do
    specs+=("$name==$(ver "$name")")
done
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
"$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: --python-version "$py_version" \
    --implementation cp "${platforms[@]}" -d "$out" "${specs[@]}"
"$venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$out" "deepspeed==$(ver deepspeed)"
du -sh "$out" >&2
ls "$out"
