#!/usr/bin/env bash
# One call on a GPU machine: build the CUDA extension for Hopper, run the
# whole test suite (CUDA tests included), then compute-sanitizer memcheck and
# racecheck on a small forward+backward through both recurrent paths.
# Logs and summary.json go to $OUT (default bench/gpu_check_out).
# PYTHON picks the interpreter (one whose torch has CUDA).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/gpu_check_out}
mkdir -p "$out"
PY=${PYTHON:-python3}
SAN=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}

step() {  # step NAME CMD...: run, log to $out/NAME.log, remember the status
  local name=$1
  shift
  echo "+ $name: $*"
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "$name=$rc" >>"$out/status.txt"
  tail -n 5 "$out/$name.log"
  return $rc
}

: >"$out/status.txt"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true

export TORCH_CUDA_ARCH_LIST=9.0 RNNKERNELS_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
step build "$PY" setup.py build_ext --inplace || { echo "build failed, see $out/build.log"; exit 1; }
step info "$PY" -c 'import json, torch, rnnkernels
i = rnnkernels.backend_info()
i["device"] = torch.cuda.get_device_name()
print(json.dumps(i))
assert i["cuda_extension"] and i["cuda_available"]'
step pytest "$PY" -m pytest -q -rs tests/ --junitxml="$out/pytest.xml"

small=$(mktemp --suffix=.py)
trap 'rm -f "$small"' EXIT
cat >"$small" <<'PYEOF'
# A small forward+backward through every kernel: persistent and cuBLAS paths,
# windows, resets, ragged reverse lengths, a projection and bf16.
import os
import torch
import rnnkernels
from rnnkernels.ops import lstm_layer

def run(mode, dtype, P=0, B=3, H=40):
    os.environ["RNNKERNELS_PERSISTENT"] = mode
    g = torch.Generator().manual_seed(0)
    r = lambda *s: (torch.rand(*s, generator=g) - 0.5).to("cuda", dtype).requires_grad_()
    T, I, Hp = 5, 4, P or H
    args = dict(x=r(T, B, I), h0=r(B, Hp), c0=r(B, H), w_ih=r(4 * H, I), w_hh=r(4 * H, Hp),
                b_ih=r(4 * H), b_hh=r(4 * H), w_hr=r(Hp, H) if P else None)
    reset = (torch.rand(T, B, generator=g) < 0.3).cuda()
    lengths = torch.tensor([5, 4, 2][:B], dtype=torch.long)
    for reverse in (False, True):
        y, h, c = lstm_layer(**args, reset=reset, lengths=lengths, window=2, reverse=reverse)
        (y.float().sum() + h.float().sum() + c.float().sum()).backward()
    torch.cuda.synchronize()

run("1", torch.float32)
run("0", torch.float32)
run("0", torch.float32, P=7)
run("1", torch.bfloat16)
print("ok")
PYEOF
step memcheck "$SAN" --tool memcheck --error-exitcode 1 "$PY" "$small"
step racecheck "$SAN" --tool racecheck --error-exitcode 1 "$PY" "$small"

cat "$out/status.txt"
"$PY" - "$out" <<'PYEOF'
import json, sys
out = sys.argv[1]
status = dict(line.strip().split("=") for line in open(f"{out}/status.txt") if "=" in line)
info = {}
try:
    info = json.loads(open(f"{out}/info.log").read().strip().splitlines()[-1])
except Exception:
    pass
json.dump({"device": info.get("device"), "status": {k: int(v) for k, v in status.items()}, "backend": info},
          open(f"{out}/summary.json", "w"), indent=2)
PYEOF
! grep -q '=[1-9]' "$out/status.txt"
